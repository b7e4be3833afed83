"""Encoder-decoder with additive (Bahdanau) attention, teacher forcing, greedy and beam-search decoding.

    encoder:  h_j = [h_j(fwd); h_j(bwd)] = bidirectional GRU over the embedded source (padding masked)
    bridge:   s_0 = tanh([h_fwd final; h_bwd final] W_b + b_b)
    step t:   e_tj = v^T tanh(s_{t-1} W_s + h_j W_h + b_a)          additive attention scores (Bahdanau 2015)
              a_t = softmax_j(e_tj over real source positions),  c_t = sum_j a_tj h_j     (the context)
              s_t = GRU([emb(y_{t-1}); c_t], s_{t-1})
              logits_t = [s_t; c_t; emb(y_{t-1})] W_o + b_o

Training uses teacher forcing: the decoder reads the gold previous token. Every piece is a funcdl primitive
(embedding, the bidirectional ``gru`` with its hand-written BPTT, ``gru_cell``, dense, tanh, softmax,
cross-entropy), so ``jax.grad`` runs the hand-derived rules; the decoder loop is a ``lax.scan`` over cells.

Metrics: ``accuracy`` is the exact-match rate under teacher forcing, which equals greedy decoding's exact
match: if every argmax is right given the gold prefix, greedy decoding reproduces the gold prefix step by step.
``decode_greedy`` and ``decode_beam`` decode without the gold; ``exact_match`` scores a whole split.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

import funcdl as fd
from funcdl.nn.losses import softmax_cross_entropy
from funcdl.training.task import DataInfo

from .registry import as_task, register
from .rnn import StackConfig, init_stack, stack

__all__ = ["Config", "KIND", "init", "apply", "loss", "encode", "decoder_step", "teacher_forced_logits",
           "decode_greedy", "decode_beam", "exact_match", "extras"]

KIND = "classification"   # the training loop reports ``accuracy``: here the exact-match rate

PAD, BOS, EOS = 0, 1, 2
_NEG = -1e9


@dataclasses.dataclass(frozen=True)
class Config:
    vocab_size: int
    tgt_len: int
    embed: int = 32
    enc_hidden: int = 64
    dec_hidden: int = 128
    attn: int = 64

    @property
    def enc_stack(self) -> StackConfig:
        return StackConfig("gru", self.embed, self.enc_hidden, 1, bidirectional=True)


def _uniform(key, shape, fan_in):
    b = 1.0 / math.sqrt(fan_in)
    return jax.random.uniform(key, shape, minval=-b, maxval=b)


def init(key, config: Config):
    k = jax.random.split(key, 12)
    e, he, hd, a, v = config.embed, 2 * config.enc_hidden, config.dec_hidden, config.attn, config.vocab_size
    n_out = hd + he + e
    return {
        "src_embed": 0.3 * jax.random.normal(k[0], (v, e)),
        "tgt_embed": 0.3 * jax.random.normal(k[1], (v, e)),
        "encoder": init_stack(k[2], config.enc_stack),
        "bridge": {"w": _uniform(k[3], (he, hd), he), "b": jnp.zeros((hd,))},
        "attn": {"w_s": _uniform(k[4], (hd, a), hd), "w_h": _uniform(k[5], (he, a), he), "b": jnp.zeros((a,)),
                 "v": _uniform(k[6], (a, 1), a)},
        "decoder": {"w_ih": _uniform(k[7], (e + he, 3 * hd), hd), "w_hh": _uniform(k[8], (hd, 3 * hd), hd),
                    "b_ih": _uniform(k[9], (3 * hd,), hd), "b_hh": _uniform(k[10], (3 * hd,), hd)},
        "out": {"w": _uniform(k[11], (n_out, v), n_out), "b": jnp.zeros((v,))},
    }, {}


def encode(params, src, config: Config):
    """Source ids (B, S) -> (annotations (B, S, 2He), their attention keys h W_h (B, S, A), mask (B, S), s_0)."""
    mask = src != PAD
    x = fd.embedding(params["src_embed"], src)
    hs, h_n, _ = stack(params["encoder"], x, config.enc_stack, mask=mask)
    s0 = fd.tanh(fd.dense(jnp.concatenate([h_n[0], h_n[1]], axis=-1), params["bridge"]["w"], params["bridge"]["b"]))
    keys = fd.dense(hs, params["attn"]["w_h"])              # precomputed once: the part of e_tj that depends on j
    return hs, keys, mask, s0


def attention(params, s, hs, keys, mask):
    """Additive attention: weights (B, S) and context (B, 2He) for the decoder state s (B, Hd)."""
    query = fd.dense(s, params["attn"]["w_s"], params["attn"]["b"])          # (B, A)
    scores = fd.dense(fd.tanh(keys + query[:, None, :]), params["attn"]["v"])[..., 0]
    scores = jnp.where(mask, scores, _NEG)                                     # padding gets zero weight
    weights = fd.softmax(scores, axis=-1)
    return weights, jnp.einsum("bs,bsd->bd", weights, hs)


def decoder_step(params, s, tok, enc):
    """One decoder step from state s (B, Hd) and previous token ids (B,): (logits (B, V), s', attention)."""
    hs, keys, mask = enc
    emb = fd.embedding(params["tgt_embed"], tok)
    weights, ctx = attention(params, s, hs, keys, mask)
    d = params["decoder"]
    s = fd.gru_cell(jnp.concatenate([emb, ctx], axis=-1), s, d["w_ih"], d["w_hh"], d["b_ih"], d["b_hh"])
    logits = fd.dense(jnp.concatenate([s, ctx, emb], axis=-1), params["out"]["w"], params["out"]["b"])
    return logits, s, weights


def teacher_forced_logits(params, src, tgt, config: Config):
    """Logits (B, U, V) for targets (B, U), the decoder reading BOS then the gold tokens."""
    hs, keys, mask, s0 = encode(params, src, config)
    prev = jnp.concatenate([jnp.full((tgt.shape[0], 1), BOS, tgt.dtype), tgt[:, :-1]], axis=1)

    def body(s, tok):
        logits, s, _ = decoder_step(params, s, tok, (hs, keys, mask))
        return s, logits

    _, logits = jax.lax.scan(body, s0, prev.T)
    return jnp.swapaxes(logits, 0, 1)


def apply(params, state, x, config: Config, *, key=None, train: bool = False):
    """``(greedy translation (B, tgt_len), state)`` of source ids x (B, S)."""
    return decode_greedy(params, x, config)[0], state


def loss(params, state, batch, config: Config, *, key=None, train: bool = False):
    """Teacher-forced cross-entropy on the target tokens up to EOS; exact-match and token accuracy."""
    src, tgt = batch["x"], batch["y"]
    logits = teacher_forced_logits(params, src, tgt, config)
    valid = tgt != PAD                      # EOS counts (the model must learn to stop), padding after it does not
    labels = jnp.where(valid, tgt, -100)
    value = softmax_cross_entropy(logits, labels, ignore_index=-100)
    right = (jnp.argmax(logits, -1) == tgt) | ~valid
    return value, (state, {"loss": value, "accuracy": jnp.mean(jnp.all(right, axis=1)),
                           "token_accuracy": jnp.sum(right & valid) / jnp.sum(valid)})


def extras(config: Config) -> dict:
    return {"decode_greedy": functools.partial(decode_greedy, config=config),
            "decode_beam": functools.partial(decode_beam, config=config)}


# ----------------------------------------------------------------------------------------------- decoding
@functools.partial(jax.jit, static_argnames=("config", "max_len"))
def decode_greedy(params, src, config: Config, max_len: int | None = None):
    """Greedy decoding: (tokens (B, U), attention weights (B, U, S)). After EOS the tokens are PAD."""
    hs, keys, mask, s0 = encode(params, src, config)
    n = max_len or config.tgt_len

    def body(carry, _):
        s, tok, done = carry
        logits, s, w = decoder_step(params, s, tok, (hs, keys, mask))
        nxt = jnp.where(done, PAD, jnp.argmax(logits, -1).astype(src.dtype))
        done = done | (nxt == EOS)
        return (s, nxt, done), (nxt, w)

    start = jnp.full((src.shape[0],), BOS, src.dtype)
    _, (toks, ws) = jax.lax.scan(body, (s0, start, jnp.zeros(src.shape[0], bool)), None, length=n)
    return toks.T, jnp.swapaxes(ws, 0, 1)


@functools.partial(jax.jit, static_argnames=("config", "beam", "max_len", "length_penalty"))
def decode_beam(params, src, config: Config, beam: int = 4, max_len: int | None = None,
                length_penalty: float = 0.0):
    """Beam search: keep the ``beam`` best partial translations by total log-probability; a finished beam
    (it emitted EOS) only extends with PAD at no cost. The winner maximises score / length**length_penalty.
    Returns (tokens (B, U) of the best beam, its score (B,))."""
    b, n, k, v = src.shape[0], max_len or config.tgt_len, beam, config.vocab_size
    hs, keys, mask, s0 = encode(params, src, config)
    rep = lambda a: jnp.repeat(a, k, axis=0)                       # (B, ...) -> (B*K, ...), beam-minor
    enc = (rep(hs), rep(keys), rep(mask))
    scores = jnp.tile(jnp.array([0.0] + [-jnp.inf] * (k - 1)), (b, 1))      # one live beam at the start
    hist = jnp.zeros((b, k, n), src.dtype)
    carry = (rep(s0), jnp.full((b * k,), BOS, src.dtype), scores, jnp.zeros((b, k), bool), hist,
             jnp.zeros((b, k)))
    pad_only = jnp.full((v,), -jnp.inf).at[PAD].set(0.0)

    def body(carry, t):
        s, tok, scores, done, hist, length = carry
        logits, s, _ = decoder_step(params, s, tok, enc)
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1).reshape(b, k, v)
        logp = jnp.where(done[..., None], pad_only, logp)
        cand = (scores[..., None] + logp).reshape(b, k * v)
        scores, idx = jax.lax.top_k(cand, k)                          # (B, K)
        src_beam, tok_new = idx // v, (idx % v).astype(src.dtype)
        take = lambda a: jnp.take_along_axis(a, src_beam.reshape(b, k, *([1] * (a.ndim - 2))), axis=1)
        hist = take(hist).at[:, :, t].set(tok_new)
        was_done = take(done)
        length = take(length) + (~was_done)
        done = was_done | (tok_new == EOS)
        s = take(s.reshape(b, k, -1)).reshape(b * k, -1)
        return (s, tok_new.reshape(-1), scores, done, hist, length), None

    (s, tok, scores, done, hist, length), _ = jax.lax.scan(body, carry, jnp.arange(n))
    final = scores / jnp.maximum(length, 1.0) ** length_penalty if length_penalty else scores
    best = jnp.argmax(final, axis=1)
    return jnp.take_along_axis(hist, best[:, None, None], axis=1)[:, 0], jnp.take_along_axis(scores, best[:, None],
                                                                                              axis=1)[:, 0]


