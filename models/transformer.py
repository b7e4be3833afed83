"""Transformers beyond GPT: an encoder with masked-token pre-training and a classification head, an
encoder-decoder for the synthetic translation tasks, and a small vision transformer (ViT) on image patches.

All three share one pre-norm block (``funcdl.layer_norm`` -> ``funcdl.multi_head_attention`` -> residual ->
``funcdl.layer_norm`` -> ``funcdl.gelu_mlp`` -> residual); the decoder block adds causal self-attention and
cross-attention over the encoder's outputs. Every piece is a funcdl primitive with a hand-derived backward.

* ``encoder``: bidirectional self-attention with a key-padding mask. ``mlm_loss`` masks a random 15% of the
  tokens (BERT's 80/10/10 replacement) and predicts them through the tied embedding; ``classify`` mean-pools
  the real tokens into a linear head.
* ``seq2seq``: source -> encoder; target (shifted right, BOS first) -> decoder with causal self-attention and
  cross-attention; teacher-forced cross-entropy on the non-PAD target tokens; greedy decoding.
* ``vit``: an image (H, W, C) cut into p x p patches, each flattened and projected, a learned [CLS] token and
  positions, the encoder, and a linear head on [CLS].
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

import funcdl as fd
from funcdl.nn import feedforward as ff
from funcdl.nn.attention import mha_init
from funcdl.training.task import DataInfo, Task

from .registry import register

__all__ = ["TransformerConfig", "block_init", "encoder", "encoder_init", "mlm_loss", "classify", "seq2seq_init",
           "seq2seq_loss", "seq2seq_greedy", "vit_init", "vit_apply"]

PAD, BOS, EOS = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    vocab_size: int = 32
    max_len: int = 64
    n_layer: int = 2
    n_head: int = 4
    d_model: int = 64
    d_ff: int | None = None        # default 4 d_model
    n_classes: int = 0
    dropout: float = 0.0
    patch: int = 7                 # ViT patch size
    image_shape: tuple = (28, 28, 1)

    def __post_init__(self):
        if self.d_model % self.n_head:
            raise ValueError(f"TransformerConfig: n_head ({self.n_head}) must divide d_model ({self.d_model})")


def _norm(d):
    return {"w": jnp.ones((d,)), "b": jnp.zeros((d,))}


def block_init(key, cfg: TransformerConfig, cross: bool = False) -> dict:
    d, f = cfg.d_model, cfg.d_ff or 4 * cfg.d_model
    k = jax.random.split(key, 3)
    p = {"ln_1": _norm(d), "attn": mha_init(k[0], d, cfg.n_head, std=0.02), "ln_2": _norm(d),
         "mlp": ff.gelu_mlp_init(k[1], d, f)}
    if cross:
        p["ln_x"] = _norm(d)
        p["cross"] = mha_init(k[2], d, cfg.n_head, std=0.02)
    return p


def _block(p, x, cfg, *, mask=None, causal=False, context=None, context_mask=None):
    h = fd.layer_norm(x, p["ln_1"]["w"], p["ln_1"]["b"])
    x = x + fd.multi_head_attention(p["attn"], h, n_heads=cfg.n_head, key_padding_mask=mask, causal=causal)
    if context is not None:
        h = fd.layer_norm(x, p["ln_x"]["w"], p["ln_x"]["b"])
        x = x + fd.multi_head_attention(p["cross"], h, context, n_heads=cfg.n_head, key_padding_mask=context_mask)
    h = fd.layer_norm(x, p["ln_2"]["w"], p["ln_2"]["b"])
    m = p["mlp"]
    return x + fd.gelu_mlp(h, m["w1"], m["b1"], m["w2"], m["b2"])


def _positions(table, t):
    if t > table.shape[0]:
        raise ValueError(f"transformer: a sequence of {t} positions is longer than the positional table "
                         f"({table.shape[0]}); build the model with a larger max_len")
    return table[:t]


# ------------------------------------------------------------------------------------------------ encoder
def encoder_init(key, cfg: TransformerConfig) -> dict:
    k = jax.random.split(key, cfg.n_layer + 3)
    p = {"wte": 0.02 * jax.random.normal(k[0], (cfg.vocab_size, cfg.d_model)),
         "wpe": 0.02 * jax.random.normal(k[1], (cfg.max_len, cfg.d_model)),
         "blocks": [block_init(kk, cfg) for kk in k[3:]], "ln_f": _norm(cfg.d_model)}
    if cfg.n_classes:
        p["head"] = {"w": 0.02 * jax.random.normal(k[2], (cfg.d_model, cfg.n_classes)), "b": jnp.zeros(cfg.n_classes)}
    return p


def encoder(params, tokens, cfg: TransformerConfig, mask=None):
    """(B, T) ids -> (B, T, D) contextual states; ``mask`` (B, T) True for real tokens."""
    x = fd.embedding(params["wte"], tokens) + _positions(params["wpe"], tokens.shape[1])
    return _stack(params, x, cfg, mask)


def _stack(params, x, cfg, mask):
    for blk in params["blocks"]:
        x = _block(blk, x, cfg, mask=mask)
    return fd.layer_norm(x, params["ln_f"]["w"], params["ln_f"]["b"])


def mlm_loss(params, tokens, key, cfg: TransformerConfig, *, mask_token: int, rate: float = 0.15):
    """BERT's masked-token objective: choose 15% of the positions; replace 80% of them by ``mask_token``, 10% by
    a random token, keep 10%; predict the original token there (cross-entropy through the tied embedding)."""
    k1, k2, k3 = jax.random.split(key, 3)
    chosen = jax.random.bernoulli(k1, rate, tokens.shape)
    u = jax.random.uniform(k2, tokens.shape)
    rand = jax.random.randint(k3, tokens.shape, 0, cfg.vocab_size)
    corrupted = jnp.where(chosen & (u < 0.8), mask_token, jnp.where(chosen & (u < 0.9), rand, tokens))
    h = encoder(params, corrupted, cfg)
    logits = h @ params["wte"].T
    labels = jnp.where(chosen, tokens, -100)                      # ignore_index: only chosen positions count
    return fd.softmax_cross_entropy(logits, labels, ignore_index=-100)


def classify(params, tokens, cfg: TransformerConfig, mask=None):
    """Class logits from the mean of the real tokens' states."""
    h = encoder(params, tokens, cfg, mask)
    w = jnp.ones(tokens.shape, h.dtype) if mask is None else mask.astype(h.dtype)
    pooled = jnp.sum(h * w[..., None], 1) / jnp.maximum(jnp.sum(w, 1, keepdims=True), 1)
    return fd.dense(pooled, params["head"]["w"], params["head"]["b"])


