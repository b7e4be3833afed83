"""Pictures of detections: boxes with their class and score drawn on an image (Pillow)."""

from __future__ import annotations

import os
import tempfile

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["draw", "save_grid", "save_png"]

_COLOURS = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190))


def _to_rgb(image) -> Image.Image:
    a = np.asarray(image, np.float32)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    a = np.clip(a, 0.0, 1.0) if a.max() <= 1.0 + 1e-6 else np.clip(a / 255.0, 0.0, 1.0)
    return Image.fromarray((a * 255).round().astype(np.uint8)).convert("RGB")


def draw(image, boxes, scores, classes, class_names=None, *, scale: int = 4) -> Image.Image:
    """``image`` (H, W[, C]) in [0, 1] or 0..255 with xyxy pixel ``boxes``, enlarged ``scale`` times (nearest),
    each box outlined in its class's colour and labelled "class score"."""
    pic = _to_rgb(image)
    pic = pic.resize((pic.width * scale, pic.height * scale), Image.NEAREST)
    pen = ImageDraw.Draw(pic)
    for box, score, c in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(scores).reshape(-1),
                             np.asarray(classes).reshape(-1), strict=True):
        colour = _COLOURS[int(c) % len(_COLOURS)]
        x1, y1, x2, y2 = (float(v) * scale for v in box)
        pen.rectangle([x1, y1, x2 - 1, y2 - 1], outline=colour, width=max(1, scale // 2))
        name = class_names[int(c)] if class_names is not None else str(int(c))
        pen.text((x1 + 2, max(0.0, y1 - 11)), f"{name} {float(score):.2f}", fill=colour)
    return pic


def save_png(pic: Image.Image, path) -> None:
    """Write ``pic`` to ``path`` atomically (a temporary file in the same folder, then renamed)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=folder)
    os.close(fd)
    try:
        pic.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_grid(path, images, detections, class_names=None, *, scale: int = 4, columns: int = 4) -> None:
    """Images with their detections ((boxes, scores, classes) each) side by side in one PNG."""
    pics = [draw(x, *d, class_names, scale=scale) for x, d in zip(images, detections, strict=True)]
    if not pics:
        return
    w, h = pics[0].size
    rows = -(-len(pics) // columns)
    sheet = Image.new("RGB", (min(columns, len(pics)) * (w + 4), rows * (h + 4)), (40, 40, 40))
    for i, pic in enumerate(pics):
        sheet.paste(pic, ((i % columns) * (w + 4), (i // columns) * (h + 4)))
    save_png(sheet, path)
