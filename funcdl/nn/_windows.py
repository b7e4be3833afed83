"""Window geometry shared by convolutions and pooling: settings as tuples, padding, output sizes, kernel taps.

A window of kernel size K, stride s, dilation d and padding (lo, hi) reads, for output position o, the padded
input at o*s + k*d for k < K (per spatial axis; the window is the product over axes). Tap k of every window
is one strided slice of the padded input, and its gradient goes back onto the same strided grid
(``scatter_taps``): the two halves of every tap-by-tap rule in ``conv`` and ``pool``.

Padding settings: ``"VALID"`` (none), ``"SAME"`` (output ceil(L/s), JAX's split: the extra zero goes after),
``"CAUSAL"`` (1-D only: (K-1)d zeros before, none after, so y[t] sees x[<= t]), an int p (p on both sides of
every axis), a tuple of ints (one per axis) or a tuple of (lo, hi) pairs.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

__all__ = ["as_tuple", "normalize_padding", "conv_output_shape", "ndindex", "pad_spatial", "patches",
           "stack_windows", "scatter_taps"]


def as_tuple(name, value, n, what, *, positive=False):
    """An int or n ints as a tuple of n ints (``positive``: each >= 1)."""
    value = (value,) * n if isinstance(value, int) else tuple(value)
    ok = len(value) == n and all(isinstance(v, int) and (v >= 1 or not positive) for v in value)
    if not ok:
        kind = "positive int" if positive else "int"
        raise ValueError(f"{name}: {what} must be a {kind} or a tuple of {n} {kind}s, got {value!r}")
    return value


def normalize_padding(name, padding, n, in_spatial, kernel, stride, dilation):
    """Padding as a tuple of (lo, hi) pairs, one per spatial axis (see the module docstring for the forms)."""
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True)]
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "VALID":
            return ((0, 0),) * n
        if mode == "SAME":
            pads = []
            for length, e, s in zip(in_spatial, eff, stride, strict=True):
                total = max((-(-length // s) - 1) * s + e - length, 0)
                pads.append((total // 2, total - total // 2))
            return tuple(pads)
        if mode == "CAUSAL":
            if n != 1:
                raise ValueError(f"{name}: padding='CAUSAL' is for 1-D convolutions only")
            return ((eff[0] - 1, 0),)
        raise ValueError(f"{name}: unknown padding {padding!r}; use 'VALID', 'SAME', 'CAUSAL' (1-D), an int, "
                         "a tuple of ints or a tuple of (lo, hi) pairs")
    if isinstance(padding, int):
        return ((padding, padding),) * n
    padding = tuple(padding)
    if len(padding) == n and all(isinstance(p, int) for p in padding):
        return tuple((p, p) for p in padding)
    if len(padding) == n and all(isinstance(p, tuple) and len(p) == 2 for p in padding):
        return tuple((int(a), int(b)) for a, b in padding)
    raise ValueError(f"{name}: padding {padding!r} must be a string, an int, {n} ints or {n} (lo, hi) pairs")


def conv_output_shape(in_spatial, kernel, stride, pads, dilation):
    """O = floor((L + lo + hi - (K-1)d - 1) / s) + 1 per spatial axis."""
    return tuple((length + lo + hi - (k - 1) * d - 1) // s + 1
                 for length, k, s, (lo, hi), d in zip(in_spatial, kernel, stride, pads, dilation, strict=True))


def ndindex(shape):
    """Every index of ``shape`` in row-major order (the tap order of every rule)."""
    if not shape:
        return [()]
    return [(i, *rest) for i in range(shape[0]) for rest in ndindex(shape[1:])]


def _taps(kernel, dilation, stride, out_spatial):
    """For every kernel tap: its index and the (start, limit) of the strided slice of the padded input it reads."""
    for idx in ndindex(kernel):
        start = tuple(i * d for i, d in zip(idx, dilation, strict=True))
        limit = tuple(st + (o - 1) * s + 1 for st, o, s in zip(start, out_spatial, stride, strict=True))
        yield idx, start, limit


def pad_spatial(x, pads, value=0.0):
    """x (N, *spatial, C) padded on its spatial axes with ``value``."""
    return lax.pad(x, jnp.asarray(value, x.dtype), ((0, 0, 0), *((lo, hi, 0) for lo, hi in pads), (0, 0, 0)))


def patches(xp, kernel, stride, dilation, out_spatial):
    """For every kernel tap k: ``(k, xp[:, o*s + k*d, :])``, the strided slice (N, *O, C) of the padded input
    that tap reads."""
    for idx, start, limit in _taps(kernel, dilation, stride, out_spatial):
        yield idx, lax.slice(xp, (0, *start, 0), (xp.shape[0], *limit, xp.shape[-1]), (1, *stride, 1))


def stack_windows(x, kernel, stride, pads, dilation, value):
    """All taps stacked: (K, N, *O, C) from x padded with ``value``, and the output spatial shape O."""
    n = x.ndim - 2
    out = conv_output_shape(x.shape[1:1 + n], kernel, stride, pads, dilation)
    xp = pad_spatial(x, pads, value)
    return jnp.stack([p for _, p in patches(xp, kernel, stride, dilation, out)]), out


def scatter_taps(contributions, kernel, in_spatial, stride, pads, dilation):
    """The transpose of ``patches``: dxp[n, o*s + k*d, c] += contribution_k[n, o, c], then the padding cropped.

    Stride 1: each tap's (N, *O, C) array is shifted to where it was read from (``lax.pad``), the K of them
    are summed and the padding is cropped (a negative pad). Strided: see :func:`_scatter_by_phase`."""
    if any(s > 1 for s in stride):
        return _scatter_by_phase(contributions, kernel, in_spatial, stride, pads, dilation)
    n = len(kernel)
    out_spatial = contributions[0].shape[1:1 + n]
    padded = tuple(length + lo + hi for length, (lo, hi) in zip(in_spatial, pads, strict=True))
    zero = jnp.zeros((), contributions[0].dtype)
    total = None
    for g, (_, start, limit) in zip(contributions, _taps(kernel, dilation, stride, out_spatial), strict=True):
        cfg = ((0, 0, 0), *((st, p - lim, s - 1) for st, lim, p, s in zip(start, limit, padded, stride,
                                                                             strict=True)), (0, 0, 0))
        term = lax.pad(g, zero, cfg)
        total = term if total is None else total + term
    return lax.pad(total, zero, ((0, 0, 0), *((-lo, -hi, 0) for lo, hi in pads), (0, 0, 0)))


def _scatter_by_phase(contributions, kernel, in_spatial, stride, pads, dilation):
    """The strided scatter, phase by phase. Padded position p = start_k + o*s (per axis) has phase r = p mod s
    and coarse index q = p // s = start_k // s + o, so a tap's whole contribution lands on one phase, shifted
    by start_k // s on the coarse grid of Q = ceil(P / s) rows (P the padded length). The taps of each phase
    are summed there (plain shifts, no interior padding), and the s^n phase grids are interleaved (nested
    stacks, each phase axis right after its coarse axis, and one reshape: row q*s + r of the result is row q of
    phase r), cropped to P and then by the padding. A stack then a 2n-D transpose computes the same, but XLA's
    CPU backend fused that transpose with a consumer's own (the kernel gradient's moveaxis) into a slow loop.
    The same sum as putting each tap on a grid dilated by s - 1 zeros and adding, which XLA's CPU backend
    materialises tap by tap (16 full-size arrays for a 4x4 kernel) when the result has two consumers, as a
    transposed convolution's output in a training step does: its backward reads it for dx and for dw."""
    n = len(kernel)
    first = contributions[0]
    out_spatial = first.shape[1:1 + n]
    padded = tuple(length + lo + hi for length, (lo, hi) in zip(in_spatial, pads, strict=True))
    coarse = tuple(-(-p // s) for p, s in zip(padded, stride, strict=True))
    zero = jnp.zeros((), first.dtype)
    phases = {}
    for g, (_, start, _) in zip(contributions, _taps(kernel, dilation, stride, out_spatial), strict=True):
        phase = tuple(st % s for st, s in zip(start, stride, strict=True))
        cfg = ((0, 0, 0), *((st // s, q - st // s - o, 0) for st, s, q, o in zip(start, stride, coarse,
                                                                                   out_spatial, strict=True)),
               (0, 0, 0))
        term = lax.pad(g, zero, cfg)
        phases[phase] = term if phase not in phases else phases[phase] + term
    blank = jnp.zeros((first.shape[0], *coarse, first.shape[-1]), first.dtype)

    def interleave(prefix):
        """The phases whose first len(prefix) residues are ``prefix``, stacked after each of their axes."""
        axis = len(prefix)
        if axis == n:
            return phases.get(prefix, blank)
        return jnp.stack([interleave((*prefix, r)) for r in range(stride[axis])], axis=2 + axis)

    grid = interleave(())                                                      # (N, Q_1, S_1, ..., Q_n, S_n, C)
    grid = grid.reshape(first.shape[0], *(q * s for q, s in zip(coarse, stride, strict=True)), first.shape[-1])
    return lax.pad(grid, zero, ((0, 0, 0), *((-lo, -(hi + q * s - p), 0) for (lo, hi), q, s, p in
                                            zip(pads, coarse, stride, padded, strict=True)), (0, 0, 0)))
