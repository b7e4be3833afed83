"""Recurrent networks: stacked and bidirectional RNN/LSTM/GRU layers, a sequence classifier, a char-level LSTM.

The layer stack is torch's ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` (``batch_first=True``) written with the
whole-sequence primitives ``funcdl.rnn``, ``funcdl.lstm``, ``funcdl.gru``, whose backward is the hand-written
BPTT reverse scan:

    layer l, direction d:   y^{l,d}, h_n^{l,d} = cell-scan(x^l, h_0^{l,d}; reverse = (d == 1))
    x^{l+1} = dropout([y^{l,0}, y^{l,1}])           (concatenated features; dropout between layers only)

Parameters ``{"layers": [{"fwd": {...}, "bwd": {...}}, ...]}`` with ``w_ih`` (in, G H), ``w_hh`` (H or P, G H),
``b_ih``, ``b_hh`` (G H,) and ``w_hr`` (H, P) for an LSTM projection — torch's weights transposed. Final states
come back as torch lays them out: (num_layers * num_directions, B, H), layer-major.

Models registered for ``funcdl train``:
* ``rnn``, ``lstm``, ``gru``: sequence classifiers (``--data mnist1d`` reads the 40 samples as 40 time steps
  of one feature); logits from the last layer's final states of both directions.
* ``char-lstm``: embedding -> LSTM stack -> dense to the vocabulary, with sampling (temperature, top-k).
  ``tbptt=True`` carries the hidden state from one batch to the next (truncated BPTT: the gradient stops at
  the window border, the state does not) — meaningful when consecutive batches continue the same streams
  (``sequential_windows``).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

import funcdl as fd
from funcdl.data.base import sequential_windows
from funcdl.nn.losses import softmax_cross_entropy
from funcdl.training.task import DataInfo, Task

from .registry import register
from .sampling import sample_logits

__all__ = ["CELLS", "StackConfig", "init_stack", "stack", "SeqClassifierConfig", "init_classifier",
           "apply_classifier", "classifier_task", "CharLSTMConfig", "init_char_lstm", "apply_char_lstm",
           "char_lstm_task", "generate", "sample_logits", "sequential_windows", "step_stack"]

CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru")
_GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}


@dataclasses.dataclass(frozen=True)
class StackConfig:
    cell: str = "gru"
    input_size: int = 1
    hidden_size: int = 64
    num_layers: int = 1
    bidirectional: bool = False
    proj_size: int = 0            # LSTM only: h is projected to this size (torch's proj_size); 0 = none
    bias: bool = True
    dropout: float = 0.0          # on the outputs of every layer but the last (torch)

    def __post_init__(self):
        if self.cell not in CELLS:
            raise ValueError(f"unknown recurrent cell {self.cell!r}; valid: {', '.join(CELLS)}")
        if self.proj_size and self.cell != "lstm":
            raise ValueError(f"proj_size is an LSTM option, not for {self.cell!r}")
        if not 0 <= self.proj_size < self.hidden_size or self.hidden_size < 1 or self.num_layers < 1:
            raise ValueError(f"need hidden_size >= 1, num_layers >= 1 and 0 <= proj_size < hidden_size, got {self}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def out_size(self) -> int:
        """Size of h (the projection size for a projected LSTM)."""
        return self.proj_size or self.hidden_size


def init_stack(key, cfg: StackConfig) -> dict:
    """torch's default: every weight and bias uniform in +-1/sqrt(hidden_size)."""
    g, hdim, out = _GATES[cfg.cell], cfg.hidden_size, cfg.out_size
    bound = 1.0 / math.sqrt(hdim)
    u = lambda k, shape: jax.random.uniform(k, shape, minval=-bound, maxval=bound)
    layers = []
    for layer in range(cfg.num_layers):
        n_in = cfg.input_size if layer == 0 else out * cfg.directions
        dirs = {}
        for d, name in enumerate(("fwd", "bwd")[: cfg.directions]):
            ks = jax.random.split(jax.random.fold_in(key, 2 * layer + d), 5)
            p = {"w_ih": u(ks[0], (n_in, g * hdim)), "w_hh": u(ks[1], (out, g * hdim))}
            if cfg.bias:
                p["b_ih"], p["b_hh"] = u(ks[2], (g * hdim,)), u(ks[3], (g * hdim,))
            if cfg.proj_size:
                p["w_hr"] = u(ks[4], (hdim, out))
            dirs[name] = p
        layers.append(dirs)
    return {"layers": layers}


