"""Loss functions with hand-derived gradients.

Reductions follow torch: ``"mean"`` (default), ``"sum"`` or ``"none"`` (one value per example).
Integer labels and class weights are inputs without gradients (their cotangent is ``None``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .examples import Example, keys, normal
from .primitive import is_concrete, primitive

__all__ = ["softmax_cross_entropy", "cross_entropy", "REDUCTIONS"]

REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(name, reduction):
    if reduction not in REDUCTIONS:
        raise ValueError(f"{name}: unknown reduction {reduction!r}; valid: {', '.join(REDUCTIONS)}")


# --------------------------------------------------------------------------- softmax cross-entropy (labels)
def _ce_check(logits, labels, weight=None, *, reduction="mean", label_smoothing=0.0, ignore_index=-100):
    name = "softmax_cross_entropy"
    _check_reduction(name, reduction)
    if logits.ndim < 1:
        raise ValueError(f"{name}: logits must have a class axis (last), got shape {logits.shape}")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(
            f"{name}: labels must be integer class indices, got dtype {labels.dtype}; for probability "
            "targets use softmax_cross_entropy_with_probs"
        )
    if labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"{name}: labels shape {labels.shape} must equal the logits shape without its class axis "
            f"{logits.shape[:-1]} (logits {logits.shape})"
        )
    n_classes = logits.shape[-1]
    if weight is not None and weight.shape != (n_classes,):
        raise ValueError(f"{name}: class weight shape {weight.shape} must be ({n_classes},)")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{name}: label_smoothing must lie in [0, 1], got {label_smoothing}")
    if is_concrete(labels):
        bad = (labels != ignore_index) & ((labels < 0) | (labels >= n_classes))
        if bool(jnp.any(bad)):
            first = int(labels[bad][0]) if labels.ndim else int(labels)
            raise ValueError(
                f"{name}: label {first} is out of range for {n_classes} classes (valid: 0..{n_classes - 1}, "
                f"or ignore_index={ignore_index})"
            )


def _ce_parts(logits, labels, weight, label_smoothing, ignore_index):
    """log-probabilities, target distribution q (with smoothing), per-class weights and the valid mask."""
    n_classes = logits.shape[-1]
    valid = labels != ignore_index
    in_range = (labels >= 0) & (labels < n_classes)
    m = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    m = jnp.where(jnp.isfinite(m), m, 0)
    z = logits - m
    logp = z - jnp.log(jnp.sum(jnp.exp(z), axis=-1, keepdims=True))
    onehot = jax.nn.one_hot(jnp.where(valid, labels, 0), n_classes, dtype=logits.dtype)
    q = (1.0 - label_smoothing) * onehot + label_smoothing / n_classes
    w = jnp.ones((n_classes,), logits.dtype) if weight is None else weight.astype(logits.dtype)
    # weight of each example's own class: the denominator of torch's weighted mean
    w_y = jnp.where(valid, jnp.take(w, jnp.where(valid, labels, 0)), 0)
    # inside jit an out-of-range label cannot raise: it makes that example's loss NaN, which the training
    # loop reports with the step number
    bad = valid & ~in_range
    return logp, q, w, w_y, valid, bad


def _reduce(per_example, w_y, reduction):
    if reduction == "none":
        return per_example
    if reduction == "sum":
        return jnp.sum(per_example)
    return jnp.sum(per_example) / jnp.sum(w_y)


def _softmax_cross_entropy(logits, labels, weight=None, *, reduction="mean", label_smoothing=0.0,
                           ignore_index=-100):
    """Cross-entropy of softmax(logits) against integer labels (torch's ``F.cross_entropy``).

    With p = softmax(z), the smoothed target q_c = (1 - eps) [c = y] + eps / C and class weights w:
        l_n = - sum_c w_c q_nc log p_nc          (0 where y_n = ignore_index)
        mean: sum_n l_n / sum_n w_{y_n}          (torch's weighted mean)
    Gradient (differentiate log p_c = z_c - logsumexp z):
        dl_n/dz_nj = -sum_c w_c q_nc (delta_cj - p_nj) = p_nj sum_c w_c q_nc - w_j q_nj
    which without weights is the famous p - q: softmax minus one-hot. Terms with q_c = 0 are dropped
    before multiplying, so logits of -inf where the target has zero probability give a finite loss and a
    zero gradient there. Residuals: log p (p = exp(log p) is recomputed), q, w and the denominator.
    """
    logp, q, w, w_y, valid, bad = _ce_parts(logits, labels, weight, label_smoothing, ignore_index)
    terms = jnp.where(q > 0, w * q * logp, 0)
    per_example = jnp.where(valid, -jnp.sum(terms, axis=-1), 0)
    per_example = jnp.where(bad, jnp.nan, per_example)
    return _reduce(per_example, w_y, reduction)


def _ce_fwd(logits, labels, weight=None, *, reduction="mean", label_smoothing=0.0, ignore_index=-100):
    logp, q, w, w_y, valid, bad = _ce_parts(logits, labels, weight, label_smoothing, ignore_index)
    terms = jnp.where(q > 0, w * q * logp, 0)
    per_example = jnp.where(valid, -jnp.sum(terms, axis=-1), 0)
    per_example = jnp.where(bad, jnp.nan, per_example)
    denom = jnp.sum(w_y)
    return _reduce(per_example, w_y, reduction), (logp, q, w, valid, denom)


def _ce_bwd(res, g, *, reduction="mean", label_smoothing=0.0, ignore_index=-100):
    logp, q, w, valid, denom = res
    wq = w * q
    dz = jnp.exp(logp) * jnp.sum(wq, axis=-1, keepdims=True) - wq        # p * sum(w q) - w q
    if reduction == "none":
        scale = g[..., None]
    elif reduction == "sum":
        scale = g
    else:
        scale = g / denom
    dz = jnp.where(valid[..., None], dz * scale, 0)
    return dz.astype(logp.dtype), None, None


def _ce_examples(key, dtype):
    k = keys(key, 6)
    logits = normal(k[0], (6, 5), dtype, 2.0)
    labels = jax.random.randint(k[1], (6,), 0, 5)
    labels_ignore = labels.at[2].set(-100)
    weight = jax.random.uniform(k[2], (5,), minval=0.5, maxval=2.0).astype(dtype)
    logits_inf = logits.at[0, 1].set(-jnp.inf).at[3, 4].set(-jnp.inf)
    labels_inf = labels.at[0].set(0).at[3].set(2)
    return [
        Example((logits, labels), {}, "mean"),
        Example((logits, labels), {"reduction": "sum"}, "sum"),
        Example((logits, labels_ignore), {"reduction": "none"}, "none, ignore_index"),
        Example((logits, labels_ignore, weight), {"label_smoothing": 0.1}, "weights+smoothing+ignore"),
        Example((normal(k[3], (2, 3, 4), dtype), jax.random.randint(k[4], (2, 3), 0, 4)), {}, "3-D logits"),
        Example((logits_inf, labels_inf), {}, "-inf logits off target"),
    ]


softmax_cross_entropy = primitive(
    "softmax_cross_entropy", _softmax_cross_entropy, _ce_fwd, _ce_bwd, examples=_ce_examples, check=_ce_check,
    nondiff=("weight",),
)
cross_entropy = softmax_cross_entropy
