"""GELU and its derivative, shared by the ``gelu`` activation and the fused ``gelu_mlp``.

Exact:  gelu(x) = x Phi(x),  Phi(x) = (1 + erf(x / sqrt 2)) / 2;  gelu'(x) = Phi(x) + x phi(x),
phi(x) = exp(-x^2/2) / sqrt(2 pi).
Tanh approximation (torch's ``approximate="tanh"``): gelu(x) = x (1 + t) / 2, t = tanh(sqrt(2/pi) (x + c x^3)),
c = 0.044715;  gelu'(x) = (1 + t) / 2 + x (1 - t^2) / 2 * sqrt(2/pi) (1 + 3 c x^2).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax.scipy.special import erf

__all__ = ["gelu", "gelu_and_grad"]

_SQRT_HALF = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_C = 0.044715


def gelu(x, approximate=False):
    """gelu(x), exact or in the tanh form."""
    if approximate:
        return 0.5 * x * (1.0 + jnp.tanh(_SQRT_2_OVER_PI * (x + _C * x ** 3)))
    return 0.5 * x * (1.0 + erf(x * _SQRT_HALF))


def gelu_and_grad(x, approximate=False):
    """gelu(x) and gelu'(x), sharing their common factors."""
    if approximate:
        t = jnp.tanh(_SQRT_2_OVER_PI * (x + _C * x ** 3))
        grad = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _SQRT_2_OVER_PI * (1.0 + 3.0 * _C * x * x)
        return 0.5 * x * (1.0 + t), grad
    cdf = 0.5 * (1.0 + erf(x * _SQRT_HALF))
    return x * cdf, cdf + x * _INV_SQRT_2PI * jnp.exp(-0.5 * x * x)
