"""A transformer encoder with BERT's masked-token pre-training (and a classification head on request).

    h = encoder(tokens)       token + learned position embeddings, pre-norm blocks (bidirectional
                              self-attention with a key-padding mask, GELU MLP), final layer norm
    logits = h wte^T          the unembedding is the token embedding (tied)

The original BERT's layout (``norm="post"``, as ``funcdl import hf`` builds it from a Hugging Face checkpoint):

    x_0 = layer_norm_e(wte[tokens] + wpe[positions] + wtt[token types])
    for each block:  x = layer_norm_1(x + attn(x));  x = layer_norm_2(x + mlp(x))     (no final norm)
    logits = layer_norm_m(gelu(h W_m + b_m)) wte^T + b_v                              (``mlm_head``)
    pooled = tanh(h[:, 0] W_p + b_p)                                                   (``pooler``, see ``pool``)

with layer-norm epsilon ``norm_eps`` (BERT: 1e-12) and token-type embeddings ``wtt`` (``type_vocab_size``).

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

from .layers import encoder_init, norm_init, positions
from .registry import as_task, register

__all__ = ["Config", "KIND", "init", "apply", "loss", "corrupt", "classify", "encode", "hidden_states", "pool"]

KIND = "language"
ACTIVATIONS = ("gelu", "gelu_tanh")


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
    norm: str = "pre"              # "pre": pre-norm blocks and a final norm; "post": BERT's (embedding norm, no final)
    norm_eps: float = 1e-5         # the layer norms' epsilon (BERT: 1e-12)
    activation: str = "gelu"       # "gelu" (erf) or "gelu_tanh"
    type_vocab_size: int = 0       # > 0: token-type (segment) embeddings wtt, added to the input
    pooler: bool = False           # BERT's pooler tanh(h[:, 0] W_p + b_p), read by ``pool``
    mlm_head: bool = False         # BERT's MLM transform (dense, GELU, layer norm) and output bias before the logits
    mask_id: int | None = None     # the [MASK] id; None: the last id of the vocabulary

    def __post_init__(self):
        if self.d_model % self.n_head:
            raise ValueError(f"bert.Config: n_head ({self.n_head}) must divide d_model ({self.d_model})")
        if self.norm not in ("pre", "post"):
            raise ValueError(f"bert.Config: norm must be 'pre' or 'post', got {self.norm!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"bert.Config: activation must be one of {', '.join(ACTIVATIONS)}, got "
                             f"{self.activation!r}")
        if not self.norm_eps > 0:
            raise ValueError(f"bert.Config: norm_eps must be positive, got {self.norm_eps}")
        if self.type_vocab_size < 0:
            raise ValueError(f"bert.Config: type_vocab_size must be >= 0, got {self.type_vocab_size}")
        if self.mask_id is not None and not 0 <= self.mask_id < self.vocab_size:
            raise ValueError(f"bert.Config: mask_id {self.mask_id} is not an id of the vocabulary (0 .. "
                             f"{self.vocab_size - 1})")

    @property
    def mask_token(self) -> int:
        return self.vocab_size - 1 if self.mask_id is None else self.mask_id


def init(key, config: Config):
    params = encoder_init(key, config)
    d, k = config.d_model, jax.random.split(jax.random.fold_in(key, 1), 3)
    if config.norm == "post":              # the norm sits on the embeddings instead of after the last block
        params["ln_e"] = params.pop("ln_f")
    if config.type_vocab_size:
        params["wtt"] = 0.02 * jax.random.normal(k[0], (config.type_vocab_size, d))
    if config.pooler:
        params["pooler"] = {"w": 0.02 * jax.random.normal(k[1], (d, d)), "b": jnp.zeros(d)}
    if config.mlm_head:
        params["mlm"] = {"dense": {"w": 0.02 * jax.random.normal(k[2], (d, d)), "b": jnp.zeros(d)},
                         "ln": norm_init(d), "b": jnp.zeros(config.vocab_size)}
    return params, {}


def _ln(p, x, config: Config):
    return fd.layer_norm(x, p["w"], p["b"], eps=config.norm_eps)


def _block(p, x, config: Config, mask):
    """One encoder block, pre-norm (x + f(norm(x))) or post-norm (norm(x + f(x)))."""
    tanh = config.activation == "gelu_tanh"
    m = p["mlp"]

    def attn(h):
        return fd.multi_head_attention(p["attn"], h, n_heads=config.n_head, key_padding_mask=mask)

    def mlp(h):
        return fd.gelu_mlp(h, m["w1"], m["b1"], m["w2"], m["b2"], approximate=tanh)

    if config.norm == "post":
        x = _ln(p["ln_1"], x + attn(x), config)
        return _ln(p["ln_2"], x + mlp(x), config)
    x = x + attn(_ln(p["ln_1"], x, config))
    return x + mlp(_ln(p["ln_2"], x, config))


def _embed(params, tokens, config: Config, token_types):
    x = fd.embedding(params["wte"], tokens) + positions(params["wpe"], tokens.shape[1])
    if config.type_vocab_size:
        types = jnp.zeros_like(tokens) if token_types is None else token_types
        x = x + fd.embedding(params["wtt"], types)
    elif token_types is not None:
        raise ValueError("bert: token_types given, but the model has no token-type embeddings (type_vocab_size 0)")
    return _ln(params["ln_e"], x, config) if config.norm == "post" else x


def hidden_states(params, tokens, config: Config, *, mask=None, token_types=None) -> list:
    """The embeddings and each block's output (L + 1 states (B, T, D)); pre-norm: the last one normalised."""
    x = _embed(params, tokens, config, token_types)
    states = [x]
    for blk in params["blocks"]:
        x = _block(blk, x, config, mask)
        states.append(x)
    if config.norm == "pre":
        states[-1] = _ln(params["ln_f"], x, config)
    return states


