"""Spatial building blocks of CNNs, each a primitive with its backward: spatial dropout, flatten, nearest and
bilinear upsampling, squeeze-and-excitation, channel concatenation. Inputs are channels-last (N, *spatial, C).

spatial_dropout (Tompson et al. 2015, torch's Dropout2d): one Bernoulli(1 - rate) draw per example and channel,
shared by every position: y = x m[n, c] / (1 - rate); dx = dy m / (1 - rate). Residual: the key only (the mask
is drawn again in the backward).

flatten: (N, *rest) -> (N, prod(rest)); dx = dy reshaped back (the Jacobian is a permutation-free identity).

upsample_nearest with integer factors s: y[n, i, j, c] = x[n, i // s_h, j // s_w, c]; each input feeds an
s_h x s_w block, so dx[n, p, q, c] = the sum of dy over that block (a reshape and a sum).

upsample_bilinear (torch's ``interpolate(mode="bilinear")``): per axis, output o reads the source coordinate
u = (o + 1/2) L/P - 1/2 (clamped at 0; ``align_corners=True``: u = o (L-1)/(P-1)) and mixes x[floor u] and
x[floor u + 1] with weights 1 - frac, frac. Per axis that is a fixed P x L matrix A with two entries per row,
so y = A_h x A_w^T (per example and channel) and dx = A_h^T dy A_w.

squeeze_excitation (Hu et al. 2018): s = mean over positions of x (N, C); z = s W1 + b1; a = relu(z);
e = sigmoid(a W2 + b2) (N, C); y = x * e (broadcast over positions). Backward, through the same chain:
    de = sum over positions of dy * x;   dp = de * e (1 - e);   dW2 = a^T dp, db2 = sum_n dp
    dz = (dp W2^T) * [z > 0];            dW1 = s^T dz, db1 = sum_n dz;   ds = dz W1^T
    dx = dy * e + ds / M                 (M positions; the mean spreads ds evenly)
Residuals: x, s, z, e and the two weights (all but x are (N, C)-sized).

concat_channels(a, b): y = [a, b] on the last axis; da, db are the two slices of dy.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ..core.examples import Example, keys, normal
from ..core.primitive import primitive

__all__ = ["spatial_dropout", "flatten", "upsample_nearest", "upsample_bilinear", "squeeze_excitation",
           "concat_channels", "bilinear_matrix"]


# -- spatial dropout -----------------------------------------------------------------------------------------------


def _sd_check(x, key=None, *, rate, train=True):
    if x.ndim < 3:
        raise ValueError(f"spatial_dropout: input must be (N, *spatial, C), got shape {x.shape}")
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"spatial_dropout: rate (probability of dropping a channel) must lie in [0, 1), got {rate}")
    if train and rate > 0 and key is None:
        raise ValueError("spatial_dropout: training with rate > 0 needs a PRNG key")


def _sd_mask(key, shape, rate, dtype):
    keep = jax.random.bernoulli(key, 1.0 - rate, (shape[0], *([1] * (len(shape) - 2)), shape[-1]))
    return keep.astype(dtype) / (1.0 - rate)


def _spatial_dropout(x, key=None, *, rate, train=True):
    if not (train and rate > 0):
        return x
    return x * _sd_mask(key, x.shape, rate, x.dtype)


def _sd_fwd(x, key=None, *, rate, train=True):
    return _spatial_dropout(x, key, rate=rate, train=train), (key, x.shape)


def _sd_bwd(res, dy, *, rate, train=True):
    key, shape = res
    if not (train and rate > 0):
        return dy, None
    return dy * _sd_mask(key, shape, rate, dy.dtype), None


def _sd_examples(key, dtype):
    k = keys(key, 2)
    return [Example((normal(k[0], (3, 4, 5, 6), dtype), jax.random.PRNGKey(3)), {"rate": 0.5}, "2-D rate 0.5"),
            Example((normal(k[1], (4, 7, 5), dtype), jax.random.PRNGKey(4)), {"rate": 0.25}, "1-D rate 0.25")]


_spatial_dropout.__doc__ = __doc__
spatial_dropout = primitive("spatial_dropout", _spatial_dropout, _sd_fwd, _sd_bwd, examples=_sd_examples,
                            check=_sd_check)


# -- flatten -----------------------------------------------------------------------------------------------------


def _flatten(x):
    return x.reshape(x.shape[0], -1)


def _flatten_fwd(x):
    return _flatten(x), (x.shape,)


def _flatten_bwd(res, dy):
    return (dy.reshape(res[0]),)


def _flatten_check(x):
    if x.ndim < 1:
        raise ValueError(f"flatten: input needs a batch axis, got shape {x.shape}")


_flatten.__doc__ = __doc__
flatten = primitive("flatten", _flatten, _flatten_fwd, _flatten_bwd, check=_flatten_check,
                    examples=lambda key, dtype: [Example((normal(key, (2, 3, 4, 5), dtype),), {}, "NHWC")])


# -- nearest upsampling ----------------------------------------------------------------------------------------------


def _factors(name, scale, n):
    s = (scale,) * n if isinstance(scale, int) else tuple(scale)
    if len(s) != n or not all(isinstance(v, int) and v >= 1 for v in s):
        raise ValueError(f"{name}: scale must be a positive int or {n} positive ints, got {scale!r}")
    return s


def _un_check(x, *, scale=2):
    if x.ndim < 3:
        raise ValueError(f"upsample_nearest: input must be (N, *spatial, C), got shape {x.shape}")
    _factors("upsample_nearest", scale, x.ndim - 2)


def _upsample_nearest(x, *, scale=2):
    s = _factors("upsample_nearest", scale, x.ndim - 2)
    for axis, f in enumerate(s, start=1):
        x = jnp.repeat(x, f, axis=axis)
    return x


def _un_fwd(x, *, scale=2):
    return _upsample_nearest(x, scale=scale), (x.shape,)


def _un_bwd(res, dy, *, scale=2):
    (shape,) = res
    n = len(shape) - 2
    s = _factors("upsample_nearest", scale, n)
    blocks = [shape[0]]
    for length, f in zip(shape[1:-1], s, strict=True):
        blocks += [length, f]
    g = dy.reshape(*blocks, shape[-1])
    return (jnp.sum(g, axis=tuple(2 + 2 * i for i in range(n))),)


_upsample_nearest.__doc__ = __doc__
upsample_nearest = primitive(
    "upsample_nearest", _upsample_nearest, _un_fwd, _un_bwd, check=_un_check,
    examples=lambda key, dtype: [Example((normal(key, (2, 3, 4, 2), dtype),), {"scale": 2}, "2x"),
                                 Example((normal(jax.random.fold_in(key, 1), (2, 3, 2, 2), dtype),),
                                         {"scale": (3, 2)}, "(3, 2)")])


# -- bilinear upsampling ---------------------------------------------------------------------------------------------


def bilinear_matrix(length, out, align_corners=False, dtype=jnp.float32):
    """The P x L interpolation matrix of one axis (torch's coordinate convention)."""
    a = np.zeros((out, length))
    for o in range(out):
        if align_corners:
            u = o * (length - 1) / (out - 1) if out > 1 else 0.0
        else:
            u = max((o + 0.5) * length / out - 0.5, 0.0)
        lo = min(int(np.floor(u)), length - 1)
        hi = min(lo + 1, length - 1)
        frac = u - lo
        a[o, lo] += 1.0 - frac
        a[o, hi] += frac
    return jnp.asarray(a, dtype)


def _ub_size(name, x, size):
    n = x.ndim - 2
    s = (size,) * n if isinstance(size, int) else tuple(size)
    if len(s) != n or not all(isinstance(v, int) and v >= 1 for v in s):
        raise ValueError(f"{name}: size must be a positive int or {n} positive ints, got {size!r}")
    return s


def _ub_check(x, *, size, align_corners=False):
    if x.ndim != 4:
        raise ValueError(f"upsample_bilinear: input must be (N, H, W, C), got shape {x.shape}")
    _ub_size("upsample_bilinear", x, size)


def _upsample_bilinear(x, *, size, align_corners=False):
    """Reference: gather the two neighbours per axis and mix them (no matrices)."""
    out = _ub_size("upsample_bilinear", x, size)
    for axis, (length, p) in enumerate(zip(x.shape[1:3], out, strict=True), start=1):
        o = np.arange(p, dtype=np.float64)                     # static coordinates: shapes are static
        if align_corners:
            u = o * ((length - 1) / (p - 1)) if p > 1 else np.zeros_like(o)
        else:
            u = np.maximum((o + 0.5) * (length / p) - 0.5, 0.0)
        lo = np.minimum(np.floor(u).astype(np.int64), length - 1)
        hi = np.minimum(lo + 1, length - 1)
        frac = jnp.asarray((u - lo).reshape([-1 if i == axis else 1 for i in range(4)]), x.dtype)
        x = jnp.take(x, lo, axis=axis) * (1 - frac) + jnp.take(x, hi, axis=axis) * frac
    return x


def _ub_fwd(x, *, size, align_corners=False):
    out = _ub_size("upsample_bilinear", x, size)
    ah = bilinear_matrix(x.shape[1], out[0], align_corners, x.dtype)
    aw = bilinear_matrix(x.shape[2], out[1], align_corners, x.dtype)
    return jnp.einsum("ph,qw,nhwc->npqc", ah, aw, x), (x.shape,)


def _ub_bwd(res, dy, *, size, align_corners=False):
    (shape,) = res
    out = dy.shape[1:3]
    ah = bilinear_matrix(shape[1], out[0], align_corners, dy.dtype)
    aw = bilinear_matrix(shape[2], out[1], align_corners, dy.dtype)
    return (jnp.einsum("ph,qw,npqc->nhwc", ah, aw, dy),)


_upsample_bilinear.__doc__ = __doc__
upsample_bilinear = primitive(
    "upsample_bilinear", _upsample_bilinear, _ub_fwd, _ub_bwd, check=_ub_check,
    examples=lambda key, dtype: [
        Example((normal(key, (2, 3, 4, 2), dtype),), {"size": (6, 8)}, "2x"),
        Example((normal(jax.random.fold_in(key, 1), (2, 3, 5, 2), dtype),), {"size": (7, 9), "align_corners": True},
                "align_corners"),
        Example((normal(jax.random.fold_in(key, 2), (1, 4, 3, 2), dtype),), {"size": (5, 7)}, "non-integer"),
    ])


# -- squeeze and excitation ------------------------------------------------------------------------------------------


def _se_check(x, w1, b1, w2, b2):
    if x.ndim < 3:
        raise ValueError(f"squeeze_excitation: input must be (N, *spatial, C), got shape {x.shape}")
    c = x.shape[-1]
    if w1.ndim != 2 or w1.shape[0] != c or w2.shape != (w1.shape[1], c) or b1.shape != (w1.shape[1],) \
            or b2.shape != (c,):
        raise ValueError(f"squeeze_excitation: for input {x.shape} the weights must be w1 ({c}, r), b1 (r,), "
                         f"w2 (r, {c}), b2 ({c},); got {w1.shape}, {b1.shape}, {w2.shape}, {b2.shape}")


def _se_parts(x, w1, b1, w2, b2):
    s = jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))
    z = s @ w1 + b1
    e = jax.nn.sigmoid(jnp.maximum(z, 0) @ w2 + b2)
    return s, z, e


