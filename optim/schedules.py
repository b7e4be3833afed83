"""Learning-rate schedules: pure functions ``step -> lr`` built from jax.numpy, so they work on a traced step
under ``jit``, on a whole array of steps at once (``schedule(jnp.arange(T))``) and under ``vmap``.

Pass one as any optimizer's ``learning_rate``; the optimizer calls it with the number of updates done so far
(0 for the first update) and stores the value in its state (``optim.current_lr(state)``).
``make_schedule(name, peak_lr, total_steps, warmup_steps, min_lr)`` builds one by name (the command line's
``--schedule``); ``SCHEDULES`` lists the names.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

__all__ = [
    "constant", "linear", "piecewise_constant", "step_decay", "multistep_decay", "exponential_decay",
    "polynomial_decay", "cosine_decay", "warmup_cosine", "one_cycle", "cosine_restarts", "join_schedules",
    "SCHEDULES", "make_schedule",
]

Schedule = Callable[[jax.Array], jax.Array]


def _t(step):
    return jnp.asarray(step, dtype=jax.dtypes.canonicalize_dtype(jnp.float64))


def _positive_int(name, arg, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}: {arg} must be a positive int, got {value!r}")


def _non_negative(name, arg, value):
    if not float(value) >= 0:
        raise ValueError(f"{name}: {arg} must be >= 0, got {value}")


def constant(value) -> Schedule:
    """``lr_t = value``."""
    _non_negative("constant", "value", value)
    return lambda step: jnp.full(jnp.shape(step), value, _t(step).dtype)


def linear(init_value, end_value, transition_steps: int) -> Schedule:
    """Straight line from ``init_value`` at t = 0 to ``end_value`` at t = transition_steps, then flat:
    ``lr_t = init + (end - init) * min(t, T) / T``."""
    _positive_int("linear", "transition_steps", transition_steps)

    def schedule(step):
        frac = jnp.clip(_t(step) / transition_steps, 0.0, 1.0)
        return init_value + (end_value - init_value) * frac

    return schedule


def piecewise_constant(values: Sequence[float], boundaries: Sequence[int]) -> Schedule:
    """``lr_t = values[i]`` for ``boundaries[i-1] <= t < boundaries[i]`` (len(values) = len(boundaries) + 1)."""
    if len(values) != len(boundaries) + 1:
        raise ValueError(f"piecewise_constant: need len(values) == len(boundaries) + 1, got {len(values)} values "
                         f"and {len(boundaries)} boundaries")
    if list(boundaries) != sorted(boundaries):
        raise ValueError(f"piecewise_constant: boundaries must be increasing, got {list(boundaries)}")
    vals = jnp.asarray(values, dtype=_t(0).dtype)
    bounds = jnp.asarray(boundaries, dtype=_t(0).dtype)

    def schedule(step):
        index = jnp.sum(_t(step)[..., None] >= bounds, axis=-1) if len(boundaries) else jnp.zeros(jnp.shape(step), int)
        return vals[index]

    return schedule


def step_decay(init_value, step_size: int, gamma=0.1) -> Schedule:
    """``torch.optim.lr_scheduler.StepLR``: ``lr_t = init * gamma^floor(t / step_size)``."""
    _positive_int("step_decay", "step_size", step_size)
    return lambda step: init_value * gamma ** jnp.floor(_t(step) / step_size)


def multistep_decay(init_value, milestones: Sequence[int], gamma=0.1) -> Schedule:
    """``torch.optim.lr_scheduler.MultiStepLR``: multiply by ``gamma`` at each milestone."""
    return piecewise_constant([init_value * gamma**i for i in range(len(milestones) + 1)], sorted(milestones))


def exponential_decay(init_value, gamma, transition_steps: int = 1, staircase=False, end_value=None) -> Schedule:
    """``lr_t = init * gamma^(t / transition_steps)`` (exponent floored when ``staircase``), never below
    ``end_value``. With transition_steps 1 this is ``torch.optim.lr_scheduler.ExponentialLR``."""
    _positive_int("exponential_decay", "transition_steps", transition_steps)
    if not 0 < gamma:
        raise ValueError(f"exponential_decay: gamma must be > 0, got {gamma}")

    def schedule(step):
        e = _t(step) / transition_steps
        lr = init_value * gamma ** (jnp.floor(e) if staircase else e)
        return lr if end_value is None else jnp.maximum(lr, end_value)

    return schedule


def polynomial_decay(init_value, total_steps: int, power=1.0, end_value=0.0) -> Schedule:
    """``torch.optim.lr_scheduler.PolynomialLR`` with an end value:
    ``lr_t = (init - end) * (1 - min(t, T) / T)^power + end``."""
    _positive_int("polynomial_decay", "total_steps", total_steps)
    return lambda step: (init_value - end_value) * (1 - jnp.minimum(_t(step), total_steps) / total_steps) ** power \
        + end_value


def cosine_decay(init_value, total_steps: int, min_value=0.0) -> Schedule:
    """``torch.optim.lr_scheduler.CosineAnnealingLR`` (closed form), held at ``min_value`` after T:
    ``lr_t = min + (init - min) * (1 + cos(pi * min(t, T) / T)) / 2``."""
    _positive_int("cosine_decay", "total_steps", total_steps)

    def schedule(step):
        frac = jnp.minimum(_t(step), total_steps) / total_steps
        return min_value + (init_value - min_value) * 0.5 * (1 + jnp.cos(math.pi * frac))

    return schedule


def warmup_cosine(peak_value, warmup_steps: int, total_steps: int, min_value=0.0) -> Schedule:
    """nanoGPT's ``get_lr``: linear warm-up, then cosine decay to ``min_value`` at ``total_steps``, then flat.

        t < W:       lr_t = peak * (t + 1) / (W + 1)
        W <= t <= T: lr_t = min + (peak - min) * (1 + cos(pi * (t - W) / (T - W))) / 2
        t > T:       lr_t = min
    """
    if not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"warmup_cosine: warmup_steps must be an int >= 0, got {warmup_steps!r}")
    _positive_int("warmup_cosine", "total_steps", total_steps)
    if warmup_steps >= total_steps:
        raise ValueError(f"warmup_cosine: warmup_steps ({warmup_steps}) must be < total_steps ({total_steps})")

    def schedule(step):
        t = _t(step)
        warm = peak_value * (t + 1) / (warmup_steps + 1)
        ratio = jnp.clip((t - warmup_steps) / (total_steps - warmup_steps), 0.0, 1.0)
        decay = min_value + (peak_value - min_value) * 0.5 * (1 + jnp.cos(math.pi * ratio))
        return jnp.where(t < warmup_steps, warm, decay)

    return schedule


def one_cycle(max_lr, total_steps: int, pct_start=0.3, anneal_strategy="cos", div_factor=25.0,
              final_div_factor=1e4, three_phase=False) -> Schedule:
    """``torch.optim.lr_scheduler.OneCycleLR`` (Smith & Topin 2017), step for step (learning rate only).

        initial = max_lr / div_factor          min = initial / final_div_factor
        phases (end step, from -> to):
            two-phase:   (pct_start T - 1: initial -> max_lr),  (T - 1: max_lr -> min)
            three-phase: (pct_start T - 1: initial -> max_lr),  (2 pct_start T - 2: max_lr -> initial),
                         (T - 1: initial -> min)
        in a phase from step s to e:  pct = (t - s) / (e - s)
            cos:     lr = to + (from - to) * (1 + cos(pi * pct)) / 2
            linear:  lr = from + (to - from) * pct
    """
    _positive_int("one_cycle", "total_steps", total_steps)
    if not 0 <= pct_start <= 1:
        raise ValueError(f"one_cycle: pct_start must lie in [0, 1], got {pct_start}")
    if anneal_strategy not in ("cos", "linear"):
        raise ValueError(f"one_cycle: anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
    initial = max_lr / div_factor
    low = initial / final_div_factor
    if three_phase:
        phases = [(float(pct_start * total_steps) - 1, initial, max_lr),
                  (float(2 * pct_start * total_steps) - 2, max_lr, initial),
                  (total_steps - 1.0, initial, low)]
    else:
        phases = [(float(pct_start * total_steps) - 1, initial, max_lr), (total_steps - 1.0, max_lr, low)]

    def anneal(start, end, pct):
        if anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (jnp.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def schedule(step):
        t = _t(step)
        lr = jnp.zeros_like(t)
        done = jnp.zeros(t.shape, bool)
        start_step = 0.0
        for i, (end_step, lo, hi) in enumerate(phases):
            here = (t <= end_step) | (i == len(phases) - 1)
            pct = (t - start_step) / (end_step - start_step)
            lr = jnp.where(here & ~done, anneal(lo, hi, pct), lr)
            done = done | here
            start_step = end_step
        return lr

    return schedule


def cosine_restarts(base_lr, T_0: int, T_mult: int = 1, eta_min=0.0) -> Schedule:
    """``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts`` (SGDR, Loshchilov & Hutter 2017):
    cosine decay over periods T_0, T_0 T_mult, T_0 T_mult^2, ..., restarting at ``base_lr`` each time.

        cycle n starts at S_n = T_0 (T_mult^n - 1) / (T_mult - 1)   (S_n = n T_0 when T_mult = 1)
        T_cur = t - S_n,  T_i = T_0 T_mult^n
        lr_t = eta_min + (base_lr - eta_min) * (1 + cos(pi T_cur / T_i)) / 2
    """
    _positive_int("cosine_restarts", "T_0", T_0)
    _positive_int("cosine_restarts", "T_mult", T_mult)

    def start_of(n):
        return T_0 * n if T_mult == 1 else T_0 * (T_mult**n - 1) / (T_mult - 1)

    def schedule(step):
        t = _t(step)
        if T_mult == 1:
            n = jnp.floor(t / T_0)
        else:
            n = jnp.floor(jnp.log(t / T_0 * (T_mult - 1) + 1) / math.log(T_mult))
            # exact integer arithmetic can disagree with the float log at a cycle boundary: fix by one
            n = jnp.where(t < start_of(n), n - 1, n)
            n = jnp.where(t >= start_of(n + 1), n + 1, n)
        t_cur = t - start_of(n)
        t_i = T_0 * jnp.asarray(T_mult, t.dtype) ** n
        return eta_min + (base_lr - eta_min) * (1 + jnp.cos(math.pi * t_cur / t_i)) / 2

    return schedule


def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """Schedule i runs from ``boundaries[i-1]`` to ``boundaries[i]``, called with the step counted from its
    own start: ``lr_t = s_i(t - boundaries[i-1])`` (e.g. a warm-up joined to a decay)."""
    if len(schedules) != len(boundaries) + 1:
        raise ValueError(f"join_schedules: need len(schedules) == len(boundaries) + 1, got {len(schedules)} "
                         f"and {len(boundaries)}")
    if list(boundaries) != sorted(boundaries):
        raise ValueError(f"join_schedules: boundaries must be increasing, got {list(boundaries)}")

    def schedule(step):
        t = jnp.asarray(step)
        out = schedules[0](t)
        for b, s in zip(boundaries, schedules[1:], strict=True):
            out = jnp.where(t >= b, s(jnp.maximum(t - b, 0)), out)
        return out

    return schedule


# ---- by name, for the command line ---------------------------------------------------------------------

def _with_warmup(main: Callable[[int], Schedule], peak_lr, total_steps, warmup_steps) -> Schedule:
    """nanoGPT's warm-up ``peak (t + 1) / (W + 1)`` for t < W, then ``main(T - W)`` counted from W."""
    if warmup_steps == 0:
        return main(total_steps)
    warm = lambda step: peak_lr * (_t(step) + 1) / (warmup_steps + 1)
    return join_schedules([warm, main(total_steps - warmup_steps)], [warmup_steps])


