"""Loss functions with hand-derived gradients, following ``torch.nn.functional``'s definitions.

Reductions follow torch: ``"mean"`` (default), ``"sum"`` or ``"none"`` (one value per element or example);
``kl_div`` also has ``"batchmean"``. Integer labels and class weights are inputs without gradients (their
cotangent is ``None``); float targets (regression targets, probability targets) get gradients, as in torch.

Layout: the class axis is the LAST axis (``(..., C)``), torch's is axis 1; labels have the logits' shape
without it.

Shapes are never broadcast silently: an input and its target must have the same shape (torch only warns
for ``mse_loss(pred (N, 1), target (N,))`` and then broadcasts to (N, N); here it is a ``ValueError``).
Only weights broadcast, and only in the documented way (class weights ``(C,)``; the element weights of the
binary cross-entropies broadcast *to* the input's shape, never enlarging it).

Bad labels: outside ``jit`` an out-of-range label raises ``ValueError``. Inside ``jit`` values cannot be
inspected, so an out-of-range label (that is not ``ignore_index``) turns that example's loss into NaN, and
the NaN propagates into the reduced loss; its gradient row is zero.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ..core.examples import Example, keys, normal, uniform
from ..core.primitive import is_concrete, primitive

__all__ = [
    "softmax_cross_entropy", "cross_entropy", "softmax_cross_entropy_with_probs", "nll_loss", "mse_loss",
    "l1_loss", "huber_loss", "smooth_l1_loss", "binary_cross_entropy_with_logits", "binary_cross_entropy",
    "kl_div", "multi_margin_loss", "REDUCTIONS",
]

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
        # NumPy, not jnp: a concrete array closed over inside a jit trace would turn jnp results into tracers
        values = np.asarray(labels)
        bad = (values != ignore_index) & ((values < 0) | (values >= n_classes))
        if bad.any():
            first = int(values[bad][0]) if values.ndim else int(values)
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


# =========================================================================== shared helpers for the losses
def _shape(x):
    return tuple(jnp.shape(x))


def _dtype(x):
    return jnp.result_type(x)


def _need_float(name, what, x):
    if not jnp.issubdtype(_dtype(x), jnp.floating):
        raise TypeError(f"{name}: {what} must be a floating-point array, got dtype {_dtype(x)}")


def _same_shape(name, x, t, what=("input", "target")):
    if _shape(x) != _shape(t):
        raise ValueError(
            f"{name}: {what[0]} shape {_shape(x)} and {what[1]} shape {_shape(t)} differ; they must be equal "
            "(nothing is broadcast: reshape one, e.g. pred.reshape(target.shape) or pred[..., 0])"
        )


def _check_labels(name, labels, x, *, ignore_index=None, what="input"):
    """Integer labels with the shape of ``x`` without its last (class) axis, in range when concrete."""
    if _shape(x) == ():
        raise ValueError(f"{name}: {what} must have a class axis (last), got shape ()")
    if not jnp.issubdtype(_dtype(labels), jnp.integer):
        raise TypeError(f"{name}: labels must be integer class indices, got dtype {_dtype(labels)}")
    if _shape(labels) != _shape(x)[:-1]:
        raise ValueError(
            f"{name}: labels shape {_shape(labels)} must equal the {what} shape without its class axis "
            f"{_shape(x)[:-1]} ({what} {_shape(x)}; the class axis is the last one)"
        )
    n_classes = _shape(x)[-1]
    if is_concrete(labels):
        values = np.asarray(labels)           # NumPy: stays concrete inside a jit trace
        bad = (values < 0) | (values >= n_classes)
        if ignore_index is not None:
            bad = bad & (values != ignore_index)
        if bad.any():
            first = int(values[bad][0]) if values.ndim else int(values)
            also = "" if ignore_index is None else f", or ignore_index={ignore_index}"
            raise ValueError(f"{name}: label {first} is out of range for {n_classes} classes "
                             f"(valid: 0..{n_classes - 1}{also})")


def _check_class_weight(name, weight, n_classes):
    if weight is not None:
        _need_float(name, "class weight", weight)
        if _shape(weight) != (n_classes,):
            raise ValueError(f"{name}: class weight shape {_shape(weight)} must be ({n_classes},), one per class")


def _check_elem_weight(name, what, weight, x):
    """Element weights broadcast to the input's shape, never enlarging it."""
    if weight is None:
        return
    _need_float(name, what, weight)
    try:
        out = jnp.broadcast_shapes(_shape(weight), _shape(x))
    except ValueError:
        out = None
    if out != _shape(x):
        raise ValueError(f"{name}: {what} shape {_shape(weight)} does not broadcast to the input shape {_shape(x)}")


