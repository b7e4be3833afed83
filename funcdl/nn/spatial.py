"""Spatial building blocks of CNNs, each a primitive with its backward: spatial dropout, flatten,
squeeze-and-excitation, channel concatenation (nearest and bilinear upsampling live in ``upsample``, re-exported
here). Inputs are channels-last (N, *spatial, C). Each reference function below states its formula and derives
its gradient.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ..core.examples import Example, keys, normal
from ..core.primitive import primitive
from ._dropout import check_rate, drop
from ._space import arr, integer, key, num, pick
from .upsample import bilinear_matrix, upsample_bilinear, upsample_nearest

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


def _squeeze_excitation_space(rng, dtype):
    """Batch 1-2, 1-2 spatial axes of 1-4, channels 1-5, bottleneck r 1-3 (no settings: the shapes are the space)."""
    c, r = integer(rng, 1, 5), integer(rng, 1, 3)
    x = arr(rng, (integer(rng, 1, 2), *(integer(rng, 1, 4) for _ in range(integer(rng, 1, 2))), c), dtype)
    return Example((x, arr(rng, (c, r), dtype), arr(rng, (r,), dtype, 0.5),
                    arr(rng, (r, c), dtype), arr(rng, (c,), dtype)))


squeeze_excitation = primitive("squeeze_excitation", _squeeze_excitation, _squeeze_excitation_fwd,
                               _squeeze_excitation_bwd, examples=_squeeze_excitation_examples,
                               space=_squeeze_excitation_space, check=_squeeze_excitation_check)


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


def _concat_channels_space(rng, dtype):
    """Any leading shape of rank 1-4 (sides 1-3), channel counts 1-4 on each side."""
    lead = tuple(integer(rng, 1, 3) for _ in range(integer(rng, 0, 3)))
    return Example((arr(rng, (*lead, integer(rng, 1, 4)), dtype), arr(rng, (*lead, integer(rng, 1, 4)), dtype)))


concat_channels = primitive("concat_channels", _concat_channels, _concat_channels_fwd, _concat_channels_bwd,
                            check=_concat_channels_check, examples=_concat_channels_examples,
                            space=_concat_channels_space)
