"""Issue 21's vision pieces: the 2-D relative logits and the attention-augmented convolution, image folders
(``--data folder:PATH``) from loading to fine-tuning and Grad-CAM, and the fast CIFAR-10 recipe on a stand-in
written in CIFAR-10's own file format."""

from __future__ import annotations

import json
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from funcdl.models import aaconv, cifar_fast

import funcdl as fd
from funcdl.commands.cli import main
from funcdl.data.folder import load_image_folder
from funcdl.nn.relpos import relative_logits_2d

# -- relative logits and the AA block -------------------------------------------------------------------------------


def test_relative_logits_match_the_formula():
    rng = np.random.default_rng(0)
    h, w, d = 3, 4, 5
    q, rw, rh = rng.normal(size=(2, h * w, d)), rng.normal(size=(2 * w - 1, d)), rng.normal(size=(2 * h - 1, d))
    out = np.asarray(relative_logits_2d(jnp.asarray(q), jnp.asarray(rw), jnp.asarray(rh), height=h, width=w))
    want = np.zeros((2, h * w, h * w))
    for y in range(h):
        for x in range(w):
            for y2 in range(h):
                for x2 in range(w):
                    i, j = y * w + x, y2 * w + x2
                    want[:, i, j] = q[:, i] @ rw[x2 - x + w - 1] + q[:, i] @ rh[y2 - y + h - 1]
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)


def test_relative_logits_refuse_mismatched_shapes():
    q = jnp.zeros((2, 12, 4))
    with pytest.raises(ValueError, match=r"rel_w must be \(2W-1, d\) = \(7, 4\)"):
        relative_logits_2d(q, jnp.zeros((6, 4)), jnp.zeros((5, 4)), height=3, width=4)
    with pytest.raises(ValueError, match=r"q must be \(\.\.\., H\*W, d\) = \(\.\.\., 9, d\)"):
        relative_logits_2d(q, jnp.zeros((5, 4)), jnp.zeros((5, 4)), height=3, width=3)


def test_aa_conv_gradient_hand_vs_autodiff():
    """The block on its own (conv, 1x1 projections, relative logits, attention), float64, every leaf and x."""
    dk, dv, heads, h, w = 4, 4, 2, 3, 4
    params = jax.tree.map(lambda a: a.astype(jnp.float64),
                          aaconv.aa_conv_init(jax.random.PRNGKey(0), 3, 6, height=h, width=w, dk=dk, dv=dv,
                                              heads=heads))
    x = jax.random.normal(jax.random.PRNGKey(1), (2, h, w, 3), jnp.float64)
    cot = jax.random.normal(jax.random.PRNGKey(2), (2, h, w, 6), jnp.float64)

    def f(p, x):
        return jnp.sum(aaconv.aa_conv(p, x, heads=heads) * cot)

    out = aaconv.aa_conv(params, x, heads=heads)
    assert out.shape == (2, h, w, 6)
    hand = jax.jit(jax.grad(f, argnums=(0, 1)))(params, x)
    auto = jax.jit(jax.grad(fd.autodiff(f), argnums=(0, 1)))(params, x)
    for a, b in zip(jax.tree.leaves(hand), jax.tree.leaves(auto), strict=True):
        assert np.abs(np.asarray(a)).max() > 0
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-12)


def test_aa_resnet_parameters_match_resnet():
    for image in ((28, 28, 1), (32, 32, 3)):
        counts = aaconv.param_counts(aaconv.Config(image=image))
        assert abs(counts["aa_resnet"] - counts["resnet"]) <= 2e-3 * counts["resnet"], counts
    dk, dv = aaconv.aa_dims(64, 64, 7, 7, 4, 0.25)
    assert dv == 16 and dk % 4 == 0


# -- image folders ----------------------------------------------------------------------------------------------