def _check_red(name, reduction, valid=REDUCTIONS):
    if reduction not in valid:
        raise ValueError(f"{name}: unknown reduction {reduction!r}; valid: {', '.join(valid)}")


def _reduce_all(loss, reduction):
    """Reduce an elementwise (or per-example) loss: none, sum, mean over all entries, batchmean (sum / N)."""
    if reduction == "none":
        return loss
    if reduction == "sum":
        return jnp.sum(loss)
    if reduction == "batchmean":
        return jnp.sum(loss) / loss.shape[0]
    return jnp.mean(loss)


def _seed(g, reduction, shape):
    """d(reduced loss)/d(loss_i) times the cotangent g: what every entry's local gradient is multiplied by."""
    if reduction == "none":
        return g
    if reduction == "sum":
        return g
    if reduction == "batchmean":
        return g / shape[0]
    return g / math.prod(shape)


def _tag(x):
    """A scalar carrying ``x``'s dtype into the residuals (cotangents must have their input's dtype)."""
    return jnp.zeros((), _dtype(x))


# ================================================================ softmax cross-entropy, probability targets
def _cep_check(logits, targets, weight=None, *, reduction="mean", label_smoothing=0.0):
    name = "softmax_cross_entropy_with_probs"
    _check_red(name, reduction)
    _need_float(name, "logits", logits)
    _need_float(name, "targets (class probabilities)", targets)
    if _shape(logits) == ():
        raise ValueError(f"{name}: logits must have a class axis (last), got shape ()")
    _same_shape(name, logits, targets, ("logits", "targets"))
    _check_class_weight(name, weight, _shape(logits)[-1])
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{name}: label_smoothing must lie in [0, 1], got {label_smoothing}")


def _cep_parts(logits, targets, weight, label_smoothing):
    n_classes = logits.shape[-1]
    m = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    m = jnp.where(jnp.isfinite(m), m, 0)
    z = logits - m
    logp = z - jnp.log(jnp.sum(jnp.exp(z), axis=-1, keepdims=True))
    q = (1.0 - label_smoothing) * targets + label_smoothing / n_classes
    # 0 * log 0: a class the target rules out contributes nothing, even where its logit is -inf
    logp_safe = jnp.where((q == 0) & jnp.isneginf(logp), 0, logp)
    w = jnp.ones((n_classes,), logits.dtype) if weight is None else weight.astype(logits.dtype)
    return logp, logp_safe, q, w


def _softmax_cross_entropy_with_probs(logits, targets, weight=None, *, reduction="mean", label_smoothing=0.0):
    """Cross-entropy of softmax(logits) against class probabilities (torch's ``F.cross_entropy`` with a
    float target of the logits' shape).

    With p = softmax(z) along the last axis, q = (1 - eps) t + eps / C (label smoothing eps) and class
    weights w:
        l_n = - sum_c w_c q_nc log p_nc,      mean: sum_n l_n / N  (N = number of rows; torch does not
                                                                     divide by the weights here)
    Gradients (log p_c = z_c - logsumexp z, so d log p_c / d z_j = delta_cj - p_j):
        dl_n/dz_nj = p_nj sum_c w_c q_nc - w_j q_nj          (p - t when w = 1 and sum t = 1)
        dl_n/dt_nc = -(1 - eps) w_c log p_nc
    Terms with q_c = 0 and log p_c = -inf count as 0 (0 log 0 = 0), so -inf logits where the target is
    zero give a finite loss, a zero logit gradient there, and (by that convention) a zero target gradient
    there; torch returns NaN for such a loss. Residuals: log p (p = exp(log p) is recomputed), q, w.
    """
    logp, logp_safe, q, w = _cep_parts(logits, targets, weight, label_smoothing)
    per_example = -jnp.sum(w * q * logp_safe, axis=-1)
    return _reduce_all(per_example, reduction)


