"""2-D relative position logits (Bello et al. 2019, "Attention Augmented Convolutional Networks"), with a
hand-derived backward.

Self-attention over an H x W feature map flattened row-major (position i = y W + x) gets, for every query
position (y, x) and key position (y', x'), the additive logit

    L[(y, x), (y', x')] = q_{y,x} . rW[x' - x] + q_{y,x} . rH[y' - y]

with rW (2W - 1, d) and rH (2H - 1, d) learned embeddings of the horizontal and vertical offsets (offset o is
row o + W - 1, resp. o + H - 1). The logits depend on the offset only, so the attention is translation
equivariant, and they cost O(HW (H + W) d) rather than the O((HW)^2 d) of an embedding per key.

How it is computed: Aw = q rW^T (..., H, W, 2W-1) holds every query against every horizontal offset; the
logits pick from it the column x' - x + W - 1. That pick is a fixed linear map, written with the 0/1 tensor
Ew[x, x', r] = 1[r = x' - x + W - 1]:

    Gw[y, x, x'] = sum_r Aw[y, x, r] Ew[x, x', r]         (likewise Gh[y, x, y'] with Eh[y, y', r])
    L[y, x, y', x'] = Gw[y, x, x'] + Gh[y, x, y']          (Gw broadcast over y', Gh over x')

Backward, given dL (..., HW, HW) seen as (..., H, W, H, W):

    dGw[y, x, x'] = sum_{y'} dL[y, x, y', x']     dGh[y, x, y'] = sum_{x'} dL[y, x, y', x']   (the broadcasts)
    dAw[y, x, r] = sum_{x'} dGw[y, x, x'] Ew[x, x', r]                                       (the pick, transposed:
                                                                                              a scatter)
    dq = dAw rW + dAh rH      drW = sum over (..., y, x) of dAw^T q      drH likewise

Residuals: q, rW and rH (Aw and Ah are not needed by the backward).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..core.examples import Example, keys, normal
from ..core.primitive import primitive, unbroadcast
from ._space import arr, integer

__all__ = ["relative_logits_2d", "relpos_init"]


def _check(q, rel_w, rel_h, *, height, width):
    name = "relative_logits_2d"
    if not (isinstance(height, int) and isinstance(width, int) and height >= 1 and width >= 1):
        raise ValueError(f"{name}: height and width must be positive integers, got {height!r}, {width!r}")
    if q.ndim < 2 or q.shape[-2] != height * width:
        raise ValueError(f"{name}: q must be (..., H*W, d) = (..., {height * width}, d) for an {height}x{width} map, "
                         f"got {q.shape}")
    d = q.shape[-1]
    if rel_w.shape != (2 * width - 1, d) or rel_h.shape != (2 * height - 1, d):
        raise ValueError(f"{name}: rel_w must be (2W-1, d) = {(2 * width - 1, d)} and rel_h (2H-1, d) = "
                         f"{(2 * height - 1, d)}, got {rel_w.shape} and {rel_h.shape}")


def _offsets(n: int) -> np.ndarray:
    """(n, n) indices r = x' - x + n - 1 of the offset embedding each (x, x') pair uses."""
    return np.arange(n)[None, :] - np.arange(n)[:, None] + n - 1


def _pick(n: int, dtype) -> jnp.ndarray:
    """E[x, x', r] = 1[r = x' - x + n - 1], shape (n, n, 2n - 1)."""
    return jnp.asarray(_offsets(n)[:, :, None] == np.arange(2 * n - 1)[None, None, :], dtype)


def _relative_logits_2d(q, rel_w, rel_h, *, height, width):
    """L[(y,x),(y',x')] = q_{y,x} . rel_w[x'-x+W-1] + q_{y,x} . rel_h[y'-y+H-1], q (..., H*W, d) row-major,
    rel_w (2W-1, d), rel_h (2H-1, d); output (..., HW, HW).

    With Aw = q rel_w^T and Ah = q rel_h^T (one row per query, one column per offset) and the logits picking
    column x'-x+W-1 (resp. y'-y+H-1) of them:
        dAw[y,x,r] = sum_{y',x' : x'-x+W-1 = r} dL[(y,x),(y',x')]     (likewise dAh with the roles of x, y swapped)
        dq = dAw rel_w + dAh rel_h      drel_w = sum_(...,y,x) dAw^T q      drel_h = sum_(...,y,x) dAh^T q
    Residuals: q, rel_w, rel_h.
    """
    lead, hw = q.shape[:-2], height * width
    qm = q.reshape(*lead, height, width, q.shape[-1])
    aw = jnp.einsum("...yxd,rd->...yxr", qm, rel_w)
    ah = jnp.einsum("...yxd,rd->...yxr", qm, rel_h)
    # plain indexing here (the fwd writes the same pick as a product with a 0/1 tensor)
    gw = jnp.take_along_axis(aw, jnp.broadcast_to(jnp.asarray(_offsets(width)), aw.shape[:-1] + (width,)), axis=-1)
    iy = jnp.broadcast_to(jnp.asarray(_offsets(height))[:, None, :], ah.shape[:-1] + (height,))
    gh = jnp.take_along_axis(ah, iy, axis=-1)
    logits = gw[..., :, :, None, :] + gh[..., :, :, :, None]
    return logits.reshape(*lead, hw, hw)


def _relative_logits_2d_fwd(q, rel_w, rel_h, *, height, width):
    # the picks as products with the 0/1 tensors Ew, Eh: the backward is then their transposes
    lead, hw = q.shape[:-2], height * width
    qm = q.reshape(*lead, height, width, q.shape[-1])
    gw = jnp.einsum("...yxr,xkr->...yxk", jnp.einsum("...yxd,rd->...yxr", qm, rel_w), _pick(width, q.dtype))
    gh = jnp.einsum("...yxr,ykr->...yxk", jnp.einsum("...yxd,rd->...yxr", qm, rel_h), _pick(height, q.dtype))
    logits = gw[..., :, :, None, :] + gh[..., :, :, :, None]
    return logits.reshape(*lead, hw, hw), (q, rel_w, rel_h)


def _relative_logits_2d_bwd(res, dl, *, height, width):
    q, rel_w, rel_h = res
    dl = dl.reshape(*dl.shape[:-2], height, width, height, width)
    lead = dl.shape[:-4]
    qm = jnp.broadcast_to(q, (*lead, *q.shape[-2:])).reshape(*lead, height, width, q.shape[-1])
    daw = jnp.einsum("...yxk,xkr->...yxr", jnp.sum(dl, axis=-2), _pick(width, dl.dtype))    # scatter by offset
    dah = jnp.einsum("...yxk,ykr->...yxr", jnp.sum(dl, axis=-1), _pick(height, dl.dtype))
    dq = jnp.einsum("...yxr,rd->...yxd", daw, rel_w) + jnp.einsum("...yxr,rd->...yxd", dah, rel_h)
    drw = jnp.einsum("...yxr,...yxd->rd", daw, qm)
    drh = jnp.einsum("...yxr,...yxd->rd", dah, qm)
    dq = unbroadcast(dq.reshape(*lead, height * width, q.shape[-1]), q.shape)
    return dq, drw.astype(rel_w.dtype), drh.astype(rel_h.dtype)


def _relative_logits_2d_examples(key, dtype):
    k = keys(key, 6)
    return [
        Example((normal(k[0], (2, 12, 3), dtype), normal(k[1], (7, 3), dtype), normal(k[2], (5, 3), dtype)),
                {"height": 3, "width": 4}, "3x4 map, batch 2"),
        Example((normal(k[3], (2, 2, 4, 2), dtype), normal(k[4], (3, 2), dtype), normal(k[5], (3, 2), dtype)),
                {"height": 2, "width": 2}, "2x2 map, batch and heads"),
    ]


def _relative_logits_2d_space(rng, dtype):
    """Maps of 1-4 x 1-4 positions, widths d 1-4, 0-2 leading (batch, head) axes of 1-3."""
    h, w, d = integer(rng, 1, 4), integer(rng, 1, 4), integer(rng, 1, 4)
    lead = tuple(integer(rng, 1, 3) for _ in range(integer(rng, 0, 2)))
    args = (arr(rng, (*lead, h * w, d), dtype), arr(rng, (2 * w - 1, d), dtype), arr(rng, (2 * h - 1, d), dtype))
    return Example(args, {"height": h, "width": w})


relative_logits_2d = primitive("relative_logits_2d", _relative_logits_2d, _relative_logits_2d_fwd,
                               _relative_logits_2d_bwd, examples=_relative_logits_2d_examples,
                               space=_relative_logits_2d_space, check=_check)


def relpos_init(key, height: int, width: int, d: int, std: float | None = None) -> dict:
    """``{"w": (2W-1, d), "h": (2H-1, d)}`` ~ N(0, std^2), std = d^-1/2 by default (the paper's init)."""
    kw, kh = jax.random.split(key)
    std = d ** -0.5 if std is None else std
    return {"w": std * jax.random.normal(kw, (2 * width - 1, d)), "h": std * jax.random.normal(kh, (2 * height - 1, d))}
