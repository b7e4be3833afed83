"""``funcdl plot KIND``: write figures as PNG files.

The kinds are a table, ``KINDS``: a name maps to the function that draws it (``"module:function"``, imported
only when that kind is asked for, so ``funcdl --help`` stays fast), a one-line help and the kind's own options.
The function is called as ``fn(out_dir=Path, **options)`` and returns the list of files it wrote.
To add a kind, add one entry (or call ``add_kind`` from your module before the parser is built):

    KINDS["filters"] = PlotKind("funcdl.plots.filters:plot_filters", "first-layer filters of a checkpoint",
                                (("--run", dict(required=True, help="run directory")),))
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import NamedTuple


class PlotKind(NamedTuple):
    target: str                       # "package.module:function"
    help: str
    options: tuple = ()               # ((flag, argparse keyword arguments), ...)


KINDS: dict[str, PlotKind] = {
    "optimizers": PlotKind(
        "funcdl.plots.optim:plot_optimizers",
        "paths of every optimizer on Rosenbrock, Beale, a saddle and an ill-conditioned quadratic",
        (("--steps", dict(type=int, default=300, help="steps per path (default 300)")),
         ("--optimizers", dict(default=None, help="comma-separated optimizer names (default: all)"))),
    ),
    "schedules": PlotKind(
        "funcdl.plots.optim:plot_schedules",
        "learning-rate schedule curves (every optim.make_schedule name, one-cycle, warm restarts)",
        (("--steps", dict(type=int, default=1000, help="total steps (default 1000)")),
         ("--warmup", dict(type=int, default=100, help="warm-up steps (default 100)"))),
    ),
    "gradflow": PlotKind(
        "funcdl.plots.dynamics:plot_gradflow_kind",
        "per-layer gradient norms, update/weight ratios, activation RMS and dead ReLUs of a run trained with "
        "--set track=gradflow",
        (("--run", dict(required=True, help="run directory (with gradflow.jsonl)")),),
    ),
}


def add_kind(name: str, target: str, help: str, options: tuple = ()) -> None:
    """Register a plot kind (see the module docstring)."""
    KINDS[name] = PlotKind(target, help, tuple(options))


def register(sub) -> None:
    p = sub.add_parser("plot", help="write figures (PNG): " + ", ".join(KINDS),
                       description="Write figures as PNG files into --out. Kinds: "
                       + "; ".join(f"{k}: {v.help}" for k, v in KINDS.items()))
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    for name, kind in KINDS.items():
        kp = kinds.add_parser(name, help=kind.help, description=kind.help)
        kp.add_argument("--out", default="plots", help="output folder (default ./plots)")
        dests = []
        for flag, kwargs in kind.options:
            action = kp.add_argument(flag, **kwargs)
            dests.append(action.dest)
        kp.set_defaults(func=run, plot_kind=name, plot_options=tuple(dests))


def run(args) -> int:
    os.environ.setdefault("MPLBACKEND", "Agg")
    kind = KINDS[args.plot_kind]
    module_name, _, fn_name = kind.target.partition(":")
    fn = getattr(importlib.import_module(module_name), fn_name)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = fn(out_dir=out, **{d: getattr(args, d) for d in args.plot_options})
    for path in paths:
        print(path)
    return 0
