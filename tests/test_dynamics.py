"""Gradient flow and trajectory tracking: activations read from the forward pass, the per-leaf update ratio,
and ``track=gradflow,trajectory`` in the training loop (files, resume appends, the untracked step unchanged)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from funcdl.models import as_task, mlp
from jax.flatten_util import ravel_pytree

import funcdl as fd
from funcdl.data import Dataset
from funcdl.explain.dynamics import (
    activation_stats,
    capture_activations,
    gradient_flow,
    leaf_paths,
    read_gradflow,
    read_trajectory,
)
from funcdl.training.loop import TrainConfig, train
from funcdl.training.tracking import parse_track


def _net(params, x):
    h = fd.relu(fd.dense(x, params["w1"], params["b1"]))
    h = jax.jit(lambda h: fd.tanh(fd.dense(h, params["w2"])))(h)       # inside a nested jit too
    return jnp.sum(fd.sigmoid(h) * x[:, :1])


def _params():
    k = jax.random.split(jax.random.PRNGKey(0), 3)
    b1 = jnp.array([0.0, 0.0, 0.0, -100.0])          # unit 3 can never fire: a dead ReLU
    return {"w1": jax.random.normal(k[0], (3, 4)), "b1": b1, "w2": jax.random.normal(k[1], (4, 2))}


def test_capture_finds_each_activation_in_order_with_its_values():
    params, x = _params(), jax.random.normal(jax.random.PRNGKey(2), (16, 3))
    out, found = capture_activations(_net, params, x)
    assert out == pytest.approx(float(_net(params, x)), rel=1e-6)
    assert [name for name, _ in found] == ["relu", "tanh", "sigmoid"]
    relu = jnp.maximum(x @ params["w1"] + params["b1"], 0)
    np.testing.assert_allclose(found[0][1], relu, rtol=1e-6)
    stats = jax.jit(lambda p, x: activation_stats(capture_activations(_net, p, x)[1]))(params, x)
    assert float(stats["dead"][0]) == pytest.approx(0.25)      # one of four units is zero on every example
    assert float(stats["zero"][0]) == pytest.approx(float(jnp.mean(relu == 0)))
    assert float(stats["rms"][1]) == pytest.approx(float(jnp.sqrt(jnp.mean(found[1][1] ** 2))), rel=1e-6)
    assert np.isnan(stats["dead"][1]) and np.isnan(stats["dead"][2])


def test_update_ratio_is_the_optimizers_update_over_the_weight():
    params, x = _params(), jax.random.normal(jax.random.PRNGKey(3), (8, 3))
    lr = 0.1
    sgd = type("SGD", (), {"update": staticmethod(lambda g, s, p: (jax.tree.map(lambda t: -lr * t, g), s))})

    def loss(p, state, batch, key, train):
        return _net(p, batch["x"]), (state, {})
    flow = jax.jit(lambda p, x: gradient_flow(loss, sgd, p, None, {}, {"x": x}, None))(params, x)
    grads = jax.grad(lambda p: _net(p, x))(params)
    assert leaf_paths(params) == ["b1", "w1", "w2"]
    for i, name in enumerate(leaf_paths(params)):
        g, w = float(jnp.linalg.norm(grads[name])), float(jnp.linalg.norm(params[name]))
        assert float(flow["grad_norm"][i]) == pytest.approx(g, rel=1e-5)
        assert float(flow["update_ratio"][i]) == pytest.approx(lr * g / w, rel=1e-5)


def _blobs(n=96, d=5, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(3, d)) * 2

    def make(m):
        y = rng.integers(0, 3, m)
        return {"x": (centers[y] + rng.normal(size=(m, d))).astype(np.float32), "y": y.astype(np.int32)}
    return Dataset("blobs", {"train": make(n), "val": make(32)}, "classification", num_classes=3)


def _cfg(**kw):
    return TrainConfig(**{**dict(epochs=4, batch_size=16, lr=1e-2, progress=False, plots=False), **kw})


@pytest.mark.slow
def test_track_writes_gradflow_and_trajectory_and_resume_appends(tmp_path):
    data, task = _blobs(), as_task(mlp.Config(sizes=(5, 8, 3)))
    track = dict(track="gradflow,trajectory", track_every=3)
    full = train(task, data, _cfg(**track), tmp_path / "full")
    part = train(task, data, _cfg(**track, stop_after=7), tmp_path / "part")
    assert part.summary["steps"] == 7
    resumed = train(task, data, _cfg(**track, plots=True), tmp_path / "part", resume=True)
    assert (tmp_path / "part" / "gradflow.png").read_bytes()[:4] == b"\x89PNG"

    traj = read_trajectory(tmp_path / "full")
    assert traj["steps"].tolist() == [0, 3, 6, 9, 12, 15, 18, 21, 24]     # 6 steps an epoch, 4 epochs
    assert traj["params"].dtype == np.float32 and traj["params"].shape[1] == ravel_pytree(full.params)[0].size
    np.testing.assert_array_equal(traj["params"][-1], ravel_pytree(full.params)[0])
    np.testing.assert_array_equal(traj["params"][0], ravel_pytree(task.init(jax.random.split(
        jax.random.PRNGKey(0), 3)[0])[0])[0])
    again = read_trajectory(tmp_path / "part")                           # stopped at 7, resumed: appended
    assert again["steps"].tolist() == [0, 3, 6, 7, 9, 12, 15, 18, 21, 24]
    keep = [0, 1, 2, 4, 5, 6, 7, 8, 9]
    np.testing.assert_allclose(again["params"][keep], traj["params"], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(ravel_pytree(resumed.params)[0], ravel_pytree(full.params)[0])

    g = read_gradflow(tmp_path / "part")
    assert g["steps"].tolist() == again["steps"].tolist()
    assert g["params"] == ["layers/0/b", "layers/0/w", "layers/1/b", "layers/1/w"]
    assert g["activations"] == ["relu"]
    assert g["grad_norm"].shape == (10, 4) and np.all(g["grad_norm"] > 0)
    assert np.all((g["update_ratio"] > 1e-5) & (g["update_ratio"] < 1.0))
    assert np.all((g["dead_relu"] >= 0) & (g["dead_relu"] <= 1))
    first = json.loads((tmp_path / "full" / "gradflow.jsonl").read_text().splitlines()[0])
    assert first["step"] == 0 and first["loss"] > 0


def test_the_untracked_run_is_the_same_run():
    data, task = _blobs(), as_task(mlp.Config(sizes=(5, 8, 3)))
    plain = train(task, data, _cfg(epochs=2))
    with pytest.raises(ValueError, match="out_dir"):
        train(task, data, _cfg(epochs=2, track="trajectory"))
    assert plain.summary["steps"] == 12


def test_track_options_are_checked():
    assert parse_track(("gradflow", "trajectory")) == ("gradflow", "trajectory")
    assert TrainConfig(track="trajectory, gradflow").track == "trajectory,gradflow"
    with pytest.raises(ValueError, match="valid: gradflow, trajectory"):
        TrainConfig(track="gradients")
    with pytest.raises(ValueError, match="expected gradflow and/or trajectory"):
        TrainConfig(track=5)
    with pytest.raises(ValueError, match="track_every needs track"):
        TrainConfig(track_every=10)
