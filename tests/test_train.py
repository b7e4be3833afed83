"""The training loop on tiny synthetic data: scan vs Python loop, manual vs autodiff gradients, bit-for-bit
resume, NaN handling, early stopping, freezing, init-from, checkpoints, plots, language windows."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from funcdl.models import as_task, mlp

import funcdl as fd
from funcdl.data import Dataset
from funcdl.training import checkpoint as ckpt
from funcdl.training.loop import TrainConfig, freeze_mask, train
from funcdl.training.task import Task


def blobs(n=240, d=6, classes=3, seed=0, noise=1.0, val_labels="true"):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, d)) * 2

    def make(m):
        y = rng.integers(0, classes, m)
        return {"x": (centers[y] + noise * rng.normal(size=(m, d))).astype(np.float32), "y": y.astype(np.int32)}

    val = make(n // 4)
    if val_labels == "random":
        val["y"] = rng.integers(0, classes, len(val["y"])).astype(np.int32)
    return Dataset("blobs", {"train": make(n), "val": val, "test": make(n // 4)}, "classification", num_classes=3)


def mlp_task(hidden=(16,), dropout=0.0, d=6):
    return as_task(mlp.Config(sizes=(d, *hidden, 3), dropout=dropout))


def cfg(**kw):
    base = dict(epochs=3, batch_size=32, optimizer="adam", lr=1e-2, progress=False, plots=False)
    return TrainConfig(**{**base, **kw})


def leaves_equal(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b),
                                                                              strict=True))


def test_trains_and_reports(tmp_path):
    data = blobs()
    r = train(mlp_task(), data, cfg(epochs=5, plots=True), tmp_path, run_info={"model": "mlp", "data": "blobs"})
    s = r.summary
    for key in ("model", "data", "grad", "steps", "wall_seconds", "steps_per_second", "params", "test_accuracy"):
        assert key in s, key
    assert s["steps"] == 5 * (240 // 32) and s["params"] == 6 * 16 + 16 + 16 * 3 + 3
    assert s["test_accuracy"] > 0.8
    train_losses = [h["loss"] for h in r.history if h["split"] == "train"]
    assert train_losses[-1] < train_losses[0]
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {x["split"] for x in lines} == {"train", "val"}
    assert sum(x["split"] == "val" for x in lines) == 5            # one evaluation per epoch
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == s["steps"]
    for png in ("loss.png", "accuracy.png", "lr.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    _, meta = ckpt.load_arrays(tmp_path / "checkpoint.npz")
    assert meta["step"] == s["steps"]


def test_scan_equals_python_loop():
    data = blobs()
    a = train(mlp_task(dropout=0.2), data, cfg(scan=True))
    b = train(mlp_task(dropout=0.2), data, cfg(scan=False))
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    la = [h["loss"] for h in a.history if h["split"] == "train"]
    lb = [h["loss"] for h in b.history if h["split"] == "train"]
    np.testing.assert_allclose(la, lb, rtol=1e-5)


def test_manual_and_autodiff_give_the_same_curve():
    data = blobs()
    a = train(mlp_task(hidden=(16, 16)), data, cfg(grad="manual", log_every=1))
    b = train(mlp_task(hidden=(16, 16)), data, cfg(grad="autodiff", log_every=1))
    la = np.array([h["loss"] for h in a.history if h["split"] == "train"])
    lb = np.array([h["loss"] for h in b.history if h["split"] == "train"])
    assert len(la) == 3 * 7
    np.testing.assert_allclose(la, lb, rtol=2e-5)
    assert a.summary["grad"] == "manual" and b.summary["grad"] == "autodiff"


@pytest.mark.slow
@pytest.mark.parametrize("scan", [True, False])
def test_resume_is_bit_for_bit(tmp_path, scan):
    data = blobs()
    config = dict(epochs=3, scan=scan)
    full = train(mlp_task(dropout=0.1), data, cfg(**config), tmp_path / "full")
    # stop in the middle of the second epoch (7 steps per epoch), then resume
    part = train(mlp_task(dropout=0.1), data, cfg(**config, stop_after=10), tmp_path / "part")
    assert part.summary["stopped"] == "stopped" and part.summary["steps"] == 10
    assert ckpt.load_meta(tmp_path / "part")["step"] == 10
    done = train(mlp_task(dropout=0.1), data, cfg(**config), tmp_path / "part", resume=True)
    assert done.summary["steps"] == full.summary["steps"] == 21
    assert leaves_equal(done.params, full.params)
    assert leaves_equal(done.opt_state, full.opt_state)
    steps = [json.loads(x)["step"] for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)                               # no duplicated records after the resume


def test_resume_needs_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        train(mlp_task(), blobs(), cfg(), tmp_path, resume=True)


def test_nan_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    # d loss / dt = 1, so SGD with lr=1 moves t to -k after k steps; the loss is NaN once t < -9.5 (step 11)
    def init(key):
        return {"w": jnp.zeros((6, 3)), "t": jnp.zeros(())}, {}

    def loss(params, state, batch, key, train):
        logits = batch["x"] @ params["w"]
        ce = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), batch["y"][:, None], 1))
        value = ce + params["t"] + jnp.where(params["t"] < -9.5, jnp.nan, 0.0)   # t: 0, -1, -2, ...
        return value, (state, {"loss": value})

    task = Task(init, loss, "classification")
    r = train(task, blobs(), cfg(optimizer="sgd", lr=1.0, epochs=3), tmp_path)   # 7 steps/epoch
    assert r.summary["stopped"] == "diverged"
    assert "step 11" in r.summary["error"] and "nan" in r.summary["error"]
    assert "step 11" in capsys.readouterr().out
    meta = ckpt.load_meta(tmp_path)
    assert meta["step"] == 7                                       # end of the last good epoch
    arrays, _ = ckpt.load_arrays(tmp_path / "checkpoint.npz")
    assert np.isfinite(arrays["params/['w']"]).all() and float(arrays["params/['t']"]) == -7.0


def test_early_stopping_restores_the_best(tmp_path):
    data = blobs(n=96, noise=3.0, val_labels="random")
    r = train(mlp_task(hidden=(64,)), data, cfg(epochs=40, patience=2, lr=3e-2), tmp_path)
    assert r.summary["stopped"] == "early_stopping"
    assert r.summary["steps"] < 40 * 3
    best = r.summary.get("best_step")
    vals = [h for h in r.history if h["split"] == "val"]
    best_val = min(vals, key=lambda h: h["loss"])
    assert best in (None, best_val["step"])
    assert abs(r.summary["val_loss"] - best_val["loss"]) < 1e-5
    assert (tmp_path / "best.npz").is_file()


def test_freeze_and_init_from(tmp_path):
    data = blobs()
    first = train(mlp_task(), data, cfg(epochs=1), tmp_path / "a")
    init_params, _ = mlp_task().init(jax.random.PRNGKey(0))
    frozen = train(mlp_task(), data, cfg(epochs=1, freeze=r"^layers/0/", init_from=str(tmp_path / "a")))
    l0_first, l1_first = first.params["layers"]
    l0, l1 = frozen.params["layers"]
    assert leaves_equal(l0, l0_first)                              # loaded, then frozen
    assert not leaves_equal(l1, l1_first)                          # trained further
    assert frozen.summary["frozen_params"] == 6 * 16 + 16
    assert not leaves_equal(l0, init_params["layers"][0])
    mask = freeze_mask(init_params, r"/b$")
    assert [bool(m) for m in jax.tree.leaves(mask)] == [True, False, True, False]
    with pytest.raises(ValueError, match="matches no parameter"):
        train(mlp_task(), data, cfg(freeze="nothing-like-this"))


def test_schedule_and_clipping():
    r = train(mlp_task(), blobs(), cfg(epochs=2, schedule="cosine", warmup_steps=3, log_every=1, clip_norm=0.5))
    lrs = [h["lr"] for h in r.history if h["split"] == "train"]
    assert lrs[0] < lrs[2] and lrs[-1] < 0.2 * max(lrs)                # warm-up, then cosine decay
    assert max(lrs) <= 1e-2 + 1e-9
    with pytest.raises(ValueError, match="unknown schedule"):
        train(mlp_task(), blobs(), cfg(schedule="zigzag"))


def test_checkpoint_roundtrip_and_mismatch(tmp_path):
    tree = {"a": jnp.arange(3.0), "b": [jnp.ones((2, 2), jnp.int32), None]}
    ckpt.save(tmp_path / "c.npz", {"params": tree}, {"step": 4})
    restored, meta = ckpt.restore(tmp_path / "c.npz", {"params": tree})
    assert meta == {"step": 4} and leaves_equal(restored["params"], tree)
    assert restored["params"]["b"][0].dtype == jnp.int32 and restored["params"]["b"][1] is None
    assert not list(tmp_path.glob("*.tmp-*"))
    with pytest.raises(ValueError, match=r"shape \(3,\).*\(4,\)"):
        ckpt.restore(tmp_path / "c.npz", {"params": {"a": jnp.zeros(4), "b": tree["b"]}})
    with pytest.raises(ValueError, match="no entry"):
        ckpt.restore(tmp_path / "c.npz", {"params": {"z": jnp.zeros(3)}})


def bigram_task(vocab):
    def init(key):
        return {"table": 0.01 * jax.random.normal(key, (vocab, vocab))}, {}

    def loss(params, state, batch, key, train):
        logits = params["table"][batch["x"]]
        value = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), batch["y"][..., None], -1))
        return value, (state, {"loss": value})

    return Task(init, loss, "language")


def test_language_windows_train(tmp_path):
    from funcdl.data import text_dataset

    data = text_dataset("abc", "abcabcabd" * 200)
    cfg_ = cfg(steps=60, seq_len=8, batch_size=8, eval_every=20, lr=0.1, eval_batches=3)
    r = train(bigram_task(data.vocab_size), data, cfg_, tmp_path)
    assert r.summary["steps"] == 60 and "test_accuracy" not in r.summary
    assert r.summary["val_loss"] < 0.5 * np.log(data.vocab_size)
    assert sum(h["split"] == "val" for h in r.history) == 3
    b = train(bigram_task(data.vocab_size), data, TrainConfig(**{**cfg_.asdict(), "scan": False}))
    np.testing.assert_allclose(b.summary["val_loss"], r.summary["val_loss"], rtol=1e-5)


def test_bad_config_is_reported():
    with pytest.raises(ValueError, match="grad"):
        TrainConfig(grad="numeric")
    with pytest.raises(ValueError, match="batch size 1000"):
        train(mlp_task(), blobs(), cfg(batch_size=1000))
    with pytest.raises(ValueError, match="unknown optimizer"):
        train(mlp_task(), blobs(), cfg(optimizer="nope"))


def test_scan_is_slow_spots_non_canonical_convolutions_on_cpu():
    from funcdl.training.loop import scan_is_slow

    x = jnp.ones((2, 8, 8, 6))
    w = jnp.ones((3, 3, 6, 4))
    conv_loss = lambda w: jnp.sum(fd.conv2d(x, w, padding=1, stride=2) ** 2)  # noqa: E731
    on_cpu = jax.default_backend() == "cpu"
    # the hand-derived rules call every convolution in XLA's canonical order; jax's transpose rules do not
    assert scan_is_slow(jax.value_and_grad(conv_loss), w) is False
    assert scan_is_slow(jax.value_and_grad(fd.autodiff(conv_loss)), w) is on_cpu
    grouped = lambda w: jnp.sum(fd.conv2d(x, w, padding=1, groups=2) ** 2)  # noqa: E731
    assert scan_is_slow(jax.grad(grouped), jnp.ones((3, 3, 3, 4))) is False
    dense_loss = jax.value_and_grad(lambda w: jnp.sum(fd.dense(x.reshape(2, -1), w)))
    assert scan_is_slow(dense_loss, jnp.ones((384, 3))) is False


def test_compiler_options_ask_for_ynnpack_only_for_convolutions():
    from funcdl.core import xla

    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 10, 10, 32)), jnp.float32)
    w = jnp.asarray(np.random.default_rng(1).normal(size=(3, 3, 32, 32)) * 0.1, jnp.float32)

    def step(w):
        return jax.value_and_grad(lambda w: jnp.sum(jnp.tanh(fd.conv2d(x, w, padding=1))))(w)

    dense = jax.grad(lambda w: jnp.sum(fd.dense(x.reshape(4, -1), w)))
    assert xla.compiler_options(dense, jnp.ones((3200, 3))) is None
    assert xla.compiler_options(step, w, ynn=False) is None
    opts = xla.compiler_options(step, w)
    if not xla.ynn_available():
        assert opts is None
        pytest.skip("this jaxlib has no YNNPACK option (or the backend is not a CPU)")
    assert opts == xla.CONV_OPTIONS
    # the same step compiled both ways gives the same numbers
    (v1, g1), (v2, g2) = jax.jit(step, compiler_options=opts)(w), jax.jit(step)(w)
    np.testing.assert_allclose(v1, v2, rtol=1e-5)
    np.testing.assert_allclose(g1, g2, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(g2))))


def test_eval_limit_evaluates_the_first_examples_only(tmp_path):
    """eval_limit=N: val_* and test_* are the metrics of the first N examples, what a run on those N alone reports;
    the summary and config.json say so. Language data (windows) are refused with the option they have instead."""
    from funcdl.data.base import Dataset

    data = blobs()
    first = Dataset(data.name, {k: v if k == "train" else {a: x[:7] for a, x in v.items()}
                                for k, v in data.splits.items()}, data.kind, data.num_classes)
    limited = train(mlp_task(), data, cfg(epochs=1, eval_limit=7), tmp_path / "a")
    alone = train(mlp_task(), first, cfg(epochs=1))
    assert limited.summary["eval_limit"] == 7
    for k in ("val_loss", "val_accuracy", "test_loss", "test_accuracy"):
        assert limited.summary[k] == alone.summary[k], k
    assert json.loads((tmp_path / "a" / "config.json").read_text())["data_size"] == {"train": 240, "val": 7,
                                                                                       "test": 7}
    words = Dataset("w", {"train": {"tokens": np.arange(200, dtype=np.int32) % 5}}, "language", vocab_size=5)
    with pytest.raises(ValueError, match="eval_batches"):
        words.eval_head(7)
