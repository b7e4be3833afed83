"""Variational autoencoders (Kingma & Welling 2014), beta-VAE (Higgins et al. 2017), the class-conditional VAE
(Sohn et al. 2015) and the importance-weighted bound (Burda et al. 2016).

Pixels x in [0, 1] (the data's inputs mapped back with ``extras["normalization"]``; ``binarized_mnist`` is 0/1).
The encoder gives q(z|x) = N(mu(x), diag exp(logvar(x))), the decoder Bernoulli logits l(z) of p(x|z):

    z = mu + exp(logvar / 2) eps,  eps ~ N(0, I)                                      (fd.reparameterize)
    recon = -log p(x|z) = -sum_pixels [x log sigma(l) + (1 - x) log(1 - sigma(l))]    (fd.bernoulli_log_likelihood)
    kl = KL(q(z|x) || N(0, I)) = 1/2 sum_j (exp(lv_j) + mu_j^2 - 1 - lv_j)           (fd.kl_normal, analytic)
    nelbo = recon + kl    (nats per image: summed over pixels, averaged over the batch);  loss = recon + beta kl

with one z per image in training. Metrics ``loss``, ``nelbo``, ``recon``, ``kl``. In evaluation (no key) eps
comes from a fixed key, so validation figures are comparable between evaluations.

* ``vae`` (dense): the paper's MNIST model, 784-500-(mu, logvar: 2 x 20) and 20-500-784. Hidden units are
  **ReLU** by default (``--set activation=tanh`` gives the paper's): the paper trained tanh units with Adagrad;
  with this recipe (Adam 1e-3, batch 128) ReLU units reach a lower bound sooner: test negative ELBO after 10
  epochs (seed 0, one z per image) 102.5 nats with ReLU, 105.2 with tanh.
* ``conv_vae``: 3x3 stride-2 convolutions (28 -> 14 -> 7) with ReLU, a dense head to (mu, logvar); the decoder
  mirrors it with stride-2 transposed convolutions.
* ``conditional=True``: the one-hot class is concatenated to the encoder's input (the flattened pixels; after
  the convolutions for ``conv_vae``) and to the decoder's input z, so p(x|z, y) and q(z|x, y); sampling then
  needs labels.

``iwae_nll`` is the importance-weighted estimate of -log p(x) with k samples of q (a tighter bound than the
ELBO, which is its k = 1 case): -log (1/k sum_i p(x, z_i) / q(z_i|x)), by logsumexp, in blocks of samples so
k = 1000 fits in memory. ``report`` gives the test negative ELBO and IWAE bound, pictures, and the judge's
reading of samples (models/judge.py) on MNIST-like data.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import funcdl as fd
from funcdl.training.task import DataInfo

from .autoencoder import (
    EVAL_KEY,
    bottom_shape,
    conv_decode,
    conv_encode,
    normalization_of,
    plots_module,
    report_split,
    to_pixels,
)
from .layers import conv_init, dense_init, image_shape
from .registry import as_task, register

__all__ = ["Config", "KIND", "init", "apply", "loss", "encode", "decode_logits", "log_weights", "iwae_nll",
           "iwae_nll_per_image", "nelbo_per_image", "sample_images", "report", "IWAE_IMAGES"]

KIND = "regression"
LOG_2PI = math.log(2 * math.pi)
IWAE_IMAGES = 2000     # the report's IWAE bound (k = 1000) reads the first 2000 test images: see ``report``


@dataclasses.dataclass(frozen=True)
class Config:
    image: tuple = (28, 28, 1)
    arch: str = "dense"             # "dense" | "conv"
    hidden: tuple = (500,)          # dense: hidden widths (the decoder mirrors them); conv: channels per level
    latent: int = 20
    activation: str = "relu"        # dense hidden units ("tanh": Kingma & Welling's)
    beta: float = 1.0               # weight of the KL term in the training loss (beta-VAE); 1: the ELBO
    conditional: bool = False
    num_classes: int = 10
    mean: tuple = (0.0,)            # the data's normalisation: pixels = x std + mean
    std: tuple = (1.0,)

    def __post_init__(self):
        if self.arch not in ("dense", "conv"):
            raise ValueError(f"vae: arch must be 'dense' or 'conv', got {self.arch!r}")
        if not self.hidden or not all(isinstance(n, int) and n >= 1 for n in self.hidden):
            raise ValueError(f"vae: hidden sizes must be positive whole numbers, got {self.hidden}")
        if not (isinstance(self.latent, int) and self.latent >= 1):
            raise ValueError(f"vae: latent must be a positive whole number, got {self.latent!r}")
        fd.get_activation(self.activation)
        if not self.beta >= 0:
            raise ValueError(f"vae: beta must be >= 0, got {self.beta}")
        if self.conditional and not self.num_classes:
            raise ValueError("vae: a conditional VAE needs a data set with classes")
        if self.arch == "conv":
            scale = 2 ** len(self.hidden)
            if self.image[0] % scale or self.image[1] % scale:
                raise ValueError(f"conv_vae: {len(self.hidden)} stride-2 levels need image sides divisible by "
                                 f"{scale}, got {self.image[:2]}; use fewer channels levels")


def _classes(config) -> int:
    return config.num_classes if config.conditional else 0


def init(key, config: Config):
    """Encoder and decoder parameters (torch's default initialisation); no state."""
    n_pix, k, z = math.prod(config.image), _classes(config), config.latent
    k_enc, k_dec = jax.random.split(key)
    if config.arch == "dense":
        enc_w = (n_pix + k, *config.hidden, 2 * z)
        dec_w = (z + k, *config.hidden[::-1], n_pix)
        enc = [dense_init(kk, a, b) for kk, a, b in zip(jax.random.split(k_enc, len(enc_w) - 1), enc_w[:-1],
                                                         enc_w[1:], strict=True)]
        dec = [dense_init(kk, a, b) for kk, a, b in zip(jax.random.split(k_dec, len(dec_w) - 1), dec_w[:-1],
                                                         dec_w[1:], strict=True)]
        return {"encoder": enc, "decoder": dec}, {}
    chans = (config.image[2], *config.hidden)
    ke = jax.random.split(k_enc, len(config.hidden) + 1)
    kd = jax.random.split(k_dec, len(config.hidden) + 1)
    bh, bw, bc = bottom_shape(config)
    back = chans[::-1]
    enc = {"convs": [conv_init(kk, (3, 3), a, b) for kk, a, b in zip(ke[1:], chans[:-1], chans[1:], strict=True)],
           "head": dense_init(ke[0], bh * bw * bc + k, 2 * z)}
    dec = {"expand": dense_init(kd[0], z + k, bh * bw * bc),
           "convs": [conv_init(kk, (3, 3), a, b) for kk, a, b in zip(kd[1:], back[:-1], back[1:], strict=True)]}
    return {"encoder": enc, "decoder": dec}, {}


def check_labels(labels, config: Config, n: int):
    """The labels a conditional model needs (None for an unconditional one), as an int array (n,)."""
    if not config.conditional:
        if labels is not None:
            raise ValueError("vae: this model is not class-conditional; drop --class / labels (or train it with "
                             "--set conditional=True)")
        return None
    if labels is None:
        raise ValueError("vae: this model is class-conditional; pass --class K / labels (one class per image)")
    labels = jnp.asarray(labels)
    if labels.shape != (n,) or not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"vae: labels must be {n} whole numbers (one class per image), got {labels.dtype} "
                         f"{labels.shape}")
    return labels


