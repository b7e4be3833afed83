"""Dynamic loss scaling for float16 training: keep small gradients representable, skip the steps that overflow.

float16 represents magnitudes from about 6e-8 (subnormal) to 65504. Gradients of a float16 forward pass are often
below the bottom of that range and flush to zero. Scaling the loss by ``S`` scales every gradient by ``S`` (the
chain rule is linear in the output cotangent), so they are computed in range; the optimizer sees ``g / S``:

    grads of S * loss  ->  g = grads / S
    all of g finite:   u = inner(g); good += 1; after ``growth_interval`` good steps in a row: S <- S * factor
    otherwise:         u = 0, the inner state unchanged (the step is skipped); S <- S / factor; good <- 0

The step reads the current scale with :func:`loss_scale` and multiplies its loss by it before differentiating.
The scale lives in the optimizer state, so it is checkpointed and resumed with it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .base import GradientTransformation, check_range, find_state_field, tree_map

__all__ = ["LossScaleState", "dynamic_loss_scale", "loss_scale"]


class LossScaleState(NamedTuple):
    loss_scale: jax.Array     # S, float32
    good_steps: jax.Array     # finite steps since the last change of S
    inner: Any


def dynamic_loss_scale(inner: GradientTransformation, initial_scale=2.0**15, growth_interval: int = 2000,
                       factor=2.0, min_scale=1.0) -> GradientTransformation:
    """Wrap ``inner`` so that it receives unscaled gradients and skips non-finite steps (see module docstring)."""
    check_range("dynamic_loss_scale", "initial_scale", initial_scale, 0.0, None, lo_open=True)
    check_range("dynamic_loss_scale", "factor", factor, 1.0, None, lo_open=True)
    if not isinstance(growth_interval, int) or growth_interval < 1:
        raise ValueError(f"dynamic_loss_scale: growth_interval must be a positive int, got {growth_interval!r}")

    def init(params):
        return LossScaleState(jnp.asarray(initial_scale, jnp.float32), jnp.zeros([], jnp.int32), inner.init(params))

    def update(grads, state, params=None):
        s = state.loss_scale
        grads = tree_map(lambda g: (g.astype(jnp.float32) / s).astype(g.dtype), grads)
        leaves = jax.tree.leaves(grads)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in leaves])) if leaves else jnp.array(True)
        safe = tree_map(lambda g: jnp.where(finite, g, jnp.zeros_like(g)), grads)
        u, new_inner = inner.update(safe, state.inner, params)
        u = tree_map(lambda x: jnp.where(finite, x, jnp.zeros_like(x)), u)
        new_inner = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new_inner, state.inner)
        good = jnp.where(finite, state.good_steps + 1, 0)
        grow = good >= growth_interval
        scale = jnp.where(finite, jnp.where(grow, s * factor, s), jnp.maximum(s / factor, min_scale))
        return u, LossScaleState(scale.astype(jnp.float32), jnp.where(grow, 0, good).astype(jnp.int32), new_inner)

    return GradientTransformation(init, update)


def loss_scale(state) -> jax.Array:
    """The current loss scale of an optimizer state (1.0 when it has no loss scaling)."""
    try:
        return find_state_field(state, "loss_scale")
    except ValueError:
        return jnp.ones([], jnp.float32)
