"""Classification losses over a class axis (the last): cross-entropy against labels or probabilities, the
negative log-likelihood, the multiclass hinge loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ...core.examples import Example, keys, normal, uniform
from ...core.primitive import primitive
from .._norm import stat_dtype
from .._space import arr, integer, num, pick, unif
from ._common import (
    REDUCTIONS,
    check_class_weight,
    check_labels,
    check_reduction,
    check_smoothing,
    class_weights,
    dtype_tag,
    log_softmax,
    need_float,
    probabilities,
    reduce_grad,
    reduce_loss,
    same_shape,
)

__all__ = ["softmax_cross_entropy", "cross_entropy", "softmax_cross_entropy_with_probs", "nll_loss",
           "multi_margin_loss"]


def _class_draw(rng, dtype, ignore=False):
    """Scores (*batch, C) with batch rank 0-2 and C 2-6, integer labels, optional (C,) class weights; with
    ``ignore`` an ignore_index (-100, -1 or a real class) that some labels take, never all of them."""
    batch = tuple(integer(rng, 1, 4) for _ in range(integer(rng, 0, 2)))
    c = integer(rng, 2, 6)
    labels = rng.integers(0, c, batch)
    weight = unif(rng, (c,), dtype, 0.5, 2.0) if rng.random() < 0.5 else None
    ignore_index = pick(rng, [-100, -1, integer(rng, 0, c - 1)]) if ignore else None
    if ignore:
        labels = np.where(rng.random(batch) < 0.3, ignore_index, labels)
        flat = labels.reshape(-1)
        if np.all(flat == ignore_index):     # keep one example counted (a mean over nothing is NaN, as torch)
            flat[0] = (ignore_index + 1) % c if 0 <= ignore_index < c else 0
        labels = flat.reshape(batch)
    return batch, c, jnp.asarray(labels, jnp.int32), weight, ignore_index


def _softmax_cross_entropy_space(rng, dtype):
    batch, c, labels, weight, ignore_index = _class_draw(rng, dtype, ignore=True)
    settings = {"reduction": pick(rng, list(REDUCTIONS)), "label_smoothing": pick(rng, [0.0, num(rng, 0.0, 1.0)]),
                "ignore_index": ignore_index}
    return Example((arr(rng, (*batch, c), dtype, num(rng, 0.5, 3.0)), labels, weight), settings)


def _softmax_cross_entropy_with_probs_space(rng, dtype):
    batch, c, _, weight, _ = _class_draw(rng, dtype)
    targets = jax.nn.softmax(arr(rng, (*batch, c), dtype, num(rng, 0.3, 3.0)), axis=-1)
    settings = {"reduction": pick(rng, list(REDUCTIONS)), "label_smoothing": pick(rng, [0.0, num(rng, 0.0, 1.0)])}
    return Example((arr(rng, (*batch, c), dtype, num(rng, 0.5, 3.0)), targets, weight), settings)


def _nll_loss_space(rng, dtype):
    batch, c, labels, weight, ignore_index = _class_draw(rng, dtype, ignore=True)
    logp = jax.nn.log_softmax(arr(rng, (*batch, c), dtype, num(rng, 0.5, 3.0)), axis=-1)
    return Example((logp, labels, weight), {"reduction": pick(rng, list(REDUCTIONS)), "ignore_index": ignore_index})


def _multi_margin_loss_space(rng, dtype):
    """p 1 or 2, margin in [-1, 2], every violation h_i = margin - x_y + x_i kept 0.05 from its kink at 0."""
    batch, c, labels, weight, _ = _class_draw(rng, dtype)
    margin = num(rng, -1.0, 2.0)
    x = np.asarray(arr(rng, (*batch, c), np.float64, num(rng, 0.5, 2.0)))
    for _ in range(20):
        h = margin - np.take_along_axis(x, np.asarray(labels)[..., None], -1) + x
        near = (np.abs(h) < 0.05) & (np.arange(c) != np.asarray(labels)[..., None])
        if not near.any():
            break
        x = np.where(near, x + 0.1, x)
    settings = {"p": pick(rng, [1, 2]), "margin": margin, "reduction": pick(rng, list(REDUCTIONS))}
    return Example((jnp.asarray(x, dtype), labels, weight), settings)


def _labelled(labels, n_classes, ignore_index=None):
    """The valid mask (not ignored), the bad mask (valid but out of range) and labels safe to index with."""
    valid = jnp.ones(labels.shape, bool) if ignore_index is None else labels != ignore_index
    bad = valid & ((labels < 0) | (labels >= n_classes))
    return valid, bad, jnp.where(valid & ~bad, labels, 0)


# --------------------------------------------------------------------------- softmax cross-entropy (labels)
def _softmax_cross_entropy_check(logits, labels, weight=None, *, reduction="mean", label_smoothing=0.0,
                                 ignore_index=-100):
    name = "softmax_cross_entropy"
    check_reduction(name, reduction)
    check_labels(name, labels, logits, ignore_index=ignore_index, what="logits",
                 hint="; for probability targets use softmax_cross_entropy_with_probs")
    check_class_weight(name, weight, logits.shape[-1])
    check_smoothing(name, label_smoothing)


def _softmax_cross_entropy_parts(logits, labels, weight, label_smoothing, ignore_index):
    """log-probabilities, target distribution q (with smoothing), class weights w, each example's own-class
    weight w_y (the denominator of torch's weighted mean), the valid and the bad (out of range) masks. A
    bfloat16/float16 input is computed in float32 (the softmax of a mixed-precision step, as torch's autocast)."""
    logits = logits.astype(stat_dtype(logits))
    n_classes = logits.shape[-1]
    valid, bad, _ = _labelled(labels, n_classes, ignore_index)
    lab = jnp.where(valid, labels, 0)      # an out-of-range label: a zero one-hot row and a NaN weight
    q = (1.0 - label_smoothing) * jax.nn.one_hot(lab, n_classes, dtype=logits.dtype) + label_smoothing / n_classes
    w = class_weights(weight, n_classes, logits.dtype)
    w_y = jnp.where(valid, jnp.take(w, lab), 0)
    return log_softmax(logits), q, w, w_y, valid, bad


def _softmax_cross_entropy_terms(logp, q, w, valid, bad):
    """Per-example losses: NaN for an out-of-range label inside jit (the training loop reports the step)."""
    per_example = jnp.where(valid, -jnp.sum(jnp.where(q > 0, w * q * logp, 0), axis=-1), 0)
    return jnp.where(bad, jnp.nan, per_example)


def _softmax_cross_entropy(logits, labels, weight=None, *, reduction="mean", label_smoothing=0.0,
                           ignore_index=-100):
    """Cross-entropy of softmax(logits) against integer labels (torch's ``F.cross_entropy``).

    With z the logits, p = softmax(z), the smoothed target q_c = (1 - eps) [c = y] + eps / C and class weights w:
        l_n = - sum_c w_c q_nc log p_nc          (0 where y_n = ignore_index)
        mean: sum_n l_n / sum_n w_{y_n}          (torch's weighted mean)
    Gradient (differentiate log p_c = z_c - logsumexp z):
        dlogits_nj = -sum_c w_c q_nc (delta_cj - p_nj) = p_nj sum_c w_c q_nc - w_j q_nj
    which without weights is the famous p - q: softmax minus one-hot. Terms with q_c = 0 are dropped
    before multiplying, so logits of -inf where the target has zero probability give a finite loss and a
    zero gradient there. Labels and weights get no gradient. Residuals: log p (p = exp(log p) is
    recomputed), q, w, the valid mask and the denominator.
    """
    logp, q, w, w_y, valid, bad = _softmax_cross_entropy_parts(logits, labels, weight, label_smoothing, ignore_index)
    return reduce_loss(_softmax_cross_entropy_terms(logp, q, w, valid, bad), reduction, jnp.sum(w_y))


def _softmax_cross_entropy_fwd(logits, labels, weight=None, *, reduction="mean", label_smoothing=0.0,
                               ignore_index=-100):
    # keeps log p, q and the denominator, so the parts are computed here rather than inside the reference
    logp, q, w, w_y, valid, bad = _softmax_cross_entropy_parts(logits, labels, weight, label_smoothing, ignore_index)
    denom = jnp.sum(w_y)
    like = jnp.zeros((0,), logits.dtype)          # the gradient goes back in the input's dtype
    return reduce_loss(_softmax_cross_entropy_terms(logp, q, w, valid, bad), reduction, denom), (logp, q, w, valid,
                                                                                                  denom, like)


def _softmax_cross_entropy_bwd(res, g, *, reduction="mean", label_smoothing=0.0, ignore_index=-100):
    logp, q, w, valid, denom, like = res
    wq = w * q
    dz = jnp.exp(logp) * jnp.sum(wq, axis=-1, keepdims=True) - wq        # p * sum(w q) - w q
    scale = reduce_grad(g, reduction, logp.shape[:-1], denom)
    if reduction == "none":
        scale = scale[..., None]
    return jnp.where(valid[..., None], dz * scale, 0).astype(like.dtype), None, None


def _softmax_cross_entropy_examples(key, dtype):
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
    "softmax_cross_entropy", _softmax_cross_entropy, _softmax_cross_entropy_fwd, _softmax_cross_entropy_bwd,
    examples=_softmax_cross_entropy_examples, space=_softmax_cross_entropy_space, check=_softmax_cross_entropy_check,
    nondiff=("weight",),
)
cross_entropy = softmax_cross_entropy


# ================================================================ softmax cross-entropy, probability targets
def _softmax_cross_entropy_with_probs_check(logits, targets, weight=None, *, reduction="mean", label_smoothing=0.0):
    name = "softmax_cross_entropy_with_probs"
    check_reduction(name, reduction)
    need_float(name, "logits", logits)
    need_float(name, "targets (class probabilities)", targets)
    if jnp.shape(logits) == ():
        raise ValueError(f"{name}: logits must have a class axis (last), got shape ()")
    same_shape(name, logits, targets, ("logits", "targets"))
    check_class_weight(name, weight, jnp.shape(logits)[-1])
    check_smoothing(name, label_smoothing)


def _softmax_cross_entropy_with_probs_parts(logits, targets, weight, label_smoothing):
    """log p, log p with 0 where q = 0 and log p = -inf (0 log 0 = 0), the smoothed targets q, the weights."""
    n_classes = logits.shape[-1]
    logp = log_softmax(logits)
    q = (1.0 - label_smoothing) * targets + label_smoothing / n_classes
    logp_safe = jnp.where((q == 0) & jnp.isneginf(logp), 0, logp)
    return logp, logp_safe, q, class_weights(weight, n_classes, logits.dtype)


def _softmax_cross_entropy_with_probs(logits, targets, weight=None, *, reduction="mean", label_smoothing=0.0):
    """Cross-entropy of softmax(logits) against class probabilities (torch's ``F.cross_entropy`` with a
    float target of the logits' shape).

    With z the logits, p = softmax(z) along the last axis, q = (1 - eps) t + eps / C (label smoothing eps) and
    class weights w:
        l_n = - sum_c w_c q_nc log p_nc,      mean: sum_n l_n / N  (N = number of rows; torch does not
                                                                     divide by the weights here)
    Gradients (log p_c = z_c - logsumexp z, so d log p_c / d z_j = delta_cj - p_j):
        dlogits_nj = p_nj sum_c w_c q_nc - w_j q_nj          (p - t when w = 1 and sum t = 1)
        dtargets_nc = -(1 - eps) w_c log p_nc
    Terms with q_c = 0 and log p_c = -inf count as 0 (0 log 0 = 0), so -inf logits where the target is
    zero give a finite loss, a zero logit gradient there, and (by that convention) a zero target gradient
    there; torch returns NaN for such a loss. Residuals: log p (p = exp(log p) is recomputed), q, w.
    """
    _, logp_safe, q, w = _softmax_cross_entropy_with_probs_parts(logits, targets, weight, label_smoothing)
    return reduce_loss(-jnp.sum(w * q * logp_safe, axis=-1), reduction)


def _softmax_cross_entropy_with_probs_fwd(logits, targets, weight=None, *, reduction="mean", label_smoothing=0.0):
    out = _softmax_cross_entropy_with_probs(logits, targets, weight, reduction=reduction,
                                            label_smoothing=label_smoothing)
    logp, _, q, w = _softmax_cross_entropy_with_probs_parts(logits, targets, weight, label_smoothing)
    return out, (logp, q, w, dtype_tag(targets))


def _softmax_cross_entropy_with_probs_bwd(res, g, *, reduction="mean", label_smoothing=0.0):
    logp, q, w, t_tag = res
    scale = reduce_grad(g, reduction, logp.shape[:-1])
    if reduction == "none":
        scale = scale[..., None]
    wq = w * q
    # p = exp(log p) is exactly 0 at a -inf logit, so dz = 0 there (no NaN)
    dz = (jnp.exp(logp) * jnp.sum(wq, axis=-1, keepdims=True) - wq) * scale
    logp_safe = jnp.where((q == 0) & jnp.isneginf(logp), 0, logp)
    dt = -(1.0 - label_smoothing) * w * logp_safe * scale
    return dz.astype(logp.dtype), dt.astype(t_tag.dtype), None


def _softmax_cross_entropy_with_probs_examples(key, dtype):
    k = keys(key, 6)
    logits = normal(k[0], (5, 4), dtype, 2.0)
    t = probabilities(k[1], (5, 4), dtype)
    weight = uniform(k[2], (4,), dtype, 0.5, 2.0)
    return [
        Example((logits, t), {}, "mean"),
        Example((logits, t), {"reduction": "sum"}, "sum"),
        Example((logits, t, weight), {"reduction": "none", "label_smoothing": 0.2}, "none, weights+smoothing"),
        Example((normal(k[3], (2, 3, 4), dtype), probabilities(k[4], (2, 3, 4), dtype), weight), {}, "3-D, weights"),
    ]


softmax_cross_entropy_with_probs = primitive(
    "softmax_cross_entropy_with_probs", _softmax_cross_entropy_with_probs, _softmax_cross_entropy_with_probs_fwd,
    _softmax_cross_entropy_with_probs_bwd, examples=_softmax_cross_entropy_with_probs_examples,
    space=_softmax_cross_entropy_with_probs_space,
    check=_softmax_cross_entropy_with_probs_check, nondiff=("weight",),
)


# ================================================================================ negative log-likelihood
def _nll_loss_check(logp, labels, weight=None, *, reduction="mean", ignore_index=-100):
    name = "nll_loss"
    check_reduction(name, reduction)
    need_float(name, "input (log-probabilities)", logp)
    check_labels(name, labels, logp, ignore_index=ignore_index)
    check_class_weight(name, weight, jnp.shape(logp)[-1])


def _nll_loss_parts(logp, labels, weight, ignore_index):
    """Safe labels, each example's weight w_y (0 where ignored or out of range) and the bad mask."""
    valid, bad, safe = _labelled(labels, logp.shape[-1], ignore_index)
    w = class_weights(weight, logp.shape[-1], logp.dtype)
    return safe, jnp.where(valid & ~bad, w[safe], 0), bad


def _nll_loss(logp, labels, weight=None, *, reduction="mean", ignore_index=-100):
    """Negative log-likelihood of integer labels under log-probabilities (torch's ``F.nll_loss``).

    The input is already log p (say from ``log_softmax``), class axis last:
        l_n = - w_{y_n} logp_{n, y_n}          (0 where y_n = ignore_index)
        mean: sum_n l_n / sum_n w_{y_n}       (torch's weighted mean over the labels that are not ignored;
                                               NaN when every label is ignored, as torch)
    The loss is linear in log p, so the gradient is a scattered constant:
        dlogp_{nc} = -w_{y_n} [c = y_n] * (1, or 1 / sum w_y for the mean)
    Labels and weights get no gradient. Residuals: the (clipped) labels, w_{y_n} and the denominator.
    """
    safe, w_y, bad = _nll_loss_parts(logp, labels, weight, ignore_index)
    picked = jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
    per_example = jnp.where(bad, jnp.nan, jnp.where(w_y != 0, -w_y * picked, 0))
    return reduce_loss(per_example, reduction, jnp.sum(w_y))


def _nll_loss_fwd(logp, labels, weight=None, *, reduction="mean", ignore_index=-100):
    safe, w_y, _ = _nll_loss_parts(logp, labels, weight, ignore_index)
    out = _nll_loss(logp, labels, weight, reduction=reduction, ignore_index=ignore_index)
    # a (C,) zero vector carries the class count and the dtype of the cotangent
    return out, (safe, w_y, jnp.sum(w_y), jnp.zeros(logp.shape[-1:], logp.dtype))


def _nll_loss_bwd(res, g, *, reduction="mean", ignore_index=-100):
    safe, w_y, denom, cls = res
    scale = reduce_grad(g, reduction, safe.shape, denom)
    dx = -jax.nn.one_hot(safe, cls.shape[-1], dtype=cls.dtype) * (w_y * scale)[..., None]
    return dx.astype(cls.dtype), None, None


def _nll_loss_examples(key, dtype):
    k = keys(key, 6)
    logp = jax.nn.log_softmax(normal(k[0], (6, 5), dtype, 2.0), axis=-1)
    labels = jax.random.randint(k[1], (6,), 0, 5)
    weight = uniform(k[2], (5,), dtype, 0.5, 2.0)
    k1, k2 = jax.random.split(k[3])
    return [
        Example((logp, labels), {}, "mean"),
        Example((logp, labels, weight), {"reduction": "sum"}, "sum, weights"),
        Example((logp, labels.at[1].set(-100)), {"reduction": "none"}, "none, ignore_index"),
        Example((logp, labels.at[1].set(7).at[4].set(7), weight), {"ignore_index": 7}, "weights, ignore_index=7"),
        Example((jax.nn.log_softmax(normal(k1, (2, 3, 4), dtype), -1), jax.random.randint(k2, (2, 3), 0, 4)),
                {}, "3-D"),
    ]


nll_loss = primitive("nll_loss", _nll_loss, _nll_loss_fwd, _nll_loss_bwd, examples=_nll_loss_examples,
                     space=_nll_loss_space,
                     check=_nll_loss_check, nondiff=("weight",))


# ======================================================================= multiclass hinge (SVM) loss
def _multi_margin_loss_check(input, labels, weight=None, *, p=1, margin=1.0, reduction="mean"):
    name = "multi_margin_loss"
    check_reduction(name, reduction)
    if p not in (1, 2):
        raise ValueError(f"{name}: p must be 1 or 2, got {p!r}")
    need_float(name, "input (scores)", input)
    check_labels(name, labels, input)
    check_class_weight(name, weight, jnp.shape(input)[-1])


def _multi_margin_loss_parts(x, labels, weight, margin):
    n_classes = x.shape[-1]
    _, bad, safe = _labelled(labels, n_classes)
    others = jax.nn.one_hot(safe, n_classes, dtype=x.dtype) == 0        # True for i != y
    h = margin - jnp.take_along_axis(x, safe[..., None], axis=-1) + x   # (..., C): the margin violations
    w = class_weights(weight, n_classes, x.dtype)
    return safe, others, h, jnp.where(bad, 0, w[safe]), bad            # a bad label's row gets no gradient


def _multi_margin_loss(input, labels, weight=None, *, p=1, margin=1.0, reduction="mean"):
    """Multiclass hinge loss of the multiclass SVM (torch's ``F.multi_margin_loss``), class axis last.

    With scores x (..., C), label y and h_i = margin - x_y + x_i (the violation of class i):
        l = w_y / C * sum_{i != y} max(0, h_i)^p            (p = 1 or 2; mean: average over examples)
    Only violated classes (h_i > 0) contribute. With a_i = p max(0, h_i)^(p-1) [i != y] [h_i > 0]:
        dinput_i = w_y a_i / C                (i != y)
        dinput_y = -w_y / C * sum_{i != y} a_i
    Labels and weights get no gradient. Residuals: h, the label and w_y. Labels out of range give NaN inside
    jit (see the package docstring).
    """
    _, others, h, w_y, bad = _multi_margin_loss_parts(input, labels, weight, margin)
    hinge = jnp.where(others, jnp.maximum(h, 0), 0)
    terms = hinge if p == 1 else hinge * hinge
    per_example = w_y * jnp.sum(terms, axis=-1) / input.shape[-1]
    return reduce_loss(jnp.where(bad, jnp.nan, per_example), reduction)


def _multi_margin_loss_fwd(input, labels, weight=None, *, p=1, margin=1.0, reduction="mean"):
    safe, _, h, w_y, _ = _multi_margin_loss_parts(input, labels, weight, margin)
    out = _multi_margin_loss(input, labels, weight, p=p, margin=margin, reduction=reduction)
    return out, (h, safe, w_y)


def _multi_margin_loss_bwd(res, g, *, p=1, margin=1.0, reduction="mean"):
    h, safe, w_y = res
    n_classes = h.shape[-1]
    onehot = jax.nn.one_hot(safe, n_classes, dtype=h.dtype)
    active = (h > 0) & (onehot == 0)
    a = jnp.where(active, 1.0 if p == 1 else 2 * h, 0)
    a = a * (reduce_grad(g, reduction, h.shape[:-1]) * w_y / n_classes)[..., None]
    dx = a - onehot * jnp.sum(a, axis=-1, keepdims=True)
    return dx.astype(h.dtype), None, None


def _multi_margin_loss_examples(key, dtype):
    def scores(k, labels, c, margin):
        # keep every violation h_i = margin - x_y + x_i (i != y) at least 0.05 away from the kink at 0
        x = normal(k, (*labels.shape, c), dtype, 1.0)
        h = margin - jnp.take_along_axis(x, labels[..., None], -1) + x
        return jnp.where(jnp.abs(h) < 0.05, x + 0.1, x)

    k = keys(key, 6)
    labels = jax.random.randint(k[0], (6,), 0, 4)
    weight = uniform(k[1], (4,), dtype, 0.5, 2.0)
    x1 = scores(k[2], labels, 4, 1.0)
    x2 = scores(k[3], labels, 4, 0.5)
    labels_1d = jax.random.randint(k[4], (), 0, 4)
    return [
        Example((x1, labels), {}, "p=1 mean"),
        Example((x1, labels, weight), {"p": 2, "reduction": "sum"}, "p=2 sum, weights"),
        Example((x2, labels, weight), {"margin": 0.5, "reduction": "none"}, "margin=0.5 none, weights"),
        Example((scores(k[5], labels_1d, 4, 1.0), labels_1d), {"p": 2}, "single example (C,)"),
    ]


multi_margin_loss = primitive(
    "multi_margin_loss", _multi_margin_loss, _multi_margin_loss_fwd, _multi_margin_loss_bwd,
    examples=_multi_margin_loss_examples, space=_multi_margin_loss_space, check=_multi_margin_loss_check,
    nondiff=("weight",),
)
