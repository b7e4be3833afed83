"""Quantization: the fake_quant / lsq_quant primitives, quantizers and calibrators, the graph rewrite (fake and
integer paths), QAT, and the quantize command's input checks. Tiny synthetic models only."""

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fd
from funcdl.commands import quantize as qcmd
from funcdl.compress import qat
from funcdl.compress.quant_graph import QuantizedModel
from funcdl.compress.quantize import QuantSpec, calibrate, dequantize, quantize, quantize_tensor, scale_zero_point
from funcdl.core import gradcheck as gc
from funcdl.nn.quant import fake_quant, lsq_quant

# -- primitives ------------------------------------------------------------------------------------------------


def test_fake_quant_value_and_straight_through_gradient_with_clipping_mask():
    x = jnp.array([-2.0, -0.26, 0.04, 0.26, 0.7, 3.0])
    y, pullback = jax.vjp(lambda x: fake_quant(x, jnp.asarray(0.1), None, qmin=-7, qmax=7), x)
    np.testing.assert_allclose(y, [-0.7, -0.3, 0.0, 0.3, 0.7, 0.7], atol=1e-7)
    (dx,) = pullback(jnp.arange(1.0, 7.0))
    np.testing.assert_array_equal(dx, [0.0, 2.0, 3.0, 4.0, 5.0, 0.0])     # 1 inside [-0.7, 0.7], 0 where clipped
    # asymmetric: zero point 3, range [-8, 7] -> x in [-1.1, 0.4]
    y = fake_quant(x, jnp.asarray(0.1), jnp.asarray(3.0), qmin=-8, qmax=7)
    np.testing.assert_allclose(y, [-1.1, -0.3, 0.0, 0.3, 0.4, 0.4], atol=1e-7)


def test_lsq_gradients_follow_the_hand_derivation():
    x, s = jnp.array([-1.0, 0.12, 0.33, 5.0]), jnp.asarray(0.2)     # v = -5 (clipped below), 0.6, 1.65, 25 (above)
    qn, qp = 4, 3
    y, pullback = jax.vjp(lambda x, s: lsq_quant(x, s, qn=qn, qp=qp), x, s)
    np.testing.assert_allclose(y, [-0.8, 0.2, 0.4, 0.6], atol=1e-7)
    dx, ds = pullback(jnp.ones(4))
    np.testing.assert_array_equal(dx, [0, 1, 1, 0])
    g = 1 / np.sqrt(4 * qp)
    expect = g * (-qn + (1 - 0.6) + (2 - 1.65) + qp)
    np.testing.assert_allclose(ds, expect, rtol=1e-6)


@pytest.mark.slow
def test_gradcheck_holds_the_hand_rules_to_the_ste_references_and_skips_finite_differences():
    for name in ("fake_quant", "lsq_quant"):
        rows = gc.check_primitive(name, checks=("vjp", "fd"), extras=0)
        assert rows and all(r.passed for r in rows), gc.format_table([r for r in rows if not r.passed])
        fd_rows = [r for r in rows if r.check == "fd"]
        assert fd_rows and all(r.message.startswith("skipped: surrogate") for r in fd_rows)
        assert max(r.rel_error for r in rows if r.check == "vjp") < 1e-10
    assert fd.get("fake_quant").surrogate and fd.get("relu").surrogate is None


def test_primitives_refuse_bad_settings_and_shapes():
    x = jnp.ones((2, 3))
    with pytest.raises(ValueError, match="qmin < qmax"):
        fake_quant(x, jnp.asarray(0.1), qmin=5, qmax=5)
    with pytest.raises(ValueError, match="broadcast"):
        fake_quant(x, jnp.ones((4,)))
    with pytest.raises(ValueError, match="qn >= 0"):
        lsq_quant(x, jnp.asarray(0.1), qn=-1)


# -- quantizers and calibrators ---------------------------------------------------------------------------------


def test_symmetric_and_asymmetric_quantizers():
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.standard_normal((16, 5)) * np.array([0.1, 1, 3, 0.5, 2]))
    spec = QuantSpec(8, granularity="channel")
    s, z = calibrate(w, spec, keep=(1,))
    assert s.shape == (1, 5) and np.all(z == 0)
    q = quantize(w, s, z, spec)
    assert np.all(np.abs(q) <= 127) and np.all(q == np.round(q))
    assert np.all(np.abs(dequantize(q, s, z) - w) <= s / 2 + 1e-12)                 # minmax never clips
    tensor = calibrate(w, QuantSpec(8, granularity="tensor"), keep=())[0]
    assert tensor.shape == (1, 1) and np.all(tensor >= s)                           # per tensor: the largest
    a = QuantSpec(8, symmetric=False)
    s, z = scale_zero_point(jnp.asarray(0.5), jnp.asarray(2.0), a)                  # widened to [0, 2]: 0 exact
    assert float(dequantize(quantize(jnp.asarray(0.0), s, z, a), s, z)) == 0.0
    assert (a.qmin, a.qmax) == (-128, 127) and (QuantSpec(4).qmin, QuantSpec(4).qmax) == (-7, 7)


