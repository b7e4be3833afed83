"""Question answering with a transformer encoder-decoder in two styles: T5's and BART's.

    source (question, "context :", context) -> encoder -> states
    answer shifted right (BOS first) -> decoder (causal self-attention, cross-attention over the states)
    -> logits through the shared (tied) token embedding

The two styles differ where the papers differ (Raffel et al. 2020, "T5"; Lewis et al. 2020, "BART"):

================  ==========================================  ==========================================
                  ``style="t5"``                              ``style="bart"``
================  ==========================================  ==========================================
positions         relative position bias, no absolute         learned absolute positions (one table per
                  positions (below)                           stack), then a LayerNorm of the embedding
norm placement    pre-LN: x + f(norm(x)); a final norm per    post-LN: norm(x + f(x)); no final norm
                  stack
norm              RMSNorm, a scale and no bias                LayerNorm, scale and bias
MLP               ReLU, no biases                             GELU (exact), with biases
dense layers      no biases; attention scores not scaled      biases; scores scaled by 1/sqrt(d_head)
                  (1/sqrt(d_head) folded into the q init)
output            tied embedding, the state scaled by         tied embedding
                  d_model^-1/2 first
================  ==========================================  ==========================================

**Relative position bias (T5).** Attention adds a learned scalar per head to every score, indexed by the
*bucket* of the relative position r = j - i (key position minus query position): s_ij = q_i . k_j + B[h,
bucket(j - i)]. One table (num_buckets, n_head) per stack, computed once and shared by all its layers; the
cross-attention has none. The buckets (``relative_position_bucket``): the encoder is bidirectional, so half the
buckets are for keys after the query (r > 0) and half for the others; the decoder is causal and uses all the
buckets for n = max(-r, 0). Within a half of size m: the first m/2 buckets are exact distances 0 .. m/2 - 1, and
the distances from m/2 to ``max_distance`` share the other m/2 buckets logarithmically,
bucket = m/2 + floor(log(n / (m/2)) / log(max_distance / (m/2)) * (m/2)), capped at m - 1 (so every distance
beyond max_distance lands in the last bucket). The bucket of every (i, j) is an integer constant of the sequence
lengths, computed in NumPy at trace time; the bias is ``fd.embedding(table, buckets)`` (T, S, H), whose
hand-derived backward scatters dS (summed over the batch) into the table rows. Unlike T5, the table starts as
a locality prior (``_relative_init``) rather than small noise.

**The exact-match input feature** (DrQA's, Chen et al. 2017; on by default, ``--set match_feature=false`` for
the plain T5/BART): the encoder adds a learned vector to the embedding of every context word that also occurs in
the question, and of every question word that occurs in the context (``exact_match_feature``; the source is
question, ``context``, context). The subject of "what pet does vera own ?" is then marked where the context
names it, and the answer is the value next to the mark. Without it the model reads the right relation but, when
two people have a fact of that relation, often the other person's value (test exact match 82% after 8000 steps,
88% after 20000); with it the task is learned in ~2000 steps.

Training is teacher-forced cross-entropy on the non-PAD answer tokens (``accuracy`` is the exact-match rate of
the argmax sequence under teacher forcing, which equals greedy decoding's: a right argmax at every gold prefix
reproduces the gold prefix). ``decode_greedy`` and ``decode_beam`` (beam search with a length penalty) decode
without the gold answer, recomputing the decoder over the prefix at every step (the answers are a few tokens).
``report`` (the end of a ``funcdl train`` run) scores the test split with the SQuAD exact match and F1 of the
normalised answer strings, greedy and beam. Left out of both styles: dropout, BART's offset of 2 in the position
table and its (untrained, zero) final logits bias.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import funcdl as fd
from funcdl.nn.attention import attend, merge_heads, qkv_projection
from funcdl.training.task import DataInfo

from .registry import as_task, register

__all__ = ["Config", "KIND", "STYLES", "init", "apply", "loss", "encode", "teacher_forced_logits",
           "relative_position_bucket", "relative_bias", "sequence_logprob", "decode_greedy", "decode_beam",
           "predict", "extras"]

KIND = "classification"     # the training loop reports ``accuracy``: the exact-match rate under teacher forcing
STYLES = ("t5", "bart")
PAD, BOS, EOS = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class Config:
    vocab_size: int = 32
    src_len: int = 48              # the longest source (BART: the encoder's position table)
    tgt_len: int = 4               # answer tokens with EOS (BART: the decoder's position table)
    style: str = "t5"
    n_layer: int = 2               # per stack
    n_head: int = 4
    d_model: int = 64
    d_ff: int | None = None        # default 4 d_model
    num_buckets: int = 32          # T5's relative positions
    max_distance: int = 128
    question_end: int = -1         # >= 0: the id ending the question; adds the exact-match input feature
    beam: int = 4                  # what ``report`` decodes with
    length_penalty: float = 1.0

    def __post_init__(self):
        if self.style not in STYLES:
            raise ValueError(f"qa.Config: unknown style {self.style!r}; valid styles: {', '.join(STYLES)}")
        if self.n_head <= 0 or self.d_model % self.n_head:
            raise ValueError(f"qa.Config: n_head ({self.n_head}) must divide d_model ({self.d_model})")
        if self.num_buckets < 4 or self.num_buckets % 2 or self.max_distance <= self.num_buckets // 2:
            raise ValueError(f"qa.Config: need an even num_buckets >= 4 ({self.num_buckets}) and max_distance "
                             f"({self.max_distance}) > num_buckets / 2")
        if min(self.vocab_size, self.src_len, self.tgt_len, self.n_layer, self.beam) < 1:
            raise ValueError("qa.Config: vocab_size, src_len, tgt_len, n_layer and beam must be positive")

    @property
    def t5(self) -> bool:
        return self.style == "t5"


# ----------------------------------------------------------------------------------------- relative positions
def relative_position_bucket(relative, *, bidirectional: bool, num_buckets: int = 32, max_distance: int = 128):
    """T5's bucket (int array) of each relative position ``relative`` = key position - query position.

    Bidirectional: buckets 0 .. nb/2 - 1 for r <= 0 and nb/2 .. nb - 1 for r > 0, each half split as below with
    m = nb/2. Causal: n = max(-r, 0) (a future key, masked anyway, shares bucket 0) and m = nb. Then with
    e = m/2: n < e -> bucket n; otherwise e + floor(log(n/e) / log(max_distance/e) * (m - e)), capped at m - 1.
    The logarithm is taken in float32, as T5 does, so the boundaries fall where they fall in T5.
    """
    r = np.asarray(relative, np.int64)
    if bidirectional:
        m = num_buckets // 2
        offset, n = np.where(r > 0, m, 0), np.abs(r)
    else:
        m = num_buckets
        offset, n = np.zeros_like(r), np.maximum(-r, 0)
    exact = m // 2
    ratio = np.maximum(n, exact).astype(np.float32) / np.float32(exact)
    large = exact + (np.log(ratio) / np.float32(math.log(max_distance / exact)) * np.float32(m - exact))
    large = np.minimum(large.astype(np.int64), m - 1)
    return offset + np.where(n < exact, n, large)


def relative_bias(table, q_len: int, k_len: int, *, bidirectional: bool, config: Config):
    """The additive attention bias (1, H, T, S) of a bucket table (num_buckets, H) for T queries, S keys."""
    rel = np.arange(k_len)[None, :] - np.arange(q_len)[:, None]
    buckets = relative_position_bucket(rel, bidirectional=bidirectional, num_buckets=config.num_buckets,
                                       max_distance=config.max_distance)
    return jnp.transpose(fd.embedding(table, jnp.asarray(buckets, jnp.int32)), (2, 0, 1))[None]


# ----------------------------------------------------------------------------------------------- parameters
def _norm_init(config: Config) -> dict:
    d = config.d_model
    return {"w": jnp.ones((d,))} if config.t5 else {"w": jnp.ones((d,)), "b": jnp.zeros((d,))}


def _attn_init(key, config: Config) -> dict:
    """T5 (mesh-tf / HF init): q ~ N(0, 1/(D dh)) (the 1/sqrt(dh) of the scores lives here), k, v ~ N(0, 1/D),
    o ~ N(0, 1/(H dh)), no biases. BART: every weight N(0, 0.02^2), zero biases."""
    d, h = config.d_model, config.n_head
    dh = d // h
    kq, kkv, ko = jax.random.split(key, 3)
    if config.t5:
        q = jax.random.normal(kq, (d, d)) / math.sqrt(d * dh)
        kv = jax.random.normal(kkv, (d, 2 * d)) / math.sqrt(d)
        return {"w_qkv": jnp.concatenate([q, kv], axis=1), "w_o": jax.random.normal(ko, (d, d)) / math.sqrt(d)}
    return {"w_qkv": 0.02 * jax.random.normal(kq, (d, 3 * d)), "b_qkv": jnp.zeros((3 * d,)),
            "w_o": 0.02 * jax.random.normal(ko, (d, d)), "b_o": jnp.zeros((d,))}


def _mlp_init(key, config: Config) -> dict:
    d, f = config.d_model, config.d_ff or 4 * config.d_model
    k1, k2 = jax.random.split(key)
    if config.t5:
        return {"w1": jax.random.normal(k1, (d, f)) / math.sqrt(d), "w2": jax.random.normal(k2, (f, d)) / math.sqrt(f)}
    return {"w1": 0.02 * jax.random.normal(k1, (d, f)), "b1": jnp.zeros((f,)),
            "w2": 0.02 * jax.random.normal(k2, (f, d)), "b2": jnp.zeros((d,))}


def _stack_init(key, config: Config, decoder: bool) -> dict:
    ks = jax.random.split(key, config.n_layer + 1)
    blocks = []
    for k in ks[1:]:
        k1, k2, k3 = jax.random.split(k, 3)
        b = {"ln_1": _norm_init(config), "attn": _attn_init(k1, config), "ln_2": _norm_init(config),
             "mlp": _mlp_init(k2, config)}
        if decoder:
            b |= {"ln_x": _norm_init(config), "cross": _attn_init(k3, config)}
        blocks.append(b)
    k0, k1 = jax.random.split(ks[0])
    extra = {}
    if not decoder and config.question_end >= 0:
        extra["match"] = (1.0 if config.t5 else 0.02) * jax.random.normal(k1, (config.d_model,))
    if config.t5:
        return {"rel": _relative_init(k0, config, not decoder), "blocks": blocks, "ln_f": _norm_init(config)} | extra
    length = config.tgt_len if decoder else config.src_len
    return {"wpe": 0.02 * jax.random.normal(k0, (length, config.d_model)), "ln_emb": _norm_init(config),
            "blocks": blocks} | extra


def _relative_init(key, config: Config, bidirectional: bool):
    """The bucket table (num_buckets, H), started as a locality prior: head h scores a key at distance n with
    -n / 2^h (n the smallest distance of its bucket; head 0 sharply local, the last nearly flat), plus
    N(0, 1/D) noise. T5 starts the table at the noise alone; a table that small leaves every head attending by
    content at first (a bag of words), and Adam moves it by about lr a step (measured here: after 3000 steps at
    lr 2e-3 it had barely moved), while binding a fact's value to its subject needs heads that attend by position.
    """
    r = np.arange(-config.max_distance, config.max_distance + 1)
    buckets = relative_position_bucket(r, bidirectional=bidirectional, num_buckets=config.num_buckets,
                                       max_distance=config.max_distance)
    dist = np.full(config.num_buckets, config.max_distance)
    np.minimum.at(dist, buckets, np.abs(r))
    prior = -dist[:, None] * 2.0 ** -np.arange(config.n_head)[None, :]
    noise = jax.random.normal(key, (config.num_buckets, config.n_head)) / math.sqrt(config.d_model)
    return jnp.asarray(prior, jnp.float32) + noise


def init(key, config: Config):
    """``({"wte": (V, D) shared by both stacks and the output, "enc": ..., "dec": ...}, {})``; T5's embedding is
    N(0, 1) (its output is rescaled by D^-1/2), BART's N(0, 0.02^2)."""
    k0, k1, k2 = jax.random.split(key, 3)
    std = 1.0 if config.t5 else 0.02
    return {"wte": std * jax.random.normal(k0, (config.vocab_size, config.d_model)),
            "enc": _stack_init(k1, config, False), "dec": _stack_init(k2, config, True)}, {}


