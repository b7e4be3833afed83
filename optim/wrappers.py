"""Wrappers around an optimizer: gradient accumulation, skipping non-finite steps, an exponential moving
average of the parameters, lookahead and sharpness-aware minimisation (SAM).

Each takes an optimizer (any ``GradientTransformation``) and returns one, so they nest:
``optim.skip_not_finite(optim.accumulate(optim.adamw(1e-3), 4))``. Everything is select-based (no Python
branching on values), so it all runs under ``jit`` and ``vmap``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .base import GradientTransformation, check_range, check_tree_match, find_state_field, need_params, scalar, tree_map
from .transforms import global_norm

__all__ = ["accumulate", "skip_not_finite", "ema_params", "ema_of", "lookahead", "sam"]


def _select(pred, a, b):
    """``a`` where ``pred`` else ``b``, leaf by leaf (``None`` leaves stay ``None``)."""
    return jax.tree.map(lambda x, y: None if x is None else jnp.where(pred, x, y), a, b,
                        is_leaf=lambda x: x is None)


class AccumulateState(NamedTuple):
    micro_step: jax.Array     # 0 .. every - 1
    grad_sum: Any
    inner: Any


def accumulate(inner: GradientTransformation, every: int) -> GradientTransformation:
    """Gradient accumulation over ``every`` micro-steps (a k-times larger batch in k smaller pieces):

        a <- a + g_micro;   on micro-steps k, 2k, ...:  u = inner(a / k), a <- 0;   otherwise u = 0

    The inner optimizer's state (its step count, its schedule) advances once per k micro-steps.
    """
    if not isinstance(every, int) or every < 1:
        raise ValueError(f"accumulate: every must be a positive int, got {every!r}")

    def init(params):
        return AccumulateState(jnp.zeros([], jnp.int32), tree_map(jnp.zeros_like, params), inner.init(params))

    def update(grads, state, params=None):
        check_tree_match(grads, params)
        acc = tree_map(lambda a, g: a + g.astype(a.dtype), state.grad_sum, grads)
        ready = state.micro_step == every - 1

        def do_step(_):
            mean = tree_map(lambda a: a / every, acc)
            u, s = inner.update(mean, state.inner, params)
            return u, s, tree_map(jnp.zeros_like, acc)

        def wait(_):
            mean = tree_map(lambda a: a / every, acc)
            u, _ = inner.update(mean, state.inner, params)        # only for the output types; dead code to XLA
            return tree_map(jnp.zeros_like, u), state.inner, acc

        u, s, acc = jax.lax.cond(ready, do_step, wait, None)
        return u, AccumulateState((state.micro_step + 1) % every, acc, s)

    return GradientTransformation(init, update)


class SkipState(NamedTuple):
    skipped: jax.Array        # how many updates were skipped so far
    inner: Any


def skip_not_finite(inner: GradientTransformation) -> GradientTransformation:
    """Skip an update whose gradients hold a NaN or an infinity: zero updates and an unchanged inner state
    (as mixed-precision loss scalers do). ``state.skipped`` counts the skipped updates."""

    def init(params):
        return SkipState(jnp.zeros([], jnp.int32), inner.init(params))

    def update(grads, state, params=None):
        leaves = [g for g in jax.tree.leaves(grads) if g is not None]
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in leaves])) if leaves else jnp.array(True)
        safe = tree_map(lambda g: jnp.where(finite, g, jnp.zeros_like(g)), grads)
        u, s = inner.update(safe, state.inner, params)
        u = tree_map(lambda x: jnp.where(finite, x, jnp.zeros_like(x)), u)
        s = _select(finite, s, state.inner)
        return u, SkipState(state.skipped + jnp.where(finite, 0, 1).astype(jnp.int32), s)

    return GradientTransformation(init, update)


class EMAState(NamedTuple):
    ema: Any                  # the averaged parameters (read with optim.ema_of(state))
    inner: Any
    updates: Any = None       # updates so far (int32 scalar): the warm-up's t (not named count: the inner
                              # optimizer's count is the count, optim.find_state_field)


def ema_params(inner: GradientTransformation, decay=0.999, *, warmup: bool = False) -> GradientTransformation:
    """Keep an exponential moving average of the parameters next to the optimizer (Polyak averaging):

        p_t = p_{t-1} + inner_update_t,      e_t = d_t * e_{t-1} + (1 - d_t) * p_t,   e_0 = p_0

    with d_t = ``decay``, or with ``warmup`` d_t = min(decay, (1 + t) / (10 + t)) (the schedule of TensorFlow's
    ExponentialMovingAverage with ``num_updates``): early averages forget the initial weights quickly, so a short
    run's average is not dominated by p_0 (0.999^1000 = 37% of it after 1000 steps without warm-up). The average
    is read with ``optim.ema_of(state)``; the training itself follows ``p``. Starting at ``p_0`` (not 0) needs
    no bias correction.
    """
    check_range("ema_params", "decay", decay, 0.0, 1.0, hi_open=False)

    def init(params):
        return EMAState(tree_map(jnp.copy, params), inner.init(params), jnp.zeros((), jnp.int32))

    def update(grads, state, params=None):
        need_params("ema_params", params)
        u, s = inner.update(grads, state.inner, params)
        t = state.updates + 1
        d = jnp.minimum(decay, (1.0 + t) / (10.0 + t)) if warmup else decay
        ema = tree_map(lambda e, p, du: e + ((1 - d) * ((p + du).astype(e.dtype) - e)).astype(e.dtype),
                       state.ema, params, u)
        return u, EMAState(ema, s, t)

    return GradientTransformation(init, update)


def ema_of(state):
    """The averaged parameters held by an ``ema_params`` state (found through chains and wrappers)."""
    return find_state_field(state, "ema")


class LookaheadState(NamedTuple):
    fast_steps: jax.Array     # fast steps so far (not named count: the inner optimizer's count is the count)
    slow: Any                 # the slow weights
    inner: Any


def lookahead(inner: GradientTransformation, sync_period: int = 5, alpha=0.5) -> GradientTransformation:
    """Lookahead (Zhang et al. 2019): the inner optimizer takes ``k = sync_period`` fast steps, then the slow
    weights move a fraction ``alpha`` of the way to the fast ones and the fast weights restart there:

        fast_t = fast_{t-1} + inner_update_t
        every k steps:  slow <- slow + alpha (fast_t - slow);   fast_t <- slow

    The params the caller holds are the fast weights; the slow weights live in the state.
    """
    if not isinstance(sync_period, int) or sync_period < 1:
        raise ValueError(f"lookahead: sync_period must be a positive int, got {sync_period!r}")
    check_range("lookahead", "alpha", alpha, 0.0, 1.0, hi_open=False)

    def init(params):
        return LookaheadState(jnp.zeros([], jnp.int32), tree_map(jnp.copy, params), inner.init(params))

    def update(grads, state, params=None):
        need_params("lookahead", params)
        u, s = inner.update(grads, state.inner, params)
        t = state.fast_steps + 1
        sync = (t % sync_period) == 0
        fast = tree_map(lambda p, du: (p + du).astype(p.dtype), params, u)
        slow = tree_map(lambda sl, f: jnp.where(sync, sl + scalar(alpha, sl) * (f - sl), sl), state.slow, fast)
        updates = tree_map(lambda du, sl, p: jnp.where(sync, sl - p, du).astype(du.dtype), u, slow, params)
        return updates, LookaheadState(t, slow, s)

    return GradientTransformation(init, update)


class SAMState(NamedTuple):
    inner: Any


def sam(inner: GradientTransformation, loss_fn: Callable, rho=0.05, adaptive=False, has_aux=False,
        eps=1e-12) -> GradientTransformation:
    """Sharpness-aware minimisation (Foret et al. 2021); adaptive SAM (Kwon et al. 2021) with ``adaptive``.

    SAM minimises ``max_{||e|| <= rho} L(w + e)``. To first order ``L(w + e) ~ L(w) + e . g``, maximised by
    ``e* = rho g / ||g||``; the gradient of ``L(w + e*)`` with e* held constant is the SAM gradient:

        g = grad L(w)                                       (the ``grads`` passed to update)
        e = rho * g / (||g|| + eps)                         (adaptive: e = rho w^2 g / (||w g|| + eps))
        g_sam = grad L(w + e)                               (second evaluation, inside update)
        (u, state) = inner.update(g_sam, state, w)

    ``update(grads, state, params, *args, **kwargs)`` calls ``loss_fn(params, *args, **kwargs)`` (a batch,
    a key) for the second gradient; ``has_aux`` as in ``jax.grad``. Norms are global over all leaves.
    """
    check_range("sam", "rho", rho, 0.0, None)
    grad_fn = jax.grad(loss_fn, has_aux=has_aux)

    def init(params):
        return SAMState(inner.init(params))

    def update(grads, state, params=None, *args, **kwargs):
        need_params("sam", params)
        check_tree_match(grads, params)
        if adaptive:
            scaled = tree_map(lambda g, p: jnp.abs(p) * g, grads, params)
            n = global_norm(scaled)
            e = tree_map(lambda g, p: scalar(rho, g) * p * p * g / (n.astype(g.dtype) + eps), grads, params)
        else:
            n = global_norm(grads)
            e = tree_map(lambda g: scalar(rho, g) * g / (n.astype(g.dtype) + eps), grads)
        perturbed = tree_map(lambda p, d: (p + d).astype(p.dtype), params, e)
        g_sam = grad_fn(perturbed, *args, **kwargs)
        if has_aux:
            g_sam = g_sam[0]
        u, s = inner.update(g_sam, state.inner, params)
        return u, SAMState(s)

    return GradientTransformation(init, update)
