"""Rules from the large-batch / large-model era: LAMB, Lion and Adafactor.

LAMB and Lion have no torch.optim counterpart and follow their papers; Adafactor follows
``torch.optim.Adafactor`` (which has no first moment). Notation as in ``optim/optimizers.py``.
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
    need_params,
    nonzero,
    one_minus_pow,
    prepare_grads,
    resolve_lr,
    resolve_mask,
    scalar,
    sqrt0,
    step_float,
    tree_map,
)

__all__ = ["lamb", "lion", "adafactor"]


def _norm(x):
    return sqrt0(jnp.sum(jnp.square(x)))


class LambState(NamedTuple):
    count: jax.Array
    mu: Any
    nu: Any
    lr: jax.Array


def lamb(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.0, mask=None):
    """LAMB (You et al. 2020, Algorithm 2): Adam's direction plus decoupled decay, rescaled per parameter
    tensor by a trust ratio so every layer moves by the same *relative* amount.

        m_t = b1 m_{t-1} + (1 - b1) g_t           v_t = b2 v_{t-1} + (1 - b2) g_t^2
        r_t = (m_t / (1 - b1^t)) / (sqrt(v_t / (1 - b2^t)) + eps) + weight_decay * p_{t-1}
        p_t = p_{t-1} - lr * (||p_{t-1}|| / ||r_t||) * r_t        (ratio 1 where either norm is 0)

    Norms are per leaf (one leaf is one layer's tensor). ``mask`` selects the leaves that get weight decay.
    """
    check_lr("lamb", learning_rate)
    check_range("lamb", "b1", b1, 0.0, 1.0)
    check_range("lamb", "b2", b2, 0.0, 1.0)
    check_range("lamb", "eps", eps, 0.0, None)
    check_range("lamb", "weight_decay", weight_decay, 0.0, None)

    def init(params):
        z = lambda: tree_map(jnp.zeros_like, params)      # a fresh buffer per moment (donation-safe)
        return LambState(jnp.zeros([], jnp.int32), z(), z(), lr_record(resolve_lr(learning_rate, 0)))

    def update(grads, state, params=None):
        need_params("lamb", params)
        grads = prepare_grads("lamb", grads, params)
        t = state.count + 1
        lr = resolve_lr(learning_rate, state.count)
        mu = tree_map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, grads)
        nu = tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, grads)
        keep = resolve_mask(mask, params)

        tf = step_float(t)
        bc1, bc2 = one_minus_pow(b1, tf), one_minus_pow(b2, tf)

        def step(m, v, p, k):
            r = (m / scalar(bc1, m)) / (sqrt0(v / scalar(bc2, m)) + eps)
            if nonzero(weight_decay):
                r = r + weight_decay * p * k
            p_norm, r_norm = _norm(p), _norm(r)
            ratio = jnp.where((p_norm > 0) & (r_norm > 0), p_norm / jnp.where(r_norm > 0, r_norm, 1), 1.0)
            return (-scalar(lr, m) * ratio * r).astype(m.dtype)

        return tree_map(step, mu, nu, params, keep), LambState(t, mu, nu, lr_record(lr))

    return GradientTransformation(init, update)


class LionState(NamedTuple):
    count: jax.Array
    mu: Any
    lr: jax.Array


def lion(learning_rate=1e-4, b1=0.9, b2=0.99, weight_decay=0.0, mask=None):
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"): the sign of an
    interpolation between momentum and gradient, so every coordinate moves by exactly ``lr``.

        c_t = b1 m_{t-1} + (1 - b1) g_t
        p_t = p_{t-1} - lr * (sign(c_t) + weight_decay * p_{t-1})       (decay where mask is True)
        m_t = b2 m_{t-1} + (1 - b2) g_t

    Because the step has unit size per coordinate, Lion wants a learning rate 3-10x smaller than AdamW's
    and a weight decay 3-10x larger.
    """
    check_lr("lion", learning_rate)
    check_range("lion", "b1", b1, 0.0, 1.0)
    check_range("lion", "b2", b2, 0.0, 1.0)
    check_range("lion", "weight_decay", weight_decay, 0.0, None)

    def init(params):
        return LionState(jnp.zeros([], jnp.int32), tree_map(jnp.zeros_like, params),
                         lr_record(resolve_lr(learning_rate, 0)))

    def update(grads, state, params=None):
        grads = prepare_grads("lion", grads, params)
        lr = resolve_lr(learning_rate, state.count)
        direction = tree_map(lambda m, g: jnp.sign(b1 * m + (1 - b1) * g), state.mu, grads)
        if nonzero(weight_decay):
            need_params("lion", params)
            keep = resolve_mask(mask, params)
            direction = tree_map(lambda d, p, k: d + weight_decay * p * k, direction, params, keep)
        updates = tree_map(lambda d: (-scalar(lr, d) * d).astype(d.dtype), direction)
        mu = tree_map(lambda m, g: b2 * m + (1 - b2) * g, state.mu, grads)
        return updates, LionState(state.count + 1, mu, lr_record(lr))

    return GradientTransformation(init, update)


class AdafactorState(NamedTuple):
    count: jax.Array
    row: Any          # (..., R, 1) for leaves with ndim >= 2, else None
    col: Any          # (..., 1, C) for leaves with ndim >= 2, else None
    variance: Any     # like the leaf for vectors and scalars, else None
    lr: jax.Array


def adafactor(learning_rate=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0, weight_decay=0.0, maximize=False):
    """Adafactor (Shazeer & Stern 2018), as ``torch.optim.Adafactor``: Adam's second moment stored
    factored (one row and one column vector per matrix, O(R + C) memory instead of O(RC)), no first moment,
    relative step sizes and update clipping.

        1 - beta2_t = t^beta2_decay                       (1 at t = 1, so the first estimate is g_1^2)
        rho_t = min(lr, 1 / sqrt(t))                      alpha_t = max(eps2, RMS(p_{t-1})) * rho_t
        matrices (last two axes R x C):
            R_t = beta2_t R_{t-1} + (1 - beta2_t) mean_cols(g_t^2)     (R x 1)
            C_t = beta2_t C_{t-1} + (1 - beta2_t) mean_rows(g_t^2)     (1 x C)
            V_t = R_t C_t / max(mean(R_t), eps1)                       (rank-1 estimate of E[g^2])
        vectors:  V_t = beta2_t V_{t-1} + (1 - beta2_t) g_t^2
        U_t = g_t / sqrt(max(V_t, eps1^2))
        p_t = (1 - lr * weight_decay) p_{t-1} - alpha_t / max(1, RMS(U_t) / d) * U_t

    ``eps = (eps1, eps2)``; ``eps1 = None`` means the machine epsilon of the parameter's dtype.
    The factored estimate is exact when E[g^2] has rank one; it minimises the generalised KL divergence
    to the full second moment among rank-1 non-negative matrices.
    """
    check_lr("adafactor", learning_rate)
    if not isinstance(eps, (tuple, list)) or len(eps) != 2:
        raise ValueError(f"adafactor: eps must be a pair (eps1 or None, eps2), got {eps!r}")
    eps1, eps2 = eps
    check_range("adafactor", "beta2_decay", beta2_decay, -1e9, 0.0, hi_open=False)
    check_range("adafactor", "eps1", eps1, 0.0, None)
    check_range("adafactor", "eps2", eps2, 0.0, None)
    check_range("adafactor", "d", d, 1.0, None)
    check_range("adafactor", "weight_decay", weight_decay, 0.0, None)

    def init(params):
        row = tree_map(lambda p: jnp.zeros(p.shape[:-1] + (1,), p.dtype) if p.ndim >= 2 else None, params)
        col = tree_map(lambda p: jnp.zeros(p.shape[:-2] + (1, p.shape[-1]), p.dtype) if p.ndim >= 2 else None,
                       params)
        var = tree_map(lambda p: jnp.zeros_like(p) if p.ndim < 2 else None, params)
        return AdafactorState(jnp.zeros([], jnp.int32), row, col, var, lr_record(resolve_lr(learning_rate, 0)))

    def update(grads, state, params=None):
        need_params("adafactor", params)
        grads = prepare_grads("adafactor", grads, params, maximize=maximize)
        t = state.count + 1
        lr = resolve_lr(learning_rate, state.count)
        tf = step_float(t)
        w_all = tf**beta2_decay                                        # 1 - beta2_t
        rho_all = jnp.minimum(lr, 1 / jnp.sqrt(tf))
        flat_g, treedef = jax.tree.flatten(grads, is_leaf=lambda x: x is None)
        flat_p = treedef.flatten_up_to(params)
        flat_row = treedef.flatten_up_to(state.row)
        flat_col = treedef.flatten_up_to(state.col)
        flat_var = treedef.flatten_up_to(state.variance)
        out_u, out_row, out_col, out_var = [], [], [], []
        for g, p, r, c, v in zip(flat_g, flat_p, flat_row, flat_col, flat_var, strict=True):
            if g is None:
                out_u.append(None), out_row.append(None), out_col.append(None), out_var.append(None)
                continue
            dt = g.dtype
            e1 = jnp.finfo(dt).eps if eps1 is None else eps1
            w, lr_, rho = scalar(w_all, g), scalar(lr, g), scalar(rho_all, g)
            alpha = jnp.maximum(eps2, _norm(p) / jnp.sqrt(float(p.size))) * rho
            g2 = g * g
            if g.ndim >= 2:
                r = r + w * (jnp.mean(g2, axis=-1, keepdims=True) - r)
                c = c + w * (jnp.mean(g2, axis=-2, keepdims=True) - c)
                v_est = r * c / jnp.maximum(jnp.mean(r, axis=-2, keepdims=True), e1)
            else:
                v = v + w * (g2 - v)
                v_est = v
            u = g * jax.lax.rsqrt(jnp.maximum(v_est, e1 * e1))
            denom = jnp.maximum(1.0, _norm(u) / (jnp.sqrt(float(u.size)) * d))
            step = -alpha / denom * u
            if nonzero(weight_decay):
                step = step - lr_ * weight_decay * p
            out_u.append(step.astype(dt)), out_row.append(r), out_col.append(c), out_var.append(v)
        unflat = lambda xs: jax.tree.unflatten(treedef, xs)
        return unflat(out_u), AdafactorState(t, unflat(out_row), unflat(out_col), unflat(out_var), lr_record(lr))

    return GradientTransformation(init, update)