# -------------------------------------------------------------------------------------------------- layers
def _norm(p, x, config: Config):
    return fd.rms_norm(x, p["w"]) if config.t5 else fd.layer_norm(x, p["w"], p["b"])


def _attention(p, x, context, config: Config, *, bias=None, mask=None, causal=False):
    q, k, v = qkv_projection(p, x, context, n_heads=config.n_head)
    o = attend(q, k, v, bias=bias, mask=mask, causal=causal, scale=1.0 if config.t5 else None)
    return fd.dense(merge_heads(o), p["w_o"], p.get("b_o"))


def _mlp(p, x, config: Config):
    if config.t5:
        return fd.dense(fd.relu(fd.dense(x, p["w1"])), p["w2"])
    return fd.gelu_mlp(x, p["w1"], p["b1"], p["w2"], p["b2"])


def _layer(p, x, config: Config, *, bias, mask, causal=False, context=None, context_mask=None):
    """Self-attention [, cross-attention], MLP, each a residual sub-layer: pre-LN x + f(norm(x)) (T5) or post-LN
    norm(x + f(x)) (BART)."""
    subs = [("ln_1", lambda h: _attention(p["attn"], h, None, config, bias=bias, mask=mask, causal=causal))]
    if context is not None:
        subs.append(("ln_x", lambda h: _attention(p["cross"], h, context, config, mask=context_mask)))
    subs.append(("ln_2", lambda h: _mlp(p["mlp"], h, config)))
    for name, f in subs:
        x = x + f(_norm(p[name], x, config)) if config.t5 else _norm(p[name], x + f(x), config)
    return x