# ------------------------------------------------------------------------------------------ encoder-decoder
def seq2seq_init(key, cfg: TransformerConfig) -> dict:
    k1, k2, k3 = jax.random.split(key, 3)
    enc = encoder_init(k1, cfg)
    kd = jax.random.split(k2, cfg.n_layer)
    return {"enc": enc, "dec": {"wpe": 0.02 * jax.random.normal(k3, (cfg.max_len, cfg.d_model)),
                                "blocks": [block_init(kk, cfg, cross=True) for kk in kd], "ln_f": _norm(cfg.d_model)}}


def _decode(params, src_states, src_mask, tgt_in, cfg):
    d = params["dec"]
    x = fd.embedding(params["enc"]["wte"], tgt_in) + _positions(d["wpe"], tgt_in.shape[1])   # shared embedding
    for blk in d["blocks"]:
        x = _block(blk, x, cfg, causal=True, context=src_states, context_mask=src_mask)
    return fd.layer_norm(x, d["ln_f"]["w"], d["ln_f"]["b"]) @ params["enc"]["wte"].T


def seq2seq_loss(params, src, tgt, cfg: TransformerConfig):
    """Teacher forcing: decoder input BOS + tgt[:-1]; cross-entropy on the non-PAD targets; token accuracy and
    exact-match accuracy of the argmax sequence."""
    src_mask = src != PAD
    states = encoder(params["enc"], src, cfg, src_mask)
    tgt_in = jnp.concatenate([jnp.full((tgt.shape[0], 1), BOS, tgt.dtype), tgt[:, :-1]], axis=1)
    logits = _decode(params, states, src_mask, tgt_in, cfg)
    labels = jnp.where(tgt == PAD, -100, tgt)
    value = fd.softmax_cross_entropy(logits, labels, ignore_index=-100)
    pred = jnp.argmax(logits, -1)
    real = tgt != PAD
    exact = jnp.mean(jnp.all((pred == tgt) | ~real, axis=1))
    return value, {"loss": value, "accuracy": exact, "token_accuracy": jnp.sum((pred == tgt) & real) / jnp.sum(real)}


