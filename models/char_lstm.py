"""Character-level LSTM language model: embedding -> LSTM stack -> dense to the vocabulary, with sampling.

    x_t = dropout(E[c_t]),   y_1..y_T, (h_n, c_n) = LSTM stack(x)   (hand-written BPTT),
    logits_t = dropout(y_t) W + b,   loss = cross_entropy(logits_t, c_{t+1})

``tbptt=True`` carries the hidden state from one training batch to the next (truncated BPTT: the gradient stops
at the window border, the state does not) — meaningful when consecutive batches continue the same streams
(``funcdl.data.base.sequential_windows``, ``--set windows=sequential``). The state pytree then holds (h, c) of
the training batch (its size is ``Config.batch_size``); evaluation starts from zeros and leaves it as it is.
``generate`` samples (temperature, top-k, top-p): the prompt runs through the sequence primitive, then one
``lstm_cell`` step per new token.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

import funcdl as fd
from funcdl.nn.losses import softmax_cross_entropy
from funcdl.training.task import DataInfo

from .layers import sample_logits
from .registry import as_task, register
from .rnn import StackConfig, init_stack, stack, step_stack, zero_state

__all__ = ["Config", "KIND", "init", "apply", "loss", "generate", "extras"]

KIND = "language"


@dataclasses.dataclass(frozen=True)
class Config:
    vocab_size: int
    embed: int = 64
    hidden: int = 512
    layers: int = 1
    dropout: float = 0.0
    proj_size: int = 0
    tbptt: bool = False           # carry the hidden state between consecutive batches (truncated BPTT)
    batch_size: int | None = None  # the training batch size (the shape of the carried state; tbptt only)

    def __post_init__(self):
        if self.tbptt and self.batch_size is None:
            raise ValueError("char-lstm: tbptt needs the training batch size (Config.batch_size)")

    @property
    def stack(self) -> StackConfig:
        return StackConfig("lstm", self.embed, self.hidden, self.layers, False, self.proj_size, dropout=self.dropout)


def init(key, config: Config):
    """Parameters, and the state: ``{"h", "c"}`` zeros of the training batch with ``tbptt``, else ``{}``."""
    k1, k2, k3 = jax.random.split(key, 3)
    out = config.stack.out_size
    bound = 1.0 / math.sqrt(out)
    params = {"embed": jax.random.normal(k1, (config.vocab_size, config.embed)),        # torch nn.Embedding: N(0, 1)
              "rnn": init_stack(k2, config.stack),
              "head": {"w": jax.random.uniform(k3, (out, config.vocab_size), minval=-bound, maxval=bound),
                       "b": jnp.zeros((config.vocab_size,))}}
    state = {}
    if config.tbptt:
        h, c = zero_state(config.stack, config.batch_size)
        state = {"h": h, "c": c}
    return params, state


def apply(params, state, x, config: Config, *, key=None, train: bool = False):
    """``(logits (B, T, V), state)`` for token ids x (B, T). In training with ``tbptt`` the stack starts from the
    carried state (gradient stopped) and the new state is the batch's final (h, c)."""
    carry = train and config.tbptt and bool(state) and state["h"].shape[1] == x.shape[0]
    h0 = c0 = None
    if carry:
        h0, c0 = jax.lax.stop_gradient(state["h"]), jax.lax.stop_gradient(state["c"])
    e = fd.embedding(params["embed"], x)
    if train and config.dropout > 0 and key is not None:
        e = fd.dropout(e, jax.random.fold_in(key, 1000), rate=config.dropout)
    ys, h_n, c_n = stack(params["rnn"], e, config.stack, h0=h0, c0=c0, key=key, train=train)
    if train and config.dropout > 0 and key is not None:
        ys = fd.dropout(ys, jax.random.fold_in(key, 1001), rate=config.dropout)
    if carry:
        state = {"h": h_n.astype(state["h"].dtype), "c": c_n.astype(state["c"].dtype)}
    return fd.dense(ys, params["head"]["w"], params["head"]["b"]), state


def loss(params, state, batch, config: Config, *, key=None, train: bool = False):
    """Mean next-character cross-entropy (nats per character)."""
    logits, state = apply(params, state, batch["x"], config, key=key, train=train)
    value = softmax_cross_entropy(logits, batch["y"])
    return value, (state, {"loss": value})


@functools.partial(jax.jit, static_argnames=("config", "max_new_tokens", "temperature", "top_k", "top_p"))
def _generate(params, prompt, key, *, config, max_new_tokens, temperature, top_k, top_p):
    sc = config.stack
    if prompt.shape[1] > 1:       # all but the last prompt token through the sequence primitive
        _, h, c = stack(params["rnn"], fd.embedding(params["embed"], prompt[:, :-1]), sc)
    else:
        h, c = zero_state(sc, prompt.shape[0])

    def body(carry, k):
        h, c, tok = carry
        y, h, c = step_stack(params["rnn"], fd.embedding(params["embed"], tok), h, c, sc)
        logits = fd.dense(y, params["head"]["w"], params["head"]["b"])
        nxt = sample_logits(k, logits, temperature=temperature, top_k=top_k, top_p=top_p).astype(prompt.dtype)
        return (h, c, nxt), nxt

    _, toks = jax.lax.scan(body, (h, c, prompt[:, -1]), jax.random.split(key, max_new_tokens))
    return jnp.concatenate([prompt, toks.T], axis=1)


def generate(params, prompt, key, max_new_tokens: int, *, config: Config, temperature: float = 1.0,
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


def extras(config: Config) -> dict:
    return {"generate": functools.partial(generate, config=config)}


def build(info: DataInfo, *, embed=64, hidden=512, layers=1, dropout=0.0, proj_size=0, tbptt=False,
          batch_size=None):
    """``batch_size`` is the training batch size (``funcdl train`` passes it): the carried state's shape."""
    if info.vocab_size is None:
        raise ValueError(f"char-lstm needs a language data set with a vocabulary; {info.name!r} has none")
    return as_task(Config(info.vocab_size, int(embed), int(hidden), int(layers), float(dropout), int(proj_size),
                          bool(tbptt), None if batch_size is None else int(batch_size)))


register("char-lstm", build, data=("tinyshakespeare",),
         defaults={"data": "tinyshakespeare", "steps": 3000, "batch_size": 64, "seq_len": 100, "optimizer": "adam",
                   "lr": 3e-3, "schedule": "cosine", "warmup_steps": 100, "clip_norm": 1.0, "eval_every": 500,
                   "eval_batches": 4, "embed": 64, "hidden": 384, "layers": 1},
         description="character-level LSTM language model (embedding, LSTM, softmax), sampling with temperature/top-k",
         small={"embed": 4, "hidden": 6, "layers": 2, "proj_size": 3, "dropout": 0.1},
         small_data=DataInfo("fake-text", (8,), vocab_size=7, kind="language"))
