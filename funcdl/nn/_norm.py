"""Pieces shared by every normalisation (``layernorm``, ``norm``): the statistics dtype, the affine check, the
affine map y = xhat * scale + shift and its parameter gradients, and the input gradient of a normalisation.

For xhat = (x - mu) * rstd over a set of M entries (mu their mean, rstd = 1/sqrt(var + eps)), with
g = dy * scale the cotangent of xhat, d mu/dx_j = 1/M and d rstd/dx_j = -rstd^2 xhat_j / M:

    dxhat_i / dx_j = rstd (delta_ij - 1/M - xhat_i xhat_j / M)
    dx = rstd * (g - mean(g) - xhat * mean(g * xhat))          (``centered=False`` drops mean(g): RMS norm)
"""

from __future__ import annotations

import jax.numpy as jnp

__all__ = ["stat_dtype", "check_affine", "affine", "affine_grads", "normalized_grad"]


def stat_dtype(x):
    """Statistics in at least float32 (a bfloat16 input is normalised in float32 and cast back, as torch)."""
    return jnp.promote_types(x.dtype, jnp.float32)


def check_affine(name, x, scale, shift, labels=("scale", "bias")):
    """scale and shift, when given, are (C,) for the last axis of x."""
    if x.ndim < 1:
        raise ValueError(f"{name}: input must have at least one axis (normalised over the last), got a scalar")
    c = x.shape[-1]
    for label, v in zip(labels, (scale, shift), strict=True):
        if v is not None and v.shape != (c,):
            raise ValueError(f"{name}: {label} shape {v.shape} must be ({c},), the size of the input's last axis "
                             f"(input {x.shape}; channels last)")


def affine(xhat, scale, shift, dtype):
    """y = xhat * scale + shift (either may be None), cast to the input's dtype."""
    y = xhat if scale is None else xhat * scale.astype(xhat.dtype)
    y = y if shift is None else y + shift.astype(xhat.dtype)
    return y.astype(dtype)


def affine_grads(dy, xhat, scale, shift):
    """dscale = sum of dy * xhat and dshift = sum of dy over every axis but the last; None where absent."""
    dscale = None if scale is None else jnp.sum((dy * xhat).reshape(-1, dy.shape[-1]), axis=0).astype(scale.dtype)
    dshift = None if shift is None else jnp.sum(dy.reshape(-1, dy.shape[-1]), axis=0).astype(shift.dtype)
    return dscale, dshift


def normalized_grad(g, xhat, rstd, axis, centered=True):
    """dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) over ``axis`` (without mean(g) when not centred)."""
    gx = jnp.mean(g * xhat, axis=axis, keepdims=True)
    if centered:
        return rstd * (g - jnp.mean(g, axis=axis, keepdims=True) - xhat * gx)
    return rstd * (g - xhat * gx)
