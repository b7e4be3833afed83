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


def check_affine(name, x, scale, shift, labels=("scale", "bias"), axes=1):
    """scale and shift, when given, have the shape of the last ``axes`` axes of x ((C,) for one axis)."""
    if x.ndim < 1:
        raise ValueError(f"{name}: input must have at least one axis (normalised over the last), got a scalar")
    want = tuple(x.shape[x.ndim - axes:])
    for label, v in zip(labels, (scale, shift), strict=True):
        if v is not None and v.shape != want:
            if axes == 1:
                raise ValueError(f"{name}: {label} shape {v.shape} must be ({want[0]},), the size of the input's "
                                 f"last axis (input {x.shape}; channels last)")
            raise ValueError(f"{name}: {label} shape {v.shape} must be {want}, the input's last {axes} axes "
                             f"(input {x.shape}, axes={axes})")


def affine(xhat, scale, shift, dtype):
    """y = xhat * scale + shift (either may be None), cast to the input's dtype."""
    y = xhat if scale is None else xhat * scale.astype(xhat.dtype)
    y = y if shift is None else y + shift.astype(xhat.dtype)
    return y.astype(dtype)


def affine_grads(dy, xhat, scale, shift):
    """dscale = sum of dy * xhat and dshift = sum of dy over every leading axis (all but the trailing axes the
    parameter covers: its own shape, (C,) for a per-channel one); None where absent."""
    def lead_sum(v, p):
        return jnp.sum(v.reshape(-1, *p.shape), axis=0).astype(p.dtype)
    dscale = None if scale is None else lead_sum(dy * xhat, scale)
    dshift = None if shift is None else lead_sum(dy, shift)
    return dscale, dshift


def normalized_grad(g, xhat, rstd, axis, centered=True):
    """dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) over ``axis`` (without mean(g) when not centred)."""
    gx = jnp.mean(g * xhat, axis=axis, keepdims=True)
    if centered:
        return rstd * (g - jnp.mean(g, axis=axis, keepdims=True) - xhat * gx)
    return rstd * (g - xhat * gx)
