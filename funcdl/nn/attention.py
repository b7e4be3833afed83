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
from ._matmul import mat, t_mat
from .linear import dense

__all__ = [
    "dot_product_attention", "scaled_dot_product_attention", "causal_mask", "padding_mask", "multi_head_attention",
    "mha_init", "split_heads", "merge_heads", "qkv_projection", "attend", "packed_causal_attention",
    "causal_self_attention",
]


# ------------------------------------------------------------------------------------------ masks
def causal_mask(t: int, s: int | None = None) -> jax.Array:
    """Boolean (t, s) mask, True where key j may be seen by query i: j <= i + (s - t) (bottom-right aligned)."""
    s = t if s is None else s
    return jnp.arange(s)[None, :] <= jnp.arange(t)[:, None] + (s - t)


def padding_mask(lengths, s: int) -> jax.Array:
    """Key-padding mask (B, 1, 1, s) from the true lengths (B,): True for the first ``lengths[b]`` keys."""
    lengths = jnp.asarray(lengths)
    return (jnp.arange(s)[None, :] < lengths[:, None])[:, None, None, :]


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


def broadcasts_to(shape, full) -> bool:
    """Whether an array of ``shape`` broadcasts to ``full`` without growing it (masks and biases)."""
    if len(shape) > len(full):
        return False
    try:
        return jnp.broadcast_shapes(tuple(shape), tuple(full)) == tuple(full)
    except ValueError:
        return False


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


def _attn_check(q, k, v, bias=None, mask=None, key=None, *, causal=False, scale=None, dropout_rate=0.0,
                return_weights=False):
    name = "dot_product_attention"
    batch = _batch_shape(name, q, k, v)
    _check_mask_bias(name, (*batch, q.shape[-2], k.shape[-2]), bias, mask)
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"{name}: dropout_rate is the probability of dropping a weight, in [0, 1); got {dropout_rate}")
    if dropout_rate > 0 and key is None:
        raise ValueError(f"{name}: dropout_rate > 0 needs a PRNG key (key=jax.random.PRNGKey(...))")


# ------------------------------------------------------------------------------------------ primitive
def _scale(q, scale):
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale


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
    s = jnp.matmul(q, _swap(k)) * jnp.asarray(_scale(q, scale), q.dtype)
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


def _dropped(p, key, rate):
    if rate == 0.0:
        return p
    keep = jax.random.bernoulli(key, 1.0 - rate, p.shape)
    return jnp.where(keep, p / (1.0 - rate), 0).astype(p.dtype)


def _attention(q, k, v, bias=None, mask=None, key=None, *, causal=False, scale=None, dropout_rate=0.0,
               return_weights=False):
    """softmax(Q K^T / sqrt(d) + B, masked) V, with dropout on the weights; (O, P) when ``return_weights``."""
    p = _probabilities(q, k, bias, mask, causal, scale)
    o = jnp.matmul(_dropped(p, key, dropout_rate), v)
    return (o, p) if return_weights else o


def _attention_fwd(q, k, v, bias=None, mask=None, key=None, *, causal=False, scale=None, dropout_rate=0.0,
                   return_weights=False):
    p = _probabilities(q, k, bias, mask, causal, scale)
    o = jnp.matmul(_dropped(p, key, dropout_rate), v)
    res = (q, k, v, o, p, key, None if bias is None else bias.shape)
    return ((o, p) if return_weights else o), res


