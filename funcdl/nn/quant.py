"""Quantization primitives: fake quantization with the straight-through estimator, and a learned step size.

An integer quantizer with scale s > 0, zero point z and integer range [qmin, qmax] maps a real x to

    q = clip(round(x / s) + z, qmin, qmax)        x_hat = s (q - z)            (dequantized, "fake-quantized")

Symmetric quantizers have z = 0 and qmin = -qmax (e.g. [-127, 127] at 8 bits); asymmetric ones pick z so that the
calibrated [lo, hi] maps onto [qmin, qmax] (funcdl.compress.quantize chooses s and z).

``round`` has derivative 0 almost everywhere, so the exact gradient of x_hat is useless for training. Both
primitives here have *surrogate* gradients, the usual straight-through estimator (Bengio et al. 2013): round is
differentiated as if it were the identity. Their references are written in the ``v + stop_gradient(round(v) - v)``
form so that autodiff of the reference IS the surrogate (the checker compares the hand rule to it), and they are
registered with ``surrogate=`` (funcdl.core.primitive): the finite-difference check, which measures the true
derivative of the forward (0 between the steps), cannot apply to them and reports a skipped row saying so.

``fake_quant(x, scale, zero_point, *, qmin, qmax)`` -- post-training simulation and quantization-aware training
    with a given (calibrated) scale. dx = dy 1[qmin <= x/s + z <= qmax] (STE with the clipping mask); scale and
    zero point receive no gradient (``nondiff``).
``lsq_quant(x, step, *, qn, qp, grad_scale)`` -- LSQ (Esser et al. 2019): the step size s is learned with a
    hand-derived gradient, dx = STE inside the range, ds = g sum(dy (round(x/s) - x/s)) inside and -qn / qp
    outside, g = 1 / sqrt(N qp).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ..core.examples import Example, keys, normal, uniform
from ..core.primitive import primitive, unbroadcast
from ._space import arr, integer, num, pick

__all__ = ["fake_quant", "lsq_quant"]

_SURROGATE = ("straight-through estimator: round() is differentiated as the identity, so the hand rule is the "
              "surrogate gradient and finite differences of the step function (0 a.e.) do not measure it")


def _broadcast_check(name, x, other, what):
    if other is None:
        return
    try:
        shape = jnp.broadcast_shapes(x.shape, other.shape)
    except ValueError:
        shape = None
    if shape != x.shape:
        raise ValueError(f"{name}: {what} of shape {other.shape} must broadcast to x's shape {x.shape} (per tensor: "
                         f"shape (); per channel: size 1 on every other axis, e.g. (1, C) for x (N, C))")


# -------------------------------------------------------------------------------------------- fake_quant
def _fake_quant_check(x, scale, zero_point=None, *, qmin=-127, qmax=127):
    if not (isinstance(qmin, int) and isinstance(qmax, int)) or qmin >= qmax:
        raise ValueError(f"fake_quant: the integer range needs ints qmin < qmax, got qmin={qmin!r}, qmax={qmax!r} "
                         f"(8-bit symmetric: -127, 127; 8-bit asymmetric: -128, 127)")
    _broadcast_check("fake_quant", x, scale, "scale")
    _broadcast_check("fake_quant", x, zero_point, "zero_point")


def _fake_quant(x, scale, zero_point=None, *, qmin=-127, qmax=127):
    """x_hat = s (clip(round(x/s + z), qmin, qmax) - z), s = ``scale`` and z = ``zero_point`` (0 when None) of any
    shape that broadcasts to x (per tensor, per channel, per group). The same value as rounding x/s and adding z:
    z is an integer (stored as a float).

    Straight-through estimator with the clipping mask: round is taken as the identity, clip keeps its derivative,
    so with v = x/s + z
        x_hat ~ s (clip(v, qmin, qmax) - z)    =>    dx = dy 1[qmin <= v <= qmax]   (1 inside, 0 where clipped)
    s and z are calibrated constants here (no gradient; ``lsq_quant`` learns its step). Residual: the mask.
    Written as c + stop_gradient(round(c) - c) with c = v inside the range and the clipped constant outside, so
    autodiff of this reference is the estimator; the value is exactly the rounded one (round(c) - c is exact).
    """
    s = jax.lax.stop_gradient(scale)
    z = 0.0 if zero_point is None else jax.lax.stop_gradient(zero_point)
    v = x / s + z
    inside = (v >= qmin) & (v <= qmax)
    c = jnp.where(inside, v, jax.lax.stop_gradient(jnp.clip(v, qmin, qmax)))
    q = c + jax.lax.stop_gradient(jnp.round(c) - c)
    return (q - z) * s


def _fake_quant_fwd(x, scale, zero_point=None, *, qmin=-127, qmax=127):
    # computes the rounded value directly and keeps the clipping mask as the residual
    z = 0.0 if zero_point is None else zero_point
    v = x / scale + z
    q = jnp.clip(jnp.round(v), qmin, qmax)
    return ((q - z) * scale).astype(x.dtype), ((v >= qmin) & (v <= qmax),)


def _fake_quant_bwd(res, dy, *, qmin=-127, qmax=127):
    (inside,) = res
    return (jnp.where(inside, dy, 0), None, None)


def _fake_quant_examples(key, dtype):
    k = keys(key, 5)
    x = normal(k[0], (4, 6), dtype, scale=2.0)
    per_channel = uniform(k[1], (1, 6), dtype, 0.01, 0.05)
    return [
        Example((x, jnp.asarray(0.03, dtype), None), {"qmin": -127, "qmax": 127}, "int8 symmetric per tensor"),
        Example((x, per_channel, None), {"qmin": -7, "qmax": 7}, "int4 symmetric per channel (clips)"),
        Example((normal(k[2], (3, 5), dtype), jnp.asarray(0.02, dtype), jnp.asarray(-20.0, dtype)),
                {"qmin": -128, "qmax": 127}, "int8 asymmetric, zero point -20"),
    ]


def _fake_quant_space(rng, dtype):
    """x of rank 1-3 (sides 1-5); scale per tensor or per last axis, in [0.01, 1]; zero point none or an
    integer; a symmetric or asymmetric range of 2-8 bits."""
    shape = tuple(integer(rng, 1, 5) for _ in range(integer(rng, 1, 3)))
    bits = integer(rng, 2, 8)
    symmetric = rng.random() < 0.5
    qmin, qmax = (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) if symmetric else (-(2 ** (bits - 1)),
                                                                                  2 ** (bits - 1) - 1)
    sshape = pick(rng, [(), (1,) * (len(shape) - 1) + shape[-1:]])
    scale = jnp.asarray(rng.uniform(0.01, 1.0, sshape), dtype)
    zp = None if symmetric else jnp.asarray(float(integer(rng, qmin, qmax)), dtype)
    return Example((arr(rng, shape, dtype, scale=num(rng, 0.5, 4.0)), scale, zp), {"qmin": qmin, "qmax": qmax})


fake_quant = primitive("fake_quant", _fake_quant, _fake_quant_fwd, _fake_quant_bwd, examples=_fake_quant_examples,
                       space=_fake_quant_space, check=_fake_quant_check, nondiff=("scale", "zero_point"),
                       surrogate=_SURROGATE)


# --------------------------------------------------------------------------------------------- lsq_quant
def _lsq_quant_check(x, step, *, qn=128, qp=127, grad_scale=None):
    if not (isinstance(qn, int) and isinstance(qp, int)) or qn < 0 or qp <= 0:
        raise ValueError(f"lsq_quant: qn >= 0 and qp > 0 must be ints (signed 8 bits: qn=128, qp=127; unsigned: "
                         f"qn=0, qp=255), got qn={qn!r}, qp={qp!r}")
    if grad_scale is not None and not (isinstance(grad_scale, float) and grad_scale > 0):
        raise ValueError(f"lsq_quant: grad_scale must be None (1/sqrt(N qp)) or a positive float, got {grad_scale!r}")
    _broadcast_check("lsq_quant", x, step, "step")


def _gscale(x, step, qp, grad_scale):
    """g = 1/sqrt(N qp), N the number of elements that share one step (x.size / step.size)."""
    if grad_scale is not None:
        return grad_scale
    return 1.0 / math.sqrt(max(1, x.size // max(1, step.size)) * qp)


def _lsq_quant(x, step, *, qn=128, qp=127, grad_scale=None):
    """x_hat = s round(clip(x/s, -qn, qp)), s = ``step`` (learned; per tensor or broadcast per channel).

    LSQ (Esser et al. 2019), straight-through estimator for round. With v = x/s, inside = -qn <= v <= qp:
        x_hat ~ s clip(v) where round is the identity    =>    dx = dy 1[inside]
        d x_hat / ds = round(v) + s d(round v)/ds = round(v) - x/s  inside   (STE: d round(v) = dv = -x/s^2 ds)
                     = -qn  (v < -qn)      = qp  (v > qp)              (the clipped value, constant in x)
    and the step's gradient is scaled by g = ``grad_scale`` or 1/sqrt(N qp), N the number of elements per step:
        dstep = g sum over the elements sharing s of dy * (the above)     (ds in the paper)
    Residuals: x and s. The reference writes the two cases as the surrogate they are, with s entering as
    s g + stop_gradient(s - s g) (value s, gradient times g):
        inside:   x + s stop_gradient(round(v) - v)        outside:   s stop_gradient(clip(v))
    so that autodiff of it is exactly this rule (its value equals s round(clip(v)) up to one rounding). The
    rounding residual round(v) - v is held constant, so the rule's own derivative (second order) is that of a
    frozen residual: zero, on both sides.
    """
    g = _gscale(x, step, qp, grad_scale)
    s = step * g + jax.lax.stop_gradient(step - step * g)
    v = jax.lax.stop_gradient(x / step)
    inside = (v >= -qn) & (v <= qp)
    return jnp.where(inside, x + s * jax.lax.stop_gradient(jnp.round(v) - v), s * jnp.clip(v, -qn, qp))


def _lsq_quant_fwd(x, step, *, qn=128, qp=127, grad_scale=None):
    # rounds directly (the reference's stop_gradient form has the same value)
    return step * jnp.round(jnp.clip(x / step, -qn, qp)), (x, step)


def _lsq_quant_bwd(res, dy, *, qn=128, qp=127, grad_scale=None):
    x, step = res
    v = x / step
    inside = (v >= -qn) & (v <= qp)
    # the rounding residual round(v) - v is the surrogate's constant: no derivative flows through it
    resid = jax.lax.stop_gradient(jnp.round(v) - v)
    dv = jnp.where(inside, resid, jnp.where(v < -qn, -float(qn), float(qp)))
    ds = unbroadcast(dy * dv, step.shape) * _gscale(x, step, qp, grad_scale)
    return jnp.where(inside, dy, 0).astype(x.dtype), ds.astype(step.dtype)


def _lsq_quant_examples(key, dtype):
    k = keys(key, 3)
    x = normal(k[0], (5, 4), dtype, scale=1.5)
    return [
        Example((x, jnp.asarray(0.05, dtype)), {"qn": 8, "qp": 7}, "4-bit signed per tensor (clips)"),
        Example((x, uniform(k[1], (1, 4), dtype, 0.005, 0.02)), {"qn": 128, "qp": 127, "grad_scale": 0.1},
                "8-bit per channel, g=0.1"),
        Example((jnp.abs(normal(k[2], (6,), dtype)), jnp.asarray(0.3, dtype)), {"qn": 0, "qp": 3},
                "2-bit unsigned (activations)"),
    ]


def _lsq_quant_space(rng, dtype):
    """x of rank 1-3; a step per tensor or per last axis in [0.01, 0.5]; signed or unsigned 2-8 bits; the
    paper's gradient scale or a drawn one."""
    shape = tuple(integer(rng, 1, 5) for _ in range(integer(rng, 1, 3)))
    bits = integer(rng, 2, 8)
    qn, qp = pick(rng, [(2 ** (bits - 1), 2 ** (bits - 1) - 1), (0, 2 ** bits - 1)])
    sshape = pick(rng, [(), (1,) * (len(shape) - 1) + shape[-1:]])
    step = jnp.asarray(rng.uniform(0.01, 0.5, sshape), dtype)
    return Example((arr(rng, shape, dtype, scale=num(rng, 0.2, 3.0)), step),
                   {"qn": qn, "qp": qp, "grad_scale": pick(rng, [None, num(rng, 0.01, 1.0)])})


lsq_quant = primitive("lsq_quant", _lsq_quant, _lsq_quant_fwd, _lsq_quant_bwd, examples=_lsq_quant_examples,
                      space=_lsq_quant_space, check=_lsq_quant_check, surrogate=_SURROGATE)
