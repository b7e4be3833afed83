"""Detection: box arithmetic, IoU/NMS/mAP against pycocotools and brute force, the generated data sets, the
detectors' targets and gradients, and ``funcdl detect`` on a tiny run."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from funcdl.models import MODELS, yolo

import funcdl as fd
from funcdl.commands.cli import main
from funcdl.data import detection as ddata
from funcdl.detection import boxes as B
from funcdl.detection import evaluate, nms_fixed, nms_numpy
from funcdl.nn.boxes import giou_loss

try:
    import pycocotools  # noqa: F401

    HAVE_COCO = True
except ImportError:
    HAVE_COCO = False


def random_boxes(rng, n, size=64.0, lo=4.0, hi=24.0):
    xy = rng.uniform(0, size - hi, (n, 2))
    wh = rng.uniform(lo, hi, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


# -- boxes ---------------------------------------------------------------------------------------------------


def test_formats_and_encodings_round_trip():
    rng = np.random.default_rng(0)
    b = random_boxes(rng, 12)
    np.testing.assert_allclose(B.cxcywh_to_xyxy(B.xyxy_to_cxcywh(b)), b, atol=1e-12)
    rows, cols = np.floor(B.xyxy_to_cxcywh(b)[:, 1] / 8), np.floor(B.xyxy_to_cxcywh(b)[:, 0] / 8)
    t = B.encode_grid(b, rows, cols, 8.0, 20.0)
    assert np.all((t[:, :2] >= 0) & (t[:, :2] < 1))          # the centre lies in its own cell
    np.testing.assert_allclose(B.decode_grid(t, rows, cols, 8.0, 20.0), b, atol=1e-9)
    anchors = random_boxes(rng, 12)
    np.testing.assert_allclose(B.decode_anchor(B.encode_anchor(b, anchors), anchors), b, atol=1e-9)
    a = B.grid_anchors(2, 3, 8.0, [(4, 6)])
    assert a.shape == (6, 4) and np.allclose(a[4], [8 + 4 - 2, 8 + 4 - 3, 8 + 4 + 2, 8 + 4 + 3])  # row 1, col 1


def test_iou_matches_pycocotools_and_is_one_on_itself():
    mask = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(1)
    a, b = random_boxes(rng, 15), random_boxes(rng, 9)
    ours = B.iou_matrix(a, b)
    xywh = lambda x: np.concatenate([x[:, :2], x[:, 2:] - x[:, :2]], axis=1)   # noqa: E731
    theirs = mask.iou(xywh(a), xywh(b), np.zeros(len(b), np.uint8))
    np.testing.assert_allclose(ours, theirs, atol=1e-12)
    assert ours.max() > 0.05 and ours.min() == 0.0            # overlapping and disjoint pairs both occur
    np.testing.assert_allclose(np.diag(B.iou_matrix(a, a)), 1.0)


def test_giou_matrix_matches_the_loss_primitive():
    rng = np.random.default_rng(2)
    a, b = random_boxes(rng, 10), random_boxes(rng, 10)
    g = B.giou_matrix(a, b)
    loss = np.asarray(giou_loss(jnp.asarray(a), jnp.asarray(b)))
    np.testing.assert_allclose(loss, 1 - np.diag(g), rtol=1e-5, atol=1e-5)
    assert np.all(g <= B.iou_matrix(a, b) + 1e-12) and g.min() < 0      # GIoU <= IoU, negative when far apart
    np.testing.assert_allclose(np.asarray(giou_loss(jnp.asarray(a), jnp.asarray(a))), 0.0, atol=1e-6)


def test_giou_loss_pulls_disjoint_boxes_together():
    p = jnp.array([[0.0, 0.0, 2.0, 2.0]])
    t = jnp.array([[5.0, 0.0, 7.0, 2.0]])
    g = jax.jit(jax.grad(lambda q: giou_loss(q, t).sum()))(p)
    assert float(g[0, 2]) < 0 and float(g[0, 0] + g[0, 2]) < 0    # the right edge and the whole box move right
    with pytest.raises(ValueError, match="giou_loss"):
        giou_loss(jnp.zeros((3, 4)), jnp.zeros((3, 5)))


# -- NMS -----------------------------------------------------------------------------------------------------


def brute_nms(boxes, scores, classes, thr):
    """The definition, one box at a time: kept if no kept box of its class overlaps it more than thr."""
    kept = []
    for i in sorted(range(len(boxes)), key=lambda i: -scores[i]):
        if all(classes[k] != classes[i] or B.iou_matrix(boxes[k:k + 1], boxes[i:i + 1])[0, 0] <= thr for k in kept):
            kept.append(i)
    return kept


def test_nms_numpy_fixed_and_definition_agree():
    rng = np.random.default_rng(3)
    boxes = random_boxes(rng, 40, size=40.0)
    scores = rng.uniform(0, 1, 40)
    classes = rng.integers(0, 3, 40)
    want = brute_nms(boxes, scores, classes, 0.4)
    assert list(nms_numpy(boxes, scores, classes, 0.4)) == want
    assert 5 < len(want) < 40                                   # something was suppressed, something kept
    run = jax.jit(lambda b, s, c: nms_fixed(b, s, c, iou_threshold=0.4, max_out=45))
    b, s, c, valid = (np.asarray(a) for a in run(jnp.asarray(boxes, jnp.float32), jnp.asarray(scores, jnp.float32),
                                                 jnp.asarray(classes)))
    assert valid.sum() == len(want) and b.shape == (45, 4)
    np.testing.assert_allclose(s[valid], scores[want], rtol=1e-6)
    np.testing.assert_array_equal(c[valid], classes[want])
    # class-wise: the same boxes under one class keep fewer
    assert len(nms_numpy(boxes, scores, None, 0.4)) < len(want)


# -- mAP -----------------------------------------------------------------------------------------------------


def scenes(rng, n_images=25, n_classes=3):
    gts, preds = [], []
    for _ in range(n_images):
        g = random_boxes(rng, int(rng.integers(1, 5)))
        gl = rng.integers(0, n_classes, len(g))
        keep = rng.uniform(size=len(g)) < 0.85                  # missed boxes
        jitter = g[keep] + rng.normal(0, 2.5, (int(keep.sum()), 4))
        jitter[:, 2:] = np.maximum(jitter[:, 2:], jitter[:, :2] + 1)
        fp = random_boxes(rng, int(rng.integers(0, 4)))         # false positives
        pb = np.concatenate([jitter, fp])
        k = int(keep.sum())
        right = np.where(rng.uniform(size=k) < 0.9, gl[keep], rng.integers(0, n_classes, k))   # some wrong classes
        pl = np.concatenate([right, rng.integers(0, n_classes, len(fp))])
        gts.append((g, gl))
        preds.append((pb, rng.uniform(0, 1, len(pb)), pl))
    return gts, preds


def coco_map(gts, preds, n_classes):
    """(mAP@0.5:0.95, mAP@0.5) by pycocotools' COCOeval."""
    coco_mod = pytest.importorskip("pycocotools.coco")
    from pycocotools.cocoeval import COCOeval

    images, anns, dets = [], [], []
    for i, ((g, gl), (pb, ps, pl)) in enumerate(zip(gts, preds, strict=True)):
        images.append({"id": i, "width": 64, "height": 64})
        for box, c in zip(g, gl, strict=True):
            w, h = box[2] - box[0], box[3] - box[1]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c), "bbox": [*box[:2], w, h],
                         "area": w * h, "iscrowd": 0})
        for box, s, c in zip(pb, ps, pl, strict=True):
            dets.append({"image_id": i, "category_id": int(c), "score": float(s),
                         "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]})
    gt = coco_mod.COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": c} for c in range(n_classes)]}
    gt.createIndex()
    ev = COCOeval(gt, gt.loadRes(dets), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev.stats[0], ev.stats[1]


def test_map_matches_pycocotools():
    pytest.importorskip("pycocotools")
    gts, preds = scenes(np.random.default_rng(4))
    ours = evaluate(preds, gts, 3)
    theirs = coco_map(gts, preds, 3)
    assert 0.2 < ours["map50"] < 0.99 and ours["map"] < ours["map50"]
    assert ours["map"] == pytest.approx(theirs[0], abs=1e-9)
    assert ours["map50"] == pytest.approx(theirs[1], abs=1e-9)


def test_perfect_predictions_give_one():
    gts, _ = scenes(np.random.default_rng(5))
    perfect = [(g, np.linspace(1, 0.5, len(g)), gl) for g, gl in gts]
    result = evaluate(perfect, gts, 3)
    assert result["map50"] == 1.0 and result["map"] == 1.0 and all(a == 1.0 for a in result["ap50"])
    if HAVE_COCO:
        assert coco_map(gts, perfect, 3) == pytest.approx((1.0, 1.0))
    empty = evaluate([(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int)) for _ in gts], gts, 3)
    assert empty["map50"] == 0.0
    with pytest.raises(ValueError, match="images"):
        evaluate(perfect[:-1], gts, 3)


# -- data ----------------------------------------------------------------------------------------------------


def test_shapes_detection_scenes():
    ds = fd.data.load("shapes_detection", n_train=12, n_val=0, n_test=4, size=24)
    s = ds.splits["train"]
    assert ds.kind == "detection" and s["x"].shape == (12, 24, 24, 3) and s["boxes"].shape == (12, 4, 4)
    n = s["mask"].sum(axis=1)
    assert n.min() >= 1 and n.max() <= 3
    m = s["mask"] > 0
    b = s["boxes"][m]
    assert np.all(b[:, 2:] > b[:, :2]) and b.min() >= 0 and b.max() <= 24
    for i in range(12):                                          # pixels lie inside the union of the boxes
        inside = np.zeros((24, 24), bool)
        for x1, y1, x2, y2 in s["boxes"][i][m[i]].astype(int):
            inside[y1:y2, x1:x2] = True
        assert not np.any(s["x"][i].max(axis=-1)[~inside] > 0)
    assert np.array_equal(fd.data.load("shapes_detection", n_train=12, n_val=0, n_test=0, size=24).splits["train"]["x"],
                          s["x"])                                # generated by seed


def test_mnist_detection_scenes(shared_data):
    if not (shared_data / "mnist").is_dir():
        pytest.skip("no MNIST files")
    ds = fd.data.load("mnist_detection", data_dir=shared_data / "mnist", n_train=10, n_val=0, n_test=10)
    s = ds.splits["test"]
    n = s["mask"].sum(axis=1)
    assert s["x"].shape == (10, 64, 64, 1) and n.min() >= 2 and n.max() <= 4
    assert s["labels"][s["mask"] > 0].max() <= 9 and s["x"].max() <= 1.0
    iou = [B.iou_matrix(s["boxes"][i][s["mask"][i] > 0], s["boxes"][i][s["mask"][i] > 0]) for i in range(10)]
    assert max((m - np.eye(len(m))).max() for m in iou) <= 0.2 + 1e-6     # objects overlap little


# -- the detectors -------------------------------------------------------------------------------------------


def test_yolo_targets_pick_the_centre_cell():
    config = yolo.Config(image=(32, 32, 1), num_classes=3, widths=(2, 4, 4))      # 8x8 grid of 4-pixel cells
    batch = {"boxes": jnp.array([[[9.0, 1.0, 15.0, 11.0], [0, 0, 0, 0]]]), "labels": jnp.array([[2, 0]]),
             "mask": jnp.array([[1.0, 0.0]])}
    pos, box, cls = jax.jit(yolo.targets, static_argnums=1)(batch, config)
    assert int(pos.sum()) == 1 and int(jnp.argmax(pos[0])) == 1 * 8 + 3        # centre (12, 6): row 1, col 3
    assert int(cls[0, 11]) == 2 and np.allclose(box[0, 11], [9, 1, 15, 11])
    ssd = yolo.Config(image=(32, 32, 1), num_classes=3, widths=(2, 4, 4), head="ssd")
    pos, box, cls = jax.jit(yolo.targets, static_argnums=1)(batch, ssd)
    best = int(jnp.argmax(B.iou_matrix(batch["boxes"][0, :1], jnp.asarray(ssd.anchor_boxes))[0]))
    assert bool(pos[0, best]) and int(cls[0, best]) == 2 and int(pos.sum()) >= 1


@pytest.mark.slow
def test_detector_gradient_hand_equals_autodiff():
    """The yolo model's whole gradient (tests/test_models.py checks both detectors at their small size)."""
    entry = MODELS["yolo"]
    task = entry.build(entry.small_data, **entry.small)
    batch = {k: jnp.asarray(v) for k, v in yolo.fake_batch(entry.small_data).items()}
    params, state = task.init(jax.random.key(0))

    def f(p):
        return task.loss(p, state, batch, None, True)

    def both(p):          # one compiled program for both gradients, with XLA's cheaper CPU code generation
        return jax.value_and_grad(f, has_aux=True)(p), jax.grad(fd.autodiff(f), has_aux=True)(p)[0]

    fast = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
    ((value, (_, metrics)), g_hand), g_auto = jax.jit(both).lower(params).compile(fast)(params)
    assert np.isfinite(float(value)) and set(metrics) >= {"box_loss", "obj_loss", "cls_loss"}
    for a, b in zip(jax.tree.leaves(g_hand), jax.tree.leaves(g_auto), strict=True):
        assert float(jnp.max(jnp.abs(a - b))) <= 1e-4 * (1e-6 + float(jnp.max(jnp.abs(b))))
    boxes, scores, classes, valid = task.extras["predict"](params, state, batch["x"])
    assert boxes.shape == (4, 20, 4) and scores.shape == classes.shape == valid.shape == (4, 20)


# -- funcdl detect -------------------------------------------------------------------------------------------


def test_report_writes_map_and_a_picture(tmp_path):
    ds = fd.data.load("shapes_detection", n_train=2, n_val=0, n_test=6, size=16)
    task = MODELS["yolo"].build(ds.info(), widths=(2, 4, 4))
    params, state = task.init(jax.random.key(0))
    result = task.extras["report"](params, state, None, ds, tmp_path)
    assert 0.0 <= result["test_map"] <= result["test_map50"] <= 1.0
    assert set(result["test_ap50"]) == set(ddata.SHAPE_CLASSES) and (tmp_path / "predictions.png").is_file()


def _tiny_run(path):
    """A run directory as `funcdl train yolo --data shapes_detection --set widths=2,4,4` writes it, untrained."""
    from funcdl.training import checkpoint

    task = MODELS["yolo"].build(fd.data.load("shapes_detection", n_train=2, n_val=0, n_test=0).info(),
                                widths=(2, 4, 4))
    params, state = task.init(jax.random.key(0))
    path.mkdir()
    checkpoint.save(path / "checkpoint.npz", {"params": params, "state": state})
    (path / "config.json").write_text(json.dumps({"model": "yolo", "data": "shapes_detection",
                                                  "model_options": {"widths": [2, 4, 4]}, "train": {}}))


@pytest.mark.slow
def test_detect_draws_boxes_on_a_png(tmp_path, capsys):
    from PIL import Image

    run = tmp_path / "run"
    _tiny_run(run)
    scene = ddata.shape_scenes(np.random.default_rng(9), 1)["x"][0]
    image = tmp_path / "scene.png"
    Image.fromarray((scene * 255).astype(np.uint8)).save(image)
    out = tmp_path / "boxes.png"
    assert main(["detect", str(run), "--image", str(image), "--out", str(out), "--score-threshold", "0"]) == 0
    printed = capsys.readouterr().out
    drawn = np.asarray(Image.open(out).convert("RGB"))
    assert drawn.shape == (256, 256, 3) and "20 detections drawn" in printed      # max_out boxes at threshold 0
    plain = np.asarray(Image.open(image).convert("RGB").resize((256, 256), Image.NEAREST))
    assert np.any(drawn != plain)                                # boxes were drawn
    assert main(["detect", str(run), "--image", str(tmp_path / "missing.png"), "--out", str(out)]) == 2
    assert "no image at" in capsys.readouterr().err


def test_detect_refuses_a_run_that_is_not_a_detector(tmp_path, capsys):
    run = tmp_path / "mlp"
    run.mkdir()
    (run / "checkpoint.npz").write_bytes(b"")
    (run / "config.json").write_text(json.dumps({"model": "mlp", "data": "mnist1d"}))
    assert main(["detect", str(run), "--image", str(tmp_path / "x.png"), "--out", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err
    assert "not a detector" in err and len(err.strip().splitlines()) == 1
