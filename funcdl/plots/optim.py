"""Figures for ``optim``: optimizer paths on 2-D test functions and learning-rate schedule curves.

``funcdl plot optimizers`` -> ``optimizer_paths.png`` (every optimizer on Rosenbrock, Beale, a saddle and an
ill-conditioned quadratic, one panel each) and ``optimizer_losses.png`` (the gap f - f* against the step).
``funcdl plot schedules`` -> ``schedules.png``.

Each optimizer gets, on each function, its own learning rate from a log grid (all grid values run at once:
``vmap`` over a traced learning rate): the smallest rate whose path ends (mean of log10(f - f*) over the last
fifth of the steps) within a factor 3 of the best rate's. So the figure compares every rule at a good setting
of its own rather than at one arbitrary rate, and prefers calm paths to lucky wild ones.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["TEST_FUNCTIONS", "optimizer_paths", "plot_optimizers", "plot_schedules"]


class TestFunction(NamedTuple):
    name: str
    f: object
    start: tuple
    minima: tuple            # points marked with a star
    f_min: float
    window: tuple            # (xmin, xmax, ymin, ymax)


def _rosenbrock(p):
    x, y = p[0], p[1]
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def _beale(p):
    x, y = p[0], p[1]
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def _saddle(p):
    # a saddle at the origin between two minima at (0, +-sqrt 2), f = -1 there
    x, y = p[0], p[1]
    return x**2 - y**2 + 0.25 * y**4


_C, _S = math.cos(math.pi / 6), math.sin(math.pi / 6)


def _ill_quadratic(p):
    # eigenvalues 1 and 50 along axes rotated by 30 degrees (condition number 50)
    u = _C * p[0] + _S * p[1]
    v = -_S * p[0] + _C * p[1]
    return 0.5 * (u**2 + 50 * v**2)


TEST_FUNCTIONS = (
    TestFunction("Rosenbrock", _rosenbrock, (-1.2, 1.0), ((1.0, 1.0),), 0.0, (-2.0, 2.0, -1.0, 3.0)),
    TestFunction("Beale", _beale, (1.0, 1.5), ((3.0, 0.5),), 0.0, (-1.0, 4.0, -1.5, 2.0)),
    TestFunction("saddle x^2 - y^2 + y^4/4", _saddle, (1.5, 1e-3), ((0.0, math.sqrt(2)), (0.0, -math.sqrt(2))),
                 -1.0, (-2.0, 2.0, -2.0, 2.0)),
    TestFunction("quadratic, condition 50", _ill_quadratic, (-1.5, 1.0), ((0.0, 0.0),), 0.0, (-2.0, 2.0, -1.5, 1.5)),
)

LR_GRID = tuple(float(v) for v in np.logspace(-4, 1, 16))


def optimizer_paths(name: str, fn: TestFunction, steps: int, lr_grid=LR_GRID):
    """Paths of optimizer ``name`` on ``fn`` for every learning rate of the grid; returns
    ``(best_lr, path (steps + 1, 2), gaps (steps + 1,))`` for the best rate."""
    from funcdl import optim

    grad = jax.grad(fn.f)

    def run(lr):
        opt = optim.create(name, lr)
        p0 = jnp.asarray(fn.start, jnp.float32)

        def step(carry, _):
            p, s = carry
            u, s = opt.update(grad(p), s, p)
            p = optim.apply_updates(p, u)
            return (p, s), p

        _, path = jax.lax.scan(step, (p0, opt.init(p0)), None, length=steps)
        return jnp.concatenate([p0[None], path])

    paths = np.asarray(jax.jit(jax.vmap(run))(jnp.asarray(lr_grid, jnp.float32)))
    values = np.asarray(jax.vmap(jax.vmap(fn.f))(jnp.asarray(paths)))
    gaps = np.maximum(values - fn.f_min, 1e-12)
    ok = np.all(np.isfinite(paths), axis=(1, 2)) & np.all(np.abs(paths) < 1e3, axis=(1, 2))
    # score: the mean log gap over the last fifth of the path (where it ends up, not how wildly it got there);
    # among the rates within a factor 3 of the best score, the smallest (the smoothest path)
    tail = max(1, (steps + 1) // 5)
    score = np.where(ok, np.mean(np.log10(np.where(np.isfinite(gaps), gaps, 1e30))[:, -tail:], axis=1), np.inf)
    best = int(np.min(np.nonzero(score <= np.min(score) + math.log10(3.0))[0]))
    return lr_grid[best], paths[best], gaps[best]


def _subplots(nrows, ncols, figsize, dpi):
    """Figure and axes not registered with pyplot: no global backend switch, safe inside notebooks."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    return fig, fig.subplots(nrows, ncols)


