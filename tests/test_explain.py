"""funcdl.explain's attributions, class activation maps and sanity checks, on tiny models whose answers are known
in closed form; ``with_rules`` (the backward swap guided backpropagation runs on); the ``funcdl explain``
command on a fake run; Grad-CAM against a direct PyTorch computation (skipped without torch)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fd
from funcdl.core.primitive import Instead, with_rules
from funcdl.explain import attribution as attr
from funcdl.explain import cam, sanity

F64 = jnp.float64


def _cnn_params(key, cin=1, c1=4, c2=5, classes=3):
    k = jax.random.split(key, 6)
    n = lambda kk, shape, s: s * jax.random.normal(kk, shape, F64)   # noqa: E731
    return {"conv1": {"w": n(k[0], (3, 3, cin, c1), 0.5), "b": n(k[1], (c1,), 0.1)},
            "conv2": {"w": n(k[2], (3, 3, c1, c2), 0.4), "b": n(k[3], (c2,), 0.1)},
            "head": {"w": n(k[4], (c2, classes), 1.0), "b": n(k[5], (classes,), 0.1)}}


def _cnn(p, x):
    """conv3x3 -> relu -> conv3x3 -> relu -> global average pool -> dense: the CAM architecture."""
    h = fd.relu(fd.conv2d(x, p["conv1"]["w"], p["conv1"]["b"], padding="SAME"))
    h = fd.relu(fd.conv2d(h, p["conv2"]["w"], p["conv2"]["b"], padding="SAME"))
    return fd.dense(fd.global_avg_pool(h), p["head"]["w"], p["head"]["b"])


def _features(p, x):
    h = fd.relu(fd.conv2d(x, p["conv1"]["w"], p["conv1"]["b"], padding="SAME"))
    return fd.relu(fd.conv2d(h, p["conv2"]["w"], p["conv2"]["b"], padding="SAME"))


def _mlp(p, x):
    return fd.dense(fd.relu(fd.dense(x, p["w1"], None)), p["w2"], None)


@pytest.fixture(scope="module")
def cnn():
    params = _cnn_params(jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 6, 6, 1), F64)
    return params, x


# -- with_rules ------------------------------------------------------------------------------------------------


def _positive_only(res, dy):
    (y,) = res
    return (jnp.where((y > 0) & (dy > 0), dy, 0),)


def test_with_rules_swaps_the_backward_and_keeps_jit_caches_apart():
    x = jnp.array([-1.0, 0.5, 2.0, 3.0], F64)
    c = jnp.array([1.0, -2.0, 3.0, -4.0], F64)
    f = lambda x: jnp.sum(fd.relu(x) * c)          # noqa: E731
    plain, swapped = jax.jit(jax.grad(f)), jax.jit(jax.grad(with_rules(f, relu=_positive_only)))
    np.testing.assert_array_equal(plain(x), [0.0, -2.0, 3.0, -4.0])
    np.testing.assert_array_equal(swapped(x), [0.0, 0.0, 3.0, 0.0])
    np.testing.assert_array_equal(plain(x), [0.0, -2.0, 3.0, -4.0])     # no leak from the other trace
    # the forward is the primitive's own; the rule holds in reference mode too; an inner rule wins
    assert float(with_rules(f, relu=_positive_only)(x)) == float(f(x))
    np.testing.assert_array_equal(jax.grad(fd.autodiff(with_rules(f, relu=_positive_only)))(x), [0, 0, 3, 0])
    identity_bwd = lambda res, dy: (dy,)           # noqa: E731
    inner = with_rules(with_rules(f, relu=identity_bwd), relu=_positive_only)
    np.testing.assert_array_equal(jax.grad(inner)(x), [1.0, -2.0, 3.0, -4.0])
    with pytest.raises(KeyError, match="unknown primitive 'rleu'"):
        with_rules(f, rleu=_positive_only)


def test_instead_runs_in_place_of_the_primitive():
    seen = []

    def tap(run, x):
        y = run(x)
        seen.append(y.shape)
        return 2 * y

    x = jnp.array([-1.0, 2.0], F64)
    out = with_rules(lambda x: fd.relu(fd.relu(x)), relu=Instead(tap))(x)
    np.testing.assert_array_equal(out, [0.0, 8.0])
    assert seen == [(2,), (2,)]


# -- attributions -------------------------------------------------------------------------------------------------


def test_gradient_methods_match_closed_forms():
    """f(x) = W2^T relu(W1^T x): dS/dx = W1 (1[h > 0] W2[:, c]); guided keeps only W2[:, c] > 0 too."""
    k = jax.random.split(jax.random.PRNGKey(2), 3)
    p = {"w1": jax.random.normal(k[0], (5, 7), F64), "w2": jax.random.normal(k[1], (7, 3), F64)}
    x = jax.random.normal(k[2], (4, 5), F64)
    h = x @ p["w1"]
    c = jnp.argmax(_mlp(p, x), -1)
    w2c = p["w2"][:, c].T                                            # (N, 7)
    grad = ((h > 0) * w2c) @ p["w1"].T
    guided = ((h > 0) * (w2c > 0) * w2c) @ p["w1"].T
    np.testing.assert_allclose(attr.gradient(_mlp, p, x), grad, rtol=1e-12)
    np.testing.assert_allclose(attr.gradient_x_input(_mlp, p, x), x * grad, rtol=1e-12)
    np.testing.assert_allclose(attr.guided_backprop(_mlp, p, x), guided, rtol=1e-12, atol=1e-14)
    assert not np.allclose(guided, grad)
    # no noise: SmoothGrad is the gradient; a fixed target; a linear model's IG is exactly (x - x') w
    np.testing.assert_allclose(attr.smoothgrad(_mlp, p, x, key=jax.random.PRNGKey(0), samples=2, noise=0.0), grad)
    g1 = attr.gradient(_mlp, p, x, target=1)
    np.testing.assert_allclose(g1, ((h > 0) * p["w2"][:, 1]) @ p["w1"].T, rtol=1e-12)
    lin = lambda q, x: x @ q                                       # noqa: E731
    w = p["w1"][:, :3]
    ig = attr.integrated_gradients(lin, w, x, target=2, baseline=0.5, steps=3)
    np.testing.assert_allclose(ig, (x - 0.5) * w[:, 2], rtol=1e-12)
    with pytest.raises(ValueError, match="steps and chunk must be >= 1"):
        attr.integrated_gradients(lin, w, x, steps=0)


def test_integrated_gradients_complete_on_a_cnn(cnn):
    params, x = cnn
    c = attr.completeness(_cnn, params, x, attr.integrated_gradients(_cnn, params, x, steps=256))
    assert np.all(np.abs(c["delta"]) > 1e-3)
    assert float(jnp.max(c["error"])) < 0.01, c


def test_attributions_to_a_layer_and_bad_layers(cnn):
    params, x = cnn
    value, model = attr.layer_function(_cnn, params, x, "relu:1")
    np.testing.assert_allclose(value(params, x), _features(params, x))
    np.testing.assert_allclose(model(params, x, value(params, x)), _cnn(params, x))
    g = attr.gradient(_cnn, params, x, layer="relu:-1")               # d logit / d features = W[:, c] / 36
    c = jnp.argmax(_cnn(params, x), -1)
    np.testing.assert_allclose(g, jnp.broadcast_to(params["head"]["w"][:, c].T[:, None, None] / 36, g.shape))
    with pytest.raises(ValueError, match="calls relu 2 times"):
        attr.gradient(_cnn, params, x, layer="relu:2")
    with pytest.raises(ValueError, match="expected PRIMITIVE:INDEX"):
        attr.gradient(_cnn, params, x, layer="rleu:0")
    with pytest.raises(ValueError, match="never calls tanh"):
        attr.gradient(_cnn, params, x, layer="tanh")


# -- class activation maps ----------------------------------------------------------------------------------------


def test_gradcam_is_cam_for_a_pooled_head(cnn):
    """With global average pooling before the dense head, Grad-CAM's weights are W[:, c] / M: the CAM."""
    params, x = cnn
    a = _features(params, x)
    c = jnp.argmax(_cnn(params, x), -1)
    expected = jax.nn.relu(jnp.einsum("nhwk,nk->nhw", a, params["head"]["w"][:, c].T / 36))
    assert cam.default_cam_layer(_cnn, params, x) == "relu:1"
    np.testing.assert_allclose(cam.gradcam(_cnn, params, x, resize=False), expected, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(cam.gradcam(_cnn, params, x), expected, rtol=1e-10, atol=1e-14)   # same size
    pp = cam.gradcam_plus_plus(_cnn, params, x, resize=False)
    assert pp.shape == (3, 6, 6) and float(pp.min()) >= 0 and float(pp.max()) > 0
    small = cam.gradcam(_cnn, params, x[:, ::2, ::2], layer="relu:0")     # 3x3 maps resized stay 3x3
    assert small.shape == (3, 3, 3)
    up = cam.resize_map(expected, (12, 12))
    assert up.shape == (3, 12, 12)
    mlp_params = {"w1": jnp.ones((4, 3)), "w2": jnp.ones((3, 2))}
    with pytest.raises(ValueError, match="no ReLU with a feature map"):
        cam.gradcam(_mlp, mlp_params, jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="no positions"):
        cam.gradcam(_mlp, mlp_params, jnp.ones((2, 4)), layer="relu:0")


def test_tokens_to_map():
    tokens = jnp.arange(2 * 5 * 3.0).reshape(2, 5, 3)
    m = cam.tokens_to_map((2, 2))(tokens)
    np.testing.assert_array_equal(m[:, 1, 0], tokens[:, 3])
    with pytest.raises(ValueError, match="expected tokens"):
        cam.tokens_to_map((3, 3))(tokens)


@pytest.mark.slow
def test_gradcam_on_a_vit():
    from funcdl.models import vit

    config = vit.Config(image_shape=(8, 8, 1), num_classes=3, patch=4, n_layer=1, n_head=2, d_model=8)
    params, _ = vit.init(jax.random.PRNGKey(0), config)
    apply = lambda p, x: vit.apply(p, {}, x, config)[0]              # noqa: E731
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 1))
    maps = cam.gradcam(apply, params, x, layer="layer_norm:-3", to_features=cam.tokens_to_map((2, 2)))
    coarse = cam.gradcam(apply, params, x, layer="layer_norm:-3", to_features=cam.tokens_to_map((2, 2)),
                         resize=False)
    assert maps.shape == (2, 8, 8) and coarse.shape == (2, 2, 2) and float(maps.max()) > 0
    # the last block's second layer norm feeds a per-token MLP: the [CLS] logits never see its patch tokens
    late = cam.gradcam(apply, params, x, layer="layer_norm:-2", to_features=cam.tokens_to_map((2, 2)))
    assert float(jnp.max(late)) == 0.0


