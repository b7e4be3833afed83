"""Nearest and bilinear resizing of channels-last images (N, *spatial, C), torch's ``F.interpolate`` index rules.

The output size of each spatial axis is either given (``size=P``) or follows from a scale factor
(``scale=s``: P = floor(L s), as torch). Every output position o of an axis reads a source coordinate:

* nearest (torch's ``mode="nearest"``, the legacy rule, not ``"nearest-exact"``): src = min(floor(o r), L - 1),
  computed in float32 as torch's CPU kernel does, with r = 1/s when a scale factor is given and r = L/P when a
  size is given -- torch's default ``recompute_scale_factor=None`` (``recompute_scale_factor=True`` in torch is
  ``size=floor(L s)`` here). Torch's 2-D CPU kernel (not its 1-D and 3-D ones, checked on torch 2.13)
  special-cases P = L (src = o) and P = 2L (src = o // 2), which differs from the formula only for a scale
  just above 1 or 2 (floor(1.3 * 2) = 2 = L: the formula reads rows 0, 0, the 2-D kernel rows 0, 1); this
  follows torch: the special cases for two spatial axes only.
* bilinear (``mode="bilinear"``): u = (o + 1/2) r - 1/2 clamped at 0 with the same r (so a scale factor of
  1.5 on L = 5 uses r = 1/1.5, not 5/7); with ``align_corners=True``, u = o (L-1)/(P-1) whatever was given.
  Output o mixes x[floor u] and x[floor u + 1] (the last row repeated at the edge) with weights 1 - frac, frac.

Both are linear in x with a fixed matrix per axis (a 0/1 selection for nearest, two weights per row for
bilinear): y = A x along each axis, so dx = A^T dy along each axis -- a scatter-add (segment sum) of dy onto the
source rows for nearest, the transposed interpolation matrices for bilinear.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ..core.examples import Example, normal
from ..core.primitive import primitive
from ._space import arr, integer, num, per_axis, pick

__all__ = ["upsample_nearest", "upsample_bilinear", "bilinear_matrix"]


# -- settings: output sizes and the index ratio of each axis ------------------------------------------------------


def _per_axis_numbers(name, value, n, what, kind):
    """An int/float or n of them as a tuple; ``kind`` "size" wants positive ints, "scale" positive finite numbers."""
    vals = tuple(value) if isinstance(value, (tuple, list)) else (value,) * n

    def ok(v):
        if isinstance(v, bool):
            return False
        if kind == "size":
            return isinstance(v, (int, np.integer)) and v >= 1
        return isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(v) and v > 0

    if len(vals) != n or not all(ok(v) for v in vals):
        thing = "positive int" if kind == "size" else "positive number"
        raise ValueError(f"{name}: {what} must be a {thing} or a tuple of {n} {thing}s, got {value!r}")
    return vals


def _plan(name, shape, size, scale, default_scale=None):
    """Per spatial axis: (L, P, r, from_scale) with P the output length and r the index ratio (1/s or L/P)."""
    n = len(shape) - 2
    if size is not None and scale is not None:
        raise ValueError(f"{name}: give exactly one of size= and scale=, got size={size!r} and scale={scale!r}")
    if size is None and scale is None:
        if default_scale is None:
            raise ValueError(f"{name}: give exactly one of size= (output spatial size) and scale= (scale factor)")
        scale = default_scale
    out = []
    if size is not None:
        for length, p in zip(shape[1:-1], _per_axis_numbers(name, size, n, "size", "size"), strict=True):
            out.append((length, int(p), None, False))
    else:
        for axis, (length, s) in enumerate(zip(shape[1:-1], _per_axis_numbers(name, scale, n, "scale", "scale"),
                                              strict=True), start=1):
            p = math.floor(length * float(s))
            if p < 1:
                raise ValueError(f"{name}: scale {s!r} makes spatial axis {axis} (length {length}, input {shape}) "
                                 f"empty: floor({length} * {s}) = {p}")
            out.append((length, p, float(s), True))
    return out


# -- nearest ------------------------------------------------------------------------------------------------------


def _nearest_index(length, p, s, special):
    """Torch's legacy nearest source index of each output o (float32 arithmetic as its CPU kernel; ``special``:
    the 2-D kernel's P = L and P = 2L cases), and the integer block factor k when that index is o // k (the
    repeat fast path), else None."""
    o = np.arange(p)
    if special and p == length:
        idx = o
    elif special and p == 2 * length:
        idx = o >> 1
    else:
        r = np.float32(1.0 / s) if s is not None else np.float32(length) / np.float32(p)
        idx = np.minimum(np.floor(o.astype(np.float32) * r).astype(np.int64), length - 1)
    k = p // length
    block = k if p == k * length and np.array_equal(idx, o // k) else None
    return idx, block


def _nearest_axes(shape, size, scale):
    special = len(shape) == 4
    return [_nearest_index(length, p, s, special) for length, p, s, _ in _plan("upsample_nearest", shape, size,
                                                                                scale, 2)]


def _upsample_nearest_check(x, *, scale=None, size=None):
    if x.ndim < 3:
        raise ValueError(f"upsample_nearest: input must be (N, *spatial, C), got shape {x.shape}")
    _plan("upsample_nearest", x.shape, size, scale, 2)


def _upsample_nearest(x, *, scale=None, size=None):
    """Nearest resizing, x (N, *spatial, C) -> (N, *P, C), torch's ``F.interpolate(mode="nearest")``:
    y[n, o_1, ..., c] = x[n, src_1(o_1), ..., c], src(o) = min(floor(o r), L - 1) per axis (the module docstring:
    r = 1/scale or L/P). ``scale`` (an int, a float or one per axis; 2 when neither is given) or ``size`` (the
    output spatial size), exactly one. An integer scale k is the block copy src(o) = o // k.

    Each output is a copy of one input, so dx[n, p, ..., c] = the sum of dy over the outputs that read p: a
    scatter-add (segment sum) per axis, for an integer scale the sum over each k-block. Residual: x's shape.
    """
    for axis, (idx, block) in enumerate(_nearest_axes(x.shape, size, scale), start=1):
        x = jnp.repeat(x, block, axis=axis) if block is not None else jnp.take(x, jnp.asarray(idx), axis=axis)
    return x


def _upsample_nearest_fwd(x, *, scale=None, size=None):
    return _upsample_nearest(x, scale=scale, size=size), (x.shape,)


def _upsample_nearest_bwd(res, dy, *, scale=None, size=None):
    (shape,) = res
    plan = _nearest_axes(shape, size, scale)
    for axis in reversed(range(1, len(shape) - 1)):          # undo the axes in the reverse order
        idx, block = plan[axis - 1]
        length = shape[axis]
        if block is not None:                               # the k-block sum: a reshape and a sum
            dy = jnp.sum(dy.reshape(*dy.shape[:axis], length, block, *dy.shape[axis + 1:]), axis=axis + 1)
        else:                                               # scatter-add onto the source rows (sorted indices)
            g = jax.ops.segment_sum(jnp.moveaxis(dy, axis, 0), jnp.asarray(idx), num_segments=length,
                                    indices_are_sorted=True)
            dy = jnp.moveaxis(g, 0, axis)
    return (dy,)


def _upsample_nearest_examples(key, dtype):
    k = [jax.random.fold_in(key, j) for j in range(3)]
    return [Example((normal(k[0], (2, 3, 4, 2), dtype),), {"scale": (3, 2)}, "(3, 2)"),
            Example((normal(k[1], (1, 3, 4, 2), dtype),), {"scale": (1.5, 0.75)}, "scale (1.5, 0.75)"),
            Example((normal(k[2], (1, 3, 5, 2), dtype),), {"size": (7, 3)}, "size (7, 3)")]


def _upsample_nearest_space(rng, dtype):
    """1-3 spatial axes of 1-5; an integer scale 1-3, a float scale 0.3-3 or an output size 1-7 (each shared or
    per axis), float scales raised until no axis is empty."""
    x = _channels_last(rng, dtype)
    n = x.ndim - 2
    form = pick(rng, ["int", "float", "size"])
    if form == "int":
        return Example((x,), {"scale": per_axis(rng, n, 1, 3)})
    if form == "size":
        return Example((x,), {"size": per_axis(rng, n, 1, 7)})
    low = [max(0.3, 1.0 / length) for length in x.shape[1:-1]]     # floor(L s) >= 1 on every axis
    scale = _scale_draw(rng, max(low)) if rng.random() < 0.5 else tuple(_scale_draw(rng, lo) for lo in low)
    return Example((x,), {"scale": scale})


def _scale_draw(rng, low, high=3.0):
    """A 3-digit scale factor in [low, high], rounded up rather than below ``low``."""
    return max(num(rng, low, high), math.ceil(low * 1000) / 1000)


def _channels_last(rng, dtype, n_spatial=None):
    n = integer(rng, 1, 3) if n_spatial is None else n_spatial
    return arr(rng, (integer(rng, 1, 3), *(integer(rng, 1, 5) for _ in range(n)), integer(rng, 1, 4)), dtype)


upsample_nearest = primitive("upsample_nearest", _upsample_nearest, _upsample_nearest_fwd, _upsample_nearest_bwd,
                             check=_upsample_nearest_check, examples=_upsample_nearest_examples,
                             space=_upsample_nearest_space)


# -- bilinear -----------------------------------------------------------------------------------------------------


def _linear_taps(length, out, align_corners, scale=None):
    """Per output o of one axis: the two source rows lo, hi and the weight frac of hi (module docstring)."""
    o = np.arange(out, dtype=np.float64)                       # static coordinates: shapes are static
    if align_corners:
        u = o * ((length - 1) / (out - 1)) if out > 1 else np.zeros_like(o)
    else:
        r = 1.0 / scale if scale is not None else length / out
        u = np.maximum((o + 0.5) * r - 0.5, 0.0)
    lo = np.minimum(np.floor(u).astype(np.int64), length - 1)
    hi = np.minimum(lo + 1, length - 1)
    return lo, hi, u - lo


def bilinear_matrix(length, out, align_corners=False, dtype=jnp.float32, scale=None):
    """The P x L interpolation matrix of one axis (torch's coordinate convention; ``scale``: the scale factor
    torch was given, whose reciprocal is the index ratio when ``align_corners`` is False)."""
    lo, hi, frac = _linear_taps(length, out, align_corners, scale)
    a = np.zeros((out, length))
    np.add.at(a, (np.arange(out), lo), 1.0 - frac)
    np.add.at(a, (np.arange(out), hi), frac)
    return jnp.asarray(a, dtype)


def _bilinear_axes(shape, size, scale):
    return [(length, p, s) for length, p, s, _ in _plan("upsample_bilinear", shape, size, scale)]


def _upsample_bilinear_check(x, *, size=None, scale=None, align_corners=False):
    if x.ndim != 4:
        raise ValueError(f"upsample_bilinear: input must be (N, H, W, C), got shape {x.shape}")
    _plan("upsample_bilinear", x.shape, size, scale)


def _upsample_bilinear(x, *, size=None, scale=None, align_corners=False):
    """Bilinear resizing (torch's ``F.interpolate(mode="bilinear")``), x (N, H, W, C) -> (N, P_h, P_w, C), the
    output ``size`` or a ``scale`` factor (P = floor(L s)), exactly one.

    Per axis, output o reads the source coordinate u = (o + 1/2) r - 1/2 clamped at 0, with r = 1/scale when a
    scale is given and L/P for a size (torch's default); ``align_corners``: u = o (L-1)/(P-1). It mixes
    x[floor u] and x[floor u + 1] with weights 1 - frac, frac. Per axis that is a fixed P x L matrix A with two
    entries per row, so y = A_h x A_w^T (per example and channel) and, the map being linear,
    dx = A_h^T dy A_w. Written here as the gather of the two neighbours; the hand path uses the matrices.
    Residual: x's shape.
    """
    for axis, (length, p, s) in enumerate(_bilinear_axes(x.shape, size, scale), start=1):
        lo, hi, frac = _linear_taps(length, p, align_corners, s)
        frac = jnp.asarray(frac.reshape([-1 if i == axis else 1 for i in range(4)]), x.dtype)
        x = jnp.take(x, lo, axis=axis) * (1 - frac) + jnp.take(x, hi, axis=axis) * frac
    return x


def _bilinear_matrices(shape, size, scale, align_corners, dtype):
    return [bilinear_matrix(length, p, align_corners, dtype, s) for length, p, s in _bilinear_axes(shape, size, scale)]


def _upsample_bilinear_fwd(x, *, size=None, scale=None, align_corners=False):
    # the primal as the product with the interpolation matrices the backward transposes
    ah, aw = _bilinear_matrices(x.shape, size, scale, align_corners, x.dtype)
    return jnp.einsum("ph,qw,nhwc->npqc", ah, aw, x), (x.shape,)


def _upsample_bilinear_bwd(res, dy, *, size=None, scale=None, align_corners=False):
    (shape,) = res
    ah, aw = _bilinear_matrices(shape, size, scale, align_corners, dy.dtype)
    return (jnp.einsum("ph,qw,npqc->nhwc", ah, aw, dy),)


def _upsample_bilinear_examples(key, dtype):
    return [
        Example((normal(key, (2, 3, 4, 2), dtype),), {"size": (6, 8)}, "2x"),
        Example((normal(jax.random.fold_in(key, 1), (2, 3, 5, 2), dtype),), {"size": (7, 9), "align_corners": True},
                "align_corners"),
        Example((normal(jax.random.fold_in(key, 3), (1, 4, 3, 2), dtype),), {"scale": (1.5, 2.3)},
                "scale (1.5, 2.3)"),
    ]


def _upsample_bilinear_space(rng, dtype):
    """Input sides 1-5; output sizes 1-9 (up, down, non-integer factors, single rows) or a scale factor 0.4-3
    (shared or per axis, raised until no axis is empty); align_corners or not."""
    x = _channels_last(rng, dtype, 2)
    corners = pick(rng, [False, True])
    if rng.random() < 0.5:
        return Example((x,), {"size": per_axis(rng, 2, 1, 9), "align_corners": corners})
    low = [max(0.4, 1.0 / length) for length in x.shape[1:3]]
    scale = _scale_draw(rng, max(low)) if rng.random() < 0.5 else tuple(_scale_draw(rng, lo) for lo in low)
    return Example((x,), {"scale": scale, "align_corners": corners})


upsample_bilinear = primitive("upsample_bilinear", _upsample_bilinear, _upsample_bilinear_fwd,
                              _upsample_bilinear_bwd, check=_upsample_bilinear_check, space=_upsample_bilinear_space,
                              examples=_upsample_bilinear_examples)
