"""The classic first-order rules, with torch.optim's update rules, names and defaults (DESIGN.md).

Every ``update`` returns the *change* to add to the parameters (``apply_updates`` adds it). In the
equations ``g`` is the gradient (negated first when ``maximize``), ``p`` the parameter, ``t = 1, 2, ...``
the step and ``lr`` the learning rate of step t (a schedule is called with ``t - 1``).
The Adam family lives in ``optim/adaptive.py``, LAMB / Lion / Adafactor in ``optim/modern.py``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .base import (
    GradientTransformation,
    check_lr,
    check_range,
    lr_record,
    nonzero,
    prepare_grads,
    resolve_lr,
    scalar,
    sqrt0,
    step_float,
    tree_map,
)

__all__ = ["sgd", "adagrad", "rmsprop", "adadelta"]


def _zero_count():
    return jnp.zeros([], jnp.int32)


def _init_lr(learning_rate):
    return lr_record(resolve_lr(learning_rate, 0))


class SGDState(NamedTuple):
    count: jax.Array
    momentum: Any
    lr: jax.Array


def sgd(learning_rate=1e-3, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0, maximize=False):
    """Stochastic gradient descent with momentum, as ``torch.optim.SGD``.

        g_t = grad + weight_decay * p_{t-1}
        b_1 = g_1,     b_t = momentum * b_{t-1} + (1 - dampening) * g_t          (t > 1)
        d_t = g_t + momentum * b_t  (nesterov)   |   b_t  (momentum > 0)   |   g_t  (no momentum)
        p_t = p_{t-1} - lr * d_t

    With dampening 0, b_t is the sum of past gradients weighted by momentum^k: a first-order low-pass
    filter whose steady-state gain on a constant gradient is 1 / (1 - momentum).
    """
    check_lr("sgd", learning_rate)
    check_range("sgd", "momentum", momentum, 0.0, None)
    check_range("sgd", "weight_decay", weight_decay, 0.0, None)
    check_range("sgd", "dampening", dampening, 0.0, 1.0, hi_open=False)
    if nesterov and (not nonzero(momentum) or nonzero(dampening)):
        raise ValueError("sgd: nesterov momentum requires momentum > 0 and dampening = 0 (as torch)")
    use_momentum = nonzero(momentum)

    def init(params):
        buf = tree_map(jnp.zeros_like, params) if use_momentum else None
        return SGDState(_zero_count(), buf, _init_lr(learning_rate))

    def update(grads, state, params=None):
        grads = prepare_grads("sgd", grads, params, maximize=maximize, weight_decay=weight_decay)
        lr = resolve_lr(learning_rate, state.count)
        buf = state.momentum
        if use_momentum:
            first = state.count == 0
            buf = tree_map(lambda b, g: jnp.where(first, g, momentum * b + (1 - dampening) * g).astype(g.dtype),
                           buf, grads)
            d = tree_map(lambda g, b: g + momentum * b, grads, buf) if nesterov else buf
        else:
            d = grads
        updates = tree_map(lambda x: (-scalar(lr, x) * x).astype(x.dtype), d)
        return updates, SGDState(state.count + 1, buf, lr_record(lr))

    return GradientTransformation(init, update)


class AdagradState(NamedTuple):
    count: jax.Array
    sum_sq: Any
    lr: jax.Array


def adagrad(learning_rate=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10,
            maximize=False):
    """Adagrad (Duchi et al. 2011), as ``torch.optim.Adagrad`` (eps added *after* the square root).

        g_t = grad + weight_decay * p_{t-1}
        lr_t = lr / (1 + (t - 1) * lr_decay)
        s_t = s_{t-1} + g_t^2                          (s_0 = initial_accumulator_value)
        p_t = p_{t-1} - lr_t * g_t / (sqrt(s_t) + eps)
    """
    check_lr("adagrad", learning_rate)
    check_range("adagrad", "lr_decay", lr_decay, 0.0, None)
    check_range("adagrad", "weight_decay", weight_decay, 0.0, None)
    check_range("adagrad", "initial_accumulator_value", initial_accumulator_value, 0.0, None)
    check_range("adagrad", "eps", eps, 0.0, None)

    def init(params):
        s = tree_map(lambda p: jnp.full_like(p, initial_accumulator_value), params)
        return AdagradState(_zero_count(), s, _init_lr(learning_rate))

    def update(grads, state, params=None):
        grads = prepare_grads("adagrad", grads, params, maximize=maximize, weight_decay=weight_decay)
        lr = resolve_lr(learning_rate, state.count)
        s = tree_map(lambda s, g: s + g * g, state.sum_sq, grads)

        clr = lr / (1 + step_float(state.count) * lr_decay)

        def step(g, s):
            return (-scalar(clr, g) * g / (sqrt0(s) + eps)).astype(g.dtype)

        return tree_map(step, grads, s), AdagradState(state.count + 1, s, lr_record(lr))

    return GradientTransformation(init, update)


class RMSpropState(NamedTuple):
    count: jax.Array
    square_avg: Any
    grad_avg: Any
    momentum: Any
    lr: jax.Array


def rmsprop(learning_rate=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
            maximize=False):
    """RMSprop (Hinton's lecture 6e), as ``torch.optim.RMSprop``.

        g_t = grad + weight_decay * p_{t-1}
        v_t = alpha * v_{t-1} + (1 - alpha) * g_t^2
        a_t = alpha * a_{t-1} + (1 - alpha) * g_t                     (centered only)
        d_t = sqrt(v_t - a_t^2) + eps   (centered)   |   sqrt(v_t) + eps
        b_t = momentum * b_{t-1} + g_t / d_t,   p_t = p_{t-1} - lr * b_t     (momentum > 0)
        p_t = p_{t-1} - lr * g_t / d_t                                       (otherwise)

    Centering divides by an estimate of the gradient's standard deviation instead of its RMS.
    """
    check_lr("rmsprop", learning_rate)
    check_range("rmsprop", "alpha", alpha, 0.0, 1.0)
    check_range("rmsprop", "eps", eps, 0.0, None)
    check_range("rmsprop", "momentum", momentum, 0.0, None)
    check_range("rmsprop", "weight_decay", weight_decay, 0.0, None)
    use_momentum = nonzero(momentum)

    def init(params):
        z = lambda: tree_map(jnp.zeros_like, params)      # a fresh buffer per moment (donation-safe)
        return RMSpropState(_zero_count(), z(), z() if centered else None, z() if use_momentum else None,
                            _init_lr(learning_rate))

    def update(grads, state, params=None):
        grads = prepare_grads("rmsprop", grads, params, maximize=maximize, weight_decay=weight_decay)
        lr = resolve_lr(learning_rate, state.count)
        v = tree_map(lambda v, g: alpha * v + (1 - alpha) * g * g, state.square_avg, grads)
        if centered:
            a = tree_map(lambda a, g: a + (1 - alpha) * (g - a), state.grad_avg, grads)
            denom = tree_map(lambda v, a: sqrt0(v - a * a) + eps, v, a)
        else:
            a = None
            denom = tree_map(lambda v: sqrt0(v) + eps, v)
        if use_momentum:
            buf = tree_map(lambda b, g, d: momentum * b + g / d, state.momentum, grads, denom)
            updates = tree_map(lambda b: (-scalar(lr, b) * b).astype(b.dtype), buf)
        else:
            buf = None
            updates = tree_map(lambda g, d: (-scalar(lr, g) * g / d).astype(g.dtype), grads, denom)
        return updates, RMSpropState(state.count + 1, v, a, buf, lr_record(lr))

    return GradientTransformation(init, update)


class AdadeltaState(NamedTuple):
    count: jax.Array
    square_avg: Any
    acc_delta: Any
    lr: jax.Array


def adadelta(learning_rate=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False):
    """Adadelta (Zeiler 2012), as ``torch.optim.Adadelta``: the step's units come from past steps.

        g_t = grad + weight_decay * p_{t-1}
        v_t = rho * v_{t-1} + (1 - rho) * g_t^2
        delta_t = sqrt(u_{t-1} + eps) / sqrt(v_t + eps) * g_t
        u_t = rho * u_{t-1} + (1 - rho) * delta_t^2
        p_t = p_{t-1} - lr * delta_t
    """
    check_lr("adadelta", learning_rate)
    check_range("adadelta", "rho", rho, 0.0, 1.0, hi_open=False)
    check_range("adadelta", "eps", eps, 0.0, None)
    check_range("adadelta", "weight_decay", weight_decay, 0.0, None)

    def init(params):
        z = lambda: tree_map(jnp.zeros_like, params)      # a fresh buffer per moment (donation-safe)
        return AdadeltaState(_zero_count(), z(), z(), _init_lr(learning_rate))

    def update(grads, state, params=None):
        grads = prepare_grads("adadelta", grads, params, maximize=maximize, weight_decay=weight_decay)
        lr = resolve_lr(learning_rate, state.count)
        v = tree_map(lambda v, g: rho * v + (1 - rho) * g * g, state.square_avg, grads)
        delta = tree_map(lambda u, v, g: jnp.sqrt((u + eps) / (v + eps)) * g, state.acc_delta, v, grads)  # one sqrt
        u = tree_map(lambda u, d: rho * u + (1 - rho) * d * d, state.acc_delta, delta)
        updates = tree_map(lambda d: (-scalar(lr, d) * d).astype(d.dtype), delta)
        return updates, AdadeltaState(state.count + 1, v, u, lr_record(lr))

    return GradientTransformation(init, update)
