"""Initializers: plain functions ``(key, shape, dtype=float32, **options) -> array`` (never differentiated).

Fans follow torch.nn.init for JAX layouts: a dense weight (n_in, n_out) has fan_in = n_in and fan_out = n_out;
a convolution kernel (..., c_in, c_out) (HWIO) multiplies both by the receptive field size prod(shape[:-2]).

    glorot/xavier  uniform: U(-a, a), a = gain sqrt(6 / (fan_in + fan_out))
                   normal: std = gain sqrt(2 / (fan_in + fan_out))
    he/kaiming     uniform: U(-a, a), a = gain sqrt(3 / fan);                  normal: std = gain / sqrt(fan)
    lecun          normal: std = 1 / sqrt(fan_in);                             uniform: a = sqrt(3 / fan_in)
    orthogonal     Q from the QR decomposition of a Gaussian matrix, signs fixed by diag(R), times gain
with gain from ``calculate_gain`` (relu sqrt 2, leaky_relu sqrt(2 / (1 + a^2)), tanh 5/3, selu 3/4, else 1).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = [
    "zeros", "ones", "constant", "uniform", "normal", "truncated_normal", "glorot_uniform", "glorot_normal",
    "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "he_uniform", "he_normal",
    "lecun_uniform", "lecun_normal", "orthogonal", "calculate_gain", "fans", "get", "INITIALIZERS",
]


def fans(shape) -> tuple[int, int]:
    """(fan_in, fan_out) for a dense (n_in, n_out) weight or an HWIO kernel."""
    shape = tuple(shape)
    if len(shape) < 2:
        raise ValueError(f"fan_in/fan_out need a weight with at least 2 dimensions, got shape {shape}")
    receptive = math.prod(shape[:-2]) if len(shape) > 2 else 1
    return shape[-2] * receptive, shape[-1] * receptive


def calculate_gain(nonlinearity: str = "linear", param: float | None = None) -> float:
    """The recommended gain for a nonlinearity, as torch.nn.init.calculate_gain."""
    if nonlinearity in ("linear", "identity", "sigmoid", "conv1d", "conv2d", "conv3d"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        a = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + a * a))
    if nonlinearity == "selu":
        return 3.0 / 4.0
    raise ValueError(f"unknown nonlinearity {nonlinearity!r}; valid: linear, sigmoid, tanh, relu, leaky_relu, selu")


def zeros(key, shape, dtype=jnp.float32):
    return jnp.zeros(shape, dtype)


def ones(key, shape, dtype=jnp.float32):
    return jnp.ones(shape, dtype)


def constant(key, shape, dtype=jnp.float32, *, value=0.0):
    return jnp.full(shape, value, dtype)


def uniform(key, shape, dtype=jnp.float32, *, low=0.0, high=1.0):
    return jax.random.uniform(key, shape, dtype, low, high)


def normal(key, shape, dtype=jnp.float32, *, mean=0.0, std=1.0):
    return (mean + std * jax.random.normal(key, shape, _work_dtype(dtype))).astype(dtype)


def truncated_normal(key, shape, dtype=jnp.float32, *, mean=0.0, std=1.0, a=-2.0, b=2.0):
    """Normal(mean, std) restricted to [a, b] (absolute bounds, as torch.nn.init.trunc_normal_)."""
    z = jax.random.truncated_normal(key, (a - mean) / std, (b - mean) / std, shape, _work_dtype(dtype))
    return (mean + std * z).astype(dtype)


def _work_dtype(dtype):
    """Draw in the target precision, and at least in float32 (half-precision weights are drawn in float32)."""
    return jnp.promote_types(dtype, jnp.float32)


def _fan(shape, mode):
    fan_in, fan_out = fans(shape)
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    return fan_in if mode == "fan_in" else fan_out


def glorot_uniform(key, shape, dtype=jnp.float32, *, gain=1.0):
    fan_in, fan_out = fans(shape)
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return jax.random.uniform(key, shape, dtype, -a, a)


def glorot_normal(key, shape, dtype=jnp.float32, *, gain=1.0):
    fan_in, fan_out = fans(shape)
    return normal(key, shape, dtype, std=gain * math.sqrt(2.0 / (fan_in + fan_out)))


def kaiming_uniform(key, shape, dtype=jnp.float32, *, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    gain = calculate_gain(nonlinearity, a)
    bound = gain * math.sqrt(3.0 / _fan(shape, mode))
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def kaiming_normal(key, shape, dtype=jnp.float32, *, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    gain = calculate_gain(nonlinearity, a)
    return normal(key, shape, dtype, std=gain / math.sqrt(_fan(shape, mode)))


def lecun_uniform(key, shape, dtype=jnp.float32):
    bound = math.sqrt(3.0 / fans(shape)[0])
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def lecun_normal(key, shape, dtype=jnp.float32):
    return normal(key, shape, dtype, std=1.0 / math.sqrt(fans(shape)[0]))


def orthogonal(key, shape, dtype=jnp.float32, *, gain=1.0):
    """A (semi-)orthogonal matrix with the last axis as columns: W^T W = gain^2 I (or W W^T when wider)."""
    if len(shape) < 2:
        raise ValueError(f"orthogonal needs at least 2 dimensions, got shape {shape}")
    rows, cols = math.prod(shape[:-1]), shape[-1]
    a = jax.random.normal(key, (max(rows, cols), min(rows, cols)), _work_dtype(dtype))
    q, r = jnp.linalg.qr(a)
    q = q * jnp.sign(jnp.diag(r))          # make the decomposition unique (Mezzadri 2007)
    if rows < cols:
        q = q.T
    return (gain * q).reshape(shape).astype(dtype)


def torch_linear(key, shape, dtype=jnp.float32):
    """torch.nn.Linear's default weight: kaiming_uniform with a = sqrt 5, i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    return kaiming_uniform(key, shape, dtype, a=math.sqrt(5.0))


xavier_uniform, xavier_normal = glorot_uniform, glorot_normal
he_uniform, he_normal = kaiming_uniform, kaiming_normal

INITIALIZERS = {
    "zeros": zeros, "ones": ones, "constant": constant, "uniform": uniform, "normal": normal,
    "truncated_normal": truncated_normal, "glorot_uniform": glorot_uniform, "glorot_normal": glorot_normal,
    "xavier_uniform": xavier_uniform, "xavier_normal": xavier_normal,
    "kaiming_uniform": lambda k, s, d=jnp.float32: kaiming_uniform(k, s, d, nonlinearity="relu"),
    "kaiming_normal": lambda k, s, d=jnp.float32: kaiming_normal(k, s, d, nonlinearity="relu"),
    "he_uniform": lambda k, s, d=jnp.float32: kaiming_uniform(k, s, d, nonlinearity="relu"),
    "he_normal": lambda k, s, d=jnp.float32: kaiming_normal(k, s, d, nonlinearity="relu"),
    "lecun_uniform": lecun_uniform, "lecun_normal": lecun_normal, "orthogonal": orthogonal,
    "torch_linear": torch_linear,
}


def get(name: str):
    """An initializer by name (the kaiming/he entries use the relu gain); unknown names list the valid ones."""
    try:
        return INITIALIZERS[name]
    except KeyError:
        raise ValueError(f"unknown initializer {name!r}; valid: {', '.join(sorted(INITIALIZERS))}") from None
