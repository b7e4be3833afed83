"""Denoising diffusion: noise schedules, the forward process, the training losses and the samplers, for any
denoising network (``models/ddpm.py`` is one).

**The forward process** (Ho et al. 2020) adds Gaussian noise in T small steps, beta_1 .. beta_T:

    q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I),   so   q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)

with alpha_t = 1 - beta_t and abar_t = prod_{s <= t} alpha_s: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps in one
draw (``q_sample``). Arrays here index steps from 0, so ``alpha_bars[i]`` is abar_{i+1} of the paper.

**Schedules** (``make_schedule``): ``linear`` (beta from 1e-4 to 0.02, the DDPM paper's) and ``cosine`` (Nichol &
Dhariwal 2021: abar(t) = f(t) / f(0), f(t) = cos^2((t/T + s) / (1 + s) * pi/2), betas clipped at 0.999). The
signal-to-noise view: SNR(t) = abar_t / (1 - abar_t) (``snr``); the linear schedule spends many steps near
log SNR = -10, the cosine one spreads them evenly in between.

**Losses** (``diffusion_loss``). The ELBO of the reverse process is a sum over t of KL terms between Gaussians;
with the reverse mean parameterised through a noise prediction eps_theta(x_t, t), each term is a weighted
||eps - eps_theta(x_t, t)||^2, and dropping the weights gives the "simple" loss, E_{t, x_0, eps} ||eps - eps_theta||^2
(``prediction="eps"``). ``prediction="v"`` (Salimans & Ho 2022) regresses v = sqrt(abar) eps - sqrt(1 - abar) x_0
instead; from either output the sampler recovers both x_0 and eps (``split_prediction``).

**Samplers** (``sample``), all one rule (``ddim_step``, Song et al. 2021) on a descending sequence of steps
t -> s:

    x_0^ = (x_t - sqrt(1 - abar_t) eps^) / sqrt(abar_t)        (clipped to [-1, 1]; eps^ recomputed from it)
    sigma = eta * sqrt((1 - abar_s) / (1 - abar_t)) * sqrt(1 - abar_t / abar_s)
    x_s = sqrt(abar_s) x_0^ + sqrt(1 - abar_s - sigma^2) eps^ + sigma z

``eta = 0`` is DDIM's deterministic sampler (an Euler step of the probability-flow ODE in the variables
x / sqrt(abar) and sqrt((1 - abar) / abar)), usable with any number of steps. ``eta = 1`` on all T steps is DDPM's
ancestral sampler: then sigma^2 = (1 - abar_{t-1}) / (1 - abar_t) beta_t (the posterior variance beta~_t) and the
mean is the posterior mean of q(x_{t-1} | x_t, x_0^) (checked in tests/test_diffusion.py). ``sampler="ddpm"`` is
that case. **Classifier-free guidance** (Ho & Salimans 2021): a model trained with its class dropped (replaced by
a "null" class) 10% of the time predicts both eps(x, c) and eps(x, null), and the sampler uses
eps~ = (1 + w) eps(x, c) - w eps(x, null): ``guidance = w`` (0 is the plain conditional model).

The sampling loop is one compiled ``lax.scan`` over a chunk of steps; Python calls it chunk after chunk (the same
program each time) and prints progress in between.
"""

from __future__ import annotations

import functools
import math
import sys
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcdl.core import xla

__all__ = ["SCHEDULES", "PREDICTIONS", "SAMPLERS", "Schedule", "make_schedule", "snr", "q_sample", "v_target",
           "split_prediction", "diffusion_loss", "step_sequence", "ddim_step", "posterior", "sample"]

SCHEDULES = ("linear", "cosine")
PREDICTIONS = ("eps", "v")
SAMPLERS = ("ddpm", "ddim")


class Schedule(NamedTuple):
    betas: jnp.ndarray          # (T,) beta_1 .. beta_T
    alpha_bars: jnp.ndarray     # (T,) abar_1 .. abar_T

    @property
    def steps(self) -> int:
        return int(self.betas.shape[0])


def make_schedule(kind: str = "linear", steps: int = 1000, *, beta_start: float = 1e-4, beta_end: float = 0.02,
                  s: float = 0.008) -> Schedule:
    """The T-step noise schedule ``kind`` (``linear`` or ``cosine``; see the module docstring), computed in float64
    and stored in float32."""
    if kind not in SCHEDULES:
        raise ValueError(f"unknown noise schedule {kind!r}; use one of {', '.join(SCHEDULES)}")
    if int(steps) != steps or steps < 2:
        raise ValueError(f"a noise schedule needs at least 2 steps, got {steps!r}")
    if kind == "linear":
        if not 0.0 < beta_start < beta_end < 1.0:
            raise ValueError(f"linear schedule: need 0 < beta_start < beta_end < 1, got {beta_start}, {beta_end}")
        betas = np.linspace(beta_start, beta_end, steps, dtype=np.float64)
    else:
        t = np.arange(steps + 1, dtype=np.float64) / steps
        f = np.cos((t + s) / (1 + s) * math.pi / 2) ** 2
        betas = np.clip(1.0 - f[1:] / f[:-1], 0.0, 0.999)
    abar = np.cumprod(1.0 - betas)
    return Schedule(jnp.asarray(betas, jnp.float32), jnp.asarray(abar, jnp.float32))


