"""Single-shot detectors: ``yolo`` (a grid of cells, YOLO-style) and ``ssd`` (anchor boxes at two scales).

Both share one convolutional backbone: stages of two 3x3 conv-BN-ReLU layers, the first of each stage after the
first with stride 2, so a 64x64 image gives feature maps of 64, 32, 16 and 8 pixels per side with the default
four widths. A head is a 1x1 convolution predicting, for every position p (a cell, or a cell's anchor),

    t = (tx, ty, tw, th)   the box          o   the objectness logit          z (K,)   the class logits

``yolo`` reads the last map (stride s = 8: an 8x8 grid on 64x64 images). The cell (i, j) holding a ground-truth
box's centre is responsible for it; its box is

    cx = (j + sigma(tx)) s,   cy = (i + sigma(ty)) s,   w = P exp(tw),   h = P exp(th)     (P the prior size)

and its box loss is ``giou_loss`` (1 - GIoU, funcdl/nn/boxes.py, hand-derived backward) against the ground truth.

``ssd`` reads the last two maps (strides 4 and 8) with two anchors per position at each scale (sizes
``anchors``, fractions of the image side). An anchor is positive for the ground-truth box it overlaps most if
that IoU is >= 0.5, and every ground-truth box also claims its best anchor; the box loss is ``smooth_l1_loss``
on the SSD offsets against the anchor (funcdl.detection.boxes.encode_anchor, variances 0.1 / 0.2).

The loss of both, with n+ the number of positive positions in the batch (at least 1):

    L = ( w_box sum_pos box_loss + sum_all BCE(o, 1[pos]) + sum_pos CE(z, class) ) / n+

(BCE with logits and softmax cross-entropy are funcdl primitives). At test time a position's score for class c
is sigma(o) softmax(z)_c; the ``top_k`` best (position, class) pairs of an image go through class-wise
non-maximum suppression (funcdl.detection.nms_fixed) and the best ``max_out`` survive. ``report`` computes COCO
mAP at IoU 0.5 and 0.5:0.95 on the test split (funcdl.detection.evaluate) and draws a few test images.

Batches are ``{"x": (B, H, W, C), "boxes": (B, M, 4) xyxy pixels, "labels": (B, M), "mask": (B, M)}`` as
``mnist_detection`` and ``shapes_detection`` (funcdl/data/detection.py) hold them.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

import funcdl as fd
from funcdl.detection import boxes as B
from funcdl.detection.nms import nms_fixed
from funcdl.nn.boxes import giou_loss
from funcdl.training.task import DataInfo

from .layers import bn, bn_init, conv, conv_init, image_shape
from .registry import as_task, register

__all__ = ["Config", "KIND", "init", "apply", "loss", "predict", "jitted_predict", "detect_split", "ground_truth",
           "targets", "fake_batch", "report"]

KIND = "detection"


@dataclasses.dataclass(frozen=True)
class Config:
    image: tuple = (64, 64, 1)
    num_classes: int = 10
    head: str = "yolo"                          # "yolo": one box per grid cell; "ssd": anchors at two scales
    widths: tuple = (16, 32, 64, 128)           # one stage per width; every stage after the first halves the side
    prior: float = 0.3                          # yolo: the box size P at tw = 0, a fraction of the image side
    anchors: tuple = (((0.14, 0.22), (0.19, 0.19)), ((0.22, 0.33), (0.31, 0.38)))   # ssd: (w, h) per scale
    box_weight: float = 2.0
    top_k: int = 100                            # candidates per image before NMS
    max_out: int = 20                           # detections per image after NMS
    iou_threshold: float = 0.5                  # NMS

    def __post_init__(self):
        if self.head not in ("yolo", "ssd"):
            raise ValueError(f"head={self.head!r}: choose 'yolo' or 'ssd'")
        if len(self.widths) < 2:
            raise ValueError(f"widths={self.widths}: need at least two stages")
        side = self.image[0] // 2 ** (len(self.widths) - 1)
        if self.image[0] != self.image[1] or side < 1 or self.image[0] % 2 ** (len(self.widths) - 1):
            raise ValueError(f"image {self.image[:2]} must be square with a side divisible by "
                             f"{2 ** (len(self.widths) - 1)} (2 ** (stages - 1))")

    @property
    def levels(self) -> tuple:
        """(side, stride, anchors (w, h) in pixels) of each map a head reads."""
        n, size = len(self.widths), self.image[0]
        if self.head == "yolo":
            s = 2 ** (n - 1)
            return ((size // s, s, ((self.prior * size, self.prior * size),)),)
        return tuple((size // 2 ** (n - 1 - k), 2 ** (n - 1 - k), tuple((w * size, h * size) for w, h in sizes))
                     for k, sizes in zip((1, 0), self.anchors, strict=True))

    @property
    def anchor_boxes(self) -> np.ndarray:
        """xyxy anchors of every position, in the order the head's outputs are flattened."""
        return np.concatenate([B.grid_anchors(side, side, stride, sizes) for side, stride, sizes in self.levels])


