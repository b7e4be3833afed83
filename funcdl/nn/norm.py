"""Normalisation for channels-last data: batch norm (dense and spatial), group norm, instance norm.

Every one of them normalises x over a set S of M entries that share one mean and one variance, then applies a
per-channel scale and shift (``gamma``, ``beta``; either may be None):

    mu = mean_S(x)     rstd = 1/sqrt(var_S(x) + eps)   (biased variance, as torch)
    xhat = (x - mu) rstd                               y = gamma * xhat + beta

The sets: batch norm -- one per channel, over the batch and all spatial positions (M = N * H * W); group norm --
one per example and group of C/G channels, over the positions and those channels (M = H * W * C/G); instance
norm -- group norm with one channel per group. Layer norm over the channels of NHWC data is ``funcdl.layer_norm``
(the last axis), so it is not repeated here.

Backward in closed form (the step-by-step version, through mu, var and rstd one node at a time, is in
``notebooks/04_cnn.ipynb``). With g = dy * gamma the cotangent of xhat, and d mu/dx_j = 1/M,
d rstd/dx_j = -rstd^3 (x_j - mu)/M = -rstd^2 xhat_j / M:

    d xhat_i / d x_j = rstd (delta_ij - 1/M - xhat_i xhat_j / M)
    dx = rstd/M * (M g - sum_S g - xhat * sum_S(g xhat))
    dgamma = sum over everything but the channel of dy * xhat,   dbeta = the same sum of dy.

Residuals: x, mu and rstd (one number per set) and gamma; xhat is recomputed in the backward (one fused
multiply-add) instead of being kept as a second array the size of x. Statistics are computed in at least
float32.

Batch norm has two modes and a state. Training normalises with the batch statistics (``batch_norm``) and
updates running statistics with torch's momentum convention and the *unbiased* batch variance:

    running_mean <- (1 - momentum) running_mean + momentum mu
    running_var  <- (1 - momentum) running_var  + momentum var_S(x) M/(M-1)

``momentum=None`` is torch's cumulative moving average: with n the number of batches seen so far, this one
included, the factor is 1/n (running <- running + (batch - running) / n, the plain mean of every batch
statistic). The count n lives in the state as ``"count"`` (torch's ``num_batches_tracked``), which
``batch_norm_init(C, momentum=None)`` adds; states made without it (every existing checkpoint) keep their
two entries and their exponential average.

Evaluation uses the running statistics (``batch_norm_eval``): an affine map of x, so
dx = dy * gamma * rstd and the running statistics get no gradient. ``batch_norm_apply`` holds the two modes
together with the state pytree in and out (DESIGN.md: nothing is mutated in place).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..core.examples import Example, keys, normal, uniform
from ..core.primitive import primitive
from ._norm import affine, affine_grads, check_affine, normalized_grad, stat_dtype
from ._space import arr, integer, pick, unif, valid

__all__ = [
    "batch_norm", "batch_norm_eval", "group_norm", "instance_norm", "batch_norm_init", "batch_norm_apply",
    "norm_init", "channel_layer_norm",
]


def _check_affine(name, x, gamma, beta):
    check_affine(name, x, gamma, beta, ("scale gamma", "shift beta"))


# -- batch norm (training: batch statistics) ----------------------------------------------------------------------


def _batch_norm_check(x, gamma=None, beta=None, *, eps=1e-5):
    if x.ndim < 2:
        raise ValueError(f"batch_norm: input must be (N, C) or (N, *spatial, C), got shape {x.shape}")
    m = x.size // x.shape[-1]
    if m < 2:
        raise ValueError(f"batch_norm: training needs more than one value per channel to estimate a variance; "
                         f"input {x.shape} has {m} (use a larger batch or batch_norm_eval)")
    _check_affine("batch_norm", x, gamma, beta)


def _rows(x):
    """(N, *spatial, C) -> (M, C): the statistics are column reductions of a 2-D array, which XLA's CPU backend
    runs about twice as fast as the same reduction over the leading axes of the 4-D array."""
    return x.reshape(-1, x.shape[-1])


def _batch_norm_stats(x):
    """Batch mean and biased variance per channel (two passes: the variance of centred values)."""
    xf = _rows(x).astype(stat_dtype(x))
    mu = jnp.mean(xf, axis=0)
    return mu, jnp.mean(jnp.square(xf - mu), axis=0)


def _batch_norm(x, gamma=None, beta=None, *, eps=1e-5):
    """Batch norm in training, x (N, C) or (N, *spatial, C), gamma and beta (C,) or None:
    y = gamma * (x - mu) / sqrt(var + eps) + beta with mu, var the batch statistics of each channel (M entries).

    With xhat = (x - mu) rstd and g = dy * gamma (the module docstring derives d xhat / dx):
        dx = rstd/M * (M g - sum g - xhat * sum(g xhat))      (sums over the batch and the positions)
        dgamma = sum of dy * xhat,   dbeta = sum of dy
    gamma being a per-channel constant, sum g = gamma * dbeta and sum(g xhat) = gamma * dgamma: the two
    reductions the parameter gradients need are the only two the input gradient needs.
    Residuals: x, mu, rstd, gamma and beta; xhat is recomputed.
    """
    mu, var = _batch_norm_stats(x)
    return affine((_rows(x).astype(mu.dtype) - mu) / jnp.sqrt(var + eps), gamma, beta, x.dtype).reshape(x.shape)


def _batch_norm_fwd(x, gamma=None, beta=None, *, eps=1e-5):
    # keeps the statistics mu and rstd, so they are computed here rather than inside the reference
    mu, var = _batch_norm_stats(x)
    rstd = jax.lax.rsqrt(var + eps)
    y = affine((_rows(x).astype(mu.dtype) - mu) * rstd, gamma, beta, x.dtype).reshape(x.shape)
    return y, (x, gamma, beta, mu, rstd)


def _batch_norm_bwd(res, dy, *, eps=1e-5):
    x, gamma, beta, mu, rstd = res
    m = x.size // x.shape[-1]
    dyf = _rows(dy).astype(mu.dtype)
    xhat = (_rows(x).astype(mu.dtype) - mu) * rstd                # recomputed, not stored
    sum_dy = jnp.sum(dyf, axis=0)
    sum_dyx = jnp.sum(dyf * xhat, axis=0)
    scale = rstd if gamma is None else rstd * gamma.astype(mu.dtype)
    dx = (scale / m) * (m * dyf - sum_dy - xhat * sum_dyx)
    dgamma = None if gamma is None else sum_dyx.astype(gamma.dtype)
    dbeta = None if beta is None else sum_dy.astype(beta.dtype)
    return dx.reshape(x.shape).astype(x.dtype), dgamma, dbeta


def _batch_norm_examples(key, dtype):
    k = keys(key, 9)
    return [
        Example((normal(k[0], (6, 5), dtype, 2.0, 1.0), normal(k[1], (5,), dtype), normal(k[2], (5,), dtype)),
                {}, "dense (N, C)"),
        Example((normal(k[3], (3, 4, 5, 4), dtype), normal(k[4], (4,), dtype), normal(k[5], (4,), dtype)),
                {"eps": 1e-3}, "spatial (N, H, W, C)"),
        Example((normal(k[6], (4, 7, 3), dtype), None, None), {}, "1-D, no affine"),
        Example((normal(k[7], (2, 3, 3, 2, 3), dtype), normal(k[8], (3,), dtype), None), {}, "3-D, scale only"),
    ]


def _channels_draw(rng, dtype, min_rank=2, channels=None):
    """(N, *spatial, C): N 1-4, 0-3 spatial axes of 1-4, C 1-6 (or ``channels``), gamma/beta each or None."""
    c = channels or integer(rng, 1, 6)
    shape = (integer(rng, 1, 4), *(integer(rng, 1, 4) for _ in range(integer(rng, min_rank - 2, 3))), c)
    x = arr(rng, shape, dtype, pick(rng, [0.5, 1.0, 3.0]), pick(rng, [0.0, 1.0]))
    return x, arr(rng, (c,), dtype) if rng.random() < 0.6 else None, arr(rng, (c,), dtype) if rng.random() < 0.6 \
        else None


def _batch_norm_space(rng, dtype):
    """Every layout (N, C) to (N, D, H, W, C), affine or not, eps 0 to 0.1; redrawn until more than one value
    per channel (the check refuses a batch of one value)."""
    def draw():
        eps = pick(rng, [0.0, 1e-5, 1e-3, 0.1])
        return Example(_channels_draw(rng, dtype), {"eps": eps})
    return valid(draw, _batch_norm_check)


batch_norm = primitive("batch_norm", _batch_norm, _batch_norm_fwd, _batch_norm_bwd, examples=_batch_norm_examples,
                       space=_batch_norm_space, check=_batch_norm_check)


# -- batch norm (evaluation: running statistics) --------------------------------------------------------------


def _batch_norm_eval_check(x, mean, var, gamma=None, beta=None, *, eps=1e-5):
    if x.ndim < 2:
        raise ValueError(f"batch_norm_eval: input must be (N, C) or (N, *spatial, C), got shape {x.shape}")
    c = x.shape[-1]
    if mean.shape != (c,) or var.shape != (c,):
        raise ValueError(f"batch_norm_eval: running mean {mean.shape} and var {var.shape} must be ({c},) for input "
                         f"{x.shape}")
    _check_affine("batch_norm_eval", x, gamma, beta)


def _batch_norm_eval(x, mean, var, gamma=None, beta=None, *, eps=1e-5):
    """Batch norm in evaluation: y = gamma * (x - mean) / sqrt(var + eps) + beta with the running statistics.

    An affine map of x, so dx = dy * gamma * rstd (rstd = 1/sqrt(var + eps)); dgamma = sum of dy * xhat,
    dbeta = sum of dy; the running statistics are constants and get no gradient. Residuals: x, the mean,
    rstd, gamma and beta.
    """
    sd = stat_dtype(x)
    xhat = (x.astype(sd) - mean.astype(sd)) / jnp.sqrt(var.astype(sd) + eps)
    return affine(xhat, gamma, beta, x.dtype)


def _batch_norm_eval_fwd(x, mean, var, gamma=None, beta=None, *, eps=1e-5):
    # keeps rstd, so it is computed here rather than inside the reference
    sd = stat_dtype(x)
    rstd = jax.lax.rsqrt(var.astype(sd) + eps)
    y = affine((x.astype(sd) - mean.astype(sd)) * rstd, gamma, beta, x.dtype)
    return y, (x, gamma, beta, mean.astype(sd), rstd)


def _batch_norm_eval_bwd(res, dy, *, eps=1e-5):
    x, gamma, beta, mean, rstd = res
    dyf = dy.astype(rstd.dtype)
    scale = rstd if gamma is None else rstd * gamma.astype(rstd.dtype)
    xhat = (x.astype(rstd.dtype) - mean) * rstd
    dgamma, dbeta = affine_grads(dyf, xhat, gamma, beta)
    return (dyf * scale).astype(x.dtype), None, None, dgamma, dbeta


def _batch_norm_eval_examples(key, dtype):
    k = keys(key, 10)
    return [
        Example((normal(k[0], (6, 5), dtype), normal(k[1], (5,), dtype), uniform(k[2], (5,), dtype, 0.5, 2.0),
                 normal(k[3], (5,), dtype), normal(k[4], (5,), dtype)), {}, "dense"),
        Example((normal(k[5], (2, 3, 4, 3), dtype), normal(k[6], (3,), dtype), uniform(k[7], (3,), dtype, 0.5, 2.0),
                 normal(k[8], (3,), dtype), None), {"eps": 1e-3}, "spatial, scale only"),
    ]


def _batch_norm_eval_space(rng, dtype):
    """Every layout, running mean and a positive running var, affine or not, eps 0 to 0.1."""
    x, gamma, beta = _channels_draw(rng, dtype)
    c = x.shape[-1]
    stats = (arr(rng, (c,), dtype), unif(rng, (c,), dtype, 0.2, 3.0))
    return Example((x, *stats, gamma, beta), {"eps": pick(rng, [0.0, 1e-5, 1e-3, 0.1])})


batch_norm_eval = primitive("batch_norm_eval", _batch_norm_eval, _batch_norm_eval_fwd, _batch_norm_eval_bwd,
                            examples=_batch_norm_eval_examples, space=_batch_norm_eval_space,
                            check=_batch_norm_eval_check, nondiff=("mean", "var"))


# -- group norm and instance norm ------------------------------------------------------------------------------


def _group_norm_check_factory(name):
    def check(x, gamma=None, beta=None, *, groups=1, eps=1e-5):
        if x.ndim < 3:
            raise ValueError(f"{name}: input must be (N, *spatial, C) channels last, got shape {x.shape}")
        c = x.shape[-1]
        g = c if name == "instance_norm" else groups
        if not isinstance(g, int) or g < 1 or c % g:
            raise ValueError(f"{name}: channels {c} (input {x.shape}) are not divisible by groups={g}")
        if (x.size // x.shape[0]) // g < 2:
            raise ValueError(f"{name}: each group of input {x.shape} has one value; its variance is undefined")
        _check_affine(name, x, gamma, beta)
    return check


def _grouped(x, groups):
    """(N, *sp, C) -> (N, M_sp, G, C/G); the statistics run over axes (1, 3)."""
    return x.reshape(x.shape[0], -1, groups, x.shape[-1] // groups)


def _group_norm_stats(x, groups, eps):
    """x grouped (N, M_sp, G, C/G) in the statistics dtype, its mean and rstd per example and group (N, 1, G, 1)."""
    xg = _grouped(x.astype(stat_dtype(x)), groups)
    mu = jnp.mean(xg, axis=(1, 3), keepdims=True)
    return xg, mu, jax.lax.rsqrt(jnp.mean(jnp.square(xg - mu), axis=(1, 3), keepdims=True) + eps)


def _group_norm(x, gamma=None, beta=None, *, groups=1, eps=1e-5):
    """Group norm, x (N, *spatial, C), gamma and beta (C,) or None: each example's channels split into G groups
    of C/G, each group normalised over its positions and channels (M entries), then y = gamma * xhat + beta.

    With g = dy * gamma (the module docstring derives d xhat / dx; the sums run over one group):
        dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
        dgamma = sum over everything but the channel of dy * xhat,   dbeta = the same sum of dy
    Residuals: x, gamma, beta, mu and rstd (one per example and group); xhat is recomputed.
    """
    xg, mu, rstd = _group_norm_stats(x, groups, eps)
    return affine(((xg - mu) * rstd).reshape(x.shape), gamma, beta, x.dtype)


def _group_norm_fwd(x, gamma=None, beta=None, *, groups=1, eps=1e-5):
    # keeps the statistics mu and rstd, so they are computed here rather than inside the reference
    xg, mu, rstd = _group_norm_stats(x, groups, eps)
    y = affine(((xg - mu) * rstd).reshape(x.shape), gamma, beta, x.dtype)
    return y, (x, gamma, beta, mu, rstd)


def _group_norm_bwd(res, dy, *, groups=1, eps=1e-5):
    x, gamma, beta, mu, rstd = res
    sd = mu.dtype
    dyf = dy.astype(sd)
    xhat = (_grouped(x.astype(sd), groups) - mu) * rstd           # (N, M_sp, G, C/G), recomputed
    g = _grouped(dyf if gamma is None else dyf * gamma.astype(sd), groups)
    dx = normalized_grad(g, xhat, rstd, (1, 3)).reshape(x.shape)
    dgamma, dbeta = affine_grads(dyf, xhat.reshape(x.shape), gamma, beta)
    return dx.astype(x.dtype), dgamma, dbeta


def _group_norm_examples(key, dtype):
    k = keys(key, 9)
    return [
        Example((normal(k[0], (2, 4, 5, 6), dtype), normal(k[1], (6,), dtype), normal(k[2], (6,), dtype)),
                {"groups": 3}, "groups=3"),
        Example((normal(k[3], (2, 3, 4, 4), dtype, 2.0), normal(k[4], (4,), dtype), None),
                {"groups": 1, "eps": 1e-3}, "groups=1 (all channels)"),
        Example((normal(k[5], (3, 7, 4), dtype), None, None), {"groups": 4}, "1-D, groups=C, no affine"),
        Example((normal(k[6], (2, 3, 2, 3, 6), dtype), normal(k[7], (6,), dtype), normal(k[8], (6,), dtype)),
                {"groups": 2}, "3-D groups=2"),
    ]


def _group_norm_space(rng, dtype):
    """groups 1-4 with C a multiple of them, 1-3 spatial axes, affine or not, eps 0 to 0.1; redrawn until each
    group has more than one value."""
    def draw():
        groups = integer(rng, 1, 4)
        x, gamma, beta = _channels_draw(rng, dtype, 3, groups * integer(rng, 1, 3))
        return Example((x, gamma, beta), {"groups": groups, "eps": pick(rng, [0.0, 1e-5, 1e-3, 0.1])})
    return valid(draw, _group_norm_check_factory("group_norm"))


def _instance_norm_space(rng, dtype):
    def draw():
        return Example(_channels_draw(rng, dtype, 3), {"eps": pick(rng, [0.0, 1e-5, 1e-3, 0.1])})
    return valid(draw, _group_norm_check_factory("instance_norm"))


group_norm = primitive("group_norm", _group_norm, _group_norm_fwd, _group_norm_bwd, examples=_group_norm_examples,
                       space=_group_norm_space, check=_group_norm_check_factory("group_norm"))


def _instance_norm(x, gamma=None, beta=None, *, eps=1e-5):
    """Instance norm: group norm with one channel per group (G = C), each channel of each example normalised
    over its positions; y = gamma * xhat + beta. The gradients are group norm's with G = C:
        dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),  g = dy * gamma (means over the positions)
        dgamma = sum over everything but the channel of dy * xhat,   dbeta = the same sum of dy
    Residuals: x, gamma, beta, mu and rstd (one per example and channel).
    """
    return _group_norm(x, gamma, beta, groups=x.shape[-1], eps=eps)


def _instance_norm_fwd(x, gamma=None, beta=None, *, eps=1e-5):
    # group norm's forward with G = C, which keeps mu and rstd
    return _group_norm_fwd(x, gamma, beta, groups=x.shape[-1], eps=eps)


def _instance_norm_bwd(res, dy, *, eps=1e-5):
    return _group_norm_bwd(res, dy, groups=res[0].shape[-1], eps=eps)


def _instance_norm_examples(key, dtype):
    k = keys(key, 5)
    return [
        Example((normal(k[0], (2, 4, 5, 3), dtype), normal(k[1], (3,), dtype), normal(k[2], (3,), dtype)), {},
                "2-D affine"),
        Example((normal(k[3], (3, 6, 2), dtype, 3.0), None, None), {"eps": 1e-3}, "1-D no affine"),
    ]


instance_norm = primitive("instance_norm", _instance_norm, _instance_norm_fwd, _instance_norm_bwd,
                          examples=_instance_norm_examples, space=_instance_norm_space,
                          check=_group_norm_check_factory("instance_norm"))


def channel_layer_norm(x, gamma=None, beta=None, *, eps=1e-5):
    """Layer norm over the channels of channels-last data: ``funcdl.layer_norm`` over the last axis."""
    from .layernorm import layer_norm

    return layer_norm(x, gamma, beta, eps=eps)


# -- batch norm with its state ----------------------------------------------------------------------------------


def norm_init(channels: int, dtype=jnp.float32) -> dict:
    """Scale 1 and shift 0 (torch's default affine parameters): ``{"scale": (C,), "bias": (C,)}``."""
    return {"scale": jnp.ones((channels,), dtype), "bias": jnp.zeros((channels,), dtype)}


def batch_norm_init(channels: int, dtype=jnp.float32, *, momentum: float | None = 0.1) -> tuple[dict, dict]:
    """``(params, state)``: affine parameters and running statistics (mean 0, var 1, as torch). With
    ``momentum=None`` (the cumulative average) the state also holds ``"count"``, the number of training batches
    seen (torch's ``num_batches_tracked``, int32 0); otherwise the state is ``{"mean", "var"}`` as before."""
    state = {"mean": jnp.zeros((channels,), dtype), "var": jnp.ones((channels,), dtype)}
    if momentum is None:
        state["count"] = jnp.zeros((), jnp.int32)
    return norm_init(channels, dtype), state


def batch_norm_apply(params, state, x, *, train: bool, momentum: float | None = 0.1, eps: float = 1e-5):
    """``(y, new_state)``. Training: batch statistics, running statistics updated (torch's momentum, unbiased
    variance); evaluation: running statistics, state returned unchanged. ``params`` may be None (no affine).

    ``momentum=None``: the cumulative average, factor 1/n with n = state["count"] + 1 (the state must hold
    ``"count"``: ``batch_norm_init(C, momentum=None)``). A state that holds ``"count"`` has it incremented on
    every training call whatever the momentum, as torch's ``num_batches_tracked``."""
    if momentum is None and "count" not in state:
        raise ValueError("batch_norm_apply: momentum=None (cumulative average) needs the batch count in the state; "
                         "create it with batch_norm_init(channels, momentum=None)")
    if momentum is not None and not 0 <= momentum <= 1:
        raise ValueError(f"batch_norm_apply: momentum must be in [0, 1] or None, got {momentum}")
    gamma = None if params is None else params.get("scale")
    beta = None if params is None else params.get("bias")
    if not train:
        return batch_norm_eval(x, state["mean"], state["var"], gamma, beta, eps=eps), state
    y = batch_norm(x, gamma, beta, eps=eps)
    mu, var = _batch_norm_stats(jax.lax.stop_gradient(x))   # the primitive's reductions: XLA computes them once
    m = x.size // x.shape[-1]
    var = var * (m / (m - 1))
    new = {}
    if "count" in state:
        new["count"] = state["count"] + 1
    # cumulative average: factor 1/n, so (1 - 1/n) running + batch/n is the mean of the n batch statistics
    factor = momentum if momentum is not None else 1.0 / new["count"].astype(mu.dtype)
    new["mean"] = ((1 - factor) * state["mean"] + factor * mu).astype(state["mean"].dtype)
    new["var"] = ((1 - factor) * state["var"] + factor * var).astype(state["var"].dtype)
    return y, new
