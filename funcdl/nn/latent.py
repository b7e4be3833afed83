"""Latent-variable pieces for autoencoders and VAEs: the reparameterisation trick, KL divergences of diagonal
Gaussians, torch's Gaussian negative log-likelihood and the Bernoulli log-likelihood of logits.

Layouts: the latent axis is the LAST axis (``mu``, ``logvar`` of shape ``(..., D)``); the KLs sum over it and
reduce over the rest ("mean", "sum" or "none"). A variance is parameterised by its logarithm ``logvar`` (so
sigma = exp(logvar / 2) is positive whatever the network outputs), except in ``gaussian_nll_loss``, which
follows torch's ``F.gaussian_nll_loss`` and takes the variance itself.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ..core.examples import Example, keys, normal, uniform
from ..core.primitive import is_concrete, primitive, unbroadcast
from ._space import arr, integer, num, pick, unif
from .losses._common import (
    REDUCTIONS,
    check_elem_weight,
    check_reduction,
    need_float,
    reduce_grad,
    reduce_loss,
    same_shape,
)
from .losses.probabilistic import _binary_cross_entropy_with_logits, _binary_cross_entropy_with_logits_bwd

__all__ = ["reparameterize", "kl_normal", "kl_normal_normal", "gaussian_nll_loss", "bernoulli_log_likelihood"]


def _batch_shape(rng, low=0, high=2):
    return tuple(integer(rng, 1, 4) for _ in range(integer(rng, low, high)))


def _seed(g, reduction, rows_shape):
    """The reduction's factor times the cotangent, one per row, with the latent axis appended (broadcasts)."""
    return jnp.broadcast_to(reduce_grad(g, reduction, rows_shape), rows_shape)[..., None]


# ================================================================================================ reparameterize
def _reparameterize_check(mu, logvar, eps):
    name = "reparameterize"
    for what, v in (("mu", mu), ("logvar", logvar), ("eps", eps)):
        need_float(name, what, v)
    same_shape(name, mu, logvar, ("mu", "logvar"))
    same_shape(name, mu, eps, ("mu", "eps (the standard normal noise)"))
    dtypes = [jnp.result_type(v) for v in (mu, logvar, eps)]
    if len(set(dtypes)) > 1:
        raise ValueError(f"{name}: mu, logvar and eps must share a dtype, got {', '.join(map(str, dtypes))}; "
                         "draw the noise as jax.random.normal(key, mu.shape, mu.dtype)")


def _reparameterize(mu, logvar, eps):
    """The reparameterisation trick: a sample of N(mu, diag sigma^2) with sigma = exp(logvar / 2),
        z = mu + exp(logvar / 2) * eps,       eps ~ N(0, I) drawn by the caller (same shape as mu),
    so z is a differentiable function of (mu, logvar) for a fixed eps. Elementwise, with sigma = exp(logvar/2):
        dmu = dz,   dlogvar = dz * eps * sigma / 2,   deps = dz * sigma.
    Residuals: logvar and eps (sigma is recomputed).
    """
    return mu + jnp.exp(0.5 * logvar) * eps


def _reparameterize_fwd(mu, logvar, eps):
    return _reparameterize(mu, logvar, eps), (logvar, eps)


def _reparameterize_bwd(res, dz):
    logvar, eps = res
    sigma = jnp.exp(0.5 * logvar)
    return dz, (0.5 * dz * eps * sigma).astype(logvar.dtype), (dz * sigma).astype(eps.dtype)


def _reparameterize_examples(key, dtype):
    k = keys(key, 6)
    return [
        Example((normal(k[0], (4, 3), dtype), normal(k[1], (4, 3), dtype, 0.7), normal(k[2], (4, 3), dtype)), {},
                "(4,3)"),
        Example((normal(k[3], (2, 3, 5), dtype), normal(k[4], (2, 3, 5), dtype, 1.5, -1.0),
                 normal(k[5], (2, 3, 5), dtype)), {}, "(2,3,5), small variances"),
    ]


