"""Synthetic translation tasks generated offline: written-out dates -> ISO dates, and digit-string reversal.

``dates``: the source is a date written the way people write it, in one of a dozen formats
("tuesday, march 5, 1994", "5th of mar 1994", "03/05/1994", "5.3.94" ...); the target is the ISO form
"1994-03-05". The mapping needs real sequence skills — reorder fields, map month names to numbers, pad, expand
two-digit years (00-29 -> 20xx, 30-99 -> 19xx) — and an exact-match score is unforgiving. Dates are drawn
uniformly from 1930-01-01 to 2029-12-31 with a fixed seed; test and validation hold *distinct dates* from
training (held out by date, not just by string), so the score measures generalisation.

``reverse``: a digit string of length 3..12 -> the same digits reversed (the classic attention sanity check).

Both share one character vocabulary with three special tokens (``PAD`` = 0, ``BOS`` = 1, ``EOS`` = 2).
Arrays: ``x`` (N, S) source ids padded with PAD; ``y`` (N, U) target ids followed by EOS, padded with PAD.
``make_pairs`` gives the strings themselves (the transformer's encoder-decoder uses the same pairs).
"""

from __future__ import annotations

import datetime

import numpy as np

from .base import Dataset

__all__ = ["SeqVocab", "VOCAB", "PAD", "BOS", "EOS", "make_pairs", "date_pairs", "reverse_pairs", "encode_pairs",
           "load_dates", "load_reverse", "FORMATS"]

PAD, BOS, EOS = 0, 1, 2
SPECIALS = ("<pad>", "<bos>", "<eos>")


