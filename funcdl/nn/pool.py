"""Pooling: max and average over windows (1-D, 2-D), global average and max, adaptive average.

Inputs are channels-last ``(N, *spatial, C)``; every channel is pooled on its own. A window of kernel size K,
stride s, dilation d (max pooling only) and padding (lo, hi) reads, for output position o, the padded input at
o*s + k*d for k < K (per spatial axis; the window is the product over axes).

Max pooling
    y[o] = max_k xp[o*s + k*d],  padding holds -inf (as torch, so it never wins).
    The max is piecewise the identity of one input, so dy[o] flows to the element that attained it:
        dx[p] = sum_o dy[o] [p = o*s + k*(o) d - lo],   k*(o) = the winning tap.
    Tie rule: the *first* maximal element of the window in row-major tap order receives the whole gradient
    (torch's CPU kernel does the same: it replaces the running max only on a strictly larger value).
    Residual: the winning tap per output (a small integer array), not x.

Average pooling
    y[o] = (1/c(o)) sum_k xp[o*s + k],   c(o) = K (``count_include_pad=True``, torch's default) or the number
    of window elements that lie inside the unpadded input (``count_include_pad=False``).
    Linear, so dx[p] = sum_{o,k: o*s + k = p + lo} dy[o] / c(o): the scaled output gradient is spread back
    over each window. Both pools put each tap's share back on the strided grid it was read from with one
    ``lax.pad`` (interior padding s-1) per tap, sum, and crop the padding.

Global pooling: y[n, c] = mean (or max) over all spatial positions; dx = dy / M broadcast (or dy at the first
maximal position).

Adaptive average pooling (torch's windows): output i of an axis of length L pooled to P averages
x[floor(i L / P) : ceil((i+1) L / P)]. Per axis this is a fixed P x L averaging matrix A, so
y = A_1 x A_2^T (per example and channel) and dx = A_1^T dy A_2 -- the transposes of the same matrices.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..core.examples import Example, keys, normal
from ..core.primitive import primitive
from ._space import arr, distinct, integer, padding, per_axis, pick, valid
from ._windows import as_tuple, conv_output_shape, normalize_padding, scatter_taps, stack_windows

__all__ = [
    "max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d", "global_avg_pool", "global_max_pool",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d",
]


def _settings(name, n, in_spatial, kernel, stride, padding, dilation):
    """(kernel, stride, pads, dilation) as tuples for an input of spatial shape ``in_spatial``."""
    k = as_tuple(name, kernel, n, "kernel", positive=True)
    s = k if stride is None else as_tuple(name, stride, n, "stride", positive=True)
    d = as_tuple(name, dilation, n, "dilation", positive=True)
    pads = normalize_padding(name, padding, n, in_spatial, k, s, d)
    return k, s, pads, d


def _check_input(name, n, x, kernel, stride, padding, dilation):
    layout = "(N, L, C)" if n == 1 else "(N, H, W, C)"
    if x.ndim != n + 2:
        raise ValueError(f"{name}: input must be {n + 2}-D {layout} (channels last), got shape {x.shape}")
    k, s, pads, d = _settings(name, n, x.shape[1:1 + n], kernel, stride, padding, dilation)
    for length, kk, dd, (lo, hi) in zip(x.shape[1:1 + n], k, d, pads, strict=True):
        span = (kk - 1) * dd + 1
        if span > length + lo + hi:
            raise ValueError(f"{name}: window {k} (span {span}) is larger than the padded input: input {x.shape} "
                             f"padded by {(lo, hi)}; use a smaller kernel or more padding")
        if lo < 0 or hi < 0 or max(lo, hi) > span // 2:
            raise ValueError(f"{name}: padding {pads} must lie in [0, window/2] (window {k}), as torch; a window "
                             f"made only of padding has no value (input {x.shape})")
    for length, kk, ss, dd, (lo, hi) in zip(x.shape[1:1 + n], k, s, d, pads, strict=True):
        # with dilation a window can straddle the input and still read only padding (found by fuzzing)
        for o in range((length + lo + hi - (kk - 1) * dd - 1) // ss + 1):
            if not any(0 <= o * ss + j * dd - lo < length for j in range(kk)):
                raise ValueError(f"{name}: output {o} of input {x.shape} reads only padding (window {k}, stride "
                                 f"{s}, dilation {d}, padding {pads}); it would have no value: use less padding "
                                 "or a smaller dilation")
    return k, s, pads, d


# -- max pooling ----------------------------------------------------------------------------------------------


def _make_max_pool(name, n):
    def _max_pool_check(x, *, kernel, stride=None, padding=0, dilation=1):
        _check_input(name, n, x, kernel, stride, padding, dilation)

    def _max_pool(x, *, kernel, stride=None, padding=0, dilation=1):
        """Max pooling, x (N, *L, C) channels last, each channel on its own; stride defaults to the kernel.

        y[o] = max_k xp[o*s + k*d], the padding xp holds -inf (as torch, so it never wins).
        The max is piecewise the identity of one input, so dy[o] flows to the element that attained it:
            dx[p] = sum_o dy[o] [p = o*s + k*(o) d - lo],   k*(o) = the winning tap
        Ties: the first maximal tap in row-major order receives the whole gradient (torch's CPU kernel).
        Residual: the winning tap per output (a small integer array), not x.
        """
        k, s, pads, d = _settings(name, n, x.shape[1:1 + n], kernel, stride, padding, dilation)
        if any(dd > 1 for dd in d):   # JAX has no reverse rule for a dilated reduce_window max: write it out
            return jnp.max(stack_windows(x, k, s, pads, d, -jnp.inf)[0], axis=0)
        return lax.reduce_window(x, np.array(-np.inf, x.dtype), lax.max, (1, *k, 1), (1, *s, 1),
                                 ((0, 0), *pads, (0, 0)))

    def _max_pool_fwd(x, *, kernel, stride=None, padding=0, dilation=1):
        # the primal from the stacked windows, whose argmax (the tie rule) is the residual
        k, s, pads, d = _settings(name, n, x.shape[1:1 + n], kernel, stride, padding, dilation)
        win, _ = stack_windows(x, k, s, pads, d, -jnp.inf)
        arg = jnp.argmax(win, axis=0).astype(jnp.int32)          # first maximal tap (the tie rule)
        y = jnp.max(win, axis=0)
        return y, (arg, x.shape[1:1 + n])

    def _max_pool_bwd(res, dy, *, kernel, stride=None, padding=0, dilation=1):
        arg, in_spatial = res
        k, s, pads, d = _settings(name, n, in_spatial, kernel, stride, padding, dilation)
        zero = jnp.zeros((), dy.dtype)
        parts = [jnp.where(arg == j, dy, zero) for j in range(math.prod(k))]
        return (scatter_taps(parts, k, in_spatial, s, pads, d),)

    _max_pool.__name__ = _max_pool.__qualname__ = f"_{name}"
    def _max_pool_space(rng, dtype):
        """Kernel 1-4, stride None (= kernel) or 1-3, dilation 1-3, every padding form (each shared or per
        axis); values distinct; redrawn until the check accepts the padding (<= half the window)."""
        def draw():
            spatial = tuple(integer(rng, 1, 9) for _ in range(n))
            settings = {"kernel": per_axis(rng, n, 1, 4), "stride": pick(rng, [None, per_axis(rng, n, 1, 3)]),
                        "padding": padding(rng, n), "dilation": per_axis(rng, n, 1, 3)}
            return Example((distinct(rng, (integer(rng, 1, 3), *spatial, integer(rng, 1, 3)), dtype),), settings)
        return valid(draw, _max_pool_check)

    return primitive(name, _max_pool, _max_pool_fwd, _max_pool_bwd, examples=_max_pool_examples(n),
                     space=_max_pool_space, check=_max_pool_check)


def _distinct(key, shape, dtype):
    """Values with no ties and gaps >= 0.05 between any two (finite differences never swap a maximum)."""
    size = math.prod(shape)
    perm = jax.random.permutation(key, size)
    return (perm.astype(jnp.float64) * 0.05 - size * 0.025).reshape(shape).astype(dtype)


def _max_pool_examples(n):
    if n == 1:
        configs = [(2, None, 0, 1), (3, 2, 1, 1), (3, 1, "SAME", 1), (2, 2, 1, 2), (4, 3, ((2, 1),), 1)]
        shape = (2, 11, 3)
    else:
        configs = [(2, None, 0, 1), (3, 2, 1, 1), ((3, 2), (1, 2), "SAME", 1), (2, 1, 0, 2),
                   (3, 3, ((1, 0), (1, 1)), 1), ((2, 3), (2, 1), (1, 1), (2, 1))]
        shape = (2, 7, 8, 3)

    def examples(key, dtype):
        return [Example((_distinct(jax.random.fold_in(key, j), shape, dtype),),
                        {"kernel": k, "stride": s, "padding": p, "dilation": d}, f"k={k} s={s} p={p} d={d}")
                for j, (k, s, p, d) in enumerate(configs)]
    return examples


# -- average pooling -----------------------------------------------------------------------------------------


def _counts(in_spatial, k, s, pads, include_pad, dtype):
    """c(o) per output position (broadcastable to (N, *O, C))."""
    n = len(in_spatial)
    out = conv_output_shape(in_spatial, k, s, pads, (1,) * n)
    if include_pad:
        return jnp.full((1, *out, 1), math.prod(k), dtype)
    per_axis = []
    for length, kk, ss, (lo, _), o in zip(in_spatial, k, s, pads, out, strict=True):
        starts = np.arange(o) * ss - lo
        per_axis.append(np.clip(starts + kk, 0, length) - np.clip(starts, 0, length))
    c = per_axis[0]
    for a in per_axis[1:]:
        c = np.multiply.outer(c, a)
    return jnp.asarray(c.reshape(1, *out, 1), dtype)


def _make_avg_pool(name, n):
    def _avg_pool_check(x, *, kernel, stride=None, padding=0, count_include_pad=True):
        _check_input(name, n, x, kernel, stride, padding, 1)

    def _avg_pool(x, *, kernel, stride=None, padding=0, count_include_pad=True):
        """Average pooling, x (N, *L, C) channels last, each channel on its own; stride defaults to the kernel.

        y[o] = (1/c(o)) sum_k xp[o*s + k],   c(o) = K (``count_include_pad=True``, torch's default) or the
        number of window elements inside the unpadded input (``count_include_pad=False``).
        Linear, so dx[p] = sum_{o,k: o*s + k = p + lo} dy[o] / c(o): the scaled output gradient is spread back
        over each window (one strided ``lax.pad`` per tap, summed, the padding cropped). Residual: x's shape.
        """
        k, s, pads, _ = _settings(name, n, x.shape[1:1 + n], kernel, stride, padding, 1)
        total = lax.reduce_window(x, np.array(0, x.dtype), lax.add, (1, *k, 1), (1, *s, 1), ((0, 0), *pads, (0, 0)))
        if count_include_pad:
            return total / math.prod(k)
        ones = jnp.ones((1, *x.shape[1:1 + n], 1), x.dtype)
        count = lax.reduce_window(ones, np.array(0, x.dtype), lax.add, (1, *k, 1), (1, *s, 1),
                                  ((0, 0), *pads, (0, 0)))
        return total / count

    def _avg_pool_fwd(x, *, kernel, stride=None, padding=0, count_include_pad=True):
        # the primal from the stacked windows and the counts the backward divides by again
        k, s, pads, d = _settings(name, n, x.shape[1:1 + n], kernel, stride, padding, 1)
        win, _ = stack_windows(x, k, s, pads, d, 0.0)
        y = jnp.sum(win, axis=0) / _counts(x.shape[1:1 + n], k, s, pads, count_include_pad, x.dtype)
        return y, (x.shape[1:1 + n],)

    def _avg_pool_bwd(res, dy, *, kernel, stride=None, padding=0, count_include_pad=True):
        (in_spatial,) = res
        k, s, pads, _ = _settings(name, n, in_spatial, kernel, stride, padding, 1)
        g = dy / _counts(in_spatial, k, s, pads, count_include_pad, dy.dtype)
        return (scatter_taps([g] * math.prod(k), k, in_spatial, s, pads, (1,) * n),)

    _avg_pool.__name__ = _avg_pool.__qualname__ = f"_{name}"
    def _avg_pool_space(rng, dtype):
        """Kernel 1-4, stride None or 1-3, every padding form, count_include_pad either way; redrawn until the
        check accepts the padding (<= half the window)."""
        def draw():
            spatial = tuple(integer(rng, 1, 9) for _ in range(n))
            settings = {"kernel": per_axis(rng, n, 1, 4), "stride": pick(rng, [None, per_axis(rng, n, 1, 3)]),
                        "padding": padding(rng, n), "count_include_pad": pick(rng, [True, False])}
            return Example((arr(rng, (integer(rng, 1, 3), *spatial, integer(rng, 1, 3)), dtype),), settings)
        return valid(draw, _avg_pool_check)

    return primitive(name, _avg_pool, _avg_pool_fwd, _avg_pool_bwd, examples=_avg_pool_examples(n),
                     space=_avg_pool_space, check=_avg_pool_check)


def _avg_pool_examples(n):
    if n == 1:
        configs = [(2, None, 0, True), (3, 2, 1, True), (3, 2, 1, False), (4, 3, ((2, 1),), False),
                   (3, 1, "SAME", False)]
        shape = (2, 11, 3)
    else:
        configs = [(2, None, 0, True), (3, 2, 1, True), (3, 2, 1, False), ((3, 2), (1, 2), "SAME", False),
                   (3, 3, ((1, 0), (1, 1)), False), ((2, 3), (2, 1), (1, 1), True)]
        shape = (2, 7, 8, 3)

    def examples(key, dtype):
        return [Example((normal(jax.random.fold_in(key, j), shape, dtype),),
                        {"kernel": k, "stride": s, "padding": p, "count_include_pad": c},
                        f"k={k} s={s} p={p} count_include_pad={c}")
                for j, (k, s, p, c) in enumerate(configs)]
    return examples


# -- global pooling --------------------------------------------------------------------------------------------


def _global_pool_check(name):
    def check(x):
        if x.ndim < 3:
            raise ValueError(f"{name}: input must be (N, *spatial, C) with at least one spatial axis, got shape "
                             f"{x.shape}")
    return check


def _global_avg_pool(x):
    """y[n, c] = mean over all M spatial positions of x[n, ..., c], x (N, *spatial, C) -> (N, C).

    Every position has the same weight 1/M, so dx[n, p, c] = dy[n, c] / M (broadcast). Residual: x's shape.
    """
    return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))


def _global_avg_pool_fwd(x):
    return _global_avg_pool(x), (x.shape,)


def _global_avg_pool_bwd(res, dy):
    (shape,) = res
    m = math.prod(shape[1:-1])
    return (jnp.broadcast_to((dy / m).reshape(shape[0], *([1] * (len(shape) - 2)), shape[-1]), shape),)


def _global_max_pool(x):
    """y[n, c] = max over all spatial positions of x[n, ..., c], x (N, *spatial, C) -> (N, C).

    The max is the identity of its argmax, so dx[n, p, c] = dy[n, c] at the first maximal position p (the tie
    rule of ``max_pool``) and 0 elsewhere. Residual: the argmax per (n, c).
    """
    return jnp.max(x, axis=tuple(range(1, x.ndim - 1)))


def _global_max_pool_fwd(x):
    # the primal from the flattened positions, whose argmax (the tie rule) is the residual
    flat = x.reshape(x.shape[0], -1, x.shape[-1])
    arg = jnp.argmax(flat, axis=1)
    return jnp.max(flat, axis=1), (arg, x.shape)


def _global_max_pool_bwd(res, dy):
    arg, shape = res
    m = math.prod(shape[1:-1])
    onehot = jnp.arange(m)[None, :, None] == arg[:, None, :]       # (N, M, C)
    return (jnp.where(onehot, dy[:, None, :], jnp.zeros((), dy.dtype)).reshape(shape),)


def _global_pool_examples(distinct):
    def examples(key, dtype):
        k = keys(key, 2)
        make = _distinct if distinct else normal
        return [Example((make(k[0], (2, 4, 5, 3), dtype),), {}, "2-D"),
                Example((make(k[1], (3, 6, 2), dtype),), {}, "1-D")]
    return examples


def _global_pool_space(is_max):
    def space(rng, dtype):
        """(N, *spatial, C) with 1-3 spatial axes of 1-6."""
        shape = (integer(rng, 1, 3), *(integer(rng, 1, 6) for _ in range(integer(rng, 1, 3))), integer(rng, 1, 3))
        return Example(((distinct if is_max else arr)(rng, shape, dtype),), {})
    return space


global_avg_pool = primitive("global_avg_pool", _global_avg_pool, _global_avg_pool_fwd, _global_avg_pool_bwd,
                            examples=_global_pool_examples(False), space=_global_pool_space(False),
                            check=_global_pool_check("global_avg_pool"))
global_max_pool = primitive("global_max_pool", _global_max_pool, _global_max_pool_fwd, _global_max_pool_bwd,
                            examples=_global_pool_examples(True), space=_global_pool_space(True),
                            check=_global_pool_check("global_max_pool"))


# -- adaptive average pooling ------------------------------------------------------------------------------------


def _bounds(length, out):
    return [((i * length) // out, -(-((i + 1) * length) // out)) for i in range(out)]


def adaptive_matrix(length, out, dtype=jnp.float32):
    """The P x L averaging matrix of one axis (torch's window bounds)."""
    a = np.zeros((out, length))
    for i, (lo, hi) in enumerate(_bounds(length, out)):
        a[i, lo:hi] = 1.0 / (hi - lo)
    return jnp.asarray(a, dtype)


def _make_adaptive_avg_pool(name, n):
    letters = "hwd"[:n]
    outs = "abc"[:n]

    def _adaptive_avg_pool_check(x, *, output_size):
        if x.ndim != n + 2:
            raise ValueError(f"{name}: input must be {n + 2}-D (N, *spatial, C) channels last, got shape {x.shape}")
        size = as_tuple(name, output_size, n, "output_size", positive=True)
        if any(p > length for p, length in zip(size, x.shape[1:1 + n], strict=True)):
            raise ValueError(f"{name}: output_size {size} is larger than the input's spatial size "
                             f"{x.shape[1:1 + n]} (input {x.shape})")

    def _adaptive_avg_pool(x, *, output_size):
        """Adaptive average pooling (torch's windows), x (N, *L, C) -> (N, *P, C).

        Output i of an axis of length L pooled to P averages x[floor(i L / P) : ceil((i+1) L / P)]. Per axis
        that is a fixed P x L averaging matrix A, so y = A_1 x A_2^T (per example and channel) and, the map being
        linear, dx = A_1^T dy A_2: the transposes of the same matrices. Residual: x's shape.
        """
        size = as_tuple(name, output_size, n, "output_size", positive=True)
        bounds = [_bounds(length, p) for length, p in zip(x.shape[1:1 + n], size, strict=True)]
        out = jnp.zeros((x.shape[0], *size, x.shape[-1]), x.dtype)
        for idx in np.ndindex(*size):
            sl = tuple(slice(*bounds[a][i]) for a, i in enumerate(idx))
            out = out.at[(slice(None), *idx)].set(jnp.mean(x[(slice(None), *sl)], axis=tuple(range(1, n + 1))))
        return out

    def matrices(spatial, size, dtype):
        return [adaptive_matrix(length, p, dtype) for length, p in zip(spatial, size, strict=True)]

    def _adaptive_avg_pool_fwd(x, *, output_size):
        # the primal as the product with the averaging matrices the backward transposes
        size = as_tuple(name, output_size, n, "output_size", positive=True)
        mats = matrices(x.shape[1:1 + n], size, x.dtype)
        spec = ",".join(f"{o}{i}" for o, i in zip(outs, letters, strict=True))
        y = jnp.einsum(f"{spec},n{letters}c->n{outs}c", *mats, x)
        return y, (x.shape,)

    def _adaptive_avg_pool_bwd(res, dy, *, output_size):
        (shape,) = res
        size = as_tuple(name, output_size, n, "output_size", positive=True)
        mats = matrices(shape[1:1 + n], size, dy.dtype)
        spec = ",".join(f"{o}{i}" for o, i in zip(outs, letters, strict=True))
        return (jnp.einsum(f"{spec},n{outs}c->n{letters}c", *mats, dy),)

    def _adaptive_avg_pool_examples(key, dtype):
        cases = [((2, 7, 3), 3), ((2, 8, 3), 4), ((2, 5, 3), 1)] if n == 1 else \
            [((2, 7, 6, 3), (3, 4)), ((2, 8, 8, 3), 4), ((2, 5, 7, 3), (1, 1)), ((2, 6, 5, 3), (5, 2))]
        return [Example((normal(jax.random.fold_in(key, j), shape, dtype),), {"output_size": size},
                        f"{shape[1:-1]} -> {size}") for j, (shape, size) in enumerate(cases)]

    _adaptive_avg_pool.__name__ = _adaptive_avg_pool.__qualname__ = f"_{name}"
    def _adaptive_avg_pool_space(rng, dtype):
        """Input sides 1-9, output_size between 1 and the input's (one int or one per axis)."""
        spatial = tuple(integer(rng, 1, 9) for _ in range(n))
        size = tuple(integer(rng, 1, length) for length in spatial)
        size = size[0] if n == 1 or (len(set(size)) == 1 and rng.random() < 0.5) else size
        return Example((arr(rng, (integer(rng, 1, 3), *spatial, integer(rng, 1, 3)), dtype),), {"output_size": size})

    return primitive(name, _adaptive_avg_pool, _adaptive_avg_pool_fwd, _adaptive_avg_pool_bwd,
                     examples=_adaptive_avg_pool_examples, space=_adaptive_avg_pool_space,
                     check=_adaptive_avg_pool_check)


max_pool1d = _make_max_pool("max_pool1d", 1)
max_pool2d = _make_max_pool("max_pool2d", 2)
avg_pool1d = _make_avg_pool("avg_pool1d", 1)
avg_pool2d = _make_avg_pool("avg_pool2d", 2)
adaptive_avg_pool1d = _make_adaptive_avg_pool("adaptive_avg_pool1d", 1)
adaptive_avg_pool2d = _make_adaptive_avg_pool("adaptive_avg_pool2d", 2)
