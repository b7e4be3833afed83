"""GAN objectives on the discriminator's raw outputs (logits), and the WGAN-GP gradient penalty.

Every loss is a sum of batch means of one scalar function per output, so every gradient has the form
d(output_i) = g phi'(output_i) / N. With sigma the logistic function and softplus(a) = log(1 + e^a) (stable for
any a: -log sigma(a) = softplus(-a), -log(1 - sigma(a)) = softplus(a)), r = D(x) on real data and f = D(G(z)):

    kind             discriminator loss                       generator loss
    minimax          mean softplus(-r) + mean softplus(f)     -mean softplus(f)        (= mean log(1 - sigma(f)))
    non_saturating   mean softplus(-r) + mean softplus(f)     mean softplus(-f)        (= -mean log sigma(f))
    least_squares    mean (r - 1)^2 / 2 + mean f^2 / 2         mean (f - 1)^2 / 2       (LSGAN, a=0, b=c=1)
    hinge            mean relu(1 - r) + mean relu(1 + f)      -mean f
    wasserstein      mean f - mean r                          -mean f

(minimax and non_saturating share the discriminator's loss: binary cross-entropy with labels 1 for real and 0
for fake.) Real and fake batches may have different shapes; each mean is over its own entries.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ...core.examples import Example, away_from, keys, normal
from ...core.primitive import primitive
from .._space import arr, integer, num, pick
from ._common import need_float

__all__ = ["gan_d_loss", "gan_g_loss", "gradient_penalty", "GAN_KINDS"]

GAN_KINDS = ("minimax", "non_saturating", "least_squares", "hinge", "wasserstein")


def _softplus(a):
    return jnp.logaddexp(0.0, a)


def _check_kind(name, kind):
    if kind not in GAN_KINDS:
        raise ValueError(f"{name}: unknown kind {kind!r}; valid: {', '.join(GAN_KINDS)}")


def _check_logits(name, what, x):
    need_float(name, what, x)
    if jnp.size(x) == 0:
        raise ValueError(f"{name}: {what} is empty (shape {tuple(jnp.shape(x))}); the loss is a mean over it")


# per kind: (phi_real, phi_fake) of the discriminator and phi of the generator, and their derivatives
def _d_terms(kind, r, f):
    if kind in ("minimax", "non_saturating"):
        return _softplus(-r), _softplus(f)
    if kind == "least_squares":
        return 0.5 * (r - 1) ** 2, 0.5 * f * f
    if kind == "hinge":
        return jax.nn.relu(1 - r), jax.nn.relu(1 + f)
    return -r, f


def _d_slopes(kind, r, f):
    if kind in ("minimax", "non_saturating"):
        return jax.nn.sigmoid(r) - 1, jax.nn.sigmoid(f)
    if kind == "least_squares":
        return r - 1, f
    if kind == "hinge":
        return -(r < 1).astype(r.dtype), (f > -1).astype(f.dtype)
    return -jnp.ones_like(r), jnp.ones_like(f)


def _g_term(kind, f):
    if kind == "minimax":
        return -_softplus(f)
    if kind == "non_saturating":
        return _softplus(-f)
    if kind == "least_squares":
        return 0.5 * (f - 1) ** 2
    return -f


def _g_slope(kind, f):
    if kind == "minimax":
        return -jax.nn.sigmoid(f)
    if kind == "non_saturating":
        return jax.nn.sigmoid(f) - 1
    if kind == "least_squares":
        return f - 1
    return -jnp.ones_like(f)


def _kinked(kind, sign):
    """The hinge's kinks (r = 1, f = -1), for examples that keep clear of them."""
    return (sign,) if kind == "hinge" else ()


# ====================================================================================== discriminator loss
def _gan_d_loss_check(real_logits, fake_logits, *, kind="non_saturating"):
    name = "gan_d_loss"
    _check_kind(name, kind)
    _check_logits(name, "real_logits", real_logits)
    _check_logits(name, "fake_logits", fake_logits)