def _reparameterize_space(rng, dtype):
    shape = (*_batch_shape(rng), integer(rng, 1, 5))
    return Example((arr(rng, shape, dtype), arr(rng, shape, dtype, num(rng, 0.3, 1.5), num(rng, -2, 1)),
                    arr(rng, shape, dtype)), {})


reparameterize = primitive("reparameterize", _reparameterize, _reparameterize_fwd, _reparameterize_bwd,
                           examples=_reparameterize_examples, space=_reparameterize_space,
                           check=_reparameterize_check)


# ===================================================================================== KL(N(mu, sigma^2) || N(0, I))
def _kl_normal_check(mu, logvar, *, reduction="mean"):
    name = "kl_normal"
    check_reduction(name, reduction)
    need_float(name, "mu", mu)
    need_float(name, "logvar", logvar)
    same_shape(name, mu, logvar, ("mu", "logvar"))
    if jnp.ndim(mu) == 0:
        raise ValueError(f"{name}: mu and logvar need a latent axis (last), got shape (); use mu[None]")


def _kl_normal(mu, logvar, *, reduction="mean"):
    """KL(N(mu, diag exp(logvar)) || N(0, I)) of each row (the latent axis is the last), then reduced:
        KL = 1/2 sum_j [ exp(lv_j) + mu_j^2 - 1 - lv_j ]        mu, lv (..., D) -> KL (...)
    "mean" averages over the rows (every entry of ``...``), "sum" adds them, "none" keeps (...).
    With g the cotangent of a row's KL times the reduction's factor:
        dmu_j = g mu_j,    dlogvar_j = g (exp(lv_j) - 1) / 2.
    Residuals: mu and logvar.
    """
    rows = 0.5 * jnp.sum(jnp.exp(logvar) + mu * mu - 1 - logvar, axis=-1)
    return reduce_loss(rows, reduction)


def _kl_normal_fwd(mu, logvar, *, reduction="mean"):
    return _kl_normal(mu, logvar, reduction=reduction), (mu, logvar)


def _kl_normal_bwd(res, g, *, reduction="mean"):
    mu, logvar = res
    seed = _seed(g, reduction, mu.shape[:-1])
    return (seed * mu).astype(mu.dtype), (0.5 * seed * (jnp.exp(logvar) - 1)).astype(logvar.dtype)


def _kl_normal_examples(key, dtype):
    k = keys(key, 4)
    mu, lv = normal(k[0], (5, 3), dtype), normal(k[1], (5, 3), dtype, 0.8)
    return [
        Example((mu, lv), {}, "mean"),
        Example((mu, lv), {"reduction": "sum"}, "sum"),
        Example((normal(k[2], (2, 3, 4), dtype), normal(k[3], (2, 3, 4), dtype)), {"reduction": "none"},
                "none, (2,3,4)"),
    ]


def _kl_normal_space(rng, dtype):
    shape = (*_batch_shape(rng), integer(rng, 1, 5))
    return Example((arr(rng, shape, dtype, num(rng, 0.3, 2.0)), arr(rng, shape, dtype, num(rng, 0.3, 1.5))),
                   {"reduction": pick(rng, list(REDUCTIONS))})


kl_normal = primitive("kl_normal", _kl_normal, _kl_normal_fwd, _kl_normal_bwd, examples=_kl_normal_examples,
                      space=_kl_normal_space, check=_kl_normal_check)


