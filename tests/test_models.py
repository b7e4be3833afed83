"""Every registered model, checked by construction (``funcdl.models.MODELS``; nothing here names a model).

For each model: build it at its registered ``small`` size for its ``small_data`` DataInfo, make a fake batch from
that DataInfo (classification, language, regression or seq2seq data), then
* its whole-model gradient with the hand-derived rules equals pure autodiff (``funcdl.autodiff``), leaf by leaf,
  in float64, in training mode (dropout on, batch statistics);
* a few Adam steps on the batch lower the loss;
* the loss, metrics, state and ``apply`` have the shapes the training loop expects.
A new model is covered by registering it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from funcdl.models import MODELS, get_model

import funcdl as fd
from funcdl.training.task import DataInfo

pytestmark = pytest.mark.slow          # compiles every configuration (CI runs it; the quick subset skips it)

BATCH = 4
STEPS = 8
TOL = 1e-8          # float64: the rules are exact formulas, so hand and autodiff agree to rounding
# compiling is what costs here (the models are tiny): XLA's cheaper CPU code generation halves it
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True,
                "xla_cpu_use_fusion_emitters": False}   # the older emitters compile these programs ~40% faster


def _compile(fn, *args):
    return jax.jit(fn).lower(*args).compile(FAST_COMPILE)


def fake_batch(info: DataInfo, batch: int = BATCH, seed: int = 0) -> dict:
    """Random inputs and targets shaped as the data set ``info`` describes."""
    rng = np.random.default_rng(seed)
    extras = info.extras or {}
    if "fake_batch" in extras:                           # a model whose batches are more than x and y (boxes)
        return {k: jnp.asarray(v) for k, v in extras["fake_batch"](batch, seed).items()}
    if extras.get("task") == "seq2seq":                  # ids after PAD, BOS, EOS; targets end in EOS, then PAD
        pad, eos = extras.get("pad", 0), extras.get("eos", 2)
        first = 1 + max(pad, extras.get("bos", 1), eos)

        def padded(length, end):
            ids = rng.integers(first, info.vocab_size, (batch, length))
            n = rng.integers(2, length - 1, batch)
            n[0] = length - 1                             # one example as long as it gets
            col = np.arange(length)[None]
            if end is not None:
                ids = np.where(col == n[:, None], end, ids)
                return np.where(col > n[:, None], pad, ids)
            return np.where(col >= n[:, None], pad, ids)

        return {"x": jnp.asarray(padded(extras["src_len"], None), jnp.int32),
                "y": jnp.asarray(padded(extras["tgt_len"], eos), jnp.int32)}
    if info.kind == "language":
        shape = (batch, *info.input_shape)
        return {"x": jnp.asarray(rng.integers(0, info.vocab_size, shape), jnp.int32),
                "y": jnp.asarray(rng.integers(0, info.vocab_size, shape), jnp.int32)}
    if info.vocab_size is not None:                      # a token classifier: ids in, one class per row out
        return {"x": jnp.asarray(rng.integers(0, info.vocab_size, (batch, *info.input_shape)), jnp.int32),
                "y": jnp.asarray(rng.integers(0, info.num_classes, batch), jnp.int32)}
    x = jnp.asarray(rng.normal(size=(batch, *info.input_shape)), jnp.float32)
    if info.kind == "regression":
        return {"x": x, "y": jnp.asarray(rng.normal(size=(batch, int(extras["horizon"]))), jnp.float32)}
    return {"x": x, "y": jnp.asarray(rng.integers(0, info.num_classes, batch), jnp.int32)}


def _f64(tree):
    return jax.tree.map(lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def _numpy(tree):
    return jax.tree.map(np.asarray, tree)


def leaf_errors(g_hand, g_auto) -> dict:
    """``path -> max|a - b| / (max|a| + max|b|)`` per leaf. The denominator has a floor of 1e-6 times the largest
    gradient entry of the model: a leaf whose exact gradient is zero (the shift of a batch norm that feeds another
    batch norm) holds rounding noise on both sides, and a ratio of two noises means nothing."""
    flat_h = jax.tree_util.tree_flatten_with_path(_numpy(g_hand))[0]
    flat_a = jax.tree.leaves(_numpy(g_auto))
    scale = max(float(np.abs(g).max()) for _, g in flat_h)
    out = {}
    for (path, a), b in zip(flat_h, flat_a, strict=True):
        denom = max(np.abs(a).max() + np.abs(b).max(), 1e-6 * scale, 1e-300)
        out[jax.tree_util.keystr(path)] = float(np.abs(a - b).max() / denom)
    return out


def _adam(params, m, v, g, t, lr=1e-2, b1=0.9, b2=0.999, eps=1e-8):
    """Adam written out in NumPy: this file checks the models, not funcdl.optim (tests/test_optim.py does)."""
    m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, m, g)
    v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, v, g)
    params = jax.tree.map(lambda p, m, v: p - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps), params, m, v)
    return params, m, v


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_gradient_and_training(name):
    entry = MODELS[name]
    info = entry.small_data
    task = entry.build(info, **entry.small)
    batch = {k: np.asarray(a, np.float64 if np.issubdtype(a.dtype, np.floating) else a.dtype)
             for k, a in fake_batch(info).items()}
    # a PRNG that XLA compiles fast (with threefry, compiling a model's init takes ~4x longer)
    init_key, key = jax.random.key(0, impl="unsafe_rbg"), jax.random.key(1, impl="unsafe_rbg")
    params, state = _compile(lambda k: _f64(task.init(k)), init_key)(init_key)

    def loss(p, s):
        return task.loss(p, s, batch, key, True)

    def both(p, s):       # one compiled program for both gradients
        return jax.value_and_grad(loss, has_aux=True)(p, s), jax.grad(fd.autodiff(loss), has_aux=True)(p, s)[0]

    grads = _compile(both, params, state)

    ((first, (new_state, metrics)), g_hand), g_auto = grads(params, state)

    # the Task: a finite scalar loss, metrics as the loop reports them, the state's structure kept
    assert first.shape == () and np.isfinite(float(first))
    assert float(metrics["loss"]) == pytest.approx(float(first))
    if task.kind == "classification":
        assert 0.0 <= float(metrics["accuracy"]) <= 1.0
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    out = jax.eval_shape(task.apply, params, state, batch["x"])
    assert jax.tree.leaves(out)[0].shape[0] == BATCH

    # hand-derived rules vs pure autodiff, leaf by leaf
    assert jax.tree.structure(g_hand) == jax.tree.structure(g_auto)
    errors = leaf_errors(g_hand, g_auto)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOL, f"{name}: {worst} relative error {errors[worst]:.2e}"
    assert any(np.abs(g).max() > 0 for g in jax.tree.leaves(_numpy(g_hand)))

    # a few Adam steps on the batch lower the loss (state carried, as in the training loop)
    params, g = _numpy(params), _numpy(g_hand)
    m, v = jax.tree.map(np.zeros_like, params), jax.tree.map(np.zeros_like, params)
    s = state
    for t in range(1, STEPS + 1):
        params, m, v = _adam(params, m, v, g, t)
        ((value, (s, _)), g), _ = grads(params, s)
        g = _numpy(g)
    assert float(value) < float(first), f"{name}: loss {float(first):.4f} -> {float(value):.4f} after {STEPS} steps"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_unknown_option_names_the_option_and_the_valid_ones(name):
    entry = MODELS[name]
    option = (entry.options or ("option",))[0]
    typo = option[:-1] + ("x" if option[-1] != "x" else "y")
    with pytest.raises(ValueError, match=f"unknown option '{typo}' for model '{name}'; valid options: ") as err:
        entry.build(entry.small_data, **{typo: 1})
    assert "\n" not in str(err.value)
    if entry.options:
        assert f"did you mean '{option}'?" in str(err.value)


def test_unknown_option_message():
    with pytest.raises(ValueError) as err:
        get_model("mlp").build(DataInfo("x", (40,), num_classes=10), hiden=64)
    assert str(err.value) == ("unknown option 'hiden' for model 'mlp'; valid options: hidden, activation, dropout; "
                              "did you mean 'hidden'?")


def test_registration_checks_the_builder():
    from funcdl.models.registry import register

    info = DataInfo("x", (4,), num_classes=2)

    def loose(info, **options):
        return None

    def positional(info, hidden=3):
        return None

    def fine(info, *, hidden=3):
        return None

    for build in (loose, positional):
        with pytest.raises(TypeError, match="keyword-only"):
            register("test-only", build, defaults={}, description="", small={}, small_data=info)
    with pytest.raises(ValueError, match="unknown option 'hiden'"):
        register("test-only", fine, defaults={"hiden": 3}, description="", small={}, small_data=info)
    with pytest.raises(ValueError, match="unknown option 'width'"):
        register("test-only", fine, defaults={}, description="", small={"width": 3}, small_data=info)

    def shadowed(info, *, schedule="linear"):       # --set schedule=... sets the learning-rate schedule
        return None

    with pytest.raises(TypeError, match="'schedule' is also a training option"):
        register("test-only", shadowed, defaults={}, description="", small={}, small_data=info)
    assert "test-only" not in MODELS
