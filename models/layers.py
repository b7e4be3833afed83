"""Building blocks shared by several models: parameter initialisers, conv + bias, batch norm with its state,
the classification loss, the pre-norm transformer block and encoder, and token sampling.

Nothing here is a registered model; the model modules (``models.mlp``, ``models.resnet``, ...) compose these
pieces with the funcdl primitives.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

import funcdl as fd
from funcdl.nn import feedforward as ff
from funcdl.nn.attention import mha_init
from funcdl.nn.losses import softmax_cross_entropy, softmax_cross_entropy_with_probs
from funcdl.training.task import DataInfo

__all__ = ["conv_init", "conv", "dense_init", "bn_init", "bn", "as_channels_last", "spatial_dims_of", "image_shape",
           "need_classes", "classification_loss", "norm_init", "block_init", "block", "positions", "encoder_init",
           "encoder", "sample_logits"]


# -- initialisers and layers ------------------------------------------------------------------------------------


def conv_init(key, kernel: tuple, cin: int, cout: int, *, groups: int = 1, bias: bool = True,
              scheme: str = "torch") -> dict:
    """Kernel (*kernel, cin/groups, cout). ``torch``: U(+-1/sqrt(fan_in)) for kernel and bias (nn.Conv default);
    ``he``: N(0, 2/fan_out) (torchvision's ResNet init), no bias unless asked."""
    kw, kb = jax.random.split(key)
    shape = (*kernel, cin // groups, cout)
    fan_in = math.prod(kernel) * cin // groups
    if scheme == "torch":
        bound = 1.0 / math.sqrt(fan_in)
        p = {"w": jax.random.uniform(kw, shape, jnp.float32, minval=-bound, maxval=bound)}
    elif scheme == "he":
        fan_out = math.prod(kernel) * cout // groups
        p = {"w": jax.random.normal(kw, shape, jnp.float32) * math.sqrt(2.0 / fan_out)}
        bound = 1.0 / math.sqrt(fan_in)
    else:
        raise ValueError(f"conv_init: unknown scheme {scheme!r}; use 'torch' or 'he'")
    if bias:
        p["b"] = jax.random.uniform(kb, (cout,), jnp.float32, minval=-bound, maxval=bound)
    return p


def conv(p: dict, x, *, stride=1, padding="SAME", dilation=1, groups=1):
    """conv1d/2d/3d by the kernel's rank, with the layer's optional bias."""
    n = p["w"].ndim - 2
    fn = {1: fd.conv1d, 2: fd.conv2d, 3: fd.conv3d}[n]
    return fn(x, p["w"], p.get("b"), stride=stride, padding=padding, dilation=dilation, groups=groups)


def dense_init(key, n_in: int, n_out: int) -> dict:
    """torch nn.Linear's default: weight and bias uniform in +-1/sqrt(n_in)."""
    kw, kb = jax.random.split(key)
    bound = 1.0 / math.sqrt(n_in)
    return {"w": jax.random.uniform(kw, (n_in, n_out), jnp.float32, minval=-bound, maxval=bound),
            "b": jax.random.uniform(kb, (n_out,), jnp.float32, minval=-bound, maxval=bound)}


def bn_init(channels: int) -> tuple[dict, dict]:
    return fd.batch_norm_init(channels)


def bn(params: dict, state: dict, x, train: bool, momentum: float = 0.1):
    return fd.batch_norm_apply(params, state, x, train=train, momentum=momentum)


def as_channels_last(x, spatial_dims: int):
    """(N, L) -> (N, L, 1) and (N, H, W) -> (N, H, W, 1); channels-last input is returned as it is."""
    if x.ndim == spatial_dims + 1:
        return x[..., None]
    if x.ndim != spatial_dims + 2:
        raise ValueError(f"expected a batch of {spatial_dims}-D inputs (N, *spatial[, C]), got shape {x.shape}")
    return x


# -- what a builder reads from a DataInfo -----------------------------------------------------------------------


def spatial_dims_of(info: DataInfo) -> int:
    """1 for sequences like MNIST-1D (input (40,) or (40, 1)), 2 for images (28, 28, 1)."""
    shape = tuple(info.input_shape)
    if len(shape) == 1 or (len(shape) == 2 and shape[-1] <= 4 and shape[0] > 4):
        return 1
    return 2


def image_shape(info: DataInfo) -> tuple:
    """(H, W, C) of an image data set ((H, W) gets C = 1)."""
    shape = tuple(info.input_shape)
    if len(shape) == 2:
        shape = (*shape, 1)
    if len(shape) != 3:
        raise ValueError(f"expected images (H, W, C) from data {info.name!r}, got input shape {shape}")
    return shape


def need_classes(model: str, info: DataInfo) -> None:
    if info.num_classes is None:
        raise ValueError(f"{model} needs a classification data set; {info.name!r} has no classes")


# -- losses -----------------------------------------------------------------------------------------------------


def classification_loss(logits, batch: dict, state):
    """``(loss, (state, {"loss", "accuracy"}))`` of class logits (N, K) on ``batch["y"]``. A batch with mixed
    targets ``y_probs`` (MixUp/CutMix, funcdl.training.augment) gets the cross-entropy with those probabilities."""
    if "y_probs" in batch:
        value = softmax_cross_entropy_with_probs(logits, batch["y_probs"])
    else:
        value = softmax_cross_entropy(logits, batch["y"])
    acc = jnp.mean(jnp.argmax(logits, -1) == batch["y"])
    return value, (state, {"loss": value, "accuracy": acc})


# -- the pre-norm transformer block (encoder, encoder-decoder, ViT) ---------------------------------------------
# ``config`` is any model config with ``d_model``, ``n_head`` and ``d_ff`` (None: 4 d_model).


def norm_init(d: int) -> dict:
    return {"w": jnp.ones((d,)), "b": jnp.zeros((d,))}


def block_init(key, config, cross: bool = False) -> dict:
    d, f = config.d_model, config.d_ff or 4 * config.d_model
    k = jax.random.split(key, 3)
    p = {"ln_1": norm_init(d), "attn": mha_init(k[0], d, config.n_head, std=0.02), "ln_2": norm_init(d),
         "mlp": ff.gelu_mlp_init(k[1], d, f)}
    if cross:
        p["ln_x"] = norm_init(d)
        p["cross"] = mha_init(k[2], d, config.n_head, std=0.02)
    return p


def block(p, x, config, *, mask=None, causal=False, context=None, context_mask=None):
    """layer_norm -> multi-head attention -> residual [-> layer_norm -> cross-attention -> residual]
    -> layer_norm -> GELU MLP -> residual."""
    h = fd.layer_norm(x, p["ln_1"]["w"], p["ln_1"]["b"])
    x = x + fd.multi_head_attention(p["attn"], h, n_heads=config.n_head, key_padding_mask=mask, causal=causal)
    if context is not None:
        h = fd.layer_norm(x, p["ln_x"]["w"], p["ln_x"]["b"])
        x = x + fd.multi_head_attention(p["cross"], h, context, n_heads=config.n_head, key_padding_mask=context_mask)
    h = fd.layer_norm(x, p["ln_2"]["w"], p["ln_2"]["b"])
    m = p["mlp"]
    return x + fd.gelu_mlp(h, m["w1"], m["b1"], m["w2"], m["b2"])


def positions(table, t: int):
    if t > table.shape[0]:
        raise ValueError(f"transformer: a sequence of {t} positions is longer than the positional table "
                         f"({table.shape[0]}); build the model with a larger max_len")
    return table[:t]


def encoder_init(key, config) -> dict:
    """Token and position embeddings (``config.vocab_size``, ``config.max_len``), ``config.n_layer`` blocks, the
    final norm, and a classification head when ``config`` has ``n_classes`` > 0."""
    k = jax.random.split(key, config.n_layer + 3)
    p = {"wte": 0.02 * jax.random.normal(k[0], (config.vocab_size, config.d_model)),
         "wpe": 0.02 * jax.random.normal(k[1], (config.max_len, config.d_model)),
         "blocks": [block_init(kk, config) for kk in k[3:]], "ln_f": norm_init(config.d_model)}
    n_classes = getattr(config, "n_classes", 0)
    if n_classes:
        p["head"] = {"w": 0.02 * jax.random.normal(k[2], (config.d_model, n_classes)), "b": jnp.zeros(n_classes)}
    return p


def encoder(params, tokens, config, *, mask=None):
    """(B, T) ids -> (B, T, D) contextual states; ``mask`` (B, T) True for real tokens."""
    x = fd.embedding(params["wte"], tokens) + positions(params["wpe"], tokens.shape[1])
    for blk in params["blocks"]:
        x = block(blk, x, config, mask=mask)
    return fd.layer_norm(x, params["ln_f"]["w"], params["ln_f"]["b"])


# -- sampling ---------------------------------------------------------------------------------------------------


def sample_logits(key, logits, *, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None):
    """Draw one token per row of ``logits`` (B, V) after temperature, top-k and top-p (nucleus) filtering.

    temperature 0 is greedy (argmax). top-k keeps the k largest logits; top-p keeps the smallest set of tokens,
    taken in order of probability, whose total probability reaches p (always at least the most likely one).
    """
    if temperature < 0:
        raise ValueError(f"sample: temperature must be >= 0, got {temperature}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"sample: top_p must lie in (0, 1], got {top_p}")
    if top_k is not None and top_k <= 0:
        raise ValueError(f"sample: top_k must be positive, got {top_k}")
    logits = logits.astype(jnp.float32)
    if temperature == 0:
        return jnp.argmax(logits, axis=-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p is not None and top_p < 1.0:
        order = jnp.argsort(-logits, axis=-1)
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs          # probability mass strictly before each token
        drop_sorted = before >= top_p
        drop = jnp.zeros_like(drop_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(drop_sorted)
        logits = jnp.where(drop, -jnp.inf, logits)
    return jax.random.categorical(key, logits, axis=-1)
