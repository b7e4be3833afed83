"""Temporal convolutional network (Bai, Kolter & Koltun 2018): residual blocks of dilated causal convolutions.

    block(x; d) = relu(x W_skip + conv_d(relu(conv_d(x))))     conv_d: kernel K, dilation d, CAUSAL padding

Causal padding puts (K-1) d zeros before the sequence and none after, so output t sees inputs <= t only — a
TCN can replace an RNN on streaming data. With dilations 1, 2, 4, ... the receptive field grows
exponentially: 1 + 2 (K-1) sum_l d_l steps. The classifier reads the last time step (which has seen the whole
sequence). Uses ``funcdl.conv1d`` (NWC layout, kernels (K, C_in, C_out)) with its hand-derived backward.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

import funcdl as fd
from funcdl.training.task import DataInfo

from .layers import classification_loss, need_classes
from .registry import as_task, register

__all__ = ["Config", "KIND", "init", "apply", "loss", "features", "receptive_field", "extras"]

KIND = "classification"


@dataclasses.dataclass(frozen=True)
class Config:
    input_size: int
    num_classes: int
    channels: int = 32
    kernel: int = 3
    dilations: tuple = (1, 2, 4, 8, 16)
    dropout: float = 0.0


def receptive_field(config: Config) -> int:
    return 1 + 2 * (config.kernel - 1) * sum(config.dilations)


def _conv_init(key, k, c_in, c_out):
    bound = 1.0 / math.sqrt(k * c_in)             # torch nn.Conv1d default
    kw, kb = jax.random.split(key)
    return {"w": jax.random.uniform(kw, (k, c_in, c_out), minval=-bound, maxval=bound),
            "b": jax.random.uniform(kb, (c_out,), minval=-bound, maxval=bound)}


def init(key, config: Config):
    blocks = []
    c_in = config.input_size
    for i, _ in enumerate(config.dilations):
        k1, k2, k3 = jax.random.split(jax.random.fold_in(key, i), 3)
        block = {"conv1": _conv_init(k1, config.kernel, c_in, config.channels),
                 "conv2": _conv_init(k2, config.kernel, config.channels, config.channels)}
        if c_in != config.channels:
            block["skip"] = _conv_init(k3, 1, c_in, config.channels)
        blocks.append(block)
        c_in = config.channels
    kh = jax.random.fold_in(key, 1000)
    bound = 1.0 / math.sqrt(config.channels)
    head = {"w": jax.random.uniform(kh, (config.channels, config.num_classes), minval=-bound, maxval=bound),
            "b": jnp.zeros((config.num_classes,))}
    return {"blocks": blocks, "head": head}, {}


def features(params, x, config: Config, *, key=None, train: bool = False):
    """x (B, T, C) -> (B, T, channels); every output step sees only the inputs up to it."""
    for i, (block, d) in enumerate(zip(params["blocks"], config.dilations, strict=True)):
        h = fd.relu(fd.conv1d(x, block["conv1"]["w"], block["conv1"]["b"], padding="CAUSAL", dilation=d))
        if train and config.dropout > 0 and key is not None:
            h = fd.dropout(h, jax.random.fold_in(key, 2 * i), rate=config.dropout)
        h = fd.conv1d(h, block["conv2"]["w"], block["conv2"]["b"], padding="CAUSAL", dilation=d)
        skip = x if "skip" not in block else fd.conv1d(x, block["skip"]["w"], block["skip"]["b"])
        x = fd.relu(h + skip)
    return x


def apply(params, state, x, config: Config, *, key=None, train: bool = False):
    """``(logits, state)``: the classifier reads the last time step, which has seen the whole sequence."""
    if x.ndim == 2:
        x = x[..., None]
    h = features(params, x, config, key=key, train=train)
    return fd.dense(h[:, -1], params["head"]["w"], params["head"]["b"]), state


def loss(params, state, batch, config: Config, *, key=None, train: bool = False):
    logits, state = apply(params, state, batch["x"], config, key=key, train=train)
    return classification_loss(logits, batch, state)


def extras(config: Config) -> dict:
    return {"receptive_field": receptive_field(config)}


def build(info: DataInfo, *, channels=32, kernel=3, dilations=(1, 2, 4, 8, 16), dropout=0.0):
    need_classes("tcn", info)
    shape = tuple(info.input_shape)
    input_size = 1 if len(shape) == 1 else shape[-1]
    dil = tuple(dilations) if isinstance(dilations, tuple | list) else (int(dilations),)
    return as_task(Config(input_size, info.num_classes, int(channels), int(kernel), dil, float(dropout)))


register("tcn", build, data=("mnist1d", "mnist1d_shuffled"),
         defaults={"data": "mnist1d", "epochs": 40, "batch_size": 100, "optimizer": "adam", "lr": 3e-3,
                   "channels": 32},
         description="temporal convolutional network: residual dilated causal conv1d blocks, last-step readout",
         small={"channels": 4, "dilations": (1, 2, 4), "dropout": 0.1},
         small_data=DataInfo("fake-mnist1d", (40,), num_classes=10))
