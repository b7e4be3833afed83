"""Positional information for attention: sinusoidal and learned tables, rotary embeddings (RoPE), ALiBi biases.

Attention is permutation-equivariant: without positions, "dog bites man" and "man bites dog" look alike.

* **Sinusoidal** (Vaswani et al. 2017): PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(same). A fixed
  table added to the token embeddings; PE[p + k] is a linear function (a rotation) of PE[p].
* **Learned**: a (n_positions, d) parameter table (GPT-2); ``learned_positions`` slices its first T rows and
  raises a clear error when T exceeds the table.
* **RoPE** (Su et al. 2021): rotate each pair of features of q and k by an angle proportional to the position,
  theta_{p,i} = p * base^(-2i/d). Then <R_p q, R_r k> = <q, R_{r-p} k> depends on the offset r - p only.
  We pair feature i with feature i + d/2 (the GPT-NeoX / LLaMA "rotate half" layout):
      y1 = x1 cos - x2 sin,     y2 = x1 sin + x2 cos
  The Jacobian is the rotation R itself, an orthogonal matrix, so the VJP is its transpose — the inverse
  rotation, by -theta:  dx1 = dy1 cos + dy2 sin,  dx2 = -dy1 sin + dy2 cos.
  Residual: the integer positions only (cos and sin are recomputed).
* **ALiBi** (Press et al. 2022): no embedding at all; each head h adds -m_h (i - j) to the score of query i and
  key j, with geometric slopes m_h = 2^(-8 h / H). A constant bias for ``dot_product_attention(bias=...)``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ..core.examples import Example, keys, normal
from ..core.primitive import primitive
from ._space import arr, integer, pick

__all__ = ["sinusoidal_table", "learned_positions", "positions_init", "rope", "rope_angles", "alibi_slopes",
           "alibi_bias"]


def sinusoidal_table(n_positions: int, d: int, base: float = 10000.0, dtype=jnp.float32) -> jax.Array:
    """(n_positions, d): sin on even features, cos on odd ones (d may be odd: the last sin has no cos)."""
    pos = np.arange(n_positions)[:, None]
    inv = base ** (-np.arange(0, d, 2) / d)
    table = np.zeros((n_positions, d))
    table[:, 0::2] = np.sin(pos * inv)
    table[:, 1::2] = np.cos(pos * inv)[:, : d // 2]
    return jnp.asarray(table, dtype)


def positions_init(key, n_positions: int, d: int, std: float = 0.02) -> jax.Array:
    """A learned positional table N(0, std) (GPT-2's initialisation)."""
    return std * jax.random.normal(key, (n_positions, d))


def learned_positions(table, t: int, start: int = 0) -> jax.Array:
    """Rows ``start .. start + t`` of a positional table; a clear error when they do not exist."""
    n = table.shape[0]
    if isinstance(start, int) and start + t > n:
        raise ValueError(f"positional table: a sequence of {start + t} positions is longer than the table "
                         f"({n} positions); crop the sequence or build the model with a longer context")
    return jax.lax.dynamic_slice_in_dim(table, start, t, axis=0)


# ------------------------------------------------------------------------------------------------ RoPE
def rope_angles(positions, d: int, base: float = 10000.0, dtype=jnp.float32):
    """cos and sin of theta_{p,i} = p * base^(-2i/d), shape (*positions.shape, d/2)."""
    inv = jnp.asarray(base ** (-np.arange(0, d // 2) * 2.0 / d), dtype)
    theta = positions.astype(dtype)[..., None] * inv
    return jnp.cos(theta), jnp.sin(theta)


def _rope_check(x, positions, *, base=10000.0, inverse=False):
    if x.ndim < 1 or x.shape[-1] % 2:
        raise ValueError(f"rope: the feature axis (last) must have an even size, got shape {x.shape}")
    if not jnp.issubdtype(positions.dtype, jnp.integer):
        raise TypeError(f"rope: positions must be integers, got {positions.dtype}")
    try:
        ok = jnp.broadcast_shapes(positions.shape, x.shape[:-1]) == x.shape[:-1]
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"rope: positions of shape {positions.shape} must broadcast to x's shape without its "
                         f"feature axis {x.shape[:-1]} (e.g. (T,) for x (B, H, T, d))")


def _rotate(x, cos, sin, sign):
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    return jnp.concatenate([x1 * cos - sign * x2 * sin, sign * x1 * sin + x2 * cos], axis=-1)


def _rope(x, positions, *, base=10000.0, inverse=False):
    """Rotate feature pairs (i, i + d/2) of x (..., d) by theta_{p,i} = p base^(-2i/d) (by -theta with ``inverse``):

        y1 = x1 cos - x2 sin,     y2 = x1 sin + x2 cos
    The Jacobian is the rotation itself, orthogonal, so the VJP is its transpose, the rotation by -theta:
        dx1 = dy1 cos + dy2 sin,  dx2 = -dy1 sin + dy2 cos   (dx = R^T dy). Positions get no gradient.
    Residual: the integer positions (cos and sin are recomputed).
    """
    cos, sin = rope_angles(positions, x.shape[-1], base, x.dtype)
    return _rotate(x, cos, sin, -1.0 if inverse else 1.0)


def _rope_fwd(x, positions, *, base=10000.0, inverse=False):
    return _rope(x, positions, base=base, inverse=inverse), (positions,)


def _rope_bwd(res, dy, *, base=10000.0, inverse=False):
    (positions,) = res
    cos, sin = rope_angles(positions, dy.shape[-1], base, dy.dtype)
    return _rotate(dy, cos, sin, 1.0 if inverse else -1.0), None       # the transpose = the inverse rotation


def _rope_examples(key, dtype):
    k = keys(key, 2)
    return [
        Example((normal(k[0], (2, 3, 5, 4), dtype), jnp.arange(5)), {}, "(B,H,T,d) positions (T,)"),
        Example((normal(k[1], (2, 4, 6), dtype), jnp.array([[0, 3, 7, 9], [2, 2, 5, 11]])), {"base": 100.0},
                "per-example positions, base 100"),
    ]


def _rope_space(rng, dtype):
    """x of rank 1-4 with an even feature axis 2-8, positions (non-negative, any order, repeats) of x's shape
    without the features or a shape that broadcasts to it, base 2 to 1e4, inverse or not."""
    shape = (*(integer(rng, 1, 4) for _ in range(integer(rng, 0, 3))), 2 * integer(rng, 1, 4))
    lead = shape[:-1]
    pos_shape = pick(rng, [lead, lead[integer(rng, 0, len(lead)):], tuple(1 if rng.random() < 0.5 else n
                                                                           for n in lead)])
    positions = jnp.asarray(rng.integers(0, 20, pos_shape), jnp.int32)
    settings = {"base": pick(rng, [10000.0, 100.0, round(float(rng.uniform(2.0, 1e4)), 1)]),
                "inverse": pick(rng, [False, True])}
    return Example((arr(rng, shape, dtype), positions), settings)


rope = primitive("rope", _rope, _rope_fwd, _rope_bwd, examples=_rope_examples, space=_rope_space, check=_rope_check)


# ------------------------------------------------------------------------------------------------ ALiBi
def alibi_slopes(n_heads: int) -> np.ndarray:
    """Press et al.'s slopes: 2^(-8 h / H) for h = 1..H when H is a power of two; otherwise the slopes of the
    next lower power of two followed by every other slope of the next higher one."""
    def pow2(n):
        start = 2 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if n_heads <= 0:
        raise ValueError(f"alibi: n_heads must be positive, got {n_heads}")
    if math.log2(n_heads).is_integer():
        return np.asarray(pow2(n_heads))
    low = 2 ** math.floor(math.log2(n_heads))
    return np.asarray(pow2(low) + pow2(2 * low)[0::2][: n_heads - low])


def alibi_bias(n_heads: int, t: int, s: int | None = None, *, causal: bool = True, dtype=jnp.float32) -> jax.Array:
    """(H, T, S) additive bias -m_h * (i + S - T - j) (queries aligned to the end, as the causal mask).

    With ``causal`` future keys (j > i + S - T) get -inf; without, the distance is |i + S - T - j|.
    """
    s = t if s is None else s
    dist = (np.arange(t)[:, None] + (s - t)) - np.arange(s)[None, :]
    bias = -alibi_slopes(n_heads)[:, None, None] * (np.maximum(dist, 0) if causal else np.abs(dist))
    if causal:
        bias = np.where(dist[None] < 0, -np.inf, bias)
    return jnp.asarray(bias, dtype)
