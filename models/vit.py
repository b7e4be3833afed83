"""A small vision transformer (ViT, Dosovitskiy et al. 2021) on image patches.

    x = [cls; patches(image) W_p + b_p] + wpe     an image (H, W, C) cut into p x p patches, each flattened
                                                 and projected; a learned [CLS] token and learned positions
    h = blocks(x)                                 pre-norm transformer blocks (``models.layers.block``)
    logits = layer_norm(h[CLS]) W + b
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

import funcdl as fd
from funcdl.training.task import DataInfo

from .layers import block, block_init, classification_loss, norm_init, positions
from .registry import as_task, register

__all__ = ["Config", "KIND", "init", "apply", "loss", "patches"]

KIND = "classification"


@dataclasses.dataclass(frozen=True)
class Config:
    image_shape: tuple = (28, 28, 1)
    num_classes: int = 10
    patch: int = 7
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 64
    d_ff: int | None = None        # default 4 d_model

    def __post_init__(self):
        if self.d_model % self.n_head:
            raise ValueError(f"vit.Config: n_head ({self.n_head}) must divide d_model ({self.d_model})")
        h, w = self.image_shape[:2]
        if h % self.patch or w % self.patch:
            raise ValueError(f"vit: patch size {self.patch} must divide the image size {h}x{w}")


def init(key, config: Config):
    h, w, c = config.image_shape
    n = (h // config.patch) * (w // config.patch)
    k = jax.random.split(key, config.n_layer + 4)
    pdim = config.patch * config.patch * c
    d = config.d_model
    params = {"patch": {"w": jax.random.normal(k[0], (pdim, d)) / math.sqrt(pdim), "b": jnp.zeros(d)},
              "cls": 0.02 * jax.random.normal(k[1], (1, 1, d)),
              "wpe": 0.02 * jax.random.normal(k[2], (n + 1, d)),
              "blocks": [block_init(kk, config) for kk in k[4:]], "ln_f": norm_init(d),
              "head": {"w": 0.02 * jax.random.normal(k[3], (d, config.num_classes)),
                       "b": jnp.zeros(config.num_classes)}}
    return params, {}


def patches(images, p):
    """(B, H, W, C) -> (B, (H/p)(W/p), p p C), row-major patches."""
    b, h, w, c = images.shape
    x = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def apply(params, state, x, config: Config, *, key=None, train: bool = False):
    """``(logits, state)`` for images x (B, H, W, C) or (B, H, W)."""
    if x.ndim == 3:
        x = x[..., None]
    h = fd.dense(patches(x, config.patch), params["patch"]["w"], params["patch"]["b"])
    cls = jnp.broadcast_to(params["cls"], (h.shape[0], 1, h.shape[2]))
    h = jnp.concatenate([cls, h], axis=1) + positions(params["wpe"], h.shape[1] + 1)
    for blk in params["blocks"]:
        h = block(blk, h, config)
    h = fd.layer_norm(h[:, 0], params["ln_f"]["w"], params["ln_f"]["b"])
    return fd.dense(h, params["head"]["w"], params["head"]["b"]), state


def loss(params, state, batch, config: Config, *, key=None, train: bool = False):
    logits, state = apply(params, state, batch["x"], config, key=key, train=train)
    return classification_loss(logits, batch, state)


def build(info: DataInfo, *, n_layer=4, n_head=4, d_model=64, patch=7):
    if info.num_classes is None or len(info.input_shape) < 2:
        raise ValueError(f"vit needs an image classification data set, not {info.name!r}")
    shape = tuple(info.input_shape) + ((1,) if len(info.input_shape) == 2 else ())
    return as_task(Config(image_shape=shape, num_classes=info.num_classes, patch=patch, n_layer=n_layer,
                          n_head=n_head, d_model=d_model))


register("vit", build, data=("mnist", "digits", "fashion_mnist"),
         defaults={"data": "mnist", "epochs": 3, "batch_size": 128, "optimizer": "adamw", "lr": 1e-3,
                   "weight_decay": 0.05, "schedule": "cosine", "warmup_steps": 100, "clip_norm": 1.0},
         description="vision transformer: 7x7 patches of 28x28 images, [CLS] token, 4 pre-norm blocks",
         small={"n_layer": 1, "n_head": 2, "d_model": 8, "patch": 4},
         small_data=DataInfo("fake-images", (8, 8, 1), num_classes=10))
