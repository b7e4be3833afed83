"""The NF4 data type and a dense layer whose frozen base weight is stored in NF4 next to a LoRA adapter (QLoRA).

QLoRA (Dettmers et al. 2023) keeps the pretrained weights in 4 bits and trains LoRA adapters in float on top.

NF4, the 4-bit NormalFloat. Pretrained weights are roughly normal, so the 16 levels are placed at quantiles of
N(0, 1) rather than evenly: with the normal quantile function Q and the offset d = 0.9677083 (the mean of the
two probabilities 1 - 1/32 and 1 - 1/30 that the paper's "1/2 (Q(i / (2k + 1)) + Q((i + 1) / (2k + 1)))" rule
would use at the tails, where Q is infinite),

    8 positive levels  Q(p)  for p in linspace(d, 1/2, 9)[:-1]
    7 negative levels -Q(p)  for p in linspace(d, 1/2, 8)[:-1]
    and an exact 0;    the 16 values sorted and divided by the largest, so they span [-1, 1].

It is asymmetric (8 positive, 7 negative) so that zero is a level, which padding and exact zeros need. The
published table (``NF4_PUBLISHED``, the paper's appendix) was computed from float32 probabilities and a float32
division; ``nf4_table()`` does the same (its linspace is float32 arithmetic from both ends) and reproduces it
bit for bit. With float64 probabilities the largest difference is 1.1e-7 (at 0.7230): rounding, not a
different construction.

Block-wise absmax quantization. The flattened weight is cut into blocks of 64; each block keeps its absolute
maximum m (float32) and every value v becomes the index of the level nearest v / m. Two 4-bit indices are
packed per uint8 (the first in the high nibble). Storage: 4 + 32/64 = 4.5 bits per parameter.

Double quantization. The block maxima themselves are quantized: their mean mu is subtracted (one float32 per
tensor), then in blocks of 256 each keeps its own absmax c (float32) and the centred maxima become int8
round(127 (m - mu) / c). Storage: 4 + 8/64 + 32/(64 * 256) = 4.127 bits per parameter (plus 32 bits per tensor
for mu). (The paper stores the second level as 8-bit floats; int8 on the centred maxima is used here.)

``nf4_lora_dense`` is the QLoRA layer: y = x dequant(W) + b + s (x A) B, dequantizing W on the fly in the
forward and again in the backward (the float W is never kept), with the base getting no gradient.
``quantize_tree`` / ``apply_qlora`` do the same for a whole parameter tree (the GPT), where the weight feeds
fused primitives: the weight is dequantized (without gradient) and ``lora.lora_weight`` adds the adapter.
"""

from __future__ import annotations

import functools
import math
import re
from statistics import NormalDist

import jax
import jax.numpy as jnp
import numpy as np

from ..core.examples import Example, keys, normal, uniform
from ..core.primitive import primitive
from . import lora
from ._space import arr, integer, num, pick, unif

__all__ = ["NF4_PUBLISHED", "NF4", "nf4_table", "NF4Tensor", "quantize", "dequantize", "bits_per_parameter",
           "quantize_blocks", "dequantize_blocks", "double_quantize", "double_dequantize", "int4_roundtrip",
           "nf4_lora_dense", "qlora_dense", "quantize_tree", "dequantize_tree", "apply_qlora", "tree_bits"]

# the 16 NF4 levels as published (QLoRA paper, appendix E; the same in bitsandbytes)
NF4_PUBLISHED = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
], np.float32)

OFFSET = 0.9677083


def _linspace32(start: float, stop: float, n: int) -> np.ndarray:
    """n evenly spaced float32 values, the first half stepped from ``start`` and the rest back from ``stop``."""
    s, e = np.float32(start), np.float32(stop)
    step = (e - s) / np.float32(n - 1)
    return np.array([s + np.float32(i) * step if i < n // 2 else e - np.float32(n - 1 - i) * step
                     for i in range(n)], np.float32)


