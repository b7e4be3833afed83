"""The optimizer interface, the same shape as optax's so the two can be swapped.

An optimizer (or any gradient transformation) is a pair of pure functions:

    state = opt.init(params)
    updates, state = opt.update(grads, state, params)
    params = apply_updates(params, updates)          # p + u, leaf by leaf

``chain(t1, t2, ...)`` feeds the updates of one transformation into the next. A learning rate may be a
number or a schedule ``step -> lr``. Every named optimizer is a ``chain`` of small transforms ending in
``scale_by_learning_rate``, whose state is the one place that keeps the step count and the learning rate
of the last update; ``current_lr(state)`` and ``find_state_field(state, "count")`` find them through chains
and wrappers.

Conventions shared by every rule in this package:

- ``None`` leaves (absent parameters) stay ``None`` in states and updates;
- moments and updates keep each parameter's dtype (float32 and float64 both work), so an optimizer
  state is a valid ``lax.scan`` carry;
- nothing branches in Python on array values, so every rule works under ``jit`` and under ``vmap``
  over a batch of independent problems;
- hyper-parameters are checked when they are plain numbers (a traced learning rate, as in
  meta-learning, is accepted as it is).
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "GradientTransformation", "LearningRateState", "ChainState", "apply_updates", "chain", "resolve_lr",
    "check_tree_match", "current_lr", "find_state_field", "tree_map", "path_str", "tree_paths", "is_concrete",
]


class GradientTransformation(NamedTuple):
    init: Callable[[Any], Any]
    update: Callable[..., tuple[Any, Any]]


def _is_none(x):
    return x is None


def tree_map(f, tree, *rest):
    """``jax.tree.map`` that leaves ``None`` leaves of the first tree as ``None``."""
    return jax.tree.map(lambda x, *r: None if x is None else f(x, *r), tree, *rest, is_leaf=_is_none)


def apply_updates(params, updates):
    """``params + updates`` leaf by leaf, keeping each parameter's dtype; ``None`` leaves stay ``None``."""
    return jax.tree.map(
        lambda p, u: p if u is None else (p + u).astype(p.dtype) if p is not None else None,
        params, updates, is_leaf=_is_none,
    )


class LearningRateState(NamedTuple):
    """The one place an optimizer keeps its step count and learning rate (``scale_by_learning_rate``)."""
    count: jax.Array      # updates done so far (int32)
    lr: jax.Array         # the learning rate of the last update (at init: of step 0), float32


class ChainState(NamedTuple):
    states: tuple


def takes_count(transform: GradientTransformation) -> bool:
    """Whether ``transform.update`` accepts the step count as a keyword ``count`` (a step-aware transform)."""
    try:
        return "count" in inspect.signature(transform.update).parameters
    except (TypeError, ValueError):
        return False


