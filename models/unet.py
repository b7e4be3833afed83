"""The denoising UNet of DDPM (Ho et al. 2020), small enough for MNIST on a CPU, built from funcdl primitives.

    x (N, H, W, C), t (N,) ints, labels (N,) or None
    emb = dense(silu(dense(timestep_embedding(t, dim=c0))))   (+ a class embedding when class-conditional)
    conv3x3 -> c0
    down:  for each level l (resolution H / 2^l, width c_l): `blocks` residual blocks (self-attention after each
           at the levels in `attention`), each output kept as a skip; a stride-2 conv3x3 between levels
    middle: residual block, self-attention, residual block
    up:    for each level from the lowest: `blocks + 1` residual blocks, each on [h, skip] (channel concatenation);
           nearest 2x upsampling + conv3x3 between levels
    group norm, silu, conv3x3 -> C  (zero-initialised, so the first prediction is 0)

**The residual block** (with FiLM conditioning on the embedding):

    h = conv3x3(silu(GN(x)));   (gamma, beta) = dense(silu(emb))
    h = conv3x3(silu(GN(h) * (1 + gamma) + beta));   out = h + (x, or conv1x1(x) when the width changes)

The second convolution starts at zero, so each block starts as the identity. **Self-attention** treats the H*W
positions as tokens: GN, a 1x1 projection to q, k, v, ``dot_product_attention`` with ``heads`` heads, a 1x1
projection back (zero-initialised), added to the input. Group norm uses ``groups`` groups (DDPM: 32; 8 here for
32-64 channels). A class-conditional UNet has ``num_classes + 1`` class embeddings; the last is the "null" class
classifier-free guidance trains with and samples against.

Every layer is a registered primitive (``conv2d``, ``group_norm``, ``dense``, ``silu``,
``dot_product_attention``, ``upsample_nearest``, ``timestep_embedding``, ``embedding``), so the whole network's
gradient runs through hand-derived rules and ``fd.autodiff`` differentiates the same network through the
references.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

import funcdl as fd
from funcdl.nn.attention import merge_heads, split_heads
from funcdl.nn.norm import norm_init

from .layers import conv, conv_init, dense_init

__all__ = ["UNetConfig", "unet_init", "unet", "check_shape"]


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    image: tuple = (28, 28, 1)
    channels: tuple = (32, 64, 64)     # width per level; the resolution halves between levels
    blocks: int = 1                    # residual blocks per level on the way down (blocks + 1 on the way up)
    attention: tuple = (2,)            # levels with self-attention after each block (the middle always has it)
    heads: int = 4
    groups: int = 8
    num_classes: int = 0               # > 0: class-conditional, with a null class for guidance

    def __post_init__(self):
        if not self.channels or any(c < 1 or c % self.groups for c in self.channels):
            raise ValueError(f"unet: every width in channels={self.channels} must be a positive multiple of "
                             f"groups={self.groups}")
        if any(c % self.heads for c in self.channels):
            raise ValueError(f"unet: heads={self.heads} must divide every width in channels={self.channels}")
        if self.blocks < 1:
            raise ValueError(f"unet: blocks must be >= 1, got {self.blocks}")
        if any(not 0 <= a < len(self.channels) for a in self.attention):
            raise ValueError(f"unet: attention levels {self.attention} must lie in 0..{len(self.channels) - 1}")

    @property
    def emb_dim(self) -> int:
        return 4 * self.channels[0]


def check_shape(config: UNetConfig, name: str = "ddpm") -> None:
    """An image the UNet cannot take: sizes that do not halve cleanly down to the lowest level."""
    h, w, _ = config.image
    levels = len(config.channels) - 1
    if h % 2 ** levels or w % 2 ** levels:
        raise ValueError(f"{name}: a {h}x{w} image cannot be halved {levels} times; use fewer levels "
                         f"(--set channels=...) or an image whose sides divide by {2 ** levels}")


def _res_init(key, cin, cout, emb):
    k = jax.random.split(key, 4)
    p = {"norm1": norm_init(cin), "conv1": conv_init(k[0], (3, 3), cin, cout),
         "film": dense_init(k[1], emb, 2 * cout), "norm2": norm_init(cout),
         "conv2": jax.tree.map(jnp.zeros_like, conv_init(k[2], (3, 3), cout, cout))}
    if cin != cout:
        p["skip"] = conv_init(k[3], (1, 1), cin, cout)
    return p


def _gn(p, x, groups):
    return fd.group_norm(x, p["scale"], p["bias"], groups=groups)


def _res(p, x, emb, groups):
    h = conv(p["conv1"], fd.silu(_gn(p["norm1"], x, groups)))
    film = fd.dense(emb, p["film"]["w"], p["film"]["b"])
    gamma, beta = jnp.split(film[:, None, None, :], 2, axis=-1)
    h = conv(p["conv2"], fd.silu(_gn(p["norm2"], h, groups) * (1.0 + gamma) + beta))
    return h + (conv(p["skip"], x) if "skip" in p else x)


def _attn_init(key, c):
    k1, k2 = jax.random.split(key)
    return {"norm": norm_init(c), "qkv": dense_init(k1, c, 3 * c),
            "out": jax.tree.map(jnp.zeros_like, dense_init(k2, c, c))}


def _attn(p, x, heads, groups):
    n, h, w, c = x.shape
    t = _gn(p["norm"], x, groups).reshape(n, h * w, c)
    q, k, v = jnp.split(fd.dense(t, p["qkv"]["w"], p["qkv"]["b"]), 3, axis=-1)
    o = merge_heads(fd.dot_product_attention(split_heads(q, heads), split_heads(k, heads), split_heads(v, heads)))
    return x + fd.dense(o, p["out"]["w"], p["out"]["b"]).reshape(n, h, w, c)


def unet_init(key, config: UNetConfig) -> dict:
    chans, e = config.channels, config.emb_dim
    keys = iter(jax.random.split(key, 64))
    p = {"time1": dense_init(next(keys), chans[0], e), "time2": dense_init(next(keys), e, e),
         "stem": conv_init(next(keys), (3, 3), config.image[2], chans[0]), "down": [], "up": []}
    if config.num_classes:
        p["classes"] = jax.random.normal(next(keys), (config.num_classes + 1, e), jnp.float32) * 0.02
    skips, c = [chans[0]], chans[0]
    for lvl, width in enumerate(chans):
        level = {"blocks": []}
        for _ in range(config.blocks):
            block = {"res": _res_init(next(keys), c, width, e)}
            if lvl in config.attention:
                block["attn"] = _attn_init(next(keys), width)
            level["blocks"].append(block)
            c = width
            skips.append(c)
        if lvl < len(chans) - 1:
            level["down"] = conv_init(next(keys), (3, 3), c, c)
            skips.append(c)
        p["down"].append(level)
    p["mid"] = {"res1": _res_init(next(keys), c, c, e), "attn": _attn_init(next(keys), c),
                "res2": _res_init(next(keys), c, c, e)}
    for lvl, width in reversed(list(enumerate(chans))):
        level = {"blocks": []}
        for _ in range(config.blocks + 1):
            block = {"res": _res_init(next(keys), c + skips.pop(), width, e)}
            if lvl in config.attention:
                block["attn"] = _attn_init(next(keys), width)
            level["blocks"].append(block)
            c = width
        if lvl > 0:
            level["upconv"] = conv_init(next(keys), (3, 3), c, c)
        p["up"].append(level)
    p["out_norm"] = norm_init(c)
    p["out"] = jax.tree.map(jnp.zeros_like, conv_init(next(keys), (3, 3), c, config.image[2]))
    return p


def _embedding(p, t, labels, config):
    emb = fd.timestep_embedding(t.astype(jnp.float32), dim=config.channels[0])
    emb = fd.dense(fd.silu(fd.dense(emb, p["time1"]["w"], p["time1"]["b"])), p["time2"]["w"], p["time2"]["b"])
    if config.num_classes:
        emb = emb + fd.embedding(p["classes"], labels)
    return fd.silu(emb)


def _block(b, h, emb, config):
    h = _res(b["res"], h, emb, config.groups)
    return _attn(b["attn"], h, config.heads, config.groups) if "attn" in b else h


def unet(p, x, t, labels, config: UNetConfig):
    """The network's output (N, H, W, C) for x_t (N, H, W, C) at steps t (N,); ``labels`` (N,) ints in
    0..num_classes (num_classes is the null class) for a conditional UNet, else None."""
    if config.num_classes and labels is None:
        raise ValueError("unet: a class-conditional UNet needs labels (num_classes is the null class)")
    emb = _embedding(p, t, labels, config)
    h = conv(p["stem"], x)
    skips = [h]
    for level in p["down"]:
        for b in level["blocks"]:
            h = _block(b, h, emb, config)
            skips.append(h)
        if "down" in level:
            h = conv(level["down"], h, stride=2)
            skips.append(h)
    h = _res(p["mid"]["res1"], h, emb, config.groups)
    h = _attn(p["mid"]["attn"], h, config.heads, config.groups)
    h = _res(p["mid"]["res2"], h, emb, config.groups)
    for level in p["up"]:
        for b in level["blocks"]:
            h = _block(b, jnp.concatenate([h, skips.pop()], axis=-1), emb, config)
        if "upconv" in level:
            h = conv(level["upconv"], fd.upsample_nearest(h, scale=2))
    return conv(p["out"], fd.silu(_gn(p["out_norm"], h, config.groups)))