def _with_labels(h, labels, config):
    if not config.conditional:
        return h
    return jnp.concatenate([h, jax.nn.one_hot(labels, config.num_classes, dtype=h.dtype)], axis=-1)


def _dense_stack(layers, h, act):
    for i, layer in enumerate(layers):
        h = fd.dense(h, layer["w"], layer["b"])
        if i < len(layers) - 1:
            h = act(h)
    return h


def encode(params, pixels, config: Config, labels=None):
    """Pixels (N, H, W, C) in [0, 1] -> (mu, logvar), each (N, latent)."""
    p = params["encoder"]
    if config.arch == "dense":
        h = _with_labels(pixels.reshape(pixels.shape[0], -1), labels, config)
        out = _dense_stack(p, h, fd.get_activation(config.activation))
    else:
        h = _with_labels(conv_encode(p, pixels), labels, config)
        out = fd.dense(h, p["head"]["w"], p["head"]["b"])
    return out[:, :config.latent], out[:, config.latent:]


def decode_logits(params, z, config: Config, labels=None):
    """Latents (N, latent) -> Bernoulli logits of the pixels (N, H, W, C)."""
    p = params["decoder"]
    h = _with_labels(z, labels, config)
    if config.arch == "dense":
        return _dense_stack(p, h, fd.get_activation(config.activation)).reshape(z.shape[0], *config.image)
    h = fd.relu(fd.dense(h, p["expand"]["w"], p["expand"]["b"]))
    return conv_decode(p, h, bottom_shape(config), "transpose")


