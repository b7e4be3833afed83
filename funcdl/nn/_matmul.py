"""The matrix products every dense backward is made of, with an optional compute dtype.

A dense layer ``y = x W`` with ``x: (..., n)`` and ``W: (n, m)`` has the backward

    dx = dy W^T          ``mat(dy, W.T)``         (..., m) x (m, n)
    dW = x^T dy          ``t_mat(x, dy)``         summed over every leading axis of x and dy

``compute_dtype="bfloat16"`` casts both operands and accumulates in float32 (mixed precision): the fused
transformer primitives (attention, feed-forward, tied output head) run their products this way when asked.
"""

from __future__ import annotations

import jax.numpy as jnp

__all__ = ["mat", "t_mat", "contract", "sum_rows", "check_compute_dtype", "COMPUTE_DTYPES"]

COMPUTE_DTYPES = (None, "bfloat16", "float16", "float32")


def check_compute_dtype(name, compute_dtype):
    if compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"{name}: compute_dtype must be None, 'float32', 'bfloat16' or 'float16', "
                         f"got {compute_dtype!r}")


def mat(a, w, compute_dtype=None):
    """``a @ w``; with a compute dtype, on operands cast to it with float32 accumulation."""
    if compute_dtype is None:
        return jnp.matmul(a, w)
    return jnp.matmul(a.astype(compute_dtype), w.astype(compute_dtype), preferred_element_type=jnp.float32)


def t_mat(a, b, compute_dtype=None):
    """``a^T b`` over all leading axes: ``(..., n)`` and ``(..., m)`` -> ``(n, m)`` (a weight gradient)."""
    return mat(a.reshape(-1, a.shape[-1]).T, b.reshape(-1, b.shape[-1]), compute_dtype)


def contract(spec, a, b, compute_dtype=None):
    """``jnp.einsum(spec, a, b)``; with a compute dtype, on operands cast to it with float32 accumulation."""
    if compute_dtype is None:
        return jnp.einsum(spec, a, b)
    return jnp.einsum(spec, a.astype(compute_dtype), b.astype(compute_dtype), preferred_element_type=jnp.float32)


def sum_rows(a):
    """Column sums of ``a`` over all its leading axes, ``(..., m) -> (m,)``: a bias gradient."""
    return jnp.sum(a.reshape(-1, a.shape[-1]), axis=0)
