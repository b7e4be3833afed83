"""Layer normalisation and RMS normalisation over the last axis, with the backward in closed form.

Layer norm (Ba et al. 2016; torch's ``F.layer_norm`` with ``normalized_shape = x.shape[-1:]``)
------------------------------------------------------------------------------------------------
For one row x of length D (every leading index is an independent row):

    mu   = mean(x)                     rstd = 1 / sqrt(var(x) + eps)     (biased variance, as torch)
    xhat = (x - mu) * rstd             y    = xhat * w + b               (w, b optional, shape (D,))

Backward. Write g = dy * w (the cotangent of xhat; g = dy without a scale). xhat depends on x through x,
mu and rstd; with d mu / d x_j = 1/D and d rstd / d x_j = -rstd^3 (x_j - mu) / D = -rstd^2 xhat_j / D:

    dxhat_i / dx_j = rstd (delta_ij - 1/D - xhat_i xhat_j / D)

so, contracting with g over i (the Jacobian is symmetric):

    dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
    dw = sum over rows of dy * xhat          db = sum over rows of dy

Residuals: x, mu and rstd (plus w). x is the layer's input and is alive anyway (in a transformer it is the
residual stream), mu and rstd are one number per row; xhat = (x - mu) * rstd is *recomputed* in the
backward (one fused multiply-add) rather than kept as a second array the size of x — the llm.c trade.

RMS norm (Zhang and Sennrich 2019; torch's ``F.rms_norm``)
----------------------------------------------------------
    rrms = 1 / sqrt(mean(x^2) + eps)    xhat = x * rrms    y = xhat * w

The same derivation without the mean: d rrms / d x_j = -rrms^3 x_j / D = -rrms^2 xhat_j / D, so

    dx = rrms * (g - xhat * mean(g * xhat)),   dw = sum over rows of dy * xhat.

Residuals: x and rrms (one number per row); xhat is recomputed.

Both compute their statistics in at least float32 (a bfloat16 input is normalised in float32 and the
result cast back), as torch does on CPU.
"""

from __future__ import annotations

import jax.numpy as jnp

from ..core.examples import Example, keys, normal
from ..core.primitive import primitive
from ._norm import affine, affine_grads, check_affine, normalized_grad, stat_dtype
from ._space import arr, integer, pick

__all__ = ["layer_norm", "rms_norm"]


# ------------------------------------------------------------------------------------------- layer_norm
def _layer_norm_check(x, w=None, b=None, *, eps=1e-5):
    check_affine("layer_norm", x, w, b)
    if not eps >= 0:
        raise ValueError(f"layer_norm: eps must be >= 0, got {eps}")


def _layer_norm_stats(x, eps):
    xf = x.astype(stat_dtype(x))
    mu = jnp.mean(xf, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(xf - mu), axis=-1, keepdims=True)
    return xf, mu, 1.0 / jnp.sqrt(var + eps)


def _layer_norm(x, w=None, b=None, *, eps=1e-5):
    """y = (x - mean(x)) / sqrt(var(x) + eps) * w + b over the last axis (torch ``F.layer_norm``).

    x (..., D), w and b (D,) or None. With xhat = (x - mu) * rstd and g = dy * w (see the module docstring):
        dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
        dw = sum over rows of dy * xhat          db = sum over rows of dy
    Residuals: x, mu, rstd, w and b; xhat is recomputed.
    """
    xf, mu, rstd = _layer_norm_stats(x, eps)
    return affine((xf - mu) * rstd, w, b, x.dtype)


def _layer_norm_fwd(x, w=None, b=None, *, eps=1e-5):
    # keeps the statistics mu and rstd, so they are computed here rather than inside the reference
    xf, mu, rstd = _layer_norm_stats(x, eps)
    return affine((xf - mu) * rstd, w, b, x.dtype), (x, w, b, mu, rstd)


def _layer_norm_bwd(res, dy, *, eps=1e-5):
    x, w, b, mu, rstd = res
    xhat = (x.astype(mu.dtype) - mu) * rstd                 # recomputed, not kept
    dyf = dy.astype(mu.dtype)
    g = dyf if w is None else dyf * w
    dw, db = affine_grads(dyf, xhat, w, b)
    return normalized_grad(g, xhat, rstd, -1).astype(x.dtype), dw, db


