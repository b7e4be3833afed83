"""Gradient transformations to ``chain`` with an optimizer: clipping, decay, scaling, masks and freezing.

    opt = optim.chain(optim.clip_by_global_norm(1.0), optim.adamw(3e-4, weight_decay=0.1, mask=optim.decay_mask))
    opt = optim.freeze(optim.adam(1e-3), r"^encoder/")          # train everything but the encoder

A *mask* (used by ``masked``, ``add_decayed_weights``, ``adamw``, ``lamb``, ``lion``, ``freeze``) is one of
- a pytree of bools shaped like the params,
- a callable ``params -> pytree of bools`` (e.g. ``decay_mask``),
- a regular expression searched in each leaf's path, written ``"layers/0/w"`` (see ``optim.tree_paths``),
- for ``freeze`` also a predicate ``(path, leaf) -> bool``.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .base import (
    GradientTransformation,
    LearningRateState,
    cast_grads,
    chain,
    check_lr,
    check_range,
    check_tree_match,
    lr_record,
    need_params,
    nonzero,
    path_str,
    resolve_lr,
    resolve_mask,
    scalar,
    takes_count,
    tree_map,
)

__all__ = [
    "identity", "clip", "clip_by_global_norm", "global_norm", "add_decayed_weights", "scale", "flip_sign",
    "cast_to_params", "scale_by_learning_rate", "scale_by_schedule", "masked", "decay_mask", "freeze", "frozen_mask",
]


class EmptyState(NamedTuple):
    pass


def identity() -> GradientTransformation:
    """Pass the updates through unchanged."""
    return GradientTransformation(lambda params: EmptyState(), lambda g, s, params=None: (g, s))


def clip(max_delta) -> GradientTransformation:
    """Clip every coordinate to [-max_delta, max_delta] (``torch.nn.utils.clip_grad_value_``)."""
    check_range("clip", "max_delta", max_delta, 0.0, None)

    def update(grads, state, params=None):
        return tree_map(lambda g: jnp.clip(g, -max_delta, max_delta), grads), state

    return GradientTransformation(lambda params: EmptyState(), update)


def global_norm(tree):
    """sqrt of the sum of squares of every leaf (``None`` leaves skipped), accumulated in float32 or wider."""
    leaves = [x for x in jax.tree.leaves(tree) if x is not None]
    if not leaves:
        return jnp.zeros([], jnp.float32)
    acc = jnp.promote_types(jnp.float32, jnp.result_type(*leaves))
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(acc))) for x in leaves))


class ClipNormState(NamedTuple):
    norm: jax.Array      # the global norm of the last gradients seen (before clipping), for logging


def clip_by_global_norm(max_norm) -> GradientTransformation:
    """Rescale the whole gradient when its global norm exceeds ``max_norm`` (``torch.nn.utils.clip_grad_norm_``):

        n = sqrt(sum_leaves sum g^2)        g <- g * min(1, max_norm / (n + 1e-6))

    The direction is kept; only the length is capped. The state records ``n`` for logging.
    """
    check_range("clip_by_global_norm", "max_norm", max_norm, 0.0, None, lo_open=True)

    def init(params):
        return ClipNormState(jnp.zeros([], jnp.float32))

    def update(grads, state, params=None):
        n = global_norm(grads)
        factor = jnp.minimum(1.0, max_norm / (n + 1e-6))
        return tree_map(lambda g: (g * factor.astype(g.dtype)).astype(g.dtype), grads), \
            ClipNormState(n.astype(jnp.float32))

    return GradientTransformation(init, update)


def decay_mask(params):
    """The usual weight-decay mask: True for leaves with ndim >= 2 (weights, kernels, embeddings), False for
    vectors and scalars (biases, norm scales and offsets)."""
    return tree_map(lambda p: jnp.ndim(p) >= 2, params)


def add_decayed_weights(weight_decay, mask=None) -> GradientTransformation:
    """Add the decay term ``u <- u + weight_decay * p`` on the leaves the mask selects (all by default).

    Where it sits in a chain decides which decay it is, as torch does each:
    - before the rule's scaling (``chain(add_decayed_weights(wd), scale_by_adam(), scale_by_learning_rate(lr))``)
      it is the coupled L2 term, ``g + wd p`` fed to the moments (``adam``'s ``weight_decay``);
    - after it (``chain(scale_by_adam(), add_decayed_weights(wd), scale_by_learning_rate(lr))``) it is
      decoupled decay, ``p <- p - lr wd p`` next to the step (``adamw``).
    """
    check_range("add_decayed_weights", "weight_decay", weight_decay, 0.0, None)

    def update(grads, state, params=None):
        need_params("add_decayed_weights", params)
        check_tree_match(grads, params)
        keep = resolve_mask(mask, params)
        return tree_map(lambda g, p, k: (g + weight_decay * p * k).astype(g.dtype), grads, params, keep), state

    return GradientTransformation(lambda params: EmptyState(), update)


def scale(factor) -> GradientTransformation:
    """Multiply the updates by a constant: ``u <- factor * u``."""

    def update(grads, state, params=None):
        return tree_map(lambda g: (scalar(factor, g) * g).astype(g.dtype), grads), state

    return GradientTransformation(lambda params: EmptyState(), update)


def flip_sign() -> GradientTransformation:
    """``u <- -u``: put first in a chain, it turns a descent rule into an ascent rule (torch's ``maximize``)."""

    def update(grads, state, params=None):
        return tree_map(jnp.negative, grads), state

    return GradientTransformation(lambda params: EmptyState(), update)


def cast_to_params() -> GradientTransformation:
    """``g <- g.astype(p.dtype)`` after checking that the gradient tree matches the parameter tree (the error
    names the first path that differs). First in every named optimizer, so that moments keep the parameters'
    dtypes (a float64 gradient of a float32 parameter would otherwise widen the state)."""

    def update(grads, state, params=None):
        return cast_grads(grads, params), state

    return GradientTransformation(lambda params: EmptyState(), update)


ScheduleState = LearningRateState      # the former name of the state of scale_by_schedule


def scale_by_schedule(schedule, *, negate=False) -> GradientTransformation:
    """Multiply the updates by ``schedule(count)`` (count = updates so far): ``u <- s(t - 1) * u``.
    ``negate=True`` multiplies by ``-s(t - 1)`` (a learning-rate step). The state, a ``LearningRateState``,
    is the one place that keeps the step count (``count``) and the factor of the last update (``lr``);
    a ``chain`` reads the count there for its step-aware transforms."""
    sign = -1.0 if negate else 1.0

    def init(params):
        return LearningRateState(jnp.zeros([], jnp.int32), lr_record(resolve_lr(schedule, 0)))

    def update(grads, state, params=None):
        s = resolve_lr(schedule, state.count)
        return tree_map(lambda g: (sign * scalar(s, g) * g).astype(g.dtype), grads), \
            LearningRateState(state.count + 1, lr_record(s))

    return GradientTransformation(init, update)


def scale_by_learning_rate(learning_rate) -> GradientTransformation:
    """The descent step ``u <- -lr_t * u`` with ``lr`` a number or a schedule ``step -> lr`` (called with the
    number of updates done so far). Last in every named optimizer; its state keeps ``count`` and ``lr``."""
    check_lr("scale_by_learning_rate", learning_rate)
    return scale_by_schedule(learning_rate, negate=True)


class MaskedState(NamedTuple):
    inner: Any


def _drop(tree, keep):
    """``tree`` with the leaves where ``keep`` is False replaced by None."""
    return jax.tree.map(lambda x, k: x if (x is not None and k) else None, tree, keep,
                        is_leaf=lambda x: x is None)


def _static_mask(mask, params):
    keep = resolve_mask(mask, params)

    def to_bool(m):
        if m is None:
            return None
        try:
            return bool(m)
        except (TypeError, jax.errors.ConcretizationTypeError):
            raise TypeError("masked/freeze: mask leaves must be static bools (one choice per leaf), "
                            f"got {type(m).__name__}") from None

    return jax.tree.map(to_bool, keep, is_leaf=lambda x: x is None)


def masked(inner: GradientTransformation, mask) -> GradientTransformation:
    """Apply ``inner`` to the leaves the mask selects; the other leaves pass through unchanged.

    ``inner`` sees the unselected leaves as ``None`` and keeps no state for them (as optax.masked). Inside a
    chain, a step-aware ``inner`` (e.g. ``scale_by_adam``) gets the chain's step count.
    """

    def init(params):
        return MaskedState(inner.init(_drop(params, _static_mask(mask, params))))

    wants_count = takes_count(inner)

    def update(grads, state, params=None, *, count=None):
        keep = _static_mask(mask, params if params is not None else grads)
        extra = {"count": count} if wants_count else {}
        u, s = inner.update(_drop(grads, keep), state.inner, None if params is None else _drop(params, keep),
                            **extra)
        out = jax.tree.map(lambda g, k, x: x if k else g, grads, keep, u, is_leaf=lambda x: x is None)
        return out, MaskedState(s)

    return GradientTransformation(init, update)


def frozen_mask(params, spec):
    """A pytree of bools, True where ``spec`` (regex on "a/b/0" paths, predicate ``(path, leaf) -> bool``,
    or pytree of bools) marks a leaf as frozen."""
    if isinstance(spec, str):
        pattern = re.compile(spec)
        pred = lambda path, leaf: bool(pattern.search(path))
    elif callable(spec):
        pred = spec
    else:
        return _static_mask(spec, params)
    flat, treedef = jax.tree_util.tree_flatten_with_path(params, is_leaf=lambda x: x is None)
    return jax.tree_util.tree_unflatten(
        treedef, [None if v is None else bool(pred(path_str(k), v)) for k, v in flat])


class FreezeState(NamedTuple):
    inner: Any


def freeze(*args) -> GradientTransformation:
    """Freeze a subtree of the parameters (fine-tuning, LoRA): frozen leaves get exactly zero updates.

    - ``freeze(opt, spec)`` wraps an optimizer: ``opt`` sees frozen leaves as ``None``, so it keeps no
      state for them and never moves them (no momentum, no weight decay). This is the form to use.
    - ``freeze(spec)`` is a chain element that zeroes the updates of frozen leaves; put it *last* in a chain
      (earlier, an optimizer's weight decay would still move the frozen leaves).

    ``spec``: a regex searched in each leaf's path ("layers/0/w"; e.g. ``r"^layers/0/"`` or ``"embed"``), a
    predicate ``(path, leaf) -> bool`` that is True for frozen leaves, or a pytree of bools (True = frozen).
    """
    if len(args) == 2 and isinstance(args[0], GradientTransformation):
        inner, spec = args
    elif len(args) == 1 and not isinstance(args[0], GradientTransformation):
        inner, spec = None, args[0]
    else:
        raise TypeError("freeze: call freeze(optimizer, spec) or freeze(spec) "
                        "(spec: regex on leaf paths, predicate (path, leaf) -> bool, or pytree of bools)")
    if isinstance(spec, str):
        try:
            re.compile(spec)
        except re.error as err:
            raise ValueError(f"freeze: {spec!r} is not a valid regular expression ({err})") from None

    def trainable(params):
        return jax.tree.map(lambda f: None if f is None else not f, frozen_mask(params, spec),
                            is_leaf=lambda x: x is None)

    def init(params):
        return FreezeState(None if inner is None else inner.init(_drop(params, trainable(params))))

    def update(grads, state, params=None):
        keep = trainable(params if params is not None else grads)
        if inner is None:
            out = jax.tree.map(lambda g, k: g if (g is None or k) else jnp.zeros_like(g), grads, keep,
                               is_leaf=lambda x: x is None)
            return out, state
        check_tree_match(grads, params)
        u, s = inner.update(_drop(grads, keep), state.inner, None if params is None else _drop(params, keep))
        out = jax.tree.map(lambda g, k, x: None if g is None else x if k else jnp.zeros_like(g), grads, keep, u,
                           is_leaf=lambda x: x is None)
        return out, FreezeState(s)

    return GradientTransformation(init, update)


def optimizer_chain(*transforms, maximize=False) -> GradientTransformation:
    """How the named optimizers are built: ``chain(cast_to_params(), [flip_sign()], *transforms)``, leaving out
    the transforms given as ``None`` (an unused momentum or a zero weight decay)."""
    head = [cast_to_params()] + ([flip_sign()] if maximize else [])
    return chain(*head, *(t for t in transforms if t is not None))


def decayed_weights_if(weight_decay, mask=None):
    """``add_decayed_weights(weight_decay, mask)``, or ``None`` for a weight decay of exactly 0."""
    return add_decayed_weights(weight_decay, mask) if nonzero(weight_decay) else None
