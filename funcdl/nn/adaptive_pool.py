"""Adaptive pooling (torch's windows): average and max over windows chosen by the output size, 1-D, 2-D, 3-D.

Inputs are channels-last ``(N, *spatial, C)``; every channel is pooled on its own. Output i of an axis of length
L pooled to P reads x[floor(i L / P) : ceil((i+1) L / P)] (never empty: ceil((i+1) L / P) > i L / P). P may
exceed L (as torch): the windows then overlap and an input element feeds several outputs. The window of an
output is the product of its axes' windows.

Average: per axis a fixed P x L averaging matrix A, so y = A_1 x A_2^T (per example and channel) and, the map
being linear, dx = A_1^T dy A_2 -- the transposes of the same matrices.

Max: y[o] = max of the window of o; the max is the identity of one input, so dy[o] flows to the element that
attained it, dx[p] = sum_o dy[o] [p = argmax(o)] (a scatter-add, since windows may overlap). Ties: the first
maximal element of the window in row-major order wins (torch's CPU kernel replaces the running max only on a
strictly larger value). The residual is that argmax, a flat index into the input's spatial positions.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ..core.examples import Example, normal, rng
from ..core.primitive import primitive
from ._space import arr, distinct, integer
from ._windows import as_tuple

__all__ = ["adaptive_matrix", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
           "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d"]

_LAYOUTS = {1: "(N, L, C)", 2: "(N, H, W, C)", 3: "(N, D, H, W, C)"}


def _bounds(length, out):
    """torch's window [floor(i L / P), ceil((i+1) L / P)) of every output i of one axis."""
    return [((i * length) // out, -(-((i + 1) * length) // out)) for i in range(out)]


def adaptive_matrix(length, out, dtype=jnp.float32):
    """The P x L averaging matrix of one axis (torch's window bounds)."""
    a = np.zeros((out, length))
    for i, (lo, hi) in enumerate(_bounds(length, out)):
        a[i, lo:hi] = 1.0 / (hi - lo)
    return jnp.asarray(a, dtype)


def _window_table(length, out):
    """(P, W) positions of each output's window padded to the widest W by repeating its last position, and the
    (P, W) mask of the real ones."""
    bounds = _bounds(length, out)
    width = max(hi - lo for lo, hi in bounds)
    pos = np.array([[min(lo + j, hi - 1) for j in range(width)] for lo, hi in bounds], np.int32)
    real = np.array([[lo + j < hi for j in range(width)] for lo, hi in bounds])
    return pos, real


def _gather_windows(v, axis, table):
    """v with ``axis`` (length L) replaced by the two axes (P, W) of the windows in ``table`` (P, W)."""
    where = (slice(None),) * axis + (jnp.asarray(table),)
    return v.at[where].get(mode="promise_in_bounds")


def _make_check(name, n):
    def check(x, *, output_size):
        if x.ndim != n + 2:
            raise ValueError(f"{name}: input must be {n + 2}-D {_LAYOUTS[n]} (channels last), got shape {x.shape}")
        as_tuple(name, output_size, n, "output_size", positive=True)
        if 0 in x.shape[1:1 + n]:
            raise ValueError(f"{name}: input {x.shape} has an empty spatial axis; every window must hold an element")
    return check


def _make_space(n, values, high):
    def space(rng, dtype):
        """Input sides 1-``high``, output sides 1 to the input's + 3 (larger outputs overlap their windows); one
        int for all axes or one per axis."""
        spatial = tuple(integer(rng, 1, high) for _ in range(n))
        size = tuple(integer(rng, 1, length + 3) for length in spatial)
        size = size[0] if n == 1 or (len(set(size)) == 1 and rng.random() < 0.5) else size
        x = values(rng, (integer(rng, 1, 2), *spatial, integer(rng, 1, 2)), dtype)
        return Example((x,), {"output_size": size})
    return space


def _cases(n):
    """(input shape, output_size): smaller, larger and mixed outputs, tiny shapes."""
    if n == 1:
        return [((2, 7, 2), 3), ((2, 5, 2), 1), ((1, 3, 2), 5)]
    if n == 2:
        return [((2, 5, 4, 2), (3, 2)), ((1, 3, 2, 2), (5, 3)), ((2, 5, 3, 2), (1, 4))]
    return [((1, 4, 3, 5, 2), (2, 3, 2)), ((2, 2, 3, 2, 1), (3, 4, 2)), ((1, 3, 3, 3, 2), 1)]


# -- adaptive average pooling ------------------------------------------------------------------------------------


def _separable_windows(x, size, reduce):
    """Reduce torch's adaptive windows one spatial axis at a time (a box mean or max is separable):
    ``reduce(gathered, inside, axis)`` over the window axis, ``inside`` marking the real (not padded) taps."""
    n = len(size)
    y = x
    for a in range(n):
        pos, real = _window_table(x.shape[1 + a], size[a])
        g = _gather_windows(y, 1 + a, pos)
        inside = jnp.asarray(real).reshape(*real.shape, *([1] * (n - a)))
        y = reduce(g, inside, 2 + a).astype(x.dtype)
    return y


def _make_adaptive_avg_pool(name, n):
    letters = "hwd"[:n]
    outs = "pqr"[:n]          # not n or c: those are the batch and channel axes of the einsum
    spec = ",".join(f"{o}{i}" for o, i in zip(outs, letters, strict=True))

    def _adaptive_avg_pool(x, *, output_size):
        """Adaptive average pooling (torch's windows), x (N, *L, C) -> (N, *P, C); P may exceed L.

        Output i of an axis of length L pooled to P averages x[floor(i L / P) : ceil((i+1) L / P)]. Per axis
        that is a fixed P x L averaging matrix A, so y = A_1 x A_2^T (per example and channel) and, the map being
        linear, dx = A_1^T dy A_2: the transposes of the same matrices. Residual: x's shape.
        (The reference takes the window means one axis at a time, a box mean being separable.)
        """
        mean = lambda g, inside, axis: jnp.sum(jnp.where(inside, g, 0), axis=axis) / jnp.sum(inside, axis=1)  # noqa: E731
        return _separable_windows(x, as_tuple(name, output_size, n, "output_size", positive=True), mean)

    def matrices(spatial, size, dtype):
        return [adaptive_matrix(length, p, dtype) for length, p in zip(spatial, size, strict=True)]

    def _adaptive_avg_pool_fwd(x, *, output_size):
        # the primal as the product with the averaging matrices the backward transposes
        size = as_tuple(name, output_size, n, "output_size", positive=True)
        y = jnp.einsum(f"{spec},n{letters}c->n{outs}c", *matrices(x.shape[1:1 + n], size, x.dtype), x)
        return y, (x.shape,)

    def _adaptive_avg_pool_bwd(res, dy, *, output_size):
        (shape,) = res
        size = as_tuple(name, output_size, n, "output_size", positive=True)
        return (jnp.einsum(f"{spec},n{outs}c->n{letters}c", *matrices(shape[1:1 + n], size, dy.dtype), dy),)

    def _adaptive_avg_pool_examples(key, dtype):
        return [Example((normal(jax.random.fold_in(key, j), shape, dtype),), {"output_size": size},
                        f"{shape[1:-1]} -> {size}") for j, (shape, size) in enumerate(_cases(n))]

    _adaptive_avg_pool.__name__ = _adaptive_avg_pool.__qualname__ = f"_{name}"
    return primitive(name, _adaptive_avg_pool, _adaptive_avg_pool_fwd, _adaptive_avg_pool_bwd,
                     examples=_adaptive_avg_pool_examples, space=_make_space(n, arr, 9 if n < 3 else 5),
                     check=_make_check(name, n))


# -- adaptive max pooling ----------------------------------------------------------------------------------------


def _box_table(spatial, size):
    """(Q, B) flat input positions of every output's window (Q outputs in row-major order, each window listed in
    row-major order and padded to the largest B by repeating its last position), and the (Q, B) mask of the real
    ones."""
    tables = [_window_table(length, p) for length, p in zip(spatial, size, strict=True)]
    strides = [math.prod(spatial[a + 1:]) for a in range(len(spatial))]
    flat, real = np.zeros((), np.int32), np.ones((), bool)
    for (pos, inside), st in zip(tables, strides, strict=True):
        flat = np.add.outer(flat, pos * st)              # axes (p_0, w_0, ..., p_a, w_a)
        real = np.logical_and.outer(real, inside)
    n = len(spatial)
    # axes are now (p_0, w_0, p_1, w_1, ...): bring the outputs first
    order = [2 * a for a in range(n)] + [2 * a + 1 for a in range(n)]
    q = math.prod(size)
    return flat.transpose(order).reshape(q, -1), real.transpose(order).reshape(q, -1)


def _flat_positions(spatial_index, shape, like=None):
    """Positions in x.reshape(-1), x of ``shape`` (N, *L, C), of the flat spatial index ``spatial_index``
    (broadcast to ``like``'s (N, ..., C) layout, or to (N, ..., C) from its own axes): (n M + index) C + c."""
    batch, m, channels = shape[0], math.prod(shape[1:-1]), shape[-1]
    target = like if like is not None else (batch, *spatial_index.shape[1:-1], channels)
    nn = np.arange(batch).reshape(-1, *([1] * (len(target) - 1)))
    cc = np.arange(channels)
    return np.broadcast_to((nn * m + spatial_index) * channels + cc, target).astype(np.int32)


def _make_adaptive_max_pool(name, n):
    def _adaptive_max_pool(x, *, output_size):
        """Adaptive max pooling (torch's windows), x (N, *L, C) -> (N, *P, C); P may exceed L.

        y[o] = max of x over the window of o, whose axis of length L pooled to P spans
        [floor(i L / P), ceil((i+1) L / P)) (the max of a box taken one axis at a time).
        The max is piecewise the identity of one input, so dy[o] flows to the element that attained it:
            dx[p] = sum_o dy[o] [p = argmax(o)],   argmax(o) = the first maximal element of o's window in
        row-major order (torch's CPU tie rule); windows overlap when P > L, so one p may collect several dy[o].
        Residual: argmax(o) per output, a flat index into the spatial positions (a small integer array), not x.
        """
        top = lambda g, inside, axis: jnp.max(jnp.where(inside, g, -jnp.inf), axis=axis)  # noqa: E731
        return _separable_windows(x, as_tuple(name, output_size, n, "output_size", positive=True), top)

    def _adaptive_max_pool_fwd(x, *, output_size):
        # the primal with its argmax (the tie rule), which the backward scatters dy to; the windows are one
        # gather at static positions of the flattened x (few operations: the jit check runs them one by one)
        size = as_tuple(name, output_size, n, "output_size", positive=True)
        idx, _ = _box_table(x.shape[1:1 + n], size)            # repeated last positions never come first
        batch, channels, q, b = x.shape[0], x.shape[-1], *idx.shape
        where = _flat_positions(idx.reshape(1, q, b, 1), x.shape)                      # (N, Q, B, C)
        g = x.reshape(-1).at[jnp.asarray(where)].get(mode="promise_in_bounds")
        j = jnp.argmax(g, axis=2, keepdims=True)                                      # first maximal (the tie rule)
        arg = jnp.sum(jnp.where(j == np.arange(b)[:, None], idx[None, :, :, None], 0), axis=2)   # (N, Q, C)
        out = (batch, *size, channels)
        return jnp.max(g, axis=2).reshape(out), (arg.reshape(out).astype(jnp.int32), x.shape)

    def _adaptive_max_pool_bwd(res, dy, *, output_size):
        arg, shape = res
        where = arg * shape[-1] + _flat_positions(np.zeros((1,) * arg.ndim, np.int32), shape, arg.shape)
        dx = jnp.zeros(math.prod(shape), dy.dtype).at[where.reshape(-1)].add(dy.reshape(-1), mode="promise_in_bounds")
        return (dx.reshape(shape),)

    def _adaptive_max_pool_examples(key, dtype):
        return [Example((distinct(rng(jax.random.fold_in(key, j)), shape, dtype),), {"output_size": size},
                        f"{shape[1:-1]} -> {size}") for j, (shape, size) in enumerate(_cases(n))]

    _adaptive_max_pool.__name__ = _adaptive_max_pool.__qualname__ = f"_{name}"
    return primitive(name, _adaptive_max_pool, _adaptive_max_pool_fwd, _adaptive_max_pool_bwd,
                     examples=_adaptive_max_pool_examples, space=_make_space(n, distinct, 9 if n < 3 else 5),
                     check=_make_check(name, n))


adaptive_avg_pool1d = _make_adaptive_avg_pool("adaptive_avg_pool1d", 1)
adaptive_avg_pool2d = _make_adaptive_avg_pool("adaptive_avg_pool2d", 2)
adaptive_avg_pool3d = _make_adaptive_avg_pool("adaptive_avg_pool3d", 3)
adaptive_max_pool1d = _make_adaptive_max_pool("adaptive_max_pool1d", 1)
adaptive_max_pool2d = _make_adaptive_max_pool("adaptive_max_pool2d", 2)
adaptive_max_pool3d = _make_adaptive_max_pool("adaptive_max_pool3d", 3)
