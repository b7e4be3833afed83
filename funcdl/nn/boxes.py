"""Box losses for detectors: ``giou_loss``, one minus the generalized IoU (Rezatofighi et al. 2019), with its
hand-derived backward.

Boxes are (x1, y1, x2, y2) with x1 < x2 and y1 < y2 along the last axis. IoU alone has no gradient when two boxes
do not overlap (the intersection is clipped at 0); GIoU subtracts the share of the smallest enclosing box C that
neither box covers, so a box far from its target is still pulled towards it:

    GIoU = I / U - (C - U) / C          in (-1, 1],  1 only for identical boxes
    loss = 1 - GIoU = 2 - I / U - U / C

The other box-regression loss the detectors use is ``smooth_l1_loss`` (funcdl/nn/losses/regression.py), and the
objectness and class terms are ``binary_cross_entropy_with_logits`` and ``softmax_cross_entropy``: no new
primitive is needed for them.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ..core.examples import Example
from ..core.examples import rng as example_rng
from ..core.primitive import primitive
from ._space import integer

__all__ = ["giou_loss"]


def _check(pred, target):
    if pred.shape != target.shape or pred.ndim < 1 or pred.shape[-1] != 4:
        raise ValueError(f"giou_loss: pred {pred.shape} and target {target.shape} must share one shape (..., 4) "
                         "of boxes (x1, y1, x2, y2)")


def _parts(p, t):
    """Every intermediate of the forward: widths, areas, intersection, union, enclosure."""
    x1, y1, x2, y2 = (p[..., i] for i in range(4))
    X1, Y1, X2, Y2 = (t[..., i] for i in range(4))
    wp, hp, wt, ht = x2 - x1, y2 - y1, X2 - X1, Y2 - Y1
    iw = jnp.minimum(x2, X2) - jnp.maximum(x1, X1)
    ih = jnp.minimum(y2, Y2) - jnp.maximum(y1, Y1)
    iwp, ihp = jnp.maximum(iw, 0.0), jnp.maximum(ih, 0.0)
    inter = iwp * ihp
    union = wp * hp + wt * ht - inter
    cw = jnp.maximum(x2, X2) - jnp.minimum(x1, X1)
    ch = jnp.maximum(y2, Y2) - jnp.minimum(y1, Y1)
    return dict(wp=wp, hp=hp, wt=wt, ht=ht, iw=iw, ih=ih, iwp=iwp, ihp=ihp, inter=inter, union=union, cw=cw, ch=ch)


def _giou_loss(pred, target):
    """loss = 1 - GIoU(pred, target) per box: pred, target (..., 4) as (x1, y1, x2, y2) -> loss (...).

    Forward, with p = (x1, y1, x2, y2) and t = (X1, Y1, X2, Y2):
        A_p = (x2 - x1)(y2 - y1),  A_t = (X2 - X1)(Y2 - Y1)
        iw = min(x2, X2) - max(x1, X1),  ih = min(y2, Y2) - max(y1, Y1),  I = max(iw, 0) max(ih, 0)
        U = A_p + A_t - I,  cw = max(x2, X2) - min(x1, X1),  ch likewise,  C = cw ch
        L = 2 - I / U - U / C

    Backward. The partial derivatives of L in (I, U, C) are -1/U, I/U^2 - 1/C and U/C^2. U itself depends on I
    and on both areas, so the total derivatives are
        gU = I/U^2 - 1/C              (= dL/dA_p = dL/dA_t)
        gI = -1/U - gU                (I enters L directly and through U = ... - I)
        gC = U/C^2
    and, through the clipped products I = iw+ ih+ and C = cw ch,
        g_iw = gI ih+ [iw > 0],  g_ih = gI iw+ [ih > 0],  g_cw = gC ch,  g_ch = gC cw.
    Each coordinate reaches iw (or cw) through one side of a min or max: with s1 = [x1 > X1] (pred's left edge is
    the intersection's) and s2 = [x2 < X2] (pred's right edge is the intersection's), the enclosure takes the
    other edge, so
        dx1 = g (-gU hp - g_iw s1 - g_cw (1 - s1)),   dX1 = g (-gU ht - g_iw (1 - s1) - g_cw s1)
        dx2 = g ( gU hp + g_iw s2 + g_cw (1 - s2)),   dX2 = g ( gU ht + g_iw (1 - s2) + g_cw s2)
    with hp = y2 - y1, ht = Y2 - Y1 and g the cotangent; y1, y2, Y1, Y2 the same with the widths wp, wt and
    (ih, ch) in place of (iw, cw); dpred = (dx1, dy1, dx2, dy2) and dtarget = (dX1, dY1, dX2, dY2). The min/max
    kinks (equal edges, iw = 0) are a set of measure zero.
    Residuals: the two boxes (every intermediate is recomputed: a few products per box).
    """
    q = _parts(pred, target)
    return 2.0 - q["inter"] / q["union"] - q["union"] / (q["cw"] * q["ch"])


def _giou_loss_fwd(pred, target):
    return _giou_loss(pred, target), (pred, target)


def _giou_loss_bwd(res, g):
    p, t = res
    q = _parts(p, t)
    c = q["cw"] * q["ch"]
    g_u = q["inter"] / q["union"] ** 2 - 1.0 / c
    g_i = -1.0 / q["union"] - g_u
    g_c = q["union"] / c ** 2
    g_iw, g_ih = g_i * q["ihp"] * (q["iw"] > 0), g_i * q["iwp"] * (q["ih"] > 0)
    g_cw, g_ch = g_c * q["ch"], g_c * q["cw"]

    def edges(lo, hi, LO, HI, side_p, side_t, g_inner, g_outer):
        s1, s2 = (lo > LO).astype(p.dtype), (hi < HI).astype(p.dtype)
        d_lo = -g_u * side_p - g_inner * s1 - g_outer * (1 - s1)
        d_hi = g_u * side_p + g_inner * s2 + g_outer * (1 - s2)
        d_LO = -g_u * side_t - g_inner * (1 - s1) - g_outer * s1
        d_HI = g_u * side_t + g_inner * (1 - s2) + g_outer * s2
        return d_lo, d_hi, d_LO, d_HI

    dx1, dx2, dX1, dX2 = edges(p[..., 0], p[..., 2], t[..., 0], t[..., 2], q["hp"], q["ht"], g_iw, g_cw)
    dy1, dy2, dY1, dY2 = edges(p[..., 1], p[..., 3], t[..., 1], t[..., 3], q["wp"], q["wt"], g_ih, g_ch)
    dp = jnp.stack([dx1, dy1, dx2, dy2], axis=-1) * g[..., None]
    dt = jnp.stack([dX1, dY1, dX2, dY2], axis=-1) * g[..., None]
    return dp.astype(p.dtype), dt.astype(t.dtype)


def _draw_pairs(rng, shape, margin=0.08):
    """Pairs of boxes whose edges differ by more than ``margin`` (clear of the min/max kinks) and whose
    intersection widths are not within ``margin`` of 0: overlapping, disjoint and nested pairs all occur."""
    n = int(np.prod(shape)) if shape else 1
    out_p, out_t = np.zeros((n, 4)), np.zeros((n, 4))
    for i in range(n):
        for _ in range(200):
            lo = rng.uniform(-2, 2, (2, 2))
            size = rng.uniform(0.3, 2.5, (2, 2))
            p, t = np.concatenate([lo[0], lo[0] + size[0]]), np.concatenate([lo[1], lo[1] + size[1]])
            iw = min(p[2], t[2]) - max(p[0], t[0])
            ih = min(p[3], t[3]) - max(p[1], t[1])
            if np.abs(p - t).min() > margin and abs(iw) > margin and abs(ih) > margin and \
                    abs(p[0] - t[2]) > margin and abs(p[2] - t[0]) > margin and \
                    abs(p[1] - t[3]) > margin and abs(p[3] - t[1]) > margin:
                break
        out_p[i], out_t[i] = p, t
    return out_p.reshape(*shape, 4), out_t.reshape(*shape, 4)


def _giou_loss_examples(key, dtype):
    rng = example_rng(key)
    p, t = _draw_pairs(rng, (6,))
    q, u = _draw_pairs(rng, (2, 3))
    return [Example((jnp.asarray(p, dtype), jnp.asarray(t, dtype)), {}, "6 boxes"),
            Example((jnp.asarray(q, dtype), jnp.asarray(u, dtype)), {}, "2x3 boxes")]


def _giou_loss_space(rng, dtype):
    """Batch rank 0-2 with sides 1-4; boxes anywhere in [-2, 4.5]^2, overlapping, disjoint or nested."""
    shape = tuple(integer(rng, 1, 4) for _ in range(integer(rng, 0, 2)))
    p, t = _draw_pairs(rng, shape)
    return Example((jnp.asarray(p, dtype), jnp.asarray(t, dtype)), {})


giou_loss = primitive("giou_loss", _giou_loss, _giou_loss_fwd, _giou_loss_bwd, examples=_giou_loss_examples,
                      space=_giou_loss_space, check=_check)