def nf4_table(offset: float = OFFSET, *, float32_probabilities: bool = True) -> np.ndarray:
    """The 16 NF4 levels (float32, sorted, in [-1, 1], with an exact 0) from normal quantiles (module docstring).

    ``float32_probabilities=False`` takes the probabilities in float64 instead (1.1e-7 from the published table).
    """
    if not 0.5 < offset < 1.0:
        raise ValueError(f"nf4_table: offset must lie in (0.5, 1), got {offset}")
    q = NormalDist().inv_cdf
    grid = _linspace32 if float32_probabilities else (lambda a, b, n: np.linspace(a, b, n))
    pos = [q(float(p)) for p in grid(offset, 0.5, 9)[:-1]]
    neg = [-q(float(p)) for p in grid(offset, 0.5, 8)[:-1]]
    v = np.sort(np.array(pos + [0.0] + neg))
    if float32_probabilities:
        v = v.astype(np.float32)
        return v / v.max()
    return (v / v.max()).astype(np.float32)


NF4 = nf4_table()


# ------------------------------------------------------------------------------------ block quantization
def _blocks(flat, block: int):
    """Pad a flat array with zeros to a whole number of blocks and reshape to (n_blocks, block)."""
    nb = -(-flat.shape[0] // block)
    return jnp.pad(flat, (0, nb * block - flat.shape[0])).reshape(nb, block)


def _check_block(name: str, block) -> None:
    if not isinstance(block, int) or isinstance(block, bool) or block <= 0 or block % 2:
        raise ValueError(f"{name}: block must be a positive even int (two 4-bit codes share a byte), got {block!r}")


def quantize_blocks(w, block: int = 64):
    """Flatten w, cut it into blocks, and return (packed uint8 codes (n_pad / 2,), float32 absmax (n_blocks,))."""
    _check_block("nf4 quantize", block)
    return _quantize_blocks(w, block)


@functools.partial(jax.jit, static_argnums=1)
def _quantize_blocks(w, block):
    x = _blocks(jnp.ravel(jnp.asarray(w, jnp.float32)), block)
    absmax = jnp.max(jnp.abs(x), axis=1)
    t = jnp.asarray(NF4)
    idx = jnp.searchsorted((t[1:] + t[:-1]) / 2, x / jnp.where(absmax > 0, absmax, 1.0)[:, None])
    idx = idx.reshape(-1, 2).astype(jnp.uint8)
    return (idx[:, 0] << 4) | idx[:, 1], absmax


@functools.partial(jax.jit, static_argnums=(2, 3))
def dequantize_blocks(codes, absmax, n: int, block: int = 64):
    """The first n values of table[code] * absmax of its block, flat, in absmax's dtype."""
    idx = jnp.stack([codes >> 4, codes & 15], axis=-1).reshape(-1, block).astype(jnp.int32)
    return (jnp.asarray(NF4, absmax.dtype)[idx] * absmax[:, None]).reshape(-1)[:n]


@functools.partial(jax.jit, static_argnums=1)
def double_quantize(absmax, block: int = 256):
    """(int8 codes (n,), float32 scales (ceil(n / block),), float32 mean): the block maxima, centred, in int8."""
    mean = jnp.mean(absmax)
    c = _blocks(absmax - mean, block)
    scale = jnp.max(jnp.abs(c), axis=1) / 127.0
    q = jnp.round(c / jnp.where(scale > 0, scale, 1.0)[:, None]).astype(jnp.int8)
    return q.reshape(-1)[: absmax.shape[0]], scale.astype(jnp.float32), mean.astype(jnp.float32)


@functools.partial(jax.jit, static_argnums=3)
def double_dequantize(q, scale, mean, block: int = 256):
    """The block maxima back from ``double_quantize``: q * scale of its block + mean."""
    c = _blocks(q.astype(jnp.float32), block) * scale[:, None]
    return c.reshape(-1)[: q.shape[0]] + mean


@jax.tree_util.register_pytree_node_class
class NF4Tensor:
    """A weight stored in NF4: packed codes, the block maxima (float32, or int8 with ``scale2`` and ``mean`` under
    double quantization) and the static shape and block sizes."""

    def __init__(self, codes, absmax, scale2, mean, shape, block=64, block2=256):
        self.codes, self.absmax, self.scale2, self.mean = codes, absmax, scale2, mean
        self.shape, self.block, self.block2 = tuple(shape), block, block2

    def tree_flatten(self):
        return (self.codes, self.absmax, self.scale2, self.mean), (self.shape, self.block, self.block2)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children, *aux)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def scales(self):
        """The first-level block maxima as floats (dequantizing them under double quantization)."""
        if self.scale2 is None:
            return self.absmax
        return double_dequantize(self.absmax, self.scale2, self.mean, self.block2)

    def nbits(self) -> int:
        """Bits actually stored: every array of this record, at its dtype's size."""
        parts = (self.codes, self.absmax, self.scale2, self.mean)
        return int(sum(8 * p.size * p.dtype.itemsize for p in parts if p is not None))

    def __repr__(self):
        return f"NF4Tensor(shape={self.shape}, block={self.block}, double={self.scale2 is not None})"


