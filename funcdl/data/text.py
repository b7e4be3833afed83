"""Character-level text: ``tinyshakespeare`` and any local text file (``text:PATH``).

The vocabulary is the sorted set of characters of the whole file (as nanoGPT's ``shakespeare_char``);
``encode`` maps a string to int32 ids, ``decode`` maps ids back. The token stream is split contiguously:
the first 90% is train, the last 10% validation (no test split, as in nanoGPT). Training reads random
windows ``x = t[s:s+T]``, ``y = t[s+1:s+T+1]`` (see :func:`funcdl.data.base.sample_windows`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Dataset
from .download import fetch

__all__ = ["CharVocab", "text_dataset", "load_tinyshakespeare", "load_text_file", "TINYSHAKESPEARE_URL"]

TINYSHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


class CharVocab:
    """A character vocabulary: ``chars[i]`` is token ``i``."""

    def __init__(self, chars):
        self.chars = "".join(chars)
        if len(set(self.chars)) != len(self.chars):
            raise ValueError("CharVocab: characters must be distinct")
        self.index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> CharVocab:
        return cls(sorted(set(text)))

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        try:
            return np.fromiter((self.index[c] for c in text), np.int32, len(text))
        except KeyError as err:
            raise ValueError(f"character {err.args[0]!r} is not in the vocabulary of {len(self)} characters") \
                from None

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in np.asarray(ids).reshape(-1))


def text_dataset(name: str, text: str, val_fraction: float = 0.1) -> Dataset:
    """A language data set from a string: char vocabulary, contiguous (1 - f) / f train/val split."""
    if not text:
        raise ValueError(f"{name}: the text is empty")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"{name}: val_fraction must lie in (0, 1) for text, got {val_fraction}")
    vocab = CharVocab.from_text(text)
    tokens = vocab.encode(text)
    n_train = int(len(tokens) * (1.0 - val_fraction))
    splits = {"train": {"tokens": tokens[:n_train]}, "val": {"tokens": tokens[n_train:]}}
    return Dataset(name, splits, "language", vocab_size=len(vocab),
                   extras={"vocab": vocab.chars, "encode": vocab.encode, "decode": vocab.decode})


def load_tinyshakespeare(data_dir=None, val_fraction: float = 0.1, **_) -> Dataset:
    """Tiny Shakespeare (1,115,394 characters, 65 distinct), the char-rnn / nanoGPT corpus."""
    path = fetch("tinyshakespeare", "input.txt", TINYSHAKESPEARE_URL, sha256=TINYSHAKESPEARE_SHA256,
                 data_dir=data_dir)
    raw = path.read_bytes()
    return text_dataset("tinyshakespeare", raw.decode("utf-8"), val_fraction)


def load_text_file(path, data_dir=None, val_fraction: float = 0.1, **_) -> Dataset:
    """Any UTF-8 text file as a character-level data set (``--data text:PATH``)."""
    p = Path(path).expanduser()
    if not p.is_absolute() and data_dir is not None and not p.is_file():
        p = Path(data_dir).expanduser() / p
    if not p.is_file():
        raise FileNotFoundError(f"text file {path} does not exist")
    from .stream import STREAM_TEXT_BYTES, text_streaming

    if p.stat().st_size > STREAM_TEXT_BYTES:        # too large to hold: memory-mapped from a prepared copy
        return text_streaming(p, val_fraction)
    return text_dataset(f"text:{p.name}", p.read_text(encoding="utf-8"), val_fraction)