def _inputs(x, config: Config):
    """apply's input: an array, or a batch dict {"x", "y"} (a conditional model needs the labels)."""
    if isinstance(x, dict):
        return x["x"], x.get("y")
    return x, None


def apply(params, state, x, config: Config, *, key=None, train: bool = False):
    """``(reconstruction probabilities in [0, 1] decoded from z = mu, state)``; a conditional model takes the
    batch dict ``{"x": ..., "y": ...}``."""
    x, labels = _inputs(x, config)
    pixels = to_pixels(x, config)
    labels = check_labels(labels, config, x.shape[0])
    mu, _ = encode(params, pixels, config, labels)
    return fd.sigmoid(decode_logits(params, mu, config, labels)), state


def _draw(key, mu, logvar):
    eps = jax.random.normal(key, mu.shape, mu.dtype)
    return fd.reparameterize(mu, logvar, eps)


def loss(params, state, batch, config: Config, *, key=None, train: bool = False):
    """recon + beta kl in nats per image, one z per image (a fixed key in evaluation); metrics loss, nelbo,
    recon, kl."""
    pixels = to_pixels(batch["x"], config)
    labels = check_labels(batch.get("y") if config.conditional else None, config, pixels.shape[0])
    mu, logvar = encode(params, pixels, config, labels)
    z = _draw(key if key is not None else jax.random.PRNGKey(EVAL_KEY), mu, logvar)
    recon = -fd.bernoulli_log_likelihood(decode_logits(params, z, config, labels), pixels)
    kl = fd.kl_normal(mu, logvar)
    nelbo = recon + kl
    value = nelbo if config.beta == 1 else recon + config.beta * kl
    return value, (state, {"loss": value, "nelbo": nelbo, "recon": recon, "kl": kl})


# -- bounds on -log p(x) ----------------------------------------------------------------------------------------


def nelbo_per_image(params, x, key, config: Config, *, labels=None):
    """``(recon, kl)``, each (N,): one z per image drawn from ``key``; nelbo = recon + kl."""
    pixels = to_pixels(x, config)
    labels = check_labels(labels, config, pixels.shape[0])
    mu, logvar = encode(params, pixels, config, labels)
    z = _draw(key, mu, logvar)
    recon = -fd.bernoulli_log_likelihood(decode_logits(params, z, config, labels), pixels, reduction="none")
    return recon, fd.kl_normal(mu, logvar, reduction="none")


def log_weights(params, pixels, eps, config: Config, labels=None):
    """log p(x, z_s) - log q(z_s|x) of pixels (N, H, W, C) for z_s = mu + sigma eps_s, eps (S, N, latent) ->
    (S, N): log p(x|z) (Bernoulli) + log N(z; 0, I) - log N(z; mu, sigma^2), the last being
    -1/2 sum_j (eps_j^2 + lv_j + log 2 pi)."""
    s, n = eps.shape[:2]
    mu, logvar = encode(params, pixels, config, labels)
    z = fd.reparameterize(jnp.broadcast_to(mu, eps.shape), jnp.broadcast_to(logvar, eps.shape), eps)
    tiled = None if labels is None else jnp.broadcast_to(labels, (s, n)).reshape(-1)
    logits = decode_logits(params, z.reshape(s * n, -1), config, tiled)
    target = jnp.broadcast_to(pixels, (s, *pixels.shape)).reshape(s * n, *pixels.shape[1:])
    log_px = fd.bernoulli_log_likelihood(logits, target, reduction="none").reshape(s, n)
    log_pz = -0.5 * jnp.sum(z * z + LOG_2PI, axis=-1)
    log_qz = -0.5 * jnp.sum(eps * eps + logvar + LOG_2PI, axis=-1)
    return log_px + log_pz - log_qz