def _run(p, x, h0, c0, cfg: StackConfig, mask, reverse: bool):
    b_ih, b_hh = p.get("b_ih"), p.get("b_hh")
    if cfg.cell == "lstm":
        return fd.lstm(x, h0, c0, p["w_ih"], p["w_hh"], b_ih, b_hh, p.get("w_hr"), mask, reverse=reverse)
    if cfg.cell == "gru":
        ys, h = fd.gru(x, h0, p["w_ih"], p["w_hh"], b_ih, b_hh, mask, reverse=reverse)
    else:
        ys, h = fd.rnn(x, h0, p["w_ih"], p["w_hh"], b_ih, b_hh, mask, nonlinearity=cfg.cell[4:], reverse=reverse)
    return ys, h, None


def zero_state(cfg: StackConfig, batch: int, dtype=jnp.float32):
    n = cfg.num_layers * cfg.directions
    h = jnp.zeros((n, batch, cfg.out_size), dtype)
    return h, (jnp.zeros((n, batch, cfg.hidden_size), dtype) if cfg.cell == "lstm" else None)


def stack(params, x, cfg: StackConfig, *, h0=None, c0=None, mask=None, key=None, train: bool = False):
    """Run the layer stack on x (B, T, input_size). Returns ``(ys, h_n, c_n)``: ys (B, T, D * out_size),
    h_n (L * D, B, out_size), c_n (L * D, B, hidden_size) or None (as torch)."""
    if x.ndim != 3 or x.shape[-1] != cfg.input_size:
        raise ValueError(f"recurrent stack: input must be (batch, time, {cfg.input_size}), got shape {x.shape}")
    if len(params["layers"]) != cfg.num_layers:
        raise ValueError(f"recurrent stack: params have {len(params['layers'])} layers, config {cfg.num_layers}")
    zh, zc = zero_state(cfg, x.shape[0], x.dtype)
    h0 = zh if h0 is None else h0
    c0 = zc if c0 is None else c0
    if h0.shape != zh.shape:
        raise ValueError(f"recurrent stack: h0 shape {h0.shape} must be {zh.shape} (layers*directions, batch, hidden)")
    if cfg.cell == "lstm" and c0.shape != zc.shape:
        raise ValueError(f"recurrent stack: c0 shape {c0.shape} must be {zc.shape}")
    hs, cs = [], []
    n = len(params["layers"])
    for layer, dirs in enumerate(params["layers"]):
        outs = []
        for d, name in enumerate(("fwd", "bwd")[: cfg.directions]):
            i = layer * cfg.directions + d
            ys, h, c = _run(dirs[name], x, h0[i], None if c0 is None else c0[i], cfg, mask, reverse=d == 1)
            outs.append(ys)
            hs.append(h)
            cs.append(c)
        x = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=-1)
        if train and cfg.dropout > 0 and layer < n - 1 and key is not None:
            x = fd.dropout(x, jax.random.fold_in(key, layer), rate=cfg.dropout)
    return x, jnp.stack(hs), (jnp.stack(cs) if cfg.cell == "lstm" else None)