def encode(params, tokens, config: Config, *, mask=None, token_types=None):
    """(B, T) ids -> (B, T, D) contextual states; ``mask`` (B, T) True for real tokens, ``token_types`` (B, T)
    segment ids (zeros when None)."""
    return hidden_states(params, tokens, config, mask=mask, token_types=token_types)[-1]


def apply(params, state, x, config: Config, *, key=None, train: bool = False, mask=None, token_types=None):
    """``(logits (B, T, V), state)`` of token ids x (B, T) as they are (nothing masked); ``mask`` (B, T) is True
    for real tokens."""
    h = encode(params, x, config, mask=mask, token_types=token_types)
    if not config.mlm_head:
        return h @ params["wte"].T, state
    m = params["mlm"]
    t = fd.dense(h, m["dense"]["w"], m["dense"]["b"])
    t = _ln(m["ln"], fd.gelu(t, approximate=config.activation == "gelu_tanh"), config)
    return fd.dense(t, params["wte"].T, m["b"]), state


def pool(params, state, x, config: Config, *, mask=None, token_types=None):
    """``(pooled (B, D), state)``: BERT's pooler, tanh(h[:, 0] W_p + b_p) on the first token's state."""
    if not config.pooler:
        raise ValueError("bert.pool: this model has no pooler (build it with pooler=true)")
    h = encode(params, x, config, mask=mask, token_types=token_types)
    return fd.tanh(fd.dense(h[:, 0], params["pooler"]["w"], params["pooler"]["b"])), state


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
    h = encode(params, x, config, mask=mask)
    w = jnp.ones(x.shape, h.dtype) if mask is None else mask.astype(h.dtype)
    pooled = jnp.sum(h * w[..., None], 1) / jnp.maximum(jnp.sum(w, 1, keepdims=True), 1)
    return fd.dense(pooled, params["head"]["w"], params["head"]["b"]), state


def build(info: DataInfo, *, n_layer=2, n_head=4, d_model=64, d_ff=None, max_len=None, norm="pre", norm_eps=1e-5,
          activation="gelu", type_vocab_size=0, pooler=False, mlm_head=False, mask_id=None):
    """``mask_id`` None adds one id, [MASK], after the data's vocabulary; an id names the vocabulary's own [MASK]
    (an imported BERT). ``max_len`` None: the positional table holds the training windows (seq_len). The other
    options are BERT's layout (``norm=post norm_eps=1e-12 type_vocab_size=2 pooler=true mlm_head=true``)."""
    if info.vocab_size is None or len(info.input_shape) != 1:
        raise ValueError(f"bert_mlm needs a token data set, not {info.name!r}")
    vocab = info.vocab_size + 1 if mask_id is None else info.vocab_size
    return as_task(Config(vocab_size=vocab, max_len=int(max_len or info.input_shape[0]), n_layer=n_layer,
                          n_head=n_head, d_model=d_model, d_ff=d_ff, norm=norm, norm_eps=float(norm_eps),
                          activation=activation, type_vocab_size=type_vocab_size, pooler=bool(pooler),
                          mlm_head=bool(mlm_head), mask_id=mask_id))


register("bert_mlm", build, data=("tinyshakespeare",),
         defaults={"data": "tinyshakespeare", "steps": 2000, "batch_size": 32, "seq_len": 64, "optimizer": "adamw",
                   "lr": 1e-3, "weight_decay": 0.01, "clip_norm": 1.0},
         description="transformer encoder, masked-token (BERT) pre-training on characters",
         small={"n_layer": 1, "n_head": 2, "d_model": 8},
         small_data=DataInfo("fake-text", (10,), vocab_size=9, kind="language"))
