"""The one dropout rule shared by ``dropout``, ``spatial_dropout`` and the attention primitives' weight dropout.

``rate`` is the probability of dropping (DESIGN.md) and must lie in [0, 1], as in torch (``F.dropout``,
``F.dropout2d``, ``scaled_dot_product_attention``'s ``dropout_p``): with keep-mask m ~ Bernoulli(1 - rate),

    y = m * x / (1 - rate)          dx = m * dy / (1 - rate)

rate 0 is the identity; rate 1 drops every unit: y = 0 and dx = 0 (torch's result too). The mask is drawn
from a PRNG key, so a backward regenerates it from the same key instead of storing it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["check_rate", "dropout_mask", "drop"]


def check_rate(name, rate, key, *, what="rate", active=True):
    """``rate`` in [0, 1]; a key is needed when units are dropped at random (0 < rate < 1, ``active``)."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"{name}: {what} is the probability of dropping and must lie in [0, 1], got {rate}")
    if active and 0.0 < rate < 1.0 and key is None:
        raise ValueError(f"{name}: training with {what} > 0 needs a PRNG key (pass key=jax.random.PRNGKey(...))")


def dropout_mask(key, shape, rate):
    """The keep-mask: True where a unit is kept (probability 1 - rate)."""
    return jax.random.bernoulli(key, 1.0 - rate, shape)


def drop(x, key, rate, mask_shape=None):
    """m * x / (1 - rate) with m = ``dropout_mask(key, mask_shape or x.shape, rate)`` broadcast against x;
    x itself when rate is 0 and zeros when it is 1. Applied to a cotangent with the same key, it is the
    backward of itself (the map is linear and diagonal)."""
    if rate == 0.0:
        return x
    if rate >= 1.0:
        return jnp.zeros_like(x)
    keep = dropout_mask(key, x.shape if mask_shape is None else mask_shape, rate)
    return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)
