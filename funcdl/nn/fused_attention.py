"""Fused causal attention for GPT: ``packed_causal_attention`` (the attention core on a fused qkv projection)
and ``causal_self_attention`` (the whole sublayer: projection, attention, output projection), one primitive each.

The heads stay in the (B, T, H, dh) layout the fused projection produced (einsum contracts over it), so no head
transposes are materialised, and the backward hands back d qkv in the packed layout directly.
``compute_dtype="bfloat16"`` runs every matrix product on bfloat16 operands with float32 accumulation (mixed
precision: softmax, statistics and the outputs stay float32); None computes in the inputs' dtype. The rule is
``dot_product_attention``'s (``funcdl.nn.attention``), with dropout on the weights drawn from ``key``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..core.examples import Example, keys, normal
from ..core.primitive import primitive
from ._dropout import check_rate, drop
from ._matmul import check_compute_dtype, contract, mat, sum_rows, t_mat
from ._scores import causal_mask, score_scale
from ._space import arr, integer, key, num, pick

__all__ = ["packed_causal_attention", "causal_self_attention"]


def _packed_causal_attention_check(qkv, key=None, *, n_heads, dropout_rate=0.0, scale=None, compute_dtype=None):
    name = "packed_causal_attention"
    if qkv.ndim != 3 or qkv.shape[-1] % 3:
        raise ValueError(f"{name}: qkv must be (batch, time, 3 * width) from a fused projection, got {qkv.shape}")
    _check_fused_settings(name, qkv.shape[-1] // 3, n_heads, dropout_rate, key, compute_dtype)


def _check_fused_settings(name, width, n_heads, dropout_rate, key, compute_dtype):
    """The settings both fused attention primitives share: heads dividing the width, dropout, compute dtype."""
    if n_heads <= 0 or width % n_heads:
        raise ValueError(f"{name}: the number of heads ({n_heads}) must divide the width ({width}); "
                         f"choose n_heads among the divisors of {width}")
    check_rate(name, dropout_rate, key, what="dropout_rate")
    check_compute_dtype(name, compute_dtype)


def _unpack(qkv, n_heads):
    b, t, three_w = qkv.shape
    w = three_w // 3
    x = qkv.reshape(b, t, 3, n_heads, w // n_heads)
    return x[:, :, 0], x[:, :, 1], x[:, :, 2]                     # each (B, T, H, dh)


def _packed_core(qkv, key, n_heads, dropout_rate, scale, cdt):
    """(O (B, T, H, dh), P (B, H, T, T)) of causal attention on packed q, k, v."""
    q, k, v = _unpack(qkv, n_heads)
    t = q.shape[1]
    s = contract("bthd,bshd->bhts", q, k, cdt) * jnp.asarray(score_scale(q, scale), qkv.dtype)
    s = jnp.where(causal_mask(t), s, -jnp.inf)
    m = jax.lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True))   # finite: the diagonal is always allowed
    e = jnp.exp(s - m)
    p = e / jnp.sum(e, axis=-1, keepdims=True)
    o = contract("bhts,bshd->bthd", drop(p, key, dropout_rate), v, cdt).astype(qkv.dtype)
    return o, p


def _packed_core_bwd(qkv, o, p, key, do, n_heads, dropout_rate, scale, cdt):
    """d qkv (B, T, 3D) from dO (B, T, H, dh): dV = Pd^T dO, dP = dO V^T (masked), dS = P (dP - rowsum(dO O))."""
    q, k, v = _unpack(qkv, n_heads)
    dv = contract("bhts,bthd->bshd", drop(p, key, dropout_rate), do, cdt)
    dp = drop(contract("bthd,bshd->bhts", do, v, cdt), key, dropout_rate)
    d = jnp.swapaxes(jnp.sum(do * o, axis=-1), 1, 2)[..., None]      # rowsum(dO * O): (B, H, T, 1)
    ds = p * (dp - d) * jnp.asarray(score_scale(q, scale), qkv.dtype)
    dq = contract("bhts,bshd->bthd", ds, k, cdt)
    dk = contract("bhts,bthd->bshd", ds, q, cdt)
    return jnp.stack([dq, dk, dv], axis=2).reshape(qkv.shape).astype(qkv.dtype)


def _packed_causal_attention(qkv, key=None, *, n_heads, dropout_rate=0.0, scale=None, compute_dtype=None):
    """Causal multi-head attention straight from a fused projection: qkv (B, T, 3D) -> (B, T, D).

    The mathematics of ``dot_product_attention(..., causal=True)`` on the split heads q, k, v (B, T, H, dh):
        O = dropout(softmax(s Q K^T, causal)) V;   dV = Pd^T dO,  dP = dropout(dO V^T),  dS = P (dP - rowsum(dO O))
        dQ = s dS K,  dK = s dS^T Q,   dqkv = [dQ | dK | dV] packed back in qkv's layout (no head transposes).
    Residuals: qkv, O, P and the key.
    """
    o, _ = _packed_core(qkv, key, n_heads, dropout_rate, scale, compute_dtype)
    return o.reshape(o.shape[0], o.shape[1], -1)


def _packed_causal_attention_fwd(qkv, key=None, *, n_heads, dropout_rate=0.0, scale=None, compute_dtype=None):
    # keeps P, so the core is called here rather than through the reference
    o, p = _packed_core(qkv, key, n_heads, dropout_rate, scale, compute_dtype)
    return o.reshape(o.shape[0], o.shape[1], -1), (qkv, o, p, key)


def _packed_causal_attention_bwd(res, do, *, n_heads, dropout_rate=0.0, scale=None, compute_dtype=None):
    qkv, o, p, key = res
    return _packed_core_bwd(qkv, o, p, key, do.reshape(o.shape), n_heads, dropout_rate, scale, compute_dtype), None


def _packed_causal_attention_examples(key, dtype):
    k = keys(key, 2)
    return [
        Example((normal(k[0], (2, 5, 12), dtype),), {"n_heads": 2}, "B=2 T=5 H=2 dh=2"),
        Example((normal(k[1], (2, 4, 18), dtype), jax.random.PRNGKey(5)), {"n_heads": 3, "dropout_rate": 0.2},
                "H=3 dropout 0.2"),
    ]


def _fused_settings(rng, width_choices):
    """Heads 1-3 (the width a multiple of them), dropout off or in (0, 0.5) with a key, a default or drawn score
    scale; compute_dtype stays None (a reduced-precision matmul cannot meet float64 tolerances)."""
    n_heads = integer(rng, 1, 3)
    width = n_heads * pick(rng, width_choices)
    rate = pick(rng, [0.0, num(rng, 0.05, 0.5)])
    settings = {"n_heads": n_heads, "dropout_rate": rate, "scale": pick(rng, [None, num(rng, 0.2, 1.5)]),
                "compute_dtype": None}
    return width, settings, (key(rng) if rate > 0 else None)


def _packed_causal_attention_space(rng, dtype):
    """Batch 1-2, time 1-5, head size 1-3, see ``_fused_settings``."""
    width, settings, k = _fused_settings(rng, [1, 2, 3])
    return Example((arr(rng, (integer(rng, 1, 2), integer(rng, 1, 5), 3 * width), dtype), k), settings)


packed_causal_attention = primitive(
    "packed_causal_attention", _packed_causal_attention, _packed_causal_attention_fwd, _packed_causal_attention_bwd,
    examples=_packed_causal_attention_examples, space=_packed_causal_attention_space,
    check=_packed_causal_attention_check,
)


# ------------------------------------------------------------------------ the whole causal attention sublayer
def _causal_self_attention_check(x, w_qkv, b_qkv=None, w_o=None, b_o=None, key=None, *, n_heads, dropout_rate=0.0,
                                 scale=None, compute_dtype=None):
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


def _causal_self_attention(x, w_qkv, b_qkv=None, w_o=None, b_o=None, key=None, *, n_heads, dropout_rate=0.0,
                           scale=None, compute_dtype=None):
    """y = merge(causal_attention(split(x W_qkv + b_qkv))) W_o + b_o: GPT's attention sublayer, one primitive.

    x (B, T, D), W_qkv (D, 3D), W_o (D, D), biases optional. Backward, with Y the merged attention output:
        dw_o = Y^T dy,   db_o = sum dy,   dY = dy W_o^T
        dqkv from dY by the packed attention core's rule (see ``packed_causal_attention``)
        dw_qkv = x^T dqkv,   db_qkv = sum dqkv,   dx = dqkv W_qkv^T
    Residuals: x, the weights and biases, qkv, the attention output, the probabilities P and the key.
    """
    o, _ = _packed_core(_csa_qkv(x, w_qkv, b_qkv, compute_dtype), key, n_heads, dropout_rate, scale, compute_dtype)
    y = mat(o.reshape(x.shape), w_o, compute_dtype).astype(x.dtype)
    return y if b_o is None else y + b_o


def _causal_self_attention_fwd(x, w_qkv, b_qkv=None, w_o=None, b_o=None, key=None, *, n_heads, dropout_rate=0.0,
                               scale=None, compute_dtype=None):
    # keeps qkv and P, so the three steps are written out rather than calling the reference
    qkv = _csa_qkv(x, w_qkv, b_qkv, compute_dtype)
    o, p = _packed_core(qkv, key, n_heads, dropout_rate, scale, compute_dtype)
    y = mat(o.reshape(x.shape), w_o, compute_dtype).astype(x.dtype)
    y = y if b_o is None else y + b_o
    return y, (x, w_qkv, b_qkv, w_o, b_o, key, qkv, o, p)


def _causal_self_attention_bwd(res, dy, *, n_heads, dropout_rate=0.0, scale=None, compute_dtype=None):
    x, w_qkv, b_qkv, w_o, b_o, key, qkv, o, p = res
    cdt = compute_dtype
    y = o.reshape(x.shape)
    dw_o = t_mat(y, dy, cdt).astype(w_o.dtype)
    db_o = None if b_o is None else sum_rows(dy)
    do = mat(dy, w_o.T, cdt).astype(x.dtype).reshape(o.shape)
    dqkv = _packed_core_bwd(qkv, o, p, key, do, n_heads, dropout_rate, scale, cdt)
    dw_qkv = t_mat(x, dqkv, cdt).astype(w_qkv.dtype)
    db_qkv = None if b_qkv is None else sum_rows(dqkv)
    dx = mat(dqkv, w_qkv.T, cdt).astype(x.dtype)
    return dx, dw_qkv, db_qkv, dw_o, db_o, None


def _causal_self_attention_examples(key, dtype):
    k = keys(key, 8)
    d = 6
    return [
        Example((normal(k[0], (2, 5, d), dtype), normal(k[1], (d, 3 * d), dtype, 0.5), normal(k[2], (3 * d,), dtype),
                 normal(k[3], (d, d), dtype, 0.5), normal(k[4], (d,), dtype)), {"n_heads": 2}, "biases H=2"),
        Example((normal(k[5], (2, 4, d), dtype), normal(k[6], (d, 3 * d), dtype, 0.5), None,
                 normal(k[7], (d, d), dtype, 0.5), None, jax.random.PRNGKey(2)),
                {"n_heads": 3, "dropout_rate": 0.1}, "no biases H=3 dropout"),
    ]


def _causal_self_attention_space(rng, dtype):
    """Batch 1-2, time 1-4, width = heads x (1-2), each bias present or not, see ``_fused_settings``."""
    d, settings, k = _fused_settings(rng, [1, 2])
    x = arr(rng, (integer(rng, 1, 2), integer(rng, 1, 4), d), dtype)
    b_qkv = arr(rng, (3 * d,), dtype) if rng.random() < 0.5 else None
    b_o = arr(rng, (d,), dtype) if rng.random() < 0.5 else None
    return Example((x, arr(rng, (d, 3 * d), dtype, 0.5), b_qkv, arr(rng, (d, d), dtype, 0.5), b_o, k), settings)


causal_self_attention = primitive(
    "causal_self_attention", _causal_self_attention, _causal_self_attention_fwd, _causal_self_attention_bwd,
    examples=_causal_self_attention_examples, space=_causal_self_attention_space, check=_causal_self_attention_check,
)
