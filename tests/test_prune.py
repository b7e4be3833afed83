"""Pruning (funcdl.compress.prune) and the masked optimizer (optim.masking): tiny synthetic pytrees only."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from funcdl.optim.masking import SparseState, masked_sparse, masks_of

from funcdl import optim
from funcdl.compress import prune as P


def _params(key=0):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(key), 3)
    return {"layers": [{"w": jax.random.normal(k1, (12, 8)), "b": jnp.ones(8)},
                       {"w": jax.random.normal(k2, (8, 4)), "b": jnp.ones(4)}],
            "conv": {"w": jax.random.normal(k3, (3, 3, 2, 6))}}


def test_magnitude_masks_layer_and_global_drop_the_smallest():
    params = _params()
    m = P.magnitude_masks(params, 0.5)
    assert m["layers"][0]["b"] is None and m["layers"][0]["w"].shape == (12, 8)
    for w, k in ((params["layers"][0]["w"], m["layers"][0]["w"]), (params["conv"]["w"], m["conv"]["w"])):
        a, k = np.abs(np.asarray(w)), np.asarray(k)
        assert k.sum() == a.size // 2                              # exact count per layer
        assert a[k == 1].min() >= a[k == 0].max()                  # the kept weights are the largest
    g = P.magnitude_masks(params, 0.75, scope="global")
    leaves = [params["layers"][0]["w"], params["layers"][1]["w"], params["conv"]["w"]]
    kept = [np.asarray(x) for x in (g["layers"][0]["w"], g["layers"][1]["w"], g["conv"]["w"])]
    allw = np.concatenate([np.abs(np.asarray(w)).ravel() for w in leaves])
    allk = np.concatenate([k.ravel() for k in kept])
    assert allk.sum() == round(0.25 * allw.size) and allw[allk == 1].min() >= allw[allk == 0].max()
    assert P.mask_sparsity(g) == pytest.approx(0.75, abs=1e-3)
    # a pattern chooses the leaves; bad input is one clear error
    only = P.magnitude_masks(params, 0.5, pattern="^conv/")
    assert only["layers"][0]["w"] is None and only["conv"]["w"] is not None
    with pytest.raises(ValueError, match="sparsity must lie in"):
        P.magnitude_masks(params, 1.0)
    with pytest.raises(ValueError, match="nothing to prune"):
        P.magnitude_masks(params, 0.5, pattern="nomatch")


def test_masks_only_shrink_and_prune_remaining_rounds():
    params = _params()
    m1 = P.magnitude_masks(params, 0.5)
    moved = jax.tree.map(lambda w: -w * 3.0 + 0.01, params)          # different magnitudes now
    m2 = P.prune_remaining(moved, m1, 0.2)
    for a, b in zip(jax.tree.leaves(m1), jax.tree.leaves(m2), strict=True):
        a, b = np.asarray(a), np.asarray(b)
        assert not np.any((a == 0) & (b == 1))                        # a pruned weight stays pruned
        assert b.sum() == round(a.sum() * 0.8) or abs(b.sum() - a.sum() * 0.8) <= 1
    m3 = P.prune_remaining(moved, m1, 0.2, overrides={"layers/1/": 0.1})
    assert np.asarray(m3["layers"][1]["w"]).sum() == round(16 * 0.9)


def test_structured_channels_and_heads():
    params = _params()
    m = P.structured_masks(params, 0.5, norm="l1")
    w, k = np.asarray(params["layers"][0]["w"]), np.asarray(m["layers"][0]["w"])
    cols = k.all(axis=0)
    assert cols.sum() == 4 and np.all(k == cols[None, :])            # whole output units
    np.testing.assert_array_equal(np.asarray(m["layers"][0]["b"]), cols.astype(np.float32))   # with their bias
    norms = np.abs(w).sum(0)
    assert norms[cols].min() >= norms[~cols].max()
    assert np.asarray(m["conv"]["w"]).reshape(-1, 6).all(0).sum() == 3
    d, h = 8, 4
    attn = {"blocks": [{"attn": {"qkv": {"w": jax.random.normal(jax.random.PRNGKey(1), (d, 3 * d))},
                                 "proj": {"w": jax.random.normal(jax.random.PRNGKey(2), (d, d))}}}]}
    hm = P.structured_masks(attn, 0.5, kind="heads", n_heads=h)
    q = np.asarray(hm["blocks"][0]["attn"]["qkv"]["w"])[0].reshape(3, h, d // h)
    heads = q[0, :, 0]
    assert heads.sum() == 2 and np.all(q == heads[None, :, None])  # same heads kept in q, k and v
    np.testing.assert_array_equal(np.asarray(hm["blocks"][0]["attn"]["proj"]["w"])[:, 0], np.repeat(heads, d // h))
    with pytest.raises(ValueError, match="no attention layer"):
        P.structured_masks(params, 0.5, kind="heads", n_heads=2)


def test_cubic_schedule_matches_zhu_gupta():
    s = [float(P.cubic_sparsity(t, 0.9, begin=10, end=50, every=10, initial=0.1)) for t in range(0, 70)]
    assert s[0] == pytest.approx(0.1) and s[9] == pytest.approx(0.1)
    for t in (10, 20, 30, 40, 50):
        assert s[t] == pytest.approx(0.9 + (0.1 - 0.9) * (1 - (t - 10) / 40) ** 3, abs=1e-6)
    assert s[25] == s[20] and s[69] == pytest.approx(0.9)
    assert all(b >= a - 1e-7 for a, b in zip(s[:-1], s[1:], strict=True))
    with pytest.raises(ValueError, match="end"):
        P.cubic_sparsity(0, 0.9, begin=5, end=5)
    assert P.parse_prune("gradual:0.9") == (0.9, "layer")
    with pytest.raises(ValueError, match="gradual:S"):
        P.parse_prune("cubic:0.9")


@pytest.mark.parametrize("name,hyper", [("sgd", {"momentum": 0.9, "weight_decay": 0.1}),
                                        ("adamw", {"weight_decay": 0.5}), ("adafactor", {})])
def test_masked_optimizer_keeps_pruned_weights_and_moments_zero(name, hyper):
    params = _params()
    masks = P.magnitude_masks(params, 0.6)           # params not yet pruned: the first update zeroes them
    opt = masked_sparse(optim.create(name, 0.05, **hyper), masks)
    state = opt.init(params)
    update = jax.jit(opt.update)
    p = params
    for i in range(3):
        g = jax.tree.map(lambda x, c=1.0 + i: jnp.full_like(x, c), p)
        u, state = update(g, state, p)
        p = optim.apply_updates(p, u)
    for path in (("layers", 0), ("layers", 1)):
        w = np.asarray(p[path[0]][path[1]]["w"])
        k = np.asarray(masks[path[0]][path[1]]["w"])
        assert np.all(w[k == 0] == 0) and np.all(w[k == 1] != params[path[0]][path[1]]["w"][k == 1])
    assert np.all(np.asarray(p["layers"][0]["b"]) != 1.0)             # unmasked leaves train as usual
    inner = jax.tree_util.tree_flatten_with_path(state.inner)[0]
    for keypath, leaf in inner:                                         # moments shaped like params: zero if pruned
        if np.shape(leaf) == (12, 8):
            assert np.all(np.asarray(leaf)[np.asarray(masks["layers"][0]["w"]) == 0] == 0), keypath


def test_masked_matches_inner_on_kept_weights_and_gradual_refresh():
    params = _params()
    ones = jax.tree.map(lambda x: jnp.ones_like(x), params)
    g = jax.tree.map(lambda x: jnp.sin(x), params)
    u_plain, _ = optim.adam(1e-2).update(g, optim.adam(1e-2).init(params), params)
    wrapped = masked_sparse(optim.adam(1e-2), ones)
    u_mask, _ = wrapped.update(g, wrapped.init(params), params)
    for a, b in zip(jax.tree.leaves(u_plain), jax.tree.leaves(u_mask), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    opt = masked_sparse(optim.sgd(0.01), P.ones_masks,
                        refresh=P.gradual_refresh(0.8, begin=2, end=8, every=2))
    state, p = opt.init(params), params
    step = jax.jit(lambda p, s: opt.update(jax.tree.map(jnp.ones_like, p), s, p))
    seen = []
    for _ in range(12):
        u, state = step(p, state)
        p = optim.apply_updates(p, u)
        seen.append(P.sparsity_report(p)["sparsity"])
    assert seen[:4] == [0, 0, 0, 0] and seen[4] > 0                    # s(t0) = s_i = 0; next change at t0 + dt
    assert all(b >= a for a, b in zip(seen[:-1], seen[1:], strict=True)) and seen[-1] == pytest.approx(0.8, abs=2e-3)
    assert isinstance(state, SparseState) and masks_of(state) is state.masks
    with pytest.raises(ValueError, match="shape"):
        masked_sparse(optim.sgd(0.1), {"a": jnp.ones(3)}).init({"a": jnp.ones(4)})
    with pytest.raises(TypeError, match="GradientTransformation"):
        masked_sparse(optim.sgd, None)


def test_report_and_prune_command_on_a_tiny_run(tmp_path):
    report = P.sparsity_report(P.magnitude_masks(_params(), 0.5, scope="global"))
    assert report["sparsity"] == pytest.approx(0.5, abs=1e-2) and "prunable total" in P.format_report(report)
    from funcdl.commands.prune import _check_args

    class Args:
        sparsity, finetune_steps, lr, structured, scope = 0.5, 0, None, None, "layer"
        run, out = str(tmp_path / "run"), str(tmp_path / "run")
    with pytest.raises(ValueError, match="differ"):
        _check_args(Args)
    Args.out = str(tmp_path / "new")
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "x").write_text(json.dumps({}))
    with pytest.raises(ValueError, match="not an empty folder"):
        _check_args(Args)
    Args.sparsity = 1.5
    with pytest.raises(ValueError, match="--sparsity"):
        _check_args(Args)


@pytest.mark.slow
def test_gradual_training_resume_and_prune_command(tmp_path, monkeypatch, capsys):
    from funcdl.commands.cli import main
    from funcdl.commands.train import load_run
    from funcdl.training.config import TrainConfig

    monkeypatch.setenv("FUNCDL_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv("FUNCDL_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    with pytest.raises(ValueError, match="gradual:S"):
        TrainConfig(prune="gradual:2")
    run = tmp_path / "run"
    base = ["train", "mlp", "--data", "mnist1d", "--steps", "40", "--set", "hidden=16", "--set", "dropout=0",
            "--quiet", "--no-compile-cache", "--out", str(run)]
    assert main([*base, "--set", "prune=gradual:0.5", "--set", "stop_after=20", "--set", "plots=false"]) == 0
    assert main(["train", "mlp", "--out", str(run), "--resume", "--steps", "40", "--quiet",
                 "--no-compile-cache"]) == 0                # the masks come back with the optimizer state
    params = load_run(run)["params"]
    assert P.sparsity_report(params)["sparsity"] == pytest.approx(0.5, abs=0.01)
    out = tmp_path / "pruned"
    assert main(["prune", str(run), "--sparsity", "0.75", "--finetune-steps", "5", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["sparsity_report"]["sparsity"] == pytest.approx(0.75, abs=0.01) and "test_accuracy" in s["before"]
    pruned = load_run(out)["params"]
    assert P.sparsity_report(pruned)["sparsity"] == pytest.approx(0.75, abs=0.01)
    assert main(["prune", str(run), "--sparsity", "0.5", "--out", str(out)]) == 2   # never over a run
    assert "not an empty folder" in capsys.readouterr().err
