"""Small helpers for the example-input factories that every registered primitive carries.

A factory is ``examples(key, dtype) -> list[Example]``; called with two different keys it must return the
same configurations with the same shapes (the checker stacks the two for its ``vmap`` test).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .primitive import Example

__all__ = ["Example", "normal", "uniform", "away_from", "keys", "rng", "to_device"]


def keys(key, n: int):
    """``n`` independent raw ``uint32[2]`` keys drawn on the host from ``key`` (``jax.random.split`` and unstacking
    its result would compile small programs per ``n``); they seed :func:`rng` and work as ``jax.random`` keys."""
    return list(rng(key).integers(0, 2**32, (n, 2), dtype=np.uint32))


def rng(key) -> np.random.Generator:
    """A NumPy generator seeded by a JAX key: example inputs are drawn on the host. ``jax.random.normal`` would
    compile one small program per shape and dtype, which was half of the checker's time."""
    data = jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    return np.random.default_rng(np.asarray(data, np.uint32).ravel().tolist())


def to_device(x, dtype):
    """A host array as a JAX array of ``dtype`` (canonicalised: float32 without x64). ``jnp.asarray`` of a NumPy
    array stages it through a small compiled program per shape; ``device_put`` of the cast copy does not."""
    return jax.device_put(np.asarray(x, jax.dtypes.canonicalize_dtype(dtype)))


def normal(key, shape, dtype=jnp.float64, scale: float = 1.0, shift: float = 0.0):
    return to_device(shift + scale * rng(key).standard_normal(shape), dtype)


def uniform(key, shape, dtype=jnp.float64, low: float = 0.0, high: float = 1.0):
    return to_device(rng(key).uniform(low, high, shape), dtype)


def away_from(x, points=(0.0,), margin: float = 0.05):
    """Move entries that lie within ``margin`` of a kink (say 0 for relu) to ``point +- margin``.

    Finite differences across a kink measure the wrong slope; examples keep clear of them.
    """
    dtype = x.dtype
    x = np.array(x)
    for p in points:
        d = x - p
        x = np.where(np.abs(d) < margin, p + np.where(d < 0, -margin, margin), x)
    return to_device(x, dtype)
