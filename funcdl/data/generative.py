"""Data sets for generative models: ``binarized_mnist``.

``binarized_mnist`` is MNIST with every pixel turned into a 0/1 draw once, with a fixed seed: pixel value
p = v / 255 (v the uint8 grey level) becomes 1 with probability p,

    bit = u < v / 255,    u ~ U[0, 1) from ``numpy.random.default_rng(seed)``,

drawn in one call over the whole uint8 array (train images then, from a second generator, test images). NumPy's
``default_rng`` (PCG64) and its ``random()`` produce the same stream on every platform and NumPy version since
1.17, so every machine gets the same bits for the same seed. This is the *fixed* binarisation (as the
data sets of Larochelle & Murray 2011 and most VAE papers since), not the dynamic one redrawn every epoch; a
model's test negative ELBO in nats per image is comparable only between runs on the same bits.

Arrays: ``x`` float32 (N, 28, 28, 1) holding exactly 0.0 and 1.0, ``y`` int32 labels (kept for
class-conditional models); 55000 train + 5000 validation (carved out of train with the same fixed seed as
``mnist``) and 10000 test. ``extras["normalization"]`` is mean 0, std 1: mapping the inputs back to [0, 1]
pixels is the identity. ``extras["binarize_seed"]`` records the seed.
"""

from __future__ import annotations

import numpy as np

from .base import Dataset, split_validation
from .download import fetch
from .images import MNIST_FILES, MNIST_URL, read_idx

__all__ = ["BINARIZE_SEED", "binarize", "load_binarized_mnist"]

BINARIZE_SEED = 0


def binarize(images, seed: int) -> np.ndarray:
    """uint8 images -> uint8 bits: ``default_rng(seed).random(shape) < images / 255`` (the same bits everywhere)."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"binarize expects uint8 grey levels 0..255, got dtype {images.dtype}")
    u = np.random.default_rng(seed).random(images.shape)
    return (u < images / 255.0).astype(np.uint8)


def load_binarized_mnist(data_dir=None, val_fraction: float = 1 / 12, seed: int = BINARIZE_SEED, **_) -> Dataset:
    """MNIST binarised once with ``seed`` (train with ``default_rng(seed)``, test with ``default_rng(seed + 1)``);
    x float32 0/1 NHWC, y int32; a validation split as ``mnist``'s."""
    paths = {name: fetch("mnist", name, MNIST_URL + name, md5=md5, decompressed=True, data_dir=data_dir)
             for name, md5 in MNIST_FILES.items()}
    arrays = {}
    for split, prefix, offset in (("train", "train", 0), ("test", "t10k", 1)):
        x = read_idx(paths[f"{prefix}-images-idx3-ubyte.gz"])[..., None]
        y = read_idx(paths[f"{prefix}-labels-idx1-ubyte.gz"])
        if len(x) != len(y):
            raise ValueError(f"binarized_mnist: {split} has {len(x)} images but {len(y)} labels")
        arrays[split] = {"x": binarize(x, seed + offset).astype(np.float32), "y": y.astype(np.int32)}
    train, val = split_validation(arrays["train"], val_fraction)
    splits = {"train": train, "test": arrays["test"]} | ({"val": val} if val is not None else {})
    return Dataset("binarized_mnist", splits, "classification", num_classes=10,
                   extras={"normalization": {"mean": 0.0, "std": 1.0}, "classes": tuple(map(str, range(10))),
                           "binarize_seed": seed, "data_dir": data_dir})


def _register() -> None:
    from . import DATASETS, register_dataset

    if "binarized_mnist" not in DATASETS:        # importing the module twice (reload) registers it once
        register_dataset("binarized_mnist", load_binarized_mnist,
                         "MNIST binarised once by Bernoulli sampling with a fixed seed (0/1 pixels; VAEs' benchmark)")


_register()