def _squeeze_excitation(x, w1, b1, w2, b2):
    s = jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))
    e = jax.nn.sigmoid(jax.nn.relu(s @ w1 + b1) @ w2 + b2)
    return x * e.reshape(x.shape[0], *([1] * (x.ndim - 2)), x.shape[-1])


def _se_fwd(x, w1, b1, w2, b2):
    s, z, e = _se_parts(x, w1, b1, w2, b2)
    bshape = (x.shape[0], *([1] * (x.ndim - 2)), x.shape[-1])
    return x * e.reshape(bshape), (x, s, z, e, w1, w2)


def _se_bwd(res, dy):
    x, s, z, e, w1, w2 = res
    axes = tuple(range(1, x.ndim - 1))
    m = math.prod(x.shape[1:-1])
    bshape = (x.shape[0], *([1] * (x.ndim - 2)), x.shape[-1])
    de = jnp.sum(dy * x, axis=axes)
    dp = de * e * (1 - e)
    a = jnp.maximum(z, 0)
    dw2, db2 = a.T @ dp, jnp.sum(dp, axis=0)
    dz = (dp @ w2.T) * (z > 0)
    dw1, db1 = s.T @ dz, jnp.sum(dz, axis=0)
    ds = dz @ w1.T
    dx = dy * e.reshape(bshape) + (ds / m).reshape(bshape)
    return dx, dw1, db1, dw2, db2