def _check_length(what: str, ids, limit: int, option: str):
    if ids.ndim != 2:
        raise ValueError(f"qa: the {what} must be a batch of token ids (B, length), got shape {ids.shape}")
    if ids.shape[1] > limit:
        raise ValueError(f"qa: a {what} of {ids.shape[1]} tokens is longer than the model's max length {limit}; "
                         f"build the model with a larger {option}")


def exact_match_feature(src, question_end: int):
    """DrQA's exact-match feature (Chen et al. 2017) of sources laid out as question, ``question_end``, context:
    (B, S) bool, True on a context token that occurs in the question and on a question token that occurs in the
    context (PAD and the separator never)."""
    real = (src != PAD) & (src != question_end)
    in_question = (jnp.cumsum(src == question_end, axis=1) == 0) & real
    in_context = ~in_question & real
    same = src[:, :, None] == src[:, None, :]
    return (in_context & jnp.any(same & in_question[:, None, :], -1)) | \
        (in_question & jnp.any(same & in_context[:, None, :], -1))


def _embed(params, p, ids, config: Config, *, bidirectional: bool):
    """A stack's input: the shared token embedding, then T5's relative bias table for the stack's self-attention
    (returned as ``bias``) or BART's learned positions and embedding norm (``bias`` None)."""
    t = ids.shape[1]
    x = fd.embedding(params["wte"], ids)
    if "match" in p:
        x = x + exact_match_feature(ids, config.question_end)[..., None].astype(x.dtype) * p["match"]
    if config.t5:
        return x, relative_bias(p["rel"], t, t, bidirectional=bidirectional, config=config)
    return _norm(p["ln_emb"], x + p["wpe"][:t], config), None


