"""MNIST-1D (Greydanus & Kobak 2020): 1-D signals of length 40 made from ten digit templates, generated offline.

``make_dataset`` of the ``mnist1d`` package at its default arguments (5000 examples split 4000 train /
1000 test, length 40, seed 42) gives exactly the frozen ``mnist1d_data.pkl`` of the paper, with no network.
The generator seeds NumPy's and Python's global random state, so we save and restore both around it, and
cache the arrays in ``CACHE/mnist1d/mnist1d_default.npz``.

``mnist1d_shuffled`` applies one fixed permutation to the 40 positions (the same for every example): the
paper's test of spatial priors — an MLP does not care, a CNN loses its advantage.
"""

from __future__ import annotations

import os
import random

import numpy as np

from .base import Dataset, split_validation
from .download import cache_dir

__all__ = ["generate", "load_mnist1d", "load_mnist1d_shuffled", "SHUFFLE_SEED"]

SHUFFLE_SEED = 1234     # the fixed permutation of positions for mnist1d_shuffled


def generate() -> dict:
    """``{"x", "y", "x_test", "y_test"}`` from ``mnist1d.data.make_dataset`` at its defaults, leaving the
    global random state of NumPy and ``random`` as it found it."""
    from mnist1d.data import get_dataset_args, make_dataset

    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {k: np.asarray(data[k]) for k in ("x", "y", "x_test", "y_test")}


def _arrays(use_cache: bool = True) -> dict:
    path = cache_dir("mnist1d") / "mnist1d_default.npz"
    if use_cache and path.is_file():
        try:
            with np.load(path) as f:
                return {k: f[k] for k in ("x", "y", "x_test", "y_test")}
        except (OSError, KeyError, ValueError):
            pass  # a damaged cache file is regenerated below
    data = generate()
    if use_cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.stem}.part-{os.getpid()}.npz")
            np.savez(tmp, **data)
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only cache only costs the 2 s of regeneration next time
    return data


def _dataset(name: str, data: dict, val_fraction: float, extras: dict) -> Dataset:
    train = {"x": data["x"].astype(np.float32), "y": data["y"].astype(np.int32)}
    test = {"x": data["x_test"].astype(np.float32), "y": data["y_test"].astype(np.int32)}
    train, val = split_validation(train, val_fraction)
    splits = {"train": train, "test": test} | ({"val": val} if val is not None else {})
    # the generator already centred the whole set and scaled it to unit standard deviation
    return Dataset(name, splits, "classification", num_classes=10,
                   extras={"length": 40, "channels_last": False, **extras})


def load_mnist1d(data_dir=None, val_fraction: float = 0.1, **_) -> Dataset:
    """MNIST-1D: x (N, 40) float32, y (N,) int32 in 0..9; 4000 train (less ``val_fraction``), 1000 test."""
    return _dataset("mnist1d", _arrays(), val_fraction, {})


def load_mnist1d_shuffled(data_dir=None, val_fraction: float = 0.1, **_) -> Dataset:
    """MNIST-1D with its 40 positions permuted by one fixed permutation (seed ``SHUFFLE_SEED``)."""
    data = _arrays()
    perm = np.random.default_rng(SHUFFLE_SEED).permutation(40)
    data = {**data, "x": data["x"][:, perm], "x_test": data["x_test"][:, perm]}
    return _dataset("mnist1d_shuffled", data, val_fraction, {"permutation": perm.tolist()})