def _build_constant(peak_lr, total_steps, warmup_steps, min_lr):
    return _with_warmup(lambda n: constant(peak_lr), peak_lr, total_steps, warmup_steps)


def _build_cosine(peak_lr, total_steps, warmup_steps, min_lr):
    return warmup_cosine(peak_lr, warmup_steps, total_steps, min_lr)


def _build_linear(peak_lr, total_steps, warmup_steps, min_lr):
    return _with_warmup(lambda n: linear(peak_lr, min_lr, n), peak_lr, total_steps, warmup_steps)


def _build_exponential(peak_lr, total_steps, warmup_steps, min_lr):
    # from peak to min_lr (or peak / 100 when min_lr is 0) over the decay steps
    end = min_lr if min_lr > 0 else peak_lr / 100
    return _with_warmup(lambda n: exponential_decay(peak_lr, (end / peak_lr) ** (1 / n), end_value=end),
                        peak_lr, total_steps, warmup_steps)


def _build_step(peak_lr, total_steps, warmup_steps, min_lr, milestones=(0.5, 0.75), gamma=0.1):
    def main(n):
        decay = multistep_decay(peak_lr, [int(m * n) for m in milestones], gamma)
        return lambda step: jnp.maximum(decay(step), min_lr)
    return _with_warmup(main, peak_lr, total_steps, warmup_steps)


