"""Recurrent networks: the stacked, bidirectional RNN/LSTM/GRU layer stack, and the sequence classifier built on it.

The layer stack is torch's ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` (``batch_first=True``) written with the
whole-sequence primitives ``funcdl.rnn``, ``funcdl.lstm``, ``funcdl.gru``, whose backward is the hand-written
BPTT reverse scan:

    layer l, direction d:   y^{l,d}, h_n^{l,d} = cell-scan(x^l, h_0^{l,d}; reverse = (d == 1))
    x^{l+1} = dropout([y^{l,0}, y^{l,1}])           (concatenated features; dropout between layers only)

Parameters ``{"layers": [{"fwd": {...}, "bwd": {...}}, ...]}`` with ``w_ih`` (in, G H), ``w_hh`` (H or P, G H),
``b_ih``, ``b_hh`` (G H,) and ``w_hr`` (H, P) for an LSTM projection — torch's weights transposed. Final states
come back as torch lays them out: (num_layers * num_directions, B, H), layer-major. ``StackConfig``,
``init_stack``, ``stack``, ``step_stack`` and ``zero_state`` are the building blocks ``char_lstm``, ``seq2seq``
and ``forecast`` use too.

The model (registered as ``rnn``, ``lstm``, ``gru``): a sequence classifier (``--data mnist1d`` reads the 40
samples as 40 time steps of one feature); logits from the last layer's final states of both directions, or
from the mean of the outputs (``readout="mean"``). A batch may carry a ``mask`` (B, T) of real steps.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

import funcdl as fd
from funcdl.training.task import DataInfo

from .layers import classification_loss
from .registry import as_task, register

__all__ = ["CELLS", "StackConfig", "init_stack", "stack", "step_stack", "zero_state", "Config", "KIND", "init",
           "apply", "loss"]

KIND = "classification"

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


def init_stack(key, config: StackConfig) -> dict:
    """torch's default: every weight and bias uniform in +-1/sqrt(hidden_size)."""
    g, hdim, out = _GATES[config.cell], config.hidden_size, config.out_size
    bound = 1.0 / math.sqrt(hdim)
    u = lambda k, shape: jax.random.uniform(k, shape, minval=-bound, maxval=bound)
    layers = []
    for layer in range(config.num_layers):
        n_in = config.input_size if layer == 0 else out * config.directions
        dirs = {}
        for d, name in enumerate(("fwd", "bwd")[: config.directions]):
            ks = jax.random.split(jax.random.fold_in(key, 2 * layer + d), 5)
            p = {"w_ih": u(ks[0], (n_in, g * hdim)), "w_hh": u(ks[1], (out, g * hdim))}
            if config.bias:
                p["b_ih"], p["b_hh"] = u(ks[2], (g * hdim,)), u(ks[3], (g * hdim,))
            if config.proj_size:
                p["w_hr"] = u(ks[4], (hdim, out))
            dirs[name] = p
        layers.append(dirs)
    return {"layers": layers}


def _run(p, x, h0, c0, config: StackConfig, mask, reverse: bool):
    b_ih, b_hh = p.get("b_ih"), p.get("b_hh")
    if config.cell == "lstm":
        return fd.lstm(x, h0, c0, p["w_ih"], p["w_hh"], b_ih, b_hh, p.get("w_hr"), mask, reverse=reverse)
    if config.cell == "gru":
        ys, h = fd.gru(x, h0, p["w_ih"], p["w_hh"], b_ih, b_hh, mask, reverse=reverse)
    else:
        ys, h = fd.rnn(x, h0, p["w_ih"], p["w_hh"], b_ih, b_hh, mask, nonlinearity=config.cell[4:], reverse=reverse)
    return ys, h, None


def zero_state(config: StackConfig, batch: int, dtype=jnp.float32):
    n = config.num_layers * config.directions
    h = jnp.zeros((n, batch, config.out_size), dtype)
    return h, (jnp.zeros((n, batch, config.hidden_size), dtype) if config.cell == "lstm" else None)


def stack(params, x, config: StackConfig, *, h0=None, c0=None, mask=None, key=None, train: bool = False):
    """Run the layer stack on x (B, T, input_size). Returns ``(ys, h_n, c_n)``: ys (B, T, D * out_size),
    h_n (L * D, B, out_size), c_n (L * D, B, hidden_size) or None (as torch)."""
    if x.ndim != 3 or x.shape[-1] != config.input_size:
        raise ValueError(f"recurrent stack: input must be (batch, time, {config.input_size}), got shape {x.shape}")
    if len(params["layers"]) != config.num_layers:
        raise ValueError(f"recurrent stack: params have {len(params['layers'])} layers, config {config.num_layers}")
    zh, zc = zero_state(config, x.shape[0], x.dtype)
    h0 = zh if h0 is None else h0
    c0 = zc if c0 is None else c0
    if h0.shape != zh.shape:
        raise ValueError(f"recurrent stack: h0 shape {h0.shape} must be {zh.shape} (layers*directions, batch, hidden)")
    if config.cell == "lstm" and c0.shape != zc.shape:
        raise ValueError(f"recurrent stack: c0 shape {c0.shape} must be {zc.shape}")
    hs, cs = [], []
    n = len(params["layers"])
    for layer, dirs in enumerate(params["layers"]):
        outs = []
        for d, name in enumerate(("fwd", "bwd")[: config.directions]):
            i = layer * config.directions + d
            ys, h, c = _run(dirs[name], x, h0[i], None if c0 is None else c0[i], config, mask, reverse=d == 1)
            outs.append(ys)
            hs.append(h)
            cs.append(c)
        x = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=-1)
        if train and config.dropout > 0 and layer < n - 1 and key is not None:
            x = fd.dropout(x, jax.random.fold_in(key, layer), rate=config.dropout)
    return x, jnp.stack(hs), (jnp.stack(cs) if config.cell == "lstm" else None)


