"""Activation functions, each with its derivative worked out by hand.

Elementwise activations ``y = f(x)`` have a diagonal Jacobian, so the VJP is ``dx = dy * f'(x)``; the only
design choice is what to keep for the backward. Where ``f'`` is cheapest written with the output (sigmoid,
tanh, relu) we keep ``y``; otherwise we keep ``x`` and recompute. Softmax and log-softmax couple the
entries along one axis and get the row-wise formulas derived below.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..core.examples import Example, away_from, keys, normal
from ..core.primitive import primitive
from ._gelu import gelu as gelu_value
from ._gelu import gelu_and_grad
from ._space import arr, bounded_away, integer, num, pick

__all__ = [
    "identity", "relu", "leaky_relu", "elu", "selu", "gelu", "silu", "swish", "sigmoid", "tanh", "softplus",
    "mish", "hard_tanh", "hard_sigmoid", "softmax", "log_softmax", "ACTIVATIONS", "get_activation",
]


def _unary(kinks=(), scale=2.0, settings=None):
    """Example factory for an elementwise function: a (5, 7) array, kept clear of its kinks."""
    configs = settings or [{}]

    def examples(key, dtype):
        out = []
        for k, s in zip(keys(key, len(configs)), configs, strict=True):
            pts = kinks(s) if callable(kinks) else kinks
            x = away_from(normal(k, (5, 7), dtype, scale), pts, 0.05)
            out.append(Example((x,), s))
        return out

    return examples


def _unary_space(settings=None, kinks=(), scale=(0.5, 3.0)):
    """Space of an elementwise function: an array of rank 0-3 (sides 1-6) with a random scale, the settings
    ``settings(rng)`` draws, values kept clear of the kinks ``kinks(settings)`` lists."""

    def space(rng, dtype):
        s = settings(rng) if settings else {}
        shape = tuple(integer(rng, 1, 6) for _ in range(integer(rng, 0, 3)))
        pts = kinks(s) if callable(kinks) else kinks
        return Example((arr(rng, shape, dtype, num(rng, *scale), kinks=pts),), s)

    return space


# ---------------------------------------------------------------------------------------------- identity
def _identity(x):
    """y = x.  The Jacobian is the identity matrix, so the VJP passes the cotangent through: dx = dy."""
    return x


def _identity_fwd(x):
    return _identity(x), ()


def _identity_bwd(res, dy):
    return (dy,)


identity = primitive("identity", _identity, _identity_fwd, _identity_bwd, examples=_unary(), space=_unary_space())


# -------------------------------------------------------------------------------------------------- relu
def _relu(x):
    """y = max(x, 0);  dy/dx = 1[x > 0] (0 at x = 0, as torch).  Keep y: y > 0 exactly where x > 0."""
    return jnp.maximum(x, 0)


def _relu_fwd(x):
    y = _relu(x)
    return y, (y,)


def _relu_bwd(res, dy):
    (y,) = res
    return (jnp.where(y > 0, dy, 0),)


relu = primitive("relu", _relu, _relu_fwd, _relu_bwd, examples=_unary(kinks=(0.0,)),
                 space=_unary_space(kinks=(0.0,)))


# -------------------------------------------------------------------------------------------- leaky_relu
def _leaky_relu(x, *, negative_slope=0.01):
    """y = x for x > 0, a x otherwise;  dy/dx = 1 or a.  Keep x."""
    return jnp.where(x > 0, x, negative_slope * x)


def _leaky_relu_fwd(x, *, negative_slope=0.01):
    return _leaky_relu(x, negative_slope=negative_slope), (x,)


def _leaky_relu_bwd(res, dy, *, negative_slope=0.01):
    (x,) = res
    return (jnp.where(x > 0, dy, negative_slope * dy),)


leaky_relu = primitive(
    "leaky_relu", _leaky_relu, _leaky_relu_fwd, _leaky_relu_bwd,
    examples=_unary(kinks=(0.0,), settings=[{}, {"negative_slope": 0.2}]),
    space=_unary_space(lambda rng: {"negative_slope": num(rng, -2.0, 2.0)}, kinks=(0.0,)),
)


# --------------------------------------------------------------------------------------------------- elu
def _elu(x, *, alpha=1.0):
    """y = x for x > 0, alpha (e^x - 1) otherwise (any real alpha, as torch).

    dy/dx = 1 for x > 0 and alpha e^x for x <= 0, so dx = dy where x > 0, else dy alpha e^x.  Keep x: the
    branch must be chosen by the sign of x. (Choosing it by y > 0 and writing alpha e^x = y + alpha holds only
    for alpha > 0; with alpha < 0 every x < 0 gives y > 0 and took the slope 1.)
    """
    return jnp.where(x > 0, x, alpha * jnp.expm1(jnp.minimum(x, 0)))


def _elu_fwd(x, *, alpha=1.0):
    return _elu(x, alpha=alpha), (x,)


def _elu_bwd(res, dy, *, alpha=1.0):
    (x,) = res
    return (jnp.where(x > 0, dy, dy * alpha * jnp.exp(jnp.minimum(x, 0))),)


elu = primitive("elu", _elu, _elu_fwd, _elu_bwd,
                examples=_unary(kinks=(0.0,), settings=[{}, {"alpha": 0.5}]),
                space=_unary_space(lambda rng: {"alpha": num(rng, -2.0, 2.0)}, kinks=(0.0,)))

# -------------------------------------------------------------------------------------------------- selu
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _selu(x):
    """y = lambda * elu_alpha(x) with the self-normalising constants (Klambauer et al. 2017).

    dy/dx = lambda for x > 0, y + lambda alpha otherwise.  Keep y.
    """
    return SELU_SCALE * jnp.where(x > 0, x, SELU_ALPHA * jnp.expm1(jnp.minimum(x, 0)))


def _selu_fwd(x):
    y = _selu(x)
    return y, (y,)


def _selu_bwd(res, dy):
    (y,) = res
    return (jnp.where(y > 0, SELU_SCALE * dy, dy * (y + SELU_SCALE * SELU_ALPHA)),)


selu = primitive("selu", _selu, _selu_fwd, _selu_bwd, examples=_unary(kinks=(0.0,)),
                 space=_unary_space(kinks=(0.0,)))

# -------------------------------------------------------------------------------------------------- gelu
def _gelu(x, *, approximate=False):
    """Exact:  y = x Phi(x) with Phi(x) = (1 + erf(x / sqrt 2)) / 2;  dy/dx = Phi(x) + x phi(x),
    phi(x) = exp(-x^2/2) / sqrt(2 pi), so dx = dy (Phi(x) + x phi(x)).

    Tanh approximation (``approximate=True``, as ``torch.nn.functional.gelu(approximate="tanh")``):
    y = x (1 + t) / 2 with t = tanh(u), u = sqrt(2/pi) (x + 0.044715 x^3);
    dy/dx = (1 + t) / 2 + x (1 - t^2) / 2 * sqrt(2/pi) (1 + 3 * 0.044715 x^2).  Keep x.
    """
    return gelu_value(x, approximate)


def _gelu_fwd(x, *, approximate=False):
    return _gelu(x, approximate=approximate), (x,)


def _gelu_bwd(res, dy, *, approximate=False):
    (x,) = res
    return (dy * gelu_and_grad(x, approximate)[1],)


gelu = primitive("gelu", _gelu, _gelu_fwd, _gelu_bwd,
                 examples=_unary(settings=[{"approximate": False}, {"approximate": True}]),
                 space=_unary_space(lambda rng: {"approximate": pick(rng, [False, True])}))


# --------------------------------------------------------------------------------------------- sigmoid
def _sigmoid(x):
    """y = 1 / (1 + e^-x);  dy/dx = y (1 - y).  Keep y."""
    return jax.nn.sigmoid(x)


def _sigmoid_fwd(x):
    y = _sigmoid(x)
    return y, (y,)


def _sigmoid_bwd(res, dy):
    (y,) = res
    return (dy * y * (1 - y),)


sigmoid = primitive("sigmoid", _sigmoid, _sigmoid_fwd, _sigmoid_bwd, examples=_unary(scale=3.0),
                    space=_unary_space())


# ---------------------------------------------------------------------------------------------- silu
def _silu(x):
    """y = x sigma(x) (swish with beta = 1);  dy/dx = sigma + x sigma (1 - sigma) = sigma + y (1 - sigma).

    Keep x and sigma(x): recomputing sigma costs an exp, keeping it costs one array.
    """
    return x * jax.nn.sigmoid(x)


def _silu_fwd(x):
    # keeps sigma(x) as a residual, so the product is formed here rather than by the reference
    s = jax.nn.sigmoid(x)
    return x * s, (x, s)


def _silu_bwd(res, dy):
    x, s = res
    return (dy * s * (1 + x * (1 - s)),)


silu = primitive("silu", _silu, _silu_fwd, _silu_bwd, examples=_unary(scale=3.0), space=_unary_space())
swish = silu


# ---------------------------------------------------------------------------------------------- tanh
def _tanh(x):
    """y = tanh x;  dy/dx = 1 - tanh(x)^2 = 1 - y^2, so dx = dy (1 - y^2).  Keep y."""
    return jnp.tanh(x)


def _tanh_fwd(x):
    y = _tanh(x)
    return y, (y,)


def _tanh_bwd(res, dy):
    (y,) = res
    return (dy * (1 - y * y),)


tanh = primitive("tanh", _tanh, _tanh_fwd, _tanh_bwd, examples=_unary(), space=_unary_space())


# ------------------------------------------------------------------------------------------ softplus
def _softplus(x, *, beta=1.0, threshold=20.0):
    """y = log(1 + e^(beta x)) / beta, and y = x where beta x > threshold (as torch, for stability).

    dy/dx = sigma(beta x) (1 where linear).  Keep x.
    """
    bx = beta * x
    return jnp.where(bx > threshold, x, jnp.logaddexp(0.0, bx) / beta)


def _softplus_fwd(x, *, beta=1.0, threshold=20.0):
    return _softplus(x, beta=beta, threshold=threshold), (x,)


def _softplus_bwd(res, dy, *, beta=1.0, threshold=20.0):
    (x,) = res
    bx = beta * x
    return (jnp.where(bx > threshold, dy, dy * jax.nn.sigmoid(bx)),)


softplus = primitive(
    "softplus", _softplus, _softplus_fwd, _softplus_bwd,
    examples=_unary(scale=3.0, kinks=lambda s: (s.get("threshold", 20.0) / s.get("beta", 1.0),),
                    settings=[{}, {"beta": 2.0, "threshold": 3.0}]),
    space=_unary_space(lambda rng: {"beta": bounded_away(rng, -3.0, 3.0, 0.0, 0.2), "threshold": num(rng, 0.5, 20.0)},
                       kinks=lambda s: (s["threshold"] / s["beta"],)),
)


# ---------------------------------------------------------------------------------------------- mish
def _mish(x):
    """y = x tanh(softplus x)  (Misra 2019).

    With t = tanh(softplus x) and d softplus/dx = sigma(x):  dy/dx = t + x (1 - t^2) sigma(x).  Keep x.
    """
    return x * jnp.tanh(jnp.logaddexp(0.0, x))


def _mish_fwd(x):
    return _mish(x), (x,)


def _mish_bwd(res, dy):
    (x,) = res
    t = jnp.tanh(jnp.logaddexp(0.0, x))
    return (dy * (t + x * (1 - t * t) * jax.nn.sigmoid(x)),)


mish = primitive("mish", _mish, _mish_fwd, _mish_bwd, examples=_unary(scale=3.0), space=_unary_space())


# ------------------------------------------------------------------------------------------ hard_tanh
def _hard_tanh(x, *, min_val=-1.0, max_val=1.0):
    """y = clip(x, min, max);  dy/dx = 1 strictly inside (min, max), else 0 (as torch).  Keep x."""
    return jnp.clip(x, min_val, max_val)


def _hard_tanh_fwd(x, *, min_val=-1.0, max_val=1.0):
    return _hard_tanh(x, min_val=min_val, max_val=max_val), (x,)


def _hard_tanh_bwd(res, dy, *, min_val=-1.0, max_val=1.0):
    (x,) = res
    return (jnp.where((x > min_val) & (x < max_val), dy, 0),)


def _hard_tanh_settings(rng):
    lo = num(rng, -2.0, 0.5)
    return {"min_val": lo, "max_val": round(lo + num(rng, 0.3, 3.0), 3)}


hard_tanh = primitive(
    "hard_tanh", _hard_tanh, _hard_tanh_fwd, _hard_tanh_bwd,
    examples=_unary(kinks=lambda s: (s.get("min_val", -1.0), s.get("max_val", 1.0)),
                    settings=[{}, {"min_val": -0.5, "max_val": 2.0}]),
    space=_unary_space(_hard_tanh_settings, kinks=lambda s: (s["min_val"], s["max_val"])),
)


# --------------------------------------------------------------------------------------- hard_sigmoid
def _hard_sigmoid(x):
    """y = relu6(x + 3) / 6 (torch's Hardsigmoid);  dy/dx = 1/6 on (-3, 3), else 0.  Keep x."""
    return jnp.clip(x / 6 + 0.5, 0.0, 1.0)


def _hard_sigmoid_fwd(x):
    return _hard_sigmoid(x), (x,)


def _hard_sigmoid_bwd(res, dy):
    (x,) = res
    return (jnp.where((x > -3) & (x < 3), dy / 6, 0),)


hard_sigmoid = primitive("hard_sigmoid", _hard_sigmoid, _hard_sigmoid_fwd, _hard_sigmoid_bwd,
                         examples=_unary(scale=4.0, kinks=(-3.0, 3.0)),
                         space=_unary_space(kinks=(-3.0, 3.0), scale=(0.5, 5.0)))


# ------------------------------------------------------------------------------------------- softmax
def _softmax(x, *, axis=-1):
    """y_i = e^(x_i - m) / sum_j e^(x_j - m) along ``axis`` (m = max, for stability).

    Jacobian dy_i/dx_j = y_i (delta_ij - y_j), so dx_j = sum_i dy_i y_i (delta_ij - y_j)
    = y_j (dy_j - sum_i dy_i y_i).  Keep y.
    """
    z = x - jax.lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True))
    e = jnp.exp(z)
    return e / jnp.sum(e, axis=axis, keepdims=True)