def init(key, config: Config):
    k = iter(jax.random.split(key, 2 * len(config.widths) + len(config.levels)))
    params, state = {"stages": []}, {"stages": []}
    cin = config.image[2]
    for width in config.widths:
        ps, ss = [], []
        for _ in range(2):
            p = conv_init(next(k), (3, 3), cin, width, bias=False)
            p["bn"], s = bn_init(width)
            ps.append(p)
            ss.append(s)
            cin = width
        params["stages"].append(ps)
        state["stages"].append(ss)
    params["heads"] = []
    for level, (_, _, sizes) in enumerate(config.levels):
        width = config.widths[-1 - (len(config.levels) - 1 - level)]
        head = conv_init(next(k), (1, 1), width, len(sizes) * (5 + config.num_classes))
        b = head["b"].reshape(len(sizes), 5 + config.num_classes)
        head["b"] = b.at[:, 4].set(-4.0).reshape(-1)           # objectness starts near sigma(-4) = 0.02
        params["heads"].append(head)
    return params, state


def _backbone(params, state, x, train):
    feats, new = [], []
    h = x
    for stage, (ps, ss) in enumerate(zip(params["stages"], state["stages"], strict=True)):
        ns = []
        for i, (p, s) in enumerate(zip(ps, ss, strict=True)):
            stride = 2 if (stage > 0 and i == 0) else 1
            h, s2 = bn(p["bn"], s, conv(p, h, stride=stride, padding=1), train)
            h = fd.relu(h)
            ns.append(s2)
        feats.append(h)
        new.append(ns)
    return feats, {"stages": new}


def apply(params, state, x, config: Config, *, key=None, train: bool = False):
    """Images (B, H, W, C) -> raw head outputs (B, P, 5 + K): per position (tx, ty, tw, th, o, z_1..z_K)."""
    feats, state = _backbone(params, state, x, train)
    feats = feats[-len(config.levels):]
    outs = []
    for head, f in zip(params["heads"], feats, strict=True):
        y = conv(head, f, padding="VALID")
        outs.append(y.reshape(y.shape[0], -1, 5 + config.num_classes))
    return jnp.concatenate(outs, axis=1), state


def _grid(config: Config):
    """Per position: (row, col, stride, prior) of the yolo grid, float32 (P,) each."""
    side, stride, ((prior, _),) = config.levels[0]
    rows, cols = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    return rows.reshape(-1).astype(np.float32), cols.reshape(-1).astype(np.float32), float(stride), float(prior)


def decode(out, config: Config):
    """Raw outputs (B, P, 5 + K) -> xyxy boxes (B, P, 4) in pixels (differentiable)."""
    if config.head == "yolo":
        rows, cols, stride, prior = _grid(config)
        t = jnp.concatenate([fd.sigmoid(out[..., :2]), jnp.clip(out[..., 2:4], -4.0, 4.0)], axis=-1)
        return B.decode_grid(t, rows, cols, stride, prior)
    return B.decode_anchor(out[..., :4], jnp.asarray(config.anchor_boxes))


def targets(batch, config: Config):
    """Ground truth -> per position (B, P): positive flags, the matched box (B, P, 4) and its class (-100 where
    negative). Computed from data only (no gradient flows through it)."""
    gt, labels = jnp.asarray(batch["boxes"]), jnp.asarray(batch["labels"]).astype(jnp.int32)
    mask = jnp.asarray(batch["mask"]) > 0
    nb, m = labels.shape
    anchors = jnp.asarray(config.anchor_boxes)
    n_pos = anchors.shape[0]
    if config.head == "yolo":
        side, stride, _ = config.levels[0]
        c = B.xyxy_to_cxcywh(gt)
        row = jnp.clip(jnp.floor(c[..., 1] / stride), 0, side - 1).astype(jnp.int32)
        col = jnp.clip(jnp.floor(c[..., 0] / stride), 0, side - 1).astype(jnp.int32)
        owner = jnp.where(mask, row * side + col, n_pos)                 # (B, M); n_pos: dropped
        which = jnp.full((nb, n_pos), -1, jnp.int32)
        which = which.at[jnp.arange(nb)[:, None], owner].set(jnp.arange(m, dtype=jnp.int32)[None, :], mode="drop")
    else:
        iou = B.iou_matrix(gt, anchors)                                   # (B, M, P)
        iou = jnp.where(mask[..., None], iou, -1.0)
        best_gt, best_iou = jnp.argmax(iou, axis=1), jnp.max(iou, axis=1)  # (B, P)
        which = jnp.where(best_iou >= 0.5, best_gt, -1).astype(jnp.int32)
        best_anchor = jnp.where(mask, jnp.argmax(iou, axis=2), n_pos)    # every box claims its best anchor
        which = which.at[jnp.arange(nb)[:, None], best_anchor].set(jnp.arange(m, dtype=jnp.int32)[None, :], mode="drop")
    pos = which >= 0
    idx = jnp.maximum(which, 0)
    box = jnp.take_along_axis(gt, idx[..., None], axis=1)
    box = jnp.where(pos[..., None], box, anchors[None])                  # a harmless box where negative
    cls = jnp.where(pos, jnp.take_along_axis(labels, idx, axis=1), -100)
    return pos, box, cls