# ================================================================================ KL between diagonal Gaussians
def _kl_normal_normal_check(mu_q, logvar_q, mu_p, logvar_p, *, reduction="mean"):
    name = "kl_normal_normal"
    check_reduction(name, reduction)
    for what, v in (("mu_q", mu_q), ("logvar_q", logvar_q), ("mu_p", mu_p), ("logvar_p", logvar_p)):
        need_float(name, what, v)
    same_shape(name, mu_q, logvar_q, ("mu_q", "logvar_q"))
    if jnp.ndim(mu_q) == 0:
        raise ValueError(f"{name}: mu_q and logvar_q need a latent axis (last), got shape (); use mu_q[None]")
    check_elem_weight(name, "mu_p", mu_p, mu_q)
    check_elem_weight(name, "logvar_p", logvar_p, mu_q)


def _kl_normal_normal(mu_q, logvar_q, mu_p, logvar_p, *, reduction="mean"):
    """KL(q || p) for diagonal Gaussians q = N(mu_q, diag exp(lq)), p = N(mu_p, diag exp(lp)), summed over the
    last (latent) axis and reduced over the rows like ``kl_normal``:
        KL = 1/2 sum_j [ lp_j - lq_j + (exp(lq_j) + (mu_q_j - mu_p_j)^2) exp(-lp_j) - 1 ]
    mu_q and lq have one shape (..., D); mu_p and lp broadcast to it (a prior shared by the batch, say (D,)).
    With g the cotangent of a row's KL times the reduction's factor and delta = mu_q - mu_p:
        dmu_q = g delta exp(-lp),                dmu_p = -g delta exp(-lp),
        dlogvar_q = g (exp(lq - lp) - 1) / 2,    dlogvar_p = g (1 - (exp(lq) + delta^2) exp(-lp)) / 2,
    the prior's gradients summed over the axes it was broadcast along. Residuals: the four inputs.
    """
    delta = mu_q - mu_p
    terms = logvar_p - logvar_q + (jnp.exp(logvar_q) + delta * delta) * jnp.exp(-logvar_p) - 1
    return reduce_loss(0.5 * jnp.sum(terms, axis=-1), reduction)


def _kl_normal_normal_fwd(mu_q, logvar_q, mu_p, logvar_p, *, reduction="mean"):
    return _kl_normal_normal(mu_q, logvar_q, mu_p, logvar_p, reduction=reduction), (mu_q, logvar_q, mu_p, logvar_p)


def _kl_normal_normal_bwd(res, g, *, reduction="mean"):
    mu_q, lq, mu_p, lp = res
    seed = _seed(g, reduction, mu_q.shape[:-1])
    delta = mu_q - mu_p
    inv_p = jnp.exp(-lp)
    dmu = seed * delta * inv_p
    dlq = 0.5 * seed * (jnp.exp(lq) * inv_p - 1)
    dlp = 0.5 * seed * (1 - (jnp.exp(lq) + delta * delta) * inv_p)
    return (dmu.astype(mu_q.dtype), dlq.astype(lq.dtype), unbroadcast(-dmu, mu_p.shape).astype(mu_p.dtype),
            unbroadcast(dlp, lp.shape).astype(lp.dtype))


def _kl_normal_normal_examples(key, dtype):
    k = keys(key, 8)
    mq, lq = normal(k[0], (4, 3), dtype), normal(k[1], (4, 3), dtype, 0.7)
    mp, lp = normal(k[2], (4, 3), dtype, 0.5), normal(k[3], (4, 3), dtype, 0.5)
    return [
        Example((mq, lq, mp, lp), {}, "mean"),
        Example((mq, lq, mp, lp), {"reduction": "none"}, "none"),
        Example((normal(k[4], (2, 3, 5), dtype), normal(k[5], (2, 3, 5), dtype, 0.6), normal(k[6], (5,), dtype),
                 normal(k[7], (3, 1), dtype, 0.5)), {"reduction": "sum"}, "sum, prior broadcast"),
    ]


def _prior_shape(rng, shape):
    """q's shape, a trailing part of it, or with some axes 1 (a prior broadcast to q)."""
    form = pick(rng, ["full", "trailing", "ones"])
    if form == "trailing":
        return shape[integer(rng, 0, len(shape)):]
    if form == "ones":
        return tuple(1 if rng.random() < 0.5 else n for n in shape)
    return shape