def chain_count(states):
    """The step count of a chain: the ``count`` of its first ``LearningRateState`` (nested chains included)."""
    for s in states:
        if isinstance(s, LearningRateState):
            return s.count
        if isinstance(s, ChainState):
            found = chain_count(s.states)
            if found is not None:
                return found
    return None


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Compose transformations: the updates of each are the gradients of the next.

    The step count lives in one place, the state of the chain's ``scale_by_learning_rate`` (or
    ``scale_by_schedule``); the chain hands it (updates done so far) to every step-aware transform, such as
    ``scale_by_adam``'s bias correction, as ``update(..., count=count)``.
    """
    for i, t in enumerate(transforms):
        if not isinstance(t, GradientTransformation):
            raise TypeError(f"chain: argument {i} is a {type(t).__name__}, not a GradientTransformation "
                            "(call the factory, e.g. optim.sgd(0.1), not optim.sgd)")
    wants_count = [takes_count(t) for t in transforms]

    def init(params):
        return ChainState(tuple(t.init(params) for t in transforms))

    def update(grads, state, params=None, *, count=None):
        own = chain_count(state.states)
        count = own if own is not None else count
        new_states = []
        for t, s, wants in zip(transforms, state.states, wants_count, strict=True):
            grads, s = t.update(grads, s, params, count=count) if wants else t.update(grads, s, params)
            new_states.append(s)
        return grads, ChainState(tuple(new_states))

    return GradientTransformation(init, update)


def resolve_lr(learning_rate, step):
    """The learning rate at ``step`` (a number, or a schedule called with the step count)."""
    if callable(learning_rate):
        return learning_rate(step)
    return learning_rate


def lr_record(lr):
    """The learning rate as stored in a state: a float32 scalar (the same type at init and after updates)."""
    return jnp.asarray(lr, jnp.float32)


def is_concrete(x) -> bool:
    """True for a plain number (or concrete array) that can be checked in Python; False for a tracer."""
    return not isinstance(x, jax.core.Tracer)


def path_str(keypath) -> str:
    """A key path as ``"layers/0/w"`` (dict keys, sequence indices and attribute names joined by '/')."""
    parts = []
    for k in keypath:
        for attr in ("key", "idx", "name"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def tree_paths(tree) -> list[str]:
    """The ``"a/b/0"`` path of every leaf (``None`` leaves included), in flattening order."""
    return [path_str(k) for k, _ in jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_none)[0]]


def _flat_with_paths(tree):
    return jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_none)[0]


def check_tree_match(grads, params) -> None:
    """Raise a ValueError naming the first path where ``grads`` and ``params`` differ in structure or shape.

    Runs at trace time only (structures and shapes are static), so it costs nothing under ``jit``.
    """
    if params is None:
        return
    g_flat, p_flat = _flat_with_paths(grads), _flat_with_paths(params)
    if len(g_flat) == len(p_flat) and all(
        gk == pk for (gk, _), (pk, _) in zip(g_flat, p_flat, strict=True)
    ):
        pairs = [(path_str(k), g, p) for (k, g), (_, p) in zip(g_flat, p_flat, strict=True)]
    else:
        g_paths = {path_str(k): v for k, v in g_flat}
        p_paths = {path_str(k): v for k, v in p_flat}
        order = [path_str(k) for k, _ in p_flat] + [path_str(k) for k, _ in g_flat]
        for path in order:
            if path not in g_paths:
                raise ValueError(f"grads tree does not match params tree: grads has no entry at '{path}' "
                                 "(differentiate the loss with respect to the same params you pass to update)")
            if path not in p_paths:
                raise ValueError(f"grads tree does not match params tree: params has no entry at '{path}'")
        pairs = [(path, g_paths[path], p_paths[path]) for path in p_paths]
    for path, g, p in pairs:
        if (g is None) != (p is None) or (g is not None and jnp.shape(g) != jnp.shape(p)):
            raise ValueError(
                f"grads tree does not match params tree at '{path}': grad shape "
                f"{None if g is None else jnp.shape(g)} vs param shape {None if p is None else jnp.shape(p)}"
            )


def _find_field(state, field):
    if hasattr(state, "_fields"):
        if field in state._fields:
            return getattr(state, field)
        children = tuple(state)
    elif isinstance(state, (tuple, list)):
        children = state
    elif isinstance(state, dict):
        children = tuple(state.values())
    else:
        return None
    for c in children:
        found = _find_field(c, field)
        if found is not None:
            return found
    return None


def current_lr(state):
    """The learning rate of the last update (at init: the rate for step 0), read from an optimizer state.

    Works through ``chain`` and every wrapper: it returns the first ``lr`` entry found depth-first, i.e.
    the learning rate of the first optimizer in a chain. Under ``vmap`` it has the batch shape.
    """
    lr = _find_field(state, "lr")
    if lr is None:
        raise ValueError("current_lr: this state holds no learning rate (a chain of transforms without an "
                         "optimizer or scale_by_learning_rate/scale_by_schedule)")
    return lr


def find_state_field(state, field):
    """The first entry named ``field`` in a (nested) optimizer state, e.g. ``"ema"`` or ``"slow"``."""
    found = _find_field(state, field)
    if found is None:
        raise ValueError(f"no {field!r} entry in this optimizer state")
    return found


# ---- argument checks shared by the optimizers ----------------------------------------------------------

def check_lr(name, learning_rate):
    if callable(learning_rate) or not is_concrete(learning_rate):
        return
    try:
        value = float(learning_rate)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: learning_rate must be a number or a schedule step -> lr, "
                        f"got {type(learning_rate).__name__}") from None
    if not value >= 0:
        raise ValueError(f"{name}: learning_rate must be >= 0, got {learning_rate}")


def check_range(name, arg, value, lo=0.0, hi=1.0, hi_open=True, lo_open=False):
    """Reject ``value`` outside [lo, hi) (or the given openness); tracers pass."""
    if value is None or not is_concrete(value):
        return
    v = float(value)
    ok_lo = v > lo if lo_open else v >= lo
    ok_hi = (v < hi if hi_open else v <= hi) if hi is not None else True
    if not (ok_lo and ok_hi):
        left = "(" if lo_open else "["
        right = ("inf)" if hi is None else f"{hi})") if hi_open or hi is None else f"{hi}]"
        raise ValueError(f"{name}: {arg} must lie in {left}{lo}, {right}, got {value}")


def nonzero(x) -> bool:
    """Whether a hyper-parameter is active: a concrete number != 0, or any traced value."""
    return (not is_concrete(x)) or float(x) != 0.0


def resolve_mask(mask, params):
    """A pytree of bools shaped like ``params`` from ``None`` (all True), a callable ``params -> mask``,
    a regex on leaf paths, or a pytree of bools."""
    if mask is None:
        return tree_map(lambda _: True, params)
    if isinstance(mask, str):
        pattern = re.compile(mask)
        flat, treedef = jax.tree_util.tree_flatten_with_path(params, is_leaf=_is_none)
        return jax.tree_util.tree_unflatten(
            treedef, [None if v is None else bool(pattern.search(path_str(k))) for k, v in flat])
    if callable(mask):
        mask = mask(params)
    flat_p = _flat_with_paths(params)
    flat_m = jax.tree_util.tree_flatten_with_path(mask, is_leaf=_is_none)[0]
    if [path_str(k) for k, _ in flat_p] != [path_str(k) for k, _ in flat_m]:
        for (kp, _), (km, _) in zip(flat_p, flat_m, strict=False):
            if kp != km:
                raise ValueError(f"mask tree does not match params tree at '{path_str(kp)}' "
                                 f"(mask has '{path_str(km)}')")
        raise ValueError(f"mask tree has {len(flat_m)} leaves but params has {len(flat_p)}")
    return mask


def cast_grads(grads, params):
    """Check that ``grads`` matches ``params`` and cast each gradient to its parameter's dtype, so that
    moments keep the parameters' dtypes and a state stays a valid scan carry."""
    check_tree_match(grads, params)
    if params is None:
        return grads
    return tree_map(lambda g, p: g if g.dtype == p.dtype else g.astype(p.dtype), grads, params)