def step_stack(params, x_t, h, c, cfg: StackConfig):
    """One time step of a unidirectional stack with the cell primitives (for sampling): x_t (B, in),
    h (L, B, out), c (L, B, H) or None -> (y_t, h, c)."""
    if cfg.bidirectional:
        raise ValueError("step_stack: a bidirectional stack cannot run one step at a time")
    new_h, new_c = [], []
    for layer, dirs in enumerate(params["layers"]):
        p = dirs["fwd"]
        b_ih, b_hh = p.get("b_ih"), p.get("b_hh")
        if cfg.cell == "lstm":
            hl, cl = fd.lstm_cell(x_t, h[layer], c[layer], p["w_ih"], p["w_hh"], b_ih, b_hh, p.get("w_hr"))
            new_c.append(cl)
        elif cfg.cell == "gru":
            hl = fd.gru_cell(x_t, h[layer], p["w_ih"], p["w_hh"], b_ih, b_hh)
        else:
            hl = fd.rnn_cell(x_t, h[layer], p["w_ih"], p["w_hh"], b_ih, b_hh, nonlinearity=cfg.cell[4:])
        new_h.append(hl)
        x_t = hl
    return x_t, jnp.stack(new_h), (jnp.stack(new_c) if cfg.cell == "lstm" else None)


# ------------------------------------------------------------------------------------- sequence classifier
@dataclasses.dataclass(frozen=True)
class SeqClassifierConfig:
    stack: StackConfig
    num_classes: int
    readout: str = "last"         # "last": final states of the last layer; "mean": mean of the outputs

    def __post_init__(self):
        if self.readout not in ("last", "mean"):
            raise ValueError(f"readout must be 'last' or 'mean', got {self.readout!r}")


def init_classifier(key, cfg: SeqClassifierConfig) -> dict:
    k1, k2 = jax.random.split(key)
    n_feat = cfg.stack.out_size * cfg.stack.directions
    bound = 1.0 / math.sqrt(n_feat)
    kw, kb = jax.random.split(k2)
    return {"rnn": init_stack(k1, cfg.stack),
            "head": {"w": jax.random.uniform(kw, (n_feat, cfg.num_classes), minval=-bound, maxval=bound),
                     "b": jax.random.uniform(kb, (cfg.num_classes,), minval=-bound, maxval=bound)}}


def as_sequence(x, input_size: int):
    """(B, T) signals become (B, T, 1) sequences; (B, T, F) stay."""
    if x.ndim == 2 and input_size == 1:
        return x[..., None]
    return x


def apply_classifier(params, x, cfg: SeqClassifierConfig, *, mask=None, key=None, train: bool = False):
    x = as_sequence(x, cfg.stack.input_size)
    ys, h_n, _ = stack(params["rnn"], x, cfg.stack, mask=mask, key=key, train=train)
    if cfg.readout == "last":
        d = cfg.stack.directions
        feats = jnp.concatenate(list(h_n[-d:]), axis=-1)          # last layer: forward and backward final states
    else:
        m = jnp.ones(ys.shape[:2], ys.dtype) if mask is None else mask.astype(ys.dtype)
        feats = jnp.sum(ys, axis=1) / jnp.maximum(jnp.sum(m, axis=1, keepdims=True), 1)
    return fd.dense(feats, params["head"]["w"], params["head"]["b"])


def classifier_task(cfg: SeqClassifierConfig) -> Task:
    def task_init(key):
        return init_classifier(key, cfg), {}

    def task_loss(params, state, batch, key, train):
        logits = apply_classifier(params, batch["x"], cfg, mask=batch.get("mask"), key=key, train=train)
        value = softmax_cross_entropy(logits, batch["y"])
        acc = jnp.mean(jnp.argmax(logits, -1) == batch["y"])
        return value, (state, {"loss": value, "accuracy": acc})

    return Task(task_init, task_loss, "classification",
                apply=lambda params, state, x: apply_classifier(params, x, cfg), extras={"config": cfg})