def _softmax_fwd(x, *, axis=-1):
    y = _softmax(x, axis=axis)
    return y, (y,)


def _softmax_bwd(res, dy, *, axis=-1):
    (y,) = res
    return (y * (dy - jnp.sum(dy * y, axis=axis, keepdims=True)),)


_axis_examples = _unary(scale=2.0, settings=[{"axis": -1}, {"axis": 0}])


def _axis_space(rng, dtype):
    """An array of rank 1-3 and any axis of it, negative or not."""
    shape = tuple(integer(rng, 1, 6) for _ in range(integer(rng, 1, 3)))
    axis = integer(rng, -len(shape), len(shape) - 1)
    return Example((arr(rng, shape, dtype, num(rng, 0.5, 4.0)),), {"axis": axis})

softmax = primitive("softmax", _softmax, _softmax_fwd, _softmax_bwd, examples=_axis_examples,
                    space=_axis_space)


# --------------------------------------------------------------------------------------- log_softmax
def _log_softmax(x, *, axis=-1):
    """y_i = x_i - logsumexp(x).  dy_i/dx_j = delta_ij - softmax_j, so dx_j = dy_j - softmax_j sum_i dy_i,
    with softmax = exp(y).  Keep y.
    """
    m = jax.lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True))
    z = x - m
    return z - jnp.log(jnp.sum(jnp.exp(z), axis=axis, keepdims=True))


def _log_softmax_fwd(x, *, axis=-1):
    y = _log_softmax(x, axis=axis)
    return y, (y,)


def _log_softmax_bwd(res, dy, *, axis=-1):
    (y,) = res
    return (dy - jnp.exp(y) * jnp.sum(dy, axis=axis, keepdims=True),)


log_softmax = primitive("log_softmax", _log_softmax, _log_softmax_fwd, _log_softmax_bwd,
                        examples=_axis_examples, space=_axis_space)


ACTIVATIONS = {
    "identity": identity, "relu": relu, "leaky_relu": leaky_relu, "elu": elu, "selu": selu, "gelu": gelu,
    "gelu_tanh": lambda x: gelu(x, approximate=True), "silu": silu, "swish": silu, "sigmoid": sigmoid,
    "tanh": tanh, "softplus": softplus, "mish": mish, "hard_tanh": hard_tanh, "hard_sigmoid": hard_sigmoid,
}


def get_activation(name: str):
    """Activation by name; an unknown name lists the valid ones."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; valid: {', '.join(sorted(ACTIVATIONS))}") from None
