"""Class activation maps of convolutional models (and of a ViT through its tokens).

Grad-CAM (Selvaraju et al. 2017). For feature maps A^k (channel k, positions ij) of a chosen layer and the class
score S (a logit), each channel gets the weight of its average gradient, and the map is the positive part of
the weighted sum:

    w_k = (1/Z) sum_ij dS/dA^k_ij,        L = relu(sum_k w_k A^k)

Grad-CAM++ (Chattopadhay et al. 2018) weights each position's positive gradient: with g = dS/dA and the
exponential score exp(S) (so that the higher derivatives are powers of g),

    alpha^k_ij = g_ij^2 / (2 g_ij^2 + sum_ab A^k_ab g_ij^3)     (0 where g_ij = 0)
    w_k = sum_ij alpha^k_ij relu(g_ij),        L = relu(sum_k w_k A^k)

The layer is a primitive call, ``"relu:-1"`` (the last ReLU), ``"relu:1"`` (the second); by default the last
ReLU whose output still has positions (rank >= 3: (N, H, W, C) or (N, L, C)). The activations and their
gradient come from one run of the model with that call's output replaced by a variable
(``attribution.layer_function``), so no model needs a hook. A ViT's tokens (N, 1 + h w, D) become a feature map
with ``to_features=tokens_to_map((h, w))`` (the [CLS] token dropped), applied to A and to dS/dA alike; its usual
layer is the last block's first layer norm (``"layer_norm:-3"`` in models/vit.py: ln_1, ln_2, then ln_f).
The map is resized to the input's positions (bilinear) unless ``resize=False``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from .attribution import _count_calls, layer_function, parse_layer, targets_of

__all__ = ["activations_and_gradients", "gradcam", "gradcam_plus_plus", "tokens_to_map", "default_cam_layer",
           "resize_map"]


def default_cam_layer(apply: Callable, params, x) -> str:
    """``relu:I`` for the last ReLU whose output has positions (rank >= 3)."""
    shapes = _count_calls(apply, params, x, "relu")
    spatial = [i for i, s in enumerate(shapes) if len(s.shape) >= 3]
    if not spatial:
        raise ValueError("Grad-CAM: the model has no ReLU with a feature map (N, ..., C); name the layer, e.g. "
                         "layer='layer_norm:-3' with to_features=tokens_to_map(grid) for a ViT")
    return f"relu:{spatial[-1]}"


def tokens_to_map(grid: tuple[int, int], skip: int = 1) -> Callable:
    """(N, skip + h w, D) tokens -> (N, h, w, D) feature map, the first ``skip`` tokens ([CLS]) dropped."""
    h, w = grid

    def reshape(tokens):
        if tokens.ndim != 3 or tokens.shape[1] != skip + h * w:
            raise ValueError(f"tokens_to_map: expected tokens (N, {skip} + {h}*{w}, D), got {tokens.shape}")
        return tokens[:, skip:].reshape(tokens.shape[0], h, w, tokens.shape[2])

    return reshape


def activations_and_gradients(apply: Callable, params, x, *, layer: str | None = None, target=None,
                              to_features: Callable | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(A, dS/dA, target)`` at the layer (after ``to_features``), each example's own class score S."""
    layer = layer or default_cam_layer(apply, params, x)
    parse_layer(layer)
    value, model = layer_function(apply, params, x, layer)
    a = value(params, x)
    t = targets_of(model(params, x, a), target)

    def score(z):
        return jnp.sum(jnp.take_along_axis(model(params, x, z), t[:, None], axis=-1))

    g = jax.grad(score)(a)
    if to_features is not None:
        a, g = to_features(a), to_features(g)
    if a.ndim < 3:
        raise ValueError(f"Grad-CAM: layer {layer!r} gives shape {a.shape}, which has no positions; pick a "
                         "convolutional layer's output (N, ..., C) or pass to_features")
    return a, g, t


def resize_map(cam, shape: tuple) -> jax.Array:
    """Bilinear resize of maps (N, *positions) to (N, *shape)."""
    if tuple(cam.shape[1:]) == tuple(shape):
        return cam
    return jax.image.resize(cam, (cam.shape[0], *shape), "bilinear")


def _positions_of(x) -> tuple:
    """The positions of an input batch: (H, W) of (N, H, W[, C]) images, (L,) of (N, L[, C]) sequences."""
    if x.ndim == 2:
        return tuple(x.shape[1:])
    return tuple(x.shape[1:-1]) if x.ndim >= 4 or x.shape[-1] <= 4 else tuple(x.shape[1:])


def _finish(a, weights, x, resize):
    cam = jax.nn.relu(jnp.einsum("n...k,nk->n...", a, weights))
    return resize_map(cam, _positions_of(x)) if resize else cam


@functools.partial(jax.jit, static_argnames=("apply", "layer", "to_features", "resize"))
def gradcam(apply: Callable, params, x, *, layer: str | None = None, target=None,
            to_features: Callable | None = None, resize: bool = True) -> jax.Array:
    """Grad-CAM maps (N, *positions of x), or at the layer's resolution with ``resize=False``."""
    a, g, _ = activations_and_gradients(apply, params, x, layer=layer, target=target, to_features=to_features)
    weights = jnp.mean(g, axis=tuple(range(1, g.ndim - 1)))              # (N, K)
    return _finish(a, weights, x, resize)


@functools.partial(jax.jit, static_argnames=("apply", "layer", "to_features", "resize"))
def gradcam_plus_plus(apply: Callable, params, x, *, layer: str | None = None, target=None,
                      to_features: Callable | None = None, resize: bool = True) -> jax.Array:
    """Grad-CAM++ maps: positions weighted by alpha (see the module's docstring)."""
    a, g, _ = activations_and_gradients(apply, params, x, layer=layer, target=target, to_features=to_features)
    axes = tuple(range(1, g.ndim - 1))
    g2, g3 = g * g, g * g * g
    total = jnp.sum(a, axis=axes, keepdims=True)                         # sum_ab A^k_ab
    denom = 2.0 * g2 + total * g3
    alpha = jnp.where(g != 0, g2 / jnp.where(denom != 0, denom, 1.0), 0.0)
    weights = jnp.sum(alpha * jax.nn.relu(g), axis=axes)
    return _finish(a, weights, x, resize)
