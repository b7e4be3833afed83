"""Dropout (Srivastava et al. 2014) with inverted scaling.

Forward in training: m ~ Bernoulli(1 - rate) elementwise, y = m * x / (1 - rate); ``rate`` is the probability
of *dropping* a unit (as torch). Outside training, or with rate 0, y = x. With rate 1 every unit is dropped
and y = 0 (as torch).

Backward: y is linear in x with a diagonal Jacobian m / (1 - rate), so dx = m * dy / (1 - rate).
Residual: only the key. The mask is regenerated from the key in the backward (one cheap random draw)
instead of keeping an array the size of x — the same trade the flash-attention paper makes for its
dropout mask. The key itself gets no gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..core.examples import Example, keys, normal
from ..core.primitive import primitive

__all__ = ["dropout", "dropout_mask"]


def _check(x, key, *, rate, train=True):
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"dropout: rate is the probability of dropping and must lie in [0, 1], got {rate}")
    if train and 0.0 < rate < 1.0 and key is None:
        raise ValueError("dropout: training with rate > 0 needs a PRNG key (pass key=jax.random.PRNGKey(...))")


def dropout_mask(key, shape, rate):
    """The keep-mask dropout uses: True where a unit is kept (probability 1 - rate)."""
    return jax.random.bernoulli(key, 1.0 - rate, shape)


def _active(rate, train):
    return train and rate > 0.0


def _dropout(x, key=None, *, rate, train=True):
    if not _active(rate, train):
        return x
    if rate >= 1.0:
        return jnp.zeros_like(x)
    keep = dropout_mask(key, x.shape, rate)
    return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def _dropout_fwd(x, key=None, *, rate, train=True):
    return _dropout(x, key, rate=rate, train=train), (key, x.shape)


def _dropout_bwd(res, dy, *, rate, train=True):
    key, shape = res
    if not _active(rate, train):
        return dy, None
    if rate >= 1.0:
        return jnp.zeros_like(dy), None
    keep = dropout_mask(key, shape, rate)
    return jnp.where(keep, dy / (1.0 - rate), 0).astype(dy.dtype), None


def _examples(key, dtype):
    k = keys(key, 4)
    x = normal(k[0], (8, 6), dtype)
    return [
        Example((x, jax.random.PRNGKey(1)), {"rate": 0.3}, "rate=0.3 train"),
        Example((normal(k[1], (2, 3, 4), dtype), jax.random.PRNGKey(2)), {"rate": 0.5}, "rate=0.5 train"),
        Example((x, jax.random.PRNGKey(3)), {"rate": 0.3, "train": False}, "eval (identity)"),
    ]


dropout = primitive("dropout", _dropout, _dropout_fwd, _dropout_bwd, examples=_examples, check=_check)
