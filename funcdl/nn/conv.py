"""Convolutions (1-D, 2-D, 3-D) and transposed convolutions, with the backward derived as convolutions.

Layouts (DESIGN.md): inputs channels-last ``(N, *spatial, C)`` (NWC, NHWC, NDHWC); kernels ``(*k, C_in/G, C_out)``
(WIO, HWIO, DHWIO). Like torch (and every framework) the "convolution" is a cross-correlation.

Forward, written for one spatial axis (every spatial axis behaves the same way, independently). With stride s,
dilation d, kernel size K, padding (lo, hi) and G groups, channel ``co`` of the output belongs to group
``g = co // (C_out/G)`` and reads only input channels ``g*C_in/G + i``:

    y[n, o, co] = b[co] + sum_{k < K} sum_{i < C_in/G} xp[n, o*s + k*d, g*C_in/G + i] * w[k, i, co]
    xp = x padded with lo zeros before and hi after;    O = floor((L + lo + hi - (K-1)d - 1) / s) + 1

Backward. Everything is linear, so each gradient is the same sum read the other way round.

* Input gradient (a transposed convolution). Input position p = o*s + k*d - lo receives dy[n, o, co] w[k, i, co]:

      dx[n, p, ci] = sum_{o, k: o*s + k*d = p + lo} sum_co dy[n, o, co] w[k, i, co]

  Put s-1 zeros between the entries of dy (``lhs_dilation = s``: the stride becomes a dilation of dy), flip the
  kernel (k -> K-1-k) and the condition becomes an ordinary correlation with the kernel dilated by d
  (``rhs_dilation = d``), padded by (K-1)d - lo before and L + lo - (O-1)s - 1 after (either may be negative:
  rows of the input that no window reached get zero gradient, and the crop is what a negative pad does).
  Groups: the roles of C_in and C_out swap, group by group: w (K, C_in/G, G, C_out/G) is regrouped to
  (K, C_out/G, G, C_in/G) -> (K, C_out/G, C_in) and the same ``feature_group_count = G`` applies.

* Kernel gradient (a correlation of the input with the output gradient):

      dw[k, i, co] = sum_n sum_o xp[n, o*s + k*d, g*C_in/G + i] * dy[n, o, co]

  Read as a convolution whose "batch" is the input channel, whose "features" are the examples n, and whose
  kernel is dy: the output index is k, which moves the window by d (``window_strides = d``: dilation becomes a
  stride) and the kernel taps o are s apart (``rhs_dilation = s``: stride becomes a dilation). Padding lo before;
  after, (K-1)d + (O-1)s + 1 - L - lo, which drops input rows no window used. Groups pair input-channel group g
  with output-channel group g (``batch_group_count = G``); the code runs one convolution per group, with x
  moved to (C_in, *spatial, N) and dy to (*spatial, N, C_out) first (see ``kernel_grad``: XLA's canonical
  dimension order, which its CPU backend runs through its convolution library, also inside ``lax.scan``).

* Bias gradient: db[co] = sum over n and positions of dy[n, o, co].

Residuals: x and w (both live already; nothing is recomputed).

The same sums can be evaluated in other orders, and XLA's CPU backend is much faster at some of them than at
its own convolution (``python benchmarks/bench_conv.py`` measures each): the hand-derived path picks

* depthwise kernels (C_in/G = 1): forward, input and kernel gradient tap by tap, K elementwise products of a
  strided slice (XLA's grouped convolution with one channel per group is slow on CPU);
* grey or RGB inputs (C_in <= 3, groups 1): the forward as K * C_in broadcast multiply-adds (4-10x faster);
* strided convolutions (groups 1): the input gradient as one matrix product dy (N*O, C_out) @ w^T
  (C_out, K*C_in) whose K column blocks are each put back on the strided grid they were read from
  ("col2im"), instead of a convolution over a dy dilated with s-1 zeros that it multiplies too;
* pointwise kernels (every kernel size 1, groups 1): both gradients as matrix products of the
  (N*positions, C) views, dx = dy @ w^T (the col2im rule with one tap) and dw = x^T @ dy with x read at the
  strided positions (1.6-1.8x faster than the two convolutions).

Padding modes (torch's ``padding_mode``): 'reflect', 'replicate', 'circular' pad x with the mode (xp = P(x),
``funcdl.nn._padding``), then convolve VALID: dw is the kernel gradient with xp as the input, dx = P^T(dxp).

The transposed convolutions are in ``funcdl.nn.conv_transpose``; the window geometry (padding forms,
output sizes, kernel taps) is shared with pooling in ``funcdl.nn._windows``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ..core.examples import Example, keys, normal
from ..core.primitive import primitive
from ._padding import draw_padding_mode, pad_with_mode, pad_with_mode_adjoint, reference_pad, split_padding
from ._space import arr, integer, padding, per_axis
from ._windows import as_tuple, conv_output_shape, ndindex, normalize_padding, pad_spatial, patches, scatter_taps

__all__ = ["conv1d", "conv2d", "conv3d", "conv_output_shape", "normalize_padding", "conv_nd"]

_SPATIAL = {1: "W", 2: "HW", 3: "DHW"}
_LAYOUT = {1: "(N, W, C)", 2: "(N, H, W, C)", 3: "(N, D, H, W, C)"}
_KLAYOUT = {1: "(K, C_in/groups, C_out)", 2: "(KH, KW, C_in/groups, C_out)", 3: "(KD, KH, KW, C_in/groups, C_out)"}

def _dn(n):
    sp = _SPATIAL[n]
    return ("N" + sp + "C", sp + "IO", "N" + sp + "C")


# -- the three convolutions every rule is made of ---------------------------------------------------------------


def _is_depthwise(cin, groups):
    return groups > 1 and groups == cin


def conv_nd(x, w, stride, pads, dilation, groups):
    """The forward correlation (no bias); all settings already normalised to tuples."""
    n = x.ndim - 2
    return lax.conv_general_dilated(x, w, window_strides=stride, padding=pads, rhs_dilation=dilation,
                                    dimension_numbers=_dn(n), feature_group_count=groups)


_FEW_CHANNELS = 3      # grey and RGB inputs


def conv_fast(x, w, stride, pads, dilation, groups):
    """The forward the hand-derived path runs: ``conv_nd``, or tap by tap for depthwise kernels and for inputs
    with few channels (an RGB or grey stem), where XLA's CPU convolution is 4-10x slower than K fused
    multiply-adds."""
    if _is_depthwise(x.shape[-1], groups):
        return depthwise_fwd(x, w, stride, pads, dilation)
    if groups == 1 and x.shape[-1] <= _FEW_CHANNELS:
        return few_channels_fwd(x, w, stride, pads, dilation)
    return conv_nd(x, w, stride, pads, dilation, groups)


def _regroup_flip(w, groups):
    """(*k, C_in/G, C_out) -> flipped (*k, C_out/G, C_in): the kernel of the input-gradient convolution."""
    n = w.ndim - 2
    *ks, cig, cout = w.shape
    cog = cout // groups
    w = w.reshape(*ks, cig, groups, cog)
    w = jnp.transpose(w, (*range(n), n + 2, n + 1, n)).reshape(*ks, cog, groups * cig)
    return jnp.flip(w, axis=tuple(range(n)))


def input_grad(dy, w, in_spatial, stride, pads, dilation, groups):
    """dx: transposed convolution of dy (dilated by the stride) with the flipped, regrouped kernel."""
    n = dy.ndim - 2
    if _is_depthwise(w.shape[-2] * groups, groups):
        return depthwise_input_grad(dy, w, in_spatial, stride, pads, dilation, groups)
    if groups == 1 and (any(s > 1 for s in stride) or all(k == 1 for k in w.shape[:n])):
        return col2im_input_grad(dy, w, in_spatial, stride, pads, dilation)
    ks = w.shape[:n]
    out_spatial = dy.shape[1:1 + n]
    tpads = []
    for length, k, s, (lo, _), d, o in zip(in_spatial, ks, stride, pads, dilation, out_spatial, strict=True):
        tpads.append(((k - 1) * d - lo, length + lo - (o - 1) * s - 1))
    return lax.conv_general_dilated(dy, _regroup_flip(w, groups), window_strides=(1,) * n, padding=tpads,
                                    lhs_dilation=stride, rhs_dilation=dilation, dimension_numbers=_dn(n),
                                    feature_group_count=groups)


def kernel_grad(x, dy, kernel, stride, pads, dilation, groups):
    """dw: correlation of the (padded) input with dy, over examples and positions.

    Written as a convolution whose "batch" is C_in and whose contracted "feature" is the example index N:
    ``x`` moved to (C_in, *spatial, N), ``dy`` to (*spatial, N, C_out), so the convolution is in the canonical
    dimension order (batch, spatial, feature) XLA's CPU backend runs through its convolution library. Given
    the equivalent ``dimension_numbers=("C..N", "I..O", "..NC")`` directly, XLA makes the same transposes but
    compiles a generic loop instead, which made a ResNet step 10x slower inside ``lax.scan``, and a grouped
    kernel gradient (``batch_group_count``) 10-20x slower than the ungrouped one. Groups: one such
    convolution per group (the depthwise case has its own tap-wise rule)."""
    n = x.ndim - 2
    in_spatial = x.shape[1:1 + n]
    out_spatial = dy.shape[1:1 + n]
    kpads = []
    for length, k, s, (lo, _), d, o in zip(in_spatial, kernel, stride, pads, dilation, out_spatial, strict=True):
        kpads.append((lo, (k - 1) * d + (o - 1) * s + 1 - length - lo))
    if _is_depthwise(x.shape[-1], groups):
        return depthwise_kernel_grad(x, dy, kernel, stride, kpads, dilation)
    if groups == 1 and all(k == 1 for k in kernel):
        return pointwise_kernel_grad(x, dy, kernel, stride, kpads, dilation)
    sp = _SPATIAL[n]
    xt = jnp.moveaxis(x, (0, n + 1), (n + 1, 0))                   # (C_in, *spatial, N)
    dyt = jnp.moveaxis(dy, 0, n)                                    # (*spatial, N, C_out)
    cig, cog = x.shape[-1] // groups, dy.shape[-1] // groups
    dws = [lax.conv_general_dilated(xt[g * cig:(g + 1) * cig], dyt[..., g * cog:(g + 1) * cog],
                                    window_strides=dilation, padding=kpads, rhs_dilation=stride,
                                    dimension_numbers=("N" + sp + "C", sp + "IO", "N" + sp + "C"))
           for g in range(groups)]                                  # each (C_in/G, *k, C_out/G)
    return jnp.moveaxis(jnp.concatenate(dws, axis=-1) if groups > 1 else dws[0], 0, n)


def depthwise_fwd(x, w, stride, pads, dilation):
    """y[n, o, c*m + j] = sum_k xp[n, o*s + k*d, c] w[k, 0, c*m + j]: one strided slice and one fused
    multiply-add per tap (XLA's grouped convolution with one channel per group is slow on CPU)."""
    n = x.ndim - 2
    cin, cout = x.shape[-1], w.shape[-1]
    mult = cout // cin
    xp = pad_spatial(x, pads)
    out_spatial = conv_output_shape(x.shape[1:1 + n], w.shape[:n], stride, pads, dilation)
    wr = w.reshape(*w.shape[:n], cin, mult)
    y = None
    for idx, patch in patches(xp, w.shape[:n], stride, dilation, out_spatial):
        term = patch[..., None] * wr[idx]                                                      # (N, *O, C, m)
        y = term if y is None else y + term
    return y.reshape(*y.shape[:-2], cout)


def depthwise_input_grad(dy, w, in_spatial, stride, pads, dilation, cin):
    """Tap k contributes sum_j dy[n, o, c*m + j] w[k, 0, c*m + j] to dxp[n, o*s + k*d, c]."""
    n = dy.ndim - 2
    kernel = w.shape[:n]
    m = dy.shape[-1] // cin
    dyr = dy.reshape(*dy.shape[:-1], cin, m)
    wr = w.reshape(*kernel, cin, m)
    contributions = [jnp.sum(dyr * wr[idx], axis=-1) for idx in ndindex(kernel)]
    return scatter_taps(contributions, kernel, in_spatial, stride, pads, dilation)


def col2im_input_grad(dy, w, in_spatial, stride, pads, dilation):
    """dx (groups 1) as one matrix product and a scatter ("col2im"): every tap's contribution dy[n, o, :] @
    w[k]^T comes out of dy (N*O, C_out) @ w^T (C_out, K*C_in), then goes back to its grid. For a strided
    convolution XLA's CPU backend runs this 1.5-3x faster than the transposed convolution with a dilated dy,
    which multiplies the s^2 - 1 inserted zeros too; for a 1x1 kernel it is a single matrix product."""
    n = dy.ndim - 2
    kernel = w.shape[:n]
    cin, cout = w.shape[-2], w.shape[-1]
    cols = jnp.dot(dy.reshape(-1, cout), w.reshape(-1, cout).T)                          # (N*O, K*C_in)
    cols = cols.reshape(*dy.shape[:-1], -1, cin)
    contributions = [cols[..., t, :] for t in range(cols.shape[-2])]
    return scatter_taps(contributions, kernel, in_spatial, stride, pads, dilation)


def few_channels_fwd(x, w, stride, pads, dilation):
    """y[n, o, :] = sum_k sum_c xp[n, o*s + k*d, c] w[k, c, :] for an input with few channels: K * C_in
    broadcast multiply-adds of a strided slice."""
    n = x.ndim - 2
    xp = pad_spatial(x, pads)
    out_spatial = conv_output_shape(x.shape[1:1 + n], w.shape[:n], stride, pads, dilation)
    y = None
    for idx, patch in patches(xp, w.shape[:n], stride, dilation, out_spatial):               # (N, *O, C_in)
        for c in range(x.shape[-1]):
            term = patch[..., c:c + 1] * w[idx][c]
            y = term if y is None else y + term
    return y


def pointwise_kernel_grad(x, dy, kernel, stride, kpads, dilation):
    """dw[0, ci, co] = sum_{n,o} xp[n, o*s, ci] dy[n, o, co] for a 1x1 kernel (groups 1): the one tap's strided
    slice of the padded input, transposed, times dy: a single matrix product of the (N*O, C) views."""
    n = x.ndim - 2
    xp = pad_spatial(x, tuple((lo, max(hi, 0)) for lo, hi in kpads))
    ((_, patch),) = patches(xp, kernel, stride, dilation, dy.shape[1:1 + n])                # (N, *O, C_in)
    dw = lax.dot_general(patch.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1]), (((0,), (0,)), ((), ())))
    return dw.reshape(*kernel, *dw.shape)