def need_params(name, params):
    if params is None:
        raise ValueError(f"{name}: this rule needs the parameters: call update(grads, state, params)")


def need_count(name, count):
    """The step ``t = count + 1`` as a float array; ``count`` (updates done so far) comes from the chain."""
    if count is None:
        raise ValueError(f"{name}: this transform needs the step count: chain it with "
                         "optim.scale_by_learning_rate(lr), which keeps the count (or pass count=...)")
    return step_float(count) + 1


def scalar(x, like):
    """A hyper-parameter or step-dependent scalar in the dtype of the leaf ``like``."""
    return jnp.asarray(x, like.dtype)


def float_dtype():
    """The widest enabled float dtype (float64 with jax_enable_x64, else float32), used for step scalars
    such as bias corrections so that 1 - b2^t keeps its digits as torch's Python-float arithmetic does."""
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def step_float(count):
    return jnp.asarray(count).astype(float_dtype())


def one_minus_pow(b, t):
    """``1 - b^t`` without cancellation (as -expm1(t log b)) for a concrete ``b``; ``t`` a float array."""
    if is_concrete(b):
        b = float(b)
        if b == 0.0:
            return jnp.ones_like(t)
        return -jnp.expm1(t * math.log(b))
    return 1 - b**t


def pow_(b, t):
    """``b^t`` as exp(t log b) for a concrete ``b``."""
    if is_concrete(b):
        b = float(b)
        return jnp.where(t == 0, 1.0, 0.0).astype(t.dtype) if b == 0.0 else jnp.exp(t * math.log(b))
    return b**t


def sqrt0(x):
    """``sqrt(x)`` whose derivative at x = 0 is 0 instead of inf, so that differentiating *through* an
    optimizer (meta-learning) gives no NaN where a moment is exactly zero; values are unchanged."""
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1)), 0)
