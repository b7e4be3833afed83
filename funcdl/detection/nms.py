"""Non-maximum suppression, class-wise: a box is dropped when a higher-scoring box *of the same class* overlaps
it by more than ``iou_threshold`` (IoU). Boxes of different classes never suppress each other.

Greedy, in order of decreasing score (ties keep the earlier index first, as a stable sort gives):

    keep = []
    for i in order:  if every kept k of i's class has IoU(k, i) <= threshold: keep i

``nms`` is the NumPy version for evaluation (any number of boxes, returns indices). ``nms_fixed`` is the same
rule with static shapes for ``jit``/``vmap``: it takes N candidate boxes and returns the ``max_out`` best kept
ones padded with ``valid = False``; both agree on what they keep (tests/test_detection.py).
"""

from __future__ import annotations

import numpy as np

from .boxes import iou_matrix

__all__ = ["nms", "nms_fixed"]


def _check(boxes, scores, classes, iou_threshold):
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"nms: boxes must be (N, 4) xyxy, got shape {boxes.shape}")
    if scores.shape != boxes.shape[:1] or (classes is not None and classes.shape != boxes.shape[:1]):
        raise ValueError(f"nms: scores {scores.shape} and classes {None if classes is None else classes.shape} "
                         f"must be ({boxes.shape[0]},), one per box")
    if not 0.0 <= float(iou_threshold) <= 1.0:
        raise ValueError(f"nms: iou_threshold must lie in [0, 1], got {iou_threshold}")


def nms(boxes, scores, classes=None, iou_threshold: float = 0.5) -> np.ndarray:
    """Indices of the boxes kept, by decreasing score (NumPy). ``classes=None`` treats all boxes as one class."""
    boxes, scores = np.asarray(boxes, np.float64), np.asarray(scores, np.float64)
    classes = None if classes is None else np.asarray(classes)
    _check(boxes, scores, classes, iou_threshold)
    order = np.argsort(-scores, kind="stable")
    keep = []
    if classes is None:
        classes = np.zeros(len(boxes), np.int64)
    for c in np.unique(classes):
        idx = order[classes[order] == c]
        iou = iou_matrix(boxes[idx], boxes[idx])
        alive = np.ones(len(idx), bool)
        for a in range(len(idx)):
            if alive[a]:
                keep.append(idx[a])
                alive[a + 1:] &= iou[a, a + 1:] <= iou_threshold
    keep = np.asarray(keep, np.int64)
    return keep[np.argsort(-scores[keep], kind="stable")] if len(keep) else keep


def nms_fixed(boxes, scores, classes, *, iou_threshold: float = 0.5, max_out: int = 20):
    """Class-wise NMS with static shapes (jax.numpy; jit- and vmap-able): boxes (N, 4), scores (N,), classes (N,)
    -> (boxes (K, 4), scores (K,), classes (K,), valid (K,)) with K = ``max_out``, the best kept boxes first.

    The greedy pass is a ``fori_loop`` over the boxes in score order: box i survives when no surviving earlier
    box of its class overlaps it by more than the threshold (O(N^2) memory for the IoU matrix: keep N small,
    a few hundred candidates)."""
    import jax
    import jax.numpy as jnp

    n = boxes.shape[0]
    order = jnp.argsort(-scores, stable=True)
    b, s, c = boxes[order], scores[order], classes[order]
    suppress = (iou_matrix(b, b) > iou_threshold) & (c[:, None] == c[None, :])
    suppress = suppress & (jnp.arange(n)[:, None] < jnp.arange(n)[None, :])   # only earlier boxes suppress

    def step(i, alive):
        return alive & ~(suppress[i] & alive[i])

    alive = jax.lax.fori_loop(0, n, step, jnp.ones(n, bool))
    k = min(max_out, n)
    rank = jnp.where(alive, jnp.arange(n), n + jnp.arange(n))        # kept boxes first, in score order
    pick = jnp.argsort(rank)[:k]
    out = (b[pick], s[pick], c[pick], alive[pick])
    if k < max_out:
        pad = max_out - k
        out = (jnp.pad(out[0], ((0, pad), (0, 0))), jnp.pad(out[1], (0, pad)), jnp.pad(out[2], (0, pad)),
               jnp.pad(out[3], (0, pad)))
    return out
