"""Small helpers for the example-input factories that every registered primitive carries.

A factory is ``examples(key, dtype) -> list[Example]``; called with two different keys it must return the
same configurations with the same shapes (the checker stacks the two for its ``vmap`` test).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .primitive import Example

__all__ = ["Example", "normal", "uniform", "away_from", "keys"]


def keys(key, n: int):
    return list(jax.random.split(key, n))


def normal(key, shape, dtype=jnp.float64, scale: float = 1.0, shift: float = 0.0):
    return (shift + scale * jax.random.normal(key, shape)).astype(dtype)


def uniform(key, shape, dtype=jnp.float64, low: float = 0.0, high: float = 1.0):
    return jax.random.uniform(key, shape, minval=low, maxval=high).astype(dtype)


def away_from(x, points=(0.0,), margin: float = 0.05):
    """Move entries that lie within ``margin`` of a kink (say 0 for relu) to ``point +- margin``.

    Finite differences across a kink measure the wrong slope; examples keep clear of them.
    """
    for p in points:
        d = x - p
        x = jnp.where(jnp.abs(d) < margin, p + jnp.where(d < 0, -margin, margin), x)
    return x
