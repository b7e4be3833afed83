"""funcdl.data: data sets by name, and the small interface the training loop reads.

    ds = funcdl.data.load("mnist1d")                 # a Dataset: splits of NumPy arrays + what models need
    ds.splits["train"]["x"].shape                    # (3600, 40); "val" (400), "test" (1000)
    for batch in funcdl.data.batches(ds.splits["train"], 100, key): ...

Registering a data set (other modules do this at import; the command line lists what is registered):

    register_dataset("name", loader, "one-line description", kind="classification")

``loader(data_dir=None, val_fraction=..., **options) -> Dataset``. ``data_dir`` is the ``--data-dir`` of the
command line (a folder of local files, None for the cache/download); loaders take ``**_`` so that new common
options do not break them. ``text:PATH`` loads any local text file as a character-level language data set.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import NamedTuple

from . import base, download, images, mnist1d, stream, text
from .base import Dataset, batches, check_arrays, epoch_indices, sample_windows, split_validation, standardize
from .download import MissingDataError, cache_dir, fetch
from .text import CharVocab, text_dataset

__all__ = ["Dataset", "DatasetEntry", "DATASETS", "register_dataset", "load", "get_dataset", "names",
           "batches", "epoch_indices", "sample_windows", "split_validation", "standardize", "check_arrays",
           "CharVocab", "text_dataset", "MissingDataError", "cache_dir", "fetch", "base", "download", "images",
           "mnist1d", "text"]


class DatasetEntry(NamedTuple):
    name: str
    loader: Callable
    description: str
    kind: str = "classification"


DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(name: str, loader: Callable, description: str, *, kind: str = "classification") -> None:
    """Make ``loader`` available as ``funcdl.data.load(name)`` and ``funcdl train ... --data name``."""
    if name in DATASETS:
        raise ValueError(f"data set {name!r} is already registered")
    if ":" in name:
        raise ValueError(f"data set names may not contain ':' ({name!r}); 'text:PATH' is reserved for files")
    DATASETS[name] = DatasetEntry(name, loader, description, kind)


def names() -> list[str]:
    return sorted(DATASETS)


def get_dataset(name: str) -> DatasetEntry:
    if name.startswith("text:"):
        return DatasetEntry(name, lambda **kw: text.load_text_file(name[5:], **kw),
                            "a local UTF-8 text file, character level", "language")
    if name.startswith("folder:"):
        from . import folder

        return DatasetEntry(name, lambda **kw: folder.load_image_folder(name[7:], **kw),
                            "a local image folder, one subfolder per class (PNG/JPEG)", "classification")
    if name.startswith("prepared:"):
        return DatasetEntry(name, lambda **kw: stream.load_prepared(name[9:], **kw),
                            "a folder written by `funcdl data prepare`, memory-mapped", "any")
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown data set {name!r}; valid data sets: {', '.join(names())}, "
                         "text:PATH for a local text file, folder:PATH for an image folder (one subfolder per class), "
                         "or prepared:DIR for a prepared one") from None


def load(name: str, data_dir=None, val_fraction: float | None = None, **options) -> Dataset:
    """Load the data set ``name`` (``val_fraction=None`` keeps the loader's default validation share)."""
    entry = get_dataset(name)
    if val_fraction is not None:
        options["val_fraction"] = val_fraction
    ds = entry.loader(data_dir=data_dir, **options)
    if not isinstance(ds, Dataset):
        raise TypeError(f"the loader of {name!r} returned {type(ds).__name__}, not funcdl.data.Dataset")
    return ds


register_dataset("mnist1d", mnist1d.load_mnist1d,
                 "MNIST-1D (Greydanus 2020): 1-D digits of length 40, 4000 train / 1000 test, generated offline")
register_dataset("mnist1d_shuffled", mnist1d.load_mnist1d_shuffled,
                 "MNIST-1D with one fixed permutation of the 40 positions (no spatial structure left)")
register_dataset("digits", images.load_digits,
                 "scikit-learn's bundled 8x8 digits, 1797 images (needs scikit-learn)")
register_dataset("mnist", images.load_mnist, "MNIST 28x28 digits, 60000 train / 10000 test (IDX files)")
register_dataset("fashion_mnist", images.load_fashion_mnist,
                 "Fashion-MNIST 28x28 clothing images, 60000 train / 10000 test (IDX files)")
register_dataset("cifar10", images.load_cifar10, "CIFAR-10 32x32x3 colour images, 50000 train / 10000 test")
register_dataset("tinyshakespeare", text.load_tinyshakespeare,
                 "Tiny Shakespeare, 1.1M characters, 65-character vocabulary (char-level LM)", kind="language")

# data-set modules written elsewhere register themselves when imported
for _module in ("timeseries", "synthetic", "generative", "sentiment", "qa", "detection", "scenes"):
    try:
        importlib.import_module(f"{__name__}.{_module}")
    except ModuleNotFoundError as _err:
        if _err.name != f"{__name__}.{_module}":
            raise
del _module
