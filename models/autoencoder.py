"""Autoencoders and denoising autoencoders (Vincent et al. 2008), dense and convolutional.

Pixels p in [0, 1] (the data's inputs mapped back with ``extras["normalization"]``: p = x std + mean, clipped to
[0, 1]; data without a normalisation are taken as pixels already). A corruption C gives the encoder's input
p~ = C(p); the decoder's logits l give the reconstruction r = sigmoid(l), compared with the *clean* p:

    z = enc(p~),   l = dec(z),   loss = BCE(l, p)   (``output="bce"``, mean over pixels, on the logits)
                                      or mean (sigmoid(l) - p)^2   (``output="mse"``)

* ``autoencoder`` (dense): 784-512-256-z and back (z = 32 by default), ReLU between layers, a linear code;
* ``conv_autoencoder``: 3x3 convolutions of stride 2 (28 -> 14 -> 7), a dense code, and back through stride-2
  transposed convolutions (``decoder="transpose"``) or nearest upsampling followed by a 3x3 convolution
  (``decoder="upsample"``, no checkerboard artefacts).

Corruption (``noise`` > 0 makes it a denoising autoencoder): ``noise_kind="gaussian"``: p~ = clip(p + noise e,
0, 1), e ~ N(0, 1); ``"masking"``: each pixel is set to 0 with probability ``noise``. In training the corruption
is drawn from the step's key; in evaluation (no key) from a fixed key, so validation and test figures measure
denoising of the same corrupted images every time. Metrics: ``loss``, ``mse`` and ``psnr`` (dB, peak 1, the
mean over images of 10 log10(1 / mse_i)) of the reconstruction against the clean pixels.

``report`` (called once at the end of ``funcdl train``): on the test set, the PSNR of the corrupted input and of
the output against the clean images, their difference ``psnr_gain_db`` (denoisers only: a plain autoencoder's
input is the clean image) and ``test_mse``; writes ``reconstructions.png`` (``triples.png`` for a denoiser:
noisy | denoised | clean).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import funcdl as fd
from funcdl.training.task import DataInfo

from .layers import conv, conv_init, dense_init, image_shape
from .registry import as_task, register

__all__ = ["Config", "KIND", "init", "apply", "loss", "corrupt", "encode", "decode_logits", "reconstruct", "to_pixels",
           "psnr", "report", "normalization_of", "conv_encode", "conv_decode", "bottom_shape", "EVAL_KEY"]

KIND = "regression"
EVAL_KEY = 0            # the seed of the fixed key that draws noise (and a VAE's z) in evaluation
NOISE_KINDS = ("gaussian", "masking")


@dataclasses.dataclass(frozen=True)
class Config:
    image: tuple = (28, 28, 1)
    arch: str = "dense"                  # "dense" | "conv"
    hidden: tuple = (512, 256)           # dense: widths of the encoder (the decoder mirrors them); conv: channels
    latent: int = 32
    output: str = "bce"                  # "bce" (logits, binary cross-entropy) | "mse" (sigmoid output)
    noise: float = 0.0                   # 0: a plain autoencoder
    noise_kind: str = "gaussian"         # "gaussian" (sigma = noise) | "masking" (drop probability = noise)
    decoder: str = "transpose"           # conv only: "transpose" | "upsample"
    mean: tuple = (0.0,)                 # the data's normalisation: pixels = x std + mean
    std: tuple = (1.0,)

    def __post_init__(self):
        if self.arch not in ("dense", "conv"):
            raise ValueError(f"autoencoder: arch must be 'dense' or 'conv', got {self.arch!r}")
        if not self.hidden or not all(isinstance(n, int) and n >= 1 for n in self.hidden):
            raise ValueError(f"autoencoder: hidden sizes must be positive whole numbers, got {self.hidden}")
        if not (isinstance(self.latent, int) and self.latent >= 1):
            raise ValueError(f"autoencoder: latent must be a positive whole number, got {self.latent!r}")
        if self.output not in ("bce", "mse"):
            raise ValueError(f"autoencoder: output must be 'bce' or 'mse', got {self.output!r}")
        if self.noise_kind not in NOISE_KINDS:
            raise ValueError(f"autoencoder: noise_kind must be one of {', '.join(NOISE_KINDS)}, got "
                             f"{self.noise_kind!r}")
        if self.noise < 0 or (self.noise_kind == "masking" and self.noise >= 1):
            raise ValueError(f"autoencoder: noise must be >= 0 (a drop probability below 1 for masking), got "
                             f"{self.noise}")
        if self.decoder not in ("transpose", "upsample"):
            raise ValueError(f"autoencoder: decoder must be 'transpose' or 'upsample', got {self.decoder!r}")
        if self.arch == "conv":
            scale = 2 ** len(self.hidden)
            if self.image[0] % scale or self.image[1] % scale:
                raise ValueError(f"conv_autoencoder: {len(self.hidden)} stride-2 levels need image sides divisible "
                                 f"by {scale}, got {self.image[:2]}; use fewer channels levels")


# -- pixels, corruption, PSNR (shared with models.vae) ----------------------------------------------------------


def normalization_of(info: DataInfo) -> tuple[tuple, tuple]:
    """``(mean, std)`` tuples of the data's normalisation (``extras["normalization"]``; (0,), (1,) without)."""
    norm = (info.extras or {}).get("normalization") or {"mean": 0.0, "std": 1.0}
    as_tuple = lambda v: tuple(float(a) for a in np.ravel(v))  # noqa: E731
    return as_tuple(norm["mean"]), as_tuple(norm["std"])


