"""The optimizer interface, the same shape as optax's so the two can be swapped.

An optimizer (or any gradient transformation) is a pair of pure functions:

    state = opt.init(params)
    updates, state = opt.update(grads, state, params)
    params = apply_updates(params, updates)          # p + u, leaf by leaf

``chain(t1, t2, ...)`` feeds the updates of one transformation into the next. A learning rate may be a
number or a schedule ``step -> lr``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["GradientTransformation", "apply_updates", "chain", "resolve_lr", "check_tree_match"]


class GradientTransformation(NamedTuple):
    init: Callable[[Any], Any]
    update: Callable[..., tuple[Any, Any]]


def apply_updates(params, updates):
    """``params + updates`` leaf by leaf, keeping each parameter's dtype; ``None`` leaves stay ``None``."""
    return jax.tree.map(
        lambda p, u: p if u is None else (p + u).astype(p.dtype) if p is not None else None,
        params, updates, is_leaf=lambda x: x is None,
    )


class ChainState(NamedTuple):
    states: tuple


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Compose transformations: the updates of each are the gradients of the next."""

    def init(params):
        return ChainState(tuple(t.init(params) for t in transforms))

    def update(grads, state, params=None):
        new_states = []
        for t, s in zip(transforms, state.states, strict=True):
            grads, s = t.update(grads, s, params)
            new_states.append(s)
        return grads, ChainState(tuple(new_states))

    return GradientTransformation(init, update)


def resolve_lr(learning_rate, step):
    """The learning rate at ``step`` (a number, or a schedule called with the step count)."""
    if callable(learning_rate):
        return learning_rate(step)
    return learning_rate


def check_tree_match(grads, params) -> None:
    """Raise a ValueError naming the first path where ``grads`` and ``params`` differ in structure or shape."""
    if params is None:
        return
    g_flat = jax.tree_util.tree_flatten_with_path(grads, is_leaf=lambda x: x is None)[0]
    p_flat = jax.tree_util.tree_flatten_with_path(params, is_leaf=lambda x: x is None)[0]
    g_paths = {jax.tree_util.keystr(k): v for k, v in g_flat}
    p_paths = {jax.tree_util.keystr(k): v for k, v in p_flat}
    for path in sorted(set(g_paths) | set(p_paths)):
        if path not in g_paths:
            raise ValueError(f"grads tree does not match params tree: grads has no entry at {path}")
        if path not in p_paths:
            raise ValueError(f"grads tree does not match params tree: params has no entry at {path}")
        g, p = g_paths[path], p_paths[path]
        if (g is None) != (p is None) or (g is not None and jnp.shape(g) != jnp.shape(p)):
            raise ValueError(
                f"grads tree does not match params tree at {path}: grad shape "
                f"{None if g is None else jnp.shape(g)} vs param shape {None if p is None else jnp.shape(p)}"
            )