def snr(schedule: Schedule):
    """SNR_t = abar_t / (1 - abar_t), (T,)."""
    return schedule.alpha_bars / (1.0 - schedule.alpha_bars)


def _coef(values, t, x):
    """values[t] (t of shape (N,)) broadcast against x (N, ...)."""
    return values[t].reshape(t.shape + (1,) * (x.ndim - t.ndim)).astype(x.dtype)


def q_sample(schedule: Schedule, x0, t, noise):
    """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, one t per example (t: (N,) ints in 0..T-1)."""
    abar = _coef(schedule.alpha_bars, t, x0)
    return jnp.sqrt(abar) * x0 + jnp.sqrt(1.0 - abar) * noise


def v_target(schedule: Schedule, x0, t, noise):
    """v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0."""
    abar = _coef(schedule.alpha_bars, t, x0)
    return jnp.sqrt(abar) * noise - jnp.sqrt(1.0 - abar) * x0


def split_prediction(schedule: Schedule, x_t, t, out, prediction: str = "eps", *, clip: bool = True):
    """(x_0^, eps^) from the network's output ``out`` at x_t. With ``clip`` x_0^ is clipped to [-1, 1] and eps^
    recomputed from it, so the pair stays consistent with x_t."""
    abar = _coef(schedule.alpha_bars, t, x_t)
    a, b = jnp.sqrt(abar), jnp.sqrt(1.0 - abar)
    if prediction == "eps":
        x0 = (x_t - b * out) / a
    elif prediction == "v":                    # x_0 = a x_t - b v   (a^2 + b^2 = 1)
        x0 = a * x_t - b * out
    else:
        raise ValueError(f"unknown prediction {prediction!r}; use one of {', '.join(PREDICTIONS)}")
    if clip:
        x0 = jnp.clip(x0, -1.0, 1.0)
    return x0, (x_t - a * x0) / b


def diffusion_loss(denoise: Callable, schedule: Schedule, x0, key, *, prediction: str = "eps"):
    """The simple loss: t ~ U{0..T-1}, eps ~ N(0, I) per example, mean squared error of ``denoise(x_t, t)``
    against eps (or v). Returns ``(loss, per_example)``, per_example (N,) the mean over each example's pixels."""
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; use one of {', '.join(PREDICTIONS)}")
    kt, kn = jax.random.split(key)
    t = jax.random.randint(kt, (x0.shape[0],), 0, schedule.steps)
    noise = jax.random.normal(kn, x0.shape, x0.dtype)
    target = noise if prediction == "eps" else v_target(schedule, x0, t, noise)
    err = jnp.square(denoise(q_sample(schedule, x0, t, noise), t) - target)
    per_example = jnp.mean(err.reshape(err.shape[0], -1), axis=1)
    return jnp.mean(per_example), per_example


def step_sequence(total: int, steps: int) -> np.ndarray:
    """``steps`` step indices from T-1 down to 0, evenly spaced (DDIM's "uniform" skipping, rounded); all of them
    when ``steps == total``."""
    if int(steps) != steps or not 1 <= steps <= total:
        raise ValueError(f"sampling steps must be a whole number from 1 to the schedule's {total}, got {steps!r}")
    seq = np.unique(np.round(np.linspace(0, total - 1, int(steps))).astype(np.int32))
    return seq[::-1].copy()


def ddim_step(schedule: Schedule, x_t, t, s, eps, *, eta: float, noise, x0=None):
    """One step t -> s (s < t; s = -1 is the end, abar = 1) of the rule in the module docstring, from the
    prediction eps^ (and x_0^ when given, else from eps^). t and s are scalars."""
    abar_t = schedule.alpha_bars[t]
    abar_s = jnp.where(s >= 0, schedule.alpha_bars[jnp.maximum(s, 0)], 1.0)
    if x0 is None:
        x0 = (x_t - jnp.sqrt(1.0 - abar_t) * eps) / jnp.sqrt(abar_t)
    sigma = eta * jnp.sqrt((1.0 - abar_s) / (1.0 - abar_t) * (1.0 - abar_t / abar_s))
    direction = jnp.sqrt(jnp.maximum(1.0 - abar_s - sigma ** 2, 0.0))
    return jnp.sqrt(abar_s) * x0 + direction * eps + sigma * noise


def posterior(schedule: Schedule, x_t, x0, t):
    """Mean and variance of q(x_{t-1} | x_t, x_0) (DDPM eq. 7), t >= 1 a scalar: the reference the ancestral
    sampler is checked against."""
    beta, abar = schedule.betas[t], schedule.alpha_bars[t]
    abar_prev = schedule.alpha_bars[t - 1]
    mean = (jnp.sqrt(abar_prev) * beta / (1 - abar)) * x0 + (jnp.sqrt(1 - beta) * (1 - abar_prev) / (1 - abar)) * x_t
    return mean, (1 - abar_prev) / (1 - abar) * beta


