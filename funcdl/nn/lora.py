"""LoRA: low-rank adapters on frozen dense weights (Hu et al. 2021), with their own hand-derived backward.

A pretrained weight W (n_in, n_out) stays frozen; the update is learned as a product of two thin matrices,
A (n_in, r) and B (r, n_out), scaled by s = alpha / r:

    W_eff = W + s A B          y = x W_eff + b = x W + b + s (x A) B

Only r (n_in + n_out) numbers train instead of n_in n_out. B starts at zero, so the adapted model starts as
the pretrained one; ``merge`` folds s A B into W for inference (no extra cost at all).

Two primitives, the same mathematics on different sides of the product:

``lora_dense(x, w, b, a, bb)`` — the adapter on the activations (the paper's form), cheap when few rows pass:
    h = x A (N, r)     y = x W + b + s h B
    dB = s h^T dy      dh = s dy B^T      dA = x^T dh      dx = dy W^T + dh A^T
    dW = x^T dy        db = sum dy        (computed for completeness; a frozen W simply ignores them)
Residuals: x, W, A, B and h (N x r, small).

``lora_weight(w, a, bb)`` — the adapted weight itself, for any layer that takes a weight (the fused attention
and MLP primitives, convolutions' kernels reshaped, ...):
    W_eff = W + s A B      dW = G      dA = s G B^T      dB = s A^T G      (G the cotangent of W_eff)
Residuals: A and B.

Freezing is the optimizer's job: ``optim.freeze(opt, r"^base/")`` keeps W (and everything else under ``base``)
exactly where it was; see ``split_for_lora``.
"""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp

from ..core.examples import Example, keys, normal
from ..core.primitive import primitive
from ._space import arr, integer, num, pick

__all__ = ["lora_dense", "lora_weight", "lora_init", "merge", "add_adapters", "apply_adapters", "count_trainable"]


def _check_shapes(name, w, a, bb):
    if w.ndim != 2 or a.ndim != 2 or bb.ndim != 2:
        raise ValueError(f"{name}: w, a, b must be 2-D, got {w.shape}, {a.shape}, {bb.shape}")
    if a.shape[0] != w.shape[0] or bb.shape[1] != w.shape[1] or a.shape[1] != bb.shape[0]:
        raise ValueError(f"{name}: adapter shapes a {a.shape}, b {bb.shape} do not fit the weight {w.shape}: need "
                         f"a (n_in, r) = ({w.shape[0]}, r) and b (r, n_out) = (r, {w.shape[1]})")


# ------------------------------------------------------------------------------------------- lora_weight
def _lora_weight_check(w, a, bb, *, scale=1.0):
    _check_shapes("lora_weight", w, a, bb)


def _lora_weight(w, a, bb, *, scale=1.0):
    """W_eff = W + s A B with s = scale, W (n_in, n_out), A (n_in, r), B (r, n_out) (``bb``).

    Linear in each factor, so with G the cotangent of W_eff:  dw = G,  da = s G B^T,  dbb = s A^T G.
    Residuals: A and B.
    """
    return w + scale * jnp.matmul(a, bb)


def _lora_weight_fwd(w, a, bb, *, scale=1.0):
    return _lora_weight(w, a, bb, scale=scale), (a, bb)


def _lora_weight_bwd(res, g, *, scale=1.0):
    a, bb = res
    return g, scale * jnp.matmul(g, bb.T), scale * jnp.matmul(a.T, g)


def _lora_weight_examples(key, dtype):
    k = keys(key, 3)
    return [Example((normal(k[0], (5, 4), dtype), normal(k[1], (5, 2), dtype), normal(k[2], (2, 4), dtype)),
                    {"scale": 2.0}, "r=2 scale 2")]


def _lora_draw(rng, dtype):
    """W (n_in, n_out), A (n_in, r), B (r, n_out) with sides 1-6 and rank 1-4; scale in [-4, 4]."""
    n_in, n_out, r = integer(rng, 1, 6), integer(rng, 1, 6), integer(rng, 1, 4)
    mats = (arr(rng, (n_in, n_out), dtype), arr(rng, (n_in, r), dtype), arr(rng, (r, n_out), dtype))
    return mats, {"scale": pick(rng, [1.0, num(rng, -4.0, 4.0)])}


def _lora_weight_space(rng, dtype):
    return Example(*_lora_draw(rng, dtype))


lora_weight = primitive("lora_weight", _lora_weight, _lora_weight_fwd, _lora_weight_bwd,
                        examples=_lora_weight_examples, space=_lora_weight_space, check=_lora_weight_check)


# -------------------------------------------------------------------------------------------- lora_dense
def _lora_dense_check(x, w, b=None, a=None, bb=None, *, scale=1.0):
    if a is None or bb is None:
        raise ValueError("lora_dense: the adapter matrices a and b are required (inputs: x, w, b, a, bb)")
    _check_shapes("lora_dense", w, a, bb)
    if x.shape[-1] != w.shape[0]:
        raise ValueError(f"lora_dense: input {x.shape} does not match weight {w.shape} (last axis must be n_in)")
    if b is not None and b.shape != (w.shape[1],):
        raise ValueError(f"lora_dense: bias shape {b.shape} must be ({w.shape[1]},)")