def quantize(w, *, block: int = 64, double: bool = True, block2: int = 256) -> NF4Tensor:
    """w in NF4: block-wise absmax over ``block`` (64) values, the maxima double-quantized in blocks of ``block2``."""
    w = jnp.asarray(w)
    if not jnp.issubdtype(w.dtype, jnp.floating) or w.size == 0:
        raise TypeError(f"nf4 quantize: expected a non-empty float array, got dtype {w.dtype} shape {w.shape}")
    codes, absmax = quantize_blocks(w, block)
    if not double:
        return NF4Tensor(codes, absmax, None, None, w.shape, block, block2)
    if not isinstance(block2, int) or block2 <= 0:
        raise ValueError(f"nf4 quantize: block2 must be a positive int, got {block2!r}")
    return NF4Tensor(codes, *double_quantize(absmax, block2), w.shape, block, block2)


def dequantize(t: NF4Tensor, dtype=jnp.float32):
    """The float weight back from an NF4Tensor."""
    return dequantize_blocks(t.codes, t.scales().astype(dtype), t.size, t.block).reshape(t.shape)


def bits_per_parameter(t: NF4Tensor) -> float:
    return t.nbits() / t.size


def int4_roundtrip(w, block: int = 64):
    """The int4 baseline: symmetric absmax per block, levels -7..7 (round(7 v / m) / 7 * m); returns w's estimate."""
    w = jnp.asarray(w, jnp.float32)
    x = _blocks(jnp.ravel(w), block)
    m = jnp.max(jnp.abs(x), axis=1, keepdims=True)
    m = jnp.where(m > 0, m, 1.0)
    return (jnp.round(7 * x / m) / 7 * m).reshape(-1)[: w.size].reshape(w.shape)


