"""An EfficientNet-style small network of MBConv blocks (Sandler et al. 2018; Tan and Le 2019).

An MBConv block (inverted residual with squeeze-and-excitation):

    h = silu(bn(conv1x1(x)))                  expand C -> e C          (skipped when e = 1)
    h = silu(bn(depthwise3x3_s(h)))           one filter per channel (groups = channels), stride s
    h = squeeze_excitation(h)                 channel gates from the global average (reduction 1/4 of C)
    h = bn(conv1x1(h))                        project e C -> C_out, no activation (linear bottleneck)
    y = x + h                                 when s = 1 and C_out = C

The depthwise convolution is where the hand-derived rule pays: it runs tap by tap (see funcdl.nn.conv), which
XLA on CPU executes much faster than its grouped convolution. Stem: conv3x3 (16); stages (channels,
expansion, stride, repeats) = (16, 1, 1, 1), (24, 4, 2, 2), (40, 4, 2, 2); head conv1x1 (128), silu, global
average pooling, dense.
"""

from __future__ import annotations

import dataclasses
import math

import jax

import funcdl as fd
from funcdl.nn.spatial import squeeze_excitation
from funcdl.training.task import DataInfo

from .layers import bn, bn_init, classification_loss, conv, conv_init, dense_init, image_shape, need_classes
from .registry import as_task, register

__all__ = ["Config", "KIND", "init", "apply", "loss"]

KIND = "classification"


@dataclasses.dataclass(frozen=True)
class Config:
    image: tuple = (28, 28, 1)
    num_classes: int = 10
    stem: int = 16
    stages: tuple = ((16, 1, 1, 1), (24, 4, 2, 2), (40, 4, 2, 2))   # (channels, expansion, stride, repeats)
    head: int = 128
    se_ratio: float = 0.25


def _se_init(key, c, reduced):
    k1, k2 = jax.random.split(key)
    b1, b2 = 1 / math.sqrt(c), 1 / math.sqrt(reduced)
    f32 = jax.numpy.float32
    return {"w1": jax.random.uniform(k1, (c, reduced), f32, minval=-b1, maxval=b1), "b1": jax.numpy.zeros(reduced, f32),
            "w2": jax.random.uniform(k2, (reduced, c), f32, minval=-b2, maxval=b2), "b2": jax.numpy.zeros(c, f32)}


def _block_init(key, cin, cout, expansion, config):
    k = jax.random.split(key, 4)
    mid = cin * expansion
    p, s = {}, {}
    if expansion != 1:
        p["expand"] = conv_init(k[0], (1, 1), cin, mid, bias=False, scheme="he")
        p["bn0"], s["bn0"] = bn_init(mid)
    p["dw"] = conv_init(k[1], (3, 3), mid, mid, groups=mid, bias=False, scheme="he")
    p["bn1"], s["bn1"] = bn_init(mid)
    p["se"] = _se_init(k[2], mid, max(1, int(cin * config.se_ratio)))
    p["project"] = conv_init(k[3], (1, 1), mid, cout, bias=False, scheme="he")
    p["bn2"], s["bn2"] = bn_init(cout)
    return p, s


def _block_apply(p, s, x, stride, train):
    new = {}
    h = x
    if "expand" in p:
        h, new["bn0"] = bn(p["bn0"], s["bn0"], conv(p["expand"], h, padding="VALID"), train)
        h = fd.silu(h)
    h, new["bn1"] = bn(p["bn1"], s["bn1"], conv(p["dw"], h, stride=stride, padding=1, groups=h.shape[-1]), train)
    h = fd.silu(h)
    se = p["se"]
    h = squeeze_excitation(h, se["w1"], se["b1"], se["w2"], se["b2"])
    h, new["bn2"] = bn(p["bn2"], s["bn2"], conv(p["project"], h, padding="VALID"), train)
    if stride == 1 and x.shape[-1] == h.shape[-1]:
        h = h + x
    return h, new


def _plan(config):
    for cout, e, stride, repeats in config.stages:
        for r in range(repeats):
            yield cout, e, stride if r == 0 else 1


def init(key, config: Config):
    plan = list(_plan(config))
    keys = jax.random.split(key, len(plan) + 3)
    params = {"stem": conv_init(keys[0], (3, 3), config.image[-1], config.stem, bias=False, scheme="he")}
    params["stem_bn"], stem_s = bn_init(config.stem)
    state = {"stem_bn": stem_s, "blocks": []}
    params["blocks"] = []
    c = config.stem
    for kk, (cout, e, _) in zip(keys[1:], plan, strict=False):
        p, s = _block_init(kk, c, cout, e, config)
        params["blocks"].append(p)
        state["blocks"].append(s)
        c = cout
    params["head_conv"] = conv_init(keys[-2], (1, 1), c, config.head, bias=False, scheme="he")
    params["head_bn"], state["head_bn"] = bn_init(config.head)
    params["head"] = dense_init(keys[-1], config.head, config.num_classes)
    return params, state


def apply(params, state, x, config: Config, *, key=None, train: bool = False):
    h = conv(params["stem"], x if x.ndim == 4 else x[..., None], padding=1)
    h, stem_s = bn(params["stem_bn"], state["stem_bn"], h, train)
    h = fd.silu(h)
    blocks = []
    for p, s, (_, _, stride) in zip(params["blocks"], state["blocks"], _plan(config), strict=True):
        h, ns = _block_apply(p, s, h, stride, train)
        blocks.append(ns)
    h, head_s = bn(params["head_bn"], state["head_bn"], conv(params["head_conv"], h, padding="VALID"), train)
    h = fd.global_avg_pool(fd.silu(h))
    logits = fd.dense(h, params["head"]["w"], params["head"]["b"])
    return logits, {"stem_bn": stem_s, "blocks": blocks, "head_bn": head_s}


def loss(params, state, batch, config: Config, *, key=None, train: bool = False):
    logits, state = apply(params, state, batch["x"], config, key=key, train=train)
    return classification_loss(logits, batch, state)


def build(info: DataInfo, *, stem=16, stages=((16, 1, 1, 1), (24, 4, 2, 2), (40, 4, 2, 2)), head=128):
    need_classes("mbconv", info)
    return as_task(Config(image=image_shape(info), num_classes=info.num_classes, stem=int(stem),
                          stages=tuple(tuple(int(v) for v in st) for st in stages), head=int(head)))


register(
    "mbconv", build, data=("mnist", "fashion_mnist", "cifar10", "digits"),
    defaults={"data": "mnist", "epochs": 3, "batch_size": 128, "optimizer": "adam", "lr": 2e-3,
              "schedule": "cosine"},
    description="EfficientNet-style MBConv net: expand 1x1, depthwise 3x3, squeeze-excite, project 1x1",
    small={"stem": 8, "stages": ((8, 1, 1, 1), (8, 2, 2, 1)), "head": 16},
    small_data=DataInfo("fake-images", (8, 8, 1), num_classes=10),
)
