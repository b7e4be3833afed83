"""The NeRF pieces: volume rendering (opaque rays included), the positional and timestep embeddings, the synthetic
scene and the tiny-NeRF loader, hierarchical sampling, and the model's end-of-run report."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from funcdl.models import get_model, nerf

import funcdl as fd
from funcdl.data import MissingDataError, load, scenes
from funcdl.nn.render import posenc, volume_render
from funcdl.nn.timestep import timestep_embedding
from funcdl.training.config import TrainConfig
from funcdl.training.loop import train
from funcdl.training.task import DataInfo


def _rays():
    rng = np.random.default_rng(0)
    sigma = rng.uniform(0.0, 2.0, (3, 5))
    sigma[1, 2] = 5000.0                                   # opaque: nothing behind it is seen
    delta = rng.uniform(0.2, 0.6, (3, 5))
    return (jnp.asarray(sigma), jnp.asarray(rng.uniform(size=(3, 5, 3))), jnp.asarray(delta),
            jnp.asarray(np.cumsum(delta, -1)))


def test_volume_render_composites_and_its_hand_gradient_holds_where_transmittance_is_zero():
    sigma, rgb, delta, t = _rays()
    color, depth, acc, w = volume_render(sigma, rgb, delta, t)
    # the opaque ray: weights behind sample 2 are exactly 0, opacity 1, depth a weighted mean of t[:3]
    assert np.all(np.asarray(w[1, 3:]) == 0.0) and float(acc[1]) == pytest.approx(1.0)
    assert float(t[1, 0]) <= float(depth[1]) <= float(t[1, 2])
    np.testing.assert_allclose(np.asarray(acc), np.asarray(jnp.sum(w, -1)), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(color), np.einsum("rs,rsc->rc", np.asarray(w), np.asarray(rgb)), rtol=1e-12)

    def scalar(fn):
        def f(*args):
            c, d, a, ww = fn(*args)
            return jnp.sum(c * jnp.arange(1.0, 4.0)) + jnp.sum(d) + 2.0 * jnp.sum(a) + jnp.sum(ww ** 2)
        return f

    hand = jax.grad(scalar(volume_render), argnums=(0, 1, 2, 3))(sigma, rgb, delta, t)
    auto = jax.grad(scalar(fd.autodiff(volume_render)), argnums=(0, 1, 2, 3))(sigma, rgb, delta, t)
    for h, a in zip(hand, auto, strict=True):
        assert np.all(np.isfinite(np.asarray(h)))
        np.testing.assert_allclose(np.asarray(h), np.asarray(a), rtol=1e-9, atol=1e-12)
    assert np.all(np.asarray(hand[0][1, 2:]) == 0.0)       # the opaque sample and those behind it: no gradient


def test_volume_render_refuses_mismatched_shapes():
    sigma, rgb, delta, t = _rays()
    with pytest.raises(ValueError, match="rgb"):
        volume_render(sigma, rgb[:, :4], delta, t)
    with pytest.raises(ValueError, match="delta"):
        volume_render(sigma, rgb, delta[:, :4], t)


def test_posenc_layout_and_timestep_embedding_values():
    x = jnp.asarray([[0.25, -0.5]])
    g = np.asarray(posenc(x, n_freqs=2))
    assert g.shape == (1, 10)
    np.testing.assert_allclose(g[0, :2], [0.25, -0.5])
    np.testing.assert_allclose(g[0, 2:4], np.sin(np.pi * np.array([0.25, -0.5])), atol=1e-12)
    np.testing.assert_allclose(g[0, 8:10], np.cos(2 * np.pi * np.array([0.25, -0.5])), atol=1e-12)
    e = np.asarray(timestep_embedding(jnp.asarray([0.0, 3.0]), dim=7))
    assert e.shape == (2, 7) and np.all(e[:, -1] == 0.0)
    np.testing.assert_allclose(e[0, :3], 0.0) and np.testing.assert_allclose(e[0, 3:6], 1.0)
    np.testing.assert_allclose(e[1, 0], np.sin(3.0), rtol=1e-12)         # f_0 = 1
    t = jnp.asarray([0.3, 7.0, 20.0])
    f = lambda emb: lambda t: jnp.sum(emb(t, dim=6) * jnp.arange(6.0))  # noqa: E731
    np.testing.assert_allclose(np.asarray(jax.grad(f(timestep_embedding))(t)),
                               np.asarray(jax.grad(f(fd.autodiff(timestep_embedding)))(t)), rtol=1e-10)
    with pytest.raises(ValueError, match="vector"):
        timestep_embedding(jnp.ones((2, 2)), dim=4)


def test_importance_samples_follow_the_coarse_weights():
    bins = jnp.broadcast_to(jnp.linspace(2.0, 6.0, 9), (2, 9))
    weights = jnp.zeros((2, 8)).at[:, 5].set(1.0)           # all mass in [4.5, 5.0]
    for key in (None, jax.random.PRNGKey(0)):
        t = np.asarray(nerf.sample_pdf(key, bins, weights, 16))
        assert t.shape == (2, 16) and np.all(np.diff(t, axis=-1) >= 0)
        assert np.mean((t >= 4.5) & (t <= 5.0)) > 0.95
    strat = np.asarray(nerf.stratified(jax.random.PRNGKey(1), 3, 4, 2.0, 6.0))
    assert np.all((strat >= 2.0 + np.arange(4)) & (strat <= 3.0 + np.arange(4)))   # one draw in each bin


def test_synthetic_scene_rays_depths_and_held_out_poses():
    ds = scenes.load_synthetic_scene(size=8, n_train=3, n_val=1, n_test=2)
    ex = ds.extras
    assert ds.size("train") == 3 * 64 and ds.size("test") == 2 * 64 and ds.kind == "regression"
    x = ds.splits["train"]["x"]
    np.testing.assert_allclose(np.linalg.norm(x[:, 3:], axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(ds.splits["test"]["y"].reshape(2, 8, 8, 3), ex["images"]["test"])
    for a in ex["poses"]["test"]:                            # held out: no test camera is a training camera
        assert min(np.abs(a - b).max() for b in ex["poses"]["train"]) > 1e-3
    # the middle pixel's ray looks at the origin (cameras look down -z at the scene's centre)
    o, d = scenes.camera_rays(ex["poses"]["train"][0], 2, 2, ex["focal"])
    centre = d.mean(axis=(0, 1))
    np.testing.assert_allclose(centre / np.linalg.norm(centre), -o[0, 0] / np.linalg.norm(o[0, 0]), atol=1e-6)
    # depth ground truth: the first hit of the middle ray of a view straight down lies on the top sphere
    color, depth, hit = scenes.cast(np.array([[0.0, 0.0, 4.0]]), np.array([[0.0, 0.0, -1.0]]))
    assert hit[0] and depth[0] == pytest.approx(4.0 - (0.35 + 0.55))
    with pytest.raises(ValueError, match="synthetic_scene"):
        scenes.load_synthetic_scene(size=2)


def test_tiny_nerf_loader_reads_the_public_format(tmp_path):
    rng = np.random.default_rng(0)
    poses = scenes.sphere_poses(106, seed=3).astype(np.float32)
    np.savez(tmp_path / "tiny_nerf_data.npz", images=rng.uniform(size=(106, 3, 3, 3)).astype(np.float32),
             poses=poses, focal=np.float64(6.0))
    ds = load("tiny_nerf", data_dir=tmp_path)                  # views 0-99 train, 100-102 val, 103-105 test
    assert (ds.size("train"), ds.size("val"), ds.size("test")) == (900, 27, 27) and ds.extras["focal"] == 6.0
    np.testing.assert_allclose(ds.extras["poses"]["test"], poses[103:])
    np.testing.assert_allclose(ds.splits["val"]["x"][:9], np.concatenate(
        scenes.camera_rays(poses[100], 3, 3, 6.0), -1).reshape(9, 6), rtol=1e-6)
    with pytest.raises(ValueError, match="none to test"):
        scenes.tiny_nerf_dataset(tmp_path / "tiny_nerf_data.npz", n_train=104, n_val=2)
    np.savez(tmp_path / "bad.npz", images=np.zeros((3, 4, 4, 3)))
    with pytest.raises(ValueError, match="lacks"):
        scenes.tiny_nerf_dataset(tmp_path / "bad.npz")
    with pytest.raises(MissingDataError, match="tiny_nerf_data.npz"):
        load("tiny_nerf", data_dir=tmp_path / "nowhere")


def test_nerf_refuses_image_data_and_bad_options():
    entry = get_model("nerf")
    with pytest.raises(ValueError, match="ray data set"):
        entry.build(DataInfo("mnist", (28, 28, 1), 10))
    info = entry.small_data
    with pytest.raises(ValueError, match="encoding"):
        entry.build(info, encoding="fourier")
    with pytest.raises(ValueError, match="n_fine"):
        entry.build(info, n_fine=-1)
    assert entry.build(info, encoding=None).extras["config"].encoding == "none"     # `--set encoding=none`


@pytest.mark.slow
def test_a_tiny_nerf_trains_and_reports_renders(tmp_path):
    ds = scenes.load_synthetic_scene(size=6, n_train=4, n_val=1, n_test=2)
    task = get_model("nerf").build(ds.info(), n_coarse=6, n_fine=4, width=16, depth=2, pos_freqs=3, dir_freqs=1)
    cfg = TrainConfig(steps=60, batch_size=64, lr=5e-3, eval_every=60, progress=False, plots=False, log_every=10)
    result = train(task, ds, cfg, tmp_path / "run")
    losses = [r["loss"] for r in result.history if r["split"] == "train"]
    assert losses[-1] < losses[0]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["test_psnr"] == pytest.approx(np.mean(summary["test_psnr_views"]), abs=1e-3)
    assert len(summary["test_psnr_views"]) == 2 and summary["test_depth_mae"] >= 0.0
    written = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"renders.png", "turntable.gif", "depth_00.png", "depth_01.png"} <= written
    # the report's PSNR is the per-view PSNR of the whole rendered image
    img, depth, acc = nerf.render_image(result.params, ds.extras["poses"]["test"][0], 6, 6, ds.extras["focal"],
                                        task.extras["config"], chunk=16)
    mse = np.mean((img - ds.extras["images"]["test"][0]) ** 2)
    assert summary["test_psnr_views"][0] == pytest.approx(-10 * np.log10(mse), abs=1e-2)
    assert img.shape == (6, 6, 3) and depth.shape == acc.shape == (6, 6)
