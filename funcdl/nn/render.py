"""Volume rendering for neural radiance fields (Mildenhall et al. 2020): alpha compositing along rays, and the
positional encoding gamma(p) that lets a small MLP represent fine detail.

``volume_render(sigma, rgb, delta, t)`` composites S samples per ray (the ray axes are any leading axes):

    s_i     = sigma_i delta_i                     (optical depth of sample i: density times segment length)
    alpha_i = 1 - exp(-s_i)                       (its opacity)
    T_i     = prod_{j<i} (1 - alpha_j)            (transmittance: the share of light that reaches sample i)
    w_i     = T_i alpha_i                         (its weight; w_i = T_i - T_{i+1})
    C = sum_i w_i c_i     D = sum_i w_i t_i     A = sum_i w_i = 1 - T_{S+1}

and returns (C, D, A, w): the colour, the expected depth, the accumulated opacity (composite a background b as
C + (1 - A) b: white or black) and the weights (hierarchical sampling draws fine samples from them).

The backward pass in one line of reverse cumulative sums is derived in ``_volume_render``'s docstring.

``posenc(x, n_freqs=L)`` is gamma(p) = (p, sin(2^0 pi p), cos(2^0 pi p), ..., sin(2^(L-1) pi p),
cos(2^(L-1) pi p)) per coordinate; without it a ReLU MLP of the coordinates is biased towards smooth functions
(spectral bias) and renders blurred views.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from ..core.examples import Example, keys, normal, uniform
from ..core.primitive import primitive
from ._space import arr, integer, pick, unif

__all__ = ["volume_render", "posenc", "posenc_size"]


# ------------------------------------------------------------------------------------------- volume_render
def _volume_render_check(sigma, rgb, delta, t):
    if sigma.ndim < 1:
        raise ValueError(f"volume_render: sigma must have a sample axis (..., S), got shape {sigma.shape}")
    if rgb.shape[:-1] != sigma.shape:
        raise ValueError(f"volume_render: rgb {rgb.shape} must be sigma's shape {sigma.shape} plus a channel axis "
                         "(..., S, C)")
    for name, v in (("delta", delta), ("t", t)):
        if v.shape != sigma.shape:
            raise ValueError(f"volume_render: {name} {v.shape} must have sigma's shape {sigma.shape} (..., S)")


def _composite(sigma, rgb, delta, t):
    """The forward pass with its intermediates: outputs, T (exclusive product) and T_next (inclusive)."""
    alpha = 1.0 - jnp.exp(-sigma * delta)
    keep = 1.0 - alpha                                     # = exp(-s): never divided by
    t_next = jnp.cumprod(keep, axis=-1)                    # T_{i+1} = prod_{j<=i} (1 - alpha_j)
    trans = jnp.concatenate([jnp.ones_like(t_next[..., :1]), t_next[..., :-1]], axis=-1)   # T_i
    w = trans * alpha
    color = jnp.sum(w[..., None] * rgb, axis=-2)
    depth = jnp.sum(w * t, axis=-1)
    acc = jnp.sum(w, axis=-1)
    return (color, depth, acc, w), t_next


def _volume_render(sigma, rgb, delta, t):
    """Alpha compositing of S samples per ray: sigma, delta, t (..., S) and rgb (..., S, C) give
    (C (..., C), D (...), A (...), w (..., S)) with s_i = sigma_i delta_i, alpha_i = 1 - exp(-s_i),
    T_i = prod_{j<i} (1 - alpha_j), w_i = T_i alpha_i, C = sum w_i c_i, D = sum w_i t_i, A = sum w_i.

    Backward. Every output is linear in the weights, so the cotangents (dC, dD, dA, dw) first collapse into one
    cotangent per weight:
        g_i = dw_i + <dC, c_i> + dD t_i + dA,      and directly   drgb_i = w_i dC,   dt_i = w_i dD.
    Write T_i = exp(-sum_{j<i} s_j) and w_i = T_i (1 - exp(-s_i)). For k < i the weight w_i depends on s_k only
    through T_i, so dw_i/ds_k = -w_i; for k = i, dw_k/ds_k = T_k exp(-s_k) = T_{k+1}; for k > i it is 0. Hence
        ds_k = g_k T_{k+1} - sum_{i>k} g_i w_i
    a reverse (exclusive) cumulative sum of g w, with no division by 1 - alpha: a sample whose transmittance has
    reached zero (T_{k+1} = 0, every later w_i = 0) gets ds_k = 0 exactly. Finally s = sigma delta gives
        dsigma_k = ds_k delta_k,      ddelta_k = ds_k sigma_k.
    Residuals: sigma, rgb, delta, t, the weights w and T_{i+1} = prod_{j<=i} (1 - alpha_j).
    """
    return _composite(sigma, rgb, delta, t)[0]


def _volume_render_fwd(sigma, rgb, delta, t):
    # keeps T_{i+1} from the same pass, so the intermediates come from _composite rather than the reference
    out, t_next = _composite(sigma, rgb, delta, t)
    return out, (sigma, rgb, delta, t, out[3], t_next)


def _volume_render_bwd(res, cts):
    sigma, rgb, delta, t, w, t_next = res
    d_color, d_depth, d_acc, d_w = cts
    g = d_w + jnp.sum(d_color[..., None, :] * rgb, axis=-1) + d_depth[..., None] * t + d_acc[..., None]
    gw = g * w
    after = jnp.flip(jnp.cumsum(jnp.flip(gw, -1), axis=-1), -1) - gw       # sum_{i>k} g_i w_i
    ds = g * t_next - after
    d_rgb = w[..., None] * d_color[..., None, :]
    return ds * delta, d_rgb, ds * sigma, w * d_depth[..., None]


def _volume_render_examples(key, dtype):
    k = keys(key, 8)
    # rays of 6 samples; the second set has an opaque sample (s = 1000: T = 0 after it, exactly, in float64)
    sigma = uniform(k[0], (3, 6), dtype, 0.0, 2.0)
    opaque = np.array(uniform(k[1], (2, 5), dtype, 0.0, 2.0))
    opaque[:, 2] = 2000.0
    delta = uniform(k[2], (3, 6), dtype, 0.1, 0.5)
    return [
        Example((sigma, uniform(k[3], (3, 6, 3), dtype), delta, jnp.cumsum(delta, axis=-1)), {},
                "3 rays, 6 samples, rgb"),
        Example((jnp.asarray(opaque, dtype), uniform(k[4], (2, 5, 3), dtype), uniform(k[5], (2, 5), dtype, 0.5, 1.0),
                 normal(k[6], (2, 5), dtype)), {}, "an opaque sample: transmittance 0 behind it"),
        Example((uniform(k[7], (2, 2, 4), dtype, 0.0, 3.0), normal(k[0], (2, 2, 4, 2), dtype),
                 uniform(k[1], (2, 2, 4), dtype, 0.2, 1.0), normal(k[2], (2, 2, 4), dtype)), {},
                "(2, 2) rays, 2 channels"),
    ]


def _volume_render_space(rng, dtype):
    """Rays of rank 0-2, 1-8 samples, 1-4 channels; densities in [0, 4] and, in 30% of draws, opaque samples
    (sigma delta ~ 1000) behind which the transmittance is exactly zero; deltas in [0.05, 1]; any depths."""
    lead = tuple(integer(rng, 1, 3) for _ in range(integer(rng, 0, 2)))
    s, c = integer(rng, 1, 8), integer(rng, 1, 4)
    sigma = np.asarray(rng.uniform(0.0, 4.0, (*lead, s)))
    if rng.random() < 0.3:
        sigma = np.where(rng.random(sigma.shape) < 0.25, 2000.0, sigma)
    delta = unif(rng, (*lead, s), dtype, 0.05, 1.0)
    t = pick(rng, [jnp.cumsum(delta, axis=-1), arr(rng, (*lead, s), dtype)])
    return Example((jnp.asarray(sigma, dtype), arr(rng, (*lead, s, c), dtype), delta, t))


volume_render = primitive("volume_render", _volume_render, _volume_render_fwd, _volume_render_bwd,
                          examples=_volume_render_examples, space=_volume_render_space, check=_volume_render_check)


# ------------------------------------------------------------------------------------------------- posenc
def posenc_size(dim: int, n_freqs: int, include_input: bool = True) -> int:
    """The width of ``posenc``'s output for ``dim`` coordinates."""
    return dim * (2 * n_freqs + int(include_input))