def encode(params, src, config: Config):
    """Source ids (B, S) -> (states (B, S, D), key-padding mask (B, 1, 1, S), True on real tokens)."""
    _check_length("source (question and context)", src, config.src_len, "src_len")
    p = params["enc"]
    mask = (src != PAD)[:, None, None, :]
    x, bias = _embed(params, p, src, config, bidirectional=True)
    for blk in p["blocks"]:
        x = _layer(blk, x, config, bias=bias, mask=mask)
    return (_norm(p["ln_f"], x, config) if config.t5 else x), mask


def _decode(params, states, mask, tgt_in, config: Config):
    """Decoder logits (B, U, V) of the decoder inputs (B, U) given the encoder's states."""
    _check_length("answer", tgt_in, config.tgt_len, "tgt_len")
    p = params["dec"]
    x, bias = _embed(params, p, tgt_in, config, bidirectional=False)
    for blk in p["blocks"]:
        x = _layer(blk, x, config, bias=bias, mask=None, causal=True, context=states, context_mask=mask)
    if config.t5:
        x = _norm(p["ln_f"], x, config) * config.d_model ** -0.5
    return fd.dense(x, params["wte"].T)


def _shift_right(tgt):
    return jnp.concatenate([jnp.full((tgt.shape[0], 1), BOS, tgt.dtype), tgt[:, :-1]], axis=1)