def plot_optimizers(out_dir, steps: int = 300, optimizers: str | None = None) -> list[Path]:
    """Write ``optimizer_paths.png`` and ``optimizer_losses.png`` into ``out_dir``."""
    from funcdl import optim

    names = [n.strip() for n in optimizers.split(",")] if optimizers else sorted(optim.OPTIMIZERS)
    for n in names:
        if n not in optim.OPTIMIZERS:
            raise ValueError(f"unknown optimizer {n!r}; valid optimizers: {', '.join(sorted(optim.OPTIMIZERS))}")
    if steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    colors = {n: cmap(i % 20) for i, n in enumerate(sorted(optim.OPTIMIZERS))}
    styles = {n: ("-", "--", ":")[i % 3] for i, n in enumerate(sorted(optim.OPTIMIZERS))}

    fig, axes = _subplots(2, 2, (14, 12), 110)
    fig_l, axes_l = _subplots(2, 2, (12, 9), 100)
    for ax, ax_l, fn in zip(axes.ravel(), axes_l.ravel(), TEST_FUNCTIONS, strict=True):
        x0, x1, y0, y1 = fn.window
        xs, ys = np.meshgrid(np.linspace(x0, x1, 300), np.linspace(y0, y1, 300))
        zs = np.asarray(fn.f(jnp.stack([jnp.asarray(xs), jnp.asarray(ys)])))      # f reads p[0], p[1]
        ax.contourf(xs, ys, np.log10(zs - fn.f_min + 1e-3), levels=30, cmap="Greys", alpha=0.6)
        ax.contour(xs, ys, np.log10(zs - fn.f_min + 1e-3), levels=15, colors="k", linewidths=0.3, alpha=0.5)
        for m in fn.minima:
            ax.plot(*m, "*", color="gold", ms=16, mec="k", zorder=5)
        ax.plot(*fn.start, "o", color="k", ms=6, zorder=5)
        for name in names:
            lr, path, gaps = optimizer_paths(name, fn, steps)
            label = f"{name} (lr {lr:.2g})"
            ax.plot(path[:, 0], path[:, 1], styles[name], color=colors[name], lw=1.4, label=label, alpha=0.9)
            ax.plot(path[-1, 0], path[-1, 1], "x", color=colors[name], ms=7)
            ax_l.semilogy(gaps, styles[name], color=colors[name], lw=1.3, label=label)
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.set_title(f"{fn.name}: {steps} steps from {fn.start}")
        ax.legend(fontsize=7, loc="lower right", ncol=2, framealpha=0.85)
        ax_l.set_title(fn.name)
        ax_l.set_xlabel("step")
        ax_l.set_ylabel("f - f*")
        ax_l.grid(alpha=0.3)
        ax_l.legend(fontsize=6, ncol=2)
    fig.suptitle("optimizer paths, each at its own learning rate from a log grid (o start, * minimum, x end)")
    fig.tight_layout()
    fig_l.suptitle("gap to the minimum along each path")
    fig_l.tight_layout()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "optimizer_paths.png", out_dir / "optimizer_losses.png"]
    fig.savefig(paths[0])
    fig_l.savefig(paths[1])
    return paths


def plot_schedules(out_dir, steps: int = 1000, warmup: int = 100) -> list[Path]:
    """Write ``schedules.png``: every ``optim.make_schedule`` name with the same (peak, total, warm-up, min), and
    the torch-style schedulers with their own arguments."""
    from funcdl import optim

    if steps < 2 or not 0 <= warmup < steps:
        raise ValueError(f"need steps >= 2 and 0 <= warmup < steps, got steps={steps}, warmup={warmup}")
    t = jnp.arange(steps)
    fig, (a, b) = _subplots(1, 2, (14, 5), 100)
    names = [n for n in optim.SCHEDULES if n != "warmup_cosine"]          # an alias of cosine
    for i, name in enumerate(names):
        a.plot(t, optim.make_schedule(name, 1.0, steps, warmup, 0.05)(t), ("-", "--", "-.", ":")[i % 4],
               label=name, lw=1.8)
    a.set_title(f"make_schedule(name, peak 1, total {steps}, warm-up {warmup}, min 0.05)")
    b_curves = {
        "one_cycle (OneCycleLR)": optim.one_cycle(1.0, steps),
        "one_cycle three_phase": optim.one_cycle(1.0, steps, three_phase=True),
        "one_cycle linear": optim.one_cycle(1.0, steps, anneal_strategy="linear", pct_start=0.5),
        f"cosine_restarts T_0={steps // 8}, T_mult=2": optim.cosine_restarts(1.0, max(1, steps // 8), 2, 0.0),
        f"step_decay every {steps // 4}, x0.5": optim.step_decay(1.0, max(1, steps // 4), 0.5),
        "exponential_decay 0.997": optim.exponential_decay(1.0, 0.997),
        "polynomial_decay power 0.5": optim.polynomial_decay(1.0, steps, 0.5),
    }
    for i, (label, sched) in enumerate(b_curves.items()):
        b.plot(t, sched(t), ("-", "--", "-.", ":")[i % 4], label=label, lw=1.8)
    b.set_title("torch.optim.lr_scheduler counterparts")
    for ax in (a, b):
        ax.set_xlabel("step")
        ax.set_ylabel("learning rate")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "schedules.png"
    fig.savefig(path)
    return [path]
