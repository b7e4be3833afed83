"""Time series for forecasting: windows of the past -> the next ``horizon`` values.

    x = series[s : s + window]                (window, features)
    y = target[s + window : s + window + horizon]

Splits are chronological (train, then validation, then test — never shuffled across time), and the
normalisation (mean and standard deviation per feature) comes from the training part only, as it would in
deployment. ``extras`` keeps ``mean``/``std`` of the target so predictions can be mapped back.

Data sets (registered with ``funcdl.data``):
* ``sunspots``: yearly mean sunspot numbers 1700-2008 (309 values), the CSV that statsmodels ships — a real
  series with no download, an optional extra (``pip install statsmodels`` or ``pip install funcdl[timeseries]``);
  a local copy of that CSV in ``--data-dir`` works too.
* ``jena_climate``: the Max Planck Institute's Jena weather station, 2009-2016, 14 features every 10 minutes
  (420,551 rows), read hourly; target: temperature. Downloaded once into the cache, or read from
  ``--data-dir`` (``jena_climate_2009_2016.csv`` or the ``.csv.zip``).
* ``sines``: a noisy sum of two sines, generated offline (for tests and quick demos).
"""

from __future__ import annotations

import importlib.util
import io
import zipfile
from pathlib import Path

import numpy as np

from .base import Dataset
from .download import MissingDataError, fetch

__all__ = ["make_windows", "forecast_dataset", "load_sunspots", "load_jena_climate", "load_sines", "JENA_URL"]

JENA_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/jena_climate_2009_2016.csv.zip"
# the checksum is not pinned: this file could not be fetched where this loader was written (no network); the
# loader instead checks the header (14 named features) and the row count
JENA_SHA256 = None
JENA_ROWS = 420551


def make_windows(series: np.ndarray, target: np.ndarray, window: int, horizon: int, stride: int = 1) -> dict:
    """All windows of ``series`` (T, F) with the next ``horizon`` values of ``target`` (T,)."""
    series = np.asarray(series, np.float32)
    if series.ndim == 1:
        series = series[:, None]
    n = len(series) - window - horizon + 1
    if n < 1:
        raise ValueError(f"a series of {len(series)} steps has no window of {window} + horizon {horizon}")
    starts = np.arange(0, n, stride)
    idx = starts[:, None] + np.arange(window)[None, :]
    tidx = starts[:, None] + window + np.arange(horizon)[None, :]
    return {"x": series[idx], "y": np.asarray(target, np.float32)[tidx]}


def forecast_dataset(name: str, series, target_column: int = 0, window: int = 24, horizon: int = 1,
                     fractions=(0.7, 0.15), stride: int = 1, feature_names=None) -> Dataset:
    """Chronological split, normalisation by the training part, then windows inside each part."""
    series = np.asarray(series, np.float64)
    if series.ndim == 1:
        series = series[:, None]
    n = len(series)
    n_train, n_val = int(n * fractions[0]), int(n * fractions[1])
    mean = series[:n_train].mean(0)
    std = series[:n_train].std(0) + 1e-8
    z = (series - mean) / std
    parts = {"train": z[:n_train], "val": z[n_train:n_train + n_val], "test": z[n_train + n_val:]}
    splits = {k: make_windows(v, v[:, target_column], window, horizon, stride) for k, v in parts.items()}
    return Dataset(name, splits, "regression",
                   extras={"window": window, "horizon": horizon, "features": series.shape[1],
                           "target_column": target_column, "mean": mean.tolist(), "std": std.tolist(),
                           "target_mean": float(mean[target_column]), "target_std": float(std[target_column]),
                           "feature_names": list(feature_names or [])})


def _statsmodels_csv(name: str) -> Path | None:
    spec = importlib.util.find_spec("statsmodels")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / name / f"{name}.csv"
    return path if path.is_file() else None


