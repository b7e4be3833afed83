"""The sinusoidal timestep embedding of diffusion models (Ho et al. 2020, after the Transformer's positions).

A diffusion network is told the noise level through t, a scalar per example. The embedding spreads it over
``dim`` features at geometrically spaced frequencies, half sines then half cosines (the DDPM / guided-diffusion
layout):

    f_i = max_period^(-i / h),   i = 0 .. h - 1,   h = dim // 2
    emb(t) = [sin(t f_0), ..., sin(t f_{h-1}), cos(t f_0), ..., cos(t f_{h-1})]   (+ a zero column if dim is odd)

An MLP after it (and a FiLM projection per residual block) turns this into scales and shifts. t may be an integer
step 0..999 cast to float, or a continuous time; the hand rule gives d/dt, so continuous-time models and
checks of the whole network can differentiate through it.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ..core.examples import Example, keys, uniform
from ..core.primitive import primitive
from ._space import integer, num, pick, unif

__all__ = ["timestep_embedding", "timestep_frequencies"]


def timestep_frequencies(dim: int, max_period: float = 10000.0, dtype=jnp.float32):
    """f_i = max_period^(-i / (dim // 2)) for i < dim // 2."""
    half = dim // 2
    return jnp.asarray(np.exp(-np.log(max_period) * np.arange(half) / max(half, 1)), dtype)


def _check(t, *, dim, max_period=10000.0):
    if t.ndim != 1:
        raise ValueError(f"timestep_embedding: t must be a vector (B,) of times, got shape {t.shape}; "
                         "flatten it first")
    if not isinstance(dim, int) or dim < 2:
        raise ValueError(f"timestep_embedding: dim must be an int >= 2, got {dim!r}")
    if not max_period > 1.0:
        raise ValueError(f"timestep_embedding: max_period must be > 1, got {max_period!r}")


def _timestep_embedding(t, *, dim, max_period=10000.0):
    """emb (B, dim) of t (B,): [sin(t f_i)]_i then [cos(t f_i)]_i, f_i = max_period^(-i / h), h = dim // 2, and a
    zero column when dim is odd.

    Each feature depends on its own example's t only: d sin(t f)/dt = f cos(t f), d cos(t f)/dt = -f sin(t f), so
    with dy split into its sine half ds and cosine half dc (the zero column gets no gradient):
        dt = sum_i f_i (ds_i cos(t f_i) - dc_i sin(t f_i)).
    Residual: t (the sines and cosines are recomputed).
    """
    f = timestep_frequencies(dim, max_period, t.dtype)
    arg = t[:, None] * f[None, :]
    emb = jnp.concatenate([jnp.sin(arg), jnp.cos(arg)], axis=-1)
    if dim % 2:
        emb = jnp.concatenate([emb, jnp.zeros_like(emb[:, :1])], axis=-1)
    return emb


def _timestep_embedding_fwd(t, *, dim, max_period=10000.0):
    return _timestep_embedding(t, dim=dim, max_period=max_period), (t,)


def _timestep_embedding_bwd(res, dy, *, dim, max_period=10000.0):
    (t,) = res
    half = dim // 2
    f = timestep_frequencies(dim, max_period, t.dtype)
    arg = t[:, None] * f[None, :]
    ds, dc = dy[:, :half], dy[:, half:2 * half]
    return (jnp.sum(f[None, :] * (ds * jnp.cos(arg) - dc * jnp.sin(arg)), axis=-1),)


def _timestep_embedding_examples(key, dtype):
    k = keys(key, 2)
    return [Example((uniform(k[0], (4,), dtype, 0.0, 50.0),), {"dim": 8}, "B=4 dim 8, t in [0, 50]"),
            Example((uniform(k[1], (3,), dtype, 0.0, 1.0),), {"dim": 7, "max_period": 100.0},
                    "odd dim 7, max_period 100, t in [0, 1]")]


def _timestep_embedding_space(rng, dtype):
    """B 1-5 times in [0, 20], dim 2-12 (odd too), max_period 10000, 1000 or one drawn in [2, 1e4]."""
    t = unif(rng, (integer(rng, 1, 5),), dtype, 0.0, 20.0)
    return Example((t,), {"dim": integer(rng, 2, 12),
                          "max_period": pick(rng, [10000.0, 1000.0, num(rng, 2.0, 1e4, 1)])})


timestep_embedding = primitive("timestep_embedding", _timestep_embedding, _timestep_embedding_fwd,
                               _timestep_embedding_bwd, examples=_timestep_embedding_examples,
                               space=_timestep_embedding_space, check=_check)