def _cep_fwd(logits, targets, weight=None, *, reduction="mean", label_smoothing=0.0):
    logp, logp_safe, q, w = _cep_parts(logits, targets, weight, label_smoothing)
    per_example = -jnp.sum(w * q * logp_safe, axis=-1)
    return _reduce_all(per_example, reduction), (logp, q, w, _tag(targets))


def _cep_bwd(res, g, *, reduction="mean", label_smoothing=0.0):
    logp, q, w, t_tag = res
    scale = _seed(g, reduction, logp.shape[:-1])
    if reduction == "none":
        scale = scale[..., None]
    wq = w * q
    # p = exp(log p) is exactly 0 at a -inf logit, so dz = 0 there (no NaN)
    dz = (jnp.exp(logp) * jnp.sum(wq, axis=-1, keepdims=True) - wq) * scale
    logp_safe = jnp.where((q == 0) & jnp.isneginf(logp), 0, logp)
    dt = -(1.0 - label_smoothing) * w * logp_safe * scale
    return dz.astype(logp.dtype), dt.astype(t_tag.dtype), None


def _probs(key, shape, dtype, temperature=1.0):
    return jax.nn.softmax(jax.random.normal(key, shape) / temperature, axis=-1).astype(dtype)


def _cep_examples(key, dtype):
    k = keys(key, 6)
    logits = normal(k[0], (5, 4), dtype, 2.0)
    t = _probs(k[1], (5, 4), dtype)
    weight = uniform(k[2], (4,), dtype, 0.5, 2.0)
    return [
        Example((logits, t), {}, "mean"),
        Example((logits, t), {"reduction": "sum"}, "sum"),
        Example((logits, t, weight), {"reduction": "none", "label_smoothing": 0.2}, "none, weights+smoothing"),
        Example((normal(k[3], (2, 3, 4), dtype), _probs(k[4], (2, 3, 4), dtype), weight), {}, "3-D, weights"),
    ]


softmax_cross_entropy_with_probs = primitive(
    "softmax_cross_entropy_with_probs", _softmax_cross_entropy_with_probs, _cep_fwd, _cep_bwd,
    examples=_cep_examples, check=_cep_check, nondiff=("weight",),
)


# ================================================================================ negative log-likelihood
def _nll_check(logp, labels, weight=None, *, reduction="mean", ignore_index=-100):
    name = "nll_loss"
    _check_red(name, reduction)
    _need_float(name, "input (log-probabilities)", logp)
    _check_labels(name, labels, logp, ignore_index=ignore_index)
    _check_class_weight(name, weight, _shape(logp)[-1])


def _nll_parts(logp, labels, weight, ignore_index):
    n_classes = logp.shape[-1]
    valid = labels != ignore_index
    safe = jnp.where(valid, labels, 0)
    bad = valid & ((labels < 0) | (labels >= n_classes))
    safe = jnp.where(bad, 0, safe)
    w = jnp.ones((n_classes,), logp.dtype) if weight is None else weight.astype(logp.dtype)
    w_y = jnp.where(valid & ~bad, w[safe], 0)
    return safe, w_y, bad


def _nll_loss(logp, labels, weight=None, *, reduction="mean", ignore_index=-100):
    """Negative log-likelihood of integer labels under log-probabilities (torch's ``F.nll_loss``).

    The input is already log p (say from ``log_softmax``), class axis last:
        l_n = - w_{y_n} x_{n, y_n}            (0 where y_n = ignore_index)
        mean: sum_n l_n / sum_n w_{y_n}       (torch's weighted mean over the labels that are not ignored;
                                               NaN when every label is ignored, as torch)
    The loss is linear in x, so the gradient is a scattered constant:
        dl/dx_{nc} = -w_{y_n} [c = y_n] * (1, or 1 / sum w_y for the mean)
    Residuals: the (clipped) labels, w_{y_n} and the denominator.
    """
    safe, w_y, bad = _nll_parts(logp, labels, weight, ignore_index)
    picked = jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
    per_example = jnp.where(w_y != 0, -w_y * picked, 0)
    per_example = jnp.where(bad, jnp.nan, per_example)
    if reduction == "mean":
        return jnp.sum(per_example) / jnp.sum(w_y)
    return _reduce_all(per_example, reduction)


