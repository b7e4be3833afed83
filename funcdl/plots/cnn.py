"""CNN pictures as PNG files: first-layer filters, feature maps of one input per layer, a confusion matrix.

All three take plain arrays (kernels HWIO, maps (H, W, C) or (L, C), labels), so they work for any model: a few
lines that apply its layers one by one give the maps (notebook 04 does it for the MNIST-1D CNN).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_filters(kernel, path, *, max_filters: int = 64, title: str = "first-layer filters") -> Path:
    """One tile per output channel of an HWIO kernel (grey for one input channel, RGB for three, else the mean
    over input channels); each tile is scaled to its own range. A 1-D kernel (K, C_in, C_out) is drawn as
    curves."""
    plt = _plt()
    k = np.asarray(kernel, dtype=np.float64)
    cout = min(k.shape[-1], max_filters)
    cols = min(8, cout)
    rows = math.ceil(cout / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.3 * rows + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= cout:
            continue
        f = k[..., i]
        if k.ndim == 3:                               # (K, C_in) curves
            ax.axis("on")
            ax.plot(f)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        img = f if f.shape[-1] == 3 else f.mean(axis=-1)
        img = (img - img.min()) / (img.max() - img.min() + 1e-12)
        ax.imshow(img, cmap=None if img.ndim == 3 else "gray", interpolation="nearest")
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_feature_maps(maps: dict, path, *, channels: int = 8, image=None) -> Path:
    """One row per layer (``{name: (H, W, C) or (L, C)}``, in order), the first ``channels`` channels."""
    plt = _plt()
    names = list(maps)
    extra = 1 if image is not None else 0
    fig, axes = plt.subplots(len(names), channels + extra, figsize=(1.3 * (channels + extra), 1.4 * len(names)),
                             squeeze=False)
    for r, name in enumerate(names):
        m = np.asarray(maps[name], dtype=np.float64)
        if extra:
            ax = axes[r, 0]
            ax.axis("off")
            if r == 0:
                im = np.asarray(image)
                ax.imshow(im[..., 0] if im.ndim == 3 else im, cmap="gray")
                ax.set_title("input", fontsize=8)
        for c in range(channels):
            ax = axes[r, c + extra]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= m.shape[-1]:
                ax.axis("off")
                continue
            if m.ndim == 2:
                ax.plot(m[:, c])
            else:
                ax.imshow(m[..., c], cmap="viridis", interpolation="nearest")
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """counts[i, j] = examples of class i predicted as j."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return counts


def plot_confusion(y_true, y_pred, num_classes: int, path, *, class_names=None, title=None) -> Path:
    plt = _plt()
    counts = confusion_matrix(y_true, y_pred, num_classes)
    acc = np.trace(counts) / max(1, counts.sum())
    fig, ax = plt.subplots(figsize=(0.5 * num_classes + 2, 0.5 * num_classes + 1.5))
    ax.imshow(counts, cmap="Blues")
    for i in range(num_classes):
        for j in range(num_classes):
            if counts[i, j]:
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if counts[i, j] > counts.max() / 2 else "black")
    labels = class_names or [str(i) for i in range(num_classes)]
    ax.set_xticks(range(num_classes), labels, rotation=90 if class_names else 0)
    ax.set_yticks(range(num_classes), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"confusion matrix (accuracy {acc:.2%})")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
