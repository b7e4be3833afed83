"""Integer quantizers and calibrators: the arithmetic of post-training quantization and quantization-aware training.

A quantizer with ``bits`` b maps x to integers in [qmin, qmax] with a scale s and a zero point z:

    q = clip(round(x / s + z), qmin, qmax)          x_hat = s (q - z)           (the fake-quantized value)

* symmetric: z = 0 and the restricted range [-(2^(b-1) - 1), 2^(b-1) - 1] ([-127, 127] at 8 bits, [-7, 7] at 4), so
  that -x quantizes to -q; s = max|x| / qmax over the calibrated clipping range;
* asymmetric: the full range [-2^(b-1), 2^(b-1) - 1]; the calibrated [lo, hi] (widened to contain 0, so that 0 is
  exact: zero padding stays zero) maps onto it with s = (hi - lo) / (qmax - qmin), z = round(qmin - lo / s).

Granularity: one (s, z) per tensor, per channel (every index of the ``channel`` axes: a weight's output
channels), or per group (``group_size`` consecutive input weights of each output channel, the input axes flattened:
the int4 LLM recipe).

Calibration picks the clipping range [lo, hi] from the values (a weight, or activations seen on a calibration set):

* ``minmax``      lo = min x, hi = max x (no clipping error, the largest rounding error);
* ``percentile``  lo, hi = the (100 - p)th and pth percentiles (symmetric: the pth percentile of |x|);
* ``mse``         the minmax range shrunk by the factor alpha in {0.30, 0.32, ..., 1.00} that minimizes the mean
                  squared error of fake quantization mean((x_hat - x)^2), per channel / group (a grid search:
                  clipping trades rounding error for clipping error).

``fake_quantize`` runs the registered ``fake_quant`` primitive (funcdl/nn/quant.py), so the same function simulates
quantization in post-training evaluation and trains through the straight-through estimator in QAT.
The graph rewrite that quantizes a whole model lives in :mod:`funcdl.compress.quant_graph`, QAT in
:mod:`funcdl.compress.qat`.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from ..nn.quant import fake_quant

__all__ = ["QuantSpec", "qrange", "scale_zero_point", "quantize", "dequantize", "fake_quantize", "calibrate",
           "quantize_tensor", "summarize_sample", "calibrate_samples",
           "GRANULARITIES", "METHODS", "MSE_GRID"]

GRANULARITIES = ("tensor", "channel", "group")
METHODS = ("minmax", "percentile", "mse")
MSE_GRID = tuple(round(0.30 + 0.02 * i, 2) for i in range(36))     # clipping factors the mse calibrator tries


@dataclasses.dataclass(frozen=True)
class QuantSpec:
    """How to quantize one kind of tensor: bit width (2-8), symmetric or not, granularity, calibration method."""

    bits: int = 8
    symmetric: bool = True
    granularity: str = "channel"
    group_size: int = 32
    method: str = "minmax"
    percentile: float = 99.99

    def __post_init__(self):
        if not isinstance(self.bits, int) or not 2 <= self.bits <= 8:
            raise ValueError(f"quantize: bits must be an int in 2..8 (int8 storage), got {self.bits!r}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"quantize: granularity {self.granularity!r} is not one of {', '.join(GRANULARITIES)}")
        if self.method not in METHODS:
            raise ValueError(f"quantize: calibration method {self.method!r} is not one of {', '.join(METHODS)}")
        if not isinstance(self.group_size, int) or self.group_size < 1:
            raise ValueError(f"quantize: group_size must be a positive int, got {self.group_size!r}")
        if not 50.0 < self.percentile <= 100.0:
            raise ValueError(f"quantize: percentile must be in (50, 100], got {self.percentile!r} (e.g. 99.99)")

    @property
    def qmin(self) -> int:
        return qrange(self.bits, self.symmetric)[0]

    @property
    def qmax(self) -> int:
        return qrange(self.bits, self.symmetric)[1]

    def describe(self) -> str:
        g = f"group {self.group_size}" if self.granularity == "group" else f"per {self.granularity}"
        return f"int{self.bits} {'sym' if self.symmetric else 'asym'} {g} {self.method}"


def qrange(bits: int, symmetric: bool) -> tuple[int, int]:
    """[qmin, qmax]: [-(2^(b-1) - 1), 2^(b-1) - 1] symmetric (restricted), [-2^(b-1), 2^(b-1) - 1] asymmetric."""
    half = 2 ** (bits - 1)
    return (-(half - 1), half - 1) if symmetric else (-half, half - 1)


def scale_zero_point(lo, hi, spec: QuantSpec):
    """(s, z) of a clipping range [lo, hi] (arrays of the same shape): see the module docstring. A constant zero
    tensor gets s = 1 (everything quantizes to 0)."""
    lo, hi = jnp.minimum(lo, 0.0), jnp.maximum(hi, 0.0)
    qmin, qmax = spec.qmin, spec.qmax
    if spec.symmetric:
        amax = jnp.maximum(-lo, hi)
        scale = jnp.where(amax > 0, amax / qmax, 1.0)
        return scale, jnp.zeros_like(scale)
    scale = jnp.where(hi > lo, (hi - lo) / (qmax - qmin), 1.0)
    zero = jnp.clip(jnp.round(qmin - lo / scale), qmin, qmax)
    return scale, zero


def quantize(x, scale, zero, spec: QuantSpec):
    """The integers q = clip(round(x / s + z), qmin, qmax), as floats of x's dtype."""
    return jnp.clip(jnp.round(x / scale + zero), spec.qmin, spec.qmax)


