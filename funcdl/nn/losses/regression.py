"""Regression losses, elementwise on an input and a target of the same shape: MSE, L1, Huber, smooth L1."""

from __future__ import annotations

import jax.numpy as jnp

from ...core.examples import Example, keys, normal
from ...core.primitive import primitive
from .._space import arr, integer, num, pick
from ._common import REDUCTIONS, check_reduction, dtype_tag, need_float, reduce_grad, reduce_loss, same_shape

__all__ = ["mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss"]


def _regression_check(name, x, t, reduction):
    check_reduction(name, reduction)
    need_float(name, "input", x)
    need_float(name, "target", t)
    same_shape(name, x, t)


def _regression_examples(settings, kinks=()):
    """(4, 3) inputs and targets whose differences keep clear of the loss's kinks."""

    def examples(key, dtype):
        k = keys(key, 2 * len(settings) + 2)
        out = []
        for i, (s, label) in enumerate(settings):
            x = normal(k[2 * i], (4, 3), dtype, 1.5)
            t = normal(k[2 * i + 1], (4, 3), dtype)
            d = x - t
            for p in kinks(s) if callable(kinks) else kinks:
                for sign in (1, -1):                  # push |d| away from each kink by at least 0.05
                    near = jnp.abs(d - sign * p) < 0.05
                    d = jnp.where(near, d + jnp.where(d - sign * p < 0, -0.1, 0.1), d)
            out.append(Example((t + d, t), s, label))
        return out

    return examples


def _regression_space(settings=None, kinks=()):
    """Inputs and targets of any shape (rank 0-3, sides 1-5), every reduction, the settings ``settings(rng)``
    draws; differences d = x - t kept 0.05 clear of +-each kink."""

    def space(rng, dtype):
        s = {"reduction": pick(rng, list(REDUCTIONS)), **(settings(rng) if settings else {})}
        shape = tuple(integer(rng, 1, 5) for _ in range(integer(rng, 0, 3)))
        t = arr(rng, shape, dtype)
        pts = [q for p in (kinks(s) if callable(kinks) else kinks) for q in (p, -p)]
        d = arr(rng, shape, dtype, num(rng, 0.3, 3.0), kinks=pts)
        return Example((t + d, t), s)

    return space


_REDUCTION_CONFIGS = [({}, "mean"), ({"reduction": "sum"}, "sum"), ({"reduction": "none"}, "none")]


def _difference_fwd(reference, input, target, **settings):
    """The loss and the residuals every regression loss keeps: d = x - t and the two dtypes."""
    return reference(input, target, **settings), (input - target, dtype_tag(input), dtype_tag(target))


def _difference_grads(slope, g, reduction, x_tag, t_tag):
    """dinput = slope * (the reduction's factor), dtarget = -dinput, each in its input's dtype."""
    dx = slope * reduce_grad(g, reduction, slope.shape)
    return dx.astype(x_tag.dtype), (-dx).astype(t_tag.dtype)


# ---------------------------------------------------------------------------------------------------- MSE
def _mse_loss_check(input, target, *, reduction="mean"):
    _regression_check("mse_loss", input, target, reduction)


def _mse_loss(input, target, *, reduction="mean"):
    """Mean squared error (torch's ``F.mse_loss``): l_i = (x_i - t_i)^2, reduced over all entries.

    With d = x - t:  dinput_i = 2 d_i,  dtarget_i = -2 d_i (times 1/size for the mean).  Residual: d.
    """
    d = input - target
    return reduce_loss(d * d, reduction)


def _mse_loss_fwd(input, target, *, reduction="mean"):
    return _difference_fwd(_mse_loss, input, target, reduction=reduction)


def _mse_loss_bwd(res, g, *, reduction="mean"):
    d, x_tag, t_tag = res
    return _difference_grads(2 * d, g, reduction, x_tag, t_tag)


mse_loss = primitive("mse_loss", _mse_loss, _mse_loss_fwd, _mse_loss_bwd,
                     examples=_regression_examples(_REDUCTION_CONFIGS), space=_regression_space(),
                     check=_mse_loss_check)


# ----------------------------------------------------------------------------------------------------- L1
def _l1_loss_check(input, target, *, reduction="mean"):
    _regression_check("l1_loss", input, target, reduction)


def _l1_loss(input, target, *, reduction="mean"):
    """Mean absolute error (torch's ``F.l1_loss``): l_i = |x_i - t_i|.

    dinput_i = sign(x_i - t_i) (0 at a tie, as torch), dtarget_i = -sign(x_i - t_i).  Residual: d = x - t.
    """
    return reduce_loss(jnp.abs(input - target), reduction)


def _l1_loss_fwd(input, target, *, reduction="mean"):
    return _difference_fwd(_l1_loss, input, target, reduction=reduction)