def _build_polynomial(peak_lr, total_steps, warmup_steps, min_lr, power=2.0):
    return _with_warmup(lambda n: polynomial_decay(peak_lr, n, power, min_lr), peak_lr, total_steps, warmup_steps)


def _build_one_cycle(peak_lr, total_steps, warmup_steps, min_lr, div_factor=25.0, three_phase=False):
    pct = warmup_steps / total_steps if warmup_steps else 0.3
    final_div = (peak_lr / div_factor) / min_lr if min_lr > 0 else 1e4
    return one_cycle(peak_lr, total_steps, pct_start=pct, div_factor=div_factor, final_div_factor=final_div,
                     three_phase=three_phase)


def _build_cosine_restarts(peak_lr, total_steps, warmup_steps, min_lr, cycles=4, T_mult=1):
    def main(n):
        T_0 = max(1, n // cycles) if T_mult == 1 else max(1, round(n * (T_mult - 1) / (T_mult**cycles - 1)))
        return cosine_restarts(peak_lr, T_0, T_mult, min_lr)
    return _with_warmup(main, peak_lr, total_steps, warmup_steps)


SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "constant": _build_constant,
    "cosine": _build_cosine,
    "warmup_cosine": _build_cosine,
    "linear": _build_linear,
    "exponential": _build_exponential,
    "step": _build_step,
    "polynomial": _build_polynomial,
    "one_cycle": _build_one_cycle,
    "cosine_restarts": _build_cosine_restarts,
}