def loss(params, state, batch, config: Config, *, key=None, train: bool = False):
    out, state = apply(params, state, batch["x"], config, key=key, train=train)
    pos, box, cls = targets(batch, config)
    posf = pos.astype(out.dtype)
    n_pos = jnp.maximum(jnp.sum(posf), 1.0)
    if config.head == "yolo":
        per_box = giou_loss(decode(out, config), box.astype(out.dtype))
    else:
        enc = B.encode_anchor(box.astype(out.dtype), jnp.asarray(config.anchor_boxes, out.dtype))
        per_box = jnp.sum(fd.smooth_l1_loss(out[..., :4], enc, reduction="none", beta=1.0), axis=-1)
    box_loss = jnp.sum(per_box * posf) / n_pos
    obj_loss = fd.binary_cross_entropy_with_logits(out[..., 4], posf, reduction="sum") / n_pos
    k = config.num_classes
    cls_loss = fd.softmax_cross_entropy(out[..., 5:].reshape(-1, k), cls.reshape(-1), reduction="sum") / n_pos
    total = config.box_weight * box_loss + obj_loss + cls_loss
    return total, (state, {"loss": total, "box_loss": box_loss, "obj_loss": obj_loss, "cls_loss": cls_loss})


def predict(params, state, x, config: Config, *, score_threshold: float = 0.0):
    """Images -> detections after class-wise NMS: boxes (B, K, 4) xyxy pixels, scores (B, K), classes (B, K),
    valid (B, K) with K = ``config.max_out`` (jit it with ``config`` static)."""
    out, _ = apply(params, state, x, config)
    boxes = decode(out, config)
    k = config.num_classes
    scores = jax.nn.sigmoid(out[..., 4:5]) * jax.nn.softmax(out[..., 5:], axis=-1)   # (B, P, K)
    flat = scores.reshape(scores.shape[0], -1)
    top, where = jax.lax.top_k(flat, min(config.top_k, flat.shape[1]))
    cand = jnp.take_along_axis(boxes, (where // k)[..., None], axis=1)
    nms = functools.partial(nms_fixed, iou_threshold=config.iou_threshold, max_out=config.max_out)
    b, s, c, valid = jax.vmap(nms)(cand, top, where % k)
    return b, s, c, valid & (s > score_threshold)


@functools.lru_cache(maxsize=8)
def jitted_predict(config: Config, score_threshold: float = 0.0):
    """``predict`` compiled once per (config, threshold): ``run(params, state, x)``."""
    return jax.jit(functools.partial(predict, config=config, score_threshold=score_threshold))


def detect_split(params, state, split, config: Config, *, batch_size: int = 250):
    """Detections for every image of a split (NumPy): a list of (boxes, scores, classes) per image."""
    run = jitted_predict(config)
    x, result = split["x"], []
    for start in range(0, len(x), batch_size):
        b, s, c, v = (np.asarray(a) for a in run(params, state, jnp.asarray(x[start:start + batch_size])))
        result.extend((b[i][v[i]], s[i][v[i]], c[i][v[i]]) for i in range(len(b)))
    return result


def ground_truth(split):
    m = split["mask"] > 0
    return [(split["boxes"][i][m[i]], split["labels"][i][m[i]]) for i in range(len(m))]


# -- the end-of-run report --------------------------------------------------------------------------------------


def report(params, state, opt_state, data, out_dir, *, config: Config, pictures: int = 8) -> dict:
    """COCO mAP on the test split (the validation split when there is none): ``test_map50``, ``test_map``
    (0.5:0.95), ``test_ap50`` and ``test_ap`` per class; prints the per-class table and writes
    ``predictions.png`` (the first ``pictures`` test images with their detections scoring >= 0.3) in ``out_dir``."""
    from funcdl.detection import ap_table, evaluate
    from funcdl.detection.draw import save_grid

    name = "test" if "test" in data.splits else "val"
    split = data.splits[name]
    if "boxes" not in split:
        raise ValueError(f"detection report: the {name!r} split of {data.name!r} has no 'boxes'; use a detection "
                         "data set (mnist_detection, shapes_detection)")
    dets = detect_split(params, state, split, config)
    result = evaluate(dets, ground_truth(split), config.num_classes)
    classes = [str(c) for c in (data.extras or {}).get("classes", range(config.num_classes))]
    print(f"{name} mAP@0.5 {result['map50']:.4f}  mAP@0.5:0.95 {result['map']:.4f}\n" + ap_table(result, classes))
    if out_dir is not None and pictures:
        shown = [tuple(a[d[1] >= 0.3] for a in d) for d in dets[:pictures]]     # the confident ones
        save_grid(f"{out_dir}/predictions.png", split["x"][:pictures], shown, classes)
    return {f"{name}_map50": result["map50"], f"{name}_map": result["map"],
            f"{name}_ap50": dict(zip(classes, result["ap50"], strict=True)),
            f"{name}_ap": dict(zip(classes, result["ap"], strict=True))}


def fake_batch(info: DataInfo, n: int = 4, seed: int = 0) -> dict:
    """A random detection batch shaped as ``info`` describes (tests): 1-3 boxes per image, padded to 4."""
    rng = np.random.default_rng(seed)
    h, w, c = image_shape(info)
    lo = rng.uniform(0, 0.6, (n, 4, 2)) * np.array([w, h])
    size = rng.uniform(0.2, 0.4, (n, 4, 2)) * np.array([w, h])
    mask = (np.arange(4)[None] < rng.integers(1, 4, (n, 1))).astype(np.float32)
    return {"x": rng.normal(size=(n, h, w, c)).astype(np.float32),
            "boxes": np.concatenate([lo, lo + size], axis=-1).astype(np.float32),
            "labels": rng.integers(0, info.num_classes, (n, 4)).astype(np.int32), "mask": mask}


def _build(info: DataInfo, head: str, widths, prior, box_weight, iou_threshold):
    if info.num_classes is None:
        raise ValueError(f"{head} needs a data set with classes (mnist_detection, shapes_detection), got {info.name!r}")
    config = Config(image=image_shape(info), num_classes=info.num_classes, head=head, widths=tuple(widths),
                    prior=float(prior), box_weight=float(box_weight), iou_threshold=float(iou_threshold))
    return as_task(config, report=functools.partial(report, config=config), predict=functools.partial(
        predict, config=config), detector=True,
        fake_batch=lambda n=4, seed=0: fake_batch(info, n, seed))


def build(info: DataInfo, *, widths=(16, 32, 64, 128), prior=0.3, box_weight=2.0, iou_threshold=0.5):
    """The YOLO-style detector: an 8x8 grid (on 64x64 images) of cells, each predicting one box (GIoU loss),
    its objectness and the class scores; ``prior`` is the box size at tw = 0 as a share of the image side."""
    return _build(info, "yolo", widths, prior, box_weight, iou_threshold)


def build_ssd(info: DataInfo, *, widths=(16, 32, 64, 128), box_weight=1.0, iou_threshold=0.5):
    """The SSD-style detector: two anchors per position on the stride-4 and stride-8 maps (smooth L1 on the
    anchor offsets), objectness and class scores per anchor."""
    return _build(info, "ssd", widths, 0.3, box_weight, iou_threshold)


def _small_batch(n: int = 4, seed: int = 0) -> dict:
    return fake_batch(_SMALL_DATA, n, seed)


# extras["fake_batch"]: how tests/test_models.py makes a batch of this data (boxes, labels, mask, not just labels)
_SMALL_DATA = DataInfo("fake-detection", (16, 16, 1), num_classes=3, kind="detection",
                       extras={"task": "detection", "fake_batch": _small_batch})
_DATA = ("mnist_detection", "shapes_detection")
# the recipe measured for issue 21 (benchmarks/detection.py): 1000 Adam steps of 64 images (about 2 epochs of the
# 30000 training scenes), cosine decay after 100 warm-up steps
_RECIPE = {"data": "mnist_detection", "steps": 1000, "batch_size": 64, "optimizer": "adam", "lr": 2e-3,
           "schedule": "cosine", "warmup_steps": 100}

register("yolo", build, data=_DATA, defaults=dict(_RECIPE),
         data_defaults={"shapes_detection": {"steps": 600, "batch_size": 32}},
         description="YOLO-style single-shot detector: a grid of cells, each with a box (GIoU loss), objectness "
                     "and class scores; reports COCO mAP",
         small={"widths": (2, 4, 4)}, small_data=_SMALL_DATA)
register("ssd", build_ssd, data=_DATA, defaults=dict(_RECIPE),
         data_defaults={"shapes_detection": {"steps": 600, "batch_size": 32}},
         description="SSD-style single-shot detector: anchors at two scales (smooth L1 offsets), objectness and "
                     "class scores; reports COCO mAP",
         small={"widths": (2, 4, 4)}, small_data=_SMALL_DATA)
