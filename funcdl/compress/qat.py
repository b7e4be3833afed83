"""Quantization-aware training: a Task whose loss sees fake-quantized weights, trained by the ordinary loop.

``qat_task(task, bits=8, method="ste")`` wraps a Task (funcdl.training.task) without touching the model or the
training engine: before the model's loss runs, every weight leaf with two or more axes (dense matrices,
convolution kernels; biases and norms stay float) is replaced by

* ``method="ste"``: ``fake_quant(w, s)`` with s = max|w| / qmax per output channel (the last axis), recomputed from
  the current weights at every step and held constant (stop_gradient); the straight-through estimator passes the
  gradient to w (all of it: minmax never clips);
* ``method="lsq"``: ``lsq_quant(w, s)`` with a learned step per output channel, kept in ``params["qat_steps"]``
  (initialised as in Esser et al. 2019: 2 mean|w| / sqrt(qp)); its gradient is lsq_quant's hand-derived rule.

The wrapped ``apply`` quantizes the same way, so evaluation measures the quantized model. After STE training,
post-training quantization per channel with minmax weights (``funcdl quantize``) reproduces exactly the weights
the loss saw.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ..nn.quant import fake_quant, lsq_quant
from .quantize import qrange

__all__ = ["qat_task", "quantize_weights", "STEPS"]

STEPS = "qat_steps"


def _path(kp) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in kp)


def _is_weight(leaf) -> bool:
    return hasattr(leaf, "ndim") and leaf.ndim >= 2 and jnp.issubdtype(leaf.dtype, jnp.floating)


def init_steps(params, bits: int) -> dict:
    """LSQ's initial step per output channel of every weight: 2 mean|w| / sqrt(qp), shape (1, ..., 1, C)."""
    qp = qrange(bits, True)[1]
    steps = {}
    for kp, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if _is_weight(leaf):
            m = jnp.mean(jnp.abs(leaf), axis=tuple(range(leaf.ndim - 1)), keepdims=True)
            steps[_path(kp)] = jnp.maximum(2 * m / math.sqrt(qp), 1e-8)
    return steps


def quantize_weights(params, bits: int = 8, method: str = "ste", steps: dict | None = None):
    """``params`` with every weight (ndim >= 2) fake-quantized per output channel (see the module docstring)."""
    qmin, qmax = qrange(bits, True)

    def one(kp, leaf):
        if not _is_weight(leaf):
            return leaf
        if method == "lsq":
            return lsq_quant(leaf, steps[_path(kp)], qn=-qmin, qp=qmax)
        amax = jnp.max(jnp.abs(leaf), axis=tuple(range(leaf.ndim - 1)), keepdims=True)
        scale = jax.lax.stop_gradient(jnp.where(amax > 0, amax / qmax, 1.0))
        return fake_quant(leaf, scale, None, qmin=qmin, qmax=qmax)

    return jax.tree_util.tree_map_with_path(one, params)


def qat_task(task, bits: int = 8, method: str = "ste"):
    """The Task with quantization-aware weights (``method`` "ste" or "lsq"); see the module docstring."""
    if method not in ("ste", "lsq"):
        raise ValueError(f"qat: method must be 'ste' or 'lsq', got {method!r}")
    if not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"qat: bits must be an int in 2..8, got {bits!r}")
    if task.players:
        raise ValueError("qat: tasks with several players (GANs) are not supported; quantize a classifier")

    def split(params):
        if method == "lsq":
            model = {k: v for k, v in params.items() if k != STEPS}
            return quantize_weights(model, bits, method, params[STEPS])
        return quantize_weights(params, bits, method)

    def init(key):
        params, state = task.init(key)
        if method == "lsq":
            if not isinstance(params, dict) or STEPS in params:
                raise ValueError(f"qat: lsq needs a dict of parameters without a {STEPS!r} entry")
            params = {**params, STEPS: init_steps(params, bits)}
        return params, state

    def loss(params, state, batch, key, train):
        return task.loss(split(params), state, batch, key, train)

    apply = None if task.apply is None else (lambda params, state, x: task.apply(split(params), state, x))
    extras = {**(task.extras or {}), "qat": {"bits": bits, "method": method}}
    return task._replace(init=init, loss=loss, apply=apply, extras=extras)