def _se_examples(key, dtype):
    k = keys(key, 10)
    out = []
    for j, shape in enumerate([(3, 4, 5, 6), (2, 7, 4)]):
        c = shape[-1]
        x = normal(k[5 * j], shape, dtype, 1.0, 0.5)
        # small w1 and biases of +-1.5 keep z = s W1 + b1 well away from the relu kink at 0
        w1 = normal(k[5 * j + 1], (c, 3), dtype, 0.15)
        b1 = jnp.asarray([1.5, -1.5, 1.5], dtype) + normal(k[5 * j + 2], (3,), dtype, 0.1)
        out.append(Example((x, w1, b1, normal(k[5 * j + 3], (3, c), dtype), normal(k[5 * j + 4], (c,), dtype)),
                           {}, f"{len(shape) - 2}-D"))
    return out


_squeeze_excitation.__doc__ = __doc__
squeeze_excitation = primitive("squeeze_excitation", _squeeze_excitation, _se_fwd, _se_bwd, examples=_se_examples,
                               check=_se_check)


# -- channel concatenation ------------------------------------------------------------------------------------------


def _cc_check(a, b):
    if a.shape[:-1] != b.shape[:-1]:
        raise ValueError(f"concat_channels: inputs {a.shape} and {b.shape} must agree on every axis but the last")


def _concat_channels(a, b):
    return jnp.concatenate([a, b], axis=-1)


def _cc_fwd(a, b):
    return _concat_channels(a, b), (a.shape[-1],)


def _cc_bwd(res, dy):
    (ca,) = res
    return dy[..., :ca], dy[..., ca:]


_concat_channels.__doc__ = __doc__
concat_channels = primitive(
    "concat_channels", _concat_channels, _cc_fwd, _cc_bwd, check=_cc_check,
    examples=lambda key, dtype: [Example((normal(key, (2, 3, 3, 4), dtype),
                                          normal(jax.random.fold_in(key, 1), (2, 3, 3, 2), dtype)), {}, "4 + 2")])