def depthwise_kernel_grad(x, dy, kernel, stride, kpads, dilation):
    """dw[k, 0, c*m + j] = sum_{n,o} xp[n, o*s + k*d, c] dy[n, o, c*m + j]: one strided slice per tap."""
    n = x.ndim - 2
    cin, cout = x.shape[-1], dy.shape[-1]
    mult = cout // cin
    out_spatial = dy.shape[1:1 + n]
    xp = pad_spatial(x, tuple((lo, max(hi, 0)) for lo, hi in kpads))
    dyr = dy.reshape(*dy.shape[:-1], cin, mult)
    taps = []
    for _, patch in patches(xp, kernel, stride, dilation, out_spatial):                      # (N, *O, C_in)
        # an elementwise product and one fused reduction (an einsum here becomes a slow batched dot on CPU)
        taps.append(jnp.sum(patch[..., None] * dyr, axis=tuple(range(n + 1))).reshape(cout))
    return jnp.stack(taps).reshape(*kernel, 1, cout)


# -- convolution --------------------------------------------------------------------------------------------------


def promote(x, w):
    """Compute in the promoted dtype of input and kernel (a float32 kernel on float64 data works); the backward
    casts each gradient back to its input's dtype."""
    dt = jnp.result_type(x, w)
    return x.astype(dt), w.astype(dt)


