"""A decoder-only GPT (the nanoGPT architecture), with a KV cache for incremental decoding and sampling.

    x_0 = wte[tokens] + wpe[positions]                               (B, T, D)
    for each block:  x = x + attn(layer_norm_1(x))                     causal multi-head self-attention
                     x = x + mlp(layer_norm_2(x))                      dense(4D) -> GELU -> dense(D)
    logits = layer_norm_f(x) wte^T                                     the unembedding is the embedding (tied)
    loss = cross_entropy(logits, next tokens)

Pre-norm (GPT-2): every residual branch reads a normalised copy of the stream and adds its result back, so
the stream itself is never normalised until the end. Initialisation as GPT-2 / nanoGPT: weights N(0, 0.02),
the two projections that write into the residual stream N(0, 0.02 / sqrt(2 L)), biases 0, norm scales 1.

Every piece is a funcdl primitive (``embedding``, ``layer_norm``, ``dense``, ``dot_product_attention``,
``gelu``, ``dropout``, ``softmax_cross_entropy``), or — with ``fused=True``, the fast path used for training
— the fused transformer primitives ``funcdl.nn.attention.causal_self_attention``,
``funcdl.nn.feedforward.gelu_mlp`` and ``funcdl.nn.feedforward.tied_softmax_cross_entropy`` (one hand-derived
backward per attention sublayer, per GELU-MLP and for the tied unembedding + cross-entropy). Both give the same
numbers; ``funcdl.autodiff`` of either differentiates the plain-``jax.numpy`` references.

The model contract (``models/__init__.py``): ``init``, ``apply`` and ``loss`` take and return a ``state``, always
``{}`` here; ``hidden`` is the forward to the final hidden states, with the KV cache.

Decoding: ``generate`` runs the prompt through the model once ("prefill"), keeping every layer's keys and
values in a cache of ``block_size`` positions, then feeds one token at a time, attending over the cache. The
reference ``generate_recompute`` reruns the whole window for every new token; for the same key both give
exactly the same tokens (tests/test_gpt.py). Past ``block_size`` tokens the window slides, every position
changes, and the cache is no longer valid, so ``generate`` continues by recomputation.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

import funcdl as fd
from funcdl.core.primitive import _reference_mode
from funcdl.nn import attention as attn_ops
from funcdl.nn import feedforward as ff
from funcdl.nn.attention import merge_heads, split_heads
from funcdl.training.task import DataInfo

from .layers import sample_logits
from .registry import as_task, register, split_options

__all__ = ["Config", "KIND", "ACTIVATIONS", "init", "apply", "loss", "hidden", "hidden_states", "extras", "generate",
           "generate_recompute", "init_cache", "sample_logits", "count_params", "PRESETS"]

KIND = "language"
ACTIVATIONS = ("gelu", "gelu_tanh")     # the GELU of the MLP: exact (erf) or torch's approximate="tanh"


@dataclasses.dataclass(frozen=True)
class Config:
    vocab_size: int = 65
    block_size: int = 64           # context length (the positional table's size)
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0           # on the embeddings, the attention weights and each residual branch
    bias: bool = False             # biases in dense layers and layer norms (nanoGPT's bias=False drops both)
    activation: str = "gelu"       # the MLP's GELU: "gelu" (erf, exact) or "gelu_tanh" (GPT-2's tanh form)
    norm_eps: float = 1e-5         # the layer norms' epsilon
    d_ff: int | None = None        # the MLP's hidden width (None: 4 n_embd)
    fused: bool = True             # use the fused transformer primitives (fast path); False: one primitive per op
    compute_dtype: str | None = None   # "bfloat16": matrix products on bf16 operands, f32 accumulation (fused path)
    remat: bool = False            # recompute each block's forward in the backward (jax.checkpoint)
    grad_chunks: int = 1           # compute the gradient this many batch rows-chunks at a time (cache-sized)
    chunk_mode: str = "unrolled"   # "unrolled": independent chunks, which XLA's CPU runtime runs on both cores
                                   # at once (baby GPT, 2 vCPUs: 25.7 ms/iteration); "scan": one chunk after
                                   # the other in a lax.scan (28.4 ms)

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"gpt.Config: activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        if not self.norm_eps > 0:
            raise ValueError(f"gpt.Config: norm_eps must be positive, got {self.norm_eps}")
        if self.d_ff is not None and self.d_ff <= 0:
            raise ValueError(f"gpt.Config: d_ff must be positive (or None for 4 n_embd), got {self.d_ff}")
        if self.chunk_mode not in ("unrolled", "scan"):
            raise ValueError(f"gpt.Config: chunk_mode must be 'unrolled' or 'scan', got {self.chunk_mode!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"gpt.Config: n_head ({self.n_head}) must divide n_embd ({self.n_embd})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"gpt.Config: dropout must lie in [0, 1), got {self.dropout}")
        for f in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, f) <= 0:
                raise ValueError(f"gpt.Config: {f} must be positive, got {getattr(self, f)}")


def init(key, config: Config):
    d, v, L = config.n_embd, config.vocab_size, config.n_layer
    f = config.d_ff or 4 * d
    std, proj_std = 0.02, 0.02 / math.sqrt(2 * L)
    keys = jax.random.split(key, 2 + 4 * L)

    def norm():
        p = {"w": jnp.ones((d,))}
        if config.bias:
            p["b"] = jnp.zeros((d,))
        return p

    def lin(k, n_in, n_out, s):
        p = {"w": s * jax.random.normal(k, (n_in, n_out))}
        if config.bias:
            p["b"] = jnp.zeros((n_out,))
        return p

    blocks = []
    for i in range(L):
        k = keys[2 + 4 * i: 6 + 4 * i]
        blocks.append({
            "ln_1": norm(),
            "attn": {"qkv": lin(k[0], d, 3 * d, std), "proj": lin(k[1], d, d, proj_std)},
            "ln_2": norm(),
            "mlp": {"fc": lin(k[2], d, f, std), "proj": lin(k[3], f, d, proj_std)},
        })
    return {
        "wte": std * jax.random.normal(keys[0], (v, d)),
        "wpe": std * jax.random.normal(keys[1], (config.block_size, d)),
        "blocks": blocks,
        "ln_f": norm(),
    }, {}


def count_params(params, *, non_embedding: bool = True) -> int:
    n = sum(int(x.size) for x in jax.tree.leaves(params))
    return n - int(params["wpe"].size) if non_embedding else n


def _check_tokens(tokens, config: Config, start: int = 0):
    if tokens.ndim != 2:
        raise ValueError(f"gpt: tokens must be (batch, time) integers, got shape {tokens.shape}")
    t = tokens.shape[1]
    if start + t > config.block_size:
        raise ValueError(
            f"gpt: a sequence of {start + t} positions is longer than the positional table (block_size = "
            f"{config.block_size}); crop the input to the last {config.block_size} tokens or build the model with a "
            "larger block_size"
        )


def _ln(p, x, config: Config):
    return fd.layer_norm(x, p["w"], p.get("b"), eps=config.norm_eps)


def _dense(p, x):
    return fd.dense(x, p["w"], p.get("b"))


def _drop(x, key, rate, train):
    if not train or rate == 0.0:
        return x
    return fd.dropout(x, key, rate=rate)


def _embed(params, tokens, config, start=0):
    pos = jax.lax.dynamic_slice_in_dim(params["wpe"], start, tokens.shape[1], axis=0)
    return fd.embedding(params["wte"], tokens) + pos


def _attention(p, x, config: Config, key, train, cache=None, start=0):
    """Causal self-attention sublayer (without the norm); with ``cache`` (k, v) arrays (B, H, block, dh), the
    new keys/values are written at ``start`` and the queries attend over positions <= their own."""
    rate = config.dropout if train else 0.0
    k_attn, k_out = (jax.random.split(key) if key is not None else (None, None))
    if cache is None and config.fused:
        y = attn_ops.causal_self_attention(x, p["qkv"]["w"], p["qkv"].get("b"), p["proj"]["w"], p["proj"].get("b"),
                                           k_attn, n_heads=config.n_head, dropout_rate=rate,
                                           compute_dtype=config.compute_dtype)
        return _drop(y, k_out, config.dropout, train), cache
    else:
        qkv = _dense(p["qkv"], x)
        d = config.n_embd
        q, k, v = (split_heads(qkv[..., i * d:(i + 1) * d], config.n_head) for i in range(3))
        mask = None
        if cache is not None:
            ck, cv = cache
            k = jax.lax.dynamic_update_slice(ck, k.astype(ck.dtype), (0, 0, start, 0))
            v = jax.lax.dynamic_update_slice(cv, v.astype(cv.dtype), (0, 0, start, 0))
            cache = (k, v)
            t, s = x.shape[1], k.shape[2]
            mask = jnp.arange(s)[None, :] <= start + jnp.arange(t)[:, None]
        o = fd.dot_product_attention(q, k, v, None, mask, k_attn, causal=cache is None, dropout_rate=rate)
        y = merge_heads(o)
    y = _drop(_dense(p["proj"], y), k_out, config.dropout, train)
    return y, cache


def _mlp(p, x, config, key, train):
    tanh = config.activation == "gelu_tanh"
    if config.fused:
        y = ff.gelu_mlp(x, p["fc"]["w"], p["fc"].get("b"), p["proj"]["w"], p["proj"].get("b"), approximate=tanh,
                        compute_dtype=config.compute_dtype)
    else:
        y = _dense(p["proj"], fd.gelu(_dense(p["fc"], x), approximate=tanh))
    return _drop(y, key, config.dropout, train)


def hidden(params, tokens, config: Config, *, key=None, train: bool = False, cache=None, start=0):
    """The final normalised hidden states (B, T, D) (and the updated cache when one is given)."""
    _check_tokens(tokens, config, 0 if cache is not None else start)
    train = train and config.dropout > 0 and key is not None
    keys = jax.random.split(key, 1 + 3 * config.n_layer) if train else [None] * (1 + 3 * config.n_layer)
    x = _drop(_embed(params, tokens, config, start), keys[0], config.dropout, train)
    new_cache = []

    def block(blk, x, k_attn, k_mlp, c):
        return _block(blk, x, config, k_attn, k_mlp, train, c, start)

    if config.remat and cache is None:
        block = jax.checkpoint(block)
    for i, blk in enumerate(params["blocks"]):
        x, c = block(blk, x, keys[1 + 3 * i], keys[2 + 3 * i], None if cache is None else cache[i])
        new_cache.append(c)
    h = _ln(params["ln_f"], x, config)
    return (h, new_cache) if cache is not None else h


def _block(blk, x, config: Config, k_attn, k_mlp, train, cache, start):
    a, cache = _attention(blk["attn"], _ln(blk["ln_1"], x, config), config, k_attn, train, cache, start)
    x = x + a
    return x + _mlp(blk["mlp"], _ln(blk["ln_2"], x, config), config, k_mlp, train), cache


def hidden_states(params, tokens, config: Config) -> list:
    """Every hidden state of an evaluation forward, as Hugging Face's ``output_hidden_states`` lists them: the
    embeddings, the residual stream after each block but the last, then the final normalised states (L + 1)."""
    _check_tokens(tokens, config)
    x = _embed(params, tokens, config)
    states = [x]
    for blk in params["blocks"]:
        x, _ = _block(blk, x, config, None, None, False, None, 0)
        states.append(x)
    states[-1] = _ln(params["ln_f"], x, config)
    return states


def apply(params, state, x, config: Config, *, key=None, train: bool = False):
    """``(logits (B, T, V), state)`` for a batch of token ids x (B, T)."""
    return jnp.matmul(hidden(params, x, config, key=key, train=train), params["wte"].T), state


def _loss(params, tokens, targets, config: Config, key=None, train: bool = False):
    h = hidden(params, tokens, config, key=key, train=train)
    if config.fused:
        return ff.tied_softmax_cross_entropy(h, params["wte"], targets, compute_dtype=config.compute_dtype)
    return fd.softmax_cross_entropy(jnp.matmul(h, params["wte"].T), targets)


def loss(params, state, batch, config: Config, *, key=None, train: bool = False):
    """Mean next-token cross-entropy (nats per token) of ``batch["x"]`` against ``batch["y"]``.

    With ``config.grad_chunks = n > 1`` (and a batch divisible by n) the gradient is computed n rows at a
    time — forward and backward of one chunk, then the next, accumulated in a ``lax.scan`` — and handed to
    ``jax.grad`` through a ``custom_vjp`` whose backward only scales it. The mean of the chunk means is the
    batch mean, so the gradient is the same; what changes is the working set: the residuals of one chunk stay
    in the CPU's cache (see benchmarks/bench_gpt.py). Under ``funcdl.autodiff`` the plain loss is used.
    """
    tokens, targets = batch["x"], batch["y"]
    n = config.grad_chunks
    if n > 1 and tokens.shape[0] % n == 0 and not _reference_mode():
        value = _chunked_loss(params, tokens, targets, key, config, train)
    else:
        value = _loss(params, tokens, targets, config, key, train)
    return value, (state, {"loss": value})


def _chunk_value_and_grad(params, tokens, targets, key, config, train):
    n = config.grad_chunks
    split = lambda a: a.reshape(n, a.shape[0] // n, *a.shape[1:])
    keys = jax.random.split(key, n) if key is not None else jnp.zeros((n, 2), jnp.uint32)
    has_key = key is not None

    def body(acc, inp):
        x, y, k = inp
        v, g = jax.value_and_grad(_loss)(params, x, y, config, k if has_key else None, train)
        return (acc[0] + v, jax.tree.map(jnp.add, acc[1], g)), None

    zero = (jnp.zeros((), params["wte"].dtype), jax.tree.map(jnp.zeros_like, params))
    xs = (split(tokens), split(targets), keys)
    if config.chunk_mode == "scan":
        (value, grads), _ = jax.lax.scan(body, zero, xs)
    else:           # independent chunks: XLA's CPU runtime may run them on different cores at once
        acc = zero
        for i in range(n):
            acc, _ = body(acc, jax.tree.map(lambda a, i=i: a[i], xs))
        value, grads = acc
    return value / n, jax.tree.map(lambda g: g / n, grads)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _chunked_loss(params, tokens, targets, key, config, train):
    return _loss(params, tokens, targets, config, key, train)


def _chunked_fwd(params, tokens, targets, key, config, train):
    value, grads = _chunk_value_and_grad(params, tokens, targets, key, config, train)
    return value, grads


def _chunked_bwd(config, train, grads, g):
    return jax.tree.map(lambda x: g * x, grads), None, None, None


_chunked_loss.defvjp(_chunked_fwd, _chunked_bwd)


def extras(config: Config) -> dict:
    return {"generate": functools.partial(generate, config=config)}


def init_cache(config: Config, batch: int, dtype=jnp.float32):
    shape = (batch, config.n_head, config.block_size, config.n_embd // config.n_head)
    return [(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(config.n_layer)]


def _check_prompt(prompt, config, max_new_tokens):
    prompt = jnp.asarray(prompt)
    if prompt.ndim == 1:
        prompt = prompt[None]
    if prompt.ndim != 2 or prompt.shape[1] == 0:
        raise ValueError(f"generate: the prompt must be a non-empty (batch, time) array of ids, got {prompt.shape}")
    if max_new_tokens < 0:
        raise ValueError(f"generate: max_new_tokens must be >= 0, got {max_new_tokens}")
    return prompt.astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("config", "temperature", "top_k", "top_p"))
def _next_recompute(params, window, length, key, *, config, temperature, top_k, top_p):
    """Next token from a fixed-size window (B, block) whose first ``length`` entries are real."""
    h = hidden(params, window, config)
    last = jax.lax.dynamic_index_in_dim(h, length - 1, axis=1, keepdims=False)
    return sample_logits(key, jnp.matmul(last, params["wte"].T), temperature=temperature, top_k=top_k, top_p=top_p)


def generate_recompute(params, prompt, key, max_new_tokens: int, *, config: Config, temperature: float = 1.0,
                       top_k: int | None = None, top_p: float | None = None):
    """Reference decoder: every new token reruns the model on the (cropped) context. Returns (B, T + new)."""
    prompt = _check_prompt(prompt, config, max_new_tokens)
    tokens = prompt
    n_keys = max_new_tokens + 1
    keys = jax.random.split(key, n_keys)
    for i in range(max_new_tokens):
        t = tokens.shape[1]
        if t >= config.block_size:
            window, length = tokens[:, -config.block_size:], config.block_size
        else:
            window = jnp.pad(tokens, ((0, 0), (0, config.block_size - t)))
            length = t
        nxt = _next_recompute(params, window, length, keys[i], config=config, temperature=temperature,
                              top_k=top_k, top_p=top_p)
        tokens = jnp.concatenate([tokens, nxt[:, None].astype(jnp.int32)], axis=1)
    return tokens


def generate(params, prompt, key, max_new_tokens: int, *, config: Config, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, use_cache: bool = True):
    """Sample ``max_new_tokens`` tokens after ``prompt`` (B, T) or (T,). Returns (B, T + max_new_tokens).

    With the KV cache the prompt is processed once and each new token costs one single-position forward; the
    random keys are split exactly as in ``generate_recompute``, so both give the same tokens. Once the sequence
    outgrows ``block_size`` the rest is produced by recomputation over the sliding window.
    """
    prompt = _check_prompt(prompt, config, max_new_tokens)
    config = dataclasses.replace(config, dropout=0.0)
    if not use_cache or max_new_tokens == 0:
        return generate_recompute(params, prompt, key, max_new_tokens, config=config, temperature=temperature,
                                  top_k=top_k, top_p=top_p)
    t = prompt.shape[1]
    if t >= config.block_size:
        return generate_recompute(params, prompt, key, max_new_tokens, config=config, temperature=temperature,
                                  top_k=top_k, top_p=top_p)
    keys = jax.random.split(key, max_new_tokens + 1)
    # positions t .. block_size - 1 can be filled through the cache: that is block_size - t new tokens
    n_cached = min(max_new_tokens, config.block_size - t)
    stacked = jnp.stack(list(keys[:n_cached]))
    out = _decode_cached_keys(params, prompt, stacked, config=config, temperature=temperature, top_k=top_k,
                              top_p=top_p)
    tokens = jnp.concatenate([prompt, out.astype(jnp.int32)], axis=1)
    for i in range(n_cached, max_new_tokens):
        t = tokens.shape[1]
        window, length = (tokens[:, -config.block_size:], config.block_size) if t >= config.block_size else (
            jnp.pad(tokens, ((0, 0), (0, config.block_size - t))), t)
        nxt = _next_recompute(params, window, length, keys[i], config=config, temperature=temperature,
                              top_k=top_k, top_p=top_p)
        tokens = jnp.concatenate([tokens, nxt[:, None].astype(jnp.int32)], axis=1)
    return tokens


@functools.partial(jax.jit, static_argnames=("config", "temperature", "top_k", "top_p"))
def _decode_cached_keys(params, prompt, keys, *, config, temperature, top_k, top_p):
    """The cached decoding loop of ``generate``: prefill the cache with the prompt, then one single-position
    forward per new token, sampling token i with ``keys[i]`` (the same keys ``generate_recompute`` uses)."""
    b, t = prompt.shape
    n = keys.shape[0]
    cache = init_cache(config, b)
    h, cache = hidden(params, prompt, config, cache=cache, start=0)
    first = sample_logits(keys[0], jnp.matmul(h[:, -1], params["wte"].T), temperature=temperature, top_k=top_k,
                          top_p=top_p)
    if n == 1:
        return first[:, None]

    def step(carry, inp):
        cache, tok = carry
        pos, k = inp
        h, cache = hidden(params, tok[:, None], config, cache=cache, start=pos)
        nxt = sample_logits(k, jnp.matmul(h[:, -1], params["wte"].T), temperature=temperature, top_k=top_k,
                            top_p=top_p)
        return (cache, nxt), nxt

    _, rest = jax.lax.scan(step, (cache, first), (t + jnp.arange(n - 1), keys[1:]))
    return jnp.concatenate([first[:, None], jnp.swapaxes(rest, 0, 1)], axis=1)


# ------------------------------------------------------------------------------------------------- registry
# named configurations, in registry options (model and training): "baby" is nanoGPT's CPU example (the registered
# defaults), "shakespeare-char" its GPU configuration. `funcdl train gpt --preset NAME` merges the whole dict;
# `--set preset=NAME` selects only the model half.
PRESETS = {
    "baby": {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, "dropout": 0.0, "seq_len": 64,
             "batch_size": 12, "steps": 2000},
    "shakespeare-char": {"n_layer": 6, "n_head": 6, "n_embd": 384, "block_size": 256, "dropout": 0.2,
                         "seq_len": 256, "batch_size": 64, "steps": 5000},
}


def build(info: DataInfo, *, n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0, bias=False, fused=True,
          compute_dtype="bfloat16", grad_chunks=2, preset=None, remat=False, activation="gelu", norm_eps=1e-5,
          d_ff=None):
    """``preset`` (a name in ``PRESETS``) replaces the architecture options by the preset's. ``activation``,
    ``norm_eps`` and ``d_ff`` are GPT-2's options for a model imported from Hugging Face (``funcdl import hf``):
    ``bias=true activation=gelu_tanh`` is GPT-2's layout."""
    if info.vocab_size is None:
        raise ValueError(f"gpt needs a language (token) data set; {info.name!r} has no vocabulary")
    arch = {"n_layer": n_layer, "n_head": n_head, "n_embd": n_embd, "block_size": block_size, "dropout": dropout}
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"gpt: unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
        arch |= split_options(PRESETS[preset])[1]
    if compute_dtype in ("none", "None", "float32", ""):
        compute_dtype = None
    return as_task(Config(vocab_size=info.vocab_size, bias=bias, fused=fused, compute_dtype=compute_dtype,
                          grad_chunks=grad_chunks, remat=bool(remat), activation=activation,
                          norm_eps=float(norm_eps), d_ff=d_ff, **arch))