# -- sanity checks ------------------------------------------------------------------------------------------------


def test_spearman_ranks_with_ties():
    a = np.array([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 1.0, 2.0], [1.0, 1.0, 1.0, 1.0]])
    b = np.array([[10.0, 20.0, 30.0, 40.0], [4.0, 3.0, 2.0, 1.0], [0.0, 1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]])
    r = sanity.spearman(a, b)
    # row 3: ranks (1.5, 1.5, 3, 4) against (1, 2, 3, 4): Pearson of the ranks
    ra, rb = np.array([1.5, 1.5, 3, 4]), np.arange(1.0, 5)
    expected = np.corrcoef(ra, rb)[0, 1]
    np.testing.assert_allclose(r, [1.0, -1.0, expected, 0.0])


def test_layer_groups_follow_the_forward_and_randomize(cnn):
    params, x = cnn
    reordered = {"z_first": params["conv1"], "a_last": params["head"], "m": params["conv2"]}
    apply = lambda p, x: _cnn({"conv1": p["z_first"], "conv2": p["m"], "head": p["a_last"]}, x)   # noqa: E731
    groups = sanity.layer_groups(apply, reordered, x)
    assert [g for g, _ in groups] == ["z_first", "m", "a_last"]
    assert sanity._group_name(jax.tree_util.tree_flatten_with_path({"stages": [[{"convs": [{"w": 1}]}]]})[0][0][0]) \
        == "stages/0/0"
    groups = sanity.layer_groups(_cnn, params, x)
    rnd = sanity.randomize(params, groups[-1][1], jax.random.PRNGKey(0))
    assert np.array_equal(rnd["conv1"]["w"], params["conv1"]["w"])
    assert not np.allclose(rnd["head"]["w"], params["head"]["w"])
    fresh = _cnn_params(jax.random.PRNGKey(7))
    rnd = sanity.randomize(params, groups[-1][1], jax.random.PRNGKey(0), fresh)
    np.testing.assert_array_equal(rnd["head"]["w"], fresh["head"]["w"])
    with pytest.raises(ValueError, match="structure"):
        sanity.randomize(params, groups[-1][1], jax.random.PRNGKey(0), {"w": 1.0})


