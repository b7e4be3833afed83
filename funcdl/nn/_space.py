"""Helpers for the ``space(rng, dtype)`` functions: each draws ONE random configuration of a primitive (settings,
shapes and values) from a ``numpy.random.Generator`` for the fuzzing checker (``funcdl gradcheck --fuzz N``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..core.examples import away_from


def arr(rng, shape, dtype, scale: float = 1.0, shift: float = 0.0, kinks=None, margin: float = 0.05):
    """A normal array ``shift + scale * N(0, 1)`` of ``shape``, kept ``margin`` clear of the points in ``kinks``."""
    x = jnp.asarray(shift + scale * rng.standard_normal(tuple(shape)), dtype)
    return away_from(x, kinks, margin) if kinks else x


def unif(rng, shape, dtype, low: float = 0.0, high: float = 1.0):
    return jnp.asarray(rng.uniform(low, high, tuple(shape)), dtype)


def pick(rng, options):
    """One of ``options``, its own Python value (not a NumPy scalar)."""
    return options[int(rng.integers(len(options)))]


def num(rng, low: float, high: float, digits: int = 3) -> float:
    """A float setting in [low, high], rounded so that its label stays short."""
    return round(float(rng.uniform(low, high)), digits)


def integer(rng, low: int, high: int) -> int:
    """An int in [low, high] (both included)."""
    return int(rng.integers(low, high + 1))


def key(rng):
    return jax.random.PRNGKey(int(rng.integers(2**31)))


def labels(rng, shape, n_classes: int):
    return jnp.asarray(rng.integers(0, n_classes, tuple(shape)), jnp.int32)


def bounded_away(rng, low, high, avoid=0.0, margin=0.1):
    """A float in [low, high] at least ``margin`` from ``avoid``."""
    while True:
        v = num(rng, low, high)
        if abs(v - avoid) >= margin:
            return v


__all__ = ["arr", "unif", "pick", "num", "integer", "key", "labels", "bounded_away", "np"]