def to_pixels(x, config):
    """The data's inputs -> pixels in [0, 1] (x std + mean, clipped)."""
    mean = jnp.asarray(config.mean, x.dtype)
    std = jnp.asarray(config.std, x.dtype)
    return jnp.clip(x * std + mean, 0.0, 1.0)


def corrupt(pixels, key, config):
    """The denoiser's input: Gaussian noise clipped to [0, 1], or pixels dropped to 0 with probability noise."""
    if config.noise == 0:
        return pixels
    if config.noise_kind == "gaussian":
        return jnp.clip(pixels + config.noise * jax.random.normal(key, pixels.shape, pixels.dtype), 0.0, 1.0)
    keep = jax.random.uniform(key, pixels.shape, pixels.dtype) >= config.noise
    return jnp.where(keep, pixels, 0.0)


def psnr(a, b):
    """Per-image PSNR in dB with peak 1: 10 log10(1 / mean((a - b)^2)) over each image (mse floored at 1e-10)."""
    mse = jnp.mean(jnp.square(a - b).reshape(a.shape[0], -1), axis=1)
    return 10.0 * jnp.log10(1.0 / jnp.maximum(mse, 1e-10))


# -- the network ------------------------------------------------------------------------------------------------


def _dense_stack(layers, h, last_act=False):
    for i, layer in enumerate(layers):
        h = fd.dense(h, layer["w"], layer["b"])
        if i < len(layers) - 1 or last_act:
            h = fd.relu(h)
    return h


def bottom_shape(config):
    """(h, w, channels) of the conv encoder's last feature map."""
    scale = 2 ** len(config.hidden)
    return config.image[0] // scale, config.image[1] // scale, config.hidden[-1]


def init(key, config: Config):
    """Encoder and decoder parameters (torch's default initialisation); no state."""
    n_pix = math.prod(config.image)
    k_enc, k_dec = jax.random.split(key)
    if config.arch == "dense":
        widths = (n_pix, *config.hidden, config.latent)
        back = widths[::-1]
        enc = [dense_init(k, a, b) for k, a, b in zip(jax.random.split(k_enc, len(widths) - 1), widths[:-1],
                                                       widths[1:], strict=True)]
        dec = [dense_init(k, a, b) for k, a, b in zip(jax.random.split(k_dec, len(back) - 1), back[:-1], back[1:],
                                                       strict=True)]
        return {"encoder": enc, "decoder": dec}, {}
    chans = (config.image[2], *config.hidden)
    ke = jax.random.split(k_enc, len(config.hidden) + 1)
    kd = jax.random.split(k_dec, len(config.hidden) + 1)
    bh, bw, bc = bottom_shape(config)
    enc = {"convs": [conv_init(k, (3, 3), a, b) for k, a, b in zip(ke[1:], chans[:-1], chans[1:], strict=True)],
           "code": dense_init(ke[0], bh * bw * bc, config.latent)}
    back = chans[::-1]                                                 # (c_last, ..., c_1, image channels)
    # a transposed-conv kernel (3, 3, C_in, C_out) has the layout of a conv kernel from C_in to C_out
    dec = {"expand": dense_init(kd[0], config.latent, bh * bw * bc),
           "convs": [conv_init(k, (3, 3), a, b) for k, a, b in zip(kd[1:], back[:-1], back[1:], strict=True)]}
    return {"encoder": enc, "decoder": dec}, {}