def teacher_forced_logits(params, src, tgt, config: Config):
    """Logits (B, U, V) for answers (B, U), the decoder reading BOS then the gold tokens."""
    _check_length("answer", tgt, config.tgt_len, "tgt_len")
    states, mask = encode(params, src, config)
    return _decode(params, states, mask, _shift_right(tgt), config)


def apply(params, state, x, config: Config, *, key=None, train: bool = False):
    """``(greedy answers (B, tgt_len), state)`` of source ids x (B, S)."""
    return decode_greedy(params, x, config), state


def loss(params, state, batch, config: Config, *, key=None, train: bool = False):
    """Teacher forcing: cross-entropy on the non-PAD answer tokens; exact match and token accuracy of the argmax."""
    tgt = batch["y"]
    logits = teacher_forced_logits(params, batch["x"], tgt, config)
    value = fd.softmax_cross_entropy(logits, jnp.where(tgt == PAD, -100, tgt), ignore_index=-100)
    pred, real = jnp.argmax(logits, -1), tgt != PAD
    exact = jnp.mean(jnp.all((pred == tgt) | ~real, axis=1))
    return value, (state, {"loss": value, "accuracy": exact,
                           "token_accuracy": jnp.sum((pred == tgt) & real) / jnp.sum(real)})


# ------------------------------------------------------------------------------------------------ decoding
def _log_softmax(logits):
    """Log-probabilities in float32 at least (bf16 logits are upcast, float64 ones kept)."""
    return jax.nn.log_softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), axis=-1)


@functools.partial(jax.jit, static_argnames=("config",))
def sequence_logprob(params, src, tgt, config: Config):
    """log p(tgt | src) (B,): the sum of the log-probabilities of the tokens up to and including the first EOS (all
    of them when there is no EOS), as ``decode_greedy`` and ``decode_beam`` score what they decode."""
    logp = _log_softmax(teacher_forced_logits(params, src, tgt, config))
    tok = jnp.take_along_axis(logp, tgt[..., None].astype(jnp.int32), -1)[..., 0]
    before_eos = jnp.cumsum(tgt == EOS, axis=1) - (tgt == EOS) == 0          # up to and including the first EOS
    return jnp.sum(jnp.where(before_eos, tok, 0.0), axis=1)