def load_sunspots(data_dir=None, window: int = 20, horizon: int = 1, **_) -> Dataset:
    """Yearly sunspot numbers 1700-2008 (statsmodels' ``sunspots.csv``: columns YEAR, SUNACTIVITY)."""
    path = Path(data_dir) / "sunspots.csv" if data_dir is not None else _statsmodels_csv("sunspots")
    if path is None or not path.is_file():
        raise MissingDataError("sunspots: the series ships with statsmodels (an optional extra): pip install "
                               "statsmodels — or put sunspots.csv (YEAR,SUNACTIVITY) in --data-dir")
    table = np.genfromtxt(path, delimiter=",", names=True)
    values = np.asarray(table["SUNACTIVITY"], np.float64)
    return forecast_dataset("sunspots", values, 0, int(window), int(horizon), feature_names=["sunspots"])


def _read_jena(path: Path):
    raw = path.read_bytes()
    if path.suffix == ".zip":
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            raw = z.read(next(n for n in z.namelist() if n.endswith(".csv")))
    text = raw.decode("utf-8")
    header, _, body = text.partition("\n")
    names = [h.strip().strip('"') for h in header.split(",")][1:]
    if len(names) != 14 or not names[1].startswith("T ("):
        raise ValueError(f"jena_climate: unexpected header {header[:120]!r} in {path}")
    values = np.loadtxt(io.StringIO(body), delimiter=",", usecols=range(1, 15), dtype=np.float64)
    return names, values


def load_jena_climate(data_dir=None, window: int = 120, horizon: int = 24, every: int = 6, stride: int = 6,
                      **_) -> Dataset:
    """Jena climate: hourly rows (every 6th 10-minute record), 14 features, target temperature (degC).
    ``window`` hours of history predict the next ``horizon`` hours; windows start every ``stride`` hours."""
    path = None
    if data_dir is not None:
        for name in ("jena_climate_2009_2016.csv", "jena_climate_2009_2016.csv.zip"):
            if (Path(data_dir) / name).is_file():
                path = Path(data_dir) / name
        if path is None:
            raise MissingDataError(f"jena_climate: no jena_climate_2009_2016.csv(.zip) in {data_dir}")
    else:
        path = fetch("jena_climate", "jena_climate_2009_2016.csv.zip", JENA_URL, sha256=JENA_SHA256)
    names, values = _read_jena(path)
    if len(values) != JENA_ROWS:
        print(f"jena_climate: {len(values)} rows, expected {JENA_ROWS}")
    values = values[::every]
    # wind speed has -9999 sentinels in the raw file: clip them to 0 (as the Keras tutorial does)
    for j, n in enumerate(names):
        if n.startswith("wv") or n.startswith("max. wv"):
            values[:, j] = np.maximum(values[:, j], 0.0)
    return forecast_dataset("jena_climate", values, names.index("T (degC)"), int(window), int(horizon),
                            stride=int(stride), feature_names=names)


def load_sines(data_dir=None, n: int = 3000, window: int = 48, horizon: int = 8, seed: int = 0, **_) -> Dataset:
    """sin(2 pi t / 50) + 0.5 sin(2 pi t / 13) + noise (sd 0.1), generated with a fixed seed."""
    t = np.arange(n)
    rng = np.random.default_rng(seed)
    y = np.sin(2 * np.pi * t / 50) + 0.5 * np.sin(2 * np.pi * t / 13) + 0.1 * rng.normal(size=n)
    return forecast_dataset("sines", y, 0, int(window), int(horizon), feature_names=["y"])


def _register():
    from . import DATASETS, register_dataset

    if "sunspots" not in DATASETS:
        register_dataset("sunspots", load_sunspots, "yearly sunspot numbers 1700-2008 (needs statsmodels)",
                         kind="regression")
        register_dataset("jena_climate", load_jena_climate,
                         "Jena weather 2009-2016, hourly, 14 features -> temperature (download or --data-dir)",
                         kind="regression")
        register_dataset("sines", load_sines, "noisy sum of two sines, generated offline", kind="regression")


_register()
