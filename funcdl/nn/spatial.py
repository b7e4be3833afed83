"""Spatial building blocks of CNNs, each a primitive with its backward: spatial dropout, flatten, nearest and
bilinear upsampling, squeeze-and-excitation, channel concatenation. Inputs are channels-last (N, *spatial, C).
Each reference function below states its formula and derives its gradient.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ..core.examples import Example, keys, normal
from ..core.primitive import primitive
from ._dropout import check_rate, drop
from ._space import arr, integer, key, num, per_axis, pick
from ._windows import as_tuple

__all__ = ["spatial_dropout", "flatten", "upsample_nearest", "upsample_bilinear", "squeeze_excitation",
           "concat_channels", "bilinear_matrix"]


# -- spatial dropout -----------------------------------------------------------------------------------------------


def _spatial_dropout_check(x, key=None, *, rate, train=True):
    if x.ndim < 3:
        raise ValueError(f"spatial_dropout: input must be (N, *spatial, C), got shape {x.shape}")
    check_rate("spatial_dropout", rate, key, active=train)


def _spatial_dropout(x, key=None, *, rate, train=True):
    """Spatial dropout (Tompson et al. 2015, torch's Dropout2d): one Bernoulli(1 - rate) draw per example and
    channel, shared by every position: y = x m[n, c] / (1 - rate) in training, y = x otherwise.

    Linear and diagonal in x, so dx = dy m[n, c] / (1 - rate) (0 for rate 1, every channel dropped).
    Residual: the key only (the mask is drawn again in the backward).
    """
    return drop(x, key, rate, _channel_mask_shape(x.shape)) if train else x


def _channel_mask_shape(shape):
    return (shape[0], *([1] * (len(shape) - 2)), shape[-1])


def _spatial_dropout_fwd(x, key=None, *, rate, train=True):
    return _spatial_dropout(x, key, rate=rate, train=train), (key,)


def _spatial_dropout_bwd(res, dy, *, rate, train=True):
    (key,) = res
    return (drop(dy, key, rate, _channel_mask_shape(dy.shape)) if train else dy), None


def _spatial_dropout_examples(key, dtype):
    k = keys(key, 2)
    return [Example((normal(k[0], (3, 4, 5, 6), dtype), jax.random.PRNGKey(3)), {"rate": 0.5}, "2-D rate 0.5"),
            Example((normal(k[1], (4, 7, 5), dtype), jax.random.PRNGKey(4)), {"rate": 0.25}, "1-D rate 0.25")]


def _channels_last(rng, dtype, n_spatial=None):
    n = integer(rng, 1, 3) if n_spatial is None else n_spatial
    return arr(rng, (integer(rng, 1, 3), *(integer(rng, 1, 5) for _ in range(n)), integer(rng, 1, 4)), dtype)


def _spatial_dropout_space(rng, dtype):
    """(N, *spatial, C) with 1-3 spatial axes, rate 0, 1 or in (0, 1), train or not."""
    rate, train = pick(rng, [0.0, 1.0, num(rng, 0.01, 0.99), num(rng, 0.01, 0.99)]), pick(rng, [True, False])
    k = key(rng) if (train and 0 < rate < 1) or rng.random() < 0.5 else None
    return Example((_channels_last(rng, dtype), k), {"rate": rate, "train": train})


spatial_dropout = primitive("spatial_dropout", _spatial_dropout, _spatial_dropout_fwd, _spatial_dropout_bwd,
                            examples=_spatial_dropout_examples, space=_spatial_dropout_space,
                            check=_spatial_dropout_check)


# -- flatten -----------------------------------------------------------------------------------------------------


def _flatten(x):
    """(N, *rest) -> (N, prod(rest)). A reshape: its Jacobian is the identity on the entries, so dx = dy
    reshaped back to x's shape. Residual: x's shape."""
    return x.reshape(x.shape[0], -1)


def _flatten_fwd(x):
    return _flatten(x), (x.shape,)


def _flatten_bwd(res, dy):
    (shape,) = res
    return (dy.reshape(shape),)


def _flatten_check(x):
    if x.ndim < 1:
        raise ValueError(f"flatten: input needs a batch axis, got shape {x.shape}")


def _flatten_examples(key, dtype):
    return [Example((normal(key, (2, 3, 4, 5), dtype),), {}, "NHWC")]


flatten = primitive("flatten", _flatten, _flatten_fwd, _flatten_bwd, check=_flatten_check,
                    examples=_flatten_examples,
                    space=lambda rng, dtype: Example((arr(rng, tuple(integer(rng, 1, 4) for _ in range(
                        integer(rng, 1, 5))), dtype),), {}))


# -- nearest upsampling ----------------------------------------------------------------------------------------------


def _upsample_nearest_check(x, *, scale=2):
    if x.ndim < 3:
        raise ValueError(f"upsample_nearest: input must be (N, *spatial, C), got shape {x.shape}")
    as_tuple("upsample_nearest", scale, x.ndim - 2, "scale", positive=True)


def _upsample_nearest(x, *, scale=2):
    """Nearest upsampling by integer factors s per axis: y[n, i, j, c] = x[n, i // s_h, j // s_w, c].

    Each input feeds an s_h x s_w block of outputs, so dx[n, p, q, c] = the sum of dy over that block (a
    reshape and a sum). Residual: x's shape.
    """
    s = as_tuple("upsample_nearest", scale, x.ndim - 2, "scale", positive=True)
    for axis, f in enumerate(s, start=1):
        x = jnp.repeat(x, f, axis=axis)
    return x


def _upsample_nearest_fwd(x, *, scale=2):
    return _upsample_nearest(x, scale=scale), (x.shape,)


def _upsample_nearest_bwd(res, dy, *, scale=2):
    (shape,) = res
    n = len(shape) - 2
    s = as_tuple("upsample_nearest", scale, n, "scale", positive=True)
    blocks = [shape[0]]
    for length, f in zip(shape[1:-1], s, strict=True):
        blocks += [length, f]
    g = dy.reshape(*blocks, shape[-1])
    return (jnp.sum(g, axis=tuple(2 + 2 * i for i in range(n))),)


def _upsample_nearest_examples(key, dtype):
    return [Example((normal(key, (2, 3, 4, 2), dtype),), {"scale": 2}, "2x"),
            Example((normal(jax.random.fold_in(key, 1), (2, 3, 2, 2), dtype),), {"scale": (3, 2)}, "(3, 2)")]


def _upsample_nearest_space(rng, dtype):
    """1-3 spatial axes, scale 1-3 shared or per axis."""
    x = _channels_last(rng, dtype)
    return Example((x,), {"scale": per_axis(rng, x.ndim - 2, 1, 3)})


upsample_nearest = primitive("upsample_nearest", _upsample_nearest, _upsample_nearest_fwd, _upsample_nearest_bwd,
                             check=_upsample_nearest_check, examples=_upsample_nearest_examples,
                             space=_upsample_nearest_space)


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


def _upsample_bilinear_check(x, *, size, align_corners=False):
    if x.ndim != 4:
        raise ValueError(f"upsample_bilinear: input must be (N, H, W, C), got shape {x.shape}")
    as_tuple("upsample_bilinear", size, x.ndim - 2, "size", positive=True)


def _upsample_bilinear(x, *, size, align_corners=False):
    """Bilinear upsampling (torch's ``interpolate(mode="bilinear")``), x (N, H, W, C) -> (N, P_h, P_w, C).

    Per axis, output o reads the source coordinate u = (o + 1/2) L/P - 1/2 (clamped at 0; ``align_corners``:
    u = o (L-1)/(P-1)) and mixes x[floor u] and x[floor u + 1] with weights 1 - frac, frac. Per axis that is a
    fixed P x L matrix A with two entries per row, so y = A_h x A_w^T (per example and channel) and, the map
    being linear, dx = A_h^T dy A_w. Written here as the gather of the two neighbours; the hand path uses the
    matrices. Residual: x's shape.
    """
    out = as_tuple("upsample_bilinear", size, x.ndim - 2, "size", positive=True)
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


def _upsample_bilinear_fwd(x, *, size, align_corners=False):
    # the primal as the product with the interpolation matrices the backward transposes
    out = as_tuple("upsample_bilinear", size, x.ndim - 2, "size", positive=True)
    ah = bilinear_matrix(x.shape[1], out[0], align_corners, x.dtype)
    aw = bilinear_matrix(x.shape[2], out[1], align_corners, x.dtype)
    return jnp.einsum("ph,qw,nhwc->npqc", ah, aw, x), (x.shape,)


def _upsample_bilinear_bwd(res, dy, *, size, align_corners=False):
    (shape,) = res
    out = dy.shape[1:3]
    ah = bilinear_matrix(shape[1], out[0], align_corners, dy.dtype)
    aw = bilinear_matrix(shape[2], out[1], align_corners, dy.dtype)
    return (jnp.einsum("ph,qw,npqc->nhwc", ah, aw, dy),)


def _upsample_bilinear_examples(key, dtype):
    return [
        Example((normal(key, (2, 3, 4, 2), dtype),), {"size": (6, 8)}, "2x"),
        Example((normal(jax.random.fold_in(key, 1), (2, 3, 5, 2), dtype),), {"size": (7, 9), "align_corners": True},
                "align_corners"),
        Example((normal(jax.random.fold_in(key, 2), (1, 4, 3, 2), dtype),), {"size": (5, 7)}, "non-integer"),
    ]


def _upsample_bilinear_space(rng, dtype):
    """Input sides 1-5, output sizes 1-9 (up, down, non-integer factors, single rows), align_corners or not."""
    return Example((_channels_last(rng, dtype, 2),), {"size": per_axis(rng, 2, 1, 9),
                                                       "align_corners": pick(rng, [False, True])})


upsample_bilinear = primitive("upsample_bilinear", _upsample_bilinear, _upsample_bilinear_fwd,
                              _upsample_bilinear_bwd, check=_upsample_bilinear_check, space=_upsample_bilinear_space,
                              examples=_upsample_bilinear_examples)


# -- squeeze and excitation ------------------------------------------------------------------------------------------


def _squeeze_excitation_check(x, w1, b1, w2, b2):
    if x.ndim < 3:
        raise ValueError(f"squeeze_excitation: input must be (N, *spatial, C), got shape {x.shape}")
    c = x.shape[-1]
    if w1.ndim != 2 or w1.shape[0] != c or w2.shape != (w1.shape[1], c) or b1.shape != (w1.shape[1],) \
            or b2.shape != (c,):
        raise ValueError(f"squeeze_excitation: for input {x.shape} the weights must be w1 ({c}, r), b1 (r,), "
                         f"w2 (r, {c}), b2 ({c},); got {w1.shape}, {b1.shape}, {w2.shape}, {b2.shape}")


def _squeeze_excitation_parts(x, w1, b1, w2, b2):
    """The squeeze s (N, C), the pre-activation z (N, r) and the excitation e (N, C)."""
    s = jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))
    z = s @ w1 + b1
    e = jax.nn.sigmoid(jnp.maximum(z, 0) @ w2 + b2)
    return s, z, e


def _excite(x, e):
    return x * e.reshape(x.shape[0], *([1] * (x.ndim - 2)), x.shape[-1])


def _squeeze_excitation(x, w1, b1, w2, b2):
    """Squeeze-and-excitation (Hu et al. 2018), x (N, *spatial, C), w1 (C, r), b1 (r,), w2 (r, C), b2 (C,):

        s = mean over positions of x (N, C);  z = s W1 + b1;  a = relu(z);  e = sigmoid(a W2 + b2);  y = x * e
    Backward, through the same chain (M positions; the mean spreads ds evenly):
        de = sum over positions of dy * x;   dp = de * e (1 - e);   dW2 = a^T dp,  db2 = sum_n dp
        dz = (dp W2^T) * [z > 0];            dW1 = s^T dz,  db1 = sum_n dz;   ds = dz W1^T
        dx = dy * e + ds / M
    Residuals: x, s, z, e and the two weights (all but x are (N, C)-sized).
    """
    return _excite(x, _squeeze_excitation_parts(x, w1, b1, w2, b2)[2])


def _squeeze_excitation_fwd(x, w1, b1, w2, b2):
    # the intermediates s, z, e are the residuals, so the parts are computed here rather than via the reference
    s, z, e = _squeeze_excitation_parts(x, w1, b1, w2, b2)
    return _excite(x, e), (x, s, z, e, w1, w2)


def _squeeze_excitation_bwd(res, dy):
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


def _squeeze_excitation_examples(key, dtype):
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


squeeze_excitation = primitive("squeeze_excitation", _squeeze_excitation, _squeeze_excitation_fwd,
                               _squeeze_excitation_bwd, examples=_squeeze_excitation_examples,
                               check=_squeeze_excitation_check)


# -- channel concatenation ------------------------------------------------------------------------------------------


def _concat_channels_check(a, b):
    if a.shape[:-1] != b.shape[:-1]:
        raise ValueError(f"concat_channels: inputs {a.shape} and {b.shape} must agree on every axis but the last")


def _concat_channels(a, b):
    """y = [a, b] on the last (channel) axis: a (..., C_a), b (..., C_b) -> (..., C_a + C_b).

    Each output entry is a copy of one input entry, so da = dy[..., :C_a] and db = dy[..., C_a:], the two
    slices of dy. Residual: C_a.
    """
    return jnp.concatenate([a, b], axis=-1)


def _concat_channels_fwd(a, b):
    return _concat_channels(a, b), (a.shape[-1],)


def _concat_channels_bwd(res, dy):
    (ca,) = res
    return dy[..., :ca], dy[..., ca:]


def _concat_channels_examples(key, dtype):
    return [Example((normal(key, (2, 3, 3, 4), dtype), normal(jax.random.fold_in(key, 1), (2, 3, 3, 2), dtype)),
                    {}, "4 + 2")]


concat_channels = primitive("concat_channels", _concat_channels, _concat_channels_fwd, _concat_channels_bwd,
                            check=_concat_channels_check, examples=_concat_channels_examples)
