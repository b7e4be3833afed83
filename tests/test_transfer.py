"""Transfer learning: class subsets, few labels, a new head over a frozen backbone (``funcdl train`` end to end)."""

import json

import numpy as np
import pytest

from funcdl.commands.cli import main
from funcdl.data.base import Dataset, parse_classes
from funcdl.training import checkpoint as ckpt


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FUNCDL_DATA", str(tmp_path_factory.getbasetemp() / "funcdl-cache"))
    monkeypatch.setenv("FUNCDL_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")


def toy(n=200):
    rng = np.random.default_rng(0)
    y = np.arange(n) % 10
    x = rng.normal(size=(n, 3)).astype(np.float32) + y[:, None]
    return Dataset("toy", {"train": {"x": x, "y": y}, "test": {"x": x[:50], "y": y[:50]}}, num_classes=10,
                   extras={"classes": [f"c{i}" for i in range(10)]})


def test_parse_classes():
    assert parse_classes("0-4", 10) == (0, 1, 2, 3, 4)
    assert parse_classes("5,7,9", 10) == (5, 7, 9)
    assert parse_classes("1-2,8", 10) == (1, 2, 8)
    assert parse_classes((3, 1), 10) == (3, 1)
    assert parse_classes(6, 10) == (6,)
    with pytest.raises(ValueError, match="out of range"):
        parse_classes("8-11", 10)
    with pytest.raises(ValueError, match="distinct"):
        parse_classes("1,1", 10)
    with pytest.raises(ValueError, match="0,1,2 or 0-4"):
        parse_classes("a-b", 10)


def test_subset_relabels_and_keeps_a_share_of_every_class():
    data = toy()
    sub = data.subset(classes="5-9")
    assert sub.num_classes == 5 and sub.extras["original_classes"] == [5, 6, 7, 8, 9]
    assert sub.extras["classes"] == ["c5", "c6", "c7", "c8", "c9"]
    for split in ("train", "test"):
        y_old = data.splits[split]["y"]
        assert sorted(set(sub.splits[split]["y"].tolist())) == [0, 1, 2, 3, 4]
        assert sub.size(split) == int(np.sum(y_old >= 5))
        # the inputs travel with their labels: class c (relabelled c - 5) has inputs near c
        x, y = sub.splits[split]["x"], sub.splits[split]["y"]
        assert np.all(np.abs(x.mean(1) - (y + 5)) < 3)
    few = data.subset(classes=(5, 6, 7, 8, 9), label_fraction=0.1)
    counts = np.bincount(few.splits["train"]["y"])
    assert counts.tolist() == [2, 2, 2, 2, 2]                   # 10% of the 20 examples of each class
    assert few.size("test") == sub.size("test")                 # test is filtered, never subsampled
    tiny = data.subset(label_fraction=0.001)                    # at least one example of every class
    assert np.bincount(tiny.splits["train"]["y"]).tolist() == [1] * 10
    assert data.subset() is data
    with pytest.raises(ValueError, match="label_fraction"):
        data.subset(label_fraction=1.5)


@pytest.mark.slow
def test_pretrain_then_new_head_on_a_frozen_backbone(tmp_path, capsys):
    base = ["train", "mlp", "--data", "mnist1d", "--set", "hidden=32,32", "--quiet"]
    assert main([*base, "--steps", "60", "--set", "classes=0-4", "--out", str(tmp_path / "pre")]) == 0
    pre = json.loads((tmp_path / "pre" / "config.json").read_text())
    assert pre["train"]["classes"] == "0-4"
    rc = main([*base, "--steps", "20", "--set", "classes=5,6,7,8,9", "--set", "label_fraction=0.05",
               "--batch-size", "32", "--init-from", str(tmp_path / "pre"), "--set", "init_exclude=^layers/2/",
               "--freeze", "^layers/[01]/", "--out", str(tmp_path / "fine")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "copied 4 arrays, kept fresh 2" in out                   # backbone copied, the head is new
    old, _ = ckpt.load_arrays(tmp_path / "pre" / "checkpoint.npz")
    new, _ = ckpt.load_arrays(tmp_path / "fine" / "checkpoint.npz")
    for k in old:
        if k.startswith("params/") and "'layers'][2]" not in k:
            np.testing.assert_array_equal(old[k], new[k])         # frozen backbone: bit for bit unchanged
    assert not np.array_equal(old["params/['layers'][2]['w']"], new["params/['layers'][2]['w']"])
    records = [json.loads(x) for x in (tmp_path / "fine" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["split"] == "train"]
    assert losses[-1] < losses[0]                                  # the new head learns on the frozen features


def test_bad_transfer_options_are_named(tmp_path, capsys):
    assert main(["train", "mlp", "--steps", "1", "--set", "classes=3-12", "--quiet"]) == 2
    assert "out of range" in capsys.readouterr().err
    assert main(["train", "mlp", "--steps", "1", "--set", "init_exclude=(", "--quiet"]) == 2
    assert "init_exclude pattern" in capsys.readouterr().err
