"""Attributions: how much each input feature (pixel, time step, token embedding) contributes to a class score.

Every method takes a classifier ``apply(params, x) -> logits (N, K)`` (bind a batch-norm model's state first:
``lambda p, x: task.apply(p, state, x)``), its parameters and a batch ``x``, and returns an array shaped like
``x`` (or like the chosen layer's output, see ``layer``). The score of example n is its logit ``S_n = f(x)_n[c_n]``
for the class ``c_n`` given by ``target`` (default: the predicted class); a logit, not a probability, so that the
softmax's saturation does not hide the gradient. Examples are independent (eval mode), so one gradient of
``sum_n S_n`` gives every example's own.

* ``gradient``          dS/dx                                                   (Simonyan et al. 2014)
* ``gradient_x_input``  x * dS/dx                                               (Shrikumar et al. 2016)
* ``smoothgrad``        mean over noisy copies of dS/dx at x + eps, eps ~ N(0, (sigma (max x - min x))^2)
                                                                                (Smilkov et al. 2017)
* ``integrated_gradients``  (x - x') * int_0^1 dS/dx (x' + a (x - x')) da, by the trapezoid rule on ``steps``
  intervals; completeness: the attributions sum to S(x) - S(x') (Sundararajan et al. 2017), which
  ``completeness`` measures
* ``guided_backprop``   dS/dx with every ReLU's backward replaced by dx = dy 1[x > 0] 1[dy > 0]
  (Springenberg et al. 2015): the hand rule of ``relu`` swapped while the function is traced
  (``funcdl.core.primitive.with_rules``)

``layer="embedding:0"`` attributes to the output of a primitive call instead of the input (a token model's
embeddings, whose inputs are integers): ``"NAME:I"`` is the I-th call of primitive NAME in the forward (negative
counts from the last); the model runs with that output replaced by the variable being attributed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from funcdl.core.primitive import Instead, get, with_rules

__all__ = ["gradient", "gradient_x_input", "smoothgrad", "integrated_gradients", "completeness", "guided_backprop",
           "layer_function", "parse_layer", "targets_of", "to_map", "ATTRIBUTIONS"]


# -- the variable being attributed: the input, or one primitive call's output -----------------------------------


def parse_layer(layer: str) -> tuple[str, int]:
    """``"relu:-1"`` -> ("relu", -1); a bare name means its last call."""
    name, _, index = str(layer).partition(":")
    try:
        get(name)
        i = int(index) if index else -1
    except (KeyError, ValueError):
        raise ValueError(f"layer {layer!r}: expected PRIMITIVE:INDEX, such as relu:-1 (the last relu) or "
                         "embedding:0, with a registered primitive's name") from None
    return name, i


def _count_calls(apply: Callable, params, x, name: str) -> list:
    """Shapes of the outputs of every call of primitive ``name`` in one forward (traced, not run)."""
    shapes = []

    def call(run, *args, **settings):
        y = run(*args)
        shapes.append(jax.ShapeDtypeStruct(y.shape, y.dtype))
        return y

    jax.eval_shape(with_rules(apply, **{name: Instead(call)}), params, x)
    return shapes


def layer_function(apply: Callable, params, x, layer: str | None) -> tuple[Callable, Callable]:
    """``(value, model)``: ``value(params, x)`` is the attributed variable z (``x`` itself when ``layer`` is None,
    else the output of that primitive call) and ``model(params, x, z)`` the logits with z put in its place."""
    if layer is None:
        return (lambda p, x: x), (lambda p, x, z: apply(p, z))
    name, index = parse_layer(layer)
    shapes = _count_calls(apply, params, x, name)
    if not -len(shapes) <= index < len(shapes):
        raise ValueError(f"layer {layer!r}: the forward calls {name} {len(shapes)} times; pick an index in "
                         f"{-len(shapes)}..{len(shapes) - 1}" if shapes else
                         f"layer {layer!r}: the model never calls {name}")
    index %= len(shapes)

    def tapped(p, x, z):
        seen = {"calls": 0, "value": None}

        def call(run, *args, **settings):
            y = run(*args)
            if seen["calls"] == index:
                seen["value"] = y
                if z is not None:
                    y = z
            seen["calls"] += 1
            return y

        logits = with_rules(apply, **{name: Instead(call)})(p, x)
        return logits, seen["value"]

    return (lambda p, x: tapped(p, x, None)[1]), (lambda p, x, z: tapped(p, x, z)[0])


def targets_of(logits, target) -> jax.Array:
    """Class index per example: ``target`` (an int or an (N,) array) or, when None, the predicted class."""
    n = logits.shape[0]
    if target is None:
        return jnp.argmax(logits, axis=-1)
    t = jnp.broadcast_to(jnp.asarray(target, jnp.int32), (n,))
    return t


def _score(model, params, x, t):
    """z -> sum_n logit_n[t_n] (the gradient of the sum is each example's own: examples are independent)."""
    def s(z):
        logits = model(params, x, z)
        return jnp.sum(jnp.take_along_axis(logits, t[:, None], axis=-1))
    return s


def _prepare(apply, params, x, target, layer):
    value, model = layer_function(apply, params, x, layer)
    z = value(params, x)
    t = targets_of(model(params, x, z), target)
    return z, t, _score(model, params, x, t)


# -- the methods ------------------------------------------------------------------------------------------------
# each is jitted with ``apply`` and the settings static: define ``apply`` once and call the method many times


def _jit(*static):
    return functools.partial(jax.jit, static_argnames=("apply", "layer", *static))



@_jit()
def gradient(apply: Callable, params, x, *, target=None, layer: str | None = None) -> jax.Array:
    """dS/dz: the vanilla gradient (saliency) of each example's class score."""
    z, _, score = _prepare(apply, params, x, target, layer)
    return jax.grad(score)(z)


@_jit()
def gradient_x_input(apply: Callable, params, x, *, target=None, layer: str | None = None) -> jax.Array:
    """z * dS/dz."""
    z, _, score = _prepare(apply, params, x, target, layer)
    return z * jax.grad(score)(z)


def _per_example_range(z):
    axes = tuple(range(1, z.ndim))
    return (jnp.max(z, axis=axes, keepdims=True) - jnp.min(z, axis=axes, keepdims=True))


@_jit("samples", "noise")
def smoothgrad(apply: Callable, params, x, *, key, target=None, samples: int = 32, noise: float = 0.15,
               layer: str | None = None) -> jax.Array:
    """The mean of dS/dz over ``samples`` copies of z with Gaussian noise of standard deviation
    ``noise * (max z - min z)`` (per example). The target is fixed at the clean input's."""
    if samples < 1 or noise < 0:
        raise ValueError(f"smoothgrad: samples must be >= 1 and noise >= 0, got {samples} and {noise}")
    z, _, score = _prepare(apply, params, x, target, layer)
    sigma = noise * _per_example_range(z)
    grad = jax.grad(score)

    def one(total, k):
        return total + grad(z + sigma * jax.random.normal(k, z.shape, z.dtype)), None

    total, _ = jax.lax.scan(one, jnp.zeros_like(z), jax.random.split(key, samples))
    return total / samples


def default_baseline(z) -> jax.Array:
    """A constant input at each example's smallest value (the black image of standardised MNIST)."""
    axes = tuple(range(1, z.ndim))
    return jnp.broadcast_to(jnp.min(z, axis=axes, keepdims=True), z.shape)


@_jit("steps", "chunk")
def integrated_gradients(apply: Callable, params, x, *, target=None, baseline=None, steps: int = 256,
                         chunk: int = 16, layer: str | None = None) -> jax.Array:
    """(z - z') * the mean of dS/dz along the straight path from the baseline z' to z, by the trapezoid rule on
    ``steps`` intervals (``chunk`` path points per vmapped batch). ``baseline``: an array like z (or a scalar);
    default :func:`default_baseline`. The target is fixed at the input's class."""
    if steps < 1 or chunk < 1:
        raise ValueError(f"integrated_gradients: steps and chunk must be >= 1, got {steps} and {chunk}")
    z, _, score = _prepare(apply, params, x, target, layer)
    base = default_baseline(z) if baseline is None else jnp.broadcast_to(jnp.asarray(baseline, z.dtype), z.shape)
    grad = jax.grad(score)
    alphas = jnp.linspace(0.0, 1.0, steps + 1, dtype=z.dtype)
    weights = jnp.full(steps + 1, 1.0 / steps, z.dtype).at[0].mul(0.5).at[-1].mul(0.5)   # trapezoid
    pad = (-(steps + 1)) % chunk            # padded points get weight 0
    alphas = jnp.concatenate([alphas, jnp.zeros(pad, z.dtype)]).reshape(-1, chunk)
    weights = jnp.concatenate([weights, jnp.zeros(pad, z.dtype)]).reshape(-1, chunk)

    def one(total, aw):
        a, w = aw
        g = jax.vmap(lambda ai: grad(base + ai * (z - base)))(a)
        return total + jnp.tensordot(w, g, axes=1), None

    total, _ = jax.lax.scan(one, jnp.zeros_like(z), (alphas, weights))
    return (z - base) * total


@_jit()
def completeness(apply: Callable, params, x, attributions, *, target=None, baseline=None,
                 layer: str | None = None) -> dict:
    """Integrated Gradients' completeness per example: ``sum`` (of the attributions), ``delta`` = S(z) - S(z'),
    and ``error`` = |sum - delta| / |delta| (the axiom says 0)."""
    value, model = layer_function(apply, params, x, layer)
    z = value(params, x)
    logits = model(params, x, z)
    t = targets_of(logits, target)
    base = default_baseline(z) if baseline is None else jnp.broadcast_to(jnp.asarray(baseline, z.dtype), z.shape)
    pick = lambda lg: jnp.take_along_axis(lg, t[:, None], axis=-1)[:, 0]   # noqa: E731
    delta = pick(logits) - pick(model(params, x, base))
    total = jnp.sum(attributions.reshape(attributions.shape[0], -1), axis=1)
    return {"sum": total, "delta": delta, "error": jnp.abs(total - delta) / jnp.maximum(jnp.abs(delta), 1e-12)}


def _guided_relu_bwd(res, dy):
    """Guided backpropagation through a ReLU: pass dy where the input was positive AND dy is positive."""
    (y,) = res
    return (jnp.where((y > 0) & (dy > 0), dy, 0),)


@_jit()
def guided_backprop(apply: Callable, params, x, *, target=None, layer: str | None = None) -> jax.Array:
    """dS/dz with every ReLU's backward replaced by the guided rule (only positive signals flow back)."""
    return gradient(with_rules(apply, relu=_guided_relu_bwd), params, x, target=target, layer=layer)


# -- from attributions to a map ---------------------------------------------------------------------------------


def to_map(attributions, *, absolute: bool = True, reduce_last: bool | None = None) -> jax.Array:
    """One value per position: |a| (or a) summed over the last axis (channels of an image (N, H, W, C), the
    embedding of a token (N, T, D)); ``reduce_last`` defaults to True for arrays of rank >= 3."""
    a = jnp.abs(attributions) if absolute else attributions
    if reduce_last is None:
        reduce_last = a.ndim >= 3
    return jnp.sum(a, axis=-1) if reduce_last else a


ATTRIBUTIONS = {"gradient": gradient, "gradxinput": gradient_x_input, "smoothgrad": smoothgrad,
                "ig": integrated_gradients, "guided": guided_backprop}
