"""The rules' scaling transforms: each turns a gradient into a step direction, with no learning rate.

Chain one with ``scale_by_learning_rate`` to get an optimizer; the named optimizers (``sgd``, ``adam``, ...)
are exactly such chains. In the equations ``g`` is the incoming update, ``t = 1, 2, ...`` the step (the chain
hands a step-aware transform ``count = t - 1``, kept by ``scale_by_learning_rate``) and ``u`` the output.

Every exponential moving average here is one of two helpers: ``ema`` (``m + (1 - b)(g - m)``, torch's
``lerp``) for a first moment and ``ema_sq`` (``b v + (1 - b) g^2``) for a second moment; ``bias_correction``
is ``1 - b^t``. Why the correction: with ``m_0 = 0``, ``m_t = (1 - b1) sum_k b1^(t-k) g_k``, so for
gradients of a constant mean ``E[m_t] = (1 - b1^t) E[g]``; dividing by ``1 - b1^t`` removes the pull
towards zero of the first steps.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .base import (
    GradientTransformation,
    check_range,
    float_dtype,
    need_count,
    nonzero,
    one_minus_pow,
    pow_,
    scalar,
    sqrt0,
    tree_map,
)

__all__ = [
    "ema", "ema_sq", "bias_correction", "scale_by_momentum", "scale_by_adagrad", "scale_by_rms",
    "scale_by_adadelta", "scale_by_adam", "scale_by_adamax", "scale_by_nadam", "scale_by_radam",
]


def ema(moments, grads, decay):
    """First moment, leaf by leaf: ``m <- m + (1 - decay) (g - m)``."""
    return tree_map(lambda m, g: m + (1 - decay) * (g - m), moments, grads)


def ema_sq(moments, grads, decay):
    """Second moment, leaf by leaf: ``v <- decay v + (1 - decay) g^2``."""
    return tree_map(lambda v, g: decay * v + (1 - decay) * g * g, moments, grads)


def bias_correction(decay, t):
    """``1 - decay^t`` in the widest float (as torch's Python-float arithmetic), without cancellation."""
    return one_minus_pow(decay, t)


def _zeros(params):
    return tree_map(jnp.zeros_like, params)          # a fresh buffer per moment (donation-safe)


def _cast(tree, like):
    return tree_map(lambda x, y: x.astype(y.dtype), tree, like)


class MomentumState(NamedTuple):
    momentum: Any


def scale_by_momentum(momentum=0.9, dampening=0.0, nesterov=False) -> GradientTransformation:
    """Heavy-ball momentum as torch's SGD (the buffer starts at the first gradient):

        b_1 = g_1,     b_t = momentum * b_{t-1} + (1 - dampening) * g_t          (t > 1)
        u_t = g_t + momentum * b_t  (nesterov)   |   b_t

    Needs the step count only with dampening (from t = 1 on, b_0 = 0 gives b_1 = g_1 anyway without it).
    """
    check_range("scale_by_momentum", "momentum", momentum, 0.0, None)
    check_range("scale_by_momentum", "dampening", dampening, 0.0, 1.0, hi_open=False)
    damped = nonzero(dampening)

    def update(grads, state, params=None, *, count=None):
        if damped:
            first = need_count("scale_by_momentum", count) == 1
            buf = tree_map(lambda b, g: jnp.where(first, g, momentum * b + (1 - dampening) * g).astype(g.dtype),
                           state.momentum, grads)
        else:
            buf = tree_map(lambda b, g: (momentum * b + g).astype(g.dtype), state.momentum, grads)
        out = tree_map(lambda g, b: g + momentum * b, grads, buf) if nesterov else buf
        return out, MomentumState(buf)

    return GradientTransformation(lambda params: MomentumState(_zeros(params)), update)


class AdagradState(NamedTuple):
    sum_sq: Any


def scale_by_adagrad(initial_accumulator_value=0.0, eps=1e-10, lr_decay=0.0) -> GradientTransformation:
    """Adagrad's scaling, as torch (eps added after the square root, torch's ``lr_decay``):

        s_t = s_{t-1} + g_t^2                          (s_0 = initial_accumulator_value)
        u_t = g_t / (sqrt(s_t) + eps) / (1 + (t - 1) * lr_decay)
    """
    check_range("scale_by_adagrad", "initial_accumulator_value", initial_accumulator_value, 0.0, None)
    check_range("scale_by_adagrad", "eps", eps, 0.0, None)
    check_range("scale_by_adagrad", "lr_decay", lr_decay, 0.0, None)
    decays = nonzero(lr_decay)

    def init(params):
        return AdagradState(tree_map(lambda p: jnp.full_like(p, initial_accumulator_value), params))

    def update(grads, state, params=None, *, count=None):
        s = tree_map(lambda s, g: s + g * g, state.sum_sq, grads)
        factor = 1 / (1 + (need_count("scale_by_adagrad", count) - 1) * lr_decay) if decays else 1.0
        out = tree_map(lambda g, s: (scalar(factor, g) * g / (sqrt0(s) + eps)).astype(g.dtype), grads, s)
        return out, AdagradState(s)

    return GradientTransformation(init, update)


class RMSState(NamedTuple):
    square_avg: Any
    grad_avg: Any         # None unless centered


def scale_by_rms(decay=0.99, eps=1e-8, centered=False) -> GradientTransformation:
    """RMSprop's scaling, as torch (eps after the square root):

        v_t = decay v_{t-1} + (1 - decay) g_t^2
        a_t = a_{t-1} + (1 - decay) (g_t - a_{t-1})                      (centered only)
        u_t = g_t / (sqrt(v_t - a_t^2) + eps)   (centered)   |   g_t / (sqrt(v_t) + eps)

    Centering divides by an estimate of the gradient's standard deviation instead of its RMS.
    """
    check_range("scale_by_rms", "decay", decay, 0.0, 1.0)
    check_range("scale_by_rms", "eps", eps, 0.0, None)

    def init(params):
        return RMSState(_zeros(params), _zeros(params) if centered else None)

    def update(grads, state, params=None):
        v = ema_sq(state.square_avg, grads, decay)
        a = ema(state.grad_avg, grads, decay) if centered else None
        var = tree_map(lambda v, a: v - a * a, v, a) if centered else v
        return tree_map(lambda g, s: (g / (sqrt0(s) + eps)).astype(g.dtype), grads, var), RMSState(v, a)

    return GradientTransformation(init, update)


class AdadeltaState(NamedTuple):
    square_avg: Any
    acc_delta: Any


def scale_by_adadelta(rho=0.9, eps=1e-6) -> GradientTransformation:
    """Adadelta's scaling (Zeiler 2012), as torch: the step's units come from past steps.

        v_t = rho v_{t-1} + (1 - rho) g_t^2
        u_t = sqrt(d_{t-1} + eps) / sqrt(v_t + eps) * g_t
        d_t = rho d_{t-1} + (1 - rho) u_t^2
    """
    check_range("scale_by_adadelta", "rho", rho, 0.0, 1.0, hi_open=False)
    check_range("scale_by_adadelta", "eps", eps, 0.0, None)

    def update(grads, state, params=None):
        v = ema_sq(state.square_avg, grads, rho)
        out = tree_map(lambda d, v, g: jnp.sqrt((d + eps) / (v + eps)) * g, state.acc_delta, v, grads)  # one sqrt
        return out, AdadeltaState(v, ema_sq(state.acc_delta, out, rho))

    return GradientTransformation(lambda params: AdadeltaState(_zeros(params), _zeros(params)), update)


class AdamState(NamedTuple):
    mu: Any
    nu: Any
    nu_max: Any           # None unless amsgrad


def scale_by_adam(b1=0.9, b2=0.999, eps=1e-8, amsgrad=False) -> GradientTransformation:
    """Adam's scaling (Kingma & Ba 2015), as torch; AMSGrad's running maximum with ``amsgrad``:

        m_t = b1 m_{t-1} + (1 - b1) g_t            v_t = b2 v_{t-1} + (1 - b2) g_t^2
        v'_t = max(v'_{t-1}, v_t)  (amsgrad)       v'_t = v_t  (otherwise)
        u_t = m_t / (1 - b1^t) / (sqrt(v'_t) / sqrt(1 - b2^t) + eps)
    """
    check_range("scale_by_adam", "b1", b1, 0.0, 1.0)
    check_range("scale_by_adam", "b2", b2, 0.0, 1.0)
    check_range("scale_by_adam", "eps", eps, 0.0, None)

    def init(params):
        return AdamState(_zeros(params), _zeros(params), _zeros(params) if amsgrad else None)

    def update(grads, state, params=None, *, count=None):
        t = need_count("scale_by_adam", count)
        mu, nu = ema(state.mu, grads, b1), ema_sq(state.nu, grads, b2)
        nu_max = tree_map(jnp.maximum, state.nu_max, nu) if amsgrad else None
        inv_bc1 = 1 / bias_correction(b1, t)                 # step scalars in the widest float, as torch
        bc2_sqrt = jnp.sqrt(bias_correction(b2, t))

        def step(m, v):
            return scalar(inv_bc1, m) * m / (sqrt0(v) / scalar(bc2_sqrt, m) + eps)

        return _cast(tree_map(step, mu, nu_max if amsgrad else nu), mu), AdamState(mu, nu, nu_max)

    return GradientTransformation(init, update)


class AdamaxState(NamedTuple):
    mu: Any
    inf_norm: Any


def scale_by_adamax(b1=0.9, b2=0.999, eps=1e-8) -> GradientTransformation:
    """Adamax's scaling (Kingma & Ba 2015, section 7), as torch: Adam with the infinity norm.

        m_t = b1 m_{t-1} + (1 - b1) g_t        n_t = max(b2 n_{t-1}, |g_t| + eps)
        u_t = m_t / (1 - b1^t) / n_t
    """
    check_range("scale_by_adamax", "b1", b1, 0.0, 1.0)
    check_range("scale_by_adamax", "b2", b2, 0.0, 1.0)
    check_range("scale_by_adamax", "eps", eps, 0.0, None)

    def update(grads, state, params=None, *, count=None):
        inv_bc1 = 1 / bias_correction(b1, need_count("scale_by_adamax", count))
        mu = ema(state.mu, grads, b1)
        n = tree_map(lambda n, g: jnp.maximum(b2 * n, jnp.abs(g) + eps), state.inf_norm, grads)
        return tree_map(lambda m, n: (scalar(inv_bc1, m) * m / n).astype(m.dtype), mu, n), AdamaxState(mu, n)

    return GradientTransformation(lambda params: AdamaxState(_zeros(params), _zeros(params)), update)


class NAdamState(NamedTuple):
    mu_product: jax.Array
    mu: Any
    nu: Any


def scale_by_nadam(b1=0.9, b2=0.999, eps=1e-8, momentum_decay=4e-3) -> GradientTransformation:
    """NAdam's scaling (Dozat 2016), as torch: Adam with Nesterov momentum and a momentum warm-up.

        mu_t = b1 (1 - 0.5 * 0.96^(t * momentum_decay))          P_t = prod_{k<=t} mu_k
        m_t = b1 m_{t-1} + (1 - b1) g_t                          v_t = b2 v_{t-1} + (1 - b2) g_t^2
        d_t = sqrt(v_t / (1 - b2^t)) + eps
        u_t = (1 - mu_t) / (1 - P_t) * g_t / d_t + mu_{t+1} / (1 - P_t mu_{t+1}) * m_t / d_t

    The first term is the current gradient's share, the second the momentum looked ahead one step.
    """
    check_range("scale_by_nadam", "b1", b1, 0.0, 1.0)
    check_range("scale_by_nadam", "b2", b2, 0.0, 1.0)
    check_range("scale_by_nadam", "eps", eps, 0.0, None)
    check_range("scale_by_nadam", "momentum_decay", momentum_decay, 0.0, None)

    def init(params):
        return NAdamState(jnp.ones([], float_dtype()), _zeros(params), _zeros(params))

    def update(grads, state, params=None, *, count=None):
        t = need_count("scale_by_nadam", count)
        mu_t = b1 * (1.0 - 0.5 * pow_(0.96, t * momentum_decay))
        mu_next = b1 * (1.0 - 0.5 * pow_(0.96, (t + 1) * momentum_decay))
        mu_product = state.mu_product * mu_t
        bc2 = bias_correction(b2, t)
        c_g = (1 - mu_t) / (1 - mu_product)
        c_m = mu_next / (1 - mu_product * mu_next)
        mu, nu = ema(state.mu, grads, b1), ema_sq(state.nu, grads, b2)

        def step(g, m, v):
            denom = sqrt0(v / scalar(bc2, g)) + eps
            return (scalar(c_g, g) * g / denom + scalar(c_m, g) * m / denom).astype(g.dtype)

        return tree_map(step, grads, mu, nu), NAdamState(mu_product, mu, nu)

    return GradientTransformation(init, update)


def scale_by_radam(b1=0.9, b2=0.999, eps=1e-8) -> GradientTransformation:
    """RAdam's scaling (Liu et al. 2020), as torch: Adam's adaptive step switched on only once the variance
    of the adaptive learning rate is tractable, and then rectified.

        m_t = b1 m_{t-1} + (1 - b1) g_t          v_t = b2 v_{t-1} + (1 - b2) g_t^2
        m^_t = m_t / (1 - b1^t)
        rho_inf = 2 / (1 - b2) - 1               rho_t = rho_inf - 2 t b2^t / (1 - b2^t)
        u_t = m^_t * r_t * sqrt(1 - b2^t) / (sqrt(v_t) + eps)      if rho_t > 5, with
              r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
        u_t = m^_t                                                  otherwise (SGD with momentum)
    """
    check_range("scale_by_radam", "b1", b1, 0.0, 1.0)
    check_range("scale_by_radam", "b2", b2, 0.0, 1.0)
    check_range("scale_by_radam", "eps", eps, 0.0, None)

    def update(grads, state, params=None, *, count=None):
        t = need_count("scale_by_radam", count)
        mu, nu = ema(state.mu, grads, b1), ema_sq(state.nu, grads, b2)
        bc1, bc2 = bias_correction(b1, t), bias_correction(b2, t)
        rho_inf = 2 / (1 - b2) - 1
        rho_t = rho_inf - 2 * t * pow_(b2, t) / bc2
        rectify = rho_t > 5
        safe_rho = jnp.where(rectify, rho_t, 6.0)          # keeps the unused branch finite (and its gradient)
        rect = jnp.sqrt((safe_rho - 4) * (safe_rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * safe_rho))

        def step(m, v):
            m_hat = m / scalar(bc1, m)
            adaptive = scalar(jnp.sqrt(bc2), m) / (sqrt0(v) + eps)
            return jnp.where(rectify, m_hat * adaptive * scalar(rect, m), m_hat).astype(m.dtype)

        return tree_map(step, mu, nu), AdamState(mu, nu, None)

    return GradientTransformation(lambda params: AdamState(_zeros(params), _zeros(params), None), update)
