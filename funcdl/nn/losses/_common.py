"""What every loss shares: the reductions and their gradients, the input checks, class weights, log-softmax."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ...core.primitive import is_concrete

__all__ = [
    "REDUCTIONS", "KL_REDUCTIONS", "check_reduction", "check_smoothing", "need_float", "same_shape", "check_labels",
    "check_class_weight", "check_elem_weight", "class_weights", "log_softmax", "reduce_loss", "reduce_grad",
    "dtype_tag", "probabilities",
]

REDUCTIONS = ("mean", "sum", "none")
KL_REDUCTIONS = ("mean", "sum", "none", "batchmean")


# -- checks ---------------------------------------------------------------------------------------------------------
def _shape(x):
    return tuple(jnp.shape(x))


def _dtype(x):
    return jnp.result_type(x)


def check_reduction(name, reduction, valid=REDUCTIONS):
    if reduction not in valid:
        raise ValueError(f"{name}: unknown reduction {reduction!r}; valid: {', '.join(valid)}")


def check_smoothing(name, label_smoothing):
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{name}: label_smoothing must lie in [0, 1], got {label_smoothing}")


def need_float(name, what, x):
    if not jnp.issubdtype(_dtype(x), jnp.floating):
        raise TypeError(f"{name}: {what} must be a floating-point array, got dtype {_dtype(x)}")


def same_shape(name, x, t, what=("input", "target")):
    if _shape(x) != _shape(t):
        raise ValueError(
            f"{name}: {what[0]} shape {_shape(x)} and {what[1]} shape {_shape(t)} differ; they must be equal "
            "(nothing is broadcast: reshape one, e.g. pred.reshape(target.shape) or pred[..., 0])"
        )


def check_labels(name, labels, x, *, ignore_index=None, what="input", hint=""):
    """Integer labels with the shape of ``x`` without its last (class) axis, in range when concrete."""
    if _shape(x) == ():
        raise ValueError(f"{name}: {what} must have a class axis (last), got shape ()")
    if not jnp.issubdtype(_dtype(labels), jnp.integer):
        raise TypeError(f"{name}: labels must be integer class indices, got dtype {_dtype(labels)}{hint}")
    if _shape(labels) != _shape(x)[:-1]:
        raise ValueError(
            f"{name}: labels shape {_shape(labels)} must equal the {what} shape without its class axis "
            f"{_shape(x)[:-1]} ({what} {_shape(x)}; the class axis is the last one)"
        )
    n_classes = _shape(x)[-1]
    if is_concrete(labels):
        values = np.asarray(labels)           # NumPy: a concrete array closed over inside a jit trace stays concrete
        bad = (values < 0) | (values >= n_classes)
        if ignore_index is not None:
            bad = bad & (values != ignore_index)
        if bad.any():
            first = int(values[bad][0]) if values.ndim else int(values)
            also = "" if ignore_index is None else f", or ignore_index={ignore_index}"
            raise ValueError(f"{name}: label {first} is out of range for {n_classes} classes "
                             f"(valid: 0..{n_classes - 1}{also})")


def check_class_weight(name, weight, n_classes):
    if weight is not None:
        need_float(name, "class weight", weight)
        if _shape(weight) != (n_classes,):
            raise ValueError(f"{name}: class weight shape {_shape(weight)} must be ({n_classes},), one per class")


def check_elem_weight(name, what, weight, x):
    """Element weights broadcast to the input's shape, never enlarging it."""
    if weight is None:
        return
    need_float(name, what, weight)
    try:
        out = jnp.broadcast_shapes(_shape(weight), _shape(x))
    except ValueError:
        out = None
    if out != _shape(x):
        raise ValueError(f"{name}: {what} shape {_shape(weight)} does not broadcast to the input shape {_shape(x)}")


# -- arithmetic -----------------------------------------------------------------------------------------------------
def class_weights(weight, n_classes, dtype):
    """The (C,) class weights, ones when none are given."""
    return jnp.ones((n_classes,), dtype) if weight is None else weight.astype(dtype)


def log_softmax(logits):
    """log p = z - logsumexp(z) along the last axis; a row of -inf logits keeps a finite shift (no NaN)."""
    m = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    z = logits - jnp.where(jnp.isfinite(m), m, 0)
    return z - jnp.log(jnp.sum(jnp.exp(z), axis=-1, keepdims=True))


def reduce_loss(loss, reduction, denom=None):
    """"none", "sum", "batchmean" (sum / N) or "mean": the sum over ``denom`` when given (torch's weighted mean of
    the class-indexed losses), else over the number of entries."""
    if reduction == "none":
        return loss
    if reduction == "sum":
        return jnp.sum(loss)
    if reduction == "batchmean":
        return jnp.sum(loss) / loss.shape[0]
    return jnp.mean(loss) if denom is None else jnp.sum(loss) / denom


def reduce_grad(g, reduction, shape, denom=None):
    """d(reduced loss)/d(loss_i) times the cotangent g: what every entry's local gradient is multiplied by."""
    if reduction in ("none", "sum"):
        return g
    if reduction == "batchmean":
        return g / shape[0]
    return g / math.prod(shape) if denom is None else g / denom


def dtype_tag(x):
    """A scalar carrying ``x``'s dtype into the residuals (cotangents must have their input's dtype)."""
    return jnp.zeros((), _dtype(x))


def probabilities(key, shape, dtype, temperature=1.0):
    """Example targets: random rows of class probabilities."""
    return jax.nn.softmax(jax.random.normal(key, shape) / temperature, axis=-1).astype(dtype)