def _attention_bwd(res, g, *, causal=False, scale=None, dropout_rate=0.0, return_weights=False):
    q, k, v, o, p, key, bias_shape = res
    do, dp_w = g if return_weights else (g, None)
    pd = _dropped(p, key, dropout_rate)
    dv = jnp.matmul(_swap(pd), do)
    dp = _dropped(jnp.matmul(do, _swap(v)), key, dropout_rate)      # the same mask M and 1/(1-r)
    d = jnp.sum(do * o, axis=-1, keepdims=True)                     # = rowsum(P * dP)
    if dp_w is not None:
        dp = dp + dp_w
        d = d + jnp.sum(p * dp_w, axis=-1, keepdims=True)
    ds = p * (dp - d)
    sc = jnp.asarray(_scale(q, scale), q.dtype)
    dq = jnp.matmul(ds, k) * sc
    dk = jnp.matmul(_swap(ds), q) * sc
    db = None if bias_shape is None else unbroadcast(ds, bias_shape)
    return (unbroadcast(dq, q.shape), unbroadcast(dk, k.shape), unbroadcast(dv, v.shape), db, None, None)


def _attention_examples(key, dtype):
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


dot_product_attention = primitive(
    "dot_product_attention", _attention, _attention_fwd, _attention_bwd, examples=_attention_examples,
    check=_attn_check,
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


# ------------------------------------------------------------------------------ packed causal attention
# The GPT fast path. The heads stay in the (B, T, H, dh) layout the fused projection produced (einsum
# contracts over it), so no head transposes are materialised, and the backward hands back d qkv in the packed
# layout directly. ``compute_dtype="bfloat16"`` runs every matrix product on bfloat16 operands with float32
# accumulation (mixed precision: softmax, statistics and the outputs stay float32); None computes in the
# inputs' dtype.
def _mm(spec, a, b, cdt):
    if cdt is None:
        return jnp.einsum(spec, a, b)
    return jnp.einsum(spec, a.astype(cdt), b.astype(cdt), preferred_element_type=jnp.float32)


def _check_cdt(name, compute_dtype):
    if compute_dtype not in (None, "bfloat16", "float16", "float32"):
        raise ValueError(f"{name}: compute_dtype must be None, 'float32', 'bfloat16' or 'float16', "
                         f"got {compute_dtype!r}")


def _packed_check(qkv, key=None, *, n_heads, dropout_rate=0.0, scale=None, compute_dtype=None):
    name = "packed_causal_attention"
    if qkv.ndim != 3 or qkv.shape[-1] % 3:
        raise ValueError(f"{name}: qkv must be (batch, time, 3 * width) from a fused projection, got {qkv.shape}")
    _check_fused_settings(name, qkv.shape[-1] // 3, n_heads, dropout_rate, key, compute_dtype)


def _check_fused_settings(name, width, n_heads, dropout_rate, key, compute_dtype):
    """The settings both fused attention primitives share: heads dividing the width, dropout, compute dtype."""
    if n_heads <= 0 or width % n_heads:
        raise ValueError(f"{name}: the number of heads ({n_heads}) must divide the width ({width}); "
                         f"choose n_heads among the divisors of {width}")
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"{name}: dropout_rate must lie in [0, 1), got {dropout_rate}")
    if dropout_rate > 0 and key is None:
        raise ValueError(f"{name}: dropout_rate > 0 needs a PRNG key")
    _check_cdt(name, compute_dtype)


def _unpack(qkv, n_heads):
    b, t, three_w = qkv.shape
    w = three_w // 3
    x = qkv.reshape(b, t, 3, n_heads, w // n_heads)
    return x[:, :, 0], x[:, :, 1], x[:, :, 2]                     # each (B, T, H, dh)


def _packed_core(qkv, key, n_heads, dropout_rate, scale, cdt):
    """(O (B, T, H, dh), P (B, H, T, T)) of causal attention on packed q, k, v."""
    q, k, v = _unpack(qkv, n_heads)
    t = q.shape[1]
    s = _mm("bthd,bshd->bhts", q, k, cdt) * jnp.asarray(_scale(q, scale), qkv.dtype)
    s = jnp.where(causal_mask(t), s, -jnp.inf)
    m = jax.lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True))   # finite: the diagonal is always allowed
    e = jnp.exp(s - m)
    p = e / jnp.sum(e, axis=-1, keepdims=True)
    o = _mm("bhts,bshd->bthd", _dropped(p, key, dropout_rate), v, cdt).astype(qkv.dtype)
    return o, p