def bias_grad(dy, b):
    """db[co] = sum of dy over the batch and every position; None when there is no bias."""
    return None if b is None else jnp.sum(dy, axis=tuple(range(dy.ndim - 1))).astype(b.dtype)


def _settings(name, n, x, w, stride, padding, dilation, padding_mode="zeros"):
    """(stride, the convolution's zero padding, dilation, the padding applied with ``padding_mode`` or None)."""
    stride = as_tuple(name, stride, n, "stride")
    dilation = as_tuple(name, dilation, n, "dilation")
    pads = normalize_padding(name, padding, n, x.shape[1:1 + n], w.shape[:n], stride, dilation)
    mode_pads, pads = split_padding(name, padding_mode, pads, x.shape[1:1 + n])
    return stride, pads, dilation, mode_pads


def _check_groups(name, x, w, groups):
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{name}: groups must be a positive int, got {groups!r}")
    cin, cig, cout = x.shape[-1], w.shape[-2], w.shape[-1]
    if cout % groups:
        raise ValueError(f"{name}: output channels {cout} (kernel shape {w.shape}) are not divisible by "
                         f"groups={groups}")
    if cin != cig * groups:
        hint = ""
        if x.shape[1] == cig * groups:
            hint = ("; the input looks channels-first (NCHW): funcdl is channels-last, transpose it with "
                    "jnp.moveaxis(x, 1, -1)")
        elif cin % groups:
            hint = f"; input channels {cin} are not divisible by groups={groups}"
        raise ValueError(f"{name}: input shape {x.shape} has {cin} channels (last axis) but the kernel "
                         f"{w.shape} with groups={groups} expects {cig} x {groups} = {cig * groups}{hint}")