def _chunks(seq: np.ndarray, chunk: int):
    """The step pairs (t, s) padded with t = -1 (a step that does nothing) to whole chunks of equal length."""
    t = np.asarray(seq, np.int32)
    s = np.concatenate([t[1:], [-1]]).astype(np.int32)
    n_chunks = max(1, math.ceil(len(t) / chunk))
    length = math.ceil(len(t) / n_chunks)
    pad = n_chunks * length - len(t)
    t, s = np.concatenate([t, -np.ones(pad, np.int32)]), np.concatenate([s, -np.ones(pad, np.int32)])
    return t.reshape(n_chunks, length), s.reshape(n_chunks, length)


def sample(denoise: Callable, params, schedule: Schedule, shape: tuple, key, *, cond=None, steps: int | None = None,
           sampler: str = "ddim", eta: float = 0.0, prediction: str = "eps", clip: bool = True, chunk: int = 50,
           progress: bool | str = False):
    """Samples of shape ``shape`` from the network ``denoise(params, x_t, t, cond) -> output`` (t of shape (N,);
    ``cond`` any pytree of arrays the network reads, such as class labels and a guidance weight), starting from
    pure noise.

    ``sampler="ddpm"``: ancestral sampling over all T steps (``steps`` must be None or T; eta = 1).
    ``sampler="ddim"``: ``steps`` evenly spaced steps (default 50) with ``eta`` (0 deterministic, 1 DDPM-like).
    The steps run ``chunk`` at a time inside one compiled ``lax.scan`` (compiled once per denoise, shape and
    chunk length, and reused); ``progress`` (True or a label) prints a line per chunk to stderr. Returns x_0."""
    total = schedule.steps
    if sampler == "ddpm":
        if steps not in (None, total):
            raise ValueError(f"the ddpm sampler runs all {total} steps of the schedule; use --sampler ddim for "
                             f"{steps} steps")
        steps, eta = total, 1.0
    elif sampler == "ddim":
        steps = 50 if steps is None else steps
    else:
        raise ValueError(f"unknown sampler {sampler!r}; use one of {', '.join(SAMPLERS)}")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1], got {eta}")
    ts, ss = _chunks(step_sequence(total, steps), chunk)
    k0, key = jax.random.split(key)
    x = jax.random.normal(k0, shape, jnp.float32)
    raw = _chunk_body(denoise, tuple(shape), prediction, bool(clip))
    example = (params, schedule, cond, x, jnp.asarray(ts[0]), jnp.asarray(ss[0]), jnp.float32(eta), key)
    if raw not in _CONVOLVES:                 # traced once per network and shape, not run
        _CONVOLVES[raw] = xla.has_convolution(raw, *example)
    run = _compiled(raw, _CONVOLVES[raw])
    start = time.perf_counter()
    for i in range(len(ts)):
        x = run(params, schedule, cond, x, jnp.asarray(ts[i]), jnp.asarray(ss[i]), jnp.float32(eta),
                jax.random.fold_in(key, i))
        if progress:
            x.block_until_ready()
            label = progress if isinstance(progress, str) else f"{sampler} {steps} steps"
            done = min((i + 1) * ts.shape[1], steps)
            print(f"\r{label}: {done}/{steps} steps, {time.perf_counter() - start:.1f} s", end="",
                  file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr, flush=True)
    return x


_CONVOLVES: dict = {}


@functools.lru_cache(maxsize=64)
def _chunk_body(denoise, shape, prediction, clip):
    """``run(params, schedule, cond, x, ts, ss, eta, key)``: the scan over one chunk of (t, s) pairs (a pair with
    t = -1 leaves x as it is)."""
    n = shape[0]

    def run(params, schedule, cond, x, ts, ss, eta, key):
        def one(x, pair):
            t, s, k = pair

            def go(x):
                tb = jnp.full((n,), t, jnp.int32)
                x0, eps = split_prediction(schedule, x, tb, denoise(params, x, tb, cond), prediction, clip=clip)
                noise = jax.random.normal(k, shape, x.dtype)
                return ddim_step(schedule, x, t, s, eps, eta=eta, noise=noise, x0=x0).astype(x.dtype)

            return jax.lax.cond(t >= 0, go, lambda x: x, x), None

        keys = jax.random.split(key, ts.shape[0])
        return jax.lax.scan(one, x, (ts, ss, keys))[0]

    return run


@functools.lru_cache(maxsize=64)
def _compiled(run, convolutional: bool):
    """``run`` jitted, with the CPU convolution options of ``funcdl.core.xla`` when it convolves."""
    return jax.jit(run, compiler_options=xla.compiler_options(run, ynn=True) if convolutional else None)