def _packed_core_bwd(qkv, o, p, key, do, n_heads, dropout_rate, scale, cdt):
    """d qkv (B, T, 3D) from dO (B, T, H, dh): dV = Pd^T dO, dP = dO V^T (masked), dS = P (dP - rowsum(dO O))."""
    q, k, v = _unpack(qkv, n_heads)
    dv = _mm("bhts,bthd->bshd", _dropped(p, key, dropout_rate), do, cdt)
    dp = _dropped(_mm("bthd,bshd->bhts", do, v, cdt), key, dropout_rate)
    d = jnp.swapaxes(jnp.sum(do * o, axis=-1), 1, 2)[..., None]      # rowsum(dO * O): (B, H, T, 1)
    ds = p * (dp - d) * jnp.asarray(_scale(q, scale), qkv.dtype)
    dq = _mm("bhts,bshd->bthd", ds, k, cdt)
    dk = _mm("bhts,bthd->bshd", ds, q, cdt)
    return jnp.stack([dq, dk, dv], axis=2).reshape(qkv.shape).astype(qkv.dtype)


def _packed(qkv, key=None, *, n_heads, dropout_rate=0.0, scale=None, compute_dtype=None):
    """Causal multi-head attention straight from a fused projection: qkv (B, T, 3D) -> (B, T, D).

    The same mathematics as ``dot_product_attention(..., causal=True)`` on the split heads.
    """
    o, _ = _packed_core(qkv, key, n_heads, dropout_rate, scale, compute_dtype)
    return o.reshape(o.shape[0], o.shape[1], -1)


def _packed_fwd(qkv, key=None, *, n_heads, dropout_rate=0.0, scale=None, compute_dtype=None):
    o, p = _packed_core(qkv, key, n_heads, dropout_rate, scale, compute_dtype)
    return o.reshape(o.shape[0], o.shape[1], -1), (qkv, o, p, key)


def _packed_bwd(res, do, *, n_heads, dropout_rate=0.0, scale=None, compute_dtype=None):
    qkv, o, p, key = res
    return _packed_core_bwd(qkv, o, p, key, do.reshape(o.shape), n_heads, dropout_rate, scale, compute_dtype), None


def _packed_examples(key, dtype):
    k = keys(key, 2)
    return [
        Example((normal(k[0], (2, 5, 12), dtype),), {"n_heads": 2}, "B=2 T=5 H=2 dh=2"),
        Example((normal(k[1], (2, 4, 18), dtype), jax.random.PRNGKey(5)), {"n_heads": 3, "dropout_rate": 0.2},
                "H=3 dropout 0.2"),
    ]


packed_causal_attention = primitive(
    "packed_causal_attention", _packed, _packed_fwd, _packed_bwd, examples=_packed_examples, check=_packed_check,
)


# ------------------------------------------------------------------------ the whole causal attention sublayer
def _csa_check(x, w_qkv, b_qkv=None, w_o=None, b_o=None, key=None, *, n_heads, dropout_rate=0.0, scale=None,
               compute_dtype=None):
    name = "causal_self_attention"
    if x.ndim != 3:
        raise ValueError(f"{name}: x must be (batch, time, width), got shape {x.shape}")
    d = x.shape[-1]
    if w_o is None:
        raise ValueError(f"{name}: the output projection w_o is required (inputs: x, w_qkv, b_qkv, w_o, b_o, key)")
    if w_qkv.shape != (d, 3 * d) or w_o.shape != (d, d):
        raise ValueError(f"{name}: weights must be w_qkv ({d}, {3 * d}) and w_o ({d}, {d}) for width {d}; got "
                         f"{w_qkv.shape} and {w_o.shape}")
    if b_qkv is not None and b_qkv.shape != (3 * d,):
        raise ValueError(f"{name}: b_qkv shape {b_qkv.shape} must be ({3 * d},)")
    if b_o is not None and b_o.shape != (d,):
        raise ValueError(f"{name}: b_o shape {b_o.shape} must be ({d},)")
    _check_fused_settings(name, d, n_heads, dropout_rate, key, compute_dtype)