def conv_encode(p, pixels):
    """Stride-2 3x3 convolutions with ReLU, flattened: (N, H, W, C) -> (N, features)."""
    h = pixels
    for layer in p["convs"]:
        h = fd.relu(conv(layer, h, stride=2, padding=1))
    return h.reshape(h.shape[0], -1)


def conv_decode(p, h, bottom, decoder):
    """(N, features) -> logits (N, H, W, C): stride-2 transposed convolutions, or nearest upsampling + conv."""
    h = h.reshape(h.shape[0], *bottom)
    for i, layer in enumerate(p["convs"]):
        if decoder == "transpose":
            h = fd.conv_transpose2d(h, layer["w"], layer["b"], stride=2, padding=1, output_padding=1)
        else:
            h = conv(layer, fd.upsample_nearest(h, scale=2), padding=1)
        if i < len(p["convs"]) - 1:
            h = fd.relu(h)
    return h


def encode(params, pixels, config: Config):
    """Pixels (N, H, W, C) in [0, 1] -> codes (N, latent)."""
    p = params["encoder"]
    if config.arch == "dense":
        return _dense_stack(p, pixels.reshape(pixels.shape[0], -1))
    return fd.dense(conv_encode(p, pixels), p["code"]["w"], p["code"]["b"])


def decode_logits(params, z, config: Config):
    """Codes (N, latent) -> pixel logits (N, H, W, C)."""
    p = params["decoder"]
    if config.arch == "dense":
        return _dense_stack(p, z).reshape(z.shape[0], *config.image)
    h = fd.relu(fd.dense(z, p["expand"]["w"], p["expand"]["b"]))
    return conv_decode(p, h, bottom_shape(config), config.decoder)


def reconstruct(params, pixels, config: Config):
    """The (denoised) reconstruction in [0, 1] of pixels (N, H, W, C) in [0, 1]."""
    return fd.sigmoid(decode_logits(params, encode(params, pixels, config), config))


def apply(params, state, x, config: Config, *, key=None, train: bool = False):
    """``(reconstruction in [0, 1], state)`` of the data's inputs ``x`` (no corruption is added here: ``x`` is
    what the autoencoder denoises)."""
    return reconstruct(params, to_pixels(x, config), config), state


def loss(params, state, batch, config: Config, *, key=None, train: bool = False):
    """Reconstruction loss of the clean pixels from the (corrupted) input; metrics loss, mse, psnr."""
    clean = to_pixels(batch["x"], config)
    noisy = corrupt(clean, key if key is not None else jax.random.PRNGKey(EVAL_KEY), config)
    logits = decode_logits(params, encode(params, noisy, config), config)
    out = fd.sigmoid(logits)
    if config.output == "bce":
        value = fd.binary_cross_entropy_with_logits(logits, clean)
    else:
        value = fd.mse_loss(out, clean)
    out = jax.lax.stop_gradient(out)
    metrics = {"loss": value, "mse": jnp.mean(jnp.square(out - clean)), "psnr": jnp.mean(psnr(out, clean))}
    return value, (state, metrics)


# -- the end-of-run report --------------------------------------------------------------------------------------


def report_split(data) -> dict:
    for name in ("test", "val", "train"):
        if name in data.splits:
            return data.splits[name]
    raise ValueError(f"data set {data.name!r} has no split to report on")


def plots_module():
    """funcdl.plots.generative, or None while it does not exist (the pictures are then skipped)."""
    try:
        from funcdl.plots import generative
    except ImportError:
        return None
    return generative


