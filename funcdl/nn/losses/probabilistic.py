"""Losses on probabilities: binary cross-entropy (on logits and on probabilities) and the KL divergence."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ...core.examples import Example, keys, normal, uniform
from ...core.primitive import is_concrete, primitive
from .._space import arr, integer, num, pick, unif
from ._common import (
    KL_REDUCTIONS,
    REDUCTIONS,
    check_elem_weight,
    check_reduction,
    need_float,
    probabilities,
    reduce_grad,
    reduce_loss,
    same_shape,
)

__all__ = ["binary_cross_entropy_with_logits", "binary_cross_entropy", "kl_div"]


def _binary_draw(rng, dtype):
    """A shape of rank 0-3, soft or 0/1 targets, an element weight None or broadcast from a smaller shape."""
    shape = tuple(integer(rng, 1, 4) for _ in range(integer(rng, 0, 3)))
    t = unif(rng, shape, dtype)
    if rng.random() < 0.3:
        t = jnp.round(t)
    return shape, t, _broadcast_weight(rng, shape, dtype)


def _broadcast_weight(rng, shape, dtype):
    """None, or positive weights of the full shape, of its trailing axes, or with some axes 1."""
    form = pick(rng, ["none", "full", "trailing", "ones"])
    if form == "none":
        return None
    if form == "trailing":
        shape = shape[integer(rng, 0, len(shape)):]
    elif form == "ones":
        shape = tuple(1 if rng.random() < 0.5 else n for n in shape)
    return unif(rng, shape, dtype, 0.5, 2.0)


def _binary_cross_entropy_with_logits_space(rng, dtype):
    shape, t, weight = _binary_draw(rng, dtype)
    x = arr(rng, shape, dtype, num(rng, 0.5, 4.0))
    return Example((x, t, weight, _broadcast_weight(rng, shape, dtype)), {"reduction": pick(rng, list(REDUCTIONS))})


def _binary_cross_entropy_space(rng, dtype):
    shape, t, weight = _binary_draw(rng, dtype)
    return Example((unif(rng, shape, dtype, 0.05, 0.95), t, weight), {"reduction": pick(rng, list(REDUCTIONS))})


def _kl_div_space(rng, dtype):
    """log q and p (or log p) along a class axis of 1-5, batch rank 0-2, every reduction, log_target either way."""
    shape = (*(integer(rng, 1, 4) for _ in range(integer(rng, 0, 2))), integer(rng, 1, 5))
    logq = jax.nn.log_softmax(arr(rng, shape, dtype, num(rng, 0.5, 2.0)), axis=-1)
    log_target = pick(rng, [False, True])
    logp = jax.nn.log_softmax(arr(rng, shape, dtype, num(rng, 0.3, 1.5)), axis=-1)
    settings = {"reduction": pick(rng, list(KL_REDUCTIONS)), "log_target": log_target}
    return Example((logq, logp if log_target else jnp.exp(logp)), settings)


# ========================================================================= binary cross-entropy (logits)
def _binary_check(name, x, targets, weight, reduction, label, what):
    """What both binary cross-entropies check: the reduction, float input and targets of one shape, the weight."""
    check_reduction(name, reduction)
    need_float(name, what, x)
    need_float(name, "targets", targets)
    same_shape(name, x, targets, (label, "targets"))
    check_elem_weight(name, "weight", weight, x)


def _binary_cross_entropy_with_logits_check(logits, targets, weight=None, pos_weight=None, *, reduction="mean"):
    name = "binary_cross_entropy_with_logits"
    _binary_check(name, logits, targets, weight, reduction, "logits", "logits")
    check_elem_weight(name, "pos_weight", pos_weight, logits)


def _softplus0(x):
    """log(1 + e^x), stable for any x."""
    return jnp.logaddexp(0.0, x)


def _binary_cross_entropy_with_logits(logits, targets, weight=None, pos_weight=None, *, reduction="mean"):
    """Binary cross-entropy on logits (torch's ``F.binary_cross_entropy_with_logits``), elementwise:

        l = -w [ pw t log sigma(x) + (1 - t) log(1 - sigma(x)) ]
          =  w [ pw t softplus(-x) + (1 - t) softplus(x) ]      (the stable form: -log sigma(x) = softplus(-x))

    w (``weight``) and pw (``pos_weight``, the weight of the positive term, typically one per class along
    the last axis) broadcast to the logits' shape and get no gradient. With sigma' = sigma (1 - sigma),
    d softplus(x)/dx = sigma(x) and d softplus(-x)/dx = sigma(x) - 1:
        dl/dx = w [ (pw t + 1 - t) sigma(x) - pw t ]            (= w (sigma(x) - t) when pw = 1)
        dl/dt = w [ pw softplus(-x) - softplus(x) ]             (= -w x when pw = 1)
    so dlogits = dl/dx and dtargets = dl/dt (times the reduction's factor); the weights get no gradient.
    Residuals: x and t (sigma and softplus are recomputed), the weights.
    """
    pw = 1.0 if pos_weight is None else pos_weight
    loss = pw * targets * _softplus0(-logits) + (1 - targets) * _softplus0(logits)
    if weight is not None:
        loss = weight * loss
    return reduce_loss(loss, reduction)


def _binary_cross_entropy_with_logits_fwd(logits, targets, weight=None, pos_weight=None, *, reduction="mean"):
    out = _binary_cross_entropy_with_logits(logits, targets, weight, pos_weight, reduction=reduction)
    return out, (logits, targets, weight, pos_weight)


def _binary_cross_entropy_with_logits_bwd(res, g, *, reduction="mean"):
    x, t, weight, pos_weight = res
    seed = reduce_grad(g, reduction, x.shape)
    w = seed if weight is None else weight * seed
    pw = 1.0 if pos_weight is None else pos_weight
    dx = w * ((pw * t + 1 - t) * jax.nn.sigmoid(x) - pw * t)
    dt = w * (pw * _softplus0(-x) - _softplus0(x))
    return dx.astype(x.dtype), dt.astype(t.dtype), None, None


def _binary_cross_entropy_with_logits_examples(key, dtype):
    k = keys(key, 6)
    x = normal(k[0], (5, 3), dtype, 2.0)
    t = uniform(k[1], (5, 3), dtype)
    hard = jax.random.bernoulli(k[2], 0.5, (5, 3)).astype(dtype)
    weight = uniform(k[3], (5, 1), dtype, 0.5, 2.0)
    pos_weight = uniform(k[4], (3,), dtype, 0.5, 3.0)
    return [
        Example((x, t), {}, "mean, soft targets"),
        Example((x, hard), {"reduction": "sum"}, "sum, 0/1 targets"),
        Example((x, t, weight, pos_weight), {"reduction": "none"}, "none, weight+pos_weight"),
        Example((normal(k[5], (2, 3, 3), dtype, 3.0), jnp.stack([t[:3], t[2:]]), None, pos_weight), {},
                "3-D, pos_weight"),
    ]


binary_cross_entropy_with_logits = primitive(
    "binary_cross_entropy_with_logits", _binary_cross_entropy_with_logits, _binary_cross_entropy_with_logits_fwd,
    _binary_cross_entropy_with_logits_bwd, examples=_binary_cross_entropy_with_logits_examples,
    space=_binary_cross_entropy_with_logits_space,
    check=_binary_cross_entropy_with_logits_check, nondiff=("weight", "pos_weight"),
)


# ==================================================================== binary cross-entropy (probabilities)
def _binary_cross_entropy_check(probs, targets, weight=None, *, reduction="mean"):
    name = "binary_cross_entropy"
    _binary_check(name, probs, targets, weight, reduction, "input", "input (probabilities)")
    if is_concrete(probs) and bool(np.any((np.asarray(probs) < 0) | (np.asarray(probs) > 1))):
        raise ValueError(f"{name}: input probabilities must lie in [0, 1]; for logits use "
                         "binary_cross_entropy_with_logits")


def _binary_cross_entropy_logs(p):
    # torch clamps both logarithms at -100 so that p = 0 or 1 gives a finite loss
    return jnp.maximum(jnp.log(p), -100.0), jnp.maximum(jnp.log1p(-p), -100.0)


def _binary_cross_entropy(probs, targets, weight=None, *, reduction="mean"):
    """Binary cross-entropy on probabilities (torch's ``F.binary_cross_entropy``), elementwise:

        l = -w [ t log p + (1 - t) log(1 - p) ]      with both logs clamped at -100 (as torch)
        dprobs = -w [ t / p - (1 - t) / (1 - p) ] = w (p - t) / (p (1 - p))
        dtargets = -w [ log p - log(1 - p) ]             (the weight gets no gradient)
    A clamped log contributes no gradient (so p = 0 or 1 gives a finite gradient; torch instead divides
    by max(p (1 - p), 1e-12)). Prefer the logits version: it is stable where this one saturates.
    Input values outside [0, 1] raise outside ``jit`` and give NaN inside it. Residuals: p and t.
    """
    log_p, log_q = _binary_cross_entropy_logs(probs)
    loss = -(targets * log_p + (1 - targets) * log_q)
    if weight is not None:
        loss = weight * loss
    return reduce_loss(loss, reduction)


def _binary_cross_entropy_fwd(probs, targets, weight=None, *, reduction="mean"):
    return _binary_cross_entropy(probs, targets, weight, reduction=reduction), (probs, targets, weight)


def _binary_cross_entropy_bwd(res, g, *, reduction="mean"):
    p, t, weight = res
    seed = reduce_grad(g, reduction, p.shape)
    w = seed if weight is None else weight * seed
    log_p, log_q = _binary_cross_entropy_logs(p)
    inv_p = jnp.where(log_p > -100.0, 1.0 / p, 0)
    inv_q = jnp.where(log_q > -100.0, 1.0 / (1 - p), 0)
    dp = -w * (t * inv_p - (1 - t) * inv_q)
    dt = -w * (log_p - log_q)
    return dp.astype(p.dtype), dt.astype(t.dtype), None


def _binary_cross_entropy_examples(key, dtype):
    k = keys(key, 4)
    p = uniform(k[0], (5, 3), dtype, 0.05, 0.95)
    t = uniform(k[1], (5, 3), dtype)
    weight = uniform(k[2], (3,), dtype, 0.5, 2.0)
    return [
        Example((p, t), {}, "mean"),
        Example((p, jnp.round(t)), {"reduction": "sum"}, "sum, 0/1 targets"),
        Example((p, t, weight), {"reduction": "none"}, "none, weight"),
    ]


binary_cross_entropy = primitive(
    "binary_cross_entropy", _binary_cross_entropy, _binary_cross_entropy_fwd, _binary_cross_entropy_bwd,
    examples=_binary_cross_entropy_examples, space=_binary_cross_entropy_space, check=_binary_cross_entropy_check,
    nondiff=("weight",),
)


# ============================================================================================ KL divergence
def _kl_div_check(input, target, *, reduction="mean", log_target=False):
    name = "kl_div"
    check_reduction(name, reduction, KL_REDUCTIONS)
    need_float(name, "input (log-probabilities)", input)
    need_float(name, "target", target)
    same_shape(name, input, target)
    if reduction == "batchmean" and jnp.shape(input) == ():
        raise ValueError(f"{name}: reduction='batchmean' needs a batch axis, got shape ()")


def _kl_div(input, target, *, reduction="mean", log_target=False):
    """KL divergence with torch's conventions (``F.kl_div``): ``input`` is log q (log-probabilities of the
    model), ``target`` is p (or log p with ``log_target=True``). Elementwise
        l = p (log p - log q)          (0 where p = 0)           log_target: l = e^s (s - log q), s = log p
    Reductions: "batchmean" (sum / batch size, the true KL per example), "sum", "none", and torch's default
    "mean", which divides by the number of ENTRIES (so it is the KL divided by the number of classes).
    Gradients, with x = log q:
        dinput = -p                    log_target: -e^s
        dtarget = log p + 1 - x        log_target: e^s (s - x + 1)   (the gradient w.r.t. s = log p)
    (dl/dp -> -inf at p = 0: give a target with zeros no gradient, or use log_target.)  Residuals: x, target.
    """
    if log_target:
        loss = jnp.exp(target) * (target - input)
    else:
        loss = jax.scipy.special.xlogy(target, target) - target * input
    return reduce_loss(loss, reduction)


def _kl_div_fwd(input, target, *, reduction="mean", log_target=False):
    return _kl_div(input, target, reduction=reduction, log_target=log_target), (input, target)


def _kl_div_bwd(res, g, *, reduction="mean", log_target=False):
    x, t = res
    seed = reduce_grad(g, reduction, x.shape)
    if log_target:
        p = jnp.exp(t)
        dx, dt = -p * seed, p * (t - x + 1) * seed
    else:
        dx, dt = -t * seed, (jnp.log(t) + 1 - x) * seed
    return dx.astype(x.dtype), dt.astype(t.dtype)


def _kl_div_examples(key, dtype):
    k = keys(key, 4)
    logq = jax.nn.log_softmax(normal(k[0], (4, 5), dtype), axis=-1)
    p = probabilities(k[1], (4, 5), dtype, 0.7)
    return [
        Example((logq, p), {}, "mean"),
        Example((logq, p), {"reduction": "batchmean"}, "batchmean"),
        Example((logq, p), {"reduction": "sum"}, "sum"),
        Example((logq, jnp.log(p)), {"reduction": "none", "log_target": True}, "none, log_target"),
        Example((logq, jnp.log(p)), {"reduction": "batchmean", "log_target": True}, "batchmean, log_target"),
    ]


kl_div = primitive("kl_div", _kl_div, _kl_div_fwd, _kl_div_bwd, examples=_kl_div_examples, space=_kl_div_space,
                   check=_kl_div_check)
