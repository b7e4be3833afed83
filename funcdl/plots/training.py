"""Training curves of a run: ``loss.png`` (train and validation), ``accuracy.png``, ``lr.png``.

Reads ``metrics.jsonl`` of a run directory (records with ``split`` = ``train`` or ``val``, a ``step`` and the
metrics), so it also works on a run that is still going or was interrupted.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["read_metrics", "plot_run", "plot_curves"]


def read_metrics(run_dir) -> dict[str, list[dict]]:
    """``{"train": [records], "val": [records]}`` from ``run_dir/metrics.jsonl``."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics.jsonl in {run_dir}")
    out: dict[str, list[dict]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            out.setdefault(r.get("split", "train"), []).append(r)
    return out


def _figure():
    """A figure that is not registered with pyplot: no global backend switch, safe inside notebooks."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    return fig, fig.add_subplot()


def plot_curves(records: dict, metric: str, path, *, title: str = "", log_y: bool = False) -> Path | None:
    """One PNG with ``metric`` against step for every split that has it; None when no split has it."""
    series = {s: [(r["step"], r[metric]) for r in rs if metric in r] for s, rs in records.items()}
    series = {s: v for s, v in series.items() if v}
    if not series:
        return None
    fig, ax = _figure()
    styles = {"train": dict(lw=1, alpha=0.8), "val": dict(lw=2, marker="o", ms=3)}
    for split, pts in series.items():
        steps, values = zip(*pts, strict=True)
        ax.plot(steps, values, label=split, **styles.get(split, {}))
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    if log_y and all(v > 0 for pts in series.values() for _, v in pts):
        ax.set_yscale("log")
    ax.set_title(title or metric)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def plot_run(run_dir) -> list[Path]:
    """Write loss.png, accuracy.png (classification) and lr.png into ``run_dir``; return the files written."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    name = run_dir.name
    written = []
    for metric, fname, log_y in (("loss", "loss.png", True), ("accuracy", "accuracy.png", False),
                                 ("lr", "lr.png", False)):
        subset = {"train": records.get("train", [])} if metric == "lr" else records
        p = plot_curves(subset, metric, run_dir / fname, title=f"{metric} - {name}", log_y=log_y)
        if p is not None:
            written.append(p)
    return written