def _build_classifier(cell, info: DataInfo, hidden=128, layers=1, bidirectional=True, dropout=0.0, readout="last",
                      proj_size=0, **_):
    if info.num_classes is None:
        raise ValueError(f"{cell}: needs a classification data set; {info.name!r} has no classes")
    shape = tuple(info.input_shape)
    if len(shape) not in (1, 2):
        raise ValueError(f"{cell}: inputs must be sequences (T,) or (T, F), {info.name!r} has shape {shape}")
    input_size = 1 if len(shape) == 1 else shape[1]
    sc = StackConfig(cell, input_size, int(hidden), int(layers), bool(bidirectional), int(proj_size),
                     dropout=float(dropout))
    return classifier_task(SeqClassifierConfig(sc, info.num_classes, readout))


# ------------------------------------------------------------------------------------------- char-level LM
@dataclasses.dataclass(frozen=True)
class CharLSTMConfig:
    vocab_size: int
    embed: int = 64
    hidden: int = 512
    layers: int = 1
    dropout: float = 0.0
    proj_size: int = 0
    tbptt: bool = False           # carry the hidden state between consecutive batches (truncated BPTT)

    @property
    def stack(self) -> StackConfig:
        return StackConfig("lstm", self.embed, self.hidden, self.layers, False, self.proj_size, dropout=self.dropout)


def init_char_lstm(key, cfg: CharLSTMConfig) -> dict:
    k1, k2, k3 = jax.random.split(key, 3)
    out = cfg.stack.out_size
    bound = 1.0 / math.sqrt(out)
    return {"embed": jax.random.normal(k1, (cfg.vocab_size, cfg.embed)),        # torch nn.Embedding: N(0, 1)
            "rnn": init_stack(k2, cfg.stack),
            "head": {"w": jax.random.uniform(k3, (out, cfg.vocab_size), minval=-bound, maxval=bound),
                     "b": jnp.zeros((cfg.vocab_size,))}}


def apply_char_lstm(params, ids, cfg: CharLSTMConfig, *, h0=None, c0=None, key=None, train: bool = False):
    """Logits (B, T, V) for token ids (B, T), and the final states (h_n, c_n)."""
    x = fd.embedding(params["embed"], ids)
    if train and cfg.dropout > 0 and key is not None:
        x = fd.dropout(x, jax.random.fold_in(key, 1000), rate=cfg.dropout)
    ys, h_n, c_n = stack(params["rnn"], x, cfg.stack, h0=h0, c0=c0, key=key, train=train)
    if train and cfg.dropout > 0 and key is not None:
        ys = fd.dropout(ys, jax.random.fold_in(key, 1001), rate=cfg.dropout)
    return fd.dense(ys, params["head"]["w"], params["head"]["b"]), (h_n, c_n)


def char_lstm_task(cfg: CharLSTMConfig, batch_size: int | None = None) -> Task:
    """Language-model Task. With ``tbptt`` the state pytree holds (h, c) of the training batch: each training
    batch starts from the previous batch's final state (gradient stopped there); evaluation starts from zeros."""

    def task_init(key):
        state = {}
        if cfg.tbptt:
            if batch_size is None:
                raise ValueError("char-lstm: tbptt needs the training batch size")
            h, c = zero_state(cfg.stack, batch_size)
            state = {"h": h, "c": c}
        return init_char_lstm(key, cfg), state

    def task_loss(params, state, batch, key, train):
        h0 = c0 = None
        carry = train and cfg.tbptt and state and state["h"].shape[1] == batch["x"].shape[0]
        if carry:
            h0, c0 = jax.lax.stop_gradient(state["h"]), jax.lax.stop_gradient(state["c"])
        logits, (h_n, c_n) = apply_char_lstm(params, batch["x"], cfg, h0=h0, c0=c0, key=key, train=train)
        value = softmax_cross_entropy(logits, batch["y"])
        if carry:
            state = {"h": h_n.astype(state["h"].dtype), "c": c_n.astype(state["c"].dtype)}
        return value, (state, {"loss": value})

    return Task(task_init, task_loss, "language",
                apply=lambda params, state, x: apply_char_lstm(params, x, cfg)[0],
                extras={"config": cfg, "generate": functools.partial(generate, config=cfg)})


