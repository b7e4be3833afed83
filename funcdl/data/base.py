"""The data interface: arrays in, shuffled batches out through an explicit key.

A :class:`Dataset` is a bag of NumPy arrays per split (``"train"``, ``"val"``, ``"test"``), each split a dict of
arrays with the same first dimension (e.g. ``{"x": (N, 40), "y": (N,)}``). Language data sets instead hold one
long integer array ``{"tokens": (T,)}`` per split and are read as random windows (:func:`sample_windows`).

Randomness is explicit: :func:`epoch_indices` turns a key into the batch order of one epoch, and
:func:`batches` yields the batches themselves. Normalisation statistics come from the training split only
(:func:`standardize`), and a validation split is carved out of train with a fixed seed
(:func:`split_validation`), never out of test.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from funcdl.training.task import DataInfo

__all__ = ["Dataset", "parse_classes", "split_validation", "standardize", "epoch_indices", "batches", "sample_windows",
           "sequential_windows", "check_arrays"]


@dataclasses.dataclass
class Dataset:
    """Splits of arrays plus what a model builder needs to know about them.

    ``kind`` is ``"classification"``, ``"regression"`` or ``"language"`` (windows of ``tokens``).
    ``extras`` holds anything else: normalisation statistics, class names, the vocabulary and its
    ``encode``/``decode`` functions for text.
    """

    name: str
    splits: dict
    kind: str = "classification"
    num_classes: int | None = None
    vocab_size: int | None = None
    extras: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if "train" not in self.splits:
            raise ValueError(f"data set {self.name!r} has no 'train' split (splits: {sorted(self.splits)})")
        for split, arrays in self.splits.items():
            check_arrays(arrays, f"{self.name}[{split!r}]")
        if self.windowed and "tokens" not in self.splits["train"]:
            raise ValueError(f"language data set {self.name!r} needs a 'tokens' array in each split")

    @property
    def streaming(self) -> bool:
        """Arrays on disk (memory maps, ``funcdl.data.stream``): batches are read on the host, chunk by chunk."""
        return bool((self.extras or {}).get("streaming"))

    @property
    def windowed(self) -> bool:
        """Read as random windows of one long token array (language models) rather than by example."""
        return self.kind == "language"

    def size(self, split: str = "train") -> int:
        arrays = self.splits[split]
        return len(next(iter(arrays.values())))

    def info(self, seq_len: int | None = None) -> DataInfo:
        """The :class:`funcdl.training.task.DataInfo` a model builder receives. Language data need ``seq_len``."""
        if self.windowed:
            if seq_len is None:
                raise ValueError(f"language data set {self.name!r} needs a window length (seq_len)")
            shape = (int(seq_len),)
        else:
            shape = tuple(self.splits["train"]["x"].shape[1:])
        return DataInfo(self.name, shape, self.num_classes, self.vocab_size, self.kind, dict(self.extras))

    def eval_head(self, n: int) -> Dataset:
        """A copy whose validation and test splits keep only their first ``n`` examples (quick runs); the
        training split is untouched."""
        if self.windowed:
            raise ValueError(f"eval_limit counts examples; language data ({self.name!r}) are evaluated on "
                             "eval_batches random windows instead (--set eval_batches=N)")
        splits = {k: v if k == "train" else {a: x[:n] for a, x in v.items()} for k, v in self.splits.items()}
        return dataclasses.replace(self, splits=splits)

    def subset(self, classes=None, label_fraction: float | None = None, seed: int = 0) -> Dataset:
        """A copy restricted to ``classes`` (relabelled 0..k-1 in the order given) in every split, and/or keeping
        ``label_fraction`` of the training examples (the same share of every class, at least one each, fixed
        ``seed``). For transfer learning: pretrain on ``classes=(0, 1, 2, 3, 4)``, fine-tune on ``(5, ..., 9)``
        with ``label_fraction=0.01``. Validation and test splits are filtered by class, never subsampled."""
        if classes is None and label_fraction is None:
            return self
        if self.kind != "classification":
            raise ValueError(f"classes/label_fraction select examples by label; {self.name!r} is {self.kind} data")
        splits = {k: dict(v) for k, v in self.splits.items()}
        num_classes, extras = self.num_classes, dict(self.extras)
        if classes is not None:
            classes = parse_classes(classes, self.num_classes)
            lookup = np.full(self.num_classes, -1, np.int64)
            lookup[list(classes)] = np.arange(len(classes))
            for name, arrays in splits.items():
                keep = lookup[arrays["y"]] >= 0
                splits[name] = {k: v[keep] for k, v in arrays.items()}
                splits[name]["y"] = lookup[splits[name]["y"]].astype(arrays["y"].dtype)
                if len(splits[name]["y"]) == 0:
                    raise ValueError(f"{self.name}[{name!r}] has no example of classes {list(classes)}")
            num_classes = len(classes)
            extras["original_classes"] = list(classes)
            if extras.get("classes"):
                extras["classes"] = [extras["classes"][c] for c in classes]
        if label_fraction is not None:
            if not 0.0 < label_fraction <= 1.0:
                raise ValueError(f"label_fraction must lie in (0, 1], got {label_fraction}")
            y = splits["train"]["y"]
            rng = np.random.default_rng(seed)
            picked = []
            for c in np.unique(y):
                idx = np.flatnonzero(y == c)
                picked.append(rng.choice(idx, max(1, int(round(label_fraction * len(idx)))), replace=False))
            idx = np.sort(np.concatenate(picked))
            splits["train"] = {k: v[idx] for k, v in splits["train"].items()}
            extras["label_fraction"] = label_fraction
        return Dataset(self.name, splits, self.kind, num_classes, self.vocab_size, extras)

    def describe(self) -> str:
        sizes = ", ".join(f"{k} {self.size(k)}" for k in self.splits)
        unit = "tokens" if self.windowed else "examples"
        return f"{self.name}: {self.kind}, {unit}: {sizes}"


def parse_classes(classes, num_classes: int | None) -> tuple:
    """``(5, 6, 7)``, ``"5,6,7"``, ``"5-9"`` or ``5`` -> a tuple of distinct class indices within range."""
    if isinstance(classes, str):
        out = []
        for part in classes.replace(" ", "").split(","):
            lo, dash, hi = part.partition("-")
            if not lo.isdigit() or (dash and not hi.isdigit()):
                raise ValueError(f"classes {classes!r}: write them as 0,1,2 or 0-4")
            out.extend(range(int(lo), int(hi) + 1) if dash else [int(lo)])
        classes = out
    elif isinstance(classes, int | np.integer):
        classes = [classes]
    classes = tuple(int(c) for c in classes)
    if not classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be a non-empty list of distinct labels, got {classes}")
    if num_classes is not None and not all(0 <= c < num_classes for c in classes):
        raise ValueError(f"classes {classes} out of range: the data set has labels 0..{num_classes - 1}")
    return classes


def check_arrays(arrays: dict, where: str) -> None:
    """All arrays of one split share their first dimension."""
    if not isinstance(arrays, dict) or not arrays:
        raise ValueError(f"{where}: a split must be a non-empty dict of arrays, got {type(arrays).__name__}")
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{where}: arrays differ in their first dimension: {lengths}")


def split_validation(arrays: dict, fraction: float, seed: int = 0) -> tuple[dict, dict | None]:
    """Carve a validation split of ``round(fraction * N)`` random examples out of ``arrays`` (fixed seed).

    Returns ``(train, val)``; ``val`` is None when ``fraction`` is 0.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction must lie in [0, 1), got {fraction}")
    n = len(next(iter(arrays.values())))
    n_val = int(round(fraction * n))
    if n_val == 0:
        return arrays, None
    order = np.random.default_rng(seed).permutation(n)
    val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
    return ({k: v[train_idx] for k, v in arrays.items()}, {k: v[val_idx] for k, v in arrays.items()})