def _gan_d_loss(real_logits, fake_logits, *, kind="non_saturating"):
    """The discriminator's loss (see the module's table): L = mean_i phi_r(r_i) + mean_j phi_f(f_j), r the
    logits on real data (N_r entries), f on generated data (N_f entries), for ``kind`` in minimax |
    non_saturating (both: phi_r(r) = softplus(-r), phi_f(f) = softplus(f)) | least_squares ((r-1)^2/2, f^2/2) |
    hinge (relu(1 - r), relu(1 + f)) | wasserstein (-r, f). Each term is a mean, so with g the cotangent:
        dreal_logits_i = g phi_r'(r_i) / N_r,     dfake_logits_j = g phi_f'(f_j) / N_f
    with phi' = sigma(r) - 1 and sigma(f) (softplus' = sigma), r - 1 and f, -1[r < 1] and 1[f > -1]
    (zero at the kinks r = 1 and f = -1, as relu's slope at 0), -1 and 1.
    Residuals: r and f.
    """
    pr, pf = _d_terms(kind, real_logits, fake_logits)
    return jnp.mean(pr) + jnp.mean(pf)


def _gan_d_loss_fwd(real_logits, fake_logits, *, kind="non_saturating"):
    return _gan_d_loss(real_logits, fake_logits, kind=kind), (real_logits, fake_logits)


def _gan_d_loss_bwd(res, g, *, kind="non_saturating"):
    r, f = res
    sr, sf = _d_slopes(kind, r, f)
    return (g * sr / r.size).astype(r.dtype), (g * sf / f.size).astype(f.dtype)


def _gan_d_loss_examples(key, dtype):
    k = keys(key, 2 * len(GAN_KINDS))
    out = []
    for j, kind in enumerate(GAN_KINDS):
        shapes = ((6,), (4,)) if j % 2 else ((5, 1), (5, 1))
        r = normal(k[2 * j], shapes[0], dtype, 2.0)
        f = normal(k[2 * j + 1], shapes[1], dtype, 2.0)
        r, f = away_from(r, _kinked(kind, 1.0), 0.1), away_from(f, _kinked(kind, -1.0), 0.1)
        out.append(Example((r, f), {"kind": kind}, f"{kind} {shapes[0]} {shapes[1]}"))
    return out


def _logits_shape(rng):
    return tuple(integer(rng, 1, 5) for _ in range(integer(rng, 0, 2)))


def _gan_d_loss_space(rng, dtype):
    kind = pick(rng, list(GAN_KINDS))
    scale = num(rng, 0.5, 3.0)
    r = arr(rng, _logits_shape(rng), dtype, scale, kinks=_kinked(kind, 1.0), margin=0.1)
    f = arr(rng, _logits_shape(rng), dtype, scale, kinks=_kinked(kind, -1.0), margin=0.1)
    return Example((r, f), {"kind": kind})


gan_d_loss = primitive("gan_d_loss", _gan_d_loss, _gan_d_loss_fwd, _gan_d_loss_bwd, examples=_gan_d_loss_examples,
                       space=_gan_d_loss_space, check=_gan_d_loss_check)


# ========================================================================================== generator loss
def _gan_g_loss_check(fake_logits, *, kind="non_saturating"):
    _check_kind("gan_g_loss", kind)
    _check_logits("gan_g_loss", "fake_logits", fake_logits)


def _gan_g_loss(fake_logits, *, kind="non_saturating"):
    """The generator's loss (see the module's table): L = mean_j psi(f_j), f the discriminator's logits on
    generated data (N entries), for ``kind`` in minimax (psi(f) = -softplus(f) = log(1 - sigma(f)), which
    saturates where D rejects the fakes) | non_saturating (softplus(-f) = -log sigma(f)) | least_squares
    ((f - 1)^2 / 2) | hinge and wasserstein (-f). With g the cotangent:
        dfake_logits_j = g psi'(f_j) / N,   psi' = -sigma(f), sigma(f) - 1, f - 1, -1.
    Residuals: f.
    """
    return jnp.mean(_g_term(kind, fake_logits))


def _gan_g_loss_fwd(fake_logits, *, kind="non_saturating"):
    return _gan_g_loss(fake_logits, kind=kind), (fake_logits,)


def _gan_g_loss_bwd(res, g, *, kind="non_saturating"):
    (f,) = res
    return ((g * _g_slope(kind, f) / f.size).astype(f.dtype),)


