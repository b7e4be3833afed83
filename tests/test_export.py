"""Export to StableHLO and ONNX (funcdl.export, ``funcdl export``).

Each model (an MLP, LeNet, a tiny GPT at the registry's small sizes) is exported with a symbolic batch and run on
batch sizes the trace never saw; the reloaded export must equal funcdl's own forward (``task.apply``) to 1e-5
relative (max |export - funcdl| / max |funcdl|) in float32. The StableHLO bytes must reload in a Python that
imports JAX only; ONNX runs under onnxruntime and skips without jax2onnx / onnxruntime.
"""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import numpy as np
import pytest
from funcdl.models import get_model

from funcdl import export
from funcdl.commands.cli import main
from funcdl.training.task import DataInfo, Task

TOL = 1e-5
GPT_OPTS = {"n_layer": 2, "n_head": 2, "n_embd": 8, "block_size": 8, "compute_dtype": "float32"}
MODELS = {
    "mlp": (DataInfo("fake", (40,), num_classes=10), {"hidden": (16,)}),
    "lenet": (DataInfo("fake-images", (12, 12, 1), num_classes=10), {}),
    "gpt": (DataInfo("fake-text", (8,), vocab_size=11, kind="language"), GPT_OPTS),
}


def _model(name):
    info, opts = MODELS[name]
    task = get_model(name).build(info, **opts)
    params, state = task.init(jax.random.PRNGKey(0))
    return task, params, state, info


def _rel(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def _batches(inf, name):
    """Inputs of two batch sizes (and, for the GPT, two lengths up to the block size)."""
    if name == "gpt":
        return [export.example_inputs(inf, {"B": b, "T": t, "vocab": 11}) for b, t in ((5, 8), (2, 3))]
    return [export.example_inputs(inf, {"B": b}) for b in (5, 1)]


_EXPORTS: dict = {}


def _exported(name, folder):
    """``name`` exported once per module to StableHLO: (jitted funcdl forward, params, state, inference, path)."""
    if name not in _EXPORTS:
        task, params, state, info = _model(name)
        inf = export.inference(task, params, state, info, name=name)
        path = export.to_stablehlo(inf, folder / f"{name}.stablehlo")
        _EXPORTS[name] = (jax.jit(task.apply), params, state, inf, path)
    return _EXPORTS[name]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    yield lambda name: _exported(name, folder)
    _EXPORTS.clear()


def _check_stablehlo(entry, name):
    apply, params, state, inf, path = entry
    spec = json.loads((path.parent / (path.name + ".json")).read_text())
    assert spec["format"] == "stablehlo" and spec["inputs"][0]["shape"][0] == "B"
    loaded = export.load_stablehlo(path)
    for x in _batches(inf, name):
        assert _rel(loaded(*x), apply(params, state, *x)) <= TOL


@pytest.mark.parametrize("name", ["mlp", "gpt"])
def test_stablehlo_equals_funcdl_on_other_batches(exports, name):
    _check_stablehlo(exports(name), name)


def test_stablehlo_reloads_with_jax_alone(exports, tmp_path):
    """A fresh Python that imports jax (no funcdl) deserialises the file and runs it on a batch of 7."""
    apply, params, state, inf, path = exports("mlp")
    x = export.example_inputs(inf, {"B": 7})[0]
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, numpy as np, jax\nfrom jax import export\n"
            f"exp = export.deserialize(bytearray(open({str(path)!r}, 'rb').read()))\n"
            f"np.save({str(tmp_path / 'y.npy')!r}, np.asarray(exp.call(np.load({str(tmp_path / 'x.npy')!r}))))\n"
            "assert not any(m == 'funcdl' or m.startswith('funcdl.') for m in sys.modules), 'funcdl was imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _rel(np.load(tmp_path / "y.npy"), apply(params, state, x)) <= TOL


def test_bad_inputs_fail_in_one_line(exports, tmp_path, capsys):
    inf, path = exports("gpt")[3:]
    loaded = export.load_stablehlo(path)
    with pytest.raises(ValueError, match=r"shape \(2, 9\); the export takes \('B', 'T'\), T <= 8"):
        loaded(np.zeros((2, 9), np.int32))                  # longer than the block size
    with pytest.raises(ValueError, match="takes 1 input"):
        loaded(np.zeros((2, 3), np.int32), np.zeros((2, 3), np.int32))
    # a model that is neither a classifier nor a GPT, and one of several players
    mlp_task, mlp_params, _, info = _model("mlp")
    regression = mlp_task._replace(kind="regression")
    with pytest.raises(ValueError, match="cannot export"):
        export.inference(regression, mlp_params, {}, info, name="forecast")
    gan = Task(mlp_task.init, mlp_task.loss, extras=mlp_task.extras, players=("g", "d"))
    with pytest.raises(ValueError, match="cannot export.*several players"):
        export.inference(gan, mlp_params, {}, info, name="gan")
    with pytest.raises(ValueError, match="is a directory"):
        export.to_stablehlo(inf, tmp_path)
    with pytest.raises(TypeError, match="needs inputs="):
        export.to_stablehlo(lambda x: x, tmp_path / "f.stablehlo")
    # the command line: a missing run, no format, an unknown format
    assert main(["export", str(tmp_path / "nope"), "--format", "stablehlo", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no checkpoint at" in err
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "m")]) == 2
    assert "--format is missing" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", str(tmp_path), "--format", "pdf", "--out", str(tmp_path / "m")])
    assert "invalid choice: 'pdf'" in capsys.readouterr().err


