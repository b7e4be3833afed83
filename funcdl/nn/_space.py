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


def per_axis(rng, n, low, high):
    """A stride/dilation/kernel-like setting: one int for all n axes, or one per axis."""
    if rng.random() < 0.5:
        return integer(rng, low, high)
    return tuple(integer(rng, low, high) for _ in range(n))


def padding(rng, n, forms=("VALID", "SAME", "int", "ints", "pairs"), high=2):
    """A padding setting in one of ``forms``: "VALID", "SAME", "CAUSAL", an int, one int per axis ("ints") or
    (lo, hi) pairs ("pairs"), the ints in [0, high]."""
    form = pick(rng, list(forms))
    if form == "int":
        return integer(rng, 0, high)
    if form == "ints":
        return tuple(integer(rng, 0, high) for _ in range(n))
    if form == "pairs":
        return tuple((integer(rng, 0, high), integer(rng, 0, high)) for _ in range(n))
    return form


def distinct(rng, shape, dtype, gap=0.05):
    """Values with no ties and gaps >= ``gap`` (finite differences never swap a maximum)."""
    size = int(np.prod(shape))
    return jnp.asarray((rng.permutation(size) * gap - size * gap / 2).reshape(tuple(shape)), dtype)


def valid(draw, check, tries: int = 50):
    """Rejection sampling: ``draw()`` -> Example until ``check(*args, **settings)`` accepts it (a constraint
    between settings and shapes that the check states better than a formula would)."""
    for _ in range(tries):
        ex = draw()
        try:
            check(*ex.args, **ex.settings)
        except ValueError:
            continue
        return ex
    raise RuntimeError(f"no valid configuration in {tries} draws")
