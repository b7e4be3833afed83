"""Data larger than memory: arrays on disk, read through NumPy memory maps.

``prepare(dataset, DIR)`` writes every split's arrays as ``.npy`` files plus ``meta.json`` (``funcdl data prepare
NAME --out DIR``); ``prepare_text(PATH, DIR)`` does the same for a text file of any size without holding it in
memory (two passes: the character set, then the token ids, chunk by chunk into a memory-mapped file).
``load_prepared(DIR)`` (``--data prepared:DIR``) opens them as read-only memory maps: nothing is read until a
batch asks for its rows. The training loop sees ``dataset.streaming`` and assembles each chunk of batches on the
host from the same indices the in-memory path draws on the device (so the two give the same loss curve for the
same seed) and moves them to the device while the previous chunk trains; in a several-process run each process
keeps the rows of its own devices.

``text:PATH`` streams by itself when the file is larger than ``STREAM_TEXT_BYTES``: it is prepared once into the
cache folder (keyed by the file's path, size and modification time) and memory-mapped from there.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .base import Dataset
from .download import cache_dir
from .text import CharVocab

__all__ = ["prepare", "prepare_text", "load_prepared", "text_streaming", "STREAM_TEXT_BYTES"]

STREAM_TEXT_BYTES = 64 * 2**20          # text:PATH files above this size are memory-mapped, not loaded
_CHUNK_CHARS = 8 * 2**20


def _token_dtype(vocab_size: int):
    return np.uint8 if vocab_size <= 256 else np.uint16 if vocab_size <= 65536 else np.int32


def _write_meta(out: Path, dataset_name: str, kind: str, num_classes, vocab: str | None, splits: dict):
    meta = {"name": dataset_name, "kind": kind, "num_classes": num_classes, "vocab": vocab,
            "splits": {s: sorted(a) for s, a in splits.items()}}
    (out / "meta.json").write_text(json.dumps(meta, indent=1))


def prepare(dataset: Dataset, out) -> Path:
    """Write ``dataset``'s splits as ``.npy`` files (``SPLIT.ARRAY.npy``) and ``meta.json`` into ``out``."""
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    vocab = (dataset.extras or {}).get("vocab")
    for split, arrays in dataset.splits.items():
        for name, array in arrays.items():
            array = np.asarray(array)
            if name == "tokens" and vocab is not None:
                array = array.astype(_token_dtype(len(vocab)))
            np.save(out / f"{split}.{name}.npy", array)
    _write_meta(out, dataset.name, dataset.kind, dataset.num_classes, vocab, dataset.splits)
    return out


def _chunks(path: Path):
    with open(path, encoding="utf-8") as f:
        while chunk := f.read(_CHUNK_CHARS):
            yield chunk


def prepare_text(path, out, val_fraction: float = 0.1) -> Path:
    """A character-level text file of any size into ``train.tokens.npy`` / ``val.tokens.npy`` (the last
    ``val_fraction`` of the characters), reading it chunk by chunk."""
    path, out = Path(path).expanduser(), Path(out).expanduser()
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1) for text, got {val_fraction}")
    chars, n = set(), 0
    for chunk in _chunks(path):
        chars.update(chunk)
        n += len(chunk)
    if n == 0:
        raise ValueError(f"{path}: the text is empty")
    vocab = CharVocab(sorted(chars))
    codes = np.array([ord(c) for c in vocab.chars], np.int64)        # sorted: ids by binary search
    n_train = int(n * (1.0 - val_fraction))
    out.mkdir(parents=True, exist_ok=True)
    dtype = _token_dtype(len(vocab))
    files = {s: np.lib.format.open_memmap(out / f"{s}.tokens.npy", "w+", dtype, (size,))
             for s, size in (("train", n_train), ("val", n - n_train))}
    pos = 0
    for chunk in _chunks(path):
        ids = np.searchsorted(codes, np.frombuffer(chunk.encode("utf-32-le"), np.uint32)).astype(dtype)
        a, b = pos, pos + len(ids)
        if a < n_train:
            files["train"][a:min(b, n_train)] = ids[: min(b, n_train) - a]
        if b > n_train:
            files["val"][max(a, n_train) - n_train: b - n_train] = ids[max(a, n_train) - a:]
        pos = b
    for f in files.values():
        f.flush()
    _write_meta(out, f"text:{path.name}", "language", None, vocab.chars, {"train": ["tokens"], "val": ["tokens"]})
    return out


def load_prepared(folder, data_dir=None, **_) -> Dataset:
    """The data set in a folder written by :func:`prepare` / :func:`prepare_text`, as read-only memory maps."""
    folder = Path(folder).expanduser()
    if not folder.is_absolute() and data_dir is not None and not folder.is_dir():
        folder = Path(data_dir).expanduser() / folder
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{folder} holds no prepared data set (no meta.json); write one with "
                                "`funcdl data prepare NAME --out DIR`")
    meta = json.loads(meta_path.read_text())
    splits = {s: {a: np.load(folder / f"{s}.{a}.npy", mmap_mode="r") for a in arrays}
              for s, arrays in meta["splits"].items()}
    extras = {"streaming": True}
    vocab_size = None
    if meta.get("vocab") is not None:
        vocab = CharVocab(meta["vocab"])
        vocab_size = len(vocab)
        extras |= {"vocab": vocab.chars, "encode": vocab.encode, "decode": vocab.decode}
    return Dataset(meta["name"], splits, meta["kind"], num_classes=meta.get("num_classes"), vocab_size=vocab_size,
                   extras=extras)


def text_streaming(path: Path, val_fraction: float = 0.1) -> Dataset:
    """A large text file, prepared once into the cache and memory-mapped."""
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{val_fraction}".encode()).hexdigest()
    folder = cache_dir("prepared") / key[:16]
    if not (folder / "meta.json").is_file():
        tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
        print(f"{path} is {stat.st_size / 2**20:.0f} MiB: preparing a memory-mapped copy in {folder}", flush=True)
        prepare_text(path, tmp, val_fraction)
        os.replace(tmp, folder)
    return load_prepared(folder)