def _kl_normal_normal_space(rng, dtype):
    shape = (*_batch_shape(rng), integer(rng, 1, 5))
    args = (arr(rng, shape, dtype), arr(rng, shape, dtype, num(rng, 0.3, 1.2)),
            arr(rng, _prior_shape(rng, shape), dtype), arr(rng, _prior_shape(rng, shape), dtype, num(rng, 0.3, 1.2)))
    return Example(args, {"reduction": pick(rng, list(REDUCTIONS))})


kl_normal_normal = primitive("kl_normal_normal", _kl_normal_normal, _kl_normal_normal_fwd, _kl_normal_normal_bwd,
                             examples=_kl_normal_normal_examples, space=_kl_normal_normal_space,
                             check=_kl_normal_normal_check)


# ============================================================================ Gaussian negative log-likelihood
def _var_shape(input_shape, var_shape):
    """torch's rule: var has the input's shape (heteroscedastic), or the input's shape without its last axis
    (unsqueezed to (..., 1)), or the input's rank with exactly one axis of size 1 where the input's differs
    (homoscedastic along that axis), or a scalar (torch: a Python float); None when none of these holds."""
    if var_shape == input_shape or var_shape == ():
        return var_shape
    if var_shape == input_shape[:-1] and len(input_shape) > 0:
        return (*var_shape, 1)
    if len(var_shape) == len(input_shape):
        differ = [v for n, v in zip(input_shape, var_shape, strict=True) if n != v]
        if differ == [1]:
            return var_shape
    return None


def _gaussian_nll_loss_check(input, target, var, *, full=False, eps=1e-6, reduction="mean"):
    name = "gaussian_nll_loss"
    check_reduction(name, reduction)
    need_float(name, "input", input)
    need_float(name, "target", target)
    same_shape(name, input, target)
    if isinstance(var, float | int):
        bad = var < 0
    else:
        need_float(name, "var", var)
        if _var_shape(tuple(jnp.shape(input)), tuple(jnp.shape(var))) is None:
            raise ValueError(f"{name}: var shape {tuple(jnp.shape(var))} does not fit input shape "
                             f"{tuple(jnp.shape(input))}; give one variance per entry (the same shape), one per row "
                             "(the shape without the last axis), the same rank with one axis of size 1, or a scalar")
        bad = is_concrete(var) and bool(np.any(np.asarray(var) < 0))
    if bad:
        raise ValueError(f"{name}: var has negative entries; variances must be >= 0 (they are clamped at eps={eps})")
    if not eps > 0:
        raise ValueError(f"{name}: eps must be > 0, got {eps}")


def _clamped_var(input, var, eps):
    """var in its broadcastable shape, clamped at eps (the clamp's value only: see the reference)."""
    var = jnp.asarray(var, input.dtype) if isinstance(var, float | int) else var
    v = var.reshape(_var_shape(input.shape, var.shape))
    return v, jnp.maximum(v, eps)


def _gaussian_nll_loss(input, target, var, *, full=False, eps=1e-6, reduction="mean"):
    """Gaussian negative log-likelihood, torch's ``F.gaussian_nll_loss``: target ~ N(input, var), elementwise
        l = 1/2 [ log v + (x - t)^2 / v ]  (+ 1/2 log(2 pi) with ``full``),   v = max(var, eps),
    reduced over all entries ("mean", "sum") or kept ("none"). ``var`` has the input's shape, or the shape
    without the last axis (one variance per row), or one axis of size 1 (torch's rules), or is a scalar (a
    Python float, as torch, or a 0-d array).
    Torch clamps v in place under ``no_grad``: the clamp changes the value but not the gradient, which is the
    derivative at v passed to var unchanged (a straight-through clamp), so a var below eps still gets
    dl/dv at v = eps. With r = x - t and g the reduction's factor times the cotangent:
        dinput = g r / v,    dtarget = -g r / v,    dvar = g (1/v - r^2/v^2) / 2
    (dvar summed over the axis var was broadcast along). Negative variances raise outside ``jit`` (as torch);
    inside it they are clamped to eps. Residuals: x, t and var.
    """
    v_raw, v = _clamped_var(input, var, eps)
    v = v_raw + jax.lax.stop_gradient(v - v_raw)          # the clamped value, differentiated as var itself
    r = input - target
    loss = 0.5 * (jnp.log(v) + r * r / v)
    if full:
        loss = loss + 0.5 * math.log(2 * math.pi)
    return reduce_loss(loss, reduction)


