"""StyleGAN pieces: the modulated (and demodulated) convolution of StyleGAN2 (Karras et al. 2020) and the
minibatch standard deviation channel of the progressive GAN / StyleGAN discriminators (Karras et al. 2018).

Layouts as everywhere in funcdl: images NHWC, kernels HWIO, one style vector per example ``(N, C_in)``.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from ..core.examples import Example, keys, normal, uniform
from ..core.primitive import primitive
from ._space import arr, integer, num, padding, pick, unif
from ._windows import normalize_padding
from .conv import conv_nd, input_grad, kernel_grad

__all__ = ["modulated_conv2d", "minibatch_stddev"]

_ONE = (1, 1)


# ============================================================================================ modulated conv
def _pads(x, w, padding):
    return normalize_padding("modulated_conv2d", padding, 2, x.shape[1:3], w.shape[:2], _ONE, _ONE)


def _modulated_conv2d_check(x, w, style, *, demodulate=True, padding="SAME", eps=1e-8):
    name = "modulated_conv2d"
    if jnp.ndim(x) != 4 or jnp.ndim(w) != 4:
        raise ValueError(f"{name}: x must be (N, H, W, C_in) and w (KH, KW, C_in, C_out), got shapes "
                         f"{jnp.shape(x)} and {jnp.shape(w)}")
    n, _, _, cin = x.shape
    if w.shape[2] != cin:
        raise ValueError(f"{name}: kernel {w.shape} reads {w.shape[2]} input channels but x {x.shape} has {cin}")
    if tuple(jnp.shape(style)) != (n, cin):
        raise ValueError(f"{name}: style shape {tuple(jnp.shape(style))} must be (N, C_in) = {(n, cin)}, one "
                         "scale per example and input channel")
    if not eps > 0:
        raise ValueError(f"{name}: eps must be > 0, got {eps}")
    pads = _pads(x, w, padding)
    for length, k, (lo, hi) in zip(x.shape[1:3], w.shape[:2], pads, strict=True):
        if k > length + lo + hi:
            raise ValueError(f"{name}: kernel {w.shape[:2]} is larger than the padded input {x.shape[1:3]} padded "
                             f"by {pads}; use a smaller kernel or more padding")


def _demodulation(w, style, eps):
    """d[n, o] = (sum_i s[n, i]^2 W2[i, o] + eps)^(-1/2) with W2[i, o] = sum_{kh, kw} w[kh, kw, i, o]^2."""
    w2 = jnp.sum(w * w, axis=(0, 1))
    return lax.rsqrt((style * style) @ w2 + eps), w2


def _modulated_conv2d(x, w, style, *, demodulate=True, padding="SAME", eps=1e-8):
    """StyleGAN2's modulated convolution: example n is convolved (stride 1, ``padding``) with its own kernel
        w'[n, kh, kw, i, o] = s[n, i] w[kh, kw, i, o]                          (modulation)
        w''[n, kh, kw, i, o] = w'[n, kh, kw, i, o] d[n, o],   d[n, o] = (sum_{kh, kw, i} w'^2 + eps)^(-1/2)
    (demodulation, which restores unit output variance; without it w'' = w'). Here as one grouped
    convolution: the N examples side by side as N groups. x (N, H, W, C_in), w (KH, KW, C_in, C_out),
    style s (N, C_in) -> y (N, H', W', C_out).
    Each kernel scales input channels and output channels only, so y[n] = conv(x[n] * s[n], w) * d[n]: with
    c = conv(x s, w) (the ordinary convolution of ``conv2d``, whose input and kernel gradients are reused) and
    W2[i, o] = sum_{kh, kw} w^2, q[n, o] = sum_i s[n, i]^2 W2[i, o], d = (q + eps)^(-1/2):
        dc = dy d,   dd[n, o] = sum_{h, w} dy c,   dq = -dd d^3 / 2
        dx = conv2d's input gradient of dc, times s:     dx[n, ..., i] = (conv_input_grad(dc, w))[n, ..., i] s[n, i]
        dw = conv2d's kernel gradient of (x s, dc)  +  2 w[kh, kw, i, o] sum_n s[n, i]^2 dq[n, o]
        dstyle[n, i] = sum_{h, w} conv_input_grad(dc, w)[n, h, w, i] x[n, h, w, i]  +  2 s[n, i] sum_o dq[n, o] W2[i, o]
    (without demodulation: d = 1 and the dq terms vanish). Residuals: x, w, s and c (d is recomputed).
    """
    n, h, wd, cin = x.shape
    kh, kw, _, cout = w.shape
    wm = style[:, None, None, :, None] * w[None]                                  # (N, KH, KW, C_in, C_out)
    if demodulate:
        wm = wm * lax.rsqrt(jnp.sum(wm * wm, axis=(1, 2, 3)) + eps)[:, None, None, None, :]
    xg = jnp.transpose(x, (1, 2, 0, 3)).reshape(1, h, wd, n * cin)
    wg = jnp.transpose(wm, (1, 2, 3, 0, 4)).reshape(kh, kw, cin, n * cout)
    y = conv_nd(xg, wg, _ONE, _pads(x, w, padding), _ONE, n)                     # (1, H', W', N * C_out)
    return jnp.transpose(y.reshape(*y.shape[1:3], n, cout), (2, 0, 1, 3))


def _modulated_conv2d_fwd(x, w, style, *, demodulate=True, padding="SAME", eps=1e-8):
    # the factored form conv(x s, w) d: one ordinary convolution instead of N groups, and c kept for dd
    c = conv_nd(x * style[:, None, None, :], w, _ONE, _pads(x, w, padding), _ONE, 1)
    y = c * _demodulation(w, style, eps)[0][:, None, None, :] if demodulate else c
    return y, (x, w, style, c if demodulate else None)


def _modulated_conv2d_bwd(res, dy, *, demodulate=True, padding="SAME", eps=1e-8):
    x, w, style, c = res
    pads = _pads(x, w, padding)
    dc = dy
    if demodulate:
        d, w2 = _demodulation(w, style, eps)
        dc = dy * d[:, None, None, :]
        dq = -0.5 * jnp.sum(dy * c, axis=(1, 2)) * d ** 3                        # (N, C_out)
    dxs = input_grad(dc, w, x.shape[1:3], _ONE, pads, _ONE, 1)                   # d(x s)
    dw = kernel_grad(x * style[:, None, None, :], dc, w.shape[:2], _ONE, pads, _ONE, 1)
    dstyle = jnp.sum(dxs * x, axis=(1, 2))
    if demodulate:
        dw = dw + 2 * w * ((style * style).T @ dq)
        dstyle = dstyle + 2 * style * (dq @ w2.T)
    return (dxs * style[:, None, None, :]).astype(x.dtype), dw.astype(w.dtype), dstyle.astype(style.dtype)


def _modulated_conv2d_examples(key, dtype):
    k = keys(key, 10)
    x, w = normal(k[0], (2, 5, 6, 3), dtype), normal(k[1], (3, 3, 3, 4), dtype, 0.5)
    s = uniform(k[2], (2, 3), dtype, 0.5, 1.5)
    return [
        Example((x, w, s), {}, "3x3 SAME demodulated"),
        Example((x, w, normal(k[3], (2, 3), dtype)), {"demodulate": False}, "no demodulation, signed styles"),
        Example((normal(k[4], (3, 4, 4, 2), dtype), normal(k[5], (2, 1, 2, 5), dtype, 0.5),
                 uniform(k[6], (3, 2), dtype, 0.5, 1.5)), {"padding": "VALID", "eps": 1e-4}, "2x1 VALID"),
        Example((normal(k[7], (2, 4, 4, 4), dtype), normal(k[8], (1, 1, 4, 3), dtype, 0.5),
                 uniform(k[9], (2, 4), dtype, 0.5, 1.5)),
                {"padding": 1}, "1x1 pad 1"),
    ]


def _modulated_conv2d_space(rng, dtype):
    """Batches 1-3, 1-4 channels in and out, kernels 1-3 per axis, every padding form, styles around 1 (as a
    mapping network's affine layer initialised at bias 1 gives) or signed, demodulation either way. Demodulated
    draws have at least 2 input channels: with one, the demodulation divides the style out exactly (up to eps),
    so its gradient is zero up to rounding and a relative error of it measures nothing."""
    demodulate = pick(rng, [True, False])
    cin, cout = integer(rng, 2 if demodulate else 1, 4), integer(rng, 1, 4)
    kernel = (integer(rng, 1, 3), integer(rng, 1, 3))
    n = integer(rng, 1, 3)
    x = arr(rng, (n, kernel[0] + integer(rng, 0, 3), kernel[1] + integer(rng, 0, 3), cin), dtype)
    style = unif(rng, (n, cin), dtype, 0.5, 1.5) if rng.random() < 0.7 else arr(rng, (n, cin), dtype)
    settings = {"demodulate": demodulate, "padding": padding(rng, 2),
                "eps": pick(rng, [1e-8, num(rng, 1e-4, 0.1, 4)])}
    return Example((x, arr(rng, (*kernel, cin, cout), dtype, 0.5), style), settings)


modulated_conv2d = primitive("modulated_conv2d", _modulated_conv2d, _modulated_conv2d_fwd, _modulated_conv2d_bwd,
                             examples=_modulated_conv2d_examples, space=_modulated_conv2d_space,
                             check=_modulated_conv2d_check)


# ========================================================================================= minibatch stddev
_STD_EPS = 1e-8        # StyleGAN's constant under the square root


def _minibatch_stddev_check(x, *, group_size=4):
    name = "minibatch_stddev"
    if jnp.ndim(x) != 4:
        raise ValueError(f"{name}: x must be (N, H, W, C), got shape {jnp.shape(x)}")
    if not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"{name}: group_size must be an int >= 1, got {group_size!r}")
    n = x.shape[0]
    g = min(group_size, n)
    if n % g:
        raise ValueError(f"{name}: batch size {n} is not divisible by the group size {g}; use a batch that is a "
                         f"multiple of {g} or a group_size that divides {n}")


def _groups(x, group_size):
    """x (N, H, W, C) as (G, M, H, W, C): example n = g M + m is member g of group m (StyleGAN's order)."""
    g = min(group_size, x.shape[0])
    return x.reshape(g, x.shape[0] // g, *x.shape[1:])


def _minibatch_stddev(x, *, group_size=4):
    """StyleGAN's minibatch standard deviation: the N examples form M = N/G groups of G = min(group_size, N)
    (example n = g M + m is in group m), and every example gets one extra channel holding its group's
        sigma_m = 1/(H W C) sum_{h, w, c} sqrt(var_m[h, w, c] + 1e-8),
        var_m = 1/G sum_g (x_{g,m} - mu_m)^2,   mu_m = 1/G sum_g x_{g,m}      (the biased variance)
    at every pixel: y = concat(x, sigma_{m(n)}) (N, H, W, C + 1). With dy_s[n] = dy[n, ..., C] (the extra
    channel), dsigma_m = sum of dy_s over the group's examples and pixels, and s = sqrt(var + 1e-8):
        dx_{g,m} = dy[..., :C] + dsigma_m / (H W C) * (x_{g,m} - mu_m) / (G s_m)
    (d var / d x_g = 2 (x_g - mu) / G; the mean's own derivative drops out, as sum_g (x_g - mu) = 0).
    Residuals: x (mu and s are recomputed).
    """
    y = _groups(x, group_size)
    mu = jnp.mean(y, axis=0)
    sigma = jnp.mean(jnp.sqrt(jnp.mean((y - mu) ** 2, axis=0) + _STD_EPS), axis=(1, 2, 3))        # (M,)
    feat = jnp.broadcast_to(sigma[None, :, None, None, None], (*y.shape[:4], 1)).reshape(*x.shape[:3], 1)
    return jnp.concatenate([x, feat.astype(x.dtype)], axis=-1)


def _minibatch_stddev_fwd(x, *, group_size=4):
    return _minibatch_stddev(x, group_size=group_size), (x,)


def _minibatch_stddev_bwd(res, dy, *, group_size=4):
    (x,) = res
    y = _groups(x, group_size)
    g, _, h, w, c = y.shape
    centred = y - jnp.mean(y, axis=0)
    s = jnp.sqrt(jnp.mean(centred ** 2, axis=0) + _STD_EPS)                                      # (M, H, W, C)
    dsigma = jnp.sum(_groups(dy[..., c:], group_size), axis=(0, 2, 3, 4))                        # (M,)
    dstat = (dsigma / (h * w * c))[None, :, None, None, None] * centred / (g * s)
    return ((dy[..., :c] + dstat.reshape(x.shape)).astype(x.dtype),)


def _minibatch_stddev_examples(key, dtype):
    k = keys(key, 3)
    return [
        Example((normal(k[0], (8, 3, 3, 2), dtype),), {}, "N=8, groups of 4"),
        Example((normal(k[1], (3, 2, 4, 3), dtype),), {"group_size": 4}, "N=3 < group_size: one group"),
        Example((normal(k[2], (6, 2, 2, 1), dtype),), {"group_size": 2}, "N=6, groups of 2"),
    ]


def _minibatch_stddev_space(rng, dtype):
    group_size = integer(rng, 1, 4)
    n = group_size * integer(rng, 1, 3) if rng.random() < 0.8 else integer(rng, 1, group_size)
    shape = (n, integer(rng, 1, 3), integer(rng, 1, 3), integer(rng, 1, 3))
    return Example((arr(rng, shape, dtype, num(rng, 0.5, 2.0)),), {"group_size": group_size})


minibatch_stddev = primitive("minibatch_stddev", _minibatch_stddev, _minibatch_stddev_fwd, _minibatch_stddev_bwd,
                             examples=_minibatch_stddev_examples, space=_minibatch_stddev_space,
                             check=_minibatch_stddev_check)