def _posenc_check(x, *, n_freqs=6, include_input=True):
    if x.ndim < 1:
        raise ValueError(f"posenc: x must have a coordinate axis (..., D), got shape {x.shape}")
    if not isinstance(n_freqs, int) or n_freqs < 0:
        raise ValueError(f"posenc: n_freqs must be an int >= 0, got {n_freqs!r}")
    if n_freqs == 0 and not include_input:
        raise ValueError("posenc: n_freqs=0 without include_input leaves nothing; keep the input or add frequencies")


def _posenc(x, *, n_freqs=6, include_input=True):
    """gamma(x) for x (..., D): (x, sin(2^0 pi x), cos(2^0 pi x), ..., sin(2^(L-1) pi x), cos(2^(L-1) pi x)),
    L = n_freqs, each block D wide, so (..., D (2L + 1)) (x left out without ``include_input``).

    With f_k = 2^k pi, d sin(f_k x)/dx = f_k cos(f_k x) and d cos(f_k x)/dx = -f_k sin(f_k x), coordinate by
    coordinate, so with dy split into the same blocks (dx0, ds_k, dc_k):
        dx = dx0 + sum_k f_k (ds_k cos(f_k x) - dc_k sin(f_k x)).
    Residual: x (the sines and cosines are recomputed).
    """
    parts = [x] if include_input else []
    for k in range(n_freqs):
        f = (2.0**k) * math.pi
        parts += [jnp.sin(f * x), jnp.cos(f * x)]
    return jnp.concatenate(parts, axis=-1)


