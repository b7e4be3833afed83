"""Figures of training dynamics and of depth: ``gradflow.png`` of a run tracked with ``--set track=gradflow``,
and the per-layer variance profiles of ``funcdl.explain.depth``.

``plot_gradflow(RUN)`` draws four panels against the step: the gradient norm of every weight leaf, its
update/weight ratio (the 1e-3 guide line of CS231n), the RMS of every activation layer and the share of dead
ReLU units. Lines go from dark (first layer) to light (last layer).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_gradflow", "plot_gradflow_kind", "plot_profiles"]

_NOT_WEIGHTS = ("b", "bias", "beta", "gamma", "scale", "shift")


def _weights(paths) -> list[int]:
    """Indices of the weight leaves (biases and normalisation parameters left out, unless nothing else is left)."""
    idx = [i for i, p in enumerate(paths) if p.rsplit("/", 1)[-1] not in _NOT_WEIGHTS]
    return idx or list(range(len(paths)))


def _lines(ax, steps, values, labels, *, log=False, title=""):
    from matplotlib import cm

    n = values.shape[1]
    colors = cm.viridis(np.linspace(0, 0.9, max(n, 1)))
    for j in range(n):
        col = values[:, j]
        if np.all(~np.isfinite(col)):
            continue
        ax.plot(steps, col, color=colors[j], lw=1.2, label=labels[j] if n <= 10 else None)
    if log and np.nanmin(np.where(values > 0, values, np.nan), initial=np.inf) < np.inf:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    if 0 < n <= 10:
        ax.legend(fontsize=6, ncol=2)


def plot_gradflow(run_dir, path=None) -> Path:
    """Write ``gradflow.png`` (into the run directory unless ``path`` is given); returns the file."""
    from matplotlib.figure import Figure

    from ..explain.dynamics import read_gradflow

    run_dir = Path(run_dir)
    g = read_gradflow(run_dir)
    w = _weights(g["params"])
    labels = [g["params"][i] for i in w]
    acts = [f"{i}:{a}" for i, a in enumerate(g["activations"])]
    fig = Figure(figsize=(11, 7.5), dpi=100)
    axes = fig.subplots(2, 2)
    _lines(axes[0, 0], g["steps"], g["grad_norm"][:, w], labels, log=True, title="gradient norm per weight")
    _lines(axes[0, 1], g["steps"], g["update_ratio"][:, w], labels, log=True,
           title="update / weight ratio per step")
    axes[0, 1].axhline(1e-3, color="k", ls="--", lw=0.8)
    if g["act_rms"].size:
        _lines(axes[1, 0], g["steps"], g["act_rms"], acts, log=True, title="activation RMS per layer")
        _lines(axes[1, 1], g["steps"], g["dead_relu"], acts, title="dead ReLU units (share)")
        top = np.nanmax(g["dead_relu"]) if np.isfinite(g["dead_relu"]).any() else 0.0
        axes[1, 1].set_ylim(-0.02, max(0.1, 1.1 * top))
    for ax in axes[1]:
        if not g["act_rms"].size:
            ax.text(0.5, 0.5, "no activation layer seen", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(f"gradient flow - {run_dir.name}")
    fig.tight_layout()
    out = Path(path) if path is not None else run_dir / "gradflow.png"
    fig.savefig(out)
    return out


def plot_gradflow_kind(out_dir, run: str) -> list[Path]:
    """``funcdl plot gradflow --run RUN --out DIR``: DIR/gradflow.png of a run tracked with track=gradflow."""
    return [plot_gradflow(run, Path(out_dir) / "gradflow.png")]


_DASHES = {"he": "-", "glorot": "--", "lecun": ":", "normal": "-.", "orthogonal": (0, (5, 1, 1, 1))}


def _style(label: str, i: int) -> dict:
    """One colour per activation, one dash per initialiser (labels "init/activation[+...]")."""
    from matplotlib import colormaps

    init, _, rest = label.partition("/")
    act = rest.split("+")[0]
    acts = ["relu", "tanh", "sigmoid", "gelu", "silu", "elu", "selu", "leaky_relu", "softplus"]
    colour = colormaps["tab10"](acts.index(act) if act in acts else 9 - i % 3)
    return {"color": colour, "ls": _DASHES.get(init, "-"), "lw": 1.4}


def plot_profiles(profiles: dict, path, *, title: str = "") -> Path:
    """Per-layer activation and gradient second moments of several configurations (``variance_profile``
    results, or their means over networks, keyed by labels such as ``he/relu``): two log-scale panels, layer on
    the x axis; colour = activation, dash = initialiser. With ``"theory_act"`` / ``"theory_grad"`` in a
    profile (the mean-field recursion run from the first layer) its prediction is drawn as grey dots."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), dpi=100)
    ax_a, ax_g = fig.subplots(1, 2)
    for i, (label, prof) in enumerate(profiles.items()):
        layers = np.arange(1, len(prof["act_var"]) + 1)
        style = _style(label, i)
        ax_a.plot(layers, prof["act_var"], label=label, **style)
        ax_g.plot(layers, prof["grad_var"], label=label, **style)
        for ax, key in ((ax_a, "theory_act"), (ax_g, "theory_grad")):
            if key in prof:
                ax.plot(layers, prof[key], ".", color="0.4", ms=3)
    for ax, what in ((ax_a, "activation input E[z_l^2]"), (ax_g, "gradient E[(dL/du_l)^2]")):
        ax.set_yscale("log")
        ax.set_xlabel("layer")
        ax.set_title(what, fontsize=10)
        ax.grid(alpha=0.3)
    ax_g.legend(fontsize=7, ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)
