"""The run directory refuses what would damage it: a second writer, a file in its place, a damaged checkpoint,
a resume that changes what is trained; and the loop's messages say what is true."""

import json
import multiprocessing
import os

import jax.numpy as jnp
import pytest
from test_train import blobs, cfg, mlp_task

from funcdl.training import checkpoint as ckpt
from funcdl.training.config import RESUMABLE, TrainConfig
from funcdl.training.loop import train
from funcdl.training.rundir import RunDir, RunDirectoryBusy
from funcdl.training.task import Task


def _hold_lock(path, ready, release):
    with RunDir(path).lock():
        ready.set()
        release.wait(30)


def test_a_second_writer_is_refused_and_the_folder_left_alone(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(tmp_path, ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(RunDirectoryBusy, match=f"pid {holder.pid}.*another --out"):
            train(mlp_task(), blobs(), cfg(epochs=1), tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]     # nothing written by the refused run
    finally:
        release.set()
        holder.join(30)
    train(mlp_task(), blobs(), cfg(epochs=1), tmp_path)                    # free again once the first is done
    assert (tmp_path / "checkpoint.npz").is_file()


def test_out_naming_a_file_is_refused(tmp_path):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    with pytest.raises(ValueError, match="is a file, not a directory"):
        train(mlp_task(), blobs(), cfg(epochs=1), target)
    assert target.read_text() == "not a folder"


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_a_damaged_checkpoint_gives_one_clear_error(tmp_path, damage):
    train(mlp_task(), blobs(), cfg(epochs=1), tmp_path)
    path = tmp_path / "checkpoint.npz"
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": os.urandom(200), "empty": b""}[damage])
    with pytest.raises(ckpt.CorruptCheckpoint, match="damaged or not a funcdl checkpoint.*without --resume"):
        train(mlp_task(), blobs(), cfg(epochs=2), tmp_path, resume=True)


def test_resume_refuses_options_that_cannot_change_and_records_those_that_can(tmp_path):
    info = {"model": "mlp", "data": "blobs", "model_options": {"hidden": [16]}}
    train(mlp_task(), blobs(), cfg(epochs=3, stop_after=7), tmp_path, run_info=info)
    before = (tmp_path / "metrics.jsonl").read_text()
    for change in (dict(lr=5e-2), dict(optimizer="sgd"), dict(batch_size=16), dict(seed=1)):
        with pytest.raises(ValueError, match=f"--resume cannot change {next(iter(change))}"):
            train(mlp_task(), blobs(), cfg(epochs=3, **change), tmp_path, resume=True, run_info=info)
    with pytest.raises(ValueError, match="cannot change model_options"):
        train(mlp_task(), blobs(), cfg(epochs=3), tmp_path, resume=True,
              run_info={**info, "model_options": {"hidden": [32]}})
    assert (tmp_path / "metrics.jsonl").read_text() == before                # the refusals wrote nothing
    r = train(mlp_task(), blobs(), cfg(epochs=4, eval_every=7), tmp_path, resume=True, run_info=info)
    assert r.summary["steps"] == 28
    resumes = json.loads((tmp_path / "config.json").read_text())["resumes"]
    assert resumes == [{"step": 7, "changed": {"epochs": [3, 4], "eval_every": [None, 7], "stop_after": [7, None]}}]
    assert {"epochs", "steps", "patience"} <= RESUMABLE and "lr" not in RESUMABLE


def test_nan_before_any_checkpoint_says_none_was_written(tmp_path):
    def init(key):
        return {"w": jnp.zeros((6, 3))}, {}

    def loss(params, state, batch, key, train):
        value = jnp.sum(batch["x"] @ params["w"]) * jnp.nan
        return value, (state, {"loss": value})

    r = train(Task(init, loss, "classification"), blobs(), cfg(epochs=1), tmp_path)
    assert r.summary["stopped"] == "diverged"
    assert "No checkpoint had been written yet" in r.summary["error"] and "is kept" not in r.summary["error"]
    assert not (tmp_path / "checkpoint.npz").exists()


@pytest.mark.parametrize("option, value, message", [
    ("clip_norm", -1.0, "clip_norm must be > 0"), ("clip_norm", 0.0, "clip_norm must be > 0"),
    ("patience", 0, "patience must be >= 1"), ("lr", -1e-3, "lr must be > 0"), ("log_every", 0, ">= 1"),
    ("eval_batches", 0, ">= 1"), ("warmup_steps", -1, "warmup_steps must be >= 0"),
])
def test_options_that_cannot_train_are_refused(option, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{option: value})


def test_clipping_is_optims_clip_by_global_norm():
    from funcdl import optim
    from funcdl.training.step import make_optimizer

    opt, _ = make_optimizer(TrainConfig(optimizer="sgd", lr=1.0, clip_norm=0.5), 10)
    grads = {"w": jnp.full((4,), 3.0)}                                     # norm 6 -> scaled to 0.5
    updates, _ = opt.update(grads, opt.init(grads), grads)
    assert float(optim.global_norm(updates)) == pytest.approx(0.5, rel=1e-5)
