"""A dilated-convolution classifier: stacked SAME convolutions with growing dilation, batch norm, ReLU, global
average pooling and a dense layer.

With kernel K and dilations d_1..d_L every output sees 1 + (K - 1) sum_l d_l inputs (31 taps for K = 3 and
dilations 1, 2, 4, 8). Batch-norm running statistics live in ``state``.
"""

from __future__ import annotations

import dataclasses

import jax

import funcdl as fd
from funcdl.training.task import DataInfo

from .layers import (
    as_channels_last,
    bn,
    bn_init,
    classification_loss,
    conv,
    conv_init,
    dense_init,
    need_classes,
    spatial_dims_of,
)
from .registry import as_task, register

__all__ = ["Config", "KIND", "init", "apply", "loss"]

KIND = "classification"


@dataclasses.dataclass(frozen=True)
class Config:
    spatial_dims: int = 1
    in_channels: int = 1
    channels: int = 32
    dilations: tuple = (1, 2, 4, 8)   # receptive field 1 + 2 * sum(dilations) = 31 taps with kernel 3
    kernel: int = 3
    num_classes: int = 10


def init(key, config: Config):
    n = config.spatial_dims
    ks = jax.random.split(key, len(config.dilations) + 1)
    params, state = {"convs": []}, {"bns": []}
    bns = []
    cin = config.in_channels
    for k in ks[:-1]:
        params["convs"].append(conv_init(k, (config.kernel,) * n, cin, config.channels, bias=False))
        p, s = bn_init(config.channels)
        bns.append(p)
        state["bns"].append(s)
        cin = config.channels
    params["bns"] = bns
    params["out"] = dense_init(ks[-1], config.channels, config.num_classes)
    return params, state


def apply(params, state, x, config: Config, *, key=None, train: bool = False):
    h = as_channels_last(x, config.spatial_dims)
    new_bns = []
    for cp, bp, bs, d in zip(params["convs"], params["bns"], state["bns"], config.dilations, strict=True):
        h, s = bn(bp, bs, conv(cp, h, padding="SAME", dilation=d), train)
        h = fd.relu(h)
        new_bns.append(s)
    h = fd.global_avg_pool(h)
    return fd.dense(h, params["out"]["w"], params["out"]["b"]), {"bns": new_bns}


def loss(params, state, batch, config: Config, *, key=None, train: bool = False):
    logits, state = apply(params, state, batch["x"], config, key=key, train=train)
    return classification_loss(logits, batch, state)


def build(info: DataInfo, *, channels=32, dilations=(1, 2, 4, 8)):
    need_classes("dilated", info)
    n = spatial_dims_of(info)
    cin = int(info.input_shape[-1]) if len(info.input_shape) == n + 1 else 1
    return as_task(Config(spatial_dims=n, in_channels=cin, channels=channels, dilations=tuple(dilations),
                          num_classes=info.num_classes))


register(
    "dilated", build, data=("mnist1d", "mnist"),
    defaults={"data": "mnist1d", "epochs": 60, "batch_size": 100, "optimizer": "adam", "lr": 3e-3,
              "channels": 32, "dilations": (1, 2, 4, 8)},
    description="dilated convolutions (dilation 1, 2, 4, 8) with batch norm, global average pooling",
    small={"channels": 6, "dilations": (1, 2)}, small_data=DataInfo("fake-mnist1d", (40,), num_classes=10),
)