# ---------------------------------------------------------------------------------------- nf4_lora_dense
def _check(x, codes, absmax, b=None, a=None, bb=None, *, scale=1.0, block=64):
    _check_block("nf4_lora_dense", block)
    if a is None or bb is None:
        raise ValueError("nf4_lora_dense: the adapter matrices a and b are required (inputs: x, codes, absmax, "
                         "b, a, bb)")
    if a.ndim != 2 or bb.ndim != 2 or a.shape[1] != bb.shape[0]:
        raise ValueError(f"nf4_lora_dense: adapter a {a.shape}, b {bb.shape} must be (n_in, r) and (r, n_out)")
    n_in, n_out = a.shape[0], bb.shape[1]
    nb = -(-n_in * n_out // block)
    if getattr(codes, "dtype", None) != jnp.uint8 or codes.shape != (nb * block // 2,):
        raise ValueError(f"nf4_lora_dense: codes must be uint8 of shape ({nb * block // 2},) for a ({n_in}, "
                         f"{n_out}) weight in blocks of {block}, got {getattr(codes, 'dtype', type(codes))} "
                         f"{getattr(codes, 'shape', '')}; use nf4.quantize(w).codes")
    if absmax.shape != (nb,):
        raise ValueError(f"nf4_lora_dense: absmax must have shape ({nb},) (one per block of {block}), got "
                         f"{absmax.shape}; use NF4Tensor.scales()")
    if x.shape[-1:] != (n_in,):
        raise ValueError(f"nf4_lora_dense: input {x.shape} does not match the weight ({n_in}, {n_out})")
    if b is not None and b.shape != (n_out,):
        raise ValueError(f"nf4_lora_dense: bias shape {b.shape} must be ({n_out},)")


def _weight(codes, absmax, a, bb, block, dtype):
    n_in, n_out = a.shape[0], bb.shape[1]
    return dequantize_blocks(codes, absmax, n_in * n_out, block).reshape(n_in, n_out).astype(dtype)


def _nf4_lora_dense(x, codes, absmax, b=None, a=None, bb=None, *, scale=1.0, block=64):
    """y = x W + b + s (x A) B,  W = table[codes] * absmax of its block (n_in, n_out), dequantized on the fly.

    x (..., n_in); codes uint8 (n_blocks * block / 2,), two 4-bit level indices per byte, high nibble first;
    absmax (n_blocks,) the block maxima; b (n_out,) or None; A (n_in, r); B (r, n_out) (``bb``); s = scale.
    W is frozen: codes are integers and absmax a block statistic, neither gets a gradient (None). With
    h = x A (N, r), the leading dimensions flattened into N rows, exactly as for lora_dense:
        dbb = s h^T dy    dh = s dy B^T    da = x^T dh    dx = dy W^T + dh A^T    db = sum dy
    Residuals: x, codes, absmax, b, A, B and h; W is dequantized again in the backward, not kept in float.
    """
    y = jnp.matmul(x, _weight(codes, absmax, a, bb, block, x.dtype)) + scale * jnp.matmul(jnp.matmul(x, a), bb)
    return y if b is None else y + b


def _nf4_lora_dense_fwd(x, codes, absmax, b=None, a=None, bb=None, *, scale=1.0, block=64):
    # keeps h = x A, so the products are written out rather than calling the reference
    h = jnp.matmul(x, a)
    y = jnp.matmul(x, _weight(codes, absmax, a, bb, block, x.dtype)) + scale * jnp.matmul(h, bb)
    return (y if b is None else y + b), (x, codes, absmax, b, a, bb, h)


def _nf4_lora_dense_bwd(res, dy, *, scale=1.0, block=64):
    x, codes, absmax, b, a, bb, h = res
    n_in, n_out, r = a.shape[0], bb.shape[1], a.shape[1]
    x2, dy2, h2 = x.reshape(-1, n_in), dy.reshape(-1, n_out), h.reshape(-1, r)
    dbb = scale * jnp.matmul(h2.T, dy2)
    dh = scale * jnp.matmul(dy, bb.T)
    da = jnp.matmul(x2.T, dh.reshape(-1, r))
    dx = jnp.matmul(dy, _weight(codes, absmax, a, bb, block, dy.dtype).T) + jnp.matmul(dh, a.T)
    db = None if b is None else jnp.sum(dy2, axis=0)
    return dx, None, None, db, da, dbb


def _nf4_lora_dense_examples(key, dtype):
    k = keys(key, 6)
    codes = jnp.asarray(np.random.default_rng(0).integers(0, 256, 24), jnp.uint8)   # (8, 6) in blocks of 16
    return [Example((normal(k[0], (2, 3, 8), dtype), codes, uniform(k[1], (3,), dtype, 0.5, 2.0),
                     normal(k[2], (6,), dtype), normal(k[3], (8, 2), dtype), normal(k[4], (2, 6), dtype)),
                    {"scale": 0.5, "block": 16}, "r=2 block 16 with bias")]


def _nf4_lora_dense_space(rng, dtype):
    """W (n_in, n_out) sides 1-6 as random codes and block maxima, blocks 2-64, x of rank 1-3, bias or none."""
    n_in, n_out, r = integer(rng, 1, 6), integer(rng, 1, 6), integer(rng, 1, 4)
    block = pick(rng, [64, 2, 4, 8, 16])
    nb = -(-n_in * n_out // block)
    codes = jnp.asarray(rng.integers(0, 256, nb * block // 2), jnp.uint8)
    x = arr(rng, (*(integer(rng, 1, 3) for _ in range(integer(rng, 0, 2))), n_in), dtype)
    b = arr(rng, (n_out,), dtype) if rng.random() < 0.6 else None
    args = (x, codes, unif(rng, (nb,), dtype, 0.1, 2.0), b, arr(rng, (n_in, r), dtype), arr(rng, (r, n_out), dtype))
    return Example(args, {"scale": pick(rng, [1.0, num(rng, -4.0, 4.0)]), "block": block})


nf4_lora_dense = primitive("nf4_lora_dense", _nf4_lora_dense, _nf4_lora_dense_fwd, _nf4_lora_dense_bwd,
                           examples=_nf4_lora_dense_examples, space=_nf4_lora_dense_space, check=_check,
                           nondiff=("absmax",))


def qlora_dense(x, w: NF4Tensor, b, adapter: dict, alpha: float):
    """The QLoRA layer on an NF4Tensor and an adapter {"a", "b"} from ``lora.lora_init``: scale alpha / r."""
    if not isinstance(w, NF4Tensor) or len(w.shape) != 2:
        raise TypeError(f"qlora_dense: w must be a 2-D NF4Tensor (nf4.quantize(w)), got {w!r}")
    return nf4_lora_dense(x, w.codes, jax.lax.stop_gradient(w.scales()), b, adapter["a"], adapter["b"],
                          scale=alpha / adapter["a"].shape[1], block=w.block)


# ----------------------------------------------------------------------------------------- whole trees
def _is_nf4(leaf) -> bool:
    return isinstance(leaf, NF4Tensor)


def quantize_tree(params, pattern: str = r"/(qkv|proj|fc)/w$", *, block: int = 64, double: bool = True):
    """params with every 2-D leaf whose path matches ``pattern`` stored as an NF4Tensor (the rest unchanged)."""
    regex = re.compile(pattern)
    hits = []

    def q(kp, leaf):
        if leaf.ndim == 2 and regex.search(lora._path(kp)):
            hits.append(lora._path(kp))
            return quantize(leaf, block=block, double=double)
        return leaf

    out = jax.tree_util.tree_map_with_path(q, params)
    if not hits:
        raise ValueError(f"nf4 quantize_tree: no 2-D weight path matches {pattern!r}")
    return out


def dequantize_tree(qparams, dtype=jnp.float32):
    """The float tree back: NF4 leaves dequantized (and cut off from gradients: the base is frozen)."""
    return jax.tree.map(lambda t: jax.lax.stop_gradient(dequantize(t, dtype)) if _is_nf4(t) else t, qparams,
                        is_leaf=_is_nf4)


def apply_qlora(qparams, adapters: dict, alpha: float):
    """The QLoRA parameter tree: NF4 base weights dequantized on the fly, plus the LoRA adapters
    (``lora.apply_adapters``; ``adapters`` from ``lora.add_adapters`` on the float tree or on ``dequantize_tree``)."""
    return lora.apply_adapters(dequantize_tree(qparams), adapters, alpha)


def tree_bits(qparams) -> dict:
    """Stored bits: the NF4 weights (bits, params) and the whole tree (float leaves at their dtype's size)."""
    leaves = jax.tree.leaves(qparams, is_leaf=_is_nf4)
    q = [t for t in leaves if _is_nf4(t)]
    rest = [x for x in leaves if not _is_nf4(x)]
    qbits, qn = sum(t.nbits() for t in q), sum(t.size for t in q)
    rbits, rn = sum(8 * x.size * x.dtype.itemsize for x in rest), sum(x.size for x in rest)
    return {"nf4_bits": qbits, "nf4_params": qn, "nf4_bits_per_param": qbits / max(qn, 1),
            "total_bits": qbits + rbits, "total_params": qn + rn, "bits_per_param": (qbits + rbits) / (qn + rn)}