@functools.partial(jax.jit, static_argnames=("config",))
def decode_greedy(params, src, config: Config):
    """Greedy decoding (B, tgt_len): the argmax token at every step; PAD after EOS."""
    states, mask = encode(params, src, config)
    n = config.tgt_len
    out = jnp.full((src.shape[0], n + 1), PAD, jnp.int32).at[:, 0].set(BOS)

    def body(i, carry):
        out, done = carry
        logits = _decode(params, states, mask, out[:, :-1], config)
        nxt = jnp.argmax(jax.lax.dynamic_index_in_dim(logits, i, axis=1, keepdims=False), -1).astype(jnp.int32)
        nxt = jnp.where(done, PAD, nxt)
        return out.at[:, i + 1].set(nxt), done | (nxt == EOS)

    out, _ = jax.lax.fori_loop(0, n, body, (out, jnp.zeros(src.shape[0], bool)))
    return out[:, 1:]


@functools.partial(jax.jit, static_argnames=("config", "beam", "length_penalty"))
def decode_beam(params, src, config: Config, beam: int = 4, length_penalty: float = 1.0):
    """Beam search: ``(tokens (B, tgt_len), log-probability (B,))`` of the best of ``beam`` hypotheses.

    Each step extends every live hypothesis by every token and keeps the ``beam`` best by total log-probability;
    a finished one (it emitted EOS) extends only by PAD at no cost, so it keeps its score and its place. The
    winner maximises score / length**length_penalty (length counted up to and including EOS; 0 = raw score;
    > 0 favours longer answers, which raw log-probabilities penalise). With ``beam=1`` this is greedy decoding.
    """
    b, n, k, v = src.shape[0], config.tgt_len, beam, config.vocab_size
    states, mask = encode(params, src, config)
    states, mask = jnp.repeat(states, k, axis=0), jnp.repeat(mask, k, axis=0)          # (B*K, ...), beam-minor
    seqs = jnp.full((b, k, n + 1), PAD, jnp.int32).at[..., 0].set(BOS)
    scores = jnp.tile(jnp.array([0.0] + [-jnp.inf] * (k - 1)), (b, 1))                 # one live beam at first
    pad_only = jnp.full((v,), -jnp.inf).at[PAD].set(0.0)          # a finished hypothesis: PAD, free

    def body(t, carry):
        seqs, scores, done, length = carry
        logits = _decode(params, states, mask, seqs.reshape(b * k, n + 1)[:, :-1], config)
        logits = jax.lax.dynamic_index_in_dim(logits, t, axis=1, keepdims=False)
        logp = jnp.where(done[..., None], pad_only, _log_softmax(logits).reshape(b, k, v))
        scores, idx = jax.lax.top_k((scores[..., None] + logp).reshape(b, k * v), k)
        parent, tok = idx // v, (idx % v).astype(jnp.int32)
        seqs = jnp.take_along_axis(seqs, parent[..., None], axis=1).at[:, :, t + 1].set(tok)
        was_done = jnp.take_along_axis(done, parent, axis=1)
        length = jnp.take_along_axis(length, parent, axis=1) + (~was_done)
        return seqs, scores, was_done | (tok == EOS), length

    carry = (seqs, scores, jnp.zeros((b, k), bool), jnp.zeros((b, k)))
    seqs, scores, _, length = jax.lax.fori_loop(0, n, body, carry)
    final = scores / jnp.maximum(length, 1.0) ** length_penalty if length_penalty else scores
    best = jnp.argmax(final, axis=1)
    return (jnp.take_along_axis(seqs, best[:, None, None], axis=1)[:, 0, 1:],
            jnp.take_along_axis(scores, best[:, None], axis=1)[:, 0])


def predict(params, src, config: Config, *, beam: int = 0, batch_size: int = 500) -> np.ndarray:
    """Answers (N, tgt_len) of a NumPy array of sources, in batches of one shape (one compilation): greedy when
    ``beam`` is 0, else beam search with ``config.length_penalty``."""
    src = np.asarray(src)
    out = []
    for i in range(0, len(src), batch_size):
        chunk = src[i:i + batch_size]
        padded = jnp.asarray(np.pad(chunk, ((0, batch_size - len(chunk)), (0, 0))) if len(src) > batch_size
                             else chunk)
        toks = decode_greedy(params, padded, config) if not beam else \
            decode_beam(params, padded, config, beam=beam, length_penalty=config.length_penalty)[0]
        out.append(np.asarray(toks)[:len(chunk)])
    return np.concatenate(out)