def _nll_fwd(logp, labels, weight=None, *, reduction="mean", ignore_index=-100):
    safe, w_y, _ = _nll_parts(logp, labels, weight, ignore_index)
    out = _nll_loss(logp, labels, weight, reduction=reduction, ignore_index=ignore_index)
    # a (C,) zero vector carries the class count and the dtype of the cotangent
    return out, (safe, w_y, jnp.sum(w_y), jnp.zeros(logp.shape[-1:], logp.dtype))


def _nll_bwd(res, g, *, reduction="mean", ignore_index=-100):
    safe, w_y, denom, cls = res
    scale = g / denom if reduction == "mean" else g
    dx = -jax.nn.one_hot(safe, cls.shape[-1], dtype=cls.dtype) * (w_y * scale)[..., None]
    return dx.astype(cls.dtype), None, None


def _class_examples(key, dtype, n=6, c=5, scale=2.0):
    k = keys(key, 4)
    x = normal(k[0], (n, c), dtype, scale)
    labels = jax.random.randint(k[1], (n,), 0, c)
    weight = uniform(k[2], (c,), dtype, 0.5, 2.0)
    return x, labels, weight, k[3]


def _nll_examples(key, dtype):
    x, labels, weight, k = _class_examples(key, dtype)
    logp = jax.nn.log_softmax(x, axis=-1)
    k1, k2 = jax.random.split(k)
    return [
        Example((logp, labels), {}, "mean"),
        Example((logp, labels, weight), {"reduction": "sum"}, "sum, weights"),
        Example((logp, labels.at[1].set(-100)), {"reduction": "none"}, "none, ignore_index"),
        Example((logp, labels.at[1].set(7).at[4].set(7), weight), {"ignore_index": 7}, "weights, ignore_index=7"),
        Example((jax.nn.log_softmax(normal(k1, (2, 3, 4), dtype), -1), jax.random.randint(k2, (2, 3), 0, 4)),
                {}, "3-D"),
    ]


nll_loss = primitive("nll_loss", _nll_loss, _nll_fwd, _nll_bwd, examples=_nll_examples, check=_nll_check,
                     nondiff=("weight",))


# =============================================================================== regression: MSE, L1, Huber
def _regression_check(name, x, t, reduction):
    _check_red(name, reduction)
    _need_float(name, "input", x)
    _need_float(name, "target", t)
    _same_shape(name, x, t)


def _regression_examples(settings, kinks=()):
    """(4, 3) inputs and targets whose differences keep clear of the loss's kinks."""

    def examples(key, dtype):
        k = keys(key, 2 * len(settings) + 2)
        out = []
        for i, (s, label) in enumerate(settings):
            x = normal(k[2 * i], (4, 3), dtype, 1.5)
            t = normal(k[2 * i + 1], (4, 3), dtype)
            d = x - t
            for p in kinks(s) if callable(kinks) else kinks:
                for sign in (1, -1):                  # push |d| away from each kink by at least 0.05
                    near = jnp.abs(d - sign * p) < 0.05
                    d = jnp.where(near, d + jnp.where(d - sign * p < 0, -0.1, 0.1), d)
            out.append(Example((t + d, t), s, label))
        return out

    return examples


_REDUCTION_CONFIGS = [({}, "mean"), ({"reduction": "sum"}, "sum"), ({"reduction": "none"}, "none")]


def _mse_loss(input, target, *, reduction="mean"):
    """Mean squared error (torch's ``F.mse_loss``): l_i = (x_i - t_i)^2, reduced over all entries.

    With d = x - t:  dl_i/dx_i = 2 d_i,  dl_i/dt_i = -2 d_i (times 1/size for the mean).  Residual: d.
    """
    d = input - target
    return _reduce_all(d * d, reduction)


def _mse_fwd(input, target, *, reduction="mean"):
    d = input - target
    return _reduce_all(d * d, reduction), (d, _tag(input), _tag(target))