def standardize(splits: dict, key: str = "x", axis=None, eps: float = 1e-8) -> dict:
    """Subtract the training mean and divide by the training standard deviation, in every split.

    ``axis=None`` uses one scalar mean/std; ``axis=(0, 1, 2)`` on NHWC images gives per-channel statistics.
    Returns ``{"mean": ..., "std": ...}``; the splits are changed in place (as float32).
    """
    train = splits["train"][key].astype(np.float64)
    mean = train.mean(axis=axis, keepdims=axis is not None)
    std = train.std(axis=axis, keepdims=axis is not None) + eps
    for arrays in splits.values():
        arrays[key] = ((arrays[key] - mean) / std).astype(np.float32)
    return {"mean": np.squeeze(mean).tolist(), "std": np.squeeze(std).tolist()}


def epoch_indices(key, n: int, batch_size: int):
    """The batch order of one epoch: a permutation of ``range(n)`` cut into full batches ``(n // B, B)``.

    The last ``n % B`` examples of the permutation are left out (they differ every epoch). Works under jit.
    """
    if batch_size > n:
        raise ValueError(f"batch size {batch_size} is larger than the {n} training examples")
    steps = n // batch_size
    return jax.random.permutation(key, n)[: steps * batch_size].reshape(steps, batch_size)


def batches(arrays: dict, batch_size: int, key) -> Iterator[dict]:
    """Shuffled full batches of one epoch (NumPy arrays), in the order ``key`` gives."""
    n = len(next(iter(arrays.values())))
    for idx in np.asarray(epoch_indices(key, n, batch_size)):
        yield {k: v[idx] for k, v in arrays.items()}


def sample_windows(tokens, key, batch_size: int, seq_len: int) -> dict:
    """``batch_size`` random windows of a token array: ``x = tokens[s:s+T]``, ``y = tokens[s+1:s+T+1]``.

    Start positions are uniform over all full windows (as nanoGPT's ``get_batch``). Works under jit.
    """
    n = tokens.shape[0]
    if n < seq_len + 1:
        raise ValueError(f"a window of {seq_len} + 1 tokens does not fit in {n} tokens; use a smaller seq_len")
    starts = jax.random.randint(key, (batch_size,), 0, n - seq_len)
    offsets = jnp.arange(seq_len)
    idx = starts[:, None] + offsets[None, :]
    return {"x": tokens[idx], "y": tokens[idx + 1]}


def sequential_windows(tokens, step, batch_size: int, seq_len: int) -> dict:
    """Windows for truncated BPTT: the token array is cut into ``batch_size`` equal streams and step ``s`` reads
    window ``s`` of each (wrapping around), so row b of batch s + 1 continues row b of batch s and a model that
    carries its hidden state between batches sees one long text per row. Works under jit."""
    n = tokens.shape[0]
    per_stream = (n - 1) // batch_size
    windows = per_stream // seq_len
    if windows < 1:
        raise ValueError(f"sequential windows: {n} tokens do not give {batch_size} streams of {seq_len} + 1 tokens; "
                         "use a smaller batch size or seq_len")
    starts = jnp.arange(batch_size) * per_stream + (step % windows) * seq_len
    idx = starts[:, None] + jnp.arange(seq_len)[None, :]
    return {"x": tokens[idx], "y": tokens[idx + 1]}