class SeqVocab:
    """Three special tokens then units: single characters here (``encode`` reads a string character by
    character, ``decode`` joins with nothing); a subclass with ``sep = " "`` works on whitespace-separated words
    (funcdl.data.qa). ``where`` prefixes the error messages."""

    unit, sep, where = "character", "", ""

    def __init__(self, units):
        self.tokens = list(SPECIALS) + list(dict.fromkeys(units))
        self.index = {c: i for i, c in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    def split(self, text: str) -> list:
        return text.split(self.sep) if self.sep.strip() else (text.split() if self.sep else list(text))

    def encode(self, text: str, length: int | None = None, eos: bool = False) -> np.ndarray:
        try:
            ids = [self.index[c] for c in self.split(text)] + ([EOS] if eos else [])
        except KeyError as err:
            raise ValueError(f"{self.where}{self.unit} {err.args[0]!r} is not in the vocabulary") from None
        if length is not None:
            if len(ids) > length:
                raise ValueError(f"{self.where}{text!r} needs {len(ids)} tokens, more than the length {length}")
            ids = ids + [PAD] * (length - len(ids))
        return np.asarray(ids, np.int32)

    def decode(self, ids, stop_at_eos: bool = True) -> str:
        out = []
        for i in np.asarray(ids).reshape(-1):
            i = int(i)
            if i == EOS and stop_at_eos:
                break
            if len(SPECIALS) <= i < len(self.tokens):
                out.append(self.tokens[i])
        return self.sep.join(out)


VOCAB = SeqVocab(" ,./-0123456789abcdefghijklmnopqrstuvwxyz")

MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december")
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


# each format: date -> human string
FORMATS = {
    "month d, yyyy": lambda d: f"{MONTHS[d.month - 1]} {d.day}, {d.year}",
    "d month yyyy": lambda d: f"{d.day} {MONTHS[d.month - 1]} {d.year}",
    "mon d yyyy": lambda d: f"{MONTHS[d.month - 1][:3]} {d.day} {d.year}",
    "weekday, month d, yyyy": lambda d: f"{DAYS[d.weekday()]}, {MONTHS[d.month - 1]} {d.day}, {d.year}",
    "dth of month, yyyy": lambda d: f"{_ordinal(d.day)} of {MONTHS[d.month - 1]}, {d.year}",
    "dth of mon yyyy": lambda d: f"{_ordinal(d.day)} of {MONTHS[d.month - 1][:3]} {d.year}",
    "month dth yyyy": lambda d: f"{MONTHS[d.month - 1]} {_ordinal(d.day)} {d.year}",
    "mm/dd/yyyy": lambda d: f"{d.month:02d}/{d.day:02d}/{d.year}",
    "d.m.yy": lambda d: f"{d.day}.{d.month}.{d.year % 100:02d}",
    "dd mon yy": lambda d: f"{d.day:02d} {MONTHS[d.month - 1][:3]} {d.year % 100:02d}",
    "mon. d, yyyy": lambda d: f"{MONTHS[d.month - 1][:3]}. {d.day}, {d.year}",
    "yyyy month d": lambda d: f"{d.year} {MONTHS[d.month - 1]} {d.day}",
}
_FIRST = datetime.date(1930, 1, 1)
_LAST = datetime.date(2029, 12, 31)


def _split_dates(seed: int, n_train_dates: int, n_held_dates: int):
    """Disjoint sets of day numbers for training and held-out (val + test) pairs."""
    span = (_LAST - _FIRST).days + 1
    order = np.random.default_rng(seed).permutation(span)
    if n_train_dates + n_held_dates > span:
        raise ValueError(f"dates: only {span} distinct dates exist")
    return order[:n_train_dates], order[n_train_dates:n_train_dates + n_held_dates]


def date_pairs(n: int, seed: int = 0, day_numbers=None) -> list[tuple[str, str]]:
    """``n`` (human date, ISO date) pairs with random formats; dates drawn from ``day_numbers`` if given."""
    rng = np.random.default_rng(seed)
    names = list(FORMATS)
    span = (_LAST - _FIRST).days + 1
    days = rng.choice(day_numbers, n) if day_numbers is not None else rng.integers(0, span, n)
    fmts = rng.integers(0, len(names), n)
    out = []
    for k, f in zip(days, fmts, strict=True):
        d = _FIRST + datetime.timedelta(days=int(k))
        out.append((FORMATS[names[f]](d), d.isoformat()))
    return out


def reverse_pairs(n: int, seed: int = 0, min_len: int = 3, max_len: int = 12) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        s = "".join(map(str, rng.integers(0, 10, rng.integers(min_len, max_len + 1))))
        out.append((s, s[::-1]))
    return out


def make_pairs(task: str = "dates", n: int = 1000, seed: int = 0) -> list[tuple[str, str]]:
    """Pairs of strings for ``task`` in {"dates", "reverse"}."""
    if task == "dates":
        return date_pairs(n, seed)
    if task == "reverse":
        return reverse_pairs(n, seed)
    raise ValueError(f"unknown synthetic task {task!r}; valid: dates, reverse")


def encode_pairs(pairs, src_len: int, tgt_len: int) -> dict:
    """{"x": (N, src_len), "y": (N, tgt_len)} ids; the target ends with EOS."""
    x = np.stack([VOCAB.encode(s, src_len) for s, _ in pairs])
    y = np.stack([VOCAB.encode(t, tgt_len, eos=True) for _, t in pairs])
    return {"x": x, "y": y}


def _dataset(name, train, val, test, src_len, tgt_len, description):
    splits = {k: encode_pairs(v, src_len, tgt_len) for k, v in (("train", train), ("val", val), ("test", test))}
    return Dataset(name, splits, "classification", num_classes=None, vocab_size=len(VOCAB),
                   extras={"task": "seq2seq", "vocab": VOCAB.tokens, "encode": VOCAB.encode, "decode": VOCAB.decode,
                           "src_len": src_len, "tgt_len": tgt_len, "pad": PAD, "bos": BOS, "eos": EOS,
                           "pairs": {"val": val[:50], "test": test[:50]}, "description": description})


def load_dates(data_dir=None, val_fraction: float | None = None, n_train: int = 20000, n_val: int = 1000,
               n_test: int = 2000, seed: int = 0, **_) -> Dataset:
    """Human-written dates -> ISO dates; val and test dates never occur in training (any format)."""
    train_days, held_days = _split_dates(seed, 30000, 6000)
    train = date_pairs(n_train, seed + 1, train_days)
    held = date_pairs(n_val + n_test, seed + 2, held_days)
    return _dataset("dates", train, held[:n_val], held[n_val:], 32, 11, "human dates -> ISO")


def load_reverse(data_dir=None, val_fraction: float | None = None, n_train: int = 20000, n_val: int = 1000,
                 n_test: int = 2000, seed: int = 0, **_) -> Dataset:
    """Digit strings -> reversed; held-out strings do not occur in training."""
    pairs = reverse_pairs(n_train + 2 * (n_val + n_test), seed)
    seen = set()
    train = []
    for p in pairs[:n_train]:
        train.append(p)
        seen.add(p[0])
    held = [p for p in pairs[n_train:] if p[0] not in seen][: n_val + n_test]
    return _dataset("reverse", train, held[:n_val], held[n_val:], 13, 13, "digit strings -> reversed")


def _register():
    from . import DATASETS, register_dataset

    if "dates" not in DATASETS:
        register_dataset("dates", load_dates, "synthetic translation: human-written dates -> ISO (seq2seq)")
        register_dataset("reverse", load_reverse, "synthetic translation: digit strings -> reversed (seq2seq)")


_register()
