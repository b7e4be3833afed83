"""A transformer encoder with BERT's masked-token pre-training (and a classification head on request).

    h = encoder(tokens)       token + learned position embeddings, pre-norm blocks (bidirectional
                              self-attention with a key-padding mask, GELU MLP), final layer norm
    logits = h wte^T          the unembedding is the token embedding (tied)

Masked-token objective (BERT, Devlin et al. 2019): choose 15% of the positions; replace 80% of them by the
[MASK] token (the last id of the vocabulary), 10% by a random token, keep 10%; the loss is the cross-entropy of
the original tokens at the chosen positions only. ``classify`` mean-pools the real tokens' states into a linear
head (``Config.n_classes`` > 0). Every piece is a funcdl primitive with a hand-derived backward.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

import funcdl as fd
from funcdl.training.task import DataInfo

from .layers import encoder, encoder_init
from .registry import as_task, register

__all__ = ["Config", "KIND", "init", "apply", "loss", "corrupt", "classify"]

KIND = "language"


@dataclasses.dataclass(frozen=True)
class Config:
    vocab_size: int = 32           # including the [MASK] token, the last id
    max_len: int = 64
    n_layer: int = 2
    n_head: int = 4
    d_model: int = 64
    d_ff: int | None = None        # default 4 d_model
    n_classes: int = 0             # > 0: a classification head for ``classify``
    rate: float = 0.15             # share of the positions the masked-token loss predicts

    def __post_init__(self):
        if self.d_model % self.n_head:
            raise ValueError(f"bert.Config: n_head ({self.n_head}) must divide d_model ({self.d_model})")

    @property
    def mask_token(self) -> int:
        return self.vocab_size - 1


def init(key, config: Config):
    return encoder_init(key, config), {}


def apply(params, state, x, config: Config, *, key=None, train: bool = False, mask=None):
    """``(logits (B, T, V), state)`` of token ids x (B, T) as they are (nothing masked); ``mask`` (B, T) is True
    for real tokens."""
    return encoder(params, x, config, mask=mask) @ params["wte"].T, state


def corrupt(tokens, key, config: Config):
    """``(corrupted tokens, chosen positions)``: BERT's 80/10/10 replacement of a random ``rate`` of positions."""
    k1, k2, k3 = jax.random.split(key, 3)
    chosen = jax.random.bernoulli(k1, config.rate, tokens.shape)
    u = jax.random.uniform(k2, tokens.shape)
    rand = jax.random.randint(k3, tokens.shape, 0, config.vocab_size)
    corrupted = jnp.where(chosen & (u < 0.8), config.mask_token, jnp.where(chosen & (u < 0.9), rand, tokens))
    return corrupted, chosen


def loss(params, state, batch, config: Config, *, key=None, train: bool = False):
    """Masked-token cross-entropy on ``batch["x"]`` (evaluation, ``key`` None, masks with PRNGKey(0))."""
    tokens = batch["x"]
    corrupted, chosen = corrupt(tokens, key if key is not None else jax.random.PRNGKey(0), config)
    logits, state = apply(params, state, corrupted, config)
    labels = jnp.where(chosen, tokens, -100)                      # ignore_index: only chosen positions count
    value = fd.softmax_cross_entropy(logits, labels, ignore_index=-100)
    return value, (state, {"loss": value})


def classify(params, state, x, config: Config, *, mask=None):
    """``(class logits (B, n_classes), state)`` from the mean of the real tokens' states."""
    h = encoder(params, x, config, mask=mask)
    w = jnp.ones(x.shape, h.dtype) if mask is None else mask.astype(h.dtype)
    pooled = jnp.sum(h * w[..., None], 1) / jnp.maximum(jnp.sum(w, 1, keepdims=True), 1)
    return fd.dense(pooled, params["head"]["w"], params["head"]["b"]), state


def build(info: DataInfo, *, n_layer=2, n_head=4, d_model=64):
    if info.vocab_size is None or len(info.input_shape) != 1:
        raise ValueError(f"bert_mlm needs a token data set, not {info.name!r}")
    # one extra id: [MASK]; the positional table holds the training windows (seq_len)
    return as_task(Config(vocab_size=info.vocab_size + 1, max_len=int(info.input_shape[0]), n_layer=n_layer,
                          n_head=n_head, d_model=d_model))


register("bert_mlm", build, data=("tinyshakespeare",),
         defaults={"data": "tinyshakespeare", "steps": 2000, "batch_size": 32, "seq_len": 64, "optimizer": "adamw",
                   "lr": 1e-3, "weight_decay": 0.01, "clip_norm": 1.0},
         description="transformer encoder, masked-token (BERT) pre-training on characters",
         small={"n_layer": 1, "n_head": 2, "d_model": 8},
         small_data=DataInfo("fake-text", (10,), vocab_size=9, kind="language"))
