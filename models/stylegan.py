"""A small style-based generator (Karras et al. 2019, with StyleGAN2's modulated convolutions, 2020) for 28x28
images, trained as models.gan trains its GANs (the same players, losses, EMA, sampling and report).

    mapping:        z -> z / rms(z) -> n_map x (dense + LeakyReLU 0.2) -> w (the style vector, 4 width units)
    synthesis:      a learned constant (H/4, W/4, 4 width)
                    -> [modulated conv 3x3 + noise + bias + LeakyReLU]                       at H/4 (4 width)
                    -> upsample 2x -> 2 x [modulated conv 3x3 + noise + bias + LeakyReLU]    at H/2 (2 width)
                    -> upsample 2x -> 2 x [modulated conv 3x3 + noise + bias + LeakyReLU]    at H   (width)
                    each resolution adds its toRGB (a modulated 1x1 conv, no demodulation) to the upsampled
                    image so far (StyleGAN2's skip generator)
    discriminator:  conv 3x3 (width) -> conv 4x4/2 (2 width) -> conv 4x4/2 (4 width) -> minibatch stddev
                    -> conv 3x3 (4 width) -> flatten -> dense -> one logit; LeakyReLU 0.2 throughout

Every modulated convolution has its own affine map w -> per-input-channel style (bias initialised to 1, so a
fresh network starts from unmodulated convolutions). The noise inputs are one N(0, 1) image per layer, scaled by a
learned per-channel strength that starts at 0. Upsampling is bilinear. The output is linear (no tanh), as
StyleGAN's; samples are clipped to [0, 1].
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

import funcdl as fd
from funcdl.training.task import DataInfo

from .gan import (
    ADAM,
    ARCHS,
    SMALL_DATA,
    Arch,
    check_quarter,
    config_from,
    conv_p,
    dense_p,
    gan_task,
    lrelu,
    mbstd_group,
    project,
    project_p,
    quarter,
    with_labels,
)
from .registry import register

__all__ = ["build"]

N_MAP = 3                  # dense layers of the mapping network


def _widths(config):
    """Channels of the synthesis layers: one at H/4, two at H/2, two at H."""
    w = config.width
    return ((4 * w, 4 * w), (4 * w, 2 * w), (2 * w, 2 * w), (2 * w, w), (w, w))


def _style_dim(config):
    return 4 * config.width


def _modconv_p(key, k, cin, cout, w_dim):
    ka, kw = jax.random.split(key)
    return {"affine": {"w": jax.random.normal(ka, (w_dim, cin), jnp.float32) / math.sqrt(w_dim),
                       "b": jnp.ones((cin,), jnp.float32)},
            "w": jax.random.normal(kw, (k, k, cin, cout), jnp.float32) / math.sqrt(k * k * cin),
            "b": jnp.zeros((cout,), jnp.float32)}


def _gen_init(key, config):
    (h, w), c, d = quarter(config), config.image[2], _style_dim(config)
    k = iter(jax.random.split(key, 16))
    mapping = [dense_p(next(k), (config.latent + config.num_classes) if i == 0 else d, d, std=1 / math.sqrt(d))
               for i in range(N_MAP)]
    layers = []
    for cin, cout in _widths(config):
        layers.append({**_modconv_p(next(k), 3, cin, cout, d), "noise": jnp.zeros((cout,), jnp.float32)})
    rgb = [_modconv_p(next(k), 1, cout, c, d) for cout in (4 * config.width, 2 * config.width, config.width)]
    return {"mapping": mapping, "const": jax.random.normal(next(k), (h, w, 4 * config.width), jnp.float32),
            "layers": layers, "rgb": rgb}


def _mapping(p, z, onehot):
    z = z * jax.lax.rsqrt(jnp.mean(z * z, axis=-1, keepdims=True) + 1e-8)
    h = with_labels(z, onehot)
    for layer in p:
        h = lrelu(fd.dense(h, layer["w"], layer["b"]))
    return h


def _modconv(p, x, w, *, demodulate=True):
    style = fd.dense(w, p["affine"]["w"], p["affine"]["b"])
    return fd.modulated_conv2d(x, p["w"], style, demodulate=demodulate) + p["b"]


def _layer(p, x, w, key):
    x = _modconv(p, x, w)
    noise = jax.random.normal(key, (*x.shape[:3], 1), x.dtype)
    return lrelu(x + noise * p["noise"])


def _gen(p, z, onehot, config, ref, key):
    """Images of latents z; ``ref`` is unused (no batch norm), ``key`` draws the noise inputs (fixed without)."""
    key = jax.random.PRNGKey(0) if key is None else key
    keys = jax.random.split(key, len(p["layers"]))
    w = _mapping(p["mapping"], z, onehot)
    x = jnp.broadcast_to(p["const"], (z.shape[0], *p["const"].shape))
    x = _layer(p["layers"][0], x, w, keys[0])
    rgb = _modconv(p["rgb"][0], x, w, demodulate=False)
    for r, i in ((1, 1), (2, 3)):               # H/2 then H: upsample, two layers, add the toRGB
        x = fd.upsample_bilinear(x, scale=2)
        x = _layer(p["layers"][i], x, w, keys[i])
        x = _layer(p["layers"][i + 1], x, w, keys[i + 1])
        rgb = fd.upsample_bilinear(rgb, scale=2) + _modconv(p["rgb"][r], x, w, demodulate=False)
    return rgb


def _disc_init(key, config):
    (h, w), c, wd = quarter(config), config.image[2], config.width
    k = jax.random.split(key, 5)
    std = 0.05
    return {"conv0": conv_p(k[0], 3, c, wd, std), "conv1": conv_p(k[1], 4, wd, 2 * wd, std),
            "conv2": conv_p(k[2], 4, 2 * wd, 4 * wd, std), "conv3": conv_p(k[3], 3, 4 * wd + 1, 4 * wd, std),
            **project_p(k[4], h * w * 4 * wd, config, std)}


def _disc(p, x, onehot, config):
    h = lrelu(fd.conv2d(x, p["conv0"]["w"], p["conv0"]["b"], padding=1))
    h = lrelu(fd.conv2d(h, p["conv1"]["w"], p["conv1"]["b"], stride=2, padding=1))
    h = lrelu(fd.conv2d(h, p["conv2"]["w"], p["conv2"]["b"], stride=2, padding=1))
    h = fd.minibatch_stddev(h, group_size=mbstd_group(h.shape[0]))
    h = lrelu(fd.conv2d(h, p["conv3"]["w"], p["conv3"]["b"], padding=1))
    return project(p, h.reshape(h.shape[0], -1), onehot)


ARCHS["stylegan"] = Arch(_gen_init, _gen, _disc_init, _disc, check_quarter)


def build(info: DataInfo, *, latent=64, width=16, loss="non_saturating", n_critic=1, ema=0.999, gp=0.0,
          disc_lr_scale=1.0, gen_lr_scale=1.0, conditional=False, judge=True):
    options = {k: v for k, v in locals().items() if k not in ("info", "conditional")}
    return gan_task(config_from(info, "stylegan", "stylegan", conditional=conditional, **options))


register("stylegan", build, data=("mnist", "fashion_mnist"),
         defaults={"data": "mnist", "epochs": 4, "batch_size": 64, "gp": 1.0, **ADAM,
                   "optimizer_options": {"b1": 0.0, "b2": 0.99}},
         description="small style-based generator: mapping network, learned constant, modulated convolutions "
                     "with demodulation, noise inputs, bilinear upsampling, skip toRGB; discriminator with "
                     "minibatch stddev; non-saturating loss with R1",
         small={"latent": 4, "width": 2, "judge": False}, small_data=SMALL_DATA)
