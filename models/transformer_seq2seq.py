"""A transformer encoder-decoder for the synthetic translation tasks (dates, reverse).

    source -> encoder (bidirectional self-attention, key-padding mask on PAD)
    target shifted right (BOS first) -> decoder blocks: causal self-attention, cross-attention over the
    encoder's states, GELU MLP -> final norm -> logits through the shared token embedding

Training is teacher-forced cross-entropy on the non-PAD target tokens; ``accuracy`` is the exact-match rate of
the argmax sequence, ``token_accuracy`` the share of right tokens. ``decode_greedy`` decodes without the gold
target (recomputing the decoder over the prefix each step). The pre-norm block is ``models.layers.block``.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

import funcdl as fd
from funcdl.training.task import DataInfo

from .layers import block, block_init, encoder, encoder_init, norm_init, positions
from .registry import as_task, register

__all__ = ["Config", "KIND", "init", "apply", "loss", "decode_greedy", "extras"]

KIND = "classification"   # the training loop reports ``accuracy``: here the exact-match rate

PAD, BOS, EOS = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class Config:
    vocab_size: int = 32
    max_len: int = 64              # positional tables of the encoder and the decoder
    tgt_len: int = 16              # tokens ``apply`` decodes
    n_layer: int = 2
    n_head: int = 4
    d_model: int = 64
    d_ff: int | None = None        # default 4 d_model

    def __post_init__(self):
        if self.d_model % self.n_head:
            raise ValueError(f"transformer_seq2seq.Config: n_head ({self.n_head}) must divide d_model "
                             f"({self.d_model})")


def init(key, config: Config):
    k1, k2, k3 = jax.random.split(key, 3)
    enc = encoder_init(k1, config)
    kd = jax.random.split(k2, config.n_layer)
    dec = {"wpe": 0.02 * jax.random.normal(k3, (config.max_len, config.d_model)),
           "blocks": [block_init(kk, config, cross=True) for kk in kd], "ln_f": norm_init(config.d_model)}
    return {"enc": enc, "dec": dec}, {}


def _decode(params, src_states, src_mask, tgt_in, config):
    d = params["dec"]
    x = fd.embedding(params["enc"]["wte"], tgt_in) + positions(d["wpe"], tgt_in.shape[1])   # shared embedding
    for blk in d["blocks"]:
        x = block(blk, x, config, causal=True, context=src_states, context_mask=src_mask)
    return fd.layer_norm(x, d["ln_f"]["w"], d["ln_f"]["b"]) @ params["enc"]["wte"].T


def teacher_forced_logits(params, src, tgt, config: Config):
    """Logits (B, U, V) for targets (B, U), the decoder reading BOS then the gold tokens."""
    src_mask = src != PAD
    states = encoder(params["enc"], src, config, mask=src_mask)
    tgt_in = jnp.concatenate([jnp.full((tgt.shape[0], 1), BOS, tgt.dtype), tgt[:, :-1]], axis=1)
    return _decode(params, states, src_mask, tgt_in, config)


def apply(params, state, x, config: Config, *, key=None, train: bool = False):
    """``(greedy translation (B, tgt_len), state)`` of source ids x (B, S)."""
    return decode_greedy(params, x, config), state


def loss(params, state, batch, config: Config, *, key=None, train: bool = False):
    """Teacher forcing: decoder input BOS + tgt[:-1]; cross-entropy on the non-PAD targets; token accuracy and
    exact-match accuracy of the argmax sequence."""
    tgt = batch["y"]
    logits = teacher_forced_logits(params, batch["x"], tgt, config)
    labels = jnp.where(tgt == PAD, -100, tgt)
    value = fd.softmax_cross_entropy(logits, labels, ignore_index=-100)
    pred = jnp.argmax(logits, -1)
    real = tgt != PAD
    exact = jnp.mean(jnp.all((pred == tgt) | ~real, axis=1))
    return value, (state, {"loss": value, "accuracy": exact,
                           "token_accuracy": jnp.sum((pred == tgt) & real) / jnp.sum(real)})


@functools.partial(jax.jit, static_argnames=("config", "max_len"))
def decode_greedy(params, src, config: Config, max_len: int | None = None):
    """Greedy decoding of ``max_len`` (default ``config.tgt_len``) tokens (B, max_len)."""
    n = max_len or config.tgt_len
    src_mask = src != PAD
    states = encoder(params["enc"], src, config, mask=src_mask)
    out = jnp.full((src.shape[0], n + 1), PAD, src.dtype).at[:, 0].set(BOS)

    def body(i, out):
        logits = _decode(params, states, src_mask, out[:, :-1], config)
        nxt = jnp.argmax(jax.lax.dynamic_index_in_dim(logits, i, axis=1, keepdims=False), -1)
        return out.at[:, i + 1].set(nxt.astype(out.dtype))

    return jax.lax.fori_loop(0, n, body, out)[:, 1:]


def extras(config: Config) -> dict:
    return {"decode_greedy": functools.partial(decode_greedy, config=config)}


def build(info: DataInfo, *, n_layer=2, n_head=4, d_model=64):
    data_extras = info.extras or {}
    if data_extras.get("task") != "seq2seq" or info.vocab_size is None:
        raise ValueError(f"transformer_seq2seq needs a translation data set (dates, reverse), not {info.name!r}")
    src_len, tgt_len = int(data_extras["src_len"]), int(data_extras["tgt_len"])
    return as_task(Config(vocab_size=info.vocab_size, max_len=max(src_len, tgt_len), tgt_len=tgt_len,
                          n_layer=n_layer, n_head=n_head, d_model=d_model))


register("transformer_seq2seq", build, data=("dates", "reverse"),
         defaults={"data": "dates", "epochs": 8, "batch_size": 64, "optimizer": "adamw", "lr": 1e-3,
                   "weight_decay": 0.01, "clip_norm": 1.0, "monitor": "val_accuracy"},
         description="transformer encoder-decoder (cross-attention), teacher forcing; accuracy = exact match",
         small={"n_layer": 1, "n_head": 2, "d_model": 8},
         small_data=DataInfo("fake-dates", (9,), vocab_size=12,
                             extras={"task": "seq2seq", "src_len": 9, "tgt_len": 6, "pad": PAD, "bos": BOS,
                                     "eos": EOS}))
