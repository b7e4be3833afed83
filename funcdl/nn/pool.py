"""Pooling: max and average over windows (1-D, 2-D, 3-D), global average and max. The adaptive pools are in
``adaptive_pool``.

Inputs are channels-last ``(N, *spatial, C)``; every channel is pooled on its own. A window of kernel size K,
stride s, dilation d (max pooling only) and padding (lo, hi) reads, for output position o, the padded input at
o*s + k*d for k < K (per spatial axis; the window is the product over axes).

Output size (torch's rule, per axis, span = (K-1) d + 1): O = floor((L + lo + hi - span) / s) + 1, or with
``ceil_mode=True`` O = ceil((L + lo + hi - span) / s) + 1, less one if that last window would start at or past
L + lo (in the right padding). A ceil-mode window may overhang the padded input: the overhang is read as more
right padding (-inf for max pooling) and, for average pooling, never counted by the divisor.

Max pooling
    y[o] = max_k xp[o*s + k*d],  padding holds -inf (as torch, so it never wins).
    The max is piecewise the identity of one input, so dy[o] flows to the element that attained it:
        dx[p] = sum_o dy[o] [p = o*s + k*(o) d - lo],   k*(o) = the winning tap.
    Tie rule: the *first* maximal element of the window in row-major tap order receives the whole gradient
    (torch's CPU kernel does the same: it replaces the running max only on a strictly larger value).
    Residual: the winning tap per output (a small integer array), not x.

Average pooling
    y[o] = (1/c(o)) sum_k xp[o*s + k],   c(o) = the number of window elements inside the padded extent
    [-lo, L + hi) (``count_include_pad=True``, torch's default: K unless a ceil-mode window overhangs) or inside
    the unpadded input [0, L) (``count_include_pad=False``), multiplied over the axes.
    Linear, so dx[p] = sum_{o,k: o*s + k = p + lo} dy[o] / c(o): the scaled output gradient is spread back
    over each window. Both pools put each tap's share back on the strided grid it was read from with one
    ``lax.pad`` (interior padding s-1) per tap, sum, and crop the padding.

Global pooling: y[n, c] = mean (or max) over all spatial positions; dx = dy / M broadcast (or dy at the first
maximal position).
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
from ._windows import as_tuple, conv_output_shape, normalize_padding, pad_spatial, scatter_taps, stack_windows

__all__ = [
    "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d", "global_avg_pool",
    "global_max_pool",
]

_LAYOUTS = {1: "(N, L, C)", 2: "(N, H, W, C)", 3: "(N, D, H, W, C)"}


def _output_sizes(in_spatial, k, s, pads, d, ceil_mode):
    """torch's output length per axis: floor((L + lo + hi - span) / s) + 1, or with ``ceil_mode`` the ceiling,
    less the last window when it would start at or past L + lo."""
    sizes = []
    for length, kk, ss, (lo, hi), dd in zip(in_spatial, k, s, pads, d, strict=True):
        extent = length + lo + hi - (kk - 1) * dd - 1
        out = (extent + (ss - 1 if ceil_mode else 0)) // ss + 1
        if ceil_mode and (out - 1) * ss >= length + lo:
            out -= 1
        sizes.append(out)
    return tuple(sizes)


def _settings(name, n, in_spatial, kernel, stride, padding, dilation, ceil_mode=False):
    """(kernel, stride, reach, dilation, pads) as tuples for an input of spatial shape ``in_spatial``: ``pads``
    the (lo, hi) padding as set, ``reach`` the padding the windows read, hi grown by any ceil-mode overhang
    (so that the floor rule on ``reach`` gives torch's output size)."""
    k = as_tuple(name, kernel, n, "kernel", positive=True)
    s = k if stride is None else as_tuple(name, stride, n, "stride", positive=True)
    d = as_tuple(name, dilation, n, "dilation", positive=True)
    pads = normalize_padding(name, padding, n, in_spatial, k, s, d)
    out = _output_sizes(in_spatial, k, s, pads, d, ceil_mode)
    reach = tuple((lo, max(hi, (max(o, 1) - 1) * ss + (kk - 1) * dd + 1 - length - lo))
                  for length, kk, ss, dd, (lo, hi), o in zip(in_spatial, k, s, d, pads, out, strict=True))
    return k, s, reach, d, pads


def _check_input(name, n, x, kernel, stride, padding, dilation, ceil_mode):
    if x.ndim != n + 2:
        raise ValueError(f"{name}: input must be {n + 2}-D {_LAYOUTS[n]} (channels last), got shape {x.shape}")
    if not isinstance(ceil_mode, bool):
        raise ValueError(f"{name}: ceil_mode must be True or False, got {ceil_mode!r}")
    k, s, reach, d, pads = _settings(name, n, x.shape[1:1 + n], kernel, stride, padding, dilation, ceil_mode)
    sizes = _output_sizes(x.shape[1:1 + n], k, s, pads, d, ceil_mode)
    for kk, dd, (lo, hi), out in zip(k, d, pads, sizes, strict=True):
        span = (kk - 1) * dd + 1
        if out < 1:
            raise ValueError(f"{name}: window {k} (span {span}) is larger than the padded input: input {x.shape} "
                             f"padded by {(lo, hi)}; use a smaller kernel or more padding")
        if lo < 0 or hi < 0 or max(lo, hi) > span // 2:
            raise ValueError(f"{name}: padding {pads} must lie in [0, window/2] (window {k}), as torch; a window "
                             f"made only of padding has no value (input {x.shape})")
    for length, kk, ss, dd, (lo, _), out in zip(x.shape[1:1 + n], k, s, d, reach, sizes, strict=True):
        # with dilation a window can straddle the input and still read only padding (found by fuzzing)
        for o in range(out):
            if not any(0 <= o * ss + j * dd - lo < length for j in range(kk)):
                raise ValueError(f"{name}: output {o} of input {x.shape} reads only padding (window {k}, stride "
                                 f"{s}, dilation {d}, padding {pads}, ceil_mode={ceil_mode}); it would have no "
                                 "value: use less padding or a smaller dilation")


# -- max pooling ----------------------------------------------------------------------------------------------


def _make_max_pool(name, n):
    def _max_pool_check(x, *, kernel, stride=None, padding=0, dilation=1, ceil_mode=False):
        _check_input(name, n, x, kernel, stride, padding, dilation, ceil_mode)

    def _max_pool(x, *, kernel, stride=None, padding=0, dilation=1, ceil_mode=False):
        """Max pooling, x (N, *L, C) channels last, each channel on its own; stride defaults to the kernel.

        y[o] = max_k xp[o*s + k*d], the padding xp holds -inf (as torch, so it never wins), and so does the
        overhang of a ``ceil_mode`` window past the padded input (output sizes: the module docstring).
        The max is piecewise the identity of one input, so dy[o] flows to the element that attained it:
            dx[p] = sum_o dy[o] [p = o*s + k*(o) d - lo],   k*(o) = the winning tap
        Ties: the first maximal tap in row-major order receives the whole gradient (torch's CPU kernel).
        Residual: the winning tap per output (a small integer array), not x.
        """
        k, s, reach, d, _ = _settings(name, n, x.shape[1:1 + n], kernel, stride, padding, dilation, ceil_mode)
        if any(dd > 1 for dd in d):   # JAX has no reverse rule for a dilated reduce_window max: write it out
            return jnp.max(stack_windows(x, k, s, reach, d, -jnp.inf)[0], axis=0)
        return lax.reduce_window(x, np.array(-np.inf, x.dtype), lax.max, (1, *k, 1), (1, *s, 1),
                                 ((0, 0), *reach, (0, 0)))

    def _max_pool_fwd(x, *, kernel, stride=None, padding=0, dilation=1, ceil_mode=False):
        # the primal from the stacked windows, whose argmax (the tie rule) is the residual
        k, s, reach, d, _ = _settings(name, n, x.shape[1:1 + n], kernel, stride, padding, dilation, ceil_mode)
        win, _ = stack_windows(x, k, s, reach, d, -jnp.inf)
        arg = jnp.argmax(win, axis=0).astype(jnp.int32)          # first maximal tap (the tie rule)
        y = jnp.max(win, axis=0)
        return y, (arg, x.shape[1:1 + n])

    def _max_pool_bwd(res, dy, *, kernel, stride=None, padding=0, dilation=1, ceil_mode=False):
        arg, in_spatial = res
        k, s, reach, d, _ = _settings(name, n, in_spatial, kernel, stride, padding, dilation, ceil_mode)
        zero = jnp.zeros((), dy.dtype)
        parts = [jnp.where(arg == j, dy, zero) for j in range(math.prod(k))]
        return (scatter_taps(parts, k, in_spatial, s, reach, d),)

    _max_pool.__name__ = _max_pool.__qualname__ = f"_{name}"
    def _max_pool_space(rng, dtype):
        """Kernel 1-4 (1-3 in 3-D), stride None (= kernel) or 1-3, dilation 1-3 (1-2), every padding form (each
        shared or per axis), ceil_mode either way; values distinct; redrawn until the check accepts the padding
        (<= half the window)."""
        big = 4 if n < 3 else 3
        def draw():
            spatial = tuple(integer(rng, 1, 9 if n < 3 else 5) for _ in range(n))
            settings = {"kernel": per_axis(rng, n, 1, big), "stride": pick(rng, [None, per_axis(rng, n, 1, 3)]),
                        "padding": padding(rng, n), "dilation": per_axis(rng, n, 1, big - 1),
                        "ceil_mode": pick(rng, [False, True])}
            batch = (integer(rng, 1, 3 if n < 3 else 2), *spatial, integer(rng, 1, 3 if n < 3 else 2))
            return Example((distinct(rng, batch, dtype),), settings)
        return valid(draw, _max_pool_check)

    return primitive(name, _max_pool, _max_pool_fwd, _max_pool_bwd, examples=_max_pool_examples(n),
                     space=_max_pool_space, check=_max_pool_check)


def _distinct(key, shape, dtype):
    """Values with no ties and gaps >= 0.05 between any two (finite differences never swap a maximum)."""
    size = math.prod(shape)
    perm = jax.random.permutation(key, size)
    return (perm.astype(jnp.float64) * 0.05 - size * 0.025).reshape(shape).astype(dtype)


def _max_pool_examples(n):
    # (kernel, stride, padding, dilation, ceil_mode); 1-D and 2-D keep ceil_mode off: tests/test_torch_cnn.py
    # compares these examples with torch's floor-mode pooling (tests/test_torch_pool_features.py covers ceil mode)
    if n == 1:
        configs = [(2, None, 0, 1, False), (3, 2, 1, 1, False), (3, 1, "SAME", 1, False), (2, 2, 1, 2, False),
                   (4, 3, ((2, 1),), 1, False)]
        shape = (2, 11, 3)
    elif n == 2:
        configs = [(2, None, 0, 1, False), (3, 2, 1, 1, False), ((3, 2), (1, 2), "SAME", 1, False),
                   (2, 1, 0, 2, False), (3, 3, ((1, 0), (1, 1)), 1, False), ((2, 3), (2, 1), (1, 1), (2, 1), False)]
        shape = (2, 7, 8, 3)
    else:
        configs = [(2, 2, 0, 1, True), ((3, 1, 2), 2, (1, 0, 1), 1, True),
                   ((2, 2, 1), (1, 2, 2), ((1, 0), (0, 1), (0, 0)), (2, 1, 1), False)]
        shape = (1, 4, 5, 5, 2)

    def examples(key, dtype):
        return [Example((_distinct(jax.random.fold_in(key, j), shape, dtype),),
                        {"kernel": k, "stride": s, "padding": p, "dilation": d, "ceil_mode": c},
                        f"k={k} s={s} p={p} d={d}" + (" ceil_mode" if c else ""))
                for j, (k, s, p, d, c) in enumerate(configs)]
    return examples


# -- average pooling -----------------------------------------------------------------------------------------


def _counts(in_spatial, k, s, reach, pads, include_pad, dtype):
    """c(o) per output position (broadcastable to (N, *O, C)): per axis the window's elements inside
    [-lo, L + hi) (``include_pad``) or inside [0, L), multiplied over the axes."""
    n = len(in_spatial)
    out = conv_output_shape(in_spatial, k, s, reach, (1,) * n)
    per_axis = []
    for length, kk, ss, (lo, _), (_, hi), o in zip(in_spatial, k, s, reach, pads, out, strict=True):
        starts = np.arange(o) * ss - lo
        if include_pad:
            per_axis.append(np.minimum(starts + kk, length + hi) - starts)
        else:
            per_axis.append(np.clip(starts + kk, 0, length) - np.clip(starts, 0, length))
    c = per_axis[0]
    for a in per_axis[1:]:
        c = np.multiply.outer(c, a)
    return jnp.asarray(c.reshape(1, *out, 1), dtype)


def _make_avg_pool(name, n):
    def _avg_pool_check(x, *, kernel, stride=None, padding=0, count_include_pad=True, ceil_mode=False):
        _check_input(name, n, x, kernel, stride, padding, 1, ceil_mode)

    def _avg_pool(x, *, kernel, stride=None, padding=0, count_include_pad=True, ceil_mode=False):
        """Average pooling, x (N, *L, C) channels last, each channel on its own; stride defaults to the kernel.

        y[o] = (1/c(o)) sum_k xp[o*s + k],   c(o) = the window's elements inside the padded extent [-lo, L + hi)
        (``count_include_pad=True``, torch's default; K unless a ``ceil_mode`` window overhangs it) or inside the
        unpadded input [0, L) (``count_include_pad=False``), multiplied over the axes; the overhang reads zeros.
        Linear, so dx[p] = sum_{o,k: o*s + k = p + lo} dy[o] / c(o): the scaled output gradient is spread back
        over each window (one strided ``lax.pad`` per tap, summed, the padding cropped). Residual: x's shape.
        """
        k, s, reach, _, pads = _settings(name, n, x.shape[1:1 + n], kernel, stride, padding, 1, ceil_mode)
        window, strides = (1, *k, 1), (1, *s, 1)
        total = lax.reduce_window(x, np.array(0, x.dtype), lax.add, window, strides, ((0, 0), *reach, (0, 0)))
        ones = jnp.ones((1, *x.shape[1:1 + n], 1), x.dtype)
        if count_include_pad:     # the padding counts, a ceil-mode overhang past it does not
            ones = pad_spatial(ones, pads, 1.0)
            reach = tuple((0, hi - h) for (_, hi), (_, h) in zip(reach, pads, strict=True))
        count = lax.reduce_window(ones, np.array(0, x.dtype), lax.add, window, strides, ((0, 0), *reach, (0, 0)))
        return total / count

    def _avg_pool_fwd(x, *, kernel, stride=None, padding=0, count_include_pad=True, ceil_mode=False):
        # the primal from the stacked windows and the counts the backward divides by again
        k, s, reach, d, pads = _settings(name, n, x.shape[1:1 + n], kernel, stride, padding, 1, ceil_mode)
        win, _ = stack_windows(x, k, s, reach, d, 0.0)
        y = jnp.sum(win, axis=0) / _counts(x.shape[1:1 + n], k, s, reach, pads, count_include_pad, x.dtype)
        return y, (x.shape[1:1 + n],)

    def _avg_pool_bwd(res, dy, *, kernel, stride=None, padding=0, count_include_pad=True, ceil_mode=False):
        (in_spatial,) = res
        k, s, reach, _, pads = _settings(name, n, in_spatial, kernel, stride, padding, 1, ceil_mode)
        g = dy / _counts(in_spatial, k, s, reach, pads, count_include_pad, dy.dtype)
        return (scatter_taps([g] * math.prod(k), k, in_spatial, s, reach, (1,) * n),)

    _avg_pool.__name__ = _avg_pool.__qualname__ = f"_{name}"
    def _avg_pool_space(rng, dtype):
        """Kernel 1-4 (1-3 in 3-D), stride None or 1-3, every padding form, count_include_pad and ceil_mode either
        way; redrawn until the check accepts the padding (<= half the window)."""
        def draw():
            spatial = tuple(integer(rng, 1, 9 if n < 3 else 5) for _ in range(n))
            settings = {"kernel": per_axis(rng, n, 1, 4 if n < 3 else 3),
                        "stride": pick(rng, [None, per_axis(rng, n, 1, 3)]), "padding": padding(rng, n),
                        "count_include_pad": pick(rng, [True, False]), "ceil_mode": pick(rng, [False, True])}
            batch = (integer(rng, 1, 3 if n < 3 else 2), *spatial, integer(rng, 1, 3 if n < 3 else 2))
            return Example((arr(rng, batch, dtype),), settings)
        return valid(draw, _avg_pool_check)

    return primitive(name, _avg_pool, _avg_pool_fwd, _avg_pool_bwd, examples=_avg_pool_examples(n),
                     space=_avg_pool_space, check=_avg_pool_check)


def _avg_pool_examples(n):
    # (kernel, stride, padding, count_include_pad, ceil_mode); ceil_mode off in 1-D and 2-D as for max pooling
    if n == 1:
        configs = [(2, None, 0, True, False), (3, 2, 1, True, False), (3, 2, 1, False, False),
                   (4, 3, ((2, 1),), False, False), (3, 1, "SAME", False, False)]
        shape = (2, 11, 3)
    elif n == 2:
        configs = [(2, None, 0, True, False), (3, 2, 1, True, False), (3, 2, 1, False, False),
                   ((3, 2), (1, 2), "SAME", False, False), (3, 3, ((1, 0), (1, 1)), False, False),
                   ((2, 3), (2, 1), (1, 1), True, False)]
        shape = (2, 7, 8, 3)
    else:
        configs = [(2, 2, 0, True, True), ((3, 1, 2), 2, (1, 0, 1), True, True), ((3, 2, 2), 2, 1, False, True),
                   ((2, 3, 2), (2, 2, 1), ((1, 0), (1, 1), (0, 1)), False, True)]
        shape = (1, 4, 5, 5, 2)

    def examples(key, dtype):
        return [Example((normal(jax.random.fold_in(key, j), shape, dtype),),
                        {"kernel": k, "stride": s, "padding": p, "count_include_pad": c, "ceil_mode": m},
                        f"k={k} s={s} p={p} count_include_pad={c}" + (" ceil_mode" if m else ""))
                for j, (k, s, p, c, m) in enumerate(configs)]
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


max_pool1d = _make_max_pool("max_pool1d", 1)
max_pool2d = _make_max_pool("max_pool2d", 2)
avg_pool1d = _make_avg_pool("avg_pool1d", 1)
avg_pool2d = _make_avg_pool("avg_pool2d", 2)
max_pool3d = _make_max_pool("max_pool3d", 3)
avg_pool3d = _make_avg_pool("avg_pool3d", 3)