def step_stack(params, x_t, h, c, config: StackConfig):
    """One time step of a unidirectional stack with the cell primitives (for sampling): x_t (B, in),
    h (L, B, out), c (L, B, H) or None -> (y_t, h, c)."""
    if config.bidirectional:
        raise ValueError("step_stack: a bidirectional stack cannot run one step at a time")
    new_h, new_c = [], []
    for layer, dirs in enumerate(params["layers"]):
        p = dirs["fwd"]
        b_ih, b_hh = p.get("b_ih"), p.get("b_hh")
        if config.cell == "lstm":
            hl, cl = fd.lstm_cell(x_t, h[layer], c[layer], p["w_ih"], p["w_hh"], b_ih, b_hh, p.get("w_hr"))
            new_c.append(cl)
        elif config.cell == "gru":
            hl = fd.gru_cell(x_t, h[layer], p["w_ih"], p["w_hh"], b_ih, b_hh)
        else:
            hl = fd.rnn_cell(x_t, h[layer], p["w_ih"], p["w_hh"], b_ih, b_hh, nonlinearity=config.cell[4:])
        new_h.append(hl)
        x_t = hl
    return x_t, jnp.stack(new_h), (jnp.stack(new_c) if config.cell == "lstm" else None)


# ------------------------------------------------------------------------------------- sequence classifier
@dataclasses.dataclass(frozen=True)
class Config:
    stack: StackConfig
    num_classes: int
    readout: str = "last"         # "last": final states of the last layer; "mean": mean of the outputs

    def __post_init__(self):
        if self.readout not in ("last", "mean"):
            raise ValueError(f"readout must be 'last' or 'mean', got {self.readout!r}")


def init(key, config: Config):
    k1, k2 = jax.random.split(key)
    n_feat = config.stack.out_size * config.stack.directions
    bound = 1.0 / math.sqrt(n_feat)
    kw, kb = jax.random.split(k2)
    return {"rnn": init_stack(k1, config.stack),
            "head": {"w": jax.random.uniform(kw, (n_feat, config.num_classes), minval=-bound, maxval=bound),
                     "b": jax.random.uniform(kb, (config.num_classes,), minval=-bound, maxval=bound)}}, {}


def as_sequence(x, input_size: int):
    """(B, T) signals become (B, T, 1) sequences; (B, T, F) stay."""
    if x.ndim == 2 and input_size == 1:
        return x[..., None]
    return x


def apply(params, state, x, config: Config, *, key=None, train: bool = False, mask=None):
    """``(logits, state)`` for sequences x (B, T, F) or signals (B, T); ``mask`` (B, T) marks the real steps."""
    x = as_sequence(x, config.stack.input_size)
    ys, h_n, _ = stack(params["rnn"], x, config.stack, mask=mask, key=key, train=train)
    if config.readout == "last":
        d = config.stack.directions
        feats = jnp.concatenate(list(h_n[-d:]), axis=-1)          # last layer: forward and backward final states
    else:
        m = jnp.ones(ys.shape[:2], ys.dtype) if mask is None else mask.astype(ys.dtype)
        feats = jnp.sum(ys, axis=1) / jnp.maximum(jnp.sum(m, axis=1, keepdims=True), 1)
    return fd.dense(feats, params["head"]["w"], params["head"]["b"]), state


def loss(params, state, batch, config: Config, *, key=None, train: bool = False):
    logits, state = apply(params, state, batch["x"], config, key=key, train=train, mask=batch.get("mask"))
    return classification_loss(logits, batch, state)


def _builder(cell):
    def build(info: DataInfo, *, hidden=128, layers=1, bidirectional=True, dropout=0.0, readout="last",
              proj_size=0):
        if info.num_classes is None:
            raise ValueError(f"{cell}: needs a classification data set; {info.name!r} has no classes")
        shape = tuple(info.input_shape)
        if len(shape) not in (1, 2):
            raise ValueError(f"{cell}: inputs must be sequences (T,) or (T, F), {info.name!r} has shape {shape}")
        input_size = 1 if len(shape) == 1 else shape[1]
        sc = StackConfig(cell, input_size, int(hidden), int(layers), bool(bidirectional), int(proj_size),
                         dropout=float(dropout))
        return as_task(Config(sc, info.num_classes, readout))

    build.__qualname__ = build.__name__ = f"build_{cell}"
    return build


_DEFAULTS = {"data": "mnist1d", "epochs": 100, "batch_size": 100, "optimizer": "adam", "lr": 3e-3,
             "hidden": 128, "layers": 1, "bidirectional": True, "clip_norm": 1.0}
_SMALL = {"hidden": 5, "layers": 2, "dropout": 0.1}
for _name, _cell, _desc in (("rnn", "rnn_tanh", "Elman RNN (tanh)"), ("lstm", "lstm", "LSTM"),
                            ("gru", "gru", "GRU")):
    register(_name, _builder(_cell), data=("mnist1d", "mnist1d_shuffled"), defaults=dict(_DEFAULTS),
             description=f"{_desc} sequence classifier (stacked, bidirectional), hand-written BPTT",
             small=dict(_SMALL, proj_size=3) if _cell == "lstm" else dict(_SMALL),
             small_data=DataInfo("fake-mnist1d", (12,), num_classes=4))
