"""Layer normalisation and RMS normalisation over the trailing axes, with the backward in closed form.

Both take ``axes=k`` (default 1): the statistics run over the last k axes of x, torch's
``normalized_shape = x.shape[-k:]`` (torch names the shape; here x already has it, so only its length is a
setting), and the scale and shift have that trailing shape. Below, a "row" is one index of the leading axes
and D = M = the product of the k trailing sizes.

Layer norm (Ba et al. 2016; torch's ``F.layer_norm``)
-----------------------------------------------------
For one row x of M entries (every leading index is an independent row):

    mu   = mean(x)                     rstd = 1 / sqrt(var(x) + eps)     (biased variance, as torch)
    xhat = (x - mu) * rstd             y    = xhat * w + b               (w, b optional, x.shape[-k:])

Backward. Write g = dy * w (the cotangent of xhat; g = dy without a scale). xhat depends on x through x,
mu and rstd; with d mu / d x_j = 1/M and d rstd / d x_j = -rstd^3 (x_j - mu) / M = -rstd^2 xhat_j / M:

    dxhat_i / dx_j = rstd (delta_ij - 1/M - xhat_i xhat_j / M)

so, contracting with g over i (the Jacobian is symmetric; means over the M entries of the row):

    dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
    dw = sum over rows of dy * xhat          db = sum over rows of dy

Residuals: x, mu and rstd (plus w). x is the layer's input and is alive anyway (in a transformer it is the
residual stream), mu and rstd are one number per row; xhat = (x - mu) * rstd is *recomputed* in the
backward (one fused multiply-add) rather than kept as a second array the size of x — the llm.c trade.

RMS norm (Zhang and Sennrich 2019; torch's ``F.rms_norm``)
----------------------------------------------------------
    rrms = 1 / sqrt(mean(x^2) + eps)    xhat = x * rrms    y = xhat * w

The same derivation without the mean: d rrms / d x_j = -rrms^3 x_j / M = -rrms^2 xhat_j / M, so

    dx = rrms * (g - xhat * mean(g * xhat)),   dw = sum over rows of dy * xhat.

Residuals: x and rrms (one number per row); xhat is recomputed.

Both compute their statistics in at least float32 (a bfloat16 input is normalised in float32 and the
result cast back), as torch does on CPU.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from ..core.examples import Example, keys, normal
from ..core.primitive import primitive
from ._norm import affine, affine_grads, check_affine, normalized_grad, stat_dtype
from ._space import arr, integer, pick

__all__ = ["layer_norm", "rms_norm"]


def _check_axes(name, x, axes):
    if isinstance(axes, bool) or not isinstance(axes, int) or not 1 <= axes <= max(x.ndim, 1):
        raise ValueError(f"{name}: axes (how many trailing axes are normalised) must be an int in 1..{x.ndim} for "
                         f"input {x.shape}, got {axes!r}")


def _trailing(x, axes):
    """The last ``axes`` axes of x, as a tuple of negative axis numbers."""
    return tuple(range(-axes, 0))


# ------------------------------------------------------------------------------------------- layer_norm
def _layer_norm_check(x, w=None, b=None, *, eps=1e-5, axes=1):
    _check_axes("layer_norm", x, axes)
    check_affine("layer_norm", x, w, b, axes=axes)
    if not eps >= 0:
        raise ValueError(f"layer_norm: eps must be >= 0, got {eps}")


def _layer_norm_stats(x, eps, axes):
    xf = x.astype(stat_dtype(x))
    mu = jnp.mean(xf, axis=_trailing(x, axes), keepdims=True)
    var = jnp.mean(jnp.square(xf - mu), axis=_trailing(x, axes), keepdims=True)
    return xf, mu, 1.0 / jnp.sqrt(var + eps)


def _layer_norm(x, w=None, b=None, *, eps=1e-5, axes=1):
    """y = (x - mean(x)) / sqrt(var(x) + eps) * w + b over the last ``axes`` axes (torch ``F.layer_norm`` with
    ``normalized_shape = x.shape[-axes:]``).

    x (..., *T), w and b of the trailing shape T or None; the mean and variance run over the M = prod(T)
    entries of each row. With xhat = (x - mu) * rstd and g = dy * w (see the module docstring):
        dx = rstd * (g - mean(g) - xhat * mean(g * xhat))      (means over the M entries)
        dw = sum over rows of dy * xhat          db = sum over rows of dy
    Residuals: x, mu, rstd, w and b; xhat is recomputed.
    """
    xf, mu, rstd = _layer_norm_stats(x, eps, axes)
    return affine((xf - mu) * rstd, w, b, x.dtype)


def _layer_norm_fwd(x, w=None, b=None, *, eps=1e-5, axes=1):
    # keeps the statistics mu and rstd, so they are computed here rather than inside the reference
    xf, mu, rstd = _layer_norm_stats(x, eps, axes)
    return affine((xf - mu) * rstd, w, b, x.dtype), (x, w, b, mu, rstd)


def _layer_norm_bwd(res, dy, *, eps=1e-5, axes=1):
    x, w, b, mu, rstd = res
    xhat = (x.astype(mu.dtype) - mu) * rstd                 # recomputed, not kept
    dyf = dy.astype(mu.dtype)
    g = dyf if w is None else dyf * w
    dw, db = affine_grads(dyf, xhat, w, b)
    return normalized_grad(g, xhat, rstd, _trailing(x, axes)).astype(x.dtype), dw, db


def _layer_norm_examples(key, dtype):
    k = keys(key, 8)
    return [
        Example((normal(k[0], (4, 6), dtype, 2.0, 0.5), normal(k[1], (6,), dtype, 1.0, 1.0),
                 normal(k[2], (6,), dtype)), label="2-D scale+bias"),
        Example((normal(k[3], (2, 3, 5), dtype), None, None), {"eps": 1e-3}, "3-D no affine eps=1e-3"),
        Example((normal(k[4], (2, 3, 5), dtype), normal(k[5], (5,), dtype, 1.0, 1.0), None), label="scale only"),
        Example((normal(k[6], (7,), dtype), None, normal(k[7], (7,), dtype)), label="1-D bias only"),
        Example((normal(k[0], (2, 3, 4), dtype, 2.0, 0.5), normal(k[1], (3, 4), dtype, 1.0, 1.0),
                 normal(k[2], (3, 4), dtype)), {"axes": 2}, "axes=2 scale+bias"),
    ]


def _norm_space(n_affine):
    """x of rank 1-4 normalised over its last 1-3 axes (``axes`` up to the rank), trailing sizes 1-4 (1-6 for a
    single axis); at least 3 normalised entries when eps = 0 (one entry has no spread, and two normalise to +-1
    for every x, a gradient that is exactly 0 and leaves the checker comparing rounding noise); scale/shift each
    present or None, of the trailing shape; eps from 0 to 0.1."""

    def space(rng, dtype):
        eps = pick(rng, [0.0, 1e-6, 1e-5, 1e-3, 0.1])
        rank = integer(rng, 1, 4)
        axes = pick(rng, [1, 1, integer(rng, 1, min(rank, 3))])
        lead = tuple(integer(rng, 1, 4) for _ in range(rank - axes))
        tail = (integer(rng, 1, 6),) if axes == 1 else tuple(integer(rng, 1, 4) for _ in range(axes))
        if eps == 0 and math.prod(tail) < 3:
            tail = (*tail[:-1], 3)
        x = arr(rng, (*lead, *tail), dtype, pick(rng, [0.5, 1.0, 3.0]), pick(rng, [0.0, 1.0]))
        params = tuple(arr(rng, tail, dtype, 1.0, 1.0 - j) if rng.random() < 0.6 else None
                       for j in range(n_affine))
        return Example((x, *params), {"eps": eps, "axes": axes})

    return space


layer_norm = primitive("layer_norm", _layer_norm, _layer_norm_fwd, _layer_norm_bwd, examples=_layer_norm_examples,
                       space=_norm_space(2), check=_layer_norm_check)


# --------------------------------------------------------------------------------------------- rms_norm
def _rms_norm_check(x, w=None, *, eps=1e-6, axes=1):
    _check_axes("rms_norm", x, axes)
    check_affine("rms_norm", x, w, None, axes=axes)
    if not eps >= 0:
        raise ValueError(f"rms_norm: eps must be >= 0, got {eps}")


def _rms_norm_stats(x, eps, axes):
    xf = x.astype(stat_dtype(x))
    return xf, 1.0 / jnp.sqrt(jnp.mean(jnp.square(xf), axis=_trailing(x, axes), keepdims=True) + eps)


def _rms_norm(x, w=None, *, eps=1e-6, axes=1):
    """y = x / sqrt(mean(x^2) + eps) * w over the last ``axes`` axes (torch ``F.rms_norm`` with an explicit eps
    and ``normalized_shape = x.shape[-axes:]``).

    x (..., *T), w of the trailing shape T or None; means over the M = prod(T) entries of a row. With
    rrms = 1/sqrt(mean(x^2) + eps), xhat = x * rrms, g = dy * w and d rrms / d x_j = -rrms^2 xhat_j / M (layer
    norm's derivation without the mean):
        dx = rrms * (g - xhat * mean(g * xhat)),   dw = sum over rows of dy * xhat
    Residuals: x, w and rrms; xhat is recomputed.
    """
    xf, rrms = _rms_norm_stats(x, eps, axes)
    return affine(xf * rrms, w, None, x.dtype)


def _rms_norm_fwd(x, w=None, *, eps=1e-6, axes=1):
    # keeps the statistic rrms, so it is computed here rather than inside the reference
    xf, rrms = _rms_norm_stats(x, eps, axes)
    return affine(xf * rrms, w, None, x.dtype), (x, w, rrms)


def _rms_norm_bwd(res, dy, *, eps=1e-6, axes=1):
    x, w, rrms = res
    xhat = x.astype(rrms.dtype) * rrms                      # recomputed, not kept
    dyf = dy.astype(rrms.dtype)
    g = dyf if w is None else dyf * w
    dw, _ = affine_grads(dyf, xhat, w, None)
    return normalized_grad(g, xhat, rrms, _trailing(x, axes), centered=False).astype(x.dtype), dw


def _rms_norm_examples(key, dtype):
    k = keys(key, 4)
    return [
        Example((normal(k[0], (4, 6), dtype, 2.0, 0.5), normal(k[1], (6,), dtype, 1.0, 1.0)), label="2-D scale"),
        Example((normal(k[2], (2, 3, 5), dtype), None), {"eps": 1e-3}, "3-D no scale eps=1e-3"),
        Example((normal(k[3], (7,), dtype), None), label="1-D"),
        Example((normal(k[0], (2, 3, 4), dtype, 2.0, 0.5), normal(k[1], (3, 4), dtype, 1.0, 1.0)), {"axes": 2},
                "axes=2 scale"),
    ]


rms_norm = primitive("rms_norm", _rms_norm, _rms_norm_fwd, _rms_norm_bwd, examples=_rms_norm_examples,
                     space=_norm_space(1), check=_rms_norm_check)
