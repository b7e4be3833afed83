"""funcdl.detection: what object detectors need besides their layers, as plain functions.

* ``boxes`` — formats (xyxy, cxcywh), IoU and GIoU matrices, encodings against grid cells (YOLO) and anchors (SSD);
* ``nms`` — class-wise non-maximum suppression: ``nms`` (NumPy) and ``nms_fixed`` (static shapes, for ``jit``);
* ``metrics`` — COCO-style mean average precision (101-point interpolation) at IoU 0.5 and 0.5:0.95.

The trained part (the GIoU loss with its hand-derived backward) is the primitive ``funcdl.nn.boxes.giou_loss``;
the detectors themselves are ``models/yolo.py`` (``yolo`` and ``ssd``), and ``funcdl detect`` draws their boxes.
"""

from . import boxes, metrics, nms
from .boxes import (
    cxcywh_to_xyxy,
    decode_anchor,
    decode_grid,
    encode_anchor,
    encode_grid,
    giou_matrix,
    grid_anchors,
    iou_matrix,
    xyxy_to_cxcywh,
)
from .metrics import ap_table, average_precision, evaluate
from .nms import nms as nms_numpy
from .nms import nms_fixed

__all__ = ["boxes", "metrics", "nms", "cxcywh_to_xyxy", "xyxy_to_cxcywh", "iou_matrix", "giou_matrix",
           "encode_grid", "decode_grid", "encode_anchor", "decode_anchor", "grid_anchors", "evaluate",
           "average_precision", "ap_table", "nms_numpy", "nms_fixed"]
