"""Transposed convolutions (1-D, 2-D, 3-D): the input gradient of a convolution, as a layer of its own.

Transposed convolution ``conv_transpose`` is, by definition (torch's), the input gradient of a convolution:
with the kernel stored ``(*k, C_in, C_out/G)`` (torch's (C_in, C_out/G, *k) moved to channels-last), it is the
input-gradient formula above applied to x with the convolution kernel ``w_c = swap(w)`` (*k, C_out/G, C_in).
Its output length is (L-1)s - lo - hi + (K-1)d + 1 + output_padding (torch: lo = hi = padding). Its own
backward therefore needs no new formula: dx is the *forward* convolution of dy with w_c (stride s, dilation d,
padding (lo, hi - output_padding)), and dw is the kernel-gradient formula with the roles of input and output
gradient exchanged (dy plays the input, x the output gradient), transposed back.
Layouts and padding forms as in ``funcdl.nn.conv``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..core.examples import Example, keys, normal
from ._space import arr, integer, per_axis, pick
from ._windows import as_tuple, normalize_padding
from .conv import _LAYOUT, bias_grad, conv_fast, conv_nd, input_grad, kernel_grad, promote, register_family

__all__ = ["conv_transpose1d", "conv_transpose2d", "conv_transpose3d"]


def _t_settings(name, n, w, stride, padding, output_padding, dilation):
    stride = as_tuple(name, stride, n, "stride")
    dilation = as_tuple(name, dilation, n, "dilation")
    opad = as_tuple(name, output_padding, n, "output_padding")
    if isinstance(padding, str):
        if padding.upper() != "VALID":
            raise ValueError(f"{name}: padding must be 'VALID', an int, {n} ints or {n} (lo, hi) pairs, got "
                             f"{padding!r}")
        padding = 0
    pads = normalize_padding(name, padding, n, (0,) * n, w.shape[:n], stride, dilation)
    return stride, pads, opad, dilation


def _t_out_spatial(x, w, stride, pads, opad, dilation):
    n = x.ndim - 2
    return tuple((length - 1) * s - lo - hi + (k - 1) * d + 1 + op for length, s, (lo, hi), k, d, op in
                 zip(x.shape[1:1 + n], stride, pads, w.shape[:n], dilation, opad, strict=True))


def _swap(w):
    """(*k, C_in, C_out/G) <-> (*k, C_out/G, C_in): the transposed-conv kernel as the kernel of the conv it
    transposes."""
    return jnp.swapaxes(w, -1, -2)


def _make_conv_transpose(name, n):
    """reference, fwd, bwd and check of the n-D transposed convolution ``name``."""

    def _conv_transpose_check(x, w, b=None, *, stride=1, padding=0, output_padding=0, dilation=1, groups=1):
        if w.ndim != n + 2:
            raise ValueError(f"{name}: kernel must be {n + 2}-D (*k, C_in, C_out/groups), got shape {w.shape}")
        if x.ndim != n + 2:
            raise ValueError(f"{name}: input must be {n + 2}-D {_LAYOUT[n]} (channels last), got shape {x.shape}")
        cin = w.shape[-2]
        if cin % groups:
            raise ValueError(f"{name}: kernel input channels {cin} (kernel {w.shape}) not divisible by "
                             f"groups={groups}")
        if x.shape[-1] != cin:
            hint = ""
            if x.shape[1] == cin:
                hint = "; the input looks channels-first (NCHW): transpose it with jnp.moveaxis(x, 1, -1)"
            raise ValueError(f"{name}: input shape {x.shape} has {x.shape[-1]} channels (last axis) but the kernel "
                             f"{w.shape} expects {cin}{hint}")
        cout = w.shape[-1] * groups
        if b is not None and b.shape != (cout,):
            raise ValueError(f"{name}: bias shape {b.shape} must be ({cout},)")
        st, pads, op, dil = _t_settings(name, n, w, stride, padding, output_padding, dilation)
        for o, s, d in zip(op, st, dil, strict=True):
            if not 0 <= o < max(s, d):
                raise ValueError(f"{name}: output_padding {op} must be smaller than the stride {st} or the "
                                 f"dilation {dil} (as torch)")
        out = _t_out_spatial(x, w, st, pads, op, dil)
        if any(o < 1 for o in out):
            raise ValueError(f"{name}: input {x.shape} with kernel {w.shape}, padding {pads} gives an empty "
                             f"output {out}; reduce the padding")

    def _conv_transpose(x, w, b=None, *, stride=1, padding=0, output_padding=0, dilation=1, groups=1):
        """Transposed convolution: x (N, *L, C_in), w (*K, C_in, C_out/G), b (C_out,), channels last.

        By definition (torch's) the input gradient of the convolution with kernel w_c = swap(w) (*K, C_out/G,
        C_in), stride s, dilation d, padding (lo, hi - output_padding):  y = conv_nd^T(x) + b, so
            y[n, p, co] = b[co] + sum_{o, k: o*s + k*d = p + lo} sum_ci x[n, o, ci] w[k, ci, co]
        Output length (L-1)s - lo - hi + (K-1)d + 1 + output_padding. Backward (the transpose of a transpose):
            dx = the forward convolution of dy with w_c (stride s, dilation d, padding (lo, hi - output_padding))
            dw = swap(kernel gradient of that convolution with dy as its input and x as its output gradient)
            db[co] = sum over n and p of dy[n, p, co]
        Residuals: x, w and b. Written here as autodiff's transpose of ``conv_nd`` (``jax.vjp``).
        """
        st, pads, op, dil = _t_settings(name, n, w, stride, padding, output_padding, dilation)
        out = _t_out_spatial(x, w, st, pads, op, dil)
        cpads = tuple((lo, hi - o) for (lo, hi), o in zip(pads, op, strict=True))
        x, w = promote(x, w)
        wc = _swap(w)
        zeros = jnp.zeros((x.shape[0], *out, wc.shape[-2] * groups), x.dtype)
        _, pull = jax.vjp(lambda z: conv_nd(z, wc, st, cpads, dil, groups), zeros)
        (y,) = pull(x)
        return y if b is None else y + b

    def _conv_transpose_fwd(x, w, b=None, *, stride=1, padding=0, output_padding=0, dilation=1, groups=1):
        # the primal by the hand-written input-gradient rules (tap-wise, col2im), not by autodiff of conv_nd
        st, pads, op, dil = _t_settings(name, n, w, stride, padding, output_padding, dilation)
        out = _t_out_spatial(x, w, st, pads, op, dil)
        cpads = tuple((lo, hi - o) for (lo, hi), o in zip(pads, op, strict=True))
        xc, wc = promote(x, w)
        y = input_grad(xc, _swap(wc), out, st, cpads, dil, groups)
        return (y if b is None else y + b), (x, w, b)

    def _conv_transpose_bwd(res, dy, *, stride=1, padding=0, output_padding=0, dilation=1, groups=1):
        x, w, b = res
        st, pads, op, dil = _t_settings(name, n, w, stride, padding, output_padding, dilation)
        cpads = tuple((lo, hi - o) for (lo, hi), o in zip(pads, op, strict=True))
        xc, wcom = promote(x, w)
        dy = dy.astype(xc.dtype)
        dx = conv_fast(dy, _swap(wcom), st, cpads, dil, groups).astype(x.dtype)
        dw = _swap(kernel_grad(dy, xc, w.shape[:n], st, cpads, dil, groups)).astype(w.dtype)
        return dx, dw, bias_grad(dy, b)

    _conv_transpose.__name__ = _conv_transpose.__qualname__ = f"_{name}"
    return _conv_transpose, _conv_transpose_fwd, _conv_transpose_bwd, _conv_transpose_check


# -- example factories ----------------------------------------------------------------------------------------------

# (stride, padding, output_padding, dilation, groups, kernel)
_CONV_TRANSPOSE2D_CONFIGS = [
    (1, 0, 0, 1, 1, (3, 3)), (2, 0, 0, 1, 1, (3, 3)), (2, 1, 1, 1, 1, (3, 3)), (2, 1, 0, 1, 1, (4, 4)),
    (3, 1, 2, 1, 2, (3, 2)), (1, 1, 0, 2, 1, (3, 3)), (2, 2, 1, 2, 4, (3, 3)), ((2, 1), (1, 0), (1, 0), 1, 2, (4, 3)),
    (2, ((1, 0), (0, 2)), 0, 1, 1, (3, 3)), (1, 0, 0, (1, 2), 4, (2, 3)), (2, 0, 1, 1, 1, (1, 1)),
    (1, 0, 0, 1, 1, (1, 1)),
]


def _conv_transpose2d_examples(key, dtype):
    exs = []
    for j, (s, p, op, d, g, ks) in enumerate(_CONV_TRANSPOSE2D_CONFIGS):
        k = keys(jax.random.fold_in(key, j), 3)
        x = normal(k[0], (2, 4, 5, 4), dtype)
        w = normal(k[1], (*ks, 4, 8 // g), dtype, scale=0.5)
        b = normal(k[2], (8,), dtype) if j % 2 == 0 else None
        exs.append(Example((x, w, b), {"stride": s, "padding": p, "output_padding": op, "dilation": d, "groups": g},
                           f"s={s} p={p} op={op} d={d} g={g}"))
    return exs


def _conv_transpose1d_examples(key, dtype):
    configs = [(1, 0, 0, 1, 1), (2, 1, 1, 1, 1), (3, 2, 1, 2, 2), (2, 0, 0, 1, 4), (2, ((2, 1),), 1, 3, 1)]
    exs = []
    for j, (s, p, op, d, g) in enumerate(configs):
        k = keys(jax.random.fold_in(key, j), 3)
        x = normal(k[0], (2, 6, 4), dtype)
        w = normal(k[1], (3, 4, 8 // g), dtype, scale=0.5)
        b = normal(k[2], (8,), dtype) if j % 2 else None
        exs.append(Example((x, w, b), {"stride": s, "padding": p, "output_padding": op, "dilation": d, "groups": g},
                           f"s={s} p={p} op={op} d={d} g={g}"))
    return exs


def _conv_transpose3d_examples(key, dtype):
    """Tiny (sides <= 4, channels <= 2): every 3-D configuration compiles its own set of convolutions."""
    configs = [(1, 0, 0, 1, 1, (2, 2, 2)), (2, 1, 1, 1, 2, (3, 2, 2)),          # (stride, padding, op, d, g, kernel)
               ((1, 2, 2), ((1, 0), (0, 1), (1, 1)), (0, 1, 0), (2, 1, 1), 1, (2, 2, 3))]
    exs = []
    for j, (s, p, op, d, g, ks) in enumerate(configs):
        k = keys(jax.random.fold_in(key, j), 3)
        x = normal(k[0], (1, 2, 3, 2, 2), dtype)
        w = normal(k[1], (*ks, 2, 2 // g), dtype, scale=0.5)
        b = normal(k[2], (2,), dtype) if j % 2 == 0 else None
        exs.append(Example((x, w, b), {"stride": s, "padding": p, "output_padding": op, "dilation": d, "groups": g},
                           f"s={s} p={p} op={op} d={d} g={g}"))
    return exs


def _conv_transpose_space(n):
    """Space of the n-D transposed convolution: groups 1-4 (1-2 in 3-D), kernels 1-4 (1-3), stride 1-3 and
    dilation 1-2 (shared or per axis), padding VALID / an int / ints / (lo, hi) pairs, output_padding below
    max(stride, dilation) per axis, bias or none; padding is drawn so that the output is not empty. 3-D draws
    are smaller (sides 1-3, channels up to 2 per group) to keep their compilation short."""
    gmax, cmax, kmax, lmax = (4, 3, 4, 5) if n < 3 else (2, 2, 3, 3)

    def space(rng, dtype):
        groups = integer(rng, 1, gmax)
        cin, cout = groups * integer(rng, 1, cmax), groups * integer(rng, 1, cmax)
        kernel = tuple(integer(rng, 1, kmax) for _ in range(n))
        stride, dilation = per_axis(rng, n, 1, 3), per_axis(rng, n, 1, 2)
        st, dil = as_tuple("space", stride, n, "stride"), as_tuple("space", dilation, n, "dilation")
        spatial = tuple(integer(rng, 1, lmax) for _ in range(n))
        opad = tuple(integer(rng, 0, max(s, d) - 1) for s, d in zip(st, dil, strict=True))
        # the output (L-1)s - lo - hi + (K-1)d + 1 + op must keep at least one position: lo + hi <= room
        room = min((length - 1) * s + (k - 1) * d + op for length, s, k, d, op in zip(spatial, st, kernel, dil, opad,
                                                                                       strict=True))
        form = pick(rng, ["VALID", "int", "ints", "pairs"])
        if form == "int":
            padding = integer(rng, 0, min(2, room // 2))
        elif form == "ints":
            padding = tuple(integer(rng, 0, min(2, room // 2)) for _ in range(n))
        elif form == "pairs":
            padding = tuple((integer(rng, 0, min(2, room // 2)), integer(rng, 0, min(2, room // 2)))
                            for _ in range(n))
        else:
            padding = "VALID"
        x = arr(rng, (integer(rng, 1, 3), *spatial, cin), dtype)
        w = arr(rng, (*kernel, cin, cout // groups), dtype, 0.5)
        b = arr(rng, (cout,), dtype) if rng.random() < 0.7 else None
        settings = {"stride": stride, "padding": padding, "output_padding": opad if rng.random() < 0.5 else
                    (opad[0] if len(set(opad)) == 1 else opad), "dilation": dilation, "groups": groups}
        return Example((x, w, b), settings)

    return space


conv_transpose1d = register_family(_make_conv_transpose, "conv_transpose1d", 1, _conv_transpose1d_examples,
                                   _conv_transpose_space(1))
conv_transpose2d = register_family(_make_conv_transpose, "conv_transpose2d", 2, _conv_transpose2d_examples,
                                   _conv_transpose_space(2))
conv_transpose3d = register_family(_make_conv_transpose, "conv_transpose3d", 3, _conv_transpose3d_examples,
                                   _conv_transpose_space(3))