def report(params, state, opt_state, data, out_dir, *, config: Config, chunk: int = 500) -> dict:
    """PSNR of the corrupted input and of the output against the clean test images, the gain, the test MSE;
    ``reconstructions.png`` or (denoiser) ``triples.png`` in ``out_dir``."""
    x = report_split(data)["x"]

    @jax.jit
    def run(p, xb, i):
        clean = to_pixels(jnp.asarray(xb, jnp.float32), config)
        noisy = corrupt(clean, jax.random.fold_in(jax.random.PRNGKey(EVAL_KEY), i), config)
        out = reconstruct(p, noisy, config)
        return noisy, out, clean, psnr(noisy, clean), psnr(out, clean), jnp.mean(jnp.square(out - clean))

    psnr_in, psnr_out, mse, first = [], [], [], None
    for i, start in enumerate(range(0, len(x), chunk)):
        noisy, out, clean, p_in, p_out, m = run(params, x[start:start + chunk], i)
        psnr_in.append(np.asarray(p_in))
        psnr_out.append(np.asarray(p_out))
        mse.append(float(m) * len(p_in))
        first = first or (np.asarray(noisy[:16]), np.asarray(out[:16]), np.asarray(clean[:16]))
    result = {"test_mse": round(sum(mse) / len(x), 6),
              "test_psnr_output": round(float(np.mean(np.concatenate(psnr_out))), 3)}
    if config.noise > 0:
        result["test_psnr_input"] = round(float(np.mean(np.concatenate(psnr_in))), 3)
        result["psnr_gain_db"] = round(result["test_psnr_output"] - result["test_psnr_input"], 3)
    plots = plots_module()
    if out_dir is not None and plots is not None:
        noisy, out, clean = first
        if config.noise > 0:
            plots.triples(noisy, out, clean, Path(out_dir) / "triples.png")
        else:
            plots.reconstructions(clean, out, Path(out_dir) / "reconstructions.png")
    return result


def extras(config: Config) -> dict:
    def run_report(params, state, opt_state, data, out_dir):
        return report(params, state, opt_state, data, out_dir, config=config)

    return {"report": run_report,
            "reconstruct": lambda params, x: apply(params, {}, x, config)[0]}


# -- builders ---------------------------------------------------------------------------------------------------


def _config(info: DataInfo, **options) -> Config:
    mean, std = normalization_of(info)
    return Config(image=image_shape(info), mean=mean, std=std, **options)


def build(info: DataInfo, *, hidden=(512, 256), latent=32, output="bce", noise=0.0, noise_kind="gaussian"):
    return as_task(_config(info, arch="dense", hidden=tuple(hidden), latent=latent, output=output,
                           noise=float(noise), noise_kind=noise_kind))


def build_conv(info: DataInfo, *, channels=(32, 64), latent=32, output="bce", noise=0.0, noise_kind="gaussian",
               decoder="transpose"):
    return as_task(_config(info, arch="conv", hidden=tuple(channels), latent=latent, output=output,
                           noise=float(noise), noise_kind=noise_kind, decoder=decoder))


_SMALL_DATA = DataInfo("fake-mnist", (8, 8, 1), num_classes=10)
_DATA = ("mnist", "binarized_mnist", "fashion_mnist")

register(
    "autoencoder", build, data=_DATA,
    defaults={"data": "mnist", "epochs": 10, "batch_size": 128, "optimizer": "adam", "lr": 1e-3},
    description="dense autoencoder 784-512-256-z-256-512-784 (z=32), BCE on logits; --set noise=0.5 denoises",
    small={"hidden": (8,), "latent": 3, "noise": 0.3}, small_data=_SMALL_DATA,
)
register(
    "conv_autoencoder", build_conv, data=_DATA,
    defaults={"data": "mnist", "epochs": 10, "batch_size": 128, "optimizer": "adam", "lr": 1e-3},
    description="convolutional autoencoder (stride-2 convs, dense code, transposed convs); --set noise=0.5 denoises",
    small={"channels": (2, 4), "latent": 3, "noise": 0.3, "noise_kind": "masking"}, small_data=_SMALL_DATA,
)
