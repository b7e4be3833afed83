"""Box arithmetic for detectors, as plain functions (NumPy or jax.numpy arrays alike; nothing here is trained).

Formats along the last axis: ``xyxy`` = (x1, y1, x2, y2) corners, ``cxcywh`` = (centre x, centre y, width,
height). Pixel (row, col) covers [col, col + 1) x [row, row + 1), so a box's area is (x2 - x1)(y2 - y1) with no
"+ 1" (the COCO convention).

Encodings against a grid cell (YOLO) and an anchor (SSD) are inverse pairs, ``decode(encode(b)) == b``:

    grid (cell (i, j) of side s, prior size P):   tx = cx / s - j,  ty = cy / s - i  (in [0, 1) inside the cell),
                                                  tw = log(w / P),  th = log(h / P)
    anchor (a_cx, a_cy, a_w, a_h), variances v:   tx = (cx - a_cx) / (a_w v0),  tw = log(w / a_w) / v1, ...
"""

from __future__ import annotations

import numpy as np

__all__ = ["xyxy_to_cxcywh", "cxcywh_to_xyxy", "area", "iou_matrix", "giou_matrix", "encode_grid", "decode_grid",
           "encode_anchor", "decode_anchor", "grid_anchors", "xp_of"]


def xp_of(a):
    """The array module of ``a``: jax.numpy for JAX arrays and tracers, NumPy otherwise."""
    if type(a).__module__.startswith("jax") or hasattr(a, "aval"):
        import jax.numpy as jnp

        return jnp
    return np


def xyxy_to_cxcywh(b):
    xp = xp_of(b)
    return xp.stack([(b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2,
                     b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]], axis=-1)


def cxcywh_to_xyxy(b):
    xp = xp_of(b)
    return xp.stack([b[..., 0] - b[..., 2] / 2, b[..., 1] - b[..., 3] / 2,
                     b[..., 0] + b[..., 2] / 2, b[..., 1] + b[..., 3] / 2], axis=-1)


def area(b):
    xp = xp_of(b)
    return xp.maximum(b[..., 2] - b[..., 0], 0) * xp.maximum(b[..., 3] - b[..., 1], 0)


def _pairwise(a, b):
    xp = xp_of(a) if xp_of(a) is not np else xp_of(b)
    a, b = a[..., :, None, :], b[..., None, :, :]
    iw = xp.maximum(xp.minimum(a[..., 2], b[..., 2]) - xp.maximum(a[..., 0], b[..., 0]), 0)
    ih = xp.maximum(xp.minimum(a[..., 3], b[..., 3]) - xp.maximum(a[..., 1], b[..., 1]), 0)
    inter = iw * ih
    union = area(a) + area(b) - inter
    return xp, a, b, inter, union


def iou_matrix(a, b):
    """IoU of every box of ``a`` (..., N, 4) with every box of ``b`` (..., M, 4), xyxy -> (..., N, M).
    Two empty boxes have IoU 0."""
    xp, _, _, inter, union = _pairwise(a, b)
    return inter / xp.where(union > 0, union, 1)


def giou_matrix(a, b):
    """Generalized IoU (Rezatofighi et al. 2019) of every pair: IoU - (C - U) / C with C the enclosing box."""
    xp, a, b, inter, union = _pairwise(a, b)
    cw = xp.maximum(a[..., 2], b[..., 2]) - xp.minimum(a[..., 0], b[..., 0])
    ch = xp.maximum(a[..., 3], b[..., 3]) - xp.minimum(a[..., 1], b[..., 1])
    c = cw * ch
    safe_u, safe_c = xp.where(union > 0, union, 1), xp.where(c > 0, c, 1)
    return inter / safe_u - (c - union) / safe_c


def encode_grid(boxes, rows, cols, stride: float, prior: float):
    """xyxy boxes (..., 4) in the cell (rows, cols) -> (tx, ty, tw, th) (see the module docstring)."""
    xp = xp_of(boxes)
    c = xyxy_to_cxcywh(boxes)
    return xp.stack([c[..., 0] / stride - cols, c[..., 1] / stride - rows,
                     xp.log(c[..., 2] / prior), xp.log(c[..., 3] / prior)], axis=-1)


def decode_grid(t, rows, cols, stride: float, prior: float):
    """(tx, ty, tw, th) of the cell (rows, cols) -> xyxy boxes; the inverse of :func:`encode_grid`."""
    xp = xp_of(t)
    c = xp.stack([(t[..., 0] + cols) * stride, (t[..., 1] + rows) * stride,
                  prior * xp.exp(t[..., 2]), prior * xp.exp(t[..., 3])], axis=-1)
    return cxcywh_to_xyxy(c)


def encode_anchor(boxes, anchors, variances=(0.1, 0.2)):
    """xyxy boxes against xyxy anchors -> SSD offsets ((cx - a_cx) / (a_w v0), ..., log(w / a_w) / v1, ...)."""
    xp = xp_of(boxes)
    b, a = xyxy_to_cxcywh(boxes), xyxy_to_cxcywh(anchors)
    return xp.stack([(b[..., 0] - a[..., 0]) / (a[..., 2] * variances[0]),
                     (b[..., 1] - a[..., 1]) / (a[..., 3] * variances[0]),
                     xp.log(b[..., 2] / a[..., 2]) / variances[1], xp.log(b[..., 3] / a[..., 3]) / variances[1]],
                    axis=-1)


def decode_anchor(t, anchors, variances=(0.1, 0.2)):
    """SSD offsets against xyxy anchors -> xyxy boxes; the inverse of :func:`encode_anchor`."""
    xp = xp_of(t)
    a = xyxy_to_cxcywh(anchors)
    c = xp.stack([a[..., 0] + t[..., 0] * variances[0] * a[..., 2], a[..., 1] + t[..., 1] * variances[0] * a[..., 3],
                  a[..., 2] * xp.exp(t[..., 2] * variances[1]), a[..., 3] * xp.exp(t[..., 3] * variances[1])], axis=-1)
    return cxcywh_to_xyxy(c)


def grid_anchors(height: int, width: int, stride: float, sizes) -> np.ndarray:
    """Anchors centred on the cells of a (height, width) grid of ``stride`` pixels, one per (w, h) in ``sizes``,
    ordered (row, col, anchor) -> xyxy float32 (height * width * len(sizes), 4)."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    cx, cy = (cols + 0.5) * stride, (rows + 0.5) * stride
    sizes = np.asarray(sizes, np.float64).reshape(-1, 2)
    c = np.stack([np.broadcast_to(cx[..., None], (*cx.shape, len(sizes))),
                  np.broadcast_to(cy[..., None], (*cy.shape, len(sizes))),
                  np.broadcast_to(sizes[:, 0], (*cx.shape, len(sizes))),
                  np.broadcast_to(sizes[:, 1], (*cx.shape, len(sizes)))], axis=-1)
    return cxcywh_to_xyxy(c.reshape(-1, 4)).astype(np.float32)