def _gaussian_nll_loss_fwd(input, target, var, *, full=False, eps=1e-6, reduction="mean"):
    out = _gaussian_nll_loss(input, target, var, full=full, eps=eps, reduction=reduction)
    return out, (input, target, var)


def _gaussian_nll_loss_bwd(res, g, *, full=False, eps=1e-6, reduction="mean"):
    x, t, var = res
    _, v = _clamped_var(x, var, eps)
    seed = reduce_grad(g, reduction, x.shape)
    r = x - t
    dx = seed * r / v
    dvar = unbroadcast(jnp.broadcast_to(0.5 * seed * (1 / v - r * r / (v * v)), x.shape), v.shape)
    dvar = dvar.reshape(jnp.shape(var)).astype(jnp.result_type(var))
    return dx.astype(x.dtype), (-dx).astype(t.dtype), dvar


def _gaussian_nll_loss_examples(key, dtype):
    k = keys(key, 7)
    x, t = normal(k[0], (4, 3), dtype), normal(k[1], (4, 3), dtype)
    return [
        Example((x, t, uniform(k[2], (4, 3), dtype, 0.2, 2.0)), {}, "mean, one variance per entry"),
        Example((x, t, uniform(k[3], (4,), dtype, 0.2, 2.0)), {"reduction": "sum", "full": True},
                "sum, full, one variance per row"),
        Example((x, t, uniform(k[4], (4, 1), dtype, 0.2, 2.0)), {"reduction": "none", "eps": 1e-3},
                "none, var (4,1)"),
        Example((normal(k[5], (2, 3, 4), dtype), normal(k[6], (2, 3, 4), dtype), uniform(k[2], (2, 1, 4), dtype,
                                                                                          0.3, 1.5)),
                {"full": True}, "var (2,1,4)"),
    ]


def _gaussian_nll_loss_space(rng, dtype):
    """Inputs of rank 0-3, var of the input's shape, without its last axis, with one axis 1 or a scalar, every
    reduction, full either way, eps 1e-8-0.05 with the variances above it (below it the clamp is flat in
    value but passes the gradient through, as torch: finite differences cannot see that)."""
    shape = tuple(integer(rng, 1, 4) for _ in range(integer(rng, 0, 3)))
    form = pick(rng, ["same", "row", "one", "scalar"]) if shape else "same"
    if form == "scalar":
        var_shape = ()
    elif form == "row":
        var_shape = shape[:-1]
    elif form == "one":
        axis = integer(rng, 0, len(shape) - 1)
        var_shape = tuple(1 if i == axis else n for i, n in enumerate(shape))
    else:
        var_shape = shape
    eps = pick(rng, [1e-8, 1e-6, num(rng, 1e-4, 0.05, 4)])
    settings = {"full": pick(rng, [False, True]), "eps": eps, "reduction": pick(rng, list(REDUCTIONS))}
    x = arr(rng, shape, dtype, num(rng, 0.5, 2.0))
    return Example((x, arr(rng, shape, dtype), unif(rng, var_shape, dtype, 0.1, 2.0)), settings)