def _mse_bwd(res, g, *, reduction="mean"):
    d, x_tag, t_tag = res
    dx = 2 * d * _seed(g, reduction, d.shape)
    return dx.astype(x_tag.dtype), (-dx).astype(t_tag.dtype)


mse_loss = primitive(
    "mse_loss", _mse_loss, _mse_fwd, _mse_bwd, examples=_regression_examples(_REDUCTION_CONFIGS),
    check=lambda input, target, *, reduction="mean": _regression_check("mse_loss", input, target, reduction),
)


def _l1_loss(input, target, *, reduction="mean"):
    """Mean absolute error (torch's ``F.l1_loss``): l_i = |x_i - t_i|.

    dl_i/dx_i = sign(x_i - t_i) (0 at a tie, as torch), dl_i/dt_i = -sign(x_i - t_i).  Residual: sign(d).
    """
    return _reduce_all(jnp.abs(input - target), reduction)


def _l1_fwd(input, target, *, reduction="mean"):
    d = input - target
    return _reduce_all(jnp.abs(d), reduction), (jnp.sign(d), _tag(input), _tag(target))


def _l1_bwd(res, g, *, reduction="mean"):
    s, x_tag, t_tag = res
    dx = s * _seed(g, reduction, s.shape)
    return dx.astype(x_tag.dtype), (-dx).astype(t_tag.dtype)


l1_loss = primitive(
    "l1_loss", _l1_loss, _l1_fwd, _l1_bwd, examples=_regression_examples(_REDUCTION_CONFIGS, kinks=(0.0,)),
    check=lambda input, target, *, reduction="mean": _regression_check("l1_loss", input, target, reduction),
)


def _huber_check(input, target, *, reduction="mean", delta=1.0):
    _regression_check("huber_loss", input, target, reduction)
    if not delta > 0:
        raise ValueError(f"huber_loss: delta must be > 0, got {delta}")


def _huber_loss(input, target, *, reduction="mean", delta=1.0):
    """Huber loss (torch's ``F.huber_loss``): quadratic near 0, linear beyond delta. With d = x - t,
        l_i = d^2 / 2                  if |d| < delta
              delta (|d| - delta / 2)  otherwise
    Both pieces have slope d at |d| = delta, so dl/dd = clip(d, -delta, delta) everywhere:
        dl/dx = clip(d, -delta, delta),  dl/dt = -clip(d, -delta, delta).   Residual: d.
    """
    d = input - target
    a = jnp.abs(d)
    return _reduce_all(jnp.where(a < delta, 0.5 * d * d, delta * (a - 0.5 * delta)), reduction)


def _huber_fwd(input, target, *, reduction="mean", delta=1.0):
    d = input - target
    return _huber_loss(input, target, reduction=reduction, delta=delta), (d, _tag(input), _tag(target))


def _huber_bwd(res, g, *, reduction="mean", delta=1.0):
    d, x_tag, t_tag = res
    dx = jnp.clip(d, -delta, delta) * _seed(g, reduction, d.shape)
    return dx.astype(x_tag.dtype), (-dx).astype(t_tag.dtype)


huber_loss = primitive(
    "huber_loss", _huber_loss, _huber_fwd, _huber_bwd, check=_huber_check,
    examples=_regression_examples(_REDUCTION_CONFIGS + [({"delta": 0.5}, "delta=0.5")],
                                  kinks=lambda s: (s.get("delta", 1.0),)),
)


def _smooth_l1_check(input, target, *, reduction="mean", beta=1.0):
    _regression_check("smooth_l1_loss", input, target, reduction)
    if not beta >= 0:
        raise ValueError(f"smooth_l1_loss: beta must be >= 0, got {beta}")


def _smooth_l1_loss(input, target, *, reduction="mean", beta=1.0):
    """Smooth L1 (torch's ``F.smooth_l1_loss``), the Huber loss divided by its threshold. With d = x - t,
        l_i = d^2 / (2 beta)   if |d| < beta
              |d| - beta / 2   otherwise                (beta = 0 is the L1 loss)
    so smooth_l1(beta) = huber(delta = beta) / beta and dl/dx = clip(d / beta, -1, 1) = -dl/dt
    (sign(d) when beta = 0).  Residual: d.
    """
    d = input - target
    a = jnp.abs(d)
    if beta == 0:
        return _reduce_all(a, reduction)
    return _reduce_all(jnp.where(a < beta, 0.5 * d * d / beta, a - 0.5 * beta), reduction)


