"""Loss landscapes (funcdl.explain.landscape) and ``funcdl landscape``: filter normalisation, the 2-D surface and
the 1-D line against direct evaluations, the PCA plane of a trajectory, recorded optimizer paths."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from funcdl.models import as_task, mlp
from jax.flatten_util import ravel_pytree

from funcdl import optim
from funcdl.explain import landscape as L


def _tree(seed=0):
    """A dense layer (in, out), a conv kernel (H, W, I, O), an embedding, a bias and a norm scale."""
    rng = np.random.default_rng(seed)
    return {"dense": {"w": jnp.asarray(rng.normal(size=(5, 3))), "b": jnp.asarray(rng.normal(size=3))},
            "conv": {"w": jnp.asarray(rng.normal(size=(3, 3, 2, 4)) * np.arange(1, 5))},
            "norm": {"scale": jnp.asarray(rng.normal(size=4))},
            "wte": jnp.asarray(rng.normal(size=(7, 4))), "step": jnp.asarray(3)}


def test_every_direction_filter_has_its_weight_filters_norm():
    params = _tree()
    d = L.filter_normalized_direction(jax.random.PRNGKey(0), params)
    assert jax.tree.structure(d) == jax.tree.structure(params)
    for nd, nw, leaf in zip(L.filter_norms(d), L.filter_norms(params), jax.tree.leaves(d), strict=True):
        if nw is None:                                   # biases, norm parameters, integers: left at zero
            assert not np.any(np.asarray(leaf))
        else:
            assert nd.shape == (np.shape(leaf)[-1],)     # one norm per output unit / output channel
            np.testing.assert_allclose(nd, nw, rtol=1e-12)
    # a conv filter is one output channel: the norm over (H, W, I) of kernel[..., j]
    np.testing.assert_allclose(L.filter_norms(params)[0], np.linalg.norm(np.asarray(params["conv"]["w"])
                                                                         .reshape(-1, 4), axis=0))
    # with ignore_1d=False a 1-D leaf is one filter; a zero weight filter gives a zero direction filter
    params["dense"]["w"] = params["dense"]["w"].at[:, 1].set(0.0)
    d = L.filter_normalize(L.random_direction(jax.random.PRNGKey(1), params), params, ignore_1d=False)
    assert float(jnp.linalg.norm(d["norm"]["scale"])) == pytest.approx(float(jnp.linalg.norm(params["norm"]["scale"])))
    assert np.all(np.isfinite(np.asarray(d["dense"]["w"]))) and not np.any(np.asarray(d["dense"]["w"][:, 1]))


def _mlp_loss():
    task = as_task(mlp.Config(sizes=(6, 5, 3)))
    params, _ = task.init(jax.random.PRNGKey(0))
    params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    rng = np.random.default_rng(0)
    batches = {"x": jnp.asarray(rng.normal(size=(2, 8, 6))), "y": jnp.asarray(rng.integers(0, 3, (2, 8)))}
    return L.batches_loss(lambda p, b: task.loss(p, {}, b, None, False)[0], batches), params


def test_surface_at_the_origin_is_the_trained_loss_and_matches_direct_evaluation():
    loss, params = _mlp_loss()
    d1 = L.filter_normalized_direction(jax.random.PRNGKey(1), params)
    d2 = L.filter_normalized_direction(jax.random.PRNGKey(2), params)
    alphas, betas = np.array([-1.0, 0.0, 0.5, 1.0]), np.array([-0.5, 0.0, 1.0])
    z = L.surface(loss, params, d1, d2, alphas, betas)
    assert z.shape == (3, 4)
    loss_jit = jax.jit(loss)
    assert z[1, 1] == pytest.approx(float(loss_jit(params)), rel=1e-13)
    moved = jax.tree.map(lambda w, a, b: w + 0.5 * a + 1.0 * b, params, d1, d2)
    assert z[2, 2] == pytest.approx(float(loss_jit(moved)), rel=1e-12)
    # flat directions give the same grid
    z2 = L.surface(loss, params, ravel_pytree(d1)[0], d2, alphas, betas)
    np.testing.assert_allclose(z2, z, rtol=1e-12)
    assert len(np.unique(np.round(z, 8))) > 6            # a real surface, not a constant


def test_interpolation_ends_at_both_parameter_sets():
    loss, a = _mlp_loss()
    b = jax.tree.map(lambda w: w + 0.3, a)
    line = L.interpolate(loss, a, b, [0.0, 0.5, 1.0])
    assert line[0] == pytest.approx(float(loss(a)), rel=1e-13)
    assert line[2] == pytest.approx(float(loss(b)), rel=1e-13)
    assert line[1] == pytest.approx(float(loss(jax.tree.map(lambda x, y: (x + y) / 2, a, b))), rel=1e-12)
    with pytest.raises(ValueError, match="same model"):
        L.interpolate(loss, a, {"w": jnp.ones(3)}, [0.0])


def test_pca_plane_holds_a_planar_path_and_projects_it():
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.normal(size=(50, 2)))
    t = np.linspace(0, 1, 40)
    coords = np.stack([3 * (1 - t), (1 - t) * np.sin(6 * t)], 1)      # a curved path in the plane of u, to 0
    origin = rng.normal(size=50)
    traj = origin + coords @ u.T
    d1, d2, explained = L.pca_directions(traj, origin)
    assert explained.sum() == pytest.approx(1.0, abs=1e-9) and explained[0] > explained[1]
    basis = np.stack([d1, d2])
    np.testing.assert_allclose(np.abs(np.linalg.det(basis @ u)), 1.0, atol=1e-9)        # the same plane
    path = L.project(traj, origin, d1, d2)
    assert path[0, 0] > 0                                   # sign fixed: the start at positive coordinates
    np.testing.assert_allclose(np.linalg.norm(path, axis=1), np.linalg.norm(coords, axis=1), atol=1e-9)
    np.testing.assert_allclose(path[-1], 0.0, atol=1e-9)    # the path ends at the origin (the final point)
    a, b = L.path_range(path, points=11)
    assert a.min() < path[:, 0].min() and a.max() > path[:, 0].max() and len(b) == 11
    with pytest.raises(ValueError, match="at least 3"):
        L.pca_directions(traj[:2], origin)
    with pytest.raises(ValueError, match=r"\(K, 50\)"):
        L.pca_directions(traj[:, :10], origin)


def test_optimizer_path_records_gradient_descent():
    target = jnp.asarray([1.0, -2.0, 0.5])

    def loss(p, batch):
        return 0.5 * jnp.sum((p["w"] - target * batch) ** 2)

    w0 = {"w": jnp.zeros(3)}
    batches = jnp.ones(6)
    final, steps, snaps, losses = L.optimizer_path(loss, w0, optim.sgd(0.1), batches, every=2)
    np.testing.assert_array_equal(steps, [0, 2, 4, 6])
    expected = np.asarray(target)[None] * (1 - 0.9 ** steps[:, None])      # w_k = t (1 - 0.9^k)
    np.testing.assert_allclose(snaps, expected, rtol=1e-6)
    assert snaps.dtype == np.float32 and losses.shape == (6,) and losses[0] > losses[-1]
    np.testing.assert_allclose(final["w"], expected[-1], rtol=1e-6)
    # SAM on a quadratic: the gradient at w + rho g/|g| is g (1 + rho/|g|), a longer step towards the minimum
    sam = optim.sam(optim.sgd(0.1), loss, rho=0.1)
    _, _, snaps_sam, _ = L.optimizer_path(loss, w0, sam, batches, every=3, batch_to_update=True)
    assert snaps_sam.shape == (3, 3)
    assert np.linalg.norm(snaps_sam[-1] - target) < np.linalg.norm(snaps[-1] - target) - 1e-3
    with pytest.raises(ValueError, match="must divide"):
        L.optimizer_path(loss, w0, optim.sgd(0.1), batches, every=4)


def test_load_trajectory_checks_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="--set track=trajectory"):
        L.load_trajectory(tmp_path / "trajectory.npz")
    np.savez(tmp_path / "t.npz", steps=np.arange(3), params=np.zeros((3, 5), np.float32))
    steps, params = L.load_trajectory(tmp_path / "t.npz", 5)
    assert steps.shape == (3,) and params.shape == (3, 5)
    with pytest.raises(ValueError, match="another run"):
        L.load_trajectory(tmp_path / "t.npz", 6)
    np.savez(tmp_path / "u.npz", x=np.zeros(2))
    with pytest.raises(ValueError, match="not the 'steps' and 'params'"):
        L.load_trajectory(tmp_path / "u.npz")


def test_command_rejects_bad_arguments_in_one_line(tmp_path, capsys):
    from funcdl.commands.cli import main
    from funcdl.commands.landscape import parse_range

    assert parse_range("2") == (-2.0, 2.0) and parse_range("-0.5:1.5") == (-0.5, 1.5)
    run = tmp_path / "run"
    run.mkdir()
    cases = [(["--grid", "2"], "--grid must lie"), (["--range", "1:0"], "LO < HI"), (["--range", "x"], "--range"),
             (["--examples", "0"], "--examples"), ([], "not a run directory")]
    for extra, message in cases:
        assert main(["landscape", str(run), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    (run / "config.json").write_text(json.dumps({"model": "mlp", "data": "mnist1d"}))
    assert main(["landscape", str(run), "--path"]) == 2
    assert "--set track=trajectory" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    assert main(["landscape", str(run), "--out", str(tmp_path / "full")]) == 2
    assert "not an empty folder" in capsys.readouterr().err


def test_loss_batches_windows_for_language_data_whole_batches_otherwise():
    from types import SimpleNamespace

    from funcdl.commands.landscape import loss_batches

    data = SimpleNamespace(windowed=True, splits={"train": {"tokens": np.arange(100, dtype=np.int32)}})
    loaded = {"config": {"train": {"batch_size": 4, "seq_len": 8}}, "info": None}
    b = loss_batches(loaded, data, SimpleNamespace(split="train", batches=3, examples=1000, seed=0))
    assert b["x"].shape == (3, 4, 8)
    np.testing.assert_array_equal(b["y"], np.asarray(b["x"]) + 1)          # next-token targets
    data = SimpleNamespace(windowed=False, splits={"train": {"x": np.arange(50.0)[:, None], "y": np.arange(50)}})
    loaded["config"]["train"]["batch_size"] = 8
    b = loss_batches(loaded, data, SimpleNamespace(split="train", batches=None, examples=30, seed=0))
    assert b["x"].shape == (3, 8, 1) and len(np.unique(b["y"])) == 24      # 30 examples: 3 whole batches of 8
    np.testing.assert_array_equal(b["x"][..., 0], b["y"])
    with pytest.raises(ValueError, match="has the splits train"):
        loss_batches(loaded, data, SimpleNamespace(split="test", batches=None, examples=30, seed=0))


@pytest.mark.slow
def test_command_on_a_run(tmp_path, monkeypatch):
    """The whole command on a run of a small MLP; the run's loading (``load_image_model``, funcdl sample's, tested
    with it) is replaced by the same model and data made here."""
    from types import SimpleNamespace

    import funcdl.commands.sample as sample
    from funcdl.commands.cli import main

    monkeypatch.setenv("MPLBACKEND", "Agg")
    task = as_task(mlp.Config(sizes=(6, 8, 3)))
    params, state = task.init(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6)).astype(np.float32)
    data = SimpleNamespace(windowed=False, splits={"train": {"x": x, "y": (x[:, 0] > 0).astype(np.int32)}})
    config = {"model": "mlp", "data": "fake", "train": {"batch_size": 50}}
    loaded = {"task": task, "params": params, "state": state, "config": config, "data": data, "info": None}
    monkeypatch.setattr(sample, "load_image_model", lambda run, data_dir=None: loaded)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(config))
    flat = np.asarray(ravel_pytree(params)[0])
    snaps = flat + np.linspace(1, 0, 6)[:, None] * rng.normal(size=flat.size) * 0.1     # as track=trajectory
    np.savez(run / "trajectory.npz", steps=np.arange(0, 30, 5), params=snaps.astype(np.float32))
    out = tmp_path / "ls"
    assert main(["landscape", str(run), "--grid", "5", "--examples", "200", "--path", "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"contour.png", "surface.png", "pca_contour.png", "interpolation.png", "landscape.npz",
            "summary.json"} <= names
    with np.load(out / "landscape.npz") as f:
        z, center, path = f["loss"], float(f["center_loss"]), f["path"]
        assert z.shape == (5, 5) and f["pca_loss"].shape == (5, 5) and path.shape == (6, 2)
        line, alphas = f["interp_loss"], f["interp_alphas"]
        assert line[alphas == 1.0] == pytest.approx(center, rel=1e-5)                  # a = 1: the trained weights
        assert 0.0 in alphas and len(line) == len(alphas) == 7
    assert z[2, 2] == pytest.approx(center, rel=1e-6)      # the grid's centre is the trained weights
    assert 0.2 < center < 2.0
    np.testing.assert_allclose(path[-1], 0.0, atol=1e-4)
    assert json.loads((out / "summary.json").read_text())["examples"] == 200
    assert not any(p.name.startswith(".ls.tmp") for p in tmp_path.iterdir())