def iwae_nll_per_image(params, x, key, k: int, config: Config, *, labels=None, chunk: int = 100):
    """-log (1/k sum_i p(x, z_i) / q(z_i|x)) per image (N,), z_i ~ q(z|x). The k samples are drawn in blocks of
    ``chunk`` (the block b's eps ~ N(0, I) of shape (block, N, latent) from ``fold_in(key, b)``), so memory
    holds one block of decoder outputs at a time; the logsumexp runs over all k log-weights at the end."""
    if not (isinstance(k, int) and k >= 1):
        raise ValueError(f"iwae_nll: k must be a positive whole number of samples, got {k!r}")
    pixels = to_pixels(x, config)
    n = pixels.shape[0]
    labels = check_labels(labels, config, n)
    size = min(chunk, k)
    full, rest = divmod(k, size)

    def block(b, s):
        eps = jax.random.normal(jax.random.fold_in(key, b), (s, n, config.latent), pixels.dtype)
        return log_weights(params, pixels, eps, config, labels)

    lw = jax.lax.map(lambda b: block(b, size), jnp.arange(full)).reshape(full * size, n)
    if rest:
        lw = jnp.concatenate([lw, block(full, rest)])
    return -(jax.scipy.special.logsumexp(lw, axis=0) - math.log(k))


def iwae_nll(params, x, key, k: int, config: Config, *, labels=None, chunk: int = 100):
    """The mean over the images of :func:`iwae_nll_per_image` (nats per image)."""
    return jnp.mean(iwae_nll_per_image(params, x, key, k, config, labels=labels, chunk=chunk))


# -- sampling ---------------------------------------------------------------------------------------------------


def sample_images(params, key, n: int, *, labels=None, config: Config):
    """``n`` samples' pixel probabilities sigma(l(z)), z ~ N(0, I): float32 (n, H, W, C) in [0, 1]."""
    if labels is not None:
        labels = np.asarray(labels)
        if config.conditional and labels.size and not (0 <= labels.min() and labels.max() < config.num_classes):
            raise ValueError(f"vae: labels must lie in 0..{config.num_classes - 1}, got {labels.min()}..{labels.max()}")
    labels = check_labels(labels, config, n)
    z = jax.random.normal(key, (n, config.latent), jnp.float32)
    return fd.sigmoid(decode_logits(params, z, config, labels)).astype(jnp.float32)


def extras(config: Config) -> dict:
    def encode_inputs(params, x, *, labels=None):
        return encode(params, to_pixels(jnp.asarray(x), config), config, check_labels(labels, config, len(x)))

    def decode(params, z, *, labels=None):
        return fd.sigmoid(decode_logits(params, z, config, check_labels(labels, config, len(z))))

    return {"sample_images": functools.partial(sample_images, config=config), "encode": encode_inputs,
            "decode": decode, "iwae_nll": functools.partial(iwae_nll, config=config),
            "report": functools.partial(_report, config=config)}


def _report(params, state, opt_state, data, out_dir, *, config, judge=True):
    return report(params, state, opt_state, data, out_dir, config=config, judge=judge)


# -- the end-of-run report --------------------------------------------------------------------------------------


def _mnist_like(data, config: Config) -> bool:
    return config.image == (28, 28, 1) and data.name in ("mnist", "binarized_mnist")


def _test_bounds(params, x, y, config, draws, iwae_k, iwae_images, batch=500):
    """Mean test recon, kl (``draws`` z per image, each draw a fresh key) and the IWAE bound of the first
    ``iwae_images`` images."""
    lab = lambda s: None if not config.conditional else jnp.asarray(y[s])  # noqa: E731
    terms = jax.jit(lambda p, xb, lb, k: nelbo_per_image(p, xb, k, config, labels=lb))
    iwae = jax.jit(lambda p, xb, lb, k: iwae_nll_per_image(p, xb, k, iwae_k, config, labels=lb))
    recon = kl = 0.0
    for d in range(draws):
        for i, start in enumerate(range(0, len(x), batch)):
            s = slice(start, start + batch)
            key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(1), d), i)
            r, k = terms(params, jnp.asarray(x[s], jnp.float32), lab(s), key)
            recon, kl = recon + float(jnp.sum(r)), kl + float(jnp.sum(k))
    n_iwae = len(x) if iwae_images is None else min(iwae_images, len(x))
    total = 0.0
    for i, start in enumerate(range(0, n_iwae, 100)):
        s = slice(start, min(start + 100, n_iwae))
        total += float(jnp.sum(iwae(params, jnp.asarray(x[s], jnp.float32), lab(s),
                                    jax.random.fold_in(jax.random.PRNGKey(2), i))))
    n = draws * len(x)
    return {"test_nelbo": round((recon + kl) / n, 4), "test_recon": round(recon / n, 4), "test_kl": round(kl / n, 4),
            "test_nelbo_draws": draws, "test_iwae_nll": round(total / n_iwae, 4), "test_iwae_k": iwae_k,
            "test_iwae_images": n_iwae}