def _smooth_l1_fwd(input, target, *, reduction="mean", beta=1.0):
    d = input - target
    return _smooth_l1_loss(input, target, reduction=reduction, beta=beta), (d, _tag(input), _tag(target))


def _smooth_l1_bwd(res, g, *, reduction="mean", beta=1.0):
    d, x_tag, t_tag = res
    slope = jnp.sign(d) if beta == 0 else jnp.clip(d / beta, -1.0, 1.0)
    dx = slope * _seed(g, reduction, d.shape)
    return dx.astype(x_tag.dtype), (-dx).astype(t_tag.dtype)


smooth_l1_loss = primitive(
    "smooth_l1_loss", _smooth_l1_loss, _smooth_l1_fwd, _smooth_l1_bwd, check=_smooth_l1_check,
    examples=_regression_examples(
        _REDUCTION_CONFIGS + [({"beta": 0.5}, "beta=0.5"), ({"beta": 0.0, "reduction": "sum"}, "beta=0 (L1)")],
        kinks=lambda s: (s.get("beta", 1.0),)),
)


# ========================================================================= binary cross-entropy (logits)
def _bcel_check(logits, targets, weight=None, pos_weight=None, *, reduction="mean"):
    name = "binary_cross_entropy_with_logits"
    _check_red(name, reduction)
    _need_float(name, "logits", logits)
    _need_float(name, "targets", targets)
    _same_shape(name, logits, targets, ("logits", "targets"))
    _check_elem_weight(name, "weight", weight, logits)
    _check_elem_weight(name, "pos_weight", pos_weight, logits)


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
    Residuals: x and t (sigma and softplus are recomputed), the weights.
    """
    pw = 1.0 if pos_weight is None else pos_weight
    loss = pw * targets * _softplus0(-logits) + (1 - targets) * _softplus0(logits)
    if weight is not None:
        loss = weight * loss
    return _reduce_all(loss, reduction)


def _bcel_fwd(logits, targets, weight=None, pos_weight=None, *, reduction="mean"):
    out = _binary_cross_entropy_with_logits(logits, targets, weight, pos_weight, reduction=reduction)
    return out, (logits, targets, weight, pos_weight)


def _bcel_bwd(res, g, *, reduction="mean"):
    x, t, weight, pos_weight = res
    seed = _seed(g, reduction, x.shape)
    w = seed if weight is None else weight * seed
    pw = 1.0 if pos_weight is None else pos_weight
    dx = w * ((pw * t + 1 - t) * jax.nn.sigmoid(x) - pw * t)
    dt = w * (pw * _softplus0(-x) - _softplus0(x))
    return dx.astype(x.dtype), dt.astype(t.dtype), None, None


def _bcel_examples(key, dtype):
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
    "binary_cross_entropy_with_logits", _binary_cross_entropy_with_logits, _bcel_fwd, _bcel_bwd,
    examples=_bcel_examples, check=_bcel_check, nondiff=("weight", "pos_weight"),
)


# ==================================================================== binary cross-entropy (probabilities)
def _bce_check(probs, targets, weight=None, *, reduction="mean"):
    name = "binary_cross_entropy"
    _check_red(name, reduction)
    _need_float(name, "input (probabilities)", probs)
    _need_float(name, "targets", targets)
    _same_shape(name, probs, targets, ("input", "targets"))
    _check_elem_weight(name, "weight", weight, probs)
    if is_concrete(probs) and bool(np.any((np.asarray(probs) < 0) | (np.asarray(probs) > 1))):
        raise ValueError(f"{name}: input probabilities must lie in [0, 1]; for logits use "
                         "binary_cross_entropy_with_logits")


def _bce_logs(p):
    # torch clamps both logarithms at -100 so that p = 0 or 1 gives a finite loss
    return jnp.maximum(jnp.log(p), -100.0), jnp.maximum(jnp.log1p(-p), -100.0)


def _binary_cross_entropy(probs, targets, weight=None, *, reduction="mean"):
    """Binary cross-entropy on probabilities (torch's ``F.binary_cross_entropy``), elementwise:

        l = -w [ t log p + (1 - t) log(1 - p) ]      with both logs clamped at -100 (as torch)
        dl/dp = -w [ t / p - (1 - t) / (1 - p) ] = w (p - t) / (p (1 - p))
        dl/dt = -w [ log p - log(1 - p) ]
    A clamped log contributes no gradient (so p = 0 or 1 gives a finite gradient; torch instead divides
    by max(p (1 - p), 1e-12)). Prefer the logits version: it is stable where this one saturates.
    Input values outside [0, 1] raise outside ``jit`` and give NaN inside it. Residuals: p and t.
    """
    log_p, log_q = _bce_logs(probs)
    loss = -(targets * log_p + (1 - targets) * log_q)
    if weight is not None:
        loss = weight * loss
    return _reduce_all(loss, reduction)


def _bce_fwd(probs, targets, weight=None, *, reduction="mean"):
    return _binary_cross_entropy(probs, targets, weight, reduction=reduction), (probs, targets, weight)


def _bce_bwd(res, g, *, reduction="mean"):
    p, t, weight = res
    seed = _seed(g, reduction, p.shape)
    w = seed if weight is None else weight * seed
    log_p, log_q = _bce_logs(p)
    inv_p = jnp.where(log_p > -100.0, 1.0 / p, 0)
    inv_q = jnp.where(log_q > -100.0, 1.0 / (1 - p), 0)
    dp = -w * (t * inv_p - (1 - t) * inv_q)
    dt = -w * (log_p - log_q)
    return dp.astype(p.dtype), dt.astype(t.dtype), None


def _bce_examples(key, dtype):
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
    "binary_cross_entropy", _binary_cross_entropy, _bce_fwd, _bce_bwd, examples=_bce_examples, check=_bce_check,
    nondiff=("weight",),
)


# ============================================================================================ KL divergence
KL_REDUCTIONS = ("mean", "sum", "none", "batchmean")


def _kl_check(input, target, *, reduction="mean", log_target=False):
    name = "kl_div"
    _check_red(name, reduction, KL_REDUCTIONS)
    _need_float(name, "input (log-probabilities)", input)
    _need_float(name, "target", target)
    _same_shape(name, input, target)
    if reduction == "batchmean" and _shape(input) == ():
        raise ValueError(f"{name}: reduction='batchmean' needs a batch axis, got shape ()")


def _kl_div(input, target, *, reduction="mean", log_target=False):
    """KL divergence with torch's conventions (``F.kl_div``): ``input`` is log q (log-probabilities of the
    model), ``target`` is p (or log p with ``log_target=True``). Elementwise
        l = p (log p - log q)          (0 where p = 0)           log_target: l = e^s (s - log q), s = log p
    Reductions: "batchmean" (sum / batch size, the true KL per example), "sum", "none", and torch's default
    "mean", which divides by the number of ENTRIES (so it is the KL divided by the number of classes).
    Gradients, with x = log q:
        dl/dx = -p                     log_target: -e^s
        dl/dp = log p + 1 - x          log_target: dl/ds = e^s (s - x + 1)
    (dl/dp -> -inf at p = 0: give a target with zeros no gradient, or use log_target.)  Residuals: x, target.
    """
    if log_target:
        loss = jnp.exp(target) * (target - input)
    else:
        loss = jax.scipy.special.xlogy(target, target) - target * input
    return _reduce_all(loss, reduction)


def _kl_fwd(input, target, *, reduction="mean", log_target=False):
    return _kl_div(input, target, reduction=reduction, log_target=log_target), (input, target)


def _kl_bwd(res, g, *, reduction="mean", log_target=False):
    x, t = res
    seed = _seed(g, reduction, x.shape)
    if log_target:
        p = jnp.exp(t)
        dx, dt = -p * seed, p * (t - x + 1) * seed
    else:
        dx, dt = -t * seed, (jnp.log(t) + 1 - x) * seed
    return dx.astype(x.dtype), dt.astype(t.dtype)


def _kl_examples(key, dtype):
    k = keys(key, 4)
    logq = jax.nn.log_softmax(normal(k[0], (4, 5), dtype), axis=-1)
    p = _probs(k[1], (4, 5), dtype, 0.7)
    return [
        Example((logq, p), {}, "mean"),
        Example((logq, p), {"reduction": "batchmean"}, "batchmean"),
        Example((logq, p), {"reduction": "sum"}, "sum"),
        Example((logq, jnp.log(p)), {"reduction": "none", "log_target": True}, "none, log_target"),
        Example((logq, jnp.log(p)), {"reduction": "batchmean", "log_target": True}, "batchmean, log_target"),
    ]


kl_div = primitive("kl_div", _kl_div, _kl_fwd, _kl_bwd, examples=_kl_examples, check=_kl_check)


# ======================================================================= multiclass hinge (SVM) loss
def _mm_check(input, labels, weight=None, *, p=1, margin=1.0, reduction="mean"):
    name = "multi_margin_loss"
    _check_red(name, reduction)
    if p not in (1, 2):
        raise ValueError(f"{name}: p must be 1 or 2, got {p!r}")
    _need_float(name, "input (scores)", input)
    _check_labels(name, labels, input)
    _check_class_weight(name, weight, _shape(input)[-1])


def _mm_parts(x, labels, weight, margin):
    n_classes = x.shape[-1]
    bad = (labels < 0) | (labels >= n_classes)
    safe = jnp.where(bad, 0, labels)
    others = jax.nn.one_hot(safe, n_classes, dtype=x.dtype) == 0        # True for i != y
    x_y = jnp.take_along_axis(x, safe[..., None], axis=-1)
    h = margin - x_y + x                                                # (..., C): the margin violations
    w = jnp.ones((n_classes,), x.dtype) if weight is None else weight.astype(x.dtype)
    return safe, others, h, jnp.where(bad, 0, w[safe]), bad       # a bad label's row gets no gradient


def _multi_margin_loss(input, labels, weight=None, *, p=1, margin=1.0, reduction="mean"):
    """Multiclass hinge loss of the multiclass SVM (torch's ``F.multi_margin_loss``), class axis last.

    With scores x (..., C), label y and h_i = margin - x_y + x_i (the violation of class i):
        l = w_y / C * sum_{i != y} max(0, h_i)^p            (p = 1 or 2; mean: average over examples)
    Only violated classes (h_i > 0) contribute. With a_i = p max(0, h_i)^(p-1) [i != y] [h_i > 0]:
        dl/dx_i = w_y a_i / C        (i != y)
        dl/dx_y = -w_y / C * sum_{i != y} a_i
    Residuals: h, the label and w_y. Labels out of range give NaN inside jit (see the module docstring).
    """
    safe, others, h, w_y, bad = _mm_parts(input, labels, weight, margin)
    hinge = jnp.where(others, jnp.maximum(h, 0), 0)
    terms = hinge if p == 1 else hinge * hinge
    per_example = w_y * jnp.sum(terms, axis=-1) / input.shape[-1]
    per_example = jnp.where(bad, jnp.nan, per_example)
    return _reduce_all(per_example, reduction)


def _mm_fwd(input, labels, weight=None, *, p=1, margin=1.0, reduction="mean"):
    safe, others, h, w_y, _ = _mm_parts(input, labels, weight, margin)
    out = _multi_margin_loss(input, labels, weight, p=p, margin=margin, reduction=reduction)
    return out, (h, safe, w_y)


def _mm_bwd(res, g, *, p=1, margin=1.0, reduction="mean"):
    h, safe, w_y = res
    n_classes = h.shape[-1]
    onehot = jax.nn.one_hot(safe, n_classes, dtype=h.dtype)
    active = (h > 0) & (onehot == 0)
    a = jnp.where(active, 1.0 if p == 1 else 2 * h, 0)
    scale = _seed(g, reduction, h.shape[:-1]) * w_y / n_classes
    a = a * scale[..., None]
    dx = a - onehot * jnp.sum(a, axis=-1, keepdims=True)
    return dx.astype(h.dtype), None, None


def _mm_examples(key, dtype):
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
    "multi_margin_loss", _multi_margin_loss, _mm_fwd, _mm_bwd, examples=_mm_examples, check=_mm_check,
    nondiff=("weight",),
)