def _make_conv(name, n):
    """reference, fwd, bwd and check of the n-D convolution ``name``."""

    def _conv_check(x, w, b=None, *, stride=1, padding="VALID", dilation=1, groups=1, padding_mode="zeros"):
        if w.ndim != n + 2:
            raise ValueError(f"{name}: kernel must be {n + 2}-D {_KLAYOUT[n]}, got shape {w.shape}")
        if x.ndim != n + 2:
            raise ValueError(f"{name}: input must be {n + 2}-D {_LAYOUT[n]} (channels last), got shape {x.shape}; "
                             f"add a batch axis with x[None] for a single example")
        _check_groups(name, x, w, groups)
        if b is not None and b.shape != (w.shape[-1],):
            raise ValueError(f"{name}: bias shape {b.shape} must be ({w.shape[-1]},) for kernel shape {w.shape}")
        st, pads, dil, mode_pads = _settings(name, n, x, w, stride, padding, dilation, padding_mode)
        if any(s < 1 for s in st) or any(d < 1 for d in dil):
            raise ValueError(f"{name}: stride {st} and dilation {dil} must be >= 1")
        for length, k, d, (lo, hi) in zip(x.shape[1:1 + n], w.shape[:n], dil, mode_pads or pads, strict=True):
            if (k - 1) * d + 1 > length + lo + hi:
                raise ValueError(f"{name}: kernel {w.shape} (size {k}, dilation {d}, span {(k - 1) * d + 1}) is "
                                 f"larger than the padded input: input {x.shape} padded by {(lo, hi)} gives "
                                 f"{length + lo + hi}; use a smaller kernel or more padding")

    def _conv(x, w, b=None, *, stride=1, padding="VALID", dilation=1, groups=1, padding_mode="zeros"):
        """Convolution (cross-correlation), channels last: x (N, *L, C_in), w (*K, C_in/G, C_out), b (C_out,).

        Per spatial axis, with stride s, dilation d, padding (lo, hi) and xp the zero-padded input:
            y[n, o, co] = b[co] + sum_k sum_i xp[n, o*s + k*d, g*C_in/G + i] w[k, i, co],  g = co // (C_out/G)
        Backward (y is linear in x and in w, so each gradient is the same sum read the other way round):
            dx[n, p, ci] = sum_{o, k: o*s + k*d = p + lo} sum_co dy[n, o, co] w[k, i, co]
                           (a transposed convolution: dy dilated by s, the kernel flipped and regrouped)
            dw[k, i, co] = sum_n sum_o xp[n, o*s + k*d, g*C_in/G + i] dy[n, o, co]   (x correlated with dy)
            db[co] = sum over n and o of dy[n, o, co]
        padding_mode 'reflect' / 'replicate' / 'circular' (torch's): xp = P(x) is x padded with the mode and the
        convolution is VALID on xp; then dw is the same sum over xp, and dx = P^T(dxp), dxp the VALID input
        gradient above and P^T the padding's adjoint (each border gradient added back onto the element it
        copied: the mirrored interior for reflect, the edge for replicate, the other side for circular).
        Residuals: x, w and b (xp is recomputed). The module docstring derives the padding of each rule and the
        faster orders.
        """
        st, pads, dil, mode_pads = _settings(name, n, x, w, stride, padding, dilation, padding_mode)
        xc, wc = promote(x, w)
        if mode_pads is not None:
            xc = reference_pad(xc, mode_pads, padding_mode)
        y = conv_nd(xc, wc, st, pads, dil, groups)
        return y if b is None else y + b

    def _conv_fwd(x, w, b=None, *, stride=1, padding="VALID", dilation=1, groups=1, padding_mode="zeros"):
        # the primal by the fast path (tap by tap for depthwise kernels and few input channels), not conv_nd;
        # the mode padding by the hand-written gathers whose adjoint the backward applies, not jnp.pad
        st, pads, dil, mode_pads = _settings(name, n, x, w, stride, padding, dilation, padding_mode)
        xc, wc = promote(x, w)
        if mode_pads is not None:
            xc = pad_with_mode(xc, mode_pads, padding_mode)
        y = conv_fast(xc, wc, st, pads, dil, groups)
        return (y if b is None else y + b), (x, w, b)

    def _conv_bwd(res, dy, *, stride=1, padding="VALID", dilation=1, groups=1, padding_mode="zeros"):
        x, w, b = res
        st, pads, dil, mode_pads = _settings(name, n, x, w, stride, padding, dilation, padding_mode)
        xc, wc = promote(x, w)
        if mode_pads is not None:
            xc = pad_with_mode(xc, mode_pads, padding_mode)                  # xp, the VALID convolution's input
        dy = dy.astype(xc.dtype)
        dx = input_grad(dy, wc, xc.shape[1:1 + n], st, pads, dil, groups)
        if mode_pads is not None:
            dx = pad_with_mode_adjoint(dx, mode_pads, padding_mode)          # dx = P^T(dxp)
        dw = kernel_grad(xc, dy, w.shape[:n], st, pads, dil, groups).astype(w.dtype)
        return dx.astype(x.dtype), dw, bias_grad(dy, b)

    _conv.__name__ = _conv.__qualname__ = f"_{name}"
    return _conv, _conv_fwd, _conv_bwd, _conv_check