@functools.partial(jax.jit, static_argnames=("cfg", "length"))
def seq2seq_greedy(params, src, cfg: TransformerConfig, length: int):
    """Greedy decoding of ``length`` tokens (recomputing the decoder over the prefix each step)."""
    src_mask = src != PAD
    states = encoder(params["enc"], src, cfg, src_mask)
    out = jnp.full((src.shape[0], length + 1), PAD, src.dtype).at[:, 0].set(BOS)

    def body(i, out):
        logits = _decode(params, states, src_mask, out[:, :-1], cfg)
        nxt = jnp.argmax(jax.lax.dynamic_index_in_dim(logits, i, axis=1, keepdims=False), -1)
        return out.at[:, i + 1].set(nxt.astype(out.dtype))

    return jax.lax.fori_loop(0, length, body, out)[:, 1:]


# ------------------------------------------------------------------------------------------------------ ViT
def vit_init(key, cfg: TransformerConfig) -> dict:
    h, w, c = cfg.image_shape
    if h % cfg.patch or w % cfg.patch:
        raise ValueError(f"vit: patch size {cfg.patch} must divide the image size {h}x{w}")
    n = (h // cfg.patch) * (w // cfg.patch)
    k = jax.random.split(key, cfg.n_layer + 4)
    pdim = cfg.patch * cfg.patch * c
    return {"patch": {"w": jax.random.normal(k[0], (pdim, cfg.d_model)) / math.sqrt(pdim), "b": jnp.zeros(cfg.d_model)},
            "cls": 0.02 * jax.random.normal(k[1], (1, 1, cfg.d_model)),
            "wpe": 0.02 * jax.random.normal(k[2], (n + 1, cfg.d_model)),
            "blocks": [block_init(kk, cfg) for kk in k[4:]], "ln_f": _norm(cfg.d_model),
            "head": {"w": 0.02 * jax.random.normal(k[3], (cfg.d_model, cfg.n_classes)), "b": jnp.zeros(cfg.n_classes)}}


def patches(images, p):
    """(B, H, W, C) -> (B, (H/p)(W/p), p p C), row-major patches."""
    b, h, w, c = images.shape
    x = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def vit_apply(params, images, cfg: TransformerConfig):
    if images.ndim == 3:
        images = images[..., None]
    x = fd.dense(patches(images, cfg.patch), params["patch"]["w"], params["patch"]["b"])
    cls = jnp.broadcast_to(params["cls"], (x.shape[0], 1, x.shape[2]))
    x = jnp.concatenate([cls, x], axis=1) + _positions(params["wpe"], x.shape[1] + 1)
    for blk in params["blocks"]:
        x = _block(blk, x, cfg)
    h = fd.layer_norm(x[:, 0], params["ln_f"]["w"], params["ln_f"]["b"])
    return fd.dense(h, params["head"]["w"], params["head"]["b"])


# ------------------------------------------------------------------------------------------------ registry
def _build_vit(info: DataInfo, n_layer=4, n_head=4, d_model=64, patch=7, **_):
    if info.num_classes is None or len(info.input_shape) < 2:
        raise ValueError(f"vit needs an image classification data set, not {info.name!r}")
    shape = tuple(info.input_shape) + ((1,) if len(info.input_shape) == 2 else ())
    cfg = TransformerConfig(n_layer=n_layer, n_head=n_head, d_model=d_model, patch=patch, image_shape=shape,
                            n_classes=info.num_classes)

    def loss(params, state, batch, key, train):
        logits = vit_apply(params, batch["x"], cfg)
        value = fd.softmax_cross_entropy(logits, batch["y"])
        return value, (state, {"loss": value, "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["y"])})

    return Task(lambda key: (vit_init(key, cfg), {}), loss, "classification",
                apply=lambda params, state, x: vit_apply(params, x, cfg), extras={"config": cfg})


def _build_seq2seq(info: DataInfo, n_layer=2, n_head=4, d_model=64, **_):
    extras = info.extras or {}
    if extras.get("task") != "seq2seq":
        raise ValueError(f"transformer_seq2seq needs a translation data set (dates, reverse), not {info.name!r}")
    cfg = TransformerConfig(vocab_size=info.vocab_size, max_len=max(int(extras["src_len"]), int(extras["tgt_len"])),
                            n_layer=n_layer, n_head=n_head, d_model=d_model)

    def loss(params, state, batch, key, train):
        value, metrics = seq2seq_loss(params, batch["x"], batch["y"], cfg)
        return value, (state, metrics)

    return Task(lambda key: (seq2seq_init(key, cfg), {}), loss, "classification",
                apply=lambda params, state, x: seq2seq_greedy(params, x, cfg, int(extras["tgt_len"])),
                extras={"config": cfg})


def _build_mlm(info: DataInfo, n_layer=2, n_head=4, d_model=64, seq_len=64, **_):
    if info.vocab_size is None:
        raise ValueError(f"bert_mlm needs a token data set, not {info.name!r}")
    cfg = TransformerConfig(vocab_size=info.vocab_size + 1, max_len=seq_len, n_layer=n_layer, n_head=n_head,
                            d_model=d_model)
    mask_token = info.vocab_size                                   # one extra id: [MASK]

    def loss(params, state, batch, key, train):
        k = key if key is not None else jax.random.PRNGKey(0)
        value = mlm_loss(params, batch["x"], k, cfg, mask_token=mask_token)
        return value, (state, {"loss": value})

    return Task(lambda key: (encoder_init(key, cfg), {}), loss, "language", extras={"config": cfg})


register("vit", _build_vit, data=("mnist", "digits", "fashion_mnist"),
         defaults={"data": "mnist", "epochs": 3, "batch_size": 128, "optimizer": "adamw", "lr": 1e-3,
                   "weight_decay": 0.05, "schedule": "cosine", "warmup_steps": 100, "clip_norm": 1.0},
         description="vision transformer: 7x7 patches of 28x28 images, [CLS] token, 4 pre-norm blocks")
register("transformer_seq2seq", _build_seq2seq, data=("dates", "reverse"),
         defaults={"data": "dates", "epochs": 8, "batch_size": 64, "optimizer": "adamw", "lr": 1e-3,
                   "weight_decay": 0.01, "clip_norm": 1.0, "monitor": "val_accuracy"},
         description="transformer encoder-decoder (cross-attention), teacher forcing; accuracy = exact match")
register("bert_mlm", _build_mlm, data=("tinyshakespeare",),
         defaults={"data": "tinyshakespeare", "steps": 2000, "batch_size": 32, "seq_len": 64, "optimizer": "adamw",
                   "lr": 1e-3, "weight_decay": 0.01, "clip_norm": 1.0},
         description="transformer encoder, masked-token (BERT) pre-training on characters")