def _l1_loss_bwd(res, g, *, reduction="mean"):
    d, x_tag, t_tag = res
    return _difference_grads(jnp.sign(d), g, reduction, x_tag, t_tag)


l1_loss = primitive("l1_loss", _l1_loss, _l1_loss_fwd, _l1_loss_bwd,
                    examples=_regression_examples(_REDUCTION_CONFIGS, kinks=(0.0,)),
                    space=_regression_space(kinks=(0.0,)), check=_l1_loss_check)


# -------------------------------------------------------------------------------------------------- Huber
def _huber_loss_check(input, target, *, reduction="mean", delta=1.0):
    _regression_check("huber_loss", input, target, reduction)
    if not delta > 0:
        raise ValueError(f"huber_loss: delta must be > 0, got {delta}")


def _huber_loss(input, target, *, reduction="mean", delta=1.0):
    """Huber loss (torch's ``F.huber_loss``): quadratic near 0, linear beyond delta. With d = x - t,
        l_i = d^2 / 2                  if |d| < delta
              delta (|d| - delta / 2)  otherwise
    Both pieces have slope d at |d| = delta, so dl/dd = clip(d, -delta, delta) everywhere:
        dinput = clip(d, -delta, delta),  dtarget = -clip(d, -delta, delta).   Residual: d.
    """
    d = input - target
    a = jnp.abs(d)
    return reduce_loss(jnp.where(a < delta, 0.5 * d * d, delta * (a - 0.5 * delta)), reduction)


def _huber_loss_fwd(input, target, *, reduction="mean", delta=1.0):
    return _difference_fwd(_huber_loss, input, target, reduction=reduction, delta=delta)


def _huber_loss_bwd(res, g, *, reduction="mean", delta=1.0):
    d, x_tag, t_tag = res
    return _difference_grads(jnp.clip(d, -delta, delta), g, reduction, x_tag, t_tag)


huber_loss = primitive(
    "huber_loss", _huber_loss, _huber_loss_fwd, _huber_loss_bwd, check=_huber_loss_check,
    examples=_regression_examples(_REDUCTION_CONFIGS + [({"delta": 0.5}, "delta=0.5")],
                                  kinks=lambda s: (s.get("delta", 1.0),)),
    space=_regression_space(lambda rng: {"delta": num(rng, 0.05, 3.0)}, kinks=lambda s: (s["delta"],)),
)


# ---------------------------------------------------------------------------------------------- smooth L1
def _smooth_l1_loss_check(input, target, *, reduction="mean", beta=1.0):
    _regression_check("smooth_l1_loss", input, target, reduction)
    if not beta >= 0:
        raise ValueError(f"smooth_l1_loss: beta must be >= 0, got {beta}")


def _smooth_l1_loss(input, target, *, reduction="mean", beta=1.0):
    """Smooth L1 (torch's ``F.smooth_l1_loss``), the Huber loss divided by its threshold. With d = x - t,
        l_i = d^2 / (2 beta)   if |d| < beta
              |d| - beta / 2   otherwise                (beta = 0 is the L1 loss)
    so smooth_l1(beta) = huber(delta = beta) / beta and dinput = clip(d / beta, -1, 1) = -dtarget
    (sign(d) when beta = 0).  Residual: d.
    """
    d = input - target
    a = jnp.abs(d)
    if beta == 0:
        return reduce_loss(a, reduction)
    return reduce_loss(jnp.where(a < beta, 0.5 * d * d / beta, a - 0.5 * beta), reduction)


def _smooth_l1_loss_fwd(input, target, *, reduction="mean", beta=1.0):
    return _difference_fwd(_smooth_l1_loss, input, target, reduction=reduction, beta=beta)


def _smooth_l1_loss_bwd(res, g, *, reduction="mean", beta=1.0):
    d, x_tag, t_tag = res
    slope = jnp.sign(d) if beta == 0 else jnp.clip(d / beta, -1.0, 1.0)
    return _difference_grads(slope, g, reduction, x_tag, t_tag)


smooth_l1_loss = primitive(
    "smooth_l1_loss", _smooth_l1_loss, _smooth_l1_loss_fwd, _smooth_l1_loss_bwd, check=_smooth_l1_loss_check,
    examples=_regression_examples(
        _REDUCTION_CONFIGS + [({"beta": 0.5}, "beta=0.5"), ({"beta": 0.0, "reduction": "sum"}, "beta=0 (L1)")],
        kinks=lambda s: (s.get("beta", 1.0),)),
    space=_regression_space(lambda rng: {"beta": pick(rng, [0.0, num(rng, 0.05, 3.0)])},
                            kinks=lambda s: (0.0, s["beta"])),
)