def test_a_plain_function_exports_with_its_input_specs(tmp_path):
    path = export.to_stablehlo(lambda x: (x * 2.0).sum(axis=1), tmp_path / "f.stablehlo",
                               inputs=[export.Input("x", ("B", 3))])
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.testing.assert_allclose(export.load_stablehlo(path)(x), (2 * x).sum(axis=1))


def _gpt_run(folder, data_dir):
    """A run directory of a tiny GPT on Tiny Shakespeare (random weights, step 0), written without training."""
    from funcdl.training import checkpoint

    opts = dict(GPT_OPTS, grad_chunks=1)
    info = DataInfo("tinyshakespeare", (8,), vocab_size=65, kind="language")
    task = get_model("gpt").build(info, **opts)
    params, state = task.init(jax.random.PRNGKey(1))
    checkpoint.save(folder / "checkpoint.npz", {"params": params, "state": state}, {"step": 0})
    config = {"model": "gpt", "data": "tinyshakespeare", "data_dir": str(data_dir), "model_options": opts,
              "train": {"seq_len": 8, "batch_size": 4}}
    (folder / "config.json").write_text(json.dumps(config))
    return task, params


def test_cli_round_trip_stablehlo(shared_data, tmp_path, capsys):
    run = tmp_path / "run"
    task, params = _gpt_run(run, shared_data / "tinyshakespeare")
    before = sorted(p.name for p in run.iterdir())
    out = tmp_path / "gpt.stablehlo"
    assert main(["export", str(run), "--format", "stablehlo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "tokens (B, T) int32, T <= 8" in printed and "max relative difference" in printed
    assert sorted(p.name for p in run.iterdir()) == before            # the run directory is untouched
    x = np.random.default_rng(0).integers(0, 65, (5, 6)).astype(np.int32)
    assert _rel(export.load_stablehlo(out)(x), jax.jit(task.apply)(params, {}, x)) <= TOL


# -- ONNX (jax2onnx + onnxruntime) ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_lenet_to_stablehlo_and_onnx(exports, tmp_path):
    entry = exports("lenet")
    _check_stablehlo(entry, "lenet")
    pytest.importorskip("jax2onnx")
    pytest.importorskip("onnxruntime")
    apply, params, state, inf, _ = entry
    loaded = export.load_onnx(export.to_onnx(inf, tmp_path / "lenet.onnx"))
    assert loaded.spec["inputs"][0]["shape"] == ["B", 12, 12, 1]
    for x in _batches(inf, "lenet"):
        assert _rel(loaded(*x), apply(params, state, *x)) <= TOL


@pytest.mark.slow
def test_mlp_to_onnx_in_float32_and_int8(exports, tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("jax2onnx")
    pytest.importorskip("onnxruntime")
    apply, params, state, inf, _ = exports("mlp")
    loaded = export.load_onnx(export.to_onnx(inf, tmp_path / "mlp.onnx"))
    for x in _batches(inf, "mlp"):
        assert _rel(loaded(*x), apply(params, state, *x)) <= TOL
    # int8 weights: stored as int8, dequantized in the graph; close to the float32 model, not equal to it
    task, params, state, info = _model("mlp")
    inf8 = export.inference(task, params, state, info, name="mlp", weights="int8")
    path = export.to_onnx(inf8, tmp_path / "mlp8.onnx")
    kinds = {t.data_type for t in onnx.load(str(path)).graph.initializer}
    assert onnx.TensorProto.INT8 in kinds
    x = export.example_inputs(inf8, {"B": 4})
    out = export.load_onnx(path)(*x)
    assert _rel(out, jax.jit(inf8.fn)(*x)) <= TOL
    assert 1e-6 < _rel(out, apply(params, state, *x)) < 0.05


@pytest.mark.slow
def test_cli_gpt_to_onnx(shared_data, tmp_path, capsys):
    """The GPT's ONNX takes any batch and any length up to the block size (dynamic B and T, as StableHLO)."""
    pytest.importorskip("jax2onnx")
    pytest.importorskip("onnxruntime")
    run = tmp_path / "run"
    task, params = _gpt_run(run, shared_data / "tinyshakespeare")
    out = tmp_path / "gpt.onnx"
    assert main(["export", str(run), "--format", "onnx", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "tokens (B, T) int32, T <= 8" in printed and "max relative difference" in printed
    loaded = export.load_onnx(out)
    assert [i.shape for i in loaded.handle.get_inputs()] == [["B", "T"]]
    rng = np.random.default_rng(1)
    for b, t in ((6, 8), (2, 3)):                      # neither is the check's batch of 3
        tokens = rng.integers(0, 65, (b, t)).astype(np.int32)
        assert _rel(loaded(tokens), task.apply(params, {}, tokens)) <= TOL
    with pytest.raises(ValueError, match="T <= 8"):
        loaded(np.zeros((2, 9), np.int32))
    assert main(["export", str(run), "--format", "onnx", "--seq-len", "9", "--out", str(tmp_path / "x.onnx")]) == 2
    assert "--seq-len must lie in 1 .. 8" in capsys.readouterr().err


@pytest.mark.slow
def test_onnx_rewrites_reverse_scans_and_pads(tmp_path):
    """What funcdl.export rewrites for jax2onnx (a reverse scan, as in a bidirectional RNN; a pad of a dynamic
    batch, as in a convolution) computes what JAX does."""
    pytest.importorskip("jax2onnx")
    pytest.importorskip("onnxruntime")

    def f(x):                                      # x (B, T, 3): a reverse running sum over T, then padded
        def step(carry, xt):
            carry = 0.5 * carry + xt
            return carry, carry
        _, ys = jax.lax.scan(step, x[:, 0] * 0, x.swapaxes(0, 1), reverse=True)
        return jax.lax.pad(ys.swapaxes(0, 1), np.float32(-1), ((0, 0, 0), (2, -1, 0), (1, 0, 0)))

    path = export.to_onnx(f, tmp_path / "f.onnx", inputs=[export.Input("x", ("B", 4, 3))])
    x = np.random.default_rng(0).normal(size=(5, 4, 3)).astype(np.float32)
    assert _rel(export.load_onnx(path)(x), jax.jit(f)(x)) <= TOL