def test_calibrators_percentile_clips_and_mse_is_no_worse_than_minmax():
    rng = np.random.default_rng(1)
    x = jnp.asarray(np.concatenate([rng.standard_normal(4000), [60.0]]))          # one outlier
    mm = QuantSpec(4, granularity="tensor")
    err = {}
    for method in ("minmax", "percentile", "mse"):
        spec = QuantSpec(4, granularity="tensor", method=method, percentile=99.9)
        s, z = calibrate(x, spec)
        err[method] = float(jnp.mean((dequantize(quantize(x, s, z, spec), s, z) - x) ** 2))
        if method == "percentile":
            assert float(s.max()) < float(calibrate(x, mm)[0].max()) / 5
    assert err["mse"] <= err["minmax"] and err["percentile"] < err["minmax"]


def test_per_group_quantization_pads_the_last_group():
    w = jnp.asarray(np.random.default_rng(2).standard_normal((3, 3, 8, 5)))       # a conv kernel HWIO: K = 72
    r = quantize_tensor(w, QuantSpec(4, granularity="group", group_size=16), channel_axes=(3,))
    assert r["granularity"] == "group" and r["scale"].shape == (5, 5) and r["q"].shape == w.shape
    assert np.all(np.abs(r["q"]) <= 7)
    per_channel = quantize_tensor(w, QuantSpec(4), channel_axes=(3,))
    assert jnp.mean((r["x_hat"] - w) ** 2) < jnp.mean((per_channel["x_hat"] - w) ** 2)
    # the first group of output channel 2 is w[:, :, :, 2] flattened in (H, W, I) order, its first 16 values
    first = np.asarray(w[..., 2]).reshape(-1)[:16]
    np.testing.assert_allclose(r["scale"][0, 2], np.abs(first).max() / 7, rtol=1e-12)


def test_quant_spec_refuses_bad_values():
    for kw, msg in (({"bits": 9}, "bits"), ({"granularity": "row"}, "granularity"), ({"method": "kl"}, "method")):
        with pytest.raises(ValueError, match=msg):
            QuantSpec(**kw)


# -- the graph rewrite ------------------------------------------------------------------------------------------


def _tiny_model():
    """conv (funcdl primitive) -> relu (a custom_jvp) -> a jitted dense (a pjit) -> dense."""
    k = jax.random.split(jax.random.PRNGKey(0), 3)
    params = {"conv": jax.random.normal(k[0], (3, 3, 1, 4)) * 0.4,
              "fc": {"w": jax.random.normal(k[1], (64, 8)) * 0.2, "b": jnp.zeros(8)},
              "out": jax.random.normal(k[2], (8, 3)) * 0.5}

    @jax.jit
    def dense(h, w, b):
        return fd.dense(h, w, b)

    def apply(p, x):
        h = jax.nn.relu(fd.conv2d(x, p["conv"], stride=2, padding=1))
        h = jax.nn.relu(dense(h.reshape(h.shape[0], -1), p["fc"]["w"], p["fc"]["b"]))
        return h @ p["out"]

    x = jax.random.uniform(jax.random.PRNGKey(3), (24, 8, 8, 1), jnp.float32)
    return apply, jax.tree.map(lambda a: a.astype(jnp.float32), params), x


def test_graph_rewrite_float_fake_and_integer_paths():
    apply, params, x = _tiny_model()
    per_tensor = QuantizedModel(apply, params, x, QuantSpec(8, granularity="tensor"), QuantSpec(8)).calibrate([x])
    assert np.array_equal(np.asarray(per_tensor.apply(x, "fake")), np.asarray(per_tensor.apply(x, "int")))
    qm = QuantizedModel(apply, params, x, QuantSpec(8), QuantSpec(8, granularity="tensor"))
    assert [s["weight"] for s in qm.describe_sites()] == ["conv", "fc/w", "out"]     # found inside the pjit too
    qm.calibrate([x[:12], x[12:]])
    ref = apply(params, x)
    np.testing.assert_allclose(qm.apply(x, "float"), ref, rtol=1e-6, atol=1e-6)
    fake, ints = qm.apply(x, "fake"), qm.apply(x, "int")
    assert np.array_equal(np.asarray(fake), np.asarray(ints))                  # bit for bit (module docstring)
    assert 0 < float(jnp.max(jnp.abs(fake - ref))) < 0.05 * float(jnp.max(jnp.abs(ref)))
    npz = qm.export()
    assert npz["site0_q"].dtype == np.int8 and npz["site0_scale"].shape == (1, 1, 1, 4)
    assert npz["site1_act_scale"].shape == ()