def _write_folder(root, classes, per_class, size=(12, 10), seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = np.full((*size, 3), 40 + 80 * c, np.uint8) + rng.integers(0, 30, (*size, 3), dtype=np.uint8)
            Image.fromarray(img).save(root / name / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def test_image_folder_loads_splits_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("FUNCDL_DATA", str(tmp_path / "cache"))
    root = _write_folder(tmp_path / "pics", ("cat", "dog"), 10)
    ds = load_image_folder(root, image_size=8)
    assert ds.num_classes == 2 and ds.extras["classes"] == ("cat", "dog")
    assert {k: ds.size(k) for k in ds.splits} == {"train": 16, "val": 2, "test": 2}
    for split in ds.splits.values():                 # stratified: every split holds both classes
        assert sorted(np.unique(split["y"]).tolist()) == [0, 1]
    assert ds.splits["train"]["x"].shape[1:] == (8, 8, 3) and ds.splits["train"]["x"].dtype == np.float32
    assert abs(float(ds.splits["train"]["x"].mean())) < 1e-4          # standardised with the training statistics
    cached = list((tmp_path / "cache" / "folder").iterdir())
    assert len(cached) == 1
    again = load_image_folder(root, image_size=8)
    np.testing.assert_array_equal(again.splits["test"]["x"], ds.splits["test"]["x"])
    assert len(list((tmp_path / "cache" / "folder").iterdir())) == 1     # the same folder state: read back
    other = load_image_folder(root, image_size=8, seed=1)
    assert not np.array_equal(other.splits["test"]["x"], ds.splits["test"]["x"])
    _write_folder(tmp_path / "pics", ("cat",), 11, seed=3)           # an edited and an added file: a new entry
    assert load_image_folder(root, image_size=8).size("train") == 17
    assert len(list((tmp_path / "cache" / "folder").iterdir())) == 2
    assert not [f for f in (tmp_path / "cache" / "folder").iterdir() if ".part-" in f.name]


def test_image_folder_errors_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("FUNCDL_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path))
    cases = [(tmp_path / "missing", "does not exist")]
    one = _write_folder(tmp_path / "one", ("only",), 2)
    cases.append((one, "has 1 class subfolder"))
    bad = _write_folder(tmp_path / "bad", ("a", "b"), 2)
    (bad / "b" / "broken.png").write_bytes(b"not a png")
    cases.append((bad, "cannot decode .*broken.png"))
    for path, message in cases:
        with pytest.raises(ValueError, match=message) as err:
            load_image_folder(path)
        assert "\n" not in str(err.value)
    good = _write_folder(tmp_path / "good", ("a", "b"), 3)
    assert load_image_folder("~/good").num_classes == 2                # ~ expanded
    assert main(["train", "resnet", "--data", f"folder:{tmp_path / 'missing'}", "--steps", "1", "--quiet"]) == 2
    assert good.is_dir()


@pytest.mark.slow
def test_image_folder_round_trip_train_finetune_explain(tmp_path, monkeypatch, capsys):
    """A folder the test writes trains a small resnet, a second folder with other classes fine-tunes it with
    --init-from (the head left fresh by init_exclude), and Grad-CAM draws the fine-tuned run's heatmaps. (Two
    classes in both, so that the second run reuses the first one's compiled step.)"""
    monkeypatch.setenv("FUNCDL_DATA", str(tmp_path / "cache"))
    first = _write_folder(tmp_path / "first", ("a", "b"), 6)
    second = _write_folder(tmp_path / "second", ("x", "y"), 6, seed=1)
    small = ["--steps", "3", "--batch-size", "4", "--set", "widths=4,8", "--set", "blocks=1,1", "--quiet",
             "--no-scan", "--set", "plots=false"]
    pre, fine = tmp_path / "pre", tmp_path / "fine"
    assert main(["train", "resnet", "--data", f"folder:{first}", "--out", str(pre), *small]) == 0
    assert main(["train", "resnet", "--data", f"folder:{second}", "--out", str(fine), "--init-from", str(pre),
                 "--set", "init_exclude=^head/", *small]) == 0
    assert "kept fresh 2 (['head']['b'], ['head']['w'])" in capsys.readouterr().out
    s = json.loads((fine / "summary.json").read_text())
    assert s["data"] == f"folder:{second}" and "test_accuracy" in s
    old, new = (np.load(p / "checkpoint.npz") for p in (pre, fine))
    stem, head = "params/['stem']['w']", "params/['head']['w']"
    assert new[head].shape == old[head].shape
    assert not np.array_equal(new[stem], old[stem])                       # copied, then fine-tuned
    maps = tmp_path / "maps"
    assert main(["explain", str(fine), "--out", str(maps), "--index", "0:2"]) == 0
    assert (maps / "overview.png").is_file() and (maps / "00001_overlay.png").is_file()
    with np.load(maps / "maps.npz") as z:
        assert z["maps"].shape[0] == 2 and np.isfinite(z["maps"]).all()


# -- the fast CIFAR-10 recipe -----------------------------------------------------------------------------------


def test_whitening_filters_whiten_the_patches():
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(3, 3))
    x = jnp.asarray(rng.normal(size=(6, 9, 9, 3)) @ mix + 0.5)            # correlated colour channels
    f = cifar_fast.whitening_filters(x, patch=2, eps=0.0)
    assert f.shape == (2, 2, 3, 24)
    y = np.asarray(jax.lax.conv_general_dilated(x, f[..., :12], (1, 1), "VALID",
                                                dimension_numbers=("NHWC", "HWIO", "NHWC"))).reshape(-1, 12)
    np.testing.assert_allclose(np.cov(y.T, bias=True), np.eye(12), atol=1e-8)
    np.testing.assert_array_equal(np.asarray(f[..., 12:]), -np.asarray(f[..., :12]))


def _cifar_standin(folder, n=8, seed=0):
    """CIFAR-10's python batches as the publishers pickle them (bytes keys, (N, 3072) uint8 rows of CHW planes)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for name in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"):
        y = rng.integers(0, 10, n)
        x = (rng.random((n, 3072)) * 255).astype(np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": y.tolist(), b"data": x,
                         b"filenames": [b"img.png"] * n}, f)


@pytest.mark.slow
def test_cifar_fast_trains_on_a_cifar10_standin(tmp_path, monkeypatch):
    monkeypatch.setenv("FUNCDL_DATA", str(tmp_path / "cache"))
    _cifar_standin(tmp_path / "cifar")
    out = tmp_path / "run"
    assert main(["train", "cifar_fast", "--data", "cifar10", "--data-dir", str(tmp_path / "cifar"), "--steps", "3",
                 "--batch-size", "8", "--set", "widths=4,8", "--set", "warmup_steps=1", "--quiet", "--no-scan",
                 "--set", "plots=false", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["steps"] == 3
    assert json.loads((out / "config.json").read_text())["data_size"] == {"train": 40, "test": 8}
    assert 0.0 <= s["test_accuracy"] <= 1.0 and 0.0 <= s["test_accuracy_ema"] <= 1.0
    with np.load(out / "checkpoint.npz") as z:
        assert float(z["state/['whiten']['ready']"]) == 1.0             # computed once, then held
        assert np.abs(z["state/['whiten']['w']"]).max() > 0
        assert "opt_state/['net'].ema['whiten_b']" in z.files            # the optimizer keeps the weights' EMA
    assert os.path.isdir(out)
