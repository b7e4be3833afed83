"""Mean average precision the way COCO computes it (pycocotools' ``COCOeval`` for bounding boxes, area "all",
at most ``max_dets`` detections per image and class), in NumPy.

For one class and one IoU threshold t:

1. *Matching*, image by image: detections in order of decreasing score; each takes the still unmatched ground
   truth box it overlaps most, if that IoU is >= t (a true positive), else it is a false positive.
2. *Precision-recall*: all detections of the class over all images sorted by score; after the k-th,
   recall = TP_k / #ground truth and precision = TP_k / k.
3. *Interpolation*: precision is replaced by the best precision at any higher recall (the envelope), then read at
   the 101 recall levels 0, 0.01, ..., 1 (the first detection reaching each level; 0 past the highest recall).
   AP is the mean of those 101 values.

mAP@0.5 averages AP over the classes that have ground truth (a class with none is left out, as COCO does) at
t = 0.5; COCO's mAP ("0.5:0.95") averages it over t = 0.50, 0.55, ..., 0.95 as well. Perfect predictions give 1.
"""

from __future__ import annotations

import numpy as np

from .boxes import iou_matrix

__all__ = ["IOU_THRESHOLDS", "RECALL_LEVELS", "average_precision", "evaluate", "ap_table", "match"]

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_LEVELS = np.linspace(0.0, 1.0, 101)


def match(iou: np.ndarray, thresholds=IOU_THRESHOLDS) -> np.ndarray:
    """Greedy matching of D detections (rows, best score first) to G ground truths (columns) at each threshold:
    -> bool (T, D), True where a detection is a true positive."""
    d, g = iou.shape
    tp = np.zeros((len(thresholds), d), bool)
    for k, t in enumerate(thresholds):
        taken = np.zeros(g, bool)
        for i in range(d):
            cand = np.where(taken, -1.0, iou[i])
            j = int(np.argmax(cand)) if g else -1
            if g and cand[j] >= min(t, 1 - 1e-10):
                taken[j], tp[k, i] = True, True
    return tp


def average_precision(scores, tp, n_gt: int) -> float:
    """101-point interpolated AP of one class at one threshold from the scores and TP flags of its detections
    (pooled over images). NaN when the class has no ground truth."""
    if n_gt == 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores), kind="mergesort")
    tp = np.asarray(tp, bool)[order]
    tps, fps = np.cumsum(tp), np.cumsum(~tp)
    recall = tps / n_gt
    precision = tps / np.maximum(tps + fps, np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    if not len(precision):
        return 0.0
    idx = np.searchsorted(recall, RECALL_LEVELS, side="left")
    q = np.zeros(len(RECALL_LEVELS))
    reached = idx < len(precision)
    q[reached] = precision[idx[reached]]
    return float(np.mean(q))


def _check_image(i, pred, gt):
    if len(pred) != 3 or len(gt) != 2:
        raise ValueError(f"evaluate: image {i}: predictions must be (boxes, scores, labels) and ground truth "
                         "(boxes, labels)")


def evaluate(predictions, ground_truth, num_classes: int, *, thresholds=IOU_THRESHOLDS, max_dets: int = 100) -> dict:
    """COCO-style AP per class and threshold.

    ``predictions``: one ``(boxes (D, 4) xyxy, scores (D,), labels (D,))`` per image; ``ground_truth``: one
    ``(boxes (G, 4), labels (G,))`` per image (only the real boxes: drop padding first). Returns
    ``{"map50", "map", "ap50": per-class list, "ap": per-class list (mean over thresholds), "n_gt": per class}``;
    a class without ground truth has AP NaN and is left out of the means."""
    if len(predictions) != len(ground_truth):
        raise ValueError(f"evaluate: {len(predictions)} images of predictions but {len(ground_truth)} of ground truth")
    thresholds = np.asarray(thresholds, np.float64)
    scores = [[] for _ in range(num_classes)]
    tps = [[] for _ in range(num_classes)]
    n_gt = np.zeros(num_classes, np.int64)
    for i, (pred, gt) in enumerate(zip(predictions, ground_truth, strict=True)):
        _check_image(i, pred, gt)
        pb, ps, pl = (np.asarray(a) for a in pred)
        gb, gl = np.asarray(gt[0], np.float64).reshape(-1, 4), np.asarray(gt[1]).reshape(-1)
        pb, ps, pl = pb.reshape(-1, 4).astype(np.float64), ps.reshape(-1), pl.reshape(-1)
        for c in np.unique(np.concatenate([pl, gl]).astype(np.int64)):
            if not 0 <= c < num_classes:
                raise ValueError(f"evaluate: image {i} has class {c}; valid classes are 0..{num_classes - 1}")
            g = gb[gl == c]
            n_gt[c] += len(g)
            sel = np.nonzero(pl == c)[0]
            sel = sel[np.argsort(-ps[sel], kind="mergesort")][:max_dets]
            if not len(sel):
                continue
            scores[c].append(ps[sel])
            tps[c].append(match(iou_matrix(pb[sel], g), thresholds))
    ap = np.full((num_classes, len(thresholds)), np.nan)
    for c in range(num_classes):
        s = np.concatenate(scores[c]) if scores[c] else np.zeros(0)
        tp = np.concatenate(tps[c], axis=1) if tps[c] else np.zeros((len(thresholds), 0), bool)
        for k in range(len(thresholds)):
            ap[c, k] = average_precision(s, tp[k], int(n_gt[c]))
    at50 = int(np.argmin(np.abs(thresholds - 0.5)))
    has = n_gt > 0
    return {"map50": float(np.mean(ap[has, at50])) if has.any() else float("nan"),
            "map": float(np.mean(ap[has])) if has.any() else float("nan"),
            "ap50": [float(v) for v in ap[:, at50]], "ap": [float(v) for v in np.mean(ap, axis=1)],
            "n_gt": [int(v) for v in n_gt]}


def ap_table(result: dict, class_names=None) -> str:
    """The per-class AP as a Markdown table (AP@0.5, AP@0.5:0.95, ground-truth boxes), the means last."""
    names = class_names or [str(c) for c in range(len(result["ap50"]))]
    lines = ["| class | AP@0.5 | AP@0.5:0.95 | boxes |", "|---|---|---|---|"]
    for name, a50, a, n in zip(names, result["ap50"], result["ap"], result["n_gt"], strict=True):
        lines.append(f"| {name} | {a50:.4f} | {a:.4f} | {n} |")
    lines.append(f"| **mean** | **{result['map50']:.4f}** | **{result['map']:.4f}** | {sum(result['n_gt'])} |")
    return "\n".join(lines)
