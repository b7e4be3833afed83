"""Padding modes of the convolutions (torch's ``padding_mode``) and their adjoints.

torch's ``Conv*d(padding_mode=...)`` pads the input with the mode, then runs a VALID convolution. Per spatial axis
of length L, padded by (lo, hi) >= 0, the padded input is a gather ``xp[j] = x[m(j - lo)]`` for j < lo + L + hi,
with the index map m of the mode (p = j - lo is the position relative to the input; m(p) = p inside, 0 <= p < L):

    zeros      xp[j] = 0 outside                          (no index: the convolution's own zero padding)
    reflect    m(p) = -p for p < 0,  2(L-1) - p for p >= L   (mirror about the edge, the edge not repeated;
                                                            needs lo, hi < L, as torch)
    replicate  m(p) = clip(p, 0, L-1)                      (the edge element repeated)
    circular   m(p) = p mod L                              (wrap around; needs lo, hi <= L, as torch)

A gather's adjoint is the matching scatter-add: dx[i] = sum over j with m(j - lo) = i of g[j], i.e. the interior
g[lo:lo+L] plus every border gradient added back onto the element it copied. Padding acts on each spatial axis
separately (a corner is the padding of the padding, as in torch), so the n-D padding is the axes in turn and its
adjoint is the axes' adjoints in the reverse order.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from ._space import pick

__all__ = ["PADDING_MODES", "check_padding_mode", "split_padding", "reference_pad", "pad_with_mode",
           "pad_with_mode_adjoint", "draw_padding_mode"]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
_JNP_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def check_padding_mode(name, mode, pads, in_spatial):
    """Raise a one-line ValueError naming ``name`` when ``mode`` is unknown or cannot pad ``in_spatial`` by
    ``pads`` ((lo, hi) per spatial axis): reflect needs lo, hi < L, circular lo, hi <= L, both (and replicate)
    non-negative padding."""
    if not isinstance(mode, str) or mode not in PADDING_MODES:
        raise ValueError(f"{name}: unknown padding_mode {mode!r}; use 'zeros', 'reflect', 'replicate' or "
                         f"'circular' (as torch)")
    if mode == "zeros" or not any(lo or hi for lo, hi in pads):
        return
    if any(lo < 0 or hi < 0 for lo, hi in pads):
        raise ValueError(f"{name}: padding_mode={mode!r} needs non-negative padding, got {pads}; crop the input "
                         f"first or use padding_mode='zeros'")
    for axis, (length, (lo, hi)) in enumerate(zip(in_spatial, pads, strict=True)):
        if mode == "reflect" and max(lo, hi) >= length:
            raise ValueError(f"{name}: padding_mode='reflect' needs padding < the input side (as torch), but spatial "
                             f"axis {axis} of length {length} is padded by {(lo, hi)}; pad less or use 'replicate'")
        if mode == "circular" and max(lo, hi) > length:
            raise ValueError(f"{name}: padding_mode='circular' needs padding <= the input side (as torch), but "
                             f"spatial axis {axis} of length {length} is padded by {(lo, hi)}; pad less")


def split_padding(name, mode, pads, in_spatial):
    """``(mode_pads, conv_pads)``: the padding applied with ``mode`` before the convolution (None when there is
    none: mode 'zeros' or no padding at all) and the zero padding the convolution itself applies."""
    check_padding_mode(name, mode, pads, in_spatial)
    if mode == "zeros" or not any(lo or hi for lo, hi in pads):
        return None, pads
    return pads, ((0, 0),) * len(pads)


def reference_pad(x, pads, mode):
    """The plain-jnp padding of x (N, *spatial, C): ``jnp.pad`` with reflect / edge / wrap."""
    return jnp.pad(x, ((0, 0), *pads, (0, 0)), mode=_JNP_MODE[mode])


def _slice(x, axis, start, stop):
    return lax.slice_in_dim(x, start, stop, axis=axis)


def _place(a, axis, before, after):
    """``a`` with ``before`` zeros before and ``after`` zeros after along ``axis`` (a scatter onto a range)."""
    cfg = [(0, 0, 0)] * a.ndim
    cfg[axis] = (before, after, 0)
    return lax.pad(a, jnp.zeros((), a.dtype), cfg)


def pad_axis(x, axis, lo, hi, mode):
    """x padded by (lo, hi) along ``axis`` (length L) with ``mode``, as a concatenation of three gathers:

        reflect    [x[lo], ..., x[1]] ++ x ++ [x[L-2], ..., x[L-1-hi]]     (rev x[1:lo+1], rev x[L-1-hi:L-1])
        replicate  [x[0]] * lo ++ x ++ [x[L-1]] * hi
        circular   x[L-lo:L] ++ x ++ x[0:hi]
    """
    length = x.shape[axis]
    if mode == "reflect":
        before = lax.rev(_slice(x, axis, 1, lo + 1), (axis,))
        after = lax.rev(_slice(x, axis, length - 1 - hi, length - 1), (axis,))
    elif mode == "replicate":
        shape = list(x.shape)
        before = jnp.broadcast_to(_slice(x, axis, 0, 1), (*shape[:axis], lo, *shape[axis + 1:]))
        after = jnp.broadcast_to(_slice(x, axis, length - 1, length), (*shape[:axis], hi, *shape[axis + 1:]))
    elif mode == "circular":
        before, after = _slice(x, axis, length - lo, length), _slice(x, axis, 0, hi)
    else:
        raise ValueError(f"pad_axis: unknown padding mode {mode!r}")
    return jnp.concatenate([before, x, after], axis=axis)


def pad_axis_adjoint(g, axis, lo, hi, mode):
    """The adjoint of ``pad_axis``: g (length lo + L + hi along ``axis``) -> dx (length L), dx[i] = sum of g[j] over
    the padded positions j that copy x[i]. With gc = g[lo:lo+L], glo = g[:lo], ghi = g[lo+L:]:

        reflect    dx = gc;  dx[1:lo+1] += rev(glo);  dx[L-1-hi:L-1] += rev(ghi)    (the edge itself excluded)
        replicate  dx = gc;  dx[0] += sum(glo);       dx[L-1] += sum(ghi)
        circular   dx = gc;  dx[L-lo:L] += glo;       dx[0:hi] += ghi               (wrapped around)
    """
    length = g.shape[axis] - lo - hi
    dx = _slice(g, axis, lo, lo + length)
    glo, ghi = _slice(g, axis, 0, lo), _slice(g, axis, lo + length, lo + length + hi)
    if mode == "reflect":
        parts = [(lax.rev(glo, (axis,)), 1, length - 1 - lo), (lax.rev(ghi, (axis,)), length - 1 - hi, 1)]
    elif mode == "replicate":
        parts = [(jnp.sum(glo, axis=axis, keepdims=True), 0, length - 1),
                 (jnp.sum(ghi, axis=axis, keepdims=True), length - 1, 0)]
    elif mode == "circular":
        parts = [(glo, length - lo, 0), (ghi, 0, length - hi)]
    else:
        raise ValueError(f"pad_axis_adjoint: unknown padding mode {mode!r}")
    for (part, before, after), size in zip(parts, (lo, hi), strict=True):
        if size:                                     # an empty border adds nothing
            dx = dx + _place(part, axis, before, after)
    return dx


def pad_with_mode(x, pads, mode):
    """x (N, *spatial, C) padded by ``pads`` ((lo, hi) per spatial axis) with ``mode``: ``pad_axis`` on each
    spatial axis in turn."""
    for i, (lo, hi) in enumerate(pads):
        if lo or hi:
            x = pad_axis(x, 1 + i, lo, hi, mode)
    return x


def pad_with_mode_adjoint(g, pads, mode):
    """The adjoint of ``pad_with_mode``: ``pad_axis_adjoint`` on each spatial axis, the last axis first."""
    for i in reversed(range(len(pads))):
        lo, hi = pads[i]
        if lo or hi:
            g = pad_axis_adjoint(g, 1 + i, lo, hi, mode)
    return g


def draw_padding_mode(rng, pads, in_spatial):
    """For a ``space``: 'zeros' half the time, else 'reflect', 'replicate' or 'circular', with 'replicate' (valid
    for any non-negative padding) where ``pads`` are too wide for the mode drawn."""
    mode = "zeros" if rng.random() < 0.5 else pick(rng, PADDING_MODES[1:])
    room = min(length - max(lo, hi) for length, (lo, hi) in zip(in_spatial, pads, strict=True))
    if (mode == "reflect" and room < 1) or (mode == "circular" and room < 0):
        mode = "replicate"
    return mode
