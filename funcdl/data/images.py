"""Image classification sets: ``digits`` (scikit-learn, bundled), ``mnist`` and ``fashion_mnist`` (IDX files),
``cifar10`` (the python-pickle batches).

Images come out NHWC float32, standardised with the mean and standard deviation of the training split
(one scalar for grey images, one per channel for colour); labels int32. A validation split is carved out of
train with a fixed seed.

Checksums: MNIST's are the md5s of the *decompressed* IDX files (the canonical gzip files have been
re-compressed by mirrors); Fashion-MNIST's and CIFAR-10's are the md5s the publishers give for their
compressed files (the ones torchvision checks too). Downloads are verified; local files given with
``--data-dir`` are only checked for their format.
"""

from __future__ import annotations

import gzip
import pickle
import tarfile
from pathlib import Path

import numpy as np

from .base import Dataset, split_validation, standardize
from .download import MissingDataError, cache_dir, checksum, fetch

__all__ = ["read_idx", "load_digits", "load_mnist", "load_fashion_mnist", "load_cifar10", "MNIST_FILES",
           "FASHION_FILES"]

MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
# file -> md5 of the decompressed content
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte.gz": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637",
}
FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# file -> md5 of the gzip file as Zalando publishes it
FASHION_FILES = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """Read an IDX file (gzipped or not): magic ``0 0 TYPE NDIM``, NDIM big-endian int32 sizes, the data."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (magic bytes {raw[:4].hex()})")
    ndim = raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, ">i4", ndim, 4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - offset != expected:
        raise ValueError(f"{path}: IDX header says shape {dims} ({expected} bytes) but {len(raw) - offset} "
                         "bytes follow; the file is truncated or damaged")
    return np.frombuffer(raw, dtype, offset=offset).reshape(dims).astype(dtype.newbyteorder("="))


def _image_splits(x_train, y_train, x_test, y_test, val_fraction, axis=None):
    """uint8 NHWC images -> standardised float32 splits (statistics of the training part only)."""
    train = {"x": x_train.astype(np.float32) / 255.0, "y": y_train.astype(np.int32)}
    test = {"x": x_test.astype(np.float32) / 255.0, "y": y_test.astype(np.int32)}
    train, val = split_validation(train, val_fraction)
    splits = {"train": train, "test": test} | ({"val": val} if val is not None else {})
    stats = standardize(splits, "x", axis=axis)
    return splits, stats


def _idx_set(name, files, url, decompressed, data_dir, val_fraction, classes):
    paths = {}
    for fname, md5 in files.items():
        paths[fname] = fetch(name, fname, url + fname, md5=md5, decompressed=decompressed, data_dir=data_dir)
    x_train = read_idx(paths["train-images-idx3-ubyte.gz"])[..., None]
    y_train = read_idx(paths["train-labels-idx1-ubyte.gz"])
    x_test = read_idx(paths["t10k-images-idx3-ubyte.gz"])[..., None]
    y_test = read_idx(paths["t10k-labels-idx1-ubyte.gz"])
    for split, (x, y) in {"train": (x_train, y_train), "test": (x_test, y_test)}.items():
        if len(x) != len(y):
            raise ValueError(f"{name}: {split} has {len(x)} images but {len(y)} labels")
    splits, stats = _image_splits(x_train, y_train, x_test, y_test, val_fraction)
    return Dataset(name, splits, "classification", num_classes=10,
                   extras={"normalization": stats, "classes": classes, "data_dir": data_dir})


def load_mnist(data_dir=None, val_fraction: float = 1 / 12, **_) -> Dataset:
    """MNIST, 28x28x1: 60000 train (55000 + 5000 validation by default) and 10000 test images."""
    return _idx_set("mnist", MNIST_FILES, MNIST_URL, True, data_dir, val_fraction, tuple(map(str, range(10))))


def load_fashion_mnist(data_dir=None, val_fraction: float = 1 / 12, **_) -> Dataset:
    """Fashion-MNIST (Zalando), 28x28x1, the same sizes and file format as MNIST."""
    return _idx_set("fashion_mnist", FASHION_FILES, FASHION_URL, False, data_dir, val_fraction, FASHION_CLASSES)


def load_digits(data_dir=None, val_fraction: float = 0.1, test_fraction: float = 0.2, **_) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images, values 0..16), split 20% test with a fixed seed."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        raise ModuleNotFoundError("the digits data set needs scikit-learn: pip install 'funcdl[digits]'") from None
    d = sk_load_digits()
    x = (d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    rest, test = split_validation({"x": x, "y": d.target}, test_fraction, seed=1)
    splits, stats = _image_splits(rest["x"], rest["y"], test["x"], test["y"], val_fraction)
    return Dataset("digits", splits, "classification", num_classes=10, extras={"normalization": stats})


def _read_cifar_batch(path: Path):
    with open(path, "rb") as f:
        try:
            d = pickle.load(f, encoding="bytes")
        except Exception as err:
            raise ValueError(f"{path} is not a CIFAR-10 python batch: {err}") from err
    d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}
    if "data" not in d or "labels" not in d:
        raise ValueError(f"{path} is not a CIFAR-10 python batch (keys: {sorted(d)})")
    data = np.asarray(d["data"], np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{path}: CIFAR-10 data must be (N, 3072) uint8, got {data.shape}")
    x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)        # rows are CHW planes -> NHWC
    return x, np.asarray(d["labels"], np.int64)


CIFAR10_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5")


def _cifar_folder(data_dir) -> Path:
    """The folder holding ``data_batch_1..5`` and ``test_batch`` (downloaded and unpacked when needed)."""
    candidates = []
    if data_dir is not None:
        d = Path(data_dir).expanduser()
        candidates = [d, d / "cifar-10-batches-py"]
        for c in candidates:
            if (c / "test_batch").is_file():
                return c
        if (d / "cifar-10-python.tar.gz").is_file():
            archive = d / "cifar-10-python.tar.gz"
            # a local archive is checked like a download before anything is unpacked from it
            if (got := checksum(archive)) != CIFAR10_MD5:
                raise MissingDataError(f"cifar10: {archive} has md5 {got}, not the published {CIFAR10_MD5}; "
                                       f"fetch {CIFAR10_URL} again")
        else:
            raise MissingDataError(
                f"cifar10: no data_batch_1..5/test_batch or cifar-10-python.tar.gz in --data-dir {data_dir}. "
                f"Fetch {CIFAR10_URL} and unpack it there.")
    else:
        folder = cache_dir("cifar10") / "cifar-10-batches-py"
        if (folder / "test_batch").is_file():
            return folder
        archive = fetch("cifar10", "cifar-10-python.tar.gz", CIFAR10_URL, md5=CIFAR10_MD5)
    out = archive.parent
    with tarfile.open(archive, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith("cifar-10-batches-py/")
                   and ".." not in m.name]
        try:
            tar.extractall(out, members=members, filter="data")
        except TypeError:                      # Python without extraction filters; names were checked above
            tar.extractall(out, members=members)
    return out / "cifar-10-batches-py"


def load_cifar10(data_dir=None, val_fraction: float = 0.1, **_) -> Dataset:
    """CIFAR-10, 32x32x3: 50000 train (45000 + 5000 validation by default), 10000 test; per-channel stats."""
    folder = _cifar_folder(data_dir)
    parts = []
    for b in CIFAR10_BATCHES:
        if not (folder / b).is_file():
            raise MissingDataError(f"cifar10: {folder / b} is missing (fetch {CIFAR10_URL})")
        parts.append(_read_cifar_batch(folder / b))
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    x_test, y_test = _read_cifar_batch(folder / "test_batch")
    splits, stats = _image_splits(x_train, y_train, x_test, y_test, val_fraction, axis=(0, 1, 2))
    return Dataset("cifar10", splits, "classification", num_classes=10,
                   extras={"normalization": stats, "classes": CIFAR10_CLASSES})