# -- example factories ----------------------------------------------------------------------------------------------
# (stride, dilation, groups, padding, bias) for 2-D; input (2, 7, 8, 4), kernel (3, 3, 4/groups, cout)
_CONV2D_CONFIGS = [
    (1, 1, 1, "VALID", True), (1, 1, 1, "SAME", False), (2, 1, 1, "VALID", True), (2, 1, 1, "SAME", True),
    (1, 2, 1, "VALID", True), (1, 2, 1, "SAME", False), (2, 2, 1, "SAME", True), (3, 1, 1, ((1, 2), (0, 1)), True),
    (1, 1, 2, "VALID", True), (2, 1, 2, "SAME", False), (1, 2, 2, 1, True), (2, 2, 2, ((2, 0), (1, 1)), True),
    (1, 1, 4, "SAME", True), (2, 1, 4, "SAME", True), (1, 2, 4, "VALID", False), (2, 2, 4, 2, True),
    ((1, 2), (2, 1), 1, (1, 2), True), ((2, 1), 1, 2, "SAME", True), (1, (1, 2), 4, ((0, 0), (3, 1)), True),
    (2, 1, 1, 1, False), (3, 2, 2, "SAME", True), (1, 1, 1, ((-1, 0), (0, 0)), True),
]


# grey and RGB inputs take the few-channels forward: (stride, dilation, padding, input channels)
_CONV2D_FEW = [(1, 1, "SAME", 1), (2, 2, ((1, 0), (2, 1)), 3)]