def make_schedule(name: str, peak_lr, total_steps: int, warmup_steps: int = 0, min_lr=0.0, **options) -> Schedule:
    """A schedule by name with the command line's four numbers (every schedule warms up linearly over
    ``warmup_steps`` as nanoGPT does, then runs its decay over the remaining steps down to ``min_lr``):

        constant         peak after warm-up
        cosine           nanoGPT's warm-up + cosine to min_lr  (alias warmup_cosine)
        linear           straight line to min_lr
        exponential      geometric decay to min_lr (peak/100 if min_lr is 0)
        step             x gamma (0.1) at milestones (0.5, 0.75) of the decay, not below min_lr
        polynomial       (1 - t/T)^power (2) to min_lr
        one_cycle        OneCycleLR; warm-up fraction = warmup_steps / total_steps (0.3 if 0)
        cosine_restarts  SGDR with `cycles` (4) restarts, T_mult (1)

    ``options`` go to the builder (e.g. ``gamma``, ``power``, ``cycles``).
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; valid schedules: {', '.join(SCHEDULES)}")
    _positive_int(name, "total_steps", total_steps)
    if not isinstance(warmup_steps, int) or not 0 <= warmup_steps < total_steps:
        raise ValueError(f"{name}: warmup_steps must be an int in [0, total_steps={total_steps}), got {warmup_steps!r}")
    _non_negative(name, "peak_lr", peak_lr)
    _non_negative(name, "min_lr", min_lr)
    if min_lr > peak_lr:
        raise ValueError(f"{name}: min_lr ({min_lr}) must not exceed peak_lr ({peak_lr})")
    try:
        return SCHEDULES[name](peak_lr, total_steps, warmup_steps, min_lr, **options)
    except TypeError as err:
        raise TypeError(f"schedule {name!r}: {err}") from None


def create(name: str, learning_rate, total_steps: int, warmup_steps: int = 0, min_lr=0.0, **options) -> Schedule:
    """``make_schedule`` with the keyword names the training loop uses (``learning_rate`` is the peak)."""
    return make_schedule(name, learning_rate, total_steps, warmup_steps, min_lr, **options)