def dequantize(q, scale, zero):
    """x_hat = s (q - z)."""
    return (q - zero) * scale


def fake_quantize(x, scale, zero, spec: QuantSpec):
    """x_hat = s (clip(round(x / s + z), qmin, qmax) - z) through the ``fake_quant`` primitive (STE gradient)."""
    dtype = x.dtype
    return fake_quant(x, jnp.asarray(scale, dtype), jnp.asarray(zero, dtype), qmin=spec.qmin, qmax=spec.qmax)


def _flat_rows(x, keep: tuple):
    """x with the ``keep`` axes first and everything else flattened into one last axis."""
    rest = tuple(a for a in range(x.ndim) if a not in keep)
    moved = jnp.transpose(x, keep + rest)
    return moved.reshape(*(x.shape[a] for a in keep), -1)


def _restore(r, x_shape, keep: tuple):
    """Per-row statistics (shape of the keep axes) back to keepdims form for x."""
    shape = [1] * len(x_shape)
    for a in keep:
        shape[a] = x_shape[a]
    order = sorted(range(len(keep)), key=lambda i: keep[i])
    return jnp.transpose(r, order).reshape(shape) if keep else r.reshape(shape)


def calibrate(x, spec: QuantSpec, keep: tuple = ()):
    """The scale and zero point of x, one per index of the ``keep`` axes (keepdims shapes; () = per tensor), with
    the clipping range chosen by ``spec.method``."""
    keep = tuple(sorted(a % x.ndim for a in keep)) if x.ndim else ()
    rows = _flat_rows(x, keep)
    if spec.method == "percentile":
        p = spec.percentile
        if spec.symmetric:
            hi = jnp.percentile(jnp.abs(rows), p, axis=-1)
            lo = -hi
        else:
            lo, hi = jnp.percentile(rows, 100.0 - p, axis=-1), jnp.percentile(rows, p, axis=-1)
    else:
        lo, hi = jnp.min(rows, axis=-1), jnp.max(rows, axis=-1)
    if spec.method == "mse":
        lo, hi = _mse_range(rows, lo, hi, spec)
    scale, zero = scale_zero_point(lo, hi, spec)
    return _restore(scale, x.shape, keep), _restore(zero, x.shape, keep)


