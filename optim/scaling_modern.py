"""Scaling transforms of the large-batch / large-model rules: LAMB's trust ratio, Lion's sign step and
Adafactor's factored second moment and relative step size. Notation as in ``optim/scaling.py``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .base import (
    GradientTransformation,
    check_lr,
    check_range,
    need_count,
    need_params,
    resolve_lr,
    scalar,
    sqrt0,
    tree_map,
)
from .scaling import ema
from .transforms import EmptyState

__all__ = ["scale_by_trust_ratio", "scale_by_lion", "scale_by_factored_rms", "scale_by_relative_step"]


def _norm(x):
    return sqrt0(jnp.sum(jnp.square(x)))


def _rms(x):
    return _norm(x) / jnp.sqrt(float(x.size))


def scale_by_trust_ratio() -> GradientTransformation:
    """LAMB's layer-wise trust ratio (You et al. 2020): rescale each leaf so it moves by the same *relative*
    amount, whatever the scale of its gradient:

        u <- (||p|| / ||u||) * u          per leaf (one leaf is one layer's tensor); ratio 1 where a norm is 0
    """

    def update(grads, state, params=None):
        need_params("scale_by_trust_ratio", params)

        def step(u, p):
            p_norm, u_norm = _norm(p), _norm(u)
            ratio = jnp.where((p_norm > 0) & (u_norm > 0), p_norm / jnp.where(u_norm > 0, u_norm, 1), 1.0)
            return (ratio * u).astype(u.dtype)

        return tree_map(step, grads, params), state

    return GradientTransformation(lambda params: EmptyState(), update)


class LionState(NamedTuple):
    mu: Any


def scale_by_lion(b1=0.9, b2=0.99) -> GradientTransformation:
    """Lion's sign step (Chen et al. 2023): the sign of an interpolation between momentum and gradient, so
    every coordinate moves by exactly one unit; the momentum itself is a slower average.

        u_t = sign(b1 m_{t-1} + (1 - b1) g_t)            m_t = b2 m_{t-1} + (1 - b2) g_t
    """
    check_range("scale_by_lion", "b1", b1, 0.0, 1.0)
    check_range("scale_by_lion", "b2", b2, 0.0, 1.0)

    def update(grads, state, params=None):
        out = tree_map(lambda c: jnp.sign(c), ema(state.mu, grads, b1))
        return out, LionState(ema(state.mu, grads, b2))

    return GradientTransformation(lambda params: LionState(tree_map(jnp.zeros_like, params)), update)


class FactoredState(NamedTuple):
    row: Any          # (..., R, 1) for leaves with ndim >= 2, else None
    col: Any          # (..., 1, C) for leaves with ndim >= 2, else None
    variance: Any     # like the leaf for vectors and scalars, else None


def _factored_init(params):
    row = tree_map(lambda p: jnp.zeros(p.shape[:-1] + (1,), p.dtype) if p.ndim >= 2 else None, params)
    col = tree_map(lambda p: jnp.zeros(p.shape[:-2] + (1, p.shape[-1]), p.dtype) if p.ndim >= 2 else None, params)
    var = tree_map(lambda p: jnp.zeros_like(p) if p.ndim < 2 else None, params)
    return FactoredState(row, col, var)


def scale_by_factored_rms(beta2_decay=-0.8, eps1=None, d=1.0) -> GradientTransformation:
    """Adafactor's scaling (Shazeer & Stern 2018), as torch: Adam's second moment stored factored (one row
    and one column vector per matrix, O(R + C) memory instead of O(RC)), and update clipping.

        1 - beta2_t = t^beta2_decay                       (1 at t = 1, so the first estimate is g_1^2)
        matrices (last two axes R x C):
            R_t = beta2_t R_{t-1} + (1 - beta2_t) mean_cols(g_t^2)     (R x 1)
            C_t = beta2_t C_{t-1} + (1 - beta2_t) mean_rows(g_t^2)     (1 x C)
            V_t = R_t C_t / max(mean(R_t), eps1)                       (rank-1 estimate of E[g^2])
        vectors:  V_t = beta2_t V_{t-1} + (1 - beta2_t) g_t^2
        U_t = g_t / sqrt(max(V_t, eps1^2))             u_t = U_t / max(1, RMS(U_t) / d)

    ``eps1 = None`` means the machine epsilon of the leaf's dtype. The factored estimate is exact when E[g^2]
    has rank one; it minimises the generalised KL divergence to the full second moment among rank-1
    non-negative matrices.
    """
    check_range("scale_by_factored_rms", "beta2_decay", beta2_decay, -1e9, 0.0, hi_open=False)
    check_range("scale_by_factored_rms", "eps1", eps1, 0.0, None)
    check_range("scale_by_factored_rms", "d", d, 1.0, None)

    def leaf(g, r, c, v, w_all):
        e1 = jnp.finfo(g.dtype).eps if eps1 is None else eps1
        w, g2 = scalar(w_all, g), g * g
        if g.ndim >= 2:
            r = r + w * (jnp.mean(g2, axis=-1, keepdims=True) - r)
            c = c + w * (jnp.mean(g2, axis=-2, keepdims=True) - c)
            v_est = r * c / jnp.maximum(jnp.mean(r, axis=-2, keepdims=True), e1)
        else:
            v = v + w * (g2 - v)
            v_est = v
        u = g * jax.lax.rsqrt(jnp.maximum(v_est, e1 * e1))
        return (u / jnp.maximum(1.0, _rms(u) / d)).astype(g.dtype), r, c, v

    def update(grads, state, params=None, *, count=None):
        w_all = need_count("scale_by_factored_rms", count) ** beta2_decay           # 1 - beta2_t
        flat_g, treedef = jax.tree.flatten(grads, is_leaf=lambda x: x is None)
        rest = [treedef.flatten_up_to(s) for s in state]
        outs = [(None,) * 4 if g is None else leaf(g, r, c, v, w_all) for g, r, c, v in zip(flat_g, *rest, strict=True)]
        u, r, c, v = (jax.tree.unflatten(treedef, list(xs)) for xs in zip(*outs, strict=True))
        return u, FactoredState(r, c, v)

    return GradientTransformation(_factored_init, update)


def scale_by_relative_step(learning_rate, eps2=1e-3) -> GradientTransformation:
    """Adafactor's relative step size, written relative to the learning rate that follows it in the chain:

        rho_t = min(lr_t, 1 / sqrt(t))          alpha_t = max(eps2, RMS(p_{t-1})) * rho_t
        u <- (alpha_t / lr_t) * u               (so that scale_by_learning_rate(lr) then steps -alpha_t u)

    The step is a fraction of the parameter's own scale; ``1 / sqrt(t)`` caps the learning rate early on.
    """
    check_lr("scale_by_relative_step", learning_rate)
    check_range("scale_by_relative_step", "eps2", eps2, 0.0, None)

    def update(grads, state, params=None, *, count=None):
        need_params("scale_by_relative_step", params)
        t = need_count("scale_by_relative_step", count)
        lr_sqrt_t = resolve_lr(learning_rate, count) * jnp.sqrt(t)
        cap = jnp.where(lr_sqrt_t > 1, 1 / jnp.where(lr_sqrt_t > 1, lr_sqrt_t, 1), 1.0)     # rho_t / lr_t
        return tree_map(lambda u, p: (scalar(cap, u) * jnp.maximum(eps2, _rms(p)) * u).astype(u.dtype),
                        grads, params), state

    return GradientTransformation(lambda params: EmptyState(), update)
