"""The Adam family, with torch.optim's update rules, names and defaults (``betas`` are ``b1``, ``b2``).

In the equations ``g`` is the gradient (negated first when ``maximize``), ``p`` the parameter,
``t = 1, 2, ...`` the step and ``lr`` the learning rate of step t (a schedule is called with ``t - 1``).

Why the bias correction: with ``m_0 = 0``, ``m_t = (1 - b1) sum_k b1^(t-k) g_k``, so for gradients of a
constant mean ``E[m_t] = (1 - b1^t) E[g]``. Dividing by ``1 - b1^t`` (and ``v_t`` by ``1 - b2^t``) removes
the pull towards zero of the first steps; without it the first step of Adam would be ``sqrt(1 - b2)/(1 - b1)``
times too small (0.32 for the defaults).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .base import (
    GradientTransformation,
    check_lr,
    check_range,
    float_dtype,
    lr_record,
    need_params,
    nonzero,
    one_minus_pow,
    pow_,
    prepare_grads,
    resolve_lr,
    resolve_mask,
    scalar,
    sqrt0,
    step_float,
    tree_map,
)

__all__ = ["adam", "adamw", "adamax", "nadam", "radam"]


def _check_betas(name, b1, b2):
    check_range(name, "b1", b1, 0.0, 1.0)
    check_range(name, "b2", b2, 0.0, 1.0)


class AdamState(NamedTuple):
    count: jax.Array
    mu: Any
    nu: Any
    nu_max: Any
    lr: jax.Array


def _adam_core(name, learning_rate, b1, b2, eps, weight_decay, amsgrad, maximize, decoupled, mask=None):
    check_lr(name, learning_rate)
    _check_betas(name, b1, b2)
    check_range(name, "eps", eps, 0.0, None)
    check_range(name, "weight_decay", weight_decay, 0.0, None)

    def init(params):
        z = lambda: tree_map(jnp.zeros_like, params)      # a fresh buffer per moment (donation-safe)
        return AdamState(jnp.zeros([], jnp.int32), z(), z(), z() if amsgrad else None,
                         lr_record(resolve_lr(learning_rate, 0)))

    def update(grads, state, params=None):
        grads = prepare_grads(name, grads, params, maximize=maximize,
                              weight_decay=0.0 if decoupled else weight_decay)
        t = state.count + 1
        lr = resolve_lr(learning_rate, state.count)
        mu = tree_map(lambda m, g: m + (1 - b1) * (g - m), state.mu, grads)
        nu = tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, grads)
        nu_max = tree_map(jnp.maximum, state.nu_max, nu) if amsgrad else None
        second = nu_max if amsgrad else nu

        tf = step_float(t)
        step_size = lr / one_minus_pow(b1, tf)                 # step scalars in the widest float, as torch
        bc2_sqrt = jnp.sqrt(one_minus_pow(b2, tf))

        def step(m, v):
            return -scalar(step_size, m) * m / (sqrt0(v) / scalar(bc2_sqrt, m) + eps)

        updates = tree_map(step, mu, second)
        if decoupled and nonzero(weight_decay):
            need_params(name, params)
            keep = resolve_mask(mask, params)
            updates = tree_map(lambda u, p, k: u - scalar(lr, p) * weight_decay * p * k, updates, params, keep)
        updates = tree_map(lambda u, m: u.astype(m.dtype), updates, mu)
        return updates, AdamState(t, mu, nu, nu_max, lr_record(lr))

    return GradientTransformation(init, update)


def adam(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False):
    """Adam (Kingma & Ba 2015), as ``torch.optim.Adam`` (weight decay is an L2 term added to the gradient):

        g_t = grad + weight_decay * p_{t-1}
        m_t = b1 m_{t-1} + (1 - b1) g_t            v_t = b2 v_{t-1} + (1 - b2) g_t^2
        v'_t = max(v'_{t-1}, v_t)  (amsgrad)       v'_t = v_t  (otherwise)
        p_t = p_{t-1} - lr / (1 - b1^t) * m_t / (sqrt(v'_t) / sqrt(1 - b2^t) + eps)
    """
    return _adam_core("adam", learning_rate, b1, b2, eps, weight_decay, amsgrad, maximize, decoupled=False)


def adamw(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-2, amsgrad=False, maximize=False,
          mask=None):
    """AdamW (Loshchilov & Hutter 2019), as ``torch.optim.AdamW``: weight decay decoupled from the gradient.

        p'_{t-1} = p_{t-1} - lr * weight_decay * p_{t-1}               (where mask is True)
        m_t, v_t, v'_t as in adam with g_t = grad (no L2 term)
        p_t = p'_{t-1} - lr / (1 - b1^t) * m_t / (sqrt(v'_t) / sqrt(1 - b2^t) + eps)

    With an L2 term the decay passes through the 1/sqrt(v) preconditioner, so parameters with large
    gradients are decayed less; decoupling shrinks every weight by the same factor (1 - lr * wd) per step.
    ``mask``: a pytree of bools like the params, a callable ``params -> mask``, or a regex on leaf paths
    ("layers/0/w") selecting the leaves to decay; e.g. ``optim.decay_mask`` (no decay on vectors: biases
    and norm scales).
    """
    return _adam_core("adamw", learning_rate, b1, b2, eps, weight_decay, amsgrad, maximize, decoupled=True,
                      mask=mask)


class AdamaxState(NamedTuple):
    count: jax.Array
    mu: Any
    inf_norm: Any
    lr: jax.Array


def adamax(learning_rate=2e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, maximize=False):
    """Adamax (Kingma & Ba 2015, section 7), as ``torch.optim.Adamax``: Adam with the infinity norm.

        g_t = grad + weight_decay * p_{t-1}
        m_t = b1 m_{t-1} + (1 - b1) g_t
        u_t = max(b2 u_{t-1}, |g_t| + eps)
        p_t = p_{t-1} - lr / (1 - b1^t) * m_t / u_t
    """
    check_lr("adamax", learning_rate)
    _check_betas("adamax", b1, b2)
    check_range("adamax", "eps", eps, 0.0, None)
    check_range("adamax", "weight_decay", weight_decay, 0.0, None)

    def init(params):
        z = lambda: tree_map(jnp.zeros_like, params)      # a fresh buffer per moment (donation-safe)
        return AdamaxState(jnp.zeros([], jnp.int32), z(), z(), lr_record(resolve_lr(learning_rate, 0)))

    def update(grads, state, params=None):
        grads = prepare_grads("adamax", grads, params, maximize=maximize, weight_decay=weight_decay)
        t = state.count + 1
        lr = resolve_lr(learning_rate, state.count)
        mu = tree_map(lambda m, g: m + (1 - b1) * (g - m), state.mu, grads)
        u = tree_map(lambda u, g: jnp.maximum(b2 * u, jnp.abs(g) + eps), state.inf_norm, grads)

        clr = lr / one_minus_pow(b1, step_float(t))

        def step(m, u):
            return (-scalar(clr, m) * m / u).astype(m.dtype)

        return tree_map(step, mu, u), AdamaxState(t, mu, u, lr_record(lr))

    return GradientTransformation(init, update)


class NAdamState(NamedTuple):
    count: jax.Array
    mu_product: jax.Array
    mu: Any
    nu: Any
    lr: jax.Array


def nadam(learning_rate=2e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
          decoupled_weight_decay=False, maximize=False):
    """NAdam (Dozat 2016), as ``torch.optim.NAdam``: Adam with Nesterov momentum and a momentum warm-up.

        g_t = grad + weight_decay * p_{t-1}     (or p_{t-1} *= 1 - lr * weight_decay if decoupled)
        mu_t = b1 (1 - 0.5 * 0.96^(t * momentum_decay))          P_t = prod_{k<=t} mu_k
        m_t = b1 m_{t-1} + (1 - b1) g_t                          v_t = b2 v_{t-1} + (1 - b2) g_t^2
        d_t = sqrt(v_t / (1 - b2^t)) + eps
        p_t = p_{t-1} - lr (1 - mu_t) / (1 - P_t) * g_t / d_t
                      - lr mu_{t+1} / (1 - P_t mu_{t+1}) * m_t / d_t

    The first term is the current gradient's share, the second the momentum looked ahead one step.
    """
    check_lr("nadam", learning_rate)
    _check_betas("nadam", b1, b2)
    check_range("nadam", "eps", eps, 0.0, None)
    check_range("nadam", "weight_decay", weight_decay, 0.0, None)
    check_range("nadam", "momentum_decay", momentum_decay, 0.0, None)

    def init(params):
        z = lambda: tree_map(jnp.zeros_like, params)      # a fresh buffer per moment (donation-safe)
        return NAdamState(jnp.zeros([], jnp.int32), jnp.ones([], float_dtype()), z(), z(),
                          lr_record(resolve_lr(learning_rate, 0)))

    def update(grads, state, params=None):
        grads = prepare_grads("nadam", grads, params, maximize=maximize,
                              weight_decay=0.0 if decoupled_weight_decay else weight_decay)
        t = state.count + 1
        lr = resolve_lr(learning_rate, state.count)
        tf = step_float(t)
        mu_t = b1 * (1.0 - 0.5 * pow_(0.96, tf * momentum_decay))
        mu_next = b1 * (1.0 - 0.5 * pow_(0.96, (tf + 1) * momentum_decay))
        mu_product = state.mu_product * mu_t
        bc2 = one_minus_pow(b2, tf)
        c_g = -lr * (1 - mu_t) / (1 - mu_product)
        c_m = -lr * mu_next / (1 - mu_product * mu_next)
        mu = tree_map(lambda m, g: m + (1 - b1) * (g - m), state.mu, grads)
        nu = tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, grads)

        def step(g, m, v, p):
            dt = g.dtype
            denom = sqrt0(v / scalar(bc2, g)) + eps
            u = scalar(c_g, g) * g / denom + scalar(c_m, g) * m / denom
            if p is not None:
                u = u - scalar(lr, g) * weight_decay * p
            return u.astype(dt)

        if decoupled_weight_decay and nonzero(weight_decay):
            need_params("nadam", params)
            updates = tree_map(step, grads, mu, nu, params)
        else:
            updates = tree_map(lambda g, m, v: step(g, m, v, None), grads, mu, nu)
        return updates, NAdamState(t, mu_product, mu, nu, lr_record(lr))

    return GradientTransformation(init, update)


class RAdamState(NamedTuple):
    count: jax.Array
    mu: Any
    nu: Any
    lr: jax.Array


def radam(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False,
          maximize=False):
    """RAdam (Liu et al. 2020), as ``torch.optim.RAdam``: Adam whose adaptive step is switched on only once
    the variance of the adaptive learning rate is tractable, and then rectified.

        g_t = grad + weight_decay * p_{t-1}     (or p_{t-1} *= 1 - lr * weight_decay if decoupled)
        m_t = b1 m_{t-1} + (1 - b1) g_t          v_t = b2 v_{t-1} + (1 - b2) g_t^2
        m^_t = m_t / (1 - b1^t)
        rho_inf = 2 / (1 - b2) - 1               rho_t = rho_inf - 2 t b2^t / (1 - b2^t)
        if rho_t > 5:
            r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
            p_t = p_{t-1} - lr * m^_t * r_t * sqrt(1 - b2^t) / (sqrt(v_t) + eps)
        else:
            p_t = p_{t-1} - lr * m^_t                                          (SGD with momentum)
    """
    check_lr("radam", learning_rate)
    _check_betas("radam", b1, b2)
    check_range("radam", "eps", eps, 0.0, None)
    check_range("radam", "weight_decay", weight_decay, 0.0, None)

    def init(params):
        z = lambda: tree_map(jnp.zeros_like, params)      # a fresh buffer per moment (donation-safe)
        return RAdamState(jnp.zeros([], jnp.int32), z(), z(), lr_record(resolve_lr(learning_rate, 0)))

    def update(grads, state, params=None):
        grads = prepare_grads("radam", grads, params, maximize=maximize,
                              weight_decay=0.0 if decoupled_weight_decay else weight_decay)
        t = state.count + 1
        lr = resolve_lr(learning_rate, state.count)
        mu = tree_map(lambda m, g: m + (1 - b1) * (g - m), state.mu, grads)
        nu = tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, grads)

        tf = step_float(t)
        bc1, bc2 = one_minus_pow(b1, tf), one_minus_pow(b2, tf)
        rho_inf = 2 / (1 - b2) - 1
        rho_t = rho_inf - 2 * tf * pow_(b2, tf) / bc2
        rectify = rho_t > 5
        safe_rho = jnp.where(rectify, rho_t, 6.0)          # keeps the unused branch finite (and its gradient)
        rect = jnp.sqrt((safe_rho - 4) * (safe_rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * safe_rho))

        def step(m, v, p):
            dt = m.dtype
            m_hat = m / scalar(bc1, m)
            adaptive = scalar(jnp.sqrt(bc2), m) / (sqrt0(v) + eps)
            lr_ = scalar(lr, m)
            u = jnp.where(rectify, -(m_hat * lr_ * adaptive * scalar(rect, m)), -(m_hat * lr_))
            if p is not None:
                u = u - lr_ * weight_decay * p
            return u.astype(dt)

        if decoupled_weight_decay and nonzero(weight_decay):
            need_params("radam", params)
            updates = tree_map(step, mu, nu, params)
        else:
            updates = tree_map(lambda m, v: step(m, v, None), mu, nu)
        return updates, RAdamState(t, mu, nu, lr_record(lr))

    return GradientTransformation(init, update)