def _mse_range(rows, lo, hi, spec: QuantSpec):
    """The minmax range times the factor of MSE_GRID with the least fake-quantization error, row by row."""
    best_err, best_lo, best_hi = None, lo, hi
    for alpha in MSE_GRID:
        s, z = scale_zero_point(alpha * lo, alpha * hi, spec)
        xh = dequantize(quantize(rows, s[..., None], z[..., None], spec), s[..., None], z[..., None])
        err = jnp.mean((xh - rows) ** 2, axis=-1)
        if best_err is None:
            best_err, best_lo, best_hi = err, alpha * lo, alpha * hi
        else:
            better = err < best_err
            best_err = jnp.where(better, err, best_err)
            best_lo, best_hi = jnp.where(better, alpha * lo, best_lo), jnp.where(better, alpha * hi, best_hi)
    return best_lo, best_hi


def quantize_tensor(w, spec: QuantSpec, channel_axes: tuple = ()) -> dict:
    """Quantize one weight: ``{"q", "scale", "zero", "x_hat", "granularity"}``, q integer-valued floats of w's
    shape. ``channel_axes`` are the output-channel axes, every other axis is an input (contracted) axis.

    * per tensor / per channel: scale and zero keepdims-shaped for w (one per index of the channel axes);
    * per group: the input axes flattened (in order) into K values per output channel, cut into groups of
      ``group_size`` consecutive ones (the last group zero-padded when K is not a multiple: zeros change no
      range); scale and zero have shape (ceil(K / group_size), *channel shape)."""
    if spec.granularity != "group":
        keep = tuple(channel_axes) if spec.granularity == "channel" else ()
        scale, zero = calibrate(w, spec, keep)
        q = quantize(w, scale, zero, spec)
        return {"q": q, "scale": scale, "zero": zero, "granularity": spec.granularity,
                "x_hat": dequantize(q, scale, zero)}
    chan = tuple(sorted(a % w.ndim for a in channel_axes))
    inputs = tuple(a for a in range(w.ndim) if a not in chan)
    moved = jnp.transpose(w, inputs + chan)
    cshape = moved.shape[len(inputs):]
    k = int(np.prod(moved.shape[:len(inputs)], dtype=np.int64))
    g = spec.group_size
    n = -(-k // g)
    flat = jnp.pad(moved.reshape(k, -1), ((0, n * g - k), (0, 0))).reshape(n, g, -1)
    scale, zero = calibrate(flat, spec, (0, 2))
    q = quantize(flat, scale, zero, spec)

    def back(t):
        t = t.reshape(n * g, -1)[:k].reshape(moved.shape)
        return jnp.transpose(t, tuple(np.argsort(inputs + chan)))

    return {"q": back(q), "scale": scale.reshape(n, *cshape), "zero": zero.reshape(n, *cshape),
            "granularity": "group", "x_hat": back(dequantize(q, scale, zero))}


def summarize_sample(x, limit: int = 65536):
    """(min, max, sample) of an activation batch: its extremes and a fixed, evenly strided subset of its values
    (at most ``limit``) for the host-side percentile and mse calibrators."""
    flat = x.reshape(-1)
    stride = max(1, flat.size // limit)
    return jnp.min(flat), jnp.max(flat), flat[::stride][:limit]


def calibrate_samples(records: list, spec: QuantSpec):
    """Per-tensor (s, z) of an activation from ``summarize_sample`` records gathered over the calibration
    batches: minmax uses the exact extremes, percentile and mse the pooled samples."""
    if spec.method == "minmax":
        lo = min(float(r[0]) for r in records)
        hi = max(float(r[1]) for r in records)
        return scale_zero_point(jnp.asarray(lo), jnp.asarray(hi), spec)
    values = jnp.asarray(np.concatenate([np.asarray(r[2]).ravel() for r in records]))
    return calibrate(values, spec, ())