def exact_match(params, src, tgt, config: Config, method: str = "greedy", beam: int = 4,
                batch_size: int = 500) -> float:
    """Share of examples whose decoded tokens up to and including EOS equal the target's."""
    if method not in ("greedy", "beam"):
        raise ValueError(f"exact_match: method must be 'greedy' or 'beam', got {method!r}")
    hits = 0
    src, tgt = np.asarray(src), np.asarray(tgt)
    for i in range(0, len(src), batch_size):
        s = jnp.asarray(src[i:i + batch_size])
        toks = decode_greedy(params, s, config)[0] if method == "greedy" else decode_beam(params, s, config, beam)[0]
        toks, want = np.asarray(toks), tgt[i:i + batch_size]
        n = min(toks.shape[1], want.shape[1])
        hits += int(np.sum(np.all((toks[:, :n] == want[:, :n]) | (want[:, :n] == PAD), axis=1)))
    return hits / len(src)


def build(info: DataInfo, *, embed=32, enc_hidden=64, dec_hidden=128, attn=64):
    data_extras = info.extras or {}
    if data_extras.get("task") != "seq2seq" or info.vocab_size is None:
        raise ValueError(f"seq2seq needs a translation data set (dates, reverse), not {info.name!r}")
    return as_task(Config(info.vocab_size, int(data_extras["tgt_len"]), int(embed), int(enc_hidden), int(dec_hidden),
                          int(attn)))


register("seq2seq", build, data=("dates", "reverse"),
         defaults={"data": "dates", "epochs": 8, "batch_size": 64, "optimizer": "adam", "lr": 3e-3, "clip_norm": 1.0,
                   "monitor": "val_accuracy"},
         description="GRU encoder-decoder with additive (Bahdanau) attention; accuracy = exact match",
         small={"embed": 6, "enc_hidden": 5, "dec_hidden": 7, "attn": 4},
         small_data=DataInfo("fake-dates", (9,), vocab_size=12,
                             extras={"task": "seq2seq", "src_len": 9, "tgt_len": 6, "pad": PAD, "bos": BOS,
                                     "eos": EOS}))
