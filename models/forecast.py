"""LSTM forecaster: a window of the past (B, W, F) -> the next ``horizon`` values of the target (B, H).

    h_1..h_W = LSTM stack(x)  (hand-written BPTT),   y_hat = h_W W_o + b_o,   loss = mean squared error

Data are normalised by the training part (``funcdl.data.timeseries``), so the loss is in units of the target's
training standard deviation squared. The metric ``mae`` is the mean absolute error in the same units; the
baseline to beat is the persistence forecast (tomorrow = today), reported as ``persistence_mae``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

import funcdl as fd
from funcdl.training.task import DataInfo

from .registry import as_task, register
from .rnn import StackConfig, init_stack, stack

__all__ = ["Config", "KIND", "init", "apply", "loss"]

KIND = "regression"


@dataclasses.dataclass(frozen=True)
class Config:
    features: int
    horizon: int
    hidden: int = 64
    layers: int = 1
    target_column: int = 0
    dropout: float = 0.0

    @property
    def stack(self) -> StackConfig:
        return StackConfig("lstm", self.features, self.hidden, self.layers, dropout=self.dropout)


def init(key, config: Config):
    k1, k2 = jax.random.split(key)
    bound = 1.0 / math.sqrt(config.hidden)
    return {"rnn": init_stack(k1, config.stack),
            "head": {"w": jax.random.uniform(k2, (config.hidden, config.horizon), minval=-bound, maxval=bound),
                     "b": jnp.zeros((config.horizon,))}}, {}


def apply(params, state, x, config: Config, *, key=None, train: bool = False):
    """``(forecast (B, horizon), state)`` for windows x (B, W, F) or (B, W)."""
    if x.ndim == 2:
        x = x[..., None]
    _, h_n, _ = stack(params["rnn"], x, config.stack, key=key, train=train)
    return fd.dense(h_n[-1], params["head"]["w"], params["head"]["b"]), state


def loss(params, state, batch, config: Config, *, key=None, train: bool = False):
    """Mean squared error; metrics ``mae`` and the persistence forecast's ``persistence_mae``."""
    pred, state = apply(params, state, batch["x"], config, key=key, train=train)
    value = fd.mse_loss(pred, batch["y"])
    last = batch["x"][:, -1, config.target_column] if batch["x"].ndim == 3 else batch["x"][:, -1]
    metrics = {"loss": value, "mae": jnp.mean(jnp.abs(pred - batch["y"])),
               "persistence_mae": jnp.mean(jnp.abs(last[:, None] - batch["y"]))}
    return value, (state, metrics)


def build(info: DataInfo, *, hidden=64, layers=1, dropout=0.0):
    data_extras = info.extras or {}
    if info.kind != "regression" or "horizon" not in data_extras:
        raise ValueError(f"lstm-forecast needs a forecasting data set (sines, sunspots, jena_climate), "
                         f"not {info.name!r}")
    return as_task(Config(int(data_extras["features"]), int(data_extras["horizon"]), int(hidden), int(layers),
                          int(data_extras.get("target_column", 0)), float(dropout)))


register("lstm-forecast", build, data=("sines", "sunspots", "jena_climate"),
         defaults={"data": "sines", "epochs": 20, "batch_size": 64, "optimizer": "adam", "lr": 3e-3,
                   "clip_norm": 1.0},
         description="LSTM forecaster: window of the past -> next horizon values, MSE (vs persistence MAE)",
         small={"hidden": 6, "layers": 2},
         small_data=DataInfo("fake-series", (12, 2), kind="regression",
                             extras={"window": 12, "horizon": 3, "features": 2, "target_column": 0}))
