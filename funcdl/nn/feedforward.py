"""Position-wise feed-forward blocks of a transformer, and its tied output head with the loss, each fused into
one primitive with one hand-derived backward.

* ``gelu_mlp`` (GPT-2, BERT, ViT): y = gelu(x W1 + b1) W2 + b2;
* ``swiglu`` (Shazeer 2020; LLaMA's MLP, no biases): y = (silu(x Wg) * (x Wu)) Wd;
* ``tied_softmax_cross_entropy`` (GPT's last step): the mean cross-entropy of softmax(h E^T), E the token
  embedding shared with the input.

Each reference function below derives its backward. Residuals keep the pre-activations and recompute the
activations with their derivatives (gelu(z) and gelu'(z) both need Phi(z), so recomputing costs one multiply
instead of a second (..., F) array). Fusing the head with the loss saves autodiff's separate passes for the
matmul transpose and the log-softmax.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..core.examples import Example, keys, normal
from ..core.primitive import is_concrete, primitive
from ._gelu import gelu, gelu_and_grad
from ._matmul import check_compute_dtype, mat, sum_rows, t_mat
from ._space import arr, integer, pick

__all__ = ["gelu_mlp", "swiglu", "tied_softmax_cross_entropy", "gelu_mlp_init", "swiglu_init"]


# ---------------------------------------------------------------------------------------------- gelu_mlp
def _gelu_mlp_check(x, w1, b1=None, w2=None, b2=None, *, approximate=False, compute_dtype=None):
    name = "gelu_mlp"
    check_compute_dtype(name, compute_dtype)
    if w2 is None:
        raise ValueError(f"{name}: the second weight w2 is required (inputs: x, w1, b1, w2, b2)")
    if w1.ndim != 2 or w2.ndim != 2:
        raise ValueError(f"{name}: weights must be 2-D, got w1 {w1.shape}, w2 {w2.shape}")
    if x.shape[-1] != w1.shape[0] or w1.shape[1] != w2.shape[0]:
        raise ValueError(f"{name}: shapes do not chain: x {x.shape} -> w1 {w1.shape} -> w2 {w2.shape} "
                         "(need x[-1] == w1[0] and w1[1] == w2[0])")
    if b1 is not None and b1.shape != (w1.shape[1],):
        raise ValueError(f"{name}: b1 shape {b1.shape} must be ({w1.shape[1]},)")
    if b2 is not None and b2.shape != (w2.shape[1],):
        raise ValueError(f"{name}: b2 shape {b2.shape} must be ({w2.shape[1]},)")


def _gelu_mlp_hidden(x, w1, b1, compute_dtype):
    z = mat(x, w1, compute_dtype).astype(x.dtype)
    return z if b1 is None else z + b1


def _gelu_mlp_out(a, x, w2, b2, compute_dtype):
    y = mat(a, w2, compute_dtype).astype(x.dtype)
    return y if b2 is None else y + b2


def _gelu_mlp(x, w1, b1=None, w2=None, b2=None, *, approximate=False, compute_dtype=None):
    """y = gelu(x W1 + b1) W2 + b2, x (..., D), W1 (D, F), W2 (F, D_out); the biases are optional.

    With z = x W1 + b1 and a = gelu(z):
        dw2 = a^T dy    db2 = sum dy    da = dy W2^T    dz = da * gelu'(z)
        dw1 = x^T dz    db1 = sum dz    dx = dz W1^T
    Residuals: x, z and the weights; a is recomputed with gelu'(z) (both need Phi(z)).
    """
    return _gelu_mlp_out(gelu(_gelu_mlp_hidden(x, w1, b1, compute_dtype), approximate), x, w2, b2, compute_dtype)


def _gelu_mlp_fwd(x, w1, b1=None, w2=None, b2=None, *, approximate=False, compute_dtype=None):
    # keeps the hidden pre-activation z, so the two layers are written out rather than calling the reference
    z = _gelu_mlp_hidden(x, w1, b1, compute_dtype)
    y = _gelu_mlp_out(gelu(z, approximate), x, w2, b2, compute_dtype)
    return y, (x, w1, b1, w2, b2, z)


def _gelu_mlp_bwd(res, dy, *, approximate=False, compute_dtype=None):
    x, w1, b1, w2, b2, z = res
    cdt = compute_dtype
    a, dadz = gelu_and_grad(z, approximate)
    dw2 = t_mat(a, dy, cdt).astype(w2.dtype)
    db2 = None if b2 is None else sum_rows(dy)
    dz = mat(dy, w2.T, cdt).astype(x.dtype) * dadz
    dw1 = t_mat(x, dz, cdt).astype(w1.dtype)
    db1 = None if b1 is None else sum_rows(dz)
    dx = mat(dz, w1.T, cdt).astype(x.dtype)
    return dx, dw1, db1, dw2, db2


def _gelu_mlp_examples(key, dtype):
    k = keys(key, 8)
    return [
        Example((normal(k[0], (2, 3, 4), dtype), normal(k[1], (4, 6), dtype, 0.7), normal(k[2], (6,), dtype),
                 normal(k[3], (6, 4), dtype, 0.7), normal(k[4], (4,), dtype)), {}, "exact, biases"),
        Example((normal(k[5], (5, 4), dtype), normal(k[6], (4, 6), dtype, 0.7), None,
                 normal(k[7], (6, 3), dtype, 0.7), None), {"approximate": True}, "tanh, no biases"),
    ]


def _gelu_mlp_space(rng, dtype):
    """x of rank 1-3, D, F, D_out 1-6, each bias or none, exact or tanh GELU. compute_dtype stays None: a
    lower-precision matmul cannot meet float64 tolerances (tests/test_precision.py checks it)."""
    d, f, d_out = integer(rng, 1, 6), integer(rng, 1, 6), integer(rng, 1, 6)
    x = arr(rng, (*(integer(rng, 1, 3) for _ in range(integer(rng, 0, 2))), d), dtype)
    b1 = arr(rng, (f,), dtype) if rng.random() < 0.6 else None
    b2 = arr(rng, (d_out,), dtype) if rng.random() < 0.6 else None
    return Example((x, arr(rng, (d, f), dtype, 0.7), b1, arr(rng, (f, d_out), dtype, 0.7), b2),
                   {"approximate": pick(rng, [False, True]), "compute_dtype": None})


gelu_mlp = primitive("gelu_mlp", _gelu_mlp, _gelu_mlp_fwd, _gelu_mlp_bwd, examples=_gelu_mlp_examples,
                     space=_gelu_mlp_space, check=_gelu_mlp_check)


def gelu_mlp_init(key, d_model: int, d_hidden: int | None = None, *, bias: bool = True, std: float = 0.02,
                  out_std: float | None = None) -> dict:
    """``{"w1": (D, F), "b1", "w2": (F, D), "b2"}`` with F = 4 D by default; weights N(0, std)."""
    d_hidden = 4 * d_model if d_hidden is None else d_hidden
    k1, k2 = jax.random.split(key)
    p = {"w1": std * jax.random.normal(k1, (d_model, d_hidden)),
         "w2": (std if out_std is None else out_std) * jax.random.normal(k2, (d_hidden, d_model))}
    if bias:
        p["b1"], p["b2"] = jnp.zeros((d_hidden,)), jnp.zeros((d_model,))
    return p


# ------------------------------------------------------------------------------------------------ swiglu
def _swiglu_check(x, w_gate, w_up, w_down):
    if not (w_gate.ndim == w_up.ndim == w_down.ndim == 2):
        raise ValueError(f"swiglu: weights must be 2-D, got {w_gate.shape}, {w_up.shape}, {w_down.shape}")
    if w_gate.shape != w_up.shape or x.shape[-1] != w_gate.shape[0] or w_down.shape[0] != w_gate.shape[1]:
        raise ValueError(
            f"swiglu: shapes do not chain: x {x.shape}, w_gate {w_gate.shape}, w_up {w_up.shape}, "
            f"w_down {w_down.shape} (need w_gate == w_up == (D, F) with D = x[-1], and w_down (F, D_out))"
        )


def _swiglu(x, w_gate, w_up, w_down):
    """y = (silu(x Wg) * (x Wu)) Wd, x (..., D), Wg and Wu (D, F), Wd (F, D_out); no biases (LLaMA's MLP).

    With g = x Wg, u = x Wu, s = sigmoid(g) and h = g s u:
        dw_down = h^T dy    dh = dy Wd^T    du = dh * g s    dg = dh * u * s (1 + g (1 - s))
        dw_gate = x^T dg    dw_up = x^T du  dx = dg Wg^T + du Wu^T
    Residuals: x, the weights, g and u; s and h are recomputed.
    """
    g = jnp.matmul(x, w_gate)
    return jnp.matmul(g * jax.nn.sigmoid(g) * jnp.matmul(x, w_up), w_down)


def _swiglu_fwd(x, w_gate, w_up, w_down):
    # keeps g and u, so the products are written out rather than calling the reference
    g = jnp.matmul(x, w_gate)
    u = jnp.matmul(x, w_up)
    return jnp.matmul(g * jax.nn.sigmoid(g) * u, w_down), (x, w_gate, w_up, w_down, g, u)


def _swiglu_bwd(res, dy):
    x, w_gate, w_up, w_down, g, u = res
    s = jax.nn.sigmoid(g)
    silu = g * s
    dw_down = t_mat(silu * u, dy)
    dh = jnp.matmul(dy, w_down.T)
    du = dh * silu
    dg = dh * u * s * (1.0 + g * (1.0 - s))
    dx = jnp.matmul(dg, w_gate.T) + jnp.matmul(du, w_up.T)
    return dx, t_mat(x, dg), t_mat(x, du), dw_down


def _swiglu_examples(key, dtype):
    k = keys(key, 4)
    return [Example((normal(k[0], (2, 3, 4), dtype), normal(k[1], (4, 6), dtype), normal(k[2], (4, 6), dtype),
                     normal(k[3], (6, 5), dtype, 0.5)), {}, "D=4 F=6 out=5")]


def _swiglu_space(rng, dtype):
    d, f, d_out = integer(rng, 1, 6), integer(rng, 1, 6), integer(rng, 1, 6)
    x = arr(rng, (*(integer(rng, 1, 3) for _ in range(integer(rng, 0, 2))), d), dtype)
    return Example((x, arr(rng, (d, f), dtype), arr(rng, (d, f), dtype), arr(rng, (f, d_out), dtype, 0.5)), {})


swiglu = primitive("swiglu", _swiglu, _swiglu_fwd, _swiglu_bwd, examples=_swiglu_examples, space=_swiglu_space,
                   check=_swiglu_check)


def swiglu_init(key, d_model: int, d_hidden: int | None = None, *, std: float = 0.02) -> dict:
    """``{"w_gate", "w_up": (D, F), "w_down": (F, D)}``; F = 8 D / 3 rounded up to a multiple of 8 by default."""
    d_hidden = d_hidden or 8 * (-(-8 * d_model // 3) // 8)
    k = jax.random.split(key, 3)
    return {"w_gate": std * jax.random.normal(k[0], (d_model, d_hidden)),
            "w_up": std * jax.random.normal(k[1], (d_model, d_hidden)),
            "w_down": std * jax.random.normal(k[2], (d_hidden, d_model))}


# ----------------------------------------------------------------------------- tied head + cross-entropy
def _tied_softmax_cross_entropy_check(h, table, targets, *, compute_dtype=None):
    name = "tied_softmax_cross_entropy"
    check_compute_dtype(name, compute_dtype)
    if table.ndim != 2 or h.shape[-1] != table.shape[1]:
        raise ValueError(f"{name}: hidden states {h.shape} and embedding table {table.shape} do not match "
                         "(need h (..., D) and table (V, D))")
    if targets.shape != h.shape[:-1]:
        raise ValueError(f"{name}: targets shape {targets.shape} must be the hidden shape without its last axis "
                         f"{h.shape[:-1]}")
    if not jnp.issubdtype(targets.dtype, jnp.integer):
        raise TypeError(f"{name}: targets must be integer token ids, got {targets.dtype}")
    if is_concrete(targets) and targets.size:
        v = table.shape[0]
        t = np.asarray(targets)                 # numpy: a closed-over constant inside jit stays concrete
        if bool(np.any((t < 0) | (t >= v))):
            raise ValueError(f"{name}: a target id is outside the vocabulary 0..{v - 1}")


def _tied_logits(h, table, cdt):
    return mat(h.reshape(-1, h.shape[-1]), table.T, cdt).astype(h.dtype)


def _logsumexp_rows(logits):
    m = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    return m + jnp.log(jnp.sum(jnp.exp(logits - m), axis=-1, keepdims=True))


def _tied_softmax_cross_entropy(h, table, targets, *, compute_dtype=None):
    """Mean cross-entropy of softmax(h E^T) against the targets: h (..., D), E (V, D), targets (...) ids.

        logits = h E^T  (N, V),   loss = mean_n [ logsumexp(logits_n) - logits_n,y_n ]
        dlogits = g (softmax(logits) - onehot(y)) / N
        dh = dlogits E      dtable = dlogits^T h     (added to the embedding's own scatter-add by jax)
    Residuals: h, E, the targets, the (N, V) logits and their row log-sum-exp (softmax = exp(logits - lse)).
    """
    logits = _tied_logits(h, table, compute_dtype)
    t = targets.reshape(-1, 1)
    return jnp.mean(_logsumexp_rows(logits) - jnp.take_along_axis(logits, t, axis=-1))


def _tied_softmax_cross_entropy_fwd(h, table, targets, *, compute_dtype=None):
    # keeps the logits and their log-sum-exp, so the loss is formed here rather than by the reference
    logits = _tied_logits(h, table, compute_dtype)
    lse = _logsumexp_rows(logits)
    t = targets.reshape(-1, 1)
    value = jnp.mean(lse - jnp.take_along_axis(logits, t, axis=-1))
    return value, (h, table, t, logits, lse)


def _tied_softmax_cross_entropy_bwd(res, g, *, compute_dtype=None):
    h, table, t, logits, lse = res
    n, v = logits.shape
    p = jnp.exp(logits - lse)
    dlogits = (p - (jnp.arange(v)[None, :] == t).astype(p.dtype)) * (g / n)
    dh = mat(dlogits, table, compute_dtype).astype(h.dtype).reshape(h.shape)
    dtable = t_mat(dlogits, h.reshape(n, -1), compute_dtype).astype(table.dtype)
    return dh, dtable, None


def _tied_softmax_cross_entropy_examples(key, dtype):
    k = keys(key, 3)
    return [Example((normal(k[0], (2, 3, 4), dtype), normal(k[1], (7, 4), dtype),
                     jax.random.randint(k[2], (2, 3), 0, 7)), {}, "N=6 V=7 D=4")]


def _tied_softmax_cross_entropy_space(rng, dtype):
    """h of rank 1-3 (D 1-6), vocabularies 1-8, targets anywhere in it; compute_dtype None (see gelu_mlp)."""
    d, vocab = integer(rng, 1, 6), integer(rng, 1, 8)
    lead = tuple(integer(rng, 1, 4) for _ in range(integer(rng, 0, 2)))
    targets = jnp.asarray(rng.integers(0, vocab, lead), jnp.int32)
    return Example((arr(rng, (*lead, d), dtype), arr(rng, (vocab, d), dtype), targets), {"compute_dtype": None})


tied_softmax_cross_entropy = primitive(
    "tied_softmax_cross_entropy", _tied_softmax_cross_entropy, _tied_softmax_cross_entropy_fwd,
    _tied_softmax_cross_entropy_bwd, examples=_tied_softmax_cross_entropy_examples,
    space=_tied_softmax_cross_entropy_space, check=_tied_softmax_cross_entropy_check,
)