@functools.partial(jax.jit, static_argnames=("config", "max_new_tokens", "temperature", "top_k", "top_p"))
def _generate(params, prompt, key, *, config, max_new_tokens, temperature, top_k, top_p):
    cfg = config.stack
    if prompt.shape[1] > 1:       # all but the last prompt token through the sequence primitive
        _, h, c = stack(params["rnn"], fd.embedding(params["embed"], prompt[:, :-1]), cfg)
    else:
        h, c = zero_state(cfg, prompt.shape[0])

    def body(carry, k):
        h, c, tok = carry
        y, h, c = step_stack(params["rnn"], fd.embedding(params["embed"], tok), h, c, cfg)
        logits = fd.dense(y, params["head"]["w"], params["head"]["b"])
        nxt = sample_logits(k, logits, temperature=temperature, top_k=top_k, top_p=top_p).astype(prompt.dtype)
        return (h, c, nxt), nxt

    _, toks = jax.lax.scan(body, (h, c, prompt[:, -1]), jax.random.split(key, max_new_tokens))
    return jnp.concatenate([prompt, toks.T], axis=1)


def generate(params, prompt, key, max_new_tokens: int, *, config: CharLSTMConfig, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, use_cache: bool = True):
    """Continue ``prompt`` (B, T) or (T,) token ids by ``max_new_tokens`` sampled tokens: the prompt runs
    through the sequence primitive, then one ``lstm_cell`` step per new token. Returns (B, T + new).
    (``use_cache`` is accepted for the ``funcdl sample`` interface: an RNN's state already is its cache.)"""
    prompt = jnp.asarray(prompt, jnp.int32)
    if prompt.ndim == 1:
        prompt = prompt[None]
    if prompt.ndim != 2 or prompt.shape[1] == 0:
        raise ValueError(f"generate: the prompt must be a non-empty (batch, time) array of ids, got {prompt.shape}")
    if max_new_tokens < 1:
        return prompt
    return _generate(params, prompt, key, config=config, max_new_tokens=int(max_new_tokens),
                     temperature=float(temperature), top_k=top_k, top_p=top_p)


def _build_char_lstm(info: DataInfo, embed=64, hidden=512, layers=1, dropout=0.0, proj_size=0, tbptt=False,
                     batch_size=None, **_):
    if info.vocab_size is None:
        raise ValueError(f"char-lstm needs a language data set with a vocabulary; {info.name!r} has none")
    cfg = CharLSTMConfig(info.vocab_size, int(embed), int(hidden), int(layers), float(dropout), int(proj_size),
                         bool(tbptt))
    return char_lstm_task(cfg, batch_size)


_CLS_DEFAULTS = {"data": "mnist1d", "epochs": 100, "batch_size": 100, "optimizer": "adam", "lr": 3e-3,
                 "hidden": 128, "layers": 1, "bidirectional": True, "clip_norm": 1.0}
for _name, _cell, _desc in (("rnn", "rnn_tanh", "Elman RNN (tanh)"), ("lstm", "lstm", "LSTM"),
                            ("gru", "gru", "GRU")):
    register(_name, functools.partial(_build_classifier, _cell), data=("mnist1d", "mnist1d_shuffled"),
             defaults=dict(_CLS_DEFAULTS),
             description=f"{_desc} sequence classifier (stacked, bidirectional), hand-written BPTT")
register("char-lstm", _build_char_lstm, data=("tinyshakespeare",),
         defaults={"data": "tinyshakespeare", "steps": 3000, "batch_size": 64, "seq_len": 100, "optimizer": "adam",
                   "lr": 3e-3, "schedule": "cosine", "warmup_steps": 100, "clip_norm": 1.0, "eval_every": 500,
                   "eval_batches": 4, "embed": 64, "hidden": 384, "layers": 1},
         description="character-level LSTM language model (embedding, LSTM, softmax), sampling with temperature/top-k")
