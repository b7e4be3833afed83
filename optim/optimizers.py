"""Optimizers with torch.optim's update rules, names and defaults (DESIGN.md).

Every update is returned as the *change* to add to the parameters (``apply_updates`` adds it).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .base import GradientTransformation, check_tree_match, resolve_lr

__all__ = ["sgd", "adam"]


def _check_lr(name, learning_rate):
    if not callable(learning_rate) and learning_rate < 0:
        raise ValueError(f"{name}: learning_rate must be >= 0, got {learning_rate}")


def _tmap(f, *trees):
    return jax.tree.map(lambda *x: None if x[0] is None else f(*x), *trees, is_leaf=lambda x: x is None)


class SGDState(NamedTuple):
    step: jax.Array
    momentum: Any
    lr: jax.Array


def sgd(learning_rate=1e-3, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    """Stochastic gradient descent as torch.optim.SGD.

        g_t = grad + weight_decay * p
        b_t = g_t                                   (t = 1)
        b_t = momentum * b_{t-1} + (1 - dampening) g_t   (t > 1)
        d_t = g_t + momentum * b_t   if nesterov else   b_t     (d_t = g_t without momentum)
        p_t = p_{t-1} - lr * d_t
    """
    _check_lr("sgd", learning_rate)
    if momentum < 0:
        raise ValueError(f"sgd: momentum must be >= 0, got {momentum}")
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("sgd: nesterov momentum requires momentum > 0 and dampening = 0 (as torch)")

    def init(params):
        buf = _tmap(jnp.zeros_like, params) if momentum else None
        return SGDState(jnp.zeros([], jnp.int32), buf, jnp.asarray(resolve_lr(learning_rate, 0), jnp.float32))

    def update(grads, state, params=None):
        check_tree_match(grads, params)
        if weight_decay:
            grads = _tmap(lambda g, p: g + weight_decay * p, grads, params)
        lr = resolve_lr(learning_rate, state.step)
        buf = state.momentum
        if momentum:
            first = state.step == 0
            buf = _tmap(lambda b, g: jnp.where(first, g, momentum * b + (1 - dampening) * g), buf, grads)
            d = _tmap(lambda g, b: g + momentum * b, grads, buf) if nesterov else buf
        else:
            d = grads
        updates = _tmap(lambda x: (-lr * x).astype(x.dtype), d)
        return updates, SGDState(state.step + 1, buf, jnp.asarray(lr, jnp.float32))

    return GradientTransformation(init, update)


class AdamState(NamedTuple):
    step: jax.Array
    mu: Any
    nu: Any
    lr: jax.Array


def adam(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0):
    """Adam (Kingma & Ba 2015) as torch.optim.Adam (L2 penalty added to the gradient):

        g_t = grad + weight_decay * p
        m_t = b1 m_{t-1} + (1 - b1) g_t          v_t = b2 v_{t-1} + (1 - b2) g_t^2
        m^_t = m_t / (1 - b1^t)                  v^_t = v_t / (1 - b2^t)
        p_t = p_{t-1} - lr m^_t / (sqrt(v^_t) + eps)
    """
    _check_lr("adam", learning_rate)
    for n, b in (("b1", b1), ("b2", b2)):
        if not 0.0 <= b < 1.0:
            raise ValueError(f"adam: {n} must lie in [0, 1), got {b}")

    def init(params):
        z = _tmap(jnp.zeros_like, params)
        return AdamState(jnp.zeros([], jnp.int32), z, z, jnp.asarray(resolve_lr(learning_rate, 0), jnp.float32))

    def update(grads, state, params=None):
        check_tree_match(grads, params)
        if weight_decay:
            grads = _tmap(lambda g, p: g + weight_decay * p, grads, params)
        t = state.step + 1
        lr = resolve_lr(learning_rate, state.step)
        mu = _tmap(lambda m, g: b1 * m + (1 - b1) * g, state.mu, grads)
        nu = _tmap(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, grads)
        c1 = 1 - b1 ** t.astype(jnp.float32)
        c2 = 1 - b2 ** t.astype(jnp.float32)
        updates = _tmap(lambda m, v: (-lr * (m / c1) / (jnp.sqrt(v / c2) + eps)).astype(m.dtype), mu, nu)
        return updates, AdamState(t, mu, nu, jnp.asarray(lr, jnp.float32))

    return GradientTransformation(init, update)
