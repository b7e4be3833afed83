"""``funcdl detect RUN --image PNG --out PNG``: a trained detector's boxes drawn on an image.

RUN is a run directory of ``funcdl train yolo`` or ``funcdl train ssd`` on a detection data set (or its
checkpoint.npz). The image (PNG or JPEG, any size) is converted to the run's channels and resized to its input
size; the boxes are mapped back and drawn on the original image, enlarged to at least 256 pixels, each labelled
with its class and score. Detections come from the model's class-wise NMS (``--iou-threshold``) and are kept
from ``--score-threshold`` up; one line per detection is printed. ``--out`` is written atomically.
"""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("detect", help="draw a trained detector's boxes (class, score) on an image",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="run directory written by `funcdl train yolo|ssd` (or its checkpoint.npz)")
    p.add_argument("--image", required=True, help="input image (PNG or JPEG)")
    p.add_argument("--out", required=True, help="output PNG with the boxes drawn")
    p.add_argument("--score-threshold", type=float, default=0.3, help="smallest score drawn (default 0.3)")
    p.add_argument("--iou-threshold", type=float, default=None,
                   help="class-wise NMS overlap above which the weaker box is dropped (default: the run's, 0.5)")
    p.add_argument("--data-dir", help="folder with the data set's files (default: the one the run used)")
    p.set_defaults(func=run)


def load_detector(path: str, data_dir: str | None = None, iou_threshold: float | None = None) -> dict:
    """A detector run rebuilt without its data: ``predict(x)`` (x NHWC in [0, 1]) -> (boxes, scores, classes,
    valid), the ``image`` shape it takes and the ``classes`` names. Refuses a run that is not a detector."""
    import dataclasses
    import functools

    import jax

    import funcdl.data as data
    from funcdl import models
    from funcdl.training import checkpoint

    from .sample import _locate
    from .train import build_task, read_run_config

    ckpt, config_path = _locate(path)
    cfg = read_run_config(config_path)
    kind = data.get_dataset(cfg["data"]).kind if not str(cfg["data"]).startswith(("text:", "folder:")) else "other"
    if kind != "detection":
        raise ValueError(f"detect: {path} is a {cfg['model']} run on {cfg['data']!r}, not a detector; train one "
                         "with `funcdl train yolo --data mnist_detection` (or ssd, shapes_detection)")
    # the model needs the data set's shapes and classes only: a few generated scenes give them
    ds = data.load(cfg["data"], data_dir=data_dir or cfg.get("data_dir"), n_train=2, n_val=0, n_test=0)
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.get("model_options", {}).items()}
    task = build_task(models.get_model(cfg["model"]), ds.info(), options, None)
    config = task.extras["config"]
    if iou_threshold is not None:
        if not 0.0 <= iou_threshold <= 1.0:
            raise ValueError(f"detect: --iou-threshold must lie in [0, 1], got {iou_threshold}")
        config = dataclasses.replace(config, iou_threshold=float(iou_threshold))
    params, state = task.init(jax.random.PRNGKey(0))
    trees, _ = checkpoint.restore(ckpt, {"params": params, "state": state})
    predict = jax.jit(functools.partial(task.extras["model"].predict, config=config))
    classes = [str(c) for c in (ds.extras or {}).get("classes", range(config.num_classes))]
    return {"predict": lambda x: predict(trees["params"], trees["state"], x), "image": config.image,
            "classes": classes}


def read_image(path: str, channels: int):
    """An image file -> float32 (H, W, channels) in [0, 1]; one-line errors for a missing or unreadable file."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"detect: no image at {path}; give a PNG or JPEG file with --image")
    try:
        with Image.open(p) as img:
            img = img.convert("L" if channels == 1 else "RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"detect: {path} is not an image Pillow can read ({err})") from None
    a = np.asarray(img, np.float32) / 255.0
    return a[..., None] if channels == 1 else a


def detect_image(detector: dict, image, score_threshold: float = 0.3):
    """Detections on one (H, W, C) image in [0, 1] of any size: boxes in its own pixels, scores, classes."""
    import numpy as np
    from PIL import Image

    h, w, c = detector["image"]
    src_h, src_w = image.shape[:2]
    x = image
    if (src_h, src_w) != (h, w):
        pil = Image.fromarray((np.clip(image[..., 0] if c == 1 else image, 0, 1) * 255).astype(np.uint8))
        x = np.asarray(pil.resize((w, h), Image.BILINEAR), np.float32) / 255.0
        x = x[..., None] if c == 1 else x
    boxes, scores, classes, valid = (np.asarray(a)[0] for a in detector["predict"](x[None].astype(np.float32)))
    keep = valid & (scores >= score_threshold)
    boxes = boxes[keep] * np.array([src_w / w, src_h / h, src_w / w, src_h / h])
    return boxes, scores[keep], classes[keep]


def run(args) -> int:
    from funcdl.detection.draw import draw, save_png

    if not 0.0 <= args.score_threshold <= 1.0:
        raise ValueError(f"detect: --score-threshold must lie in [0, 1], got {args.score_threshold}")
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"detect: --out {args.out} must be a .png file")
    if not out.parent.is_dir():
        raise ValueError(f"detect: the folder of --out {args.out} does not exist")
    if Path(args.image).resolve() == out.resolve():
        raise ValueError("detect: --out is the input image; give a new file")
    detector = load_detector(args.run, args.data_dir, args.iou_threshold)
    image = read_image(args.image, detector["image"][2])
    boxes, scores, classes = detect_image(detector, image, args.score_threshold)
    scale = max(1, -(-256 // max(image.shape[:2])))
    save_png(draw(image, boxes, scores, classes, detector["classes"], scale=scale), out)
    for box, score, c in zip(boxes, scores, classes, strict=True):
        print(f"{detector['classes'][int(c)]}\t{float(score):.3f}\t" + " ".join(f"{v:.1f}" for v in box))
    print(f"{len(boxes)} detections drawn into {out}")
    return 0
