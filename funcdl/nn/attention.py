"""Scaled dot-product attention with a hand-derived backward, and multi-head attention composed from it.

Shapes: q (..., T, d), k (..., S, d), v (..., S, dv); the leading dimensions (batch, heads, ...) broadcast
against each other (grouped-query heads use this: see ``multi_head_attention``). Output (..., T, dv).

Forward (one batch element, one head; s = the scale, 1/sqrt(d) by default):

    S = s Q K^T + B              (T, S)   B an optional additive bias (ALiBi, relative positions, -inf masks)
    S_ij = -inf where the boolean mask is False, or j > i + (S - T) under ``causal`` (aligned bottom-right,
           so a block of new queries at the end of a KV cache sees all earlier keys)
    P = softmax(S) row-wise      (T, S)   rows with no allowed key give P = 0 (and output 0), not NaN
    Pd = P * M / (1 - r)                   dropout on the weights, M ~ Bernoulli(1 - r) drawn from ``key``
    O = Pd V                     (T, dv)

Backward, given dO (and dP_w when the weights are returned too):

    dV  = Pd^T dO                                       (the transposed product)
    dPd = dO V^T ;   dP = dPd * M / (1 - r) (+ dP_w)    (dropout's own rule)
    dS  = P * (dP - D),  D_i = sum_j P_ij dP_ij         (softmax's Jacobian diag(p) - p p^T)
    dQ  = s dS K,   dK = s dS^T Q,   dB = dS            (summed over the axes B was broadcast along)

The row sums D need not touch the (T, S) matrices: sum_j P_ij dP_ij = sum_j Pd_ij dPd_ij =
sum_j Pd_ij (dO V^T)_ij = sum_c dO_ic (Pd V)_ic = rowsum(dO * O). So D = rowsum(dO * O) — the identity the
flash-attention backward (``funcdl.nn.flash``) is built on — costs O(T dv), even with dropout.

Residuals: q, k, v, O and P (the (T, S) probabilities) plus the dropout key. P is kept, not recomputed: for
the short contexts this plain version is meant for, keeping it is cheaper than a second Q K^T product; the
blockwise version keeps only O and the row log-sum-exp and recomputes P block by block. The dropout mask M
is regenerated from the key in the backward instead of being stored.

The masks follow jax's convention: ``mask`` is boolean, True where a query may attend to a key (torch's
``scaled_dot_product_attention`` boolean mask means the same; its ``nn.MultiheadAttention`` key-padding
mask is the opposite, True = ignore).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ..core.examples import Example, keys, normal
from ..core.primitive import primitive, unbroadcast
from ._dropout import check_rate, drop
from ._scores import broadcasts_to, causal_mask, padding_mask, score_scale
from ._space import arr, integer, key, num, pick
from .linear import dense

__all__ = [
    "dot_product_attention", "scaled_dot_product_attention", "causal_mask", "padding_mask", "multi_head_attention",
    "mha_init", "split_heads", "merge_heads", "qkv_projection", "attend", "packed_causal_attention",
    "causal_self_attention",
]


# ------------------------------------------------------------------------------------------ checks
def _batch_shape(name, q, k, v):
    if q.ndim < 2 or k.ndim < 2 or v.ndim < 2:
        raise ValueError(f"{name}: q, k, v must be at least 2-D (..., T, d); got q {q.shape}, k {k.shape}, v {v.shape}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"{name}: q and k must have the same last (feature) size; got q {q.shape}, k {k.shape}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"{name}: k and v must have the same length (axis -2); got k {k.shape}, v {v.shape}")
    try:
        return jnp.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except ValueError:
        raise ValueError(
            f"{name}: the leading (batch, head) axes of q {q.shape}, k {k.shape}, v {v.shape} do not broadcast"
        ) from None


def _check_against(name, what, arr, full):
    if not broadcasts_to(arr.shape, full):
        raise ValueError(
            f"{name}: {what} of shape {arr.shape} does not broadcast to the score shape {full} "
            f"(batch..., T queries, S keys); e.g. a key-padding mask should be (B, 1, 1, S) and a full mask (T, S)"
        )


def _check_mask_bias(name, full, bias, mask):
    if bias is not None:
        if not jnp.issubdtype(bias.dtype, jnp.floating):
            raise TypeError(f"{name}: bias must be a float array (additive), got dtype {bias.dtype}; "
                            "pass boolean masks as mask=")
        _check_against(name, "bias", bias, full)
    if mask is not None:
        if mask.dtype != jnp.bool_:
            raise TypeError(f"{name}: mask must be boolean (True = attend), got dtype {mask.dtype}; "
                            "pass additive float masks as bias=")
        _check_against(name, "mask", mask, full)


def _dot_product_attention_check(q, k, v, bias=None, mask=None, key=None, *, causal=False, scale=None,
                                 dropout_rate=0.0, return_weights=False):
    name = "dot_product_attention"
    batch = _batch_shape(name, q, k, v)
    _check_mask_bias(name, (*batch, q.shape[-2], k.shape[-2]), bias, mask)
    check_rate(name, dropout_rate, key, what="dropout_rate")


# ------------------------------------------------------------------------------------------ primitive
def _swap(x):
    return jnp.swapaxes(x, -1, -2)


def _allowed(t, s, mask, causal):
    """Combined boolean mask or None."""
    allowed = mask
    if causal:
        c = causal_mask(t, s)
        allowed = c if allowed is None else allowed & c
    return allowed


def _probabilities(q, k, bias, mask, causal, scale):
    """P = softmax(s Q K^T + B) with masked entries exactly 0; rows with nothing allowed are all 0."""
    s = jnp.matmul(q, _swap(k)) * jnp.asarray(score_scale(q, scale), q.dtype)
    if bias is not None:
        s = s + bias
    allowed = _allowed(q.shape[-2], k.shape[-2], mask, causal)
    if allowed is not None:
        s = jnp.where(allowed, s, -jnp.inf)
    m = jax.lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True))
    m = jnp.where(jnp.isfinite(m), m, 0)
    e = jnp.exp(s - m)
    denom = jnp.sum(e, axis=-1, keepdims=True)
    return e / jnp.where(denom == 0, 1, denom)


def _dot_product_attention(q, k, v, bias=None, mask=None, key=None, *, causal=False, scale=None, dropout_rate=0.0,
                           return_weights=False):
    """O = dropout(softmax(s Q K^T + bias, masked)) V; (O, P) when ``return_weights``.

    q (..., T, d), k (..., S, d), v (..., S, dv), bias and mask broadcast to (..., T, S); s = 1/sqrt(d) by
    default. With S = s Q K^T + bias (-inf where masked), P = softmax(S) row-wise, Pd = P * M / (1 - r):
        dv = Pd^T dO;   dPd = dO V^T;   dP = dPd * M / (1 - r) (+ the cotangent of the returned P)
        dS = P * (dP - D),   D_i = sum_j P_ij dP_ij = rowsum(dO * O) (+ rowsum(P * dP_w))
        dq = s dS K,   dk = s dS^T Q,   dbias = dS    (each summed over the axes it was broadcast along)
    The mask and the key get no gradient. Residuals: q, k, v, O, P, the bias and the key (M is redrawn).
    """
    p = _probabilities(q, k, bias, mask, causal, scale)
    o = jnp.matmul(drop(p, key, dropout_rate), v)
    return (o, p) if return_weights else o


def _dot_product_attention_fwd(q, k, v, bias=None, mask=None, key=None, *, causal=False, scale=None,
                               dropout_rate=0.0, return_weights=False):
    # keeps P, so the two products are formed here rather than by the reference
    p = _probabilities(q, k, bias, mask, causal, scale)
    o = jnp.matmul(drop(p, key, dropout_rate), v)
    return ((o, p) if return_weights else o), (q, k, v, bias, key, o, p)


def _dot_product_attention_bwd(res, g, *, causal=False, scale=None, dropout_rate=0.0, return_weights=False):
    q, k, v, bias, key, o, p = res
    do, dp_w = g if return_weights else (g, None)
    dv = jnp.matmul(_swap(drop(p, key, dropout_rate)), do)
    dp = drop(jnp.matmul(do, _swap(v)), key, dropout_rate)           # the same mask M and 1/(1-r)
    d = jnp.sum(do * o, axis=-1, keepdims=True)                     # = rowsum(P * dP)
    if dp_w is not None:
        dp = dp + dp_w
        d = d + jnp.sum(p * dp_w, axis=-1, keepdims=True)
    ds = p * (dp - d)
    sc = jnp.asarray(score_scale(q, scale), q.dtype)
    dq = jnp.matmul(ds, k) * sc
    dk = jnp.matmul(_swap(ds), q) * sc
    dbias = None if bias is None else unbroadcast(ds, bias.shape)
    return (unbroadcast(dq, q.shape), unbroadcast(dk, k.shape), unbroadcast(dv, v.shape), dbias, None, None)


def _dot_product_attention_examples(key, dtype):
    k = keys(key, 16)
    q = normal(k[0], (2, 3, 5, 4), dtype)
    kk = normal(k[1], (2, 3, 6, 4), dtype)
    v = normal(k[2], (2, 3, 6, 3), dtype)
    pad = jnp.array([[True] * 6, [True] * 4 + [False] * 2])[:, None, None, :]           # (2, 1, 1, 6)
    rand_mask = jax.random.bernoulli(jax.random.PRNGKey(7), 0.7, (5, 6)).at[:, 0].set(True)
    bias = normal(k[3], (3, 5, 6), dtype, 0.5)
    qs = normal(k[4], (2, 6, 4), dtype)
    empty_row = jnp.ones((5, 6), bool).at[2].set(False)
    return [
        Example((q, kk, v), {}, "plain T=5 S=6"),
        Example((qs, normal(k[5], (2, 6, 4), dtype), normal(k[6], (2, 6, 4), dtype)), {"causal": True}, "causal"),
        Example((q, kk, v, bias, pad), {}, "bias (H,T,S) + key padding"),
        Example((q, kk, v, None, rand_mask), {"scale": 0.3}, "bool mask (T,S) scale=0.3"),
        Example((q, kk, v, None, empty_row), {}, "fully masked row -> 0"),
        Example((q, kk, v, None, None, jax.random.PRNGKey(3)), {"dropout_rate": 0.25}, "dropout 0.25"),
        Example((q, normal(k[7], (2, 1, 6, 4), dtype), normal(k[8], (2, 1, 6, 3), dtype), None, pad),
                {"return_weights": True}, "shared kv head, return weights"),
        Example((normal(k[9], (2, 2, 6, 4), dtype), normal(k[10], (2, 2, 6, 4), dtype),
                 normal(k[11], (2, 2, 6, 4), dtype), None, None, jax.random.PRNGKey(4)),
                {"causal": True, "dropout_rate": 0.2, "return_weights": True}, "causal+dropout+weights"),
    ]


def _smaller(rng, shape):
    """A shape that broadcasts to ``shape``: some leading axes dropped, some axes 1."""
    shape = shape[integer(rng, 0, len(shape)):] if rng.random() < 0.5 else shape
    return tuple(1 if rng.random() < 0.3 else n for n in shape)


def _dot_product_attention_space(rng, dtype):
    """Batch axes 0-2 (k, v may share heads: axes of 1), T 1-5 queries, S 2-6 keys (with one key
    P = 1 and dq = dk = 0 exactly: the checker would compare rounding noise), widths 1-4; a float bias
    and a boolean mask each None or of any shape broadcasting to (batch, T, S) (fully masked rows included),
    causal or not, scale None or 0.1-2, dropout 0 or in (0, 1) with a key, weights returned or not."""
    batch = tuple(integer(rng, 1, 3) for _ in range(integer(rng, 0, 2)))
    t, s, d, dv = integer(rng, 1, 5), integer(rng, 2, 6), integer(rng, 1, 4), integer(rng, 1, 4)
    kv_batch = tuple(1 if rng.random() < 0.3 else n for n in batch)
    q, k, v = arr(rng, (*batch, t, d), dtype), arr(rng, (*kv_batch, s, d), dtype), arr(rng, (*kv_batch, s, dv), dtype)
    full = (*batch, t, s)
    bias = arr(rng, _smaller(rng, full), dtype, 0.5) if rng.random() < 0.4 else None
    mask = jnp.asarray(rng.random(_smaller(rng, full)) < 0.75) if rng.random() < 0.5 else None
    rate = pick(rng, [0.0, num(rng, 0.05, 0.9)])
    settings = {"causal": pick(rng, [False, True]), "scale": pick(rng, [None, num(rng, 0.1, 2.0)]),
                "dropout_rate": rate, "return_weights": pick(rng, [False, True])}
    return Example((q, k, v, bias, mask, key(rng) if rate > 0 or rng.random() < 0.3 else None), settings)


dot_product_attention = primitive(
    "dot_product_attention", _dot_product_attention, _dot_product_attention_fwd, _dot_product_attention_bwd,
    examples=_dot_product_attention_examples, space=_dot_product_attention_space, check=_dot_product_attention_check,
)
scaled_dot_product_attention = dot_product_attention


# ------------------------------------------------------------------------------------------ multi-head
def split_heads(x, n_heads: int):
    """(B, T, H*dh) -> (B, H, T, dh)."""
    *lead, t, width = x.shape
    return jnp.swapaxes(x.reshape(*lead, t, n_heads, width // n_heads), -2, -3)


def merge_heads(x):
    """(B, H, T, dh) -> (B, T, H*dh)."""
    x = jnp.swapaxes(x, -2, -3)
    return x.reshape(*x.shape[:-2], x.shape[-2] * x.shape[-1])


def _check_heads(d_model, n_heads, n_kv_heads):
    if n_heads <= 0 or d_model % n_heads:
        raise ValueError(
            f"multi_head_attention: the number of heads ({n_heads}) must divide the model width ({d_model}); "
            f"choose n_heads among the divisors of {d_model}"
        )
    if n_kv_heads <= 0 or n_heads % n_kv_heads:
        raise ValueError(
            f"multi_head_attention: n_kv_heads ({n_kv_heads}) must divide n_heads ({n_heads}) for grouped-query "
            "attention (1 = multi-query, n_heads = ordinary multi-head)"
        )


def mha_init(key, d_model: int, n_heads: int, *, n_kv_heads: int | None = None, bias: bool = True,
             out_std: float | None = None, std: float | None = None) -> dict:
    """Parameters of multi-head attention with a fused projection.

    ``{"w_qkv": (D, (H + 2 Hkv) dh), "b_qkv", "w_o": (H dh, D), "b_o"}``; the fused columns are
    [q heads | k heads | v heads], head-major, as torch's ``in_proj_weight`` transposed. Weights are normal
    with ``std`` (default torch's xavier-uniform-like 1/sqrt(D)), the output projection with ``out_std``.
    """
    n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
    _check_heads(d_model, n_heads, n_kv_heads)
    dh = d_model // n_heads
    std = 1.0 / math.sqrt(d_model) if std is None else std
    out_std = std if out_std is None else out_std
    k1, k2 = jax.random.split(key)
    params = {
        "w_qkv": std * jax.random.normal(k1, (d_model, (n_heads + 2 * n_kv_heads) * dh)),
        "w_o": out_std * jax.random.normal(k2, (n_heads * dh, d_model)),
    }
    if bias:
        params["b_qkv"] = jnp.zeros(((n_heads + 2 * n_kv_heads) * dh,))
        params["b_o"] = jnp.zeros((d_model,))
    return params


def qkv_projection(params, x, context=None, *, n_heads: int, n_kv_heads: int | None = None):
    """Project to per-head q (B, H, T, dh), k and v (B, Hkv, S, dh). Self-attention uses one fused matmul;
    cross-attention projects ``x`` with the q columns and ``context`` with the k, v columns of the same weight."""
    n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
    w, b = params["w_qkv"], params.get("b_qkv")
    d_model = x.shape[-1]
    _check_heads(d_model, n_heads, n_kv_heads)
    total = w.shape[1]
    dh = total // (n_heads + 2 * n_kv_heads)
    nq = n_heads * dh
    if context is None:
        qkv = dense(x, w, b)
        q, kv = qkv[..., :nq], qkv[..., nq:]
    else:
        if context.shape[-1] != w.shape[0]:
            raise ValueError(f"multi_head_attention: context width {context.shape[-1]} must equal the model width "
                             f"{w.shape[0]} (context {context.shape}, x {x.shape})")
        q = dense(x, w[:, :nq], None if b is None else b[:nq])
        kv = dense(context, w[:, nq:], None if b is None else b[nq:])
    k, v = kv[..., : n_kv_heads * dh], kv[..., n_kv_heads * dh:]
    return split_heads(q, n_heads), split_heads(k, n_kv_heads), split_heads(v, n_kv_heads)


def _group(x, groups):
    """(B, H, T, e) -> (B, Hkv, G, T, e) for grouped-query attention."""
    b, h, t, e = x.shape
    return x.reshape(b, h // groups, groups, t, e)


def _group_mask(m, n_heads, groups):
    """A mask/bias broadcastable to (B, H, T, S) reshaped to broadcast against (B, Hkv, G, T, S)."""
    if m is None:
        return None
    m = m.reshape((1,) * (4 - m.ndim) + m.shape)
    if m.shape[1] == 1:
        return m[:, :, None]
    return m.reshape(m.shape[0], n_heads // groups, groups, *m.shape[2:])


def attend(q, k, v, *, bias=None, mask=None, causal=False, key=None, dropout_rate=0.0, return_weights=False,
           scale=None):
    """The core attention for per-head tensors q (B, H, T, dh), k/v (B, Hkv, S, dh) with Hkv dividing H.

    Grouped-query heads are handled by broadcasting: q is viewed as (B, Hkv, G, T, dh) and k, v as
    (B, Hkv, 1, S, dh), so no copy of k and v is made (the primitive sums their gradient over the group axis).
    """
    n_heads, n_kv = q.shape[1], k.shape[1]
    full = (q.shape[0], n_heads, q.shape[2], k.shape[2])
    _check_mask_bias("multi_head_attention", full, bias, mask)
    if n_kv == n_heads:
        return dot_product_attention(q, k, v, bias, mask, key, causal=causal, scale=scale,
                                     dropout_rate=dropout_rate, return_weights=return_weights)
    if n_kv <= 0 or n_heads % n_kv:
        raise ValueError(f"multi_head_attention: k/v heads ({n_kv}) must divide q heads ({n_heads})")
    g = n_heads // n_kv
    out = dot_product_attention(
        _group(q, g), k[:, :, None], v[:, :, None], _group_mask(bias, n_heads, g), _group_mask(mask, n_heads, g),
        key, causal=causal, scale=scale, dropout_rate=dropout_rate, return_weights=return_weights,
    )
    if return_weights:
        o, p = out
        return o.reshape(q.shape[:3] + (v.shape[-1],)), p.reshape(full)
    return out.reshape(q.shape[:3] + (v.shape[-1],))


def multi_head_attention(params, x, context=None, *, n_heads: int, n_kv_heads: int | None = None, mask=None,
                         bias=None, key_padding_mask=None, causal=False, key=None, dropout_rate=0.0,
                         return_weights=False):
    """Multi-head attention: fused QKV projection, per-head scaled dot-product attention, output projection.

    x (B, T, D); ``context`` (B, S, D) for cross-attention (self-attention when None). ``mask`` (boolean,
    True = attend) and ``bias`` (additive) broadcast to (B, H, T, S); ``key_padding_mask`` (B, S) is True for
    real keys. ``n_kv_heads`` < ``n_heads`` gives grouped-query attention. Returns (B, T, D), or
    ``(out, weights (B, H, T, S))`` when ``return_weights``.
    """
    if x.ndim != 3:
        raise ValueError(f"multi_head_attention: x must be (batch, time, width), got shape {x.shape}")
    q, k, v = qkv_projection(params, x, context, n_heads=n_heads, n_kv_heads=n_kv_heads)
    if key_padding_mask is not None:
        s = k.shape[2]
        if key_padding_mask.shape != (x.shape[0], s) or key_padding_mask.dtype != jnp.bool_:
            raise ValueError(f"multi_head_attention: key_padding_mask must be boolean (batch, keys) = "
                             f"{(x.shape[0], s)}, got {key_padding_mask.dtype} {key_padding_mask.shape}")
        kp = key_padding_mask[:, None, None, :]
        mask = kp if mask is None else (mask & kp)
    out = attend(q, k, v, bias=bias, mask=mask, causal=causal, key=key, dropout_rate=dropout_rate,
                 return_weights=return_weights)
    o, w = out if return_weights else (out, None)
    y = dense(merge_heads(o), params["w_o"], params.get("b_o"))
    return (y, w) if return_weights else y


# the fused GPT fast paths live in their own file; they are part of this module's API
from .fused_attention import causal_self_attention, packed_causal_attention  # noqa: E402