gaussian_nll_loss = primitive("gaussian_nll_loss", _gaussian_nll_loss, _gaussian_nll_loss_fwd,
                              _gaussian_nll_loss_bwd, examples=_gaussian_nll_loss_examples,
                              space=_gaussian_nll_loss_space, check=_gaussian_nll_loss_check)


# ============================================================================== Bernoulli log-likelihood
def _bernoulli_log_likelihood_check(logits, x, *, reduction="mean"):
    name = "bernoulli_log_likelihood"
    check_reduction(name, reduction)
    need_float(name, "logits", logits)
    need_float(name, "x", x)
    same_shape(name, logits, x, ("logits", "x"))
    if jnp.ndim(logits) == 0:
        raise ValueError(f"{name}: logits need a batch axis (first), got shape (); use logits[None]")


def _bernoulli_log_likelihood(logits, x, *, reduction="mean"):
    """log p(x | logits) of Bernoulli pixels, summed over every axis but the first (batch) one:
        ll_n = sum_j [ x_j log sigma(l_j) + (1 - x_j) log(1 - sigma(l_j)) ] = -sum_j bce(l_j, x_j)
    with bce the elementwise binary cross-entropy on logits (``binary_cross_entropy_with_logits``, the stable
    softplus form); "mean" averages ll over the batch, "sum" adds, "none" keeps (N,). x may be soft (in [0, 1]).
    The gradients are bce's with the opposite sign (derived there), g the cotangent of ll_n times the factor:
        dlogits_j = g (x_j - sigma(l_j)),    dx_j = g l_j.
    Residuals: logits and x (the backward is binary_cross_entropy_with_logits's).
    """
    bce = _binary_cross_entropy_with_logits(logits, x, reduction="none")
    return reduce_loss(-jnp.sum(bce, axis=tuple(range(1, bce.ndim))), reduction)


def _bernoulli_log_likelihood_fwd(logits, x, *, reduction="mean"):
    return _bernoulli_log_likelihood(logits, x, reduction=reduction), (logits, x)


def _bernoulli_log_likelihood_bwd(res, g, *, reduction="mean"):
    logits, x = res
    seed = jnp.broadcast_to(reduce_grad(g, reduction, logits.shape[:1]), logits.shape[:1])
    per_entry = jnp.broadcast_to(-seed.reshape(-1, *(1,) * (logits.ndim - 1)), logits.shape)
    dlogits, dx, _, _ = _binary_cross_entropy_with_logits_bwd((logits, x, None, None), per_entry, reduction="none")
    return dlogits, dx


def _bernoulli_log_likelihood_examples(key, dtype):
    k = keys(key, 4)
    logits = normal(k[0], (3, 4, 4, 1), dtype, 2.0)
    return [
        Example((logits, jnp.round(uniform(k[1], (3, 4, 4, 1), dtype))), {}, "mean, 0/1 pixels"),
        Example((logits, uniform(k[2], (3, 4, 4, 1), dtype)), {"reduction": "none"}, "none, soft"),
        Example((normal(k[3], (5, 3), dtype, 3.0), uniform(k[2], (5, 3), dtype)), {"reduction": "sum"}, "sum"),
    ]


def _bernoulli_log_likelihood_space(rng, dtype):
    shape = tuple(integer(rng, 1, 4) for _ in range(integer(rng, 1, 4)))
    x = unif(rng, shape, dtype)
    if rng.random() < 0.5:
        x = jnp.round(x)
    return Example((arr(rng, shape, dtype, num(rng, 0.5, 4.0)), x), {"reduction": pick(rng, list(REDUCTIONS))})


bernoulli_log_likelihood = primitive(
    "bernoulli_log_likelihood", _bernoulli_log_likelihood, _bernoulli_log_likelihood_fwd,
    _bernoulli_log_likelihood_bwd, examples=_bernoulli_log_likelihood_examples,
    space=_bernoulli_log_likelihood_space, check=_bernoulli_log_likelihood_check,
)