def _conv2d_examples(key, dtype):
    exs = []
    for j, (s, d, p, cin) in enumerate(_CONV2D_FEW):
        k = keys(jax.random.fold_in(key, 100 + j), 3)
        x = normal(k[0], (2, 7, 8, cin), dtype)
        w = normal(k[1], (3, 3, cin, 5), dtype, scale=0.5)
        exs.append(Example((x, w, normal(k[2], (5,), dtype)), {"stride": s, "dilation": d, "groups": 1,
                           "padding": p}, f"s={s} d={d} pad={p} C_in={cin}"))
    for j, (s, d, g, p, bias) in enumerate(_CONV2D_CONFIGS):
        k = keys(jax.random.fold_in(key, j), 3)
        cout = 8 if g == 4 and j % 2 else 4 if g != 2 else 6
        kh, kw = (3, 3) if j % 3 else (3, 2)
        x = normal(k[0], (2, 7, 8, 4), dtype)
        w = normal(k[1], (kh, kw, 4 // g, cout), dtype, scale=0.5)
        b = normal(k[2], (cout,), dtype) if bias else None
        exs.append(Example((x, w, b), {"stride": s, "dilation": d, "groups": g, "padding": p},
                           f"s={s} d={d} g={g} pad={p}{'' if bias else ' nobias'}"))
    for j, (s, p, g) in enumerate(_CONV2D_POINTWISE):
        k = keys(jax.random.fold_in(key, 200 + j), 3)
        x = normal(k[0], (2, 7, 8, 4), dtype)
        w = normal(k[1], (1, 1, 4 // g, 6), dtype, scale=0.5)
        exs.append(Example((x, w, normal(k[2], (6,), dtype) if j % 2 else None),
                           {"stride": s, "dilation": 1, "groups": g, "padding": p}, f"1x1 s={s} g={g} pad={p}"))
    k = keys(jax.random.fold_in(key, 300), 3)     # a padding mode (small: the other modes are in conv1d's examples)
    exs.append(_mode_example(k, (1, 5, 6, 4), (3, 2, 2, 4), dtype, (2, 1), 1, 2, ((2, 1), (1, 0)), "reflect"))
    return exs


def _mode_example(k, x_shape, w_shape, dtype, s, d, g, p, mode):
    """One configuration with a padding_mode other than zeros."""
    x, w = normal(k[0], x_shape, dtype), normal(k[1], w_shape, dtype, scale=0.5)
    return Example((x, w, normal(k[2], (w_shape[-1],), dtype)),
                   {"stride": s, "dilation": d, "groups": g, "padding": p, "padding_mode": mode},
                   f"s={s} d={d} g={g} pad={p} {mode}")


# 1x1 kernels: (stride, padding, groups); without groups they take the matrix-product rules
_CONV2D_POINTWISE = [(1, "VALID", 1), (2, "SAME", 1), ((2, 3), "VALID", 1), (2, 1, 1), (1, "VALID", 2)]


_CONV1D_CONFIGS = [
    (1, 1, 1, "VALID"), (1, 1, 1, "SAME"), (1, 1, 1, "CAUSAL"), (1, 2, 1, "CAUSAL"), (1, 4, 2, "CAUSAL"),
    (2, 1, 1, "SAME"), (2, 2, 1, 1), (3, 1, 2, ((2, 1),)), (1, 2, 4, "SAME"), (2, 1, 4, "CAUSAL"),
    (2, 3, 2, "VALID"), (1, 1, 4, 2),
]


def _conv1d_examples(key, dtype):
    exs = []
    for j, (s, d, g, p) in enumerate(_CONV1D_CONFIGS):
        k = keys(jax.random.fold_in(key, j), 3)
        kk = 3 if j % 2 else 2
        x = normal(k[0], (2, 13, 4), dtype)
        w = normal(k[1], (kk, 4 // g, 4), dtype, scale=0.5)
        b = normal(k[2], (4,), dtype) if j % 3 else None
        exs.append(Example((x, w, b), {"stride": s, "dilation": d, "groups": g, "padding": p},
                           f"s={s} d={d} g={g} pad={p}"))
    k = keys(jax.random.fold_in(key, 200), 2)     # a pointwise kernel, strided: the matrix-product rule
    exs.append(Example((normal(k[0], (2, 13, 4), dtype), normal(k[1], (1, 4, 3), dtype, scale=0.5), None),
                       {"stride": 3, "padding": "VALID", "dilation": 1, "groups": 1}, "1x1 s=3"))
    k = keys(jax.random.fold_in(key, 100), 2)     # one input channel (the MNIST-1D CNN's stem): few-channels path
    exs.append(Example((normal(k[0], (2, 13, 1), dtype), normal(k[1], (3, 1, 4), dtype, scale=0.5), None),
                       {"stride": 2, "padding": "CAUSAL", "dilation": 2, "groups": 1}, "s=2 d=2 pad=CAUSAL C_in=1"))
    for j, (s, d, g, p, mode) in enumerate(_CONV1D_MODES):
        k = keys(jax.random.fold_in(key, 300 + j), 3)
        exs.append(_mode_example(k, (2, 6, 4), (3, 4 // g, 4), dtype, s, d, g, p, mode))
    return exs


# padding modes on a (2, 6, 4) input, kernel 3: (stride, dilation, groups, padding, mode); the circular pad 6
# wraps a whole period, the reflect pad 5 is the largest torch allows
_CONV1D_MODES = [(1, 1, 1, "SAME", "reflect"), (2, 2, 2, ((5, 1),), "reflect"), (1, 1, 4, 2, "replicate"),
                 (3, 1, 1, "CAUSAL", "replicate"), (1, 2, 1, ((6, 2),), "circular"), (2, 1, 2, 1, "circular")]


def _conv3d_examples(key, dtype):
    configs = [(1, 1, 1, "VALID"), (2, 1, 2, "SAME"), (1, 2, 1, 1), ((1, 2, 1), 1, 4, ((1, 0), (0, 1), (1, 1))),
               ((2, 1, 2), 1, 1, "VALID")]
    exs = []
    for j, (s, d, g, p) in enumerate(configs):
        k = keys(jax.random.fold_in(key, j), 3)
        x = normal(k[0], (2, 5, 6, 5, 4), dtype)
        w = normal(k[1], (2, 3, 2, 4 // g, 4) if j < 4 else (1, 1, 1, 4, 4), dtype, scale=0.5)
        b = normal(k[2], (4,), dtype)
        exs.append(Example((x, w, b), {"stride": s, "dilation": d, "groups": g, "padding": p},
                           f"s={s} d={d} g={g} pad={p}"))
    k = keys(jax.random.fold_in(key, 300), 3)
    exs.append(_mode_example(k, (1, 3, 4, 3, 2), (2, 2, 3, 1, 2), dtype, (1, 2, 1), 1, 2, "SAME", "circular"))
    return exs


_PAD_FORMS = {False: ("VALID", "SAME", "int", "ints", "pairs"), True: ("VALID", "SAME", "CAUSAL", "int", "ints",
                                                                     "pairs")}


def _conv_space(n):
    """Space of the n-D convolution: groups 1-4 with C_in, C_out multiples of them, kernels 1-4 (1-3 in 3-D),
    stride and dilation per axis or shared, every padding form, bias or none; the input at least as long as
    the dilated kernel span (so any padding is valid); padding_mode zeros half the time, else any mode
    (replicate where the padding is too wide for reflect or circular). Drawn last, so the rest of a draw is
    the same as without it."""
    kmax, dmax = (4, 3) if n < 3 else (3, 2)

    def space(rng, dtype):
        groups = integer(rng, 1, 4)
        cin, cout = groups * integer(rng, 1, 3 if n < 3 else 2), groups * integer(rng, 1, 3 if n < 3 else 2)
        kernel = tuple(integer(rng, 1, kmax) for _ in range(n))
        stride, dilation = per_axis(rng, n, 1, 3), per_axis(rng, n, 1, dmax)
        dil = as_tuple("space", dilation, n, "dilation")
        spatial = tuple((k - 1) * d + 1 + integer(rng, 0, 4) for k, d in zip(kernel, dil, strict=True))
        x = arr(rng, (integer(rng, 1, 3), *spatial, cin), dtype)
        w = arr(rng, (*kernel, cin // groups, cout), dtype, 0.5)
        b = arr(rng, (cout,), dtype) if rng.random() < 0.7 else None
        settings = {"stride": stride, "padding": padding(rng, n, _PAD_FORMS[n == 1]), "dilation": dilation,
                    "groups": groups}
        pads = normalize_padding("space", settings["padding"], n, spatial, kernel,
                                 as_tuple("space", stride, n, "stride"), dil)
        settings["padding_mode"] = draw_padding_mode(rng, pads, spatial)
        return Example((x, w, b), settings)

    return space


def register_family(make, name, n, examples, space=None):
    """Register the n-D member ``name`` of a family whose factory ``make(name, n)`` gives (reference, fwd, bwd,
    check)."""
    reference, fwd, bwd, check = make(name, n)
    return primitive(name, reference, fwd, bwd, examples=examples, space=space, check=check)


conv1d = register_family(_make_conv, "conv1d", 1, _conv1d_examples, _conv_space(1))
conv2d = register_family(_make_conv, "conv2d", 2, _conv2d_examples, _conv_space(2))
conv3d = register_family(_make_conv, "conv3d", 3, _conv3d_examples, _conv_space(3))