def _gan_g_loss_examples(key, dtype):
    k = keys(key, len(GAN_KINDS))
    return [Example((normal(k[j], (6,) if j % 2 else (4, 1), dtype, 2.0),), {"kind": kind}, kind)
            for j, kind in enumerate(GAN_KINDS)]


def _gan_g_loss_space(rng, dtype):
    return Example((arr(rng, _logits_shape(rng), dtype, num(rng, 0.5, 3.0)),), {"kind": pick(rng, list(GAN_KINDS))})


gan_g_loss = primitive("gan_g_loss", _gan_g_loss, _gan_g_loss_fwd, _gan_g_loss_bwd, examples=_gan_g_loss_examples,
                       space=_gan_g_loss_space, check=_gan_g_loss_check)


# ======================================================================================== gradient penalty
def _gradient_penalty_check(grads, *, target=1.0):
    name = "gradient_penalty"
    need_float(name, "grads", grads)
    if jnp.ndim(grads) == 0 or jnp.shape(grads)[0] == 0:
        raise ValueError(f"{name}: grads must be (N, ...), one gradient per example, got shape "
                         f"{tuple(jnp.shape(grads))}")


def _norms(grads):
    """||g_n||_2 of each example's gradient (N,), and g_n / ||g_n|| (0 where g_n = 0), as (N, 1, ...)."""
    flat = grads.reshape(grads.shape[0], -1)
    sq = jnp.sum(flat * flat, axis=1)
    nonzero = sq > 0
    norm = jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, sq, 1)), 0)
    inv = jnp.where(nonzero, 1 / jnp.where(nonzero, norm, 1), 0)
    return norm, grads * inv.reshape(-1, *(1,) * (grads.ndim - 1))


def _gradient_penalty(grads, *, target=1.0):
    """The WGAN-GP penalty (Gulrajani et al. 2017): grads (N, ...) holds one gradient g_n = dD/dx at each of N
    points (typically jax.grad of sum_n D(x_hat_n) w.r.t. x_hat), and
        P = 1/N sum_n (||g_n||_2 - target)^2.
    With d||g||/dg = g / ||g|| (taken as 0 at g = 0, as torch's norm) and c the cotangent:
        dgrads_n = c 2 (||g_n|| - target) g_n / (N ||g_n||).
    Differentiated once more (the critic's parameters through g_n), this backward is what a WGAN-GP step
    runs. Residuals: grads (the norms are recomputed).
    """
    norm, _ = _norms(grads)
    return jnp.mean((norm - target) ** 2)


def _gradient_penalty_fwd(grads, *, target=1.0):
    return _gradient_penalty(grads, target=target), (grads,)


def _gradient_penalty_bwd(res, c, *, target=1.0):
    (grads,) = res
    norm, unit = _norms(grads)
    scale = (2 * c / grads.shape[0]) * (norm - target)
    return ((scale.reshape(-1, *(1,) * (grads.ndim - 1)) * unit).astype(grads.dtype),)


def _gradient_penalty_examples(key, dtype):
    k = keys(key, 3)
    return [
        Example((normal(k[0], (4, 3), dtype, 0.7),), {}, "(4,3)"),
        Example((normal(k[1], (3, 4, 4, 1), dtype, 0.3),), {"target": 0.5}, "images, target 0.5"),
        Example((away_from(normal(k[2], (5,), dtype), (0.0,), 0.1),), {"target": 0.0}, "(5,), target 0"),
    ]


def _gradient_penalty_space(rng, dtype):
    shape = tuple(integer(rng, 1, 4) for _ in range(integer(rng, 1, 4)))
    return Example((arr(rng, shape, dtype, num(rng, 0.2, 2.0), kinks=(0.0,), margin=0.05),),
                   {"target": pick(rng, [1.0, 0.0, num(rng, 0.1, 2.0)])})


gradient_penalty = primitive("gradient_penalty", _gradient_penalty, _gradient_penalty_fwd, _gradient_penalty_bwd,
                             examples=_gradient_penalty_examples, space=_gradient_penalty_space,
                             check=_gradient_penalty_check)
