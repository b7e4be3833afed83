"""Attention scores' shared pieces: the default scale and the boolean masks (True = a query may see a key)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = ["causal_mask", "padding_mask", "broadcasts_to", "score_scale"]


def causal_mask(t: int, s: int | None = None) -> jax.Array:
    """Boolean (t, s) mask, True where key j may be seen by query i: j <= i + (s - t) (bottom-right aligned)."""
    s = t if s is None else s
    return jnp.arange(s)[None, :] <= jnp.arange(t)[:, None] + (s - t)


def padding_mask(lengths, s: int) -> jax.Array:
    """Key-padding mask (B, 1, 1, s) from the true lengths (B,): True for the first ``lengths[b]`` keys."""
    lengths = jnp.asarray(lengths)
    return (jnp.arange(s)[None, :] < lengths[:, None])[:, None, None, :]


def broadcasts_to(shape, full) -> bool:
    """Whether an array of ``shape`` broadcasts to ``full`` without growing it (masks and biases)."""
    if len(shape) > len(full):
        return False
    try:
        return jnp.broadcast_shapes(tuple(shape), tuple(full)) == tuple(full)
    except ValueError:
        return False


def score_scale(q, scale):
    """The score scale: 1/sqrt(d) for q (..., T, d) unless given."""
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
