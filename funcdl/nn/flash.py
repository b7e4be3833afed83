"""Blockwise ("flash") attention: memory linear in the sequence length, with a hand-derived backward.

The plain attention (``funcdl.nn.attention``) materialises the (T, S) matrix P and keeps it for the backward:
quadratic memory. Here keys and values are visited in blocks of ``block_size`` and only the output O and
one number per query row — the log-sum-exp of its scores — are kept (Dao et al. 2022, FlashAttention).

Forward: the online softmax. For each query row keep a running maximum m, a running denominator l and an
unnormalised output o. For key block j with scores s = q K_j^T * scale (masked entries -inf):

    m' = max(m, max_j s)                  (rows that have seen nothing yet keep m' = -inf, treated as 0)
    l' = exp(m - m') l + sum_j exp(s - m')
    o' = exp(m - m') o + exp(s - m') V_j
At the end O = o / l and lse = m + log l. The rescaling by exp(m - m') is exact, so O equals softmax(S) V to
rounding. A row whose keys are all masked has l = 0: its output is 0 (as in ``dot_product_attention``) and
its lse is +inf, so that exp(s - lse) = 0 recomputes its probabilities as zeros.

Backward (FlashAttention's, from the plain rule dS = P * (dP - rowsum(P * dP))). First the row sums
D = rowsum(dO * O) (the identity rowsum(P * dP) = rowsum(dO * O) of ``funcdl.nn.attention``), then for each
key block j, recomputing the probabilities from the kept lse instead of storing them:

    P_j  = exp(q K_j^T * scale - lse)           (0 where masked)
    dV_j = P_j^T dO         dP_j = dO V_j^T      dS_j = P_j * (dP_j - D)
    dQ  += dS_j K_j * scale                     dK_j = dS_j^T Q * scale

Residuals: q, k, v, the key mask, O and lse — O(T d) memory, never O(T S). The price is computing
q K_j^T twice (forward and backward), the same trade as the paper's.

Masks: ``causal`` (query i sees key j <= i + S - T, bottom-right aligned like ``dot_product_attention``) and
``kv_mask`` (boolean (..., S), True for real keys: key padding). S need not be a multiple of the block size:
the keys are padded to one with masked zeros. No dropout here (use ``dot_product_attention`` for that).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..core.examples import Example, keys, normal
from ..core.primitive import primitive
from ._scores import broadcasts_to, score_scale
from ._space import arr, integer, num, pick
from .attention import _dot_product_attention

__all__ = ["flash_attention"]


def _check(q, k, v, kv_mask=None, *, causal=False, block_size=128, scale=None):
    name = "flash_attention"
    if q.ndim < 2 or k.ndim != q.ndim or v.ndim != q.ndim:
        raise ValueError(f"{name}: q, k, v must have the same rank >= 2 (..., T, d); got {q.shape}, {k.shape}, "
                         f"{v.shape}")
    if q.shape[:-2] != k.shape[:-2] or q.shape[:-2] != v.shape[:-2]:
        raise ValueError(f"{name}: q, k, v must share their leading (batch, head) axes; got {q.shape}, {k.shape}, "
                         f"{v.shape}")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(f"{name}: need q (..., T, d), k (..., S, d), v (..., S, dv); got {q.shape}, {k.shape}, "
                         f"{v.shape}")
    if not isinstance(block_size, int) or block_size <= 0:
        raise ValueError(f"{name}: block_size must be a positive int, got {block_size!r}")
    if kv_mask is not None:
        full = (*q.shape[:-2], k.shape[-2])
        if kv_mask.dtype != jnp.bool_ or not broadcasts_to(kv_mask.shape, full):
            raise ValueError(f"{name}: kv_mask must be boolean and broadcast to (batch..., S) = {full}; got "
                             f"{kv_mask.dtype} {kv_mask.shape}")


def _flash_attention(q, k, v, kv_mask=None, *, causal=False, block_size=128, scale=None):
    """O = softmax(s q k^T, masked) v: the plain attention it must equal, q (..., T, d), k (..., S, d), v (..., S, dv).

    With P the probabilities and D = rowsum(dO * O) (= rowsum(P * dP)), per key block j:
        P_j = exp(s q K_j^T - lse)   dv_j = P_j^T dO   dP_j = dO V_j^T   dS_j = P_j * (dP_j - D)
        dq = sum_j s dS_j K_j        dk_j = s dS_j^T q
    The key mask gets no gradient. Residuals: q, k, v, the mask, O and the row log-sum-exp lse (O(T d)).
    """
    mask = None if kv_mask is None else kv_mask[..., None, :]
    return _dot_product_attention(q, k, v, None, mask, None, causal=causal, scale=scale)


def _blocks(q, k, v, kv_mask, block_size):
    """Keys, values and key-validity padded to a multiple of the block and split: (nb, ..., B, d)."""
    s = k.shape[-2]
    nb = -(-s // block_size)
    pad = nb * block_size - s
    batch = q.shape[:-2]
    valid = jnp.ones((*batch, s), bool) if kv_mask is None else jnp.broadcast_to(kv_mask, (*batch, s))
    widths = [(0, 0)] * (k.ndim - 2) + [(0, pad), (0, 0)]
    kp, vp = jnp.pad(k, widths), jnp.pad(v, widths)
    validp = jnp.pad(valid, [(0, 0)] * len(batch) + [(0, pad)])

    def split(x, feat=True):
        shape = (*batch, nb, block_size) + ((x.shape[-1],) if feat else ())
        return jnp.moveaxis(x.reshape(shape), len(batch), 0)

    starts = jnp.arange(nb) * block_size
    return split(kp), split(vp), split(validp, False), starts


def _allowed(valid_j, start, t, s, causal):
    """(..., T, B) boolean: real key and (if causal) not in the future of the query."""
    allowed = valid_j[..., None, :]
    if causal:
        kj = start + jnp.arange(valid_j.shape[-1])
        allowed = allowed & (kj[None, :] <= jnp.arange(t)[:, None] + (s - t))
    return allowed


def _flash_attention_fwd(q, k, v, kv_mask=None, *, causal=False, block_size=128, scale=None):
    # the blockwise online softmax (linear memory), not the reference's (T, S) matrix; it also yields lse
    t, s = q.shape[-2], k.shape[-2]
    kb, vb, validb, starts = _blocks(q, k, v, kv_mask, block_size)
    sc = jnp.asarray(score_scale(q, scale), q.dtype)
    acc_dtype = jnp.promote_types(q.dtype, jnp.float32)

    def body(carry, blk):
        o, m, l = carry
        k_j, v_j, valid_j, start = blk
        sj = jnp.matmul(q, jnp.swapaxes(k_j, -1, -2)) * sc
        sj = jnp.where(_allowed(valid_j, start, t, s, causal), sj, -jnp.inf).astype(acc_dtype)
        m_new = jnp.maximum(m, jnp.max(sj, axis=-1, keepdims=True))
        m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0)
        alpha = jnp.exp(m - m_safe)                    # 0 when m = -inf (nothing seen yet)
        p = jnp.exp(sj - m_safe)
        l = alpha * l + jnp.sum(p, axis=-1, keepdims=True)
        o = alpha * o + jnp.matmul(p.astype(v.dtype), v_j).astype(acc_dtype)
        return (o, m_new, l), None

    init = (jnp.zeros((*q.shape[:-1], v.shape[-1]), acc_dtype),
            jnp.full((*q.shape[:-1], 1), -jnp.inf, acc_dtype), jnp.zeros((*q.shape[:-1], 1), acc_dtype))
    (o, m, l), _ = jax.lax.scan(body, init, (kb, vb, validb, starts))
    empty = l == 0
    out = (o / jnp.where(empty, 1, l)).astype(q.dtype)
    lse = jnp.where(empty, jnp.inf, jnp.where(jnp.isfinite(m), m, 0) + jnp.log(jnp.where(empty, 1, l)))
    return out, (q, k, v, kv_mask, out, lse)


def _flash_attention_bwd(res, do, *, causal=False, block_size=128, scale=None):
    q, k, v, kv_mask, o, lse = res
    t, s = q.shape[-2], k.shape[-2]
    kb, vb, validb, starts = _blocks(q, k, v, kv_mask, block_size)
    sc = jnp.asarray(score_scale(q, scale), q.dtype)
    d = jnp.sum(do * o, axis=-1, keepdims=True)                 # rowsum(dO * O) = rowsum(P * dP)

    def body(dq, blk):
        k_j, v_j, valid_j, start = blk
        sj = jnp.matmul(q, jnp.swapaxes(k_j, -1, -2)) * sc
        p = jnp.where(_allowed(valid_j, start, t, s, causal), jnp.exp(sj - lse), 0).astype(q.dtype)
        dv_j = jnp.matmul(jnp.swapaxes(p, -1, -2), do)
        dp = jnp.matmul(do, jnp.swapaxes(v_j, -1, -2))
        ds = p * (dp - d)
        dq = dq + jnp.matmul(ds, k_j) * sc
        dk_j = jnp.matmul(jnp.swapaxes(ds, -1, -2), q) * sc
        return dq, (dk_j, dv_j)

    dq, (dkb, dvb) = jax.lax.scan(body, jnp.zeros_like(q), (kb, vb, validb, starts))

    def unblock(x):                                             # (nb, ..., B, e) -> (..., S, e)
        x = jnp.moveaxis(x, 0, q.ndim - 2)
        return x.reshape(*x.shape[:-3], x.shape[-3] * x.shape[-2], x.shape[-1])[..., :s, :]

    return dq, unblock(dkb), unblock(dvb), None


def _flash_attention_examples(key, dtype):
    k = keys(key, 9)
    pad = jnp.array([[True] * 7, [True] * 5 + [False] * 2])               # (B=2, S=7)
    first_empty = jnp.array([[False, False] + [True] * 4, [True] * 6])    # row 0: query 0 sees nothing (causal)
    return [
        Example((normal(k[0], (2, 5, 4), dtype), normal(k[1], (2, 7, 4), dtype), normal(k[2], (2, 7, 3), dtype),
                 pad), {"causal": True, "block_size": 3}, "causal+padding T=5 S=7 block 3"),
        Example((normal(k[3], (2, 2, 6, 4), dtype), normal(k[4], (2, 2, 6, 4), dtype),
                 normal(k[5], (2, 2, 6, 4), dtype), first_empty[:, None, :]),
                {"causal": True, "block_size": 4}, "heads, causal, empty row, block 4"),
        Example((normal(k[6], (3, 4), dtype), normal(k[7], (9, 4), dtype), normal(k[8], (9, 2), dtype)),
                {"block_size": 4, "scale": 0.4}, "no mask S=9 block 4"),
    ]


def _flash_attention_space(rng, dtype):
    """Leading axes () to (2, 2), T and S 1-6, d and dv 1-3, causal or not, block 1-5 (so several blocks and
    ragged last ones), default or drawn scale, no mask or a random key mask (rows that see nothing included)."""
    lead = tuple(integer(rng, 1, 2) for _ in range(integer(rng, 0, 2)))
    t, s, d, dv = integer(rng, 1, 6), integer(rng, 1, 6), integer(rng, 1, 3), integer(rng, 1, 3)
    mask = jnp.asarray(rng.random((*lead, s)) < 0.7) if rng.random() < 0.5 else None
    settings = {"causal": bool(rng.random() < 0.5), "block_size": integer(rng, 1, 5),
                "scale": pick(rng, [None, num(rng, 0.2, 1.5)])}
    return Example((arr(rng, (*lead, t, d), dtype), arr(rng, (*lead, s, d), dtype), arr(rng, (*lead, s, dv), dtype),
                    mask), settings)


flash_attention = primitive("flash_attention", _flash_attention, _flash_attention_fwd, _flash_attention_bwd,
                            examples=_flash_attention_examples, space=_flash_attention_space, check=_check)