def _layer_norm_examples(key, dtype):
    k = keys(key, 8)
    return [
        Example((normal(k[0], (4, 6), dtype, 2.0, 0.5), normal(k[1], (6,), dtype, 1.0, 1.0),
                 normal(k[2], (6,), dtype)), label="2-D scale+bias"),
        Example((normal(k[3], (2, 3, 5), dtype), None, None), {"eps": 1e-3}, "3-D no affine eps=1e-3"),
        Example((normal(k[4], (2, 3, 5), dtype), normal(k[5], (5,), dtype, 1.0, 1.0), None), label="scale only"),
        Example((normal(k[6], (7,), dtype), None, normal(k[7], (7,), dtype)), label="1-D bias only"),
    ]


def _norm_space(n_affine):
    """x of rank 1-4 (last axis 1-6; 3-6 when eps = 0: one entry has no spread, and two normalise to +-1 for
    every x, a gradient that is exactly 0 and leaves the checker comparing rounding noise), scale/shift each
    present or None, eps from 0 to 0.1."""

    def space(rng, dtype):
        eps = pick(rng, [0.0, 1e-6, 1e-5, 1e-3, 0.1])
        shape = (*(integer(rng, 1, 4) for _ in range(integer(rng, 0, 3))), integer(rng, 3 if eps == 0 else 1, 6))
        x = arr(rng, shape, dtype, pick(rng, [0.5, 1.0, 3.0]), pick(rng, [0.0, 1.0]))
        params = tuple(arr(rng, shape[-1:], dtype, 1.0, 1.0 - j) if rng.random() < 0.6 else None
                       for j in range(n_affine))
        return Example((x, *params), {"eps": eps})

    return space


layer_norm = primitive("layer_norm", _layer_norm, _layer_norm_fwd, _layer_norm_bwd, examples=_layer_norm_examples,
                       space=_norm_space(2), check=_layer_norm_check)


# --------------------------------------------------------------------------------------------- rms_norm
def _rms_norm_check(x, w=None, *, eps=1e-6):
    check_affine("rms_norm", x, w, None)
    if not eps >= 0:
        raise ValueError(f"rms_norm: eps must be >= 0, got {eps}")


def _rms_norm_stats(x, eps):
    xf = x.astype(stat_dtype(x))
    return xf, 1.0 / jnp.sqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + eps)


def _rms_norm(x, w=None, *, eps=1e-6):
    """y = x / sqrt(mean(x^2) + eps) * w over the last axis (torch ``F.rms_norm`` with an explicit eps).

    x (..., D), w (D,) or None. With rrms = 1/sqrt(mean(x^2) + eps), xhat = x * rrms, g = dy * w and
    d rrms / d x_j = -rrms^2 xhat_j / D (layer norm's derivation without the mean):
        dx = rrms * (g - xhat * mean(g * xhat)),   dw = sum over rows of dy * xhat
    Residuals: x, w and rrms; xhat is recomputed.
    """
    xf, rrms = _rms_norm_stats(x, eps)
    return affine(xf * rrms, w, None, x.dtype)


def _rms_norm_fwd(x, w=None, *, eps=1e-6):
    # keeps the statistic rrms, so it is computed here rather than inside the reference
    xf, rrms = _rms_norm_stats(x, eps)
    return affine(xf * rrms, w, None, x.dtype), (x, w, rrms)


def _rms_norm_bwd(res, dy, *, eps=1e-6):
    x, w, rrms = res
    xhat = x.astype(rrms.dtype) * rrms                      # recomputed, not kept
    dyf = dy.astype(rrms.dtype)
    g = dyf if w is None else dyf * w
    dw, _ = affine_grads(dyf, xhat, w, None)
    return normalized_grad(g, xhat, rrms, -1, centered=False).astype(x.dtype), dw


def _rms_norm_examples(key, dtype):
    k = keys(key, 4)
    return [
        Example((normal(k[0], (4, 6), dtype, 2.0, 0.5), normal(k[1], (6,), dtype, 1.0, 1.0)), label="2-D scale"),
        Example((normal(k[2], (2, 3, 5), dtype), None), {"eps": 1e-3}, "3-D no scale eps=1e-3"),
        Example((normal(k[3], (7,), dtype), None), label="1-D"),
    ]


rms_norm = primitive("rms_norm", _rms_norm, _rms_norm_fwd, _rms_norm_bwd, examples=_rms_norm_examples,
                     space=_norm_space(1), check=_rms_norm_check)