# nanoGPT decays the 2-D tensors only (dense weights and the embeddings), never norm scales or biases
DECAY_MASK = r"^(wte|wpe)$|/(qkv|proj|fc)/w$"

register(
    "gpt", build, data=("tinyshakespeare",),
    defaults={
        "data": "tinyshakespeare", **PRESETS["baby"],
        "bias": False, "compute_dtype": "bfloat16", "grad_chunks": 2,
        "optimizer": "adamw", "lr": 1e-3, "schedule": "cosine",
        "warmup_steps": 100, "min_lr": 1e-4, "weight_decay": 0.1, "clip_norm": 1.0, "eval_every": 250,
        "eval_batches": 20,
        "optimizer_options": {"b1": 0.9, "b2": 0.99, "mask": DECAY_MASK},
        "presets": {name: {"preset": name, **opts} for name, opts in PRESETS.items() if name != "baby"},
    },
    description="decoder-only GPT (nanoGPT baby-GPT: 4 layers, 4 heads, width 128, context 64, no biases)",
    # float32 compute (the hand-vs-autodiff check needs it) and the chunked gradient of the default; no dropout:
    # the chunks draw their own masks, the unchunked reference one (tests/test_gpt.py checks dropout unchunked)
    small={"n_layer": 2, "n_head": 2, "n_embd": 8, "block_size": 8, "compute_dtype": "float32", "grad_chunks": 2},
    small_data=DataInfo("fake-text", (8,), vocab_size=11, kind="language"),
)