def _report(config: Config, params, data, out_dir) -> dict:
    """SQuAD exact match and F1 on the test split, greedy and beam; a few answers into qa_examples.txt."""
    from funcdl.data.qa import squad_scores

    test, extras = data.splits["test"], data.extras or {}
    decode = extras["decode"]
    golds = extras.get("answers", {}).get("test") or [decode(y) for y in test["y"]]
    out, lines = {}, []
    for suffix, beam in (("", 0), ("_beam", config.beam)):
        preds = [decode(t) for t in predict(params, test["x"], config, beam=beam)]
        scores = squad_scores(preds, golds)
        out |= {f"test_exact_match{suffix}": round(scores["exact_match"], 6),
                f"test_f1{suffix}": round(scores["f1"], 6)}
        lines += [f"[{f'beam {beam}' if beam else 'greedy'}] {decode(x)} -> {p!r} (gold {g!r})"
                  for x, p, g in zip(test["x"][:10], preds, golds, strict=False)]
    if out_dir is not None:
        Path(out_dir, "qa_examples.txt").write_text("\n".join(lines) + "\n")
    return out


def extras(config: Config) -> dict:
    return {"decode_greedy": functools.partial(decode_greedy, config=config),
            "decode_beam": functools.partial(decode_beam, config=config),
            "report": lambda params, state, opt_state, data, out_dir: _report(config, params, data, out_dir)}


def build(info: DataInfo, *, style="t5", n_layer=2, n_head=4, d_model=64, d_ff=None, num_buckets=32,
          max_distance=128, match_feature=True, beam=4, length_penalty=1.0):
    data_extras = info.extras or {}
    if data_extras.get("task") != "seq2seq" or info.vocab_size is None:
        raise ValueError(f"qa needs a seq2seq data set of token ids (synthetic_qa), not {info.name!r}")
    if match_feature and "question_end" not in data_extras:
        raise ValueError(f"qa: the exact-match feature needs the id of the token that ends the question "
                         f"(extras['question_end']), which {info.name!r} does not give; pass --set match_feature=false")
    return as_task(Config(vocab_size=info.vocab_size, src_len=int(data_extras["src_len"]),
                          tgt_len=int(data_extras["tgt_len"]), style=style, n_layer=n_layer, n_head=n_head,
                          d_model=d_model, d_ff=d_ff, num_buckets=num_buckets, max_distance=max_distance,
                          question_end=int(data_extras["question_end"]) if match_feature else -1,
                          beam=beam, length_penalty=length_penalty))


register("qa", build, data=("synthetic_qa",),
         # without the exact-match feature (--set match_feature=false --steps 8000) seed 0 reached test exact match
         # 0.784 (0.875 after 20000 steps); 417 of its 432 misses were another fact's value of the asked relation
         # (the subject not bound). With it (these defaults) seeds 0-2: validation 0.998-1.0 at step 1000, test 1.0
         defaults={"data": "synthetic_qa", "steps": 4000, "batch_size": 64, "optimizer": "adamw", "lr": 2e-3,
                   "schedule": "cosine", "warmup_steps": 300, "weight_decay": 0.01, "clip_norm": 1.0,
                   "eval_every": 1000, "monitor": "val_accuracy"},
         description="encoder-decoder question answering, T5 (relative position bias, pre-RMSNorm) or BART "
                     "(learned positions, post-LayerNorm) style; report: SQuAD exact match / F1, greedy and beam",
         small={"n_layer": 1, "n_head": 2, "d_model": 8},
         small_data=DataInfo("fake-qa", (10,), vocab_size=12,
                             extras={"task": "seq2seq", "src_len": 10, "tgt_len": 4, "pad": PAD, "bos": BOS,
                                     "eos": EOS, "question_end": 3}))