def test_cascading_randomization_and_deletion_insertion(cnn):
    params, x = cnn
    result = sanity.cascading_randomization(_cnn, params, x, methods=("gradient",))
    assert result["layers"] == ["head", "conv2", "conv1"]
    assert result["correlation"]["gradient"].shape == (3, 3)
    assert result["maps"]["gradient"].shape == (4, 3, 6, 6)
    assert np.all(np.abs(result["correlation"]["gradient"]) <= 1 + 1e-12)
    maps = sanity.saliency_map("gradient", _cnn, params, x, target=jnp.argmax(_cnn(params, x), -1))
    np.testing.assert_allclose(maps, result["maps"]["gradient"][0])
    curves = sanity.deletion_insertion(_cnn, params, x, maps, steps=4)
    probs = jax.nn.softmax(_cnn(params, x), -1)
    c = jnp.argmax(probs, -1)
    p_x = probs[jnp.arange(3), c]
    p_base = jax.nn.softmax(_cnn(params, attr.default_baseline(x)), -1)[jnp.arange(3), c]
    np.testing.assert_allclose(curves["deletion"][:, 0], p_x, rtol=1e-10)
    np.testing.assert_allclose(curves["deletion"][:, -1], p_base, rtol=1e-10)
    np.testing.assert_allclose(curves["insertion"][:, 0], p_base, rtol=1e-10)
    np.testing.assert_allclose(curves["insertion"][:, -1], p_x, rtol=1e-10)
    np.testing.assert_allclose(curves["fraction"], [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(sanity.auc([0, 0.5, 1], np.array([[1.0, 0.5, 0.0]])), [0.5])
    with pytest.raises(ValueError, match="do not match"):
        sanity.deletion_insertion(_cnn, params, x, maps[:, :3])
    with pytest.raises(ValueError, match="unknown attribution method"):
        sanity.saliency_map("lime", _cnn, params, x)


# -- against PyTorch ----------------------------------------------------------------------------------------------


def test_gradcam_agrees_with_torch(cnn):
    torch = pytest.importorskip("torch")
    params, x = cnn
    t = lambda a: torch.tensor(np.asarray(a))                     # noqa: E731
    conv = lambda h, p: torch.nn.functional.conv2d(h, t(p["w"]).permute(3, 2, 0, 1), t(p["b"]), padding=1)  # noqa
    xt = t(x).permute(0, 3, 1, 2).requires_grad_(True)
    a = torch.relu(conv(torch.relu(conv(xt, params["conv1"])), params["conv2"]))
    a.retain_grad()
    logits = a.mean((2, 3)) @ t(params["head"]["w"]) + t(params["head"]["b"])
    c = logits.argmax(1)
    logits[torch.arange(3), c].sum().backward()
    weights = a.grad.mean((2, 3))
    expected = torch.relu((weights[:, :, None, None] * a).sum(1)).detach().numpy()
    np.testing.assert_allclose(cam.gradcam(_cnn, params, x, resize=False), expected, rtol=1e-10, atol=1e-13)


# -- the command line ---------------------------------------------------------------------------------------------


def test_parse_index():
    from funcdl.commands.explain import parse_index

    assert parse_index("0:3", 10) == [0, 1, 2] and parse_index("7", 10) == [7] and parse_index("2,5", 10) == [2, 5]
    assert parse_index("8:", 10) == [8, 9]
    for text, msg in [("a:b", "--index expects"), ("5:99", "goes past"), ("3:3", "selects nothing"),
                      ("-1", "goes past")]:
        with pytest.raises(ValueError, match=msg):
            parse_index(text, 10)


def _fake_run(folder, data_dir):
    """An untrained small ResNet 'run' on the bundled 8x8 digits (checkpoint + config.json)."""
    from funcdl.models import get_model

    from funcdl.training import checkpoint
    from funcdl.training.task import DataInfo

    opts = {"widths": (4, 8), "blocks": (1, 1)}
    task = get_model("resnet").build(DataInfo("digits", (8, 8, 1), num_classes=10), **opts)
    params, state = task.init(jax.random.PRNGKey(0))
    folder.mkdir()
    checkpoint.save(folder / "checkpoint.npz", {"params": params, "state": state}, {"step": 0})
    config = {"model": "resnet", "data": "digits", "model_options": opts, "train": {"batch_size": 8}}
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.slow
def test_cli_writes_overlays_and_maps(tmp_path, capsys):
    pytest.importorskip("sklearn")
    from funcdl.commands.cli import main

    run = tmp_path / "run"
    _fake_run(run, None)
    before = sorted(p.name for p in run.iterdir())
    out = tmp_path / "maps"
    assert main(["explain", str(run), "--method", "gradcam", "--index", "0:3", "--out", str(out)]) == 0
    assert "gradcam maps of 3 test examples" in capsys.readouterr().out
    saved = np.load(out / "maps.npz")
    assert saved["maps"].shape == (3, 8, 8) and list(saved["index"]) == [0, 1, 2]
    for i in range(3):
        for kind in ("input", "map", "overlay"):
            assert (out / f"{i:05d}_{kind}.png").stat().st_size > 0
    assert (out / "overview.png").is_file()
    assert sorted(p.name for p in run.iterdir()) == before                      # the run is untouched
    # bad input: one line each, exit 2, nothing written
    for argv, msg in [(["--index", "0:9999"], "goes past"), (["--target", "12"], "not a class"),
                      (["--layer", "relu:99"], "calls relu")]:
        assert main(["explain", str(run), "--out", str(tmp_path / "bad"), *argv]) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, err
        assert not (tmp_path / "bad").exists()
    assert main(["explain", str(run), "--out", str(out)]) == 2                  # exists, not empty
    assert main(["explain", str(run), "--out", str(run / "x")]) == 2            # inside the run
