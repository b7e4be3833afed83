"""Pictures of generative models as PNG files: a grid of samples, inputs over reconstructions, noisy / denoised /
clean triples, interpolations between latent codes, and a 2-D latent space coloured by class.

Every function takes images (N, H, W, C) or (N, H, W) with pixels in [0, 1] (values outside are clipped; map
standardised data back first), writes one PNG and returns its path. Images are drawn in grey (C = 1) or colour
(C = 3), one pixel per pixel, with a thin white border between tiles.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

__all__ = ["mosaic", "image_grid", "reconstructions", "triples", "interpolation", "latent_scatter"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _images(images, what: str) -> np.ndarray:
    x = np.asarray(images, np.float32)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3) or len(x) == 0:
        raise ValueError(f"{what}: expected images (N, H, W[, 1 or 3]) with N >= 1, got shape {np.shape(images)}")
    return np.clip(np.nan_to_num(x), 0.0, 1.0)


def mosaic(images, rows: int, cols: int, *, border: int = 1) -> np.ndarray:
    """One (rows*(H+border)+border, cols*(W+border)+border, C) array of the first rows*cols images, row by row
    (missing tiles stay white)."""
    x = _images(images, "mosaic")
    n, h, w, c = x.shape
    out = np.ones((rows * (h + border) + border, cols * (w + border) + border, c), np.float32)
    for i in range(min(n, rows * cols)):
        r, q = divmod(i, cols)
        top, left = border + r * (h + border), border + q * (w + border)
        out[top:top + h, left:left + w] = x[i]
    return out


def _save(tiles: np.ndarray, path, title=None, row_labels=None, scale: float = 0.04) -> Path:
    """Draw one mosaic at about ``scale`` inches per pixel; ``row_labels`` (one per row of tiles) go on the left."""
    plt = _plt()
    height, width = tiles.shape[:2]
    extra = 0.35 if title else 0.0
    fig = plt.figure(figsize=(max(width * scale, 1.5) + (0.9 if row_labels else 0.0), height * scale + extra))
    ax = fig.add_axes((0.9 / fig.get_figwidth() if row_labels else 0.0, 0.0, 1.0 - (0.9 / fig.get_figwidth()
                                                                                    if row_labels else 0.0),
                       1.0 - extra / fig.get_figheight()))
    ax.imshow(tiles[..., 0] if tiles.shape[-1] == 1 else tiles, cmap="gray", vmin=0.0, vmax=1.0,
              interpolation="nearest")
    ax.set_xticks([])
    if row_labels:
        step = height / len(row_labels)
        ax.set_yticks([step * (i + 0.5) for i in range(len(row_labels))], row_labels)
        ax.tick_params(left=False)
        for spine in ax.spines.values():
            spine.set_visible(False)
    else:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9, y=1.0 - 0.05 / fig.get_figheight())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def image_grid(images01, rows: int, cols: int, path, title=None) -> Path:
    """A rows x cols grid of the first rows*cols images (samples of a model)."""
    if int(rows) < 1 or int(cols) < 1:
        raise ValueError(f"image_grid: rows and cols must be >= 1, got {rows}x{cols}")
    return _save(mosaic(images01, int(rows), int(cols)), path, title)


def _stacked(sets: list, names: list, path, what: str, cols: int = 16) -> Path:
    """Sets of images of the same size drawn as alternating rows (set 1 row, set 2 row, ...), ``cols`` per row."""
    xs = [_images(s, what) for s in sets]
    if len({x.shape for x in xs}) != 1:
        raise ValueError(f"{what}: the image sets must have the same shape, got {[x.shape for x in xs]}")
    n, shape = len(xs[0]), xs[0].shape[1:]
    cols = min(cols, n)
    blocks = math.ceil(n / cols)
    tiles = np.ones((blocks, len(xs), cols, *shape), np.float32)      # white where the last block runs short
    for b in range(blocks):
        for j, x in enumerate(xs):
            chunk = x[b * cols:(b + 1) * cols]
            tiles[b, j, :len(chunk)] = chunk
    return _save(mosaic(tiles.reshape(-1, *shape), blocks * len(xs), cols), path, None, names * blocks)


def reconstructions(inputs, outputs, path) -> Path:
    """Inputs (top row) over the model's reconstructions of them (row below), 16 per row pair."""
    return _stacked([inputs, outputs], ["input", "output"], path, "reconstructions")


def triples(noisy, denoised, clean, path) -> Path:
    """A denoiser's noisy inputs, its outputs and the clean images, one row each (16 per block of three rows)."""
    return _stacked([noisy, denoised, clean], ["noisy", "denoised", "clean"], path, "triples")


def interpolation(rows_of_images, path) -> Path:
    """One row per interpolation: ``rows_of_images`` is (R, T, H, W[, C]) (or a list of R arrays of T images),
    the T steps from one end point to the other."""
    rows = [_images(r, "interpolation") for r in rows_of_images]
    if not rows or len({r.shape for r in rows}) != 1:
        raise ValueError("interpolation: expected R >= 1 rows of T images of the same shape, got "
                         f"{[r.shape for r in rows]}")
    t = len(rows[0])
    return _save(mosaic(np.concatenate(rows), len(rows), t), path)


def latent_scatter(z2d, labels, path) -> Path:
    """Points of a 2-D latent space (N, 2) coloured by their class (N,) ints, with a legend of the classes."""
    plt = _plt()
    z = np.asarray(z2d, np.float64)
    y = np.asarray(labels)
    if z.ndim != 2 or z.shape[1] != 2 or y.shape != (len(z),):
        raise ValueError(f"latent_scatter: expected z2d (N, 2) and labels (N,), got {z.shape} and {y.shape}")
    fig, ax = plt.subplots(figsize=(5.5, 5))
    cmap = plt.get_cmap("tab10")
    for i, k in enumerate(np.unique(y)):
        mask = y == k
        ax.scatter(z[mask, 0], z[mask, 1], s=3, alpha=0.6, color=cmap(i % 10), label=str(k), linewidths=0)
    ax.legend(markerscale=4, fontsize=8, loc="best", title="class", title_fontsize=8)
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    ax.set_title("latent space")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
