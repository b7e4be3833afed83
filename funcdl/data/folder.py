"""Your own images: a folder with one subfolder per class, as a classification data set (``--data folder:PATH``).

    photos/
      cats/  a.jpg b.png ...
      dogs/  c.jpeg ...

``load_image_folder("~/photos")`` decodes every PNG/JPEG file with Pillow (converted to RGB, or to grey with
``channels=1``), cuts the central square and resizes it to ``image_size`` (bilinear), and returns NHWC float32
images standardised per channel with the training split's statistics. Classes are the subfolder names in sorted
order (``extras["classes"]``). Every class is split on its own (stratified) into train / val / test by ``seed``:
``round(val_fraction n)`` and ``round(test_fraction n)`` images of a class of n, at least one each when the class
has three images or more.

Decoding is the slow part, so the decoded uint8 arrays are cached in ``funcdl.data.cache_dir("folder")``, in a
file named by a hash of the folder's path, its file list with every file's size and modification time, the
image size and the channels: adding, removing or editing an image makes a new cache entry. The cache file is
written to a temporary name and renamed (atomic), so a killed run never leaves a half-written cache.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from .base import Dataset, standardize
from .download import cache_dir

__all__ = ["load_image_folder", "scan_folder", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _size_pair(image_size) -> tuple[int, int]:
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, int) and s >= 1 for s in size):
        raise ValueError(f"folder: image_size must be a positive int or (height, width), got {image_size!r}")
    return size


def scan_folder(root: Path) -> tuple[tuple, list[tuple[Path, int]]]:
    """``(class names, [(file, class index), ...])`` of an image folder; one-line ``ValueError``s for what is
    not one."""
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise ValueError(f"folder:{root} {what}; give a folder with one subfolder of PNG/JPEG images per class")
    classes = tuple(sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")))
    if len(classes) < 2:
        raise ValueError(f"folder:{root} has {len(classes)} class subfolder(s) ({', '.join(classes) or 'none'}); a "
                         "classifier needs at least 2: put each class's images in its own subfolder")
    files = []
    for label, name in enumerate(classes):
        found = sorted(f for f in (root / name).rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                       and not f.name.startswith("."))
        if not found:
            raise ValueError(f"folder:{root}: class folder {name!r} holds no PNG/JPEG images "
                             f"({', '.join(IMAGE_SUFFIXES)}); add some or remove the folder")
        files += [(f, label) for f in found]
    return classes, files


def _decode(path: Path, size: tuple[int, int], channels: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("RGB" if channels == 3 else "L")
            w, h = img.size
            side = min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            img = img.crop((left, top, left + side, top + side)).resize((size[1], size[0]), Image.BILINEAR)
            arr = np.asarray(img, np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"folder: cannot decode {path} as an image ({type(err).__name__}: {err}); "
                         "remove or replace that file") from None
    return arr if channels == 3 else arr[..., None]


def _cache_path(root: Path, files, size, channels) -> Path:
    h = hashlib.sha256(f"{root.resolve()}|{size}|{channels}".encode())
    for f, label in files:
        st = f.stat()
        h.update(f"{f.relative_to(root)}|{label}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return cache_dir("folder") / f"{root.name or 'root'}-{h.hexdigest()[:20]}.npz"


def _decoded(root: Path, files, size, channels) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, H, W, C) and int32 labels, from the cache when it has this exact folder state."""
    path = _cache_path(root, files, size, channels)
    if path.is_file():
        try:
            with np.load(path) as z:
                return z["x"], z["y"]
        except (OSError, ValueError, KeyError):
            pass                         # an unreadable cache entry is rebuilt below
    x = np.stack([_decode(f, size, channels) for f, _ in files])
    y = np.asarray([label for _, label in files], np.int32)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f"{path.stem}.part-{os.getpid()}.npz")
    try:
        np.savez(part, x=x, y=y)
        os.replace(part, path)
    finally:
        if part.exists():
            part.unlink()
    return x, y


def _stratified(y: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> dict:
    """Indices of train / val / test, split class by class with one permutation per class from ``seed``."""
    rng = np.random.default_rng(seed)
    parts = {"train": [], "val": [], "test": []}
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n = len(idx)
        n_test, n_val = (int(round(f * n)) for f in (test_fraction, val_fraction))
        if n >= 3:
            n_test, n_val = (max(1, k) if f > 0 else 0 for k, f in ((n_test, test_fraction), (n_val, val_fraction)))
        n_test, n_val = min(n_test, n - 1), min(n_val, max(0, n - 1 - n_test))
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test:n_test + n_val])
        parts["train"].append(idx[n_test + n_val:])
    return {k: np.sort(np.concatenate(v)) for k, v in parts.items()}


def load_image_folder(path, data_dir=None, image_size=32, val_fraction: float = 0.1, test_fraction: float = 0.1,
                      seed: int = 0, channels: int = 3, **_) -> Dataset:
    """An image folder (one subfolder per class) as a classification :class:`Dataset` (see the module docstring).

    ``path`` may start with ``~``; a relative path that is not a folder here is looked up under ``data_dir``."""
    root = Path(os.path.expanduser(str(path)))
    if not root.is_dir() and data_dir is not None and not root.is_absolute():
        root = Path(data_dir).expanduser() / root
    size = _size_pair(image_size)
    if channels not in (1, 3):
        raise ValueError(f"folder: channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= f < 1.0:
            raise ValueError(f"folder: {name} must lie in [0, 1), got {f}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"folder: val_fraction + test_fraction = {val_fraction + test_fraction} leaves no training "
                         "images; lower them")
    classes, files = scan_folder(root)
    x, y = _decoded(root, files, size, channels)
    index = _stratified(y, val_fraction, test_fraction, seed)
    splits = {k: {"x": x[i].astype(np.float32) / 255.0, "y": y[i]} for k, i in index.items() if len(i) or k == "train"}
    stats = standardize(splits, "x", axis=(0, 1, 2))
    return Dataset(f"folder:{path}", splits, "classification", num_classes=len(classes),
                   extras={"normalization": stats, "classes": classes, "root": str(root)})