def _lora_dense(x, w, b=None, a=None, bb=None, *, scale=1.0):
    """y = x W + b + s (x A) B, x (..., n_in), W (n_in, n_out), b (n_out,) or None, A (n_in, r), B (r, n_out).

    With h = x A (N, r) and the leading dimensions flattened into N rows:
        dbb = s h^T dy    dh = s dy B^T    da = x^T dh    dx = dy W^T + dh A^T
        dw = x^T dy       db = sum dy      (computed for completeness; a frozen W simply ignores them)
    Residuals: x, W, A, B, b and h (N x r, small).
    """
    y = jnp.matmul(x, w) + scale * jnp.matmul(jnp.matmul(x, a), bb)
    return y if b is None else y + b


def _lora_dense_fwd(x, w, b=None, a=None, bb=None, *, scale=1.0):
    # keeps h = x A, so the products are written out rather than calling the reference
    h = jnp.matmul(x, a)
    y = jnp.matmul(x, w) + scale * jnp.matmul(h, bb)
    return (y if b is None else y + b), (x, w, b, a, bb, h)


def _lora_dense_bwd(res, dy, *, scale=1.0):
    x, w, b, a, bb, h = res
    n_in, n_out = w.shape
    x2, dy2, h2 = x.reshape(-1, n_in), dy.reshape(-1, n_out), h.reshape(-1, a.shape[1])
    dbb = scale * jnp.matmul(h2.T, dy2)
    dh = scale * jnp.matmul(dy, bb.T)
    da = jnp.matmul(x2.T, dh.reshape(-1, a.shape[1]))
    dx = jnp.matmul(dy, w.T) + jnp.matmul(dh, a.T)
    dw = jnp.matmul(x2.T, dy2)
    db = None if b is None else jnp.sum(dy2, axis=0)
    return dx, dw, db, da, dbb


def _lora_dense_examples(key, dtype):
    k = keys(key, 5)
    return [Example((normal(k[0], (2, 3, 5), dtype), normal(k[1], (5, 4), dtype), normal(k[2], (4,), dtype),
                     normal(k[3], (5, 2), dtype), normal(k[4], (2, 4), dtype)), {"scale": 0.5}, "r=2 with bias")]


def _lora_dense_space(rng, dtype):
    """x of rank 1-3 into W, bias or none, the adapter and scale of lora_weight's space."""
    (w, a, bb), settings = _lora_draw(rng, dtype)
    x = arr(rng, (*(integer(rng, 1, 3) for _ in range(integer(rng, 0, 2))), w.shape[0]), dtype)
    b = arr(rng, (w.shape[1],), dtype) if rng.random() < 0.6 else None
    return Example((x, w, b, a, bb), settings)


lora_dense = primitive("lora_dense", _lora_dense, _lora_dense_fwd, _lora_dense_bwd, examples=_lora_dense_examples,
                       space=_lora_dense_space, check=_lora_dense_check)


# ------------------------------------------------------------------------------------------- parameters
def lora_init(key, n_in: int, n_out: int, rank: int) -> dict:
    """``{"a": (n_in, r) ~ N(0, 1/n_in)... , "b": zeros (r, n_out)}``: the adapted layer starts unchanged."""
    if rank <= 0:
        raise ValueError(f"lora: rank must be positive, got {rank}")
    return {"a": jax.random.normal(key, (n_in, rank)) / math.sqrt(n_in), "b": jnp.zeros((rank, n_out))}


def merge(w, adapter: dict, alpha: float) -> jax.Array:
    """W + (alpha / r) A B: the adapter folded into the weight for inference."""
    rank = adapter["a"].shape[1]
    return w + (alpha / rank) * adapter["a"] @ adapter["b"]


def _path(kp) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in kp)


def add_adapters(key, params, pattern: str, rank: int) -> dict:
    """Adapters for every 2-D leaf whose path ("blocks/0/attn/qkv/w") matches ``pattern``: a flat dict
    path -> {"a", "b"}."""
    regex = re.compile(pattern)
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    chosen = [(_path(kp), leaf) for kp, leaf in flat if leaf.ndim == 2 and regex.search(_path(kp))]
    if not chosen:
        raise ValueError(f"lora: no 2-D weight path matches {pattern!r}; paths look like "
                         f"{[_path(kp) for kp, _ in flat][:4]}")
    ks = jax.random.split(key, len(chosen))
    return {p: lora_init(k, *leaf.shape, rank) for k, (p, leaf) in zip(ks, chosen, strict=True)}


def apply_adapters(params, adapters: dict, alpha: float, *, merged: bool = False):
    """params with each adapted weight replaced by W + (alpha / r) A B (``lora_weight``, or plain arithmetic
    with ``merged=True`` for inference)."""
    def swap(kp, leaf):
        ad = adapters.get(_path(kp))
        if ad is None:
            return leaf
        if merged:
            return merge(leaf, ad, alpha)
        return lora_weight(leaf, ad["a"], ad["b"], scale=alpha / ad["a"].shape[1])

    return jax.tree_util.tree_map_with_path(swap, params)


def count_trainable(tree) -> int:
    return int(sum(x.size for x in jax.tree.leaves(tree)))