def _csa_qkv(x, w_qkv, b_qkv, cdt):
    qkv = mat(x, w_qkv, cdt).astype(x.dtype)
    return qkv if b_qkv is None else qkv + b_qkv


def _csa(x, w_qkv, b_qkv=None, w_o=None, b_o=None, key=None, *, n_heads, dropout_rate=0.0, scale=None,
         compute_dtype=None):
    """y = merge(causal_attention(split(x W_qkv + b_qkv))) W_o + b_o: GPT's attention sublayer, one primitive.

    Backward: the output projection's rule (dW_o = Y^T dy, dY = dy W_o^T), the packed attention core's rule,
    then the fused projection's (dW_qkv = X^T dqkv, dx = dqkv W_qkv^T). Residuals: x, qkv, the attention
    output Y and the probabilities P.
    """
    o, _ = _packed_core(_csa_qkv(x, w_qkv, b_qkv, compute_dtype), key, n_heads, dropout_rate, scale, compute_dtype)
    y = mat(o.reshape(x.shape), w_o, compute_dtype).astype(x.dtype)
    return y if b_o is None else y + b_o


def _csa_fwd(x, w_qkv, b_qkv=None, w_o=None, b_o=None, key=None, *, n_heads, dropout_rate=0.0, scale=None,
             compute_dtype=None):
    qkv = _csa_qkv(x, w_qkv, b_qkv, compute_dtype)
    o, p = _packed_core(qkv, key, n_heads, dropout_rate, scale, compute_dtype)
    y = mat(o.reshape(x.shape), w_o, compute_dtype).astype(x.dtype)
    y = y if b_o is None else y + b_o
    return y, (x, w_qkv, w_o, qkv, o, p, key, b_qkv is not None, b_o is not None)


def _csa_bwd(res, dy, *, n_heads, dropout_rate=0.0, scale=None, compute_dtype=None):
    x, w_qkv, w_o, qkv, o, p, key, has_bqkv, has_bo = res
    cdt = compute_dtype
    y = o.reshape(x.shape)
    dw_o = t_mat(y, dy, cdt).astype(w_o.dtype)
    db_o = jnp.sum(dy.reshape(-1, dy.shape[-1]), axis=0) if has_bo else None
    do = mat(dy, w_o.T, cdt).astype(x.dtype).reshape(o.shape)
    dqkv = _packed_core_bwd(qkv, o, p, key, do, n_heads, dropout_rate, scale, cdt)
    dw_qkv = t_mat(x, dqkv, cdt).astype(w_qkv.dtype)
    db_qkv = jnp.sum(dqkv.reshape(-1, dqkv.shape[-1]), axis=0) if has_bqkv else None
    dx = mat(dqkv, w_qkv.T, cdt).astype(x.dtype)
    return dx, dw_qkv, db_qkv, dw_o, db_o, None


def _csa_examples(key, dtype):
    k = keys(key, 8)
    d = 6
    return [
        Example((normal(k[0], (2, 5, d), dtype), normal(k[1], (d, 3 * d), dtype, 0.5), normal(k[2], (3 * d,), dtype),
                 normal(k[3], (d, d), dtype, 0.5), normal(k[4], (d,), dtype)), {"n_heads": 2}, "biases H=2"),
        Example((normal(k[5], (2, 4, d), dtype), normal(k[6], (d, 3 * d), dtype, 0.5), None,
                 normal(k[7], (d, d), dtype, 0.5), None, jax.random.PRNGKey(2)),
                {"n_heads": 3, "dropout_rate": 0.1}, "no biases H=3 dropout"),
    ]


causal_self_attention = primitive(
    "causal_self_attention", _csa, _csa_fwd, _csa_bwd, examples=_csa_examples, check=_csa_check,
)