@pytest.mark.slow
def test_weights_only_per_channel_beats_per_tensor_and_int4_groups_need_no_integer_path():
    apply, params, x = _tiny_model()
    ref = apply(params, x)
    err = {}
    for g in ("tensor", "channel"):
        qm = QuantizedModel(apply, params, x, QuantSpec(4, granularity=g))
        err[g] = float(jnp.mean((qm.apply(x, "fake") - ref) ** 2))
    assert err["channel"] < err["tensor"]
    qg = QuantizedModel(apply, params, x, QuantSpec(4, granularity="group", group_size=8),
                        QuantSpec(8, granularity="tensor")).calibrate([x])
    assert "group" in {s["granularity"] for s in qg.describe_sites()}
    with pytest.raises(ValueError, match="per-group"):
        qg.apply(x, "int")
    with pytest.raises(ValueError, match="not calibrated"):
        QuantizedModel(apply, params, x, QuantSpec(8), QuantSpec(8)).apply(x, "fake")


# -- QAT ---------------------------------------------------------------------------------------------------------


def _mlp_task():
    from funcdl.training.task import Task

    def init(key):
        k1, k2 = jax.random.split(key)
        return {"l1": {"w": jax.random.normal(k1, (6, 8)) * 0.5, "b": jnp.zeros(8)},
                "l2": {"w": jax.random.normal(k2, (8, 3)) * 0.5}}, {}

    def apply(p, state, x):
        return jax.nn.relu(x @ p["l1"]["w"] + p["l1"]["b"]) @ p["l2"]["w"]

    def loss(p, state, batch, key, train):
        value = fd.softmax_cross_entropy(apply(p, state, batch["x"]), batch["y"])
        return value, (state, {"loss": value})

    return Task(init, loss, apply=apply)


@pytest.mark.parametrize("method", ["ste", pytest.param("lsq", marks=pytest.mark.slow)])
def test_qat_trains_through_the_quantized_weights(method):
    task = qat.qat_task(_mlp_task(), bits=4, method=method)
    params, state = task.init(jax.random.PRNGKey(0))
    assert (qat.STEPS in params) == (method == "lsq")
    rng = np.random.default_rng(0)
    batch = {"x": jnp.asarray(rng.standard_normal((32, 6)), jnp.float32),
             "y": jnp.asarray(rng.integers(0, 3, 32), jnp.int32)}
    step = jax.jit(jax.value_and_grad(lambda p: task.loss(p, state, batch, None, True)[0]))
    first, grads = step(params)
    # the hand rules of fake_quant / lsq_quant equal autodiff through their STE references, on the whole loss
    errors = gc.compare_model_grads(lambda p: task.loss(p, state, batch, None, True)[0], params)
    assert gc.max_model_error(errors) < 1e-5
    assert float(jnp.max(jnp.abs(grads["l1"]["w"]))) > 0
    if method == "lsq":
        assert all(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree.leaves(grads[qat.STEPS]))
    for _ in range(30):
        value, grads = step(params)
        params = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
    assert float(value) < float(first)
    # the loss saw 4-bit weights: at most 15 distinct values per output channel
    w = qat.quantize_weights({k: v for k, v in params.items() if k != qat.STEPS}, 4, method,
                             params.get(qat.STEPS))["l1"]["w"]
    assert max(len(np.unique(np.asarray(w[:, j]))) for j in range(8)) <= 15


# -- the command's input checks -------------------------------------------------------------------------------


def test_quantize_command_refuses_bad_options_and_the_run_directory(tmp_path):
    args = argparse.Namespace(per_channel=True, group_size=32, bits=8, asymmetric=False, weight_method="minmax",
                              activations=False, act_bits=8, method="minmax")
    with pytest.raises(ValueError, match="not both"):
        qcmd.specs(args)
    args.group_size, args.bits = None, 12
    with pytest.raises(ValueError, match="bits"):
        qcmd.specs(args)
    with pytest.raises(ValueError, match="inside the run directory"):
        qcmd._check_out(tmp_path / "q", tmp_path)
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "summary.json").write_text(json.dumps({}))
    with pytest.raises(ValueError, match="already holds"):
        qcmd._check_out(tmp_path / "done", tmp_path / "run")
