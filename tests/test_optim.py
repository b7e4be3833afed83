"""optim: the interface under jit / vmap / float64 / odd pytrees, bad input, golden values computed by hand
for the rules torch does not have (LAMB, Lion, SAM; Adafactor too), and convergence on a convex quadratic
and on Rosenbrock. Trajectories against torch.optim are in test_torch_optim.py."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcdl import optim

ALL = sorted(optim.OPTIMIZERS)


def _params(dtype=jnp.float32):
    """A pytree with a dict, a list, a tuple, a scalar and a None leaf."""
    k = jax.random.split(jax.random.PRNGKey(0), 4)
    return {"w": jax.random.normal(k[0], (3, 4), dtype), "layers": [jax.random.normal(k[1], (4,), dtype), None],
            "pair": (jax.random.normal(k[2], (2, 2, 3), dtype), jnp.asarray(0.5, dtype))}


def _grads(params, seed=1):
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree.unflatten(treedef, [jax.random.normal(k, x.shape, x.dtype)
                                        for k, x in zip(keys, leaves, strict=True)])


def _run(opt, params, steps=3):
    state = opt.init(params)
    for i in range(steps):
        u, state = opt.update(_grads(params, i), state, params)
        params = optim.apply_updates(params, u)
    return params, state


# ---- the interface ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_jit_matches_eager_and_keeps_dtype_and_none(name, dtype):
    opt = optim.create(name, learning_rate=0.01)
    params = _params(dtype)
    state = opt.init(params)
    grads = _grads(params)
    u_eager, s_eager = opt.update(grads, state, params)
    u_jit, s_jit = jax.jit(opt.update)(grads, state, params)
    assert u_eager["layers"][1] is None and u_jit["layers"][1] is None
    for a, b, p in zip(jax.tree.leaves(u_eager), jax.tree.leaves(u_jit), jax.tree.leaves(params), strict=True):
        assert a.dtype == p.dtype and a.shape == p.shape
        np.testing.assert_allclose(a, b, rtol=1e-5 if dtype == jnp.float32 else 1e-12, atol=1e-7)
    # the state is a valid scan carry: same structure and dtypes after an update
    assert jax.tree.structure(s_eager) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(s_eager), jax.tree.leaves(state), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
    # something moved, and in the descent direction on average
    moved = sum(float(jnp.sum(u * g)) for u, g in zip(jax.tree.leaves(u_eager), jax.tree.leaves(grads), strict=True))
    assert moved < 0


@pytest.mark.parametrize("name", ALL)
def test_vmap_over_independent_problems(name):
    """vmap of the update over a batch of 3 problems equals updating each problem on its own."""
    opt = optim.create(name, learning_rate=0.05)
    batch = jax.vmap(lambda k: {"w": jax.random.normal(k, (3, 2)), "b": jax.random.normal(k, (2,)) + 1})(
        jax.random.split(jax.random.PRNGKey(3), 3))
    loss = lambda p: jnp.sum(jnp.sin(p["w"]) ** 2) + jnp.sum((p["b"] - 0.3) ** 2) + jnp.sum(p["w"]) * jnp.sum(p["b"])

    def run(p):
        s = opt.init(p)
        for _ in range(4):
            u, s = opt.update(jax.grad(loss)(p), s, p)
            p = optim.apply_updates(p, u)
        return p, optim.current_lr(s)

    together, lrs = jax.jit(jax.vmap(run))(batch)
    assert lrs.shape == (3,)
    for i in range(3):
        alone, _ = run(jax.tree.map(lambda x, i=i: x[i], batch))
        for a, b in zip(jax.tree.leaves(alone), jax.tree.leaves(together), strict=True):
            np.testing.assert_allclose(a, b[i], rtol=2e-5, atol=1e-6)


def test_scan_loop_in_float64_matches_python_loop():
    opt = optim.chain(optim.clip_by_global_norm(10.0), optim.adamw(optim.warmup_cosine(0.1, 3, 20), b1=0.8))
    p0 = {"a": jnp.arange(4.0, dtype=jnp.float64), "b": (jnp.ones((2, 2), jnp.float64),)}
    f = lambda p: jnp.sum((p["a"] - 2) ** 4) + jnp.sum(jnp.cos(p["b"][0]))

    def step(carry, _):
        p, s = carry
        u, s = opt.update(jax.grad(f)(p), s, p)
        return (optim.apply_updates(p, u), s), None

    (p_scan, s_scan), _ = jax.jit(lambda p: jax.lax.scan(step, (p, opt.init(p)), None, length=20))(p0)
    p, s = p0, opt.init(p0)
    for _ in range(20):
        (p, s), _ = step((p, s), None)
    assert p_scan["a"].dtype == jnp.float64
    for a, b in zip(jax.tree.leaves(p_scan), jax.tree.leaves(p), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    assert float(optim.current_lr(s_scan)) == pytest.approx(float(optim.warmup_cosine(0.1, 3, 20)(19)), rel=1e-6)


def test_current_lr_through_chains_and_wrappers():
    sched = optim.cosine_decay(0.2, 10)
    base = optim.chain(optim.clip(1.0), optim.adam(sched))
    for opt in [optim.adam(sched), base, optim.freeze(base, "^b"), optim.skip_not_finite(optim.lookahead(base)),
                optim.ema_params(optim.accumulate(optim.sgd(sched), 1)), optim.scale_by_learning_rate(sched)]:
        p = {"a": jnp.ones(3), "b": jnp.ones(2)}
        s = opt.init(p)
        assert float(optim.current_lr(s)) == pytest.approx(0.2)
        for _ in range(4):
            _, s = opt.update(p, s, p)
        assert float(optim.current_lr(s)) == pytest.approx(float(sched(3)), rel=1e-6)
    with pytest.raises(ValueError, match="no learning rate"):
        optim.current_lr(optim.clip(1.0).init({}))


# ---- bad input ------------------------------------------------------------------------------------------

def test_unknown_optimizer_lists_valid_ones():
    with pytest.raises(ValueError, match="valid optimizers: adadelta, adafactor, adagrad, adam"):
        optim.create("adamm")


def test_create_checks_hyperparameters():
    assert optim.current_lr(optim.create("adam", 0.1, betas=(0.5, 0.6)).init({"x": jnp.ones(1)})) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="no hyper-parameter 'momentum'.*b1=0.9"):
        optim.create("adam", 0.1, momentum=0.9)
    assert optim.hyperparameters("sgd")["nesterov"] is False
    assert set(optim.hyperparameters("adamw")) >= {"b1", "b2", "eps", "weight_decay", "amsgrad"}


@pytest.mark.parametrize("name", ALL)
def test_negative_learning_rate_rejected(name):
    with pytest.raises(ValueError, match=f"{name}: learning_rate must be >= 0"):
        optim.create(name, -0.1)


@pytest.mark.parametrize("name", ["adam", "adamw", "adamax", "nadam", "radam", "lamb", "lion"])
@pytest.mark.parametrize("betas", [(1.0, 0.9), (0.9, 1.0), (-0.1, 0.9), (0.9, 1.5)])
def test_betas_outside_unit_interval_rejected(name, betas):
    with pytest.raises(ValueError, match=r"must lie in \[0.0, 1.0\)"):
        optim.create(name, 0.1, b1=betas[0], b2=betas[1])


def test_other_bad_hyperparameters():
    with pytest.raises(ValueError, match="nesterov momentum requires momentum > 0"):
        optim.sgd(0.1, nesterov=True)
    with pytest.raises(ValueError, match="momentum must lie"):
        optim.sgd(0.1, momentum=-1)
    with pytest.raises(ValueError, match="eps must be a pair"):
        optim.adafactor(eps=1e-3)
    with pytest.raises(TypeError, match="learning_rate must be a number or a schedule"):
        optim.adam("fast")
    with pytest.raises(TypeError, match="not a GradientTransformation"):
        optim.chain(optim.sgd)


@pytest.mark.parametrize("name", ALL)
def test_grads_tree_mismatch_names_the_path(name):
    opt = optim.create(name, 0.1)
    params = {"enc": {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}, "dec": [jnp.ones(3)]}
    state = opt.init(params)
    bad_shape = {"enc": {"w": jnp.ones((3, 2)), "b": jnp.ones(3)}, "dec": [jnp.ones(3)]}
    with pytest.raises(ValueError, match=r"at 'enc/w': grad shape \(3, 2\) vs param shape \(2, 3\)"):
        opt.update(bad_shape, state, params)
    missing = {"enc": {"w": jnp.ones((2, 3))}, "dec": [jnp.ones(3)]}
    with pytest.raises(ValueError, match="grads has no entry at 'enc/b'"):
        opt.update(missing, state, params)


# ---- golden values computed by hand ----------------------------------------------------------------------

def test_lamb_golden():
    """Step 1: m^ = g, v^ = g^2, so r = sign(g) + wd p (eps = 0); the trust ratio is ||p|| / ||r||."""
    opt = optim.lamb(0.1, eps=0.0, weight_decay=0.1)
    p = {"x": jnp.array([3.0, 4.0], jnp.float64)}
    s = opt.init(p)
    u, s = opt.update({"x": jnp.array([0.5, -2.0], jnp.float64)}, s, p)
    # r = [1, -1] + 0.1 * [3, 4] = [1.3, -0.6];  ||r|| = sqrt(2.05);  ||p|| = 5
    np.testing.assert_allclose(u["x"], -0.1 * 5 / math.sqrt(2.05) * np.array([1.3, -0.6]), rtol=1e-12)
    p = optim.apply_updates(p, u)
    # step 2 with g = [1, 1]: m = [0.145, -0.08], v = [0.00124975, 0.004996]; bias corrections 0.19, 0.001999
    u, s = opt.update({"x": jnp.array([1.0, 1.0], jnp.float64)}, s, p)
    m_hat = np.array([0.145, -0.08]) / 0.19
    v_hat = np.array([0.00124975, 0.004996]) / 0.001999
    r = m_hat / np.sqrt(v_hat) + 0.1 * np.asarray(p["x"])
    expected = -0.1 * np.linalg.norm(np.asarray(p["x"])) / np.linalg.norm(r) * r
    np.testing.assert_allclose(u["x"], expected, rtol=1e-10)
    assert np.linalg.norm(u["x"]) == pytest.approx(0.1 * np.linalg.norm(np.asarray(p["x"])))  # relative step = lr


def test_lion_golden():
    opt = optim.lion(0.1, b1=0.9, b2=0.99, weight_decay=0.5)
    p = {"x": jnp.array([1.0, -2.0], jnp.float64)}
    s = opt.init(p)
    u, s = opt.update({"x": jnp.array([0.5, -3.0], jnp.float64)}, s, p)
    # c = 0.1 g -> sign [1, -1];  u = -0.1 ([1, -1] + 0.5 [1, -2]) = [-0.15, 0.2];  m = 0.01 g
    np.testing.assert_allclose(u["x"], [-0.15, 0.2], rtol=1e-12)
    np.testing.assert_allclose(optim.find_state_field(s, "mu")["x"], [0.005, -0.03], rtol=1e-12)
    p = optim.apply_updates(p, u)                                     # [0.85, -1.8]
    u, s = opt.update({"x": jnp.array([-0.01, 0.1], jnp.float64)}, s, p)
    # c = 0.9 [0.005, -0.03] + 0.1 [-0.01, 0.1] = [0.0035, -0.017]: sign [1, -1], opposite to the gradient's
    np.testing.assert_allclose(u["x"], [-0.1425, 0.19], rtol=1e-12)
    np.testing.assert_allclose(optim.find_state_field(s, "mu")["x"], [0.00485, -0.0287], rtol=1e-12)


def test_adafactor_golden():
    """g = [[1, 2], [2, 4]] has rank-one g^2, so the factored second moment is exact: U = g / |g| = 1."""
    g = jnp.array([[1.0, 2.0], [2.0, 4.0]], jnp.float64)
    p = {"m": jnp.ones((2, 2), jnp.float64), "v": jnp.array([2.0, -2.0], jnp.float64)}
    for d, second in [(1.0, -0.0099), (2.0, -0.0099 * 2 / math.sqrt(1 + 3 * 2**-0.8))]:
        opt = optim.adafactor(0.01, d=d)
        s = opt.init(p)
        u, s = opt.update({"m": g, "v": jnp.array([0.3, -0.4], jnp.float64)}, s, p)
        # alpha = max(1e-3, RMS(p)) * min(lr, 1/sqrt(1)): 0.01 for the matrix (RMS 1), 0.02 for the vector (RMS 2)
        np.testing.assert_allclose(u["m"], -0.01 * np.ones((2, 2)), rtol=1e-12)
        np.testing.assert_allclose(u["v"], [-0.02, 0.02], rtol=1e-12)
        row, col = optim.find_state_field(s, "row"), optim.find_state_field(s, "col")
        np.testing.assert_allclose(row["m"][:, 0], [2.5, 10.0], rtol=1e-12)      # row means of g^2
        np.testing.assert_allclose(col["m"][0], [2.5, 10.0], rtol=1e-12)         # column means of g^2
        p2 = optim.apply_updates(p, u)
        # step 2 with 2g: 1 - beta2 = 2^-0.8 = w;  R, C grow by (1 + 3w);  U = 2 / sqrt(1 + 3w) = 1.212 > 1:
        # clipped to RMS 1 when d = 1, kept when d = 2;  alpha = RMS(p) * 0.01 = 0.99 * 0.01
        u, s = opt.update({"m": 2 * g, "v": jnp.array([0.3, -0.4], jnp.float64)}, s, p2)
        np.testing.assert_allclose(u["m"], second * np.ones((2, 2)), rtol=1e-10)


def test_sam_golden():
    """L(w) = (4 w1^2 + w2^2) / 2 at w = [1, 2]: g = [4, 2], ||g|| = sqrt(20)."""
    loss = lambda w, scale: scale * 0.5 * (4 * w["x"][0] ** 2 + w["x"][1] ** 2)
    w = {"x": jnp.array([1.0, 2.0], jnp.float64)}
    g = jax.grad(loss)(w, 1.0)
    opt = optim.sam(optim.sgd(0.1), loss, rho=0.1)
    u, _ = opt.update(g, opt.init(w), w, 1.0)
    e = 0.1 * np.array([4.0, 2.0]) / math.sqrt(20)                 # [0.0894427, 0.0447214]
    np.testing.assert_allclose(u["x"], -0.1 * np.array([4 * (1 + e[0]), 2 + e[1]]), rtol=1e-12)
    # adaptive: e = rho w^2 g / ||w g|| = 0.1 [4, 8] / sqrt(32)
    opt = optim.sam(optim.sgd(0.1), loss, rho=0.1, adaptive=True)
    u, _ = opt.update(g, opt.init(w), w, 1.0)
    e = 0.1 * np.array([4.0, 8.0]) / math.sqrt(32)
    np.testing.assert_allclose(u["x"], -0.1 * np.array([4 * (1 + e[0]), 2 + e[1]]), rtol=1e-12)
    # has_aux and keyword arguments reach the loss
    opt = optim.sam(optim.sgd(0.1), lambda w, scale: (loss(w, scale), {"aux": 1}), rho=0.0, has_aux=True)
    u, _ = jax.jit(opt.update)(g, opt.init(w), w, 2.0)
    np.testing.assert_allclose(u["x"], -0.1 * 2 * np.asarray(g["x"]), rtol=1e-12)


# ---- transforms and wrappers -------------------------------------------------------------------------------

def test_clipping():
    g = {"a": jnp.array([3.0, -0.5]), "b": jnp.array([4.0]), "c": None}
    u, _ = optim.clip(1.0).update(g, optim.clip(1.0).init(g))
    np.testing.assert_allclose(u["a"], [1.0, -0.5])
    t = optim.clip_by_global_norm(1.0)
    u, s = t.update({"a": jnp.array([3.0, 0.0]), "b": jnp.array([4.0]), "c": None}, t.init(g))
    np.testing.assert_allclose(u["a"], [3.0 / (5 + 1e-6), 0.0], rtol=1e-6)
    assert float(s.norm) == pytest.approx(5.0) and u["c"] is None
    u, _ = optim.clip_by_global_norm(10.0).update(g, t.init(g))
    np.testing.assert_allclose(u["b"], [4.0])


def test_weight_decay_mask_skips_vectors():
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2), "scale": jnp.ones(2)}
    zeros = jax.tree.map(jnp.zeros_like, params)
    t = optim.add_decayed_weights(0.1, mask=optim.decay_mask)
    u, _ = t.update(zeros, t.init(params), params)
    np.testing.assert_allclose(u["w"], 0.1)
    np.testing.assert_allclose(u["b"], 0.0)
    opt = optim.adamw(0.1, weight_decay=0.5, mask="^w$")
    u, _ = opt.update(zeros, opt.init(params), params)
    np.testing.assert_allclose(u["w"], -0.05)
    np.testing.assert_allclose(u["scale"], 0.0)


def test_masked_passes_unselected_leaves_through():
    params = {"a": jnp.ones(2), "b": jnp.ones(2)}
    g = {"a": jnp.full(2, 2.0), "b": jnp.full(2, 3.0)}
    opt = optim.masked(optim.sgd(0.1, momentum=0.9), {"a": True, "b": False})
    s = opt.init(params)
    assert optim.find_state_field(s, "momentum")["b"] is None
    u, _ = opt.update(g, s, params)
    np.testing.assert_allclose(u["a"], -0.2)
    np.testing.assert_allclose(u["b"], 3.0)


@pytest.mark.parametrize("spec", ["^enc/", lambda path, leaf: path.startswith("enc"),
                                  {"enc": {"w": True, "b": True}, "head": False}])
def test_freeze_wrapper(spec):
    params = {"enc": {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}, "head": jnp.ones(3)}
    opt = optim.freeze(optim.adamw(0.1, weight_decay=0.1), spec)
    s = opt.init(params)
    assert optim.find_state_field(s, "mu")["enc"]["w"] is None          # no optimizer state for frozen leaves
    u, s = jax.jit(opt.update)(jax.tree.map(jnp.ones_like, params), s, params)
    np.testing.assert_array_equal(u["enc"]["w"], 0.0)       # not even weight decay moves them
    np.testing.assert_array_equal(u["enc"]["b"], 0.0)
    assert float(jnp.max(u["head"])) < 0


def test_freeze_as_chain_element_and_bad_regex():
    params = {"a": jnp.ones(2), "b": jnp.ones(2)}
    opt = optim.chain(optim.sgd(0.1), optim.freeze("^a"))
    u, _ = opt.update(params, opt.init(params), params)
    np.testing.assert_array_equal(u["a"], 0.0)
    np.testing.assert_allclose(u["b"], -0.1)
    with pytest.raises(ValueError, match="not a valid regular expression"):
        optim.freeze("(")
    assert optim.tree_paths({"layers": [{"w": 1}], "t": (None,)}) == ["layers/0/w", "t/0"]


def test_accumulate_equals_one_step_on_the_mean():
    params = {"x": jnp.array([1.0, -1.0])}
    grads = [{"x": jnp.array([float(i), 2.0 * i])} for i in range(1, 7)]
    inner = optim.adam(0.1)
    acc = optim.accumulate(inner, 3)
    s_acc, s_ref = acc.init(params), inner.init(params)
    p_acc, p_ref = params, params
    step = jax.jit(acc.update)
    for k in range(2):
        for i in range(3):
            u, s_acc = step(grads[3 * k + i], s_acc, p_acc)
            if i < 2:
                np.testing.assert_array_equal(u["x"], 0.0)
            p_acc = optim.apply_updates(p_acc, u)
        mean = jax.tree.map(lambda *g: sum(g) / 3, *grads[3 * k:3 * k + 3])
        u, s_ref = inner.update(mean, s_ref, p_ref)
        p_ref = optim.apply_updates(p_ref, u)
        np.testing.assert_allclose(p_acc["x"], p_ref["x"], rtol=1e-6)
    assert int(optim.find_state_field(s_acc, "count")) == 2


def test_skip_not_finite():
    params = {"x": jnp.ones(2)}
    opt = optim.skip_not_finite(optim.sgd(0.1, momentum=0.9))
    s = opt.init(params)
    u, s = opt.update({"x": jnp.array([1.0, 1.0])}, s, params)
    before = s
    u, s = jax.jit(opt.update)({"x": jnp.array([jnp.nan, 1.0])}, s, params)
    np.testing.assert_array_equal(u["x"], 0.0)
    assert int(s.skipped) == 1 and int(optim.find_state_field(s, "count")) == 1
    momentum = lambda state: optim.find_state_field(state, "momentum")["x"]
    np.testing.assert_array_equal(momentum(s), momentum(before))
    u, s = opt.update({"x": jnp.array([jnp.inf, 1.0])}, s, params)
    u, s = opt.update({"x": jnp.array([1.0, 1.0])}, s, params)
    assert int(s.skipped) == 2 and float(u["x"][0]) == pytest.approx(-0.1 * 1.9)


def test_ema_params():
    params = {"x": jnp.array([0.0])}
    opt = optim.ema_params(optim.sgd(1.0), decay=0.5)
    s = opt.init(params)
    for g in [-1.0, -1.0, -2.0]:                   # p: 1, 2, 4;   e: 0.5, 1.25, 2.625
        u, s = opt.update({"x": jnp.array([g])}, s, params)
        params = optim.apply_updates(params, u)
    np.testing.assert_allclose(params["x"], [4.0])
    np.testing.assert_allclose(optim.ema_of(s)["x"], [2.625])


def test_ema_params_warmup():
    """With warm-up d_t = min(decay, (1 + t) / (10 + t)): t = 1, 2 give 2/11, 3/12; decay 0.5 caps t >= 8."""
    params = {"x": jnp.array([0.0])}
    opt = optim.ema_params(optim.sgd(1.0), decay=0.5, warmup=True)
    s = opt.init(params)
    e, expect = 0.0, []
    for t in range(1, 11):
        u, s = opt.update({"x": jnp.array([-1.0])}, s, params)
        params = optim.apply_updates(params, u)
        d = min(0.5, (1 + t) / (10 + t))
        e = d * e + (1 - d) * t
        expect.append(e)
        np.testing.assert_allclose(optim.ema_of(s)["x"], [e], rtol=1e-6)
    assert int(s.updates) == 10 and expect[0] == pytest.approx(9 / 11)


def test_lookahead():
    params = {"x": jnp.array([0.0])}
    opt = optim.lookahead(optim.sgd(1.0), sync_period=2, alpha=0.5)
    s = opt.init(params)
    seen = []
    for _ in range(4):                             # fast: 1, 2 -> slow 1, fast 1;  2, 3 -> slow 2, fast 2
        u, s = opt.update({"x": jnp.array([-1.0])}, s, params)
        params = optim.apply_updates(params, u)
        seen.append(float(params["x"][0]))
    assert seen == [1.0, 1.0, 2.0, 2.0]
    np.testing.assert_allclose(s.slow["x"], [2.0])


# ---- schedules ------------------------------------------------------------------------------------------

def _nanogpt_get_lr(it, learning_rate, warmup_iters, lr_decay_iters, min_lr):
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * decay_ratio)) * (learning_rate - min_lr)


def test_warmup_cosine_is_nanogpts():
    sched = optim.warmup_cosine(6e-4, 20, 200, 6e-5)
    ours = np.asarray(jax.jit(sched)(jnp.arange(250)))
    theirs = [_nanogpt_get_lr(i, 6e-4, 20, 200, 6e-5) for i in range(250)]
    np.testing.assert_allclose(ours, theirs, rtol=1e-7)


def test_join_and_piecewise():
    sched = optim.join_schedules([optim.linear(0.0, 1.0, 10), optim.constant(0.5), optim.exponential_decay(1.0, 0.5)],
                                 [10, 20])
    np.testing.assert_allclose(sched(jnp.array([0, 5, 10, 19, 20, 21, 22])), [0, 0.5, 0.5, 0.5, 1.0, 0.5, 0.25])
    pc = optim.piecewise_constant([1.0, 0.1, 0.01], [5, 8])
    np.testing.assert_allclose(pc(jnp.arange(10)), [1] * 5 + [0.1] * 3 + [0.01] * 2, rtol=1e-6)


@pytest.mark.parametrize("name", sorted(optim.SCHEDULES))
def test_make_schedule(name):
    sched = optim.make_schedule(name, 0.1, 100, 10, 1e-3)
    lrs = np.asarray(jax.jit(sched)(jnp.arange(100)))
    assert np.all(np.isfinite(lrs)) and lrs.max() <= 0.1 + 1e-9 and lrs.min() >= 0
    assert lrs[0] < 0.05                                    # warm-up starts low
    assert lrs[-1] <= lrs.max()
    if name not in ("constant", "cosine_restarts"):
        assert lrs[-1] < 0.02                               # decayed


def test_make_schedule_bad_input():
    with pytest.raises(ValueError, match="valid schedules: constant, cosine"):
        optim.make_schedule("cosin", 0.1, 100)
    with pytest.raises(ValueError, match="warmup_steps must be"):
        optim.make_schedule("cosine", 0.1, 100, 100)
    with pytest.raises(ValueError, match="min_lr"):
        optim.make_schedule("cosine", 0.1, 100, 0, 1.0)


# ---- convergence --------------------------------------------------------------------------------------------

def _rosenbrock(p):
    return (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2


def _quadratic(p):
    return 0.5 * (10 * p[0] ** 2 + p[1] ** 2)      # condition number 10


def _cos(lr, steps):
    return optim.cosine_decay(lr, steps, lr * 1e-3)


# name -> (hyper-parameters, Rosenbrock step budget, quadratic step budget); measured first entry into the
# neighbourhood (after which it stays) is in /tmp/notes/issue4.md. Rules whose step has a fixed size
# (lamb's relative step, lion's sign step) or that oscillate (adadelta) get a cosine-decayed learning rate.
CONVERGENCE = {
    "sgd": (lambda n: dict(learning_rate=2e-3, momentum=0.9), 800, 500),
    "adagrad": (lambda n: dict(learning_rate=0.5), 6000, 100),
    "rmsprop": (lambda n: dict(learning_rate=3e-3), 5000, 1000),
    "adadelta": (lambda n: dict(learning_rate=_cos(1.0, n), rho=0.99), 15000, 1500),
    "adam": (lambda n: dict(learning_rate=1e-2), 5000, 500),
    "adamw": (lambda n: dict(learning_rate=1e-2, weight_decay=1e-3), 5000, 500),
    "adamax": (lambda n: dict(learning_rate=0.1), 4000, 300),
    "nadam": (lambda n: dict(learning_rate=1e-2), 5000, 600),
    "radam": (lambda n: dict(learning_rate=3e-3), 12000, 3000),
    "lamb": (lambda n: dict(learning_rate=_cos(0.03, n)), 5000, 500),
    "lion": (lambda n: dict(learning_rate=_cos(3e-3, n)), 5000, 2000),
    "adafactor": (lambda n: dict(learning_rate=0.1), 10000, 1000),
}


def steps_to_reach(name, f, start, target, tol, steps):
    """The first step after which the iterate stays within ``tol`` of ``target`` (None if it never does)."""
    opt = optim.create(name, **CONVERGENCE[name][0](steps))
    grad = jax.grad(f)

    def step(carry, _):
        p, s = carry
        u, s = opt.update(grad(p), s, p)
        p = optim.apply_updates(p, u)
        return (p, s), jnp.linalg.norm(p - target)

    p0 = jnp.asarray(start, jnp.float32)
    _, dist = jax.jit(lambda p: jax.lax.scan(step, (p, opt.init(p)), None, length=steps))(p0)
    outside = np.nonzero(~(np.asarray(dist) < tol))[0]       # NaN counts as outside
    if len(outside) == 0:
        return 1
    return None if outside[-1] == steps - 1 else int(outside[-1]) + 2


def test_convergence_table_covers_every_optimizer():
    assert set(CONVERGENCE) == set(optim.OPTIMIZERS)


@pytest.mark.parametrize("name", ALL)
def test_minimises_convex_quadratic(name):
    budget = CONVERGENCE[name][2]
    reached = steps_to_reach(name, _quadratic, [1.0, 1.0], jnp.zeros(2), 1e-3, budget)
    assert reached is not None, f"{name} did not reach ||p|| < 1e-3 on the quadratic within {budget} steps"


@pytest.mark.parametrize("name", ALL)
def test_reaches_rosenbrock_minimum(name):
    budget = CONVERGENCE[name][1]
    reached = steps_to_reach(name, _rosenbrock, [-1.2, 1.0], jnp.ones(2), 0.05, budget)
    assert reached is not None, f"{name} did not reach ||p - (1, 1)|| < 0.05 on Rosenbrock within {budget} steps"


# ---- meta-learning: the optimizer is differentiable -------------------------------------------------------

def test_gradient_with_respect_to_learning_rate():
    """d/d lr of the loss after 5 unrolled Adam steps (traced lr) matches central finite differences."""
    f = lambda p: jnp.sum((p - jnp.arange(3.0)) ** 2 * jnp.array([1.0, 3.0, 0.5]))

    def final_loss(lr):
        opt = optim.adam(lr)
        p = jnp.zeros(3, jnp.float64)
        s = opt.init(p)
        for _ in range(5):
            u, s = opt.update(jax.grad(f)(p), s, p)
            p = optim.apply_updates(p, u)
        return f(p)

    lr = 0.3
    g = jax.jit(jax.grad(final_loss))(jnp.asarray(lr, jnp.float64))
    h = 1e-5
    fd = (final_loss(lr + h) - final_loss(lr - h)) / (2 * h)
    assert float(g) == pytest.approx(float(fd), rel=1e-6)


@pytest.mark.parametrize("name", ALL + ["ema_params", "lookahead", "accumulate", "freeze"])
def test_params_and_state_can_be_donated(name):
    """A training step donates params and state: init must not alias one buffer in two places."""
    if name in optim.OPTIMIZERS:
        opt = optim.create(name, 0.01)
    else:
        inner = optim.adam(0.01)
        opt = {"ema_params": lambda: optim.ema_params(inner), "lookahead": lambda: optim.lookahead(inner),
               "accumulate": lambda: optim.accumulate(inner, 2), "freeze": lambda: optim.freeze(inner, "^w")}[name]()
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}

    def step(p, s, g):
        u, s = opt.update(g, s, p)
        return optim.apply_updates(p, u), s

    step = jax.jit(step, donate_argnums=(0, 1))
    p, s = params, opt.init(params)
    for _ in range(2):
        p, s = step(p, s, jax.tree.map(jnp.ones_like, params))
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(p))


@pytest.mark.parametrize("name", ALL)
def test_gradients_are_cast_to_the_parameter_dtype(name):
    """float64 gradients for float32 parameters (e.g. mixed in by a float64 bias) keep a float32 state."""
    opt = optim.create(name, 0.01)
    params = {"w": jnp.ones((2, 2), jnp.float32), "b": jnp.ones(2, jnp.float64)}
    grads = {"w": jnp.ones((2, 2), jnp.float64), "b": jnp.ones(2, jnp.float64)}
    state = opt.init(params)
    u, new = opt.update(grads, state, params)
    assert u["w"].dtype == jnp.float32 and u["b"].dtype == jnp.float64
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(state), strict=True):
        assert a.dtype == b.dtype


def test_wrappers_and_schedules_under_vmap():
    """Chains of wrappers with a schedule, vmapped over 3 independent problems, equal a loop over them."""
    loss = lambda p, x: jnp.sum((p["w"] - x) ** 2) + jnp.sum(jnp.sin(p["b"] * x[0]))
    opt = optim.skip_not_finite(optim.chain(
        optim.clip_by_global_norm(1.0),
        optim.accumulate(optim.lookahead(optim.ema_params(optim.adamw(optim.one_cycle(0.1, 12), mask="w")), 2), 2)))

    def run(x):
        p = {"w": jnp.zeros(3), "b": jnp.ones(2)}
        s = opt.init(p)
        for _ in range(6):
            u, s = opt.update(jax.grad(loss)(p, x), s, p)
            p = optim.apply_updates(p, u)
        return p, optim.current_lr(s), optim.ema_of(s)

    xs = jnp.arange(9.0).reshape(3, 3) / 4
    together = jax.jit(jax.vmap(run))(xs)
    run_one = jax.jit(run)
    for i in range(3):
        alone = run_one(xs[i])
        for a, b in zip(jax.tree.leaves(alone), jax.tree.leaves(together), strict=True):
            np.testing.assert_allclose(a, b[i], rtol=1e-5, atol=1e-7)
    assert float(together[1][0]) == pytest.approx(float(optim.one_cycle(0.1, 12)(2)), rel=1e-5)