def _pictures(params, x, y, config, out_dir, plots):
    """samples.png, reconstructions.png, interpolation.png, traversal.png and (latent == 2) latent_scatter.png."""
    out_dir = Path(out_dir)
    key = jax.random.PRNGKey(3)
    grid_labels = np.tile(np.arange(10), 10) % max(config.num_classes, 1) if config.conditional else None
    samples = sample_images(params, key, 100, labels=grid_labels, config=config)
    plots.image_grid(np.asarray(samples), 10, 10, out_dir / "samples.png",
                     title="VAE samples (pixel probabilities)" + (", column = class" if config.conditional else ""))
    lab = lambda s: None if not config.conditional else jnp.asarray(y[s])  # noqa: E731
    x16 = jnp.asarray(x[:16], jnp.float32)
    recon = apply(params, {}, {"x": x16, "y": lab(slice(0, 16))} if config.conditional else x16, config)[0]
    plots.reconstructions(np.asarray(to_pixels(x16, config)), np.asarray(recon), out_dir / "reconstructions.png")
    # interpolation: z from mu of test image 2i to mu of test image 2i+1, 10 steps, 6 rows
    pairs = jnp.asarray(x[:12], jnp.float32)
    mu, logvar = encode(params, to_pixels(pairs, config), config, lab(slice(0, 12)))
    t = jnp.linspace(0.0, 1.0, 10)[None, :, None]
    z = (1 - t) * mu[0::2, None] + t * mu[1::2, None]                       # (6, 10, latent)
    z_labels = None if not config.conditional else jnp.repeat(jnp.asarray(y[0:12:2]), 10)
    rows = fd.sigmoid(decode_logits(params, z.reshape(60, -1), config, z_labels)).reshape(6, 10, *config.image)
    plots.interpolation(np.asarray(rows), out_dir / "interpolation.png")
    _traversal(params, mu, logvar, config, None if z_labels is None else z_labels[:1], out_dir, plots)
    if config.latent == 2:
        n = min(len(x), 5000)
        mu, _ = jax.jit(lambda p, xb, lb: encode(p, to_pixels(xb, config), config, lb))(
            params, jnp.asarray(x[:n], jnp.float32), lab(slice(0, n)))
        plots.latent_scatter(np.asarray(mu), np.asarray(y[:n]), out_dir / "latent_scatter.png")


def _traversal(params, mu, logvar, config, label, out_dir, plots, rows=8, steps=10):
    """traversal.png: from the first image's mean, one latent coordinate at a time swept over [-3, 3] (the
    prior's +-3 sd), the others held; the coordinates drawn are the ``rows`` with the largest mean KL to the
    prior on these images (the active units: a VAE leaves many coordinates at the prior, where a sweep changes
    nothing)."""
    kl = jnp.mean(0.5 * (mu ** 2 + jnp.exp(logvar) - logvar - 1.0), axis=0)
    dims = jnp.argsort(-kl)[:min(rows, config.latent)]
    sweep = jnp.linspace(-3.0, 3.0, steps)
    z = jnp.repeat(jnp.repeat(mu[:1], steps, axis=0)[None], len(dims), axis=0)      # (rows, steps, latent)
    z = z.at[jnp.arange(len(dims))[:, None], jnp.arange(steps)[None, :], dims[:, None]].set(sweep[None, :])
    z_labels = None if label is None else jnp.repeat(label, len(dims) * steps)
    x = fd.sigmoid(decode_logits(params, z.reshape(len(dims) * steps, -1), config, z_labels))
    plots.interpolation(np.asarray(x.reshape(len(dims), steps, *config.image)), Path(out_dir) / "traversal.png")


def _judge(params, data, config, n=1000) -> dict:
    """The judge's reading of n samples (models/judge.py), keys prefixed ``judge_``. On binarised data the samples
    are Bernoulli draws of the pixel probabilities (as the real test images they are compared with are); on grey
    data the probabilities themselves."""
    try:
        from . import judge as judge_module
    except ImportError:
        return {}
    key_z, key_bits = jax.random.split(jax.random.PRNGKey(4))
    labels = judge_module.sample_classes(data, n, config.num_classes, "turn") if config.conditional else None
    images = np.asarray(sample_images(params, key_z, n, labels=labels, config=config))
    if data.name == "binarized_mnist":
        images = np.asarray(jax.random.bernoulli(key_bits, images), np.float32)
    try:
        return judge_module.judge_report(images, data, labels=labels, prefix="judge_")
    except (OSError, ValueError) as err:         # no MNIST files for a first judge training, a damaged cache
        print(f"vae report: the judge was skipped: {err}")
        return {"judge_skipped": str(err).splitlines()[0]}


