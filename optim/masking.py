"""Sparse training: an optimizer wrapper that keeps pruned weights at exactly zero.

    g~ = m * g                               # pruned positions get no gradient
    u, s = inner.update(g~, s, params)       # the inner optimizer (sgd, adam, adamw, ... and their decay)
    u~ = where(m, u, -params)                # kept: the update; pruned: whatever sets the weight to 0
    s  = zero_pruned(s, m)                   # every leaf of s shaped like params: 0 at pruned positions

A mask ``m`` is a pytree shaped like the params with 1 (keep) and 0 (prune) arrays, or ``None`` for a leaf
that is not masked. Because the update at a pruned position is ``-params`` (and ``p + (-p)`` is exactly 0 in
floating point), a weight pruned in the params before training, or by a mask that changes during training,
is zero after the next update and stays exactly zero, whatever the inner optimizer does: weight decay
(adamw's, sgd's), momentum and Adam's moments (which are zeroed too, so a weight that is later un-pruned
starts with fresh moments) never move it. State leaves that are not shaped like the params (adafactor's
factored second moments, step counts) are left alone; the update masking is what guarantees the zeros.

The masks live in the optimizer state (``SparseState.masks``), so a checkpoint of the state keeps them and a
resumed run continues with the same sparsity. ``refresh(params, masks, count) -> masks`` (optional) computes
new masks inside ``update`` (under ``jit``) from the current params and the number of updates done so far:
this is how gradual pruning runs during training (``funcdl.compress.prune.gradual_refresh``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .base import GradientTransformation, takes_count

__all__ = ["SparseState", "masked_sparse", "masks_of", "zero_pruned", "apply_masks"]


class SparseState(NamedTuple):
    masks: Any          # pytree like params: float 0/1 arrays in each param's dtype, None where not masked
    count: jax.Array    # updates done so far (int32): the refresh's clock
    inner: Any


def _is_none(x):
    return x is None


def _flat(tree):
    return jax.tree_util.tree_flatten(tree, is_leaf=_is_none)


def _as_mask(m, p, where):
    """A mask leaf as a 0/1 array in the param's dtype (None stays None), shape-checked against the param."""
    if m is None or p is None:
        return None
    m = jnp.asarray(m)
    if m.shape != jnp.shape(p):
        raise ValueError(f"masked_sparse: the mask at '{where}' has shape {m.shape} but the parameter has shape "
                         f"{jnp.shape(p)} (build masks from the same params, e.g. funcdl.compress.prune)")
    return (m != 0).astype(jnp.asarray(p).dtype)


def _check_masks(masks, params):
    p_leaves, p_def = _flat(params)
    m_leaves, m_def = _flat(masks)
    if m_def != p_def:
        raise ValueError("masked_sparse: the masks' tree does not have the params' structure (one mask leaf per "
                         "parameter, None for a parameter that is not masked)")
    paths = [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_flatten_with_path(params, is_leaf=_is_none)[0]]
    return jax.tree_util.tree_unflatten(
        p_def, [_as_mask(m, p, w) for m, p, w in zip(m_leaves, p_leaves, paths, strict=True)])


def zero_pruned(state, masks, params):
    """``state`` with every subtree that has the params' structure (Adam's mu and nu, momentum's trace, ...)
    set to 0 where the masks are 0 (leaves whose shape differs from the param's are left alone)."""
    p_def = _flat(params)[1]
    m_leaves = _flat(masks)[0]

    def walk(node):
        leaves, treedef = _flat(node)
        if treedef == p_def:
            return jax.tree_util.tree_unflatten(treedef, [
                x if (x is None or m is None or jnp.shape(x) != jnp.shape(m))
                else jnp.where(m != 0, x, jnp.zeros_like(x)) for x, m in zip(leaves, m_leaves, strict=True)])
        if isinstance(node, tuple) and hasattr(node, "_fields"):
            return type(node)(*(walk(c) for c in node))
        if isinstance(node, (tuple, list)):
            return type(node)(walk(c) for c in node)
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        return node

    return walk(state)


def apply_masks(params, masks):
    """``params * masks`` leaf by leaf (a ``None`` mask keeps the leaf), keeping each leaf's dtype."""
    return jax.tree.map(lambda p, m: p if (p is None or m is None) else jnp.where(m != 0, p, jnp.zeros_like(p)),
                        params, masks, is_leaf=_is_none)


def masked_sparse(inner: GradientTransformation, masks=None, *,
                  refresh: Callable | None = None) -> GradientTransformation:
    """Wrap ``inner`` so that the weights the masks prune get no gradient, no state and exactly zero value.

    ``masks``: a pytree like the params (1 keep, 0 prune, ``None`` = not masked), a function ``params -> masks``
    called at ``init``, or ``None`` (every leaf kept: a start for ``refresh``). ``refresh(params, masks, count)
    -> masks``: new masks before each update (``count`` = updates done so far, int32; params as before the
    update); it must be traceable, and a mask it drops is applied to the params by this very update.
    """
    if not isinstance(inner, GradientTransformation):
        raise TypeError(f"masked_sparse: inner must be a GradientTransformation, got {type(inner).__name__} "
                        "(call the factory, e.g. optim.adam(1e-3))")
    if refresh is not None and not callable(refresh):
        raise TypeError("masked_sparse: refresh must be a function (params, masks, count) -> masks")
    wants_count = takes_count(inner)

    def init(params):
        m = masks(params) if callable(masks) else masks
        if m is None:
            m = jax.tree.map(lambda p: None if p is None else jnp.ones_like(p), params, is_leaf=_is_none)
        m = _check_masks(m, params)
        state = inner.init(params)
        return SparseState(m, jnp.zeros((), jnp.int32), zero_pruned(state, m, params))

    def update(grads, state, params=None, *, count=None):
        m = state.masks
        if refresh is not None:
            if params is None:
                raise ValueError("masked_sparse with refresh needs params in update(grads, state, params)")
            m = _check_masks(refresh(params, m, state.count), params)
        g = apply_masks(grads, m)
        extra = {"count": count} if wants_count else {}
        u, s = inner.update(g, state.inner, params, **extra)
        ref = params if params is not None else grads
        if params is None:
            u = apply_masks(u, m)
        else:
            u = jax.tree.map(
                lambda x, p, k: x if (x is None or k is None) else jnp.where(k != 0, x, -p).astype(x.dtype),
                u, params, m, is_leaf=_is_none)
        s = zero_pruned(s, m, ref)
        return u, SparseState(m, state.count + 1, s)

    return GradientTransformation(init, update)


def masks_of(state):
    """The masks held by the first ``SparseState`` in a (nested) optimizer state; ``None`` when there is none."""
    if isinstance(state, SparseState):
        return state.masks
    if isinstance(state, (tuple, list)):
        for c in state:
            found = masks_of(c)
            if found is not None:
                return found
    if isinstance(state, dict):
        for c in state.values():
            found = masks_of(c)
            if found is not None:
                return found
    return None
