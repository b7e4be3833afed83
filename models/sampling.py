"""Drawing tokens from logits: temperature, top-k and top-p (nucleus) filtering, shared by every generator."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["sample_logits"]


def sample_logits(key, logits, *, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None):
    """Draw one token per row of ``logits`` (B, V) after temperature, top-k and top-p (nucleus) filtering.

    temperature 0 is greedy (argmax). top-k keeps the k largest logits; top-p keeps the smallest set of tokens,
    taken in order of probability, whose total probability reaches p (always at least the most likely one).
    """
    if temperature < 0:
        raise ValueError(f"sample: temperature must be >= 0, got {temperature}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"sample: top_p must lie in (0, 1], got {top_p}")
    if top_k is not None and top_k <= 0:
        raise ValueError(f"sample: top_k must be positive, got {top_k}")
    logits = logits.astype(jnp.float32)
    if temperature == 0:
        return jnp.argmax(logits, axis=-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p is not None and top_p < 1.0:
        order = jnp.argsort(-logits, axis=-1)
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs          # probability mass strictly before each token
        drop_sorted = before >= top_p
        drop = jnp.zeros_like(drop_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(drop_sorted)
        logits = jnp.where(drop, -jnp.inf, logits)
    return jax.random.categorical(key, logits, axis=-1)
