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
from funcdl.training.task import DataInfo, Task

from .registry import register
from .rnn import StackConfig, init_stack, stack

__all__ = ["ForecastConfig", "init", "apply", "make_task"]


@dataclasses.dataclass(frozen=True)
class ForecastConfig:
    features: int
    horizon: int
    hidden: int = 64
    layers: int = 1
    target_column: int = 0
    dropout: float = 0.0

    @property
    def stack(self) -> StackConfig:
        return StackConfig("lstm", self.features, self.hidden, self.layers, dropout=self.dropout)


def init(key, cfg: ForecastConfig) -> dict:
    k1, k2 = jax.random.split(key)
    bound = 1.0 / math.sqrt(cfg.hidden)
    return {"rnn": init_stack(k1, cfg.stack),
            "head": {"w": jax.random.uniform(k2, (cfg.hidden, cfg.horizon), minval=-bound, maxval=bound),
                     "b": jnp.zeros((cfg.horizon,))}}


def apply(params, x, cfg: ForecastConfig, *, key=None, train: bool = False):
    if x.ndim == 2:
        x = x[..., None]
    _, h_n, _ = stack(params["rnn"], x, cfg.stack, key=key, train=train)
    return fd.dense(h_n[-1], params["head"]["w"], params["head"]["b"])


def make_task(cfg: ForecastConfig) -> Task:
    def task_init(key):
        return init(key, cfg), {}

    def task_loss(params, state, batch, key, train):
        pred = apply(params, batch["x"], cfg, key=key, train=train)
        value = fd.mse_loss(pred, batch["y"])
        last = batch["x"][:, -1, cfg.target_column] if batch["x"].ndim == 3 else batch["x"][:, -1]
        metrics = {"loss": value, "mae": jnp.mean(jnp.abs(pred - batch["y"])),
                   "persistence_mae": jnp.mean(jnp.abs(last[:, None] - batch["y"]))}
        return value, (state, metrics)

    return Task(task_init, task_loss, "regression", apply=lambda p, s, x: apply(p, x, cfg), extras={"config": cfg})


def _build(info: DataInfo, hidden=64, layers=1, dropout=0.0, **_):
    extras = info.extras or {}
    if info.kind != "regression" or "horizon" not in extras:
        raise ValueError(f"lstm-forecast needs a forecasting data set (sines, sunspots, jena_climate), "
                         f"not {info.name!r}")
    return make_task(ForecastConfig(int(extras["features"]), int(extras["horizon"]), int(hidden), int(layers),
                                    int(extras.get("target_column", 0)), float(dropout)))


register("lstm-forecast", _build, data=("sines", "sunspots", "jena_climate"),
         defaults={"data": "sines", "epochs": 20, "batch_size": 64, "optimizer": "adam", "lr": 3e-3,
                   "clip_norm": 1.0},
         description="LSTM forecaster: window of the past -> next horizon values, MSE (vs persistence MAE)")
