"""The dense (fully connected, linear) layer ``y = x W + b`` over any number of leading dimensions.

Shapes: x (..., n_in), W (n_in, n_out) (JAX layout; torch stores the transpose), b (n_out,) or None.

Backward, with the leading dimensions flattened into one batch axis N (X is N x n_in, dY is N x n_out):
    y_nk = sum_i x_ni W_ik + b_k
    dx_ni = sum_k dy_nk W_ik        ->  dX = dY W^T
    dW_ik = sum_n x_ni dy_nk        ->  dW = X^T dY
    db_k  = sum_n dy_nk             ->  db = column sums of dY
Residuals: x and W (both are needed and already live; nothing is recomputed).
"""

from __future__ import annotations

import jax.numpy as jnp

from ..core.examples import Example, keys, normal
from ..core.primitive import primitive
from ._space import arr, integer, pick

__all__ = ["dense", "linear"]


def _check(x, w, b=None, *, precision=None):
    if w.ndim != 2:
        raise ValueError(f"dense: weight must be 2-D (n_in, n_out), got shape {w.shape}")
    if x.ndim < 1 or x.shape[-1] != w.shape[0]:
        raise ValueError(
            f"dense: input shape {x.shape} does not match weight shape {w.shape}: the input's last "
            f"dimension must equal the weight's first (n_in = {w.shape[0]}); weights are (n_in, n_out)"
        )
    if b is not None and b.shape != (w.shape[1],):
        raise ValueError(f"dense: bias shape {b.shape} must be ({w.shape[1]},) to match weight shape {w.shape}")


def _dense(x, w, b=None, *, precision=None):
    """y = x W + b, x (..., n_in), W (n_in, n_out), b (n_out,) or None.

    With the leading dimensions flattened into N rows (X is N x n_in, dY is N x n_out):
        dx = dY W^T        dw = X^T dY        db = column sums of dY
    Residuals: x, W and b (all live already; nothing is recomputed).
    """
    y = jnp.matmul(x, w, precision=precision)
    return y if b is None else y + b


def _dense_fwd(x, w, b=None, *, precision=None):
    return _dense(x, w, b, precision=precision), (x, w, b)


def _dense_bwd(res, dy, *, precision=None):
    x, w, b = res
    n_in, n_out = w.shape
    dy2 = dy.reshape(-1, n_out)
    dx = jnp.matmul(dy, w.T, precision=precision)
    dw = jnp.matmul(x.reshape(-1, n_in).T, dy2, precision=precision)
    db = None if b is None else jnp.sum(dy2, axis=0)
    return dx, dw, db


def _dense_examples(key, dtype):
    k = keys(key, 9)
    return [
        Example((normal(k[0], (6, 5), dtype), normal(k[1], (5, 4), dtype), normal(k[2], (4,), dtype)),
                label="2-D with bias"),
        Example((normal(k[3], (2, 3, 5), dtype), normal(k[4], (5, 4), dtype), None), label="3-D no bias"),
        Example((normal(k[5], (5,), dtype), normal(k[6], (5, 3), dtype), normal(k[7], (3,), dtype)),
                label="1-D input"),
    ]


def _dense_space(rng, dtype):
    """x of rank 1-4 (any leading axes), n_in and n_out 1-6, bias or none, every matmul precision."""
    n_in, n_out = integer(rng, 1, 6), integer(rng, 1, 6)
    x = arr(rng, (*(integer(rng, 1, 4) for _ in range(integer(rng, 0, 3))), n_in), dtype)
    b = arr(rng, (n_out,), dtype) if rng.random() < 0.6 else None
    return Example((x, arr(rng, (n_in, n_out), dtype, 0.5), b),
                   {"precision": pick(rng, [None, "default", "high", "highest"])})


dense = primitive("dense", _dense, _dense_fwd, _dense_bwd, examples=_dense_examples, space=_dense_space, check=_check)
linear = dense