def _posenc_fwd(x, *, n_freqs=6, include_input=True):
    return _posenc(x, n_freqs=n_freqs, include_input=include_input), (x,)


def _posenc_bwd(res, dy, *, n_freqs=6, include_input=True):
    (x,) = res
    d = x.shape[-1]
    dx = dy[..., :d] if include_input else jnp.zeros_like(x)
    off = d if include_input else 0
    for k in range(n_freqs):
        f = (2.0**k) * math.pi
        ds, dc = dy[..., off + 2 * k * d: off + (2 * k + 1) * d], dy[..., off + (2 * k + 1) * d: off + (2 * k + 2) * d]
        dx = dx + f * (ds * jnp.cos(f * x) - dc * jnp.sin(f * x))
    return (dx,)


def _posenc_examples(key, dtype):
    k = keys(key, 2)
    return [Example((uniform(k[0], (4, 3), dtype, -1.0, 1.0),), {"n_freqs": 4}, "3-D points, L=4"),
            Example((uniform(k[1], (2, 3, 2), dtype, -1.0, 1.0),), {"n_freqs": 2, "include_input": False},
                    "2-D points, L=2, no input")]


def _posenc_space(rng, dtype):
    """x of rank 1-3 with 1-4 coordinates in [-1.5, 1.5]; 0-6 frequencies; the input kept or not (not with 0)."""
    shape = (*(integer(rng, 1, 3) for _ in range(integer(rng, 0, 2))), integer(rng, 1, 4))
    n = integer(rng, 0, 6)
    include = True if n == 0 else pick(rng, [True, False])
    return Example((unif(rng, shape, dtype, -1.5, 1.5),), {"n_freqs": n, "include_input": include})


posenc = primitive("posenc", _posenc, _posenc_fwd, _posenc_bwd, examples=_posenc_examples, space=_posenc_space,
                   check=_posenc_check)