def report(params, state, opt_state, data, out_dir, *, config: Config, judge: bool = True, draws: int = 10,
           iwae_k: int = 1000, iwae_images: int | None = IWAE_IMAGES) -> dict:
    """End-of-run figures on the test split (binarised for ``binarized_mnist``):

    * ``test_nelbo`` = ``test_recon`` + ``test_kl``: the negative ELBO in nats per image, averaged over every test
      image and ``draws`` (10) independent z per image (one z per term, the training loss's estimator);
    * ``test_iwae_nll``: the IWAE bound with ``iwae_k`` = 1000 samples on the first ``iwae_images`` test images
      (``test_iwae_images``; ``IWAE_IMAGES`` = 2000 keeps it near a minute on two CPU cores; None: all);
    * pictures (when ``out_dir`` is given and funcdl.plots.generative exists): samples.png (a 10 x 10 grid;
      conditional: each column one class), reconstructions.png, interpolation.png (6 rows of 10 decodings on the
      straight line between the means of two test images' q(z|x)), traversal.png (one latent coordinate swept
      over [-3, 3] per row, the most active ones), latent_scatter.png when latent == 2;
    * ``judge_*`` (``judge=True`` and MNIST-like data): models.judge.judge_report on 1000 samples.
    """
    split = report_split(data)
    x, y = split["x"], split.get("y")
    if config.conditional and y is None:
        raise ValueError(f"vae report: a conditional model needs labels 'y' in {data.name!r}")
    result = _test_bounds(params, x, y, config, draws, iwae_k, iwae_images)
    plots = plots_module()
    if out_dir is not None and plots is not None:
        _pictures(params, x, y, config, out_dir, plots)
    if judge and _mnist_like(data, config):
        result |= _judge(params, data, config)
    return result


# -- builders ---------------------------------------------------------------------------------------------------


def _config(info: DataInfo, conditional, **options) -> Config:
    if conditional and not info.num_classes:
        raise ValueError(f"vae: conditional=True needs a data set with classes; {info.name!r} has none")
    mean, std = normalization_of(info)
    return Config(image=image_shape(info), conditional=bool(conditional), num_classes=info.num_classes or 0,
                  mean=mean, std=std, **options)


def build(info: DataInfo, *, hidden=(500,), latent=20, activation="relu", beta=1.0, conditional=False, judge=True):
    config = _config(info, conditional, arch="dense", hidden=tuple(hidden), latent=latent, activation=activation,
                     beta=float(beta))
    return as_task(config, report=functools.partial(_report, config=config, judge=bool(judge)))


def build_conv(info: DataInfo, *, channels=(32, 64), latent=20, beta=1.0, conditional=False, judge=True):
    config = _config(info, conditional, arch="conv", hidden=tuple(channels), latent=latent, beta=float(beta))
    return as_task(config, report=functools.partial(_report, config=config, judge=bool(judge)))


_SMALL_DATA = DataInfo("fake-mnist", (8, 8, 1), num_classes=10)
_DATA = ("binarized_mnist", "mnist", "fashion_mnist")

register(
    "vae", build, data=_DATA,
    # Kingma & Welling's MNIST model; the bar of issue 16: test negative ELBO <= 100 nats after 30 epochs. Adam
    # 1e-3 decayed to 0 by a cosine over the 30 epochs, on all 60000 training images (the usual protocol for
    # test likelihoods). With a constant rate and a 5000-image validation split, seed 0 gave 99.73 nats; with the
    # cosine and the split, seeds 0/1 gave 99.24/99.55.
    defaults={"data": "binarized_mnist", "epochs": 30, "batch_size": 128, "optimizer": "adam", "lr": 1e-3,
              "schedule": "cosine", "val_fraction": 0.0},
    description="VAE 784-500-z20 (Kingma & Welling), Bernoulli decoder; --set beta=4 / conditional=True / latent=2",
    small={"hidden": (8,), "latent": 2}, small_data=_SMALL_DATA,
)
register(
    "conv_vae", build_conv, data=_DATA,
    defaults={"data": "binarized_mnist", "epochs": 30, "batch_size": 128, "optimizer": "adam", "lr": 1e-3},
    description="convolutional VAE (stride-2 convs, transposed-conv decoder), Bernoulli decoder",
    small={"channels": (2, 4), "latent": 2}, small_data=_SMALL_DATA,
)
