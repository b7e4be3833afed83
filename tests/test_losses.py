"""Behaviour of the losses beyond their gradients (those are checked by tests/test_gradcheck.py): reductions,
ignore_index, label smoothing, -inf logits, closed-form values, errors, and what happens inside jit."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fd

F64 = jnp.float64


def _rand(seed, shape, scale=1.0):
    return scale * jax.random.normal(jax.random.PRNGKey(seed), shape, F64)


# ------------------------------------------------------------------------------------------- reductions
ELEMENTWISE = [
    ("mse_loss", {}), ("l1_loss", {}), ("huber_loss", {"delta": 0.7}), ("smooth_l1_loss", {"beta": 0.5}),
    ("binary_cross_entropy_with_logits", {}), ("kl_div", {}),
]


@pytest.mark.parametrize("name,opts", ELEMENTWISE)
def test_elementwise_reductions_are_consistent(name, opts):
    loss = fd.get(name)
    x = _rand(0, (4, 3), 2.0)
    probs = name in ("kl_div", "binary_cross_entropy_with_logits")
    t = jax.nn.softmax(_rand(1, (4, 3)), -1) if probs else _rand(1, (4, 3))
    if name == "kl_div":
        x = jax.nn.log_softmax(x, -1)
    per = loss(x, t, reduction="none", **opts)
    assert per.shape == (4, 3)
    np.testing.assert_allclose(loss(x, t, reduction="sum", **opts), per.sum(), rtol=1e-12)
    np.testing.assert_allclose(loss(x, t, **opts), per.mean(), rtol=1e-12)


def test_closed_form_values():
    x = jnp.array([0.0, 1.0, 3.0], F64)
    t = jnp.array([0.5, -1.0, 3.5], F64)
    d = np.array([-0.5, 2.0, -0.5])
    assert float(fd.mse_loss(x, t)) == pytest.approx(np.mean(d**2))
    assert float(fd.l1_loss(x, t, reduction="sum")) == pytest.approx(3.0)
    # huber: quadratic inside delta, linear outside
    np.testing.assert_allclose(fd.huber_loss(x, t, reduction="none", delta=1.0), [0.125, 1.5, 0.125])
    # smooth_l1 = huber(delta=beta) / beta, and beta=0 is l1
    np.testing.assert_allclose(fd.smooth_l1_loss(x, t, reduction="none", beta=2.0),
                               fd.huber_loss(x, t, reduction="none", delta=2.0) / 2.0)
    np.testing.assert_allclose(fd.smooth_l1_loss(x, t, reduction="none", beta=0.0), np.abs(d))


def test_cross_entropy_with_probs_matches_labels_for_one_hot_targets():
    logits = _rand(2, (6, 5), 2.0)
    labels = jnp.array([0, 4, 2, 2, 1, 3])
    onehot = jax.nn.one_hot(labels, 5, dtype=F64)
    for opts in ({}, {"label_smoothing": 0.1}, {"reduction": "none"}, {"reduction": "sum"}):
        np.testing.assert_allclose(fd.softmax_cross_entropy_with_probs(logits, onehot, **opts),
                                   fd.softmax_cross_entropy(logits, labels, **opts), rtol=1e-12)
    # gradient w.r.t. the logits is softmax minus the target, divided by N for the mean
    g = jax.grad(fd.softmax_cross_entropy_with_probs)(logits, onehot)
    np.testing.assert_allclose(g, (jax.nn.softmax(logits) - onehot) / 6, atol=1e-14)


def test_label_smoothing_values():
    """With smoothing eps the target is (1 - eps) onehot + eps / C; eps = 1 is the uniform target."""
    logits = _rand(3, (4, 5))
    labels = jnp.array([1, 0, 4, 2])
    logp = jax.nn.log_softmax(logits)
    eps = 0.3
    expected = -((1 - eps) * jnp.take_along_axis(logp, labels[:, None], 1)[:, 0] + eps / 5 * logp.sum(-1))
    np.testing.assert_allclose(fd.softmax_cross_entropy(logits, labels, reduction="none", label_smoothing=eps),
                               expected, rtol=1e-12)
    uniform = -logp.mean(-1)
    np.testing.assert_allclose(fd.softmax_cross_entropy(logits, labels, reduction="none", label_smoothing=1.0),
                               uniform, rtol=1e-12)
    t = jax.nn.softmax(_rand(4, (4, 5)))
    np.testing.assert_allclose(
        fd.softmax_cross_entropy_with_probs(logits, t, reduction="none", label_smoothing=eps),
        -(((1 - eps) * t + eps / 5) * logp).sum(-1), rtol=1e-12)


def test_ignore_index_and_weighted_mean():
    logits = _rand(5, (5, 3))
    labels = jnp.array([0, -100, 2, 1, -100])
    w = jnp.array([1.0, 2.0, 0.5], F64)
    per = fd.softmax_cross_entropy(logits, labels, w, reduction="none")
    assert per[1] == 0 and per[4] == 0
    kept = jnp.array([0, 2, 3])
    logp = jax.nn.log_softmax(logits)
    picked = -logp[kept, labels[kept]] * w[labels[kept]]
    np.testing.assert_allclose(per[kept], picked, rtol=1e-12)
    np.testing.assert_allclose(fd.softmax_cross_entropy(logits, labels, w), picked.sum() / w[labels[kept]].sum())
    # ignored rows get no gradient
    g = jax.grad(fd.softmax_cross_entropy)(logits, labels, w)
    assert jnp.all(g[1] == 0) and jnp.all(g[4] == 0)
    # nll_loss on log-probabilities is the same loss, with the same ignore_index and weighted mean
    np.testing.assert_allclose(fd.nll_loss(logp, labels, w), fd.softmax_cross_entropy(logits, labels, w))
    np.testing.assert_allclose(fd.nll_loss(logp, labels.at[1].set(7).at[4].set(7), ignore_index=7),
                               -logp[kept, labels[kept]].mean())


def test_all_ignored_mean_is_nan_like_torch():
    logp = jax.nn.log_softmax(_rand(6, (2, 3)))
    assert math.isnan(float(fd.nll_loss(logp, jnp.array([-100, -100]))))
    assert float(fd.nll_loss(logp, jnp.array([-100, -100]), reduction="sum")) == 0.0


def test_minus_inf_logits_give_finite_loss_and_zero_grad():
    """Logits of -inf where the target has zero probability (masked classes) are fine: finite loss, and a
    zero gradient at those entries (no NaN anywhere)."""
    ninf = -jnp.inf
    logits = jnp.array([[0.5, ninf, 1.0, ninf], [ninf, 2.0, 0.0, -1.0]], F64)
    labels = jnp.array([2, 1])
    for fn, tgt in ((fd.softmax_cross_entropy, labels),
                    (fd.softmax_cross_entropy_with_probs, jnp.array([[0.3, 0.0, 0.7, 0.0], [0.0, 0.5, 0.25, 0.25]]))):
        value, (g_logits,) = jax.value_and_grad(fn, argnums=(0,))(logits, tgt)
        assert np.isfinite(float(value))
        assert np.all(np.isfinite(g_logits))
        assert g_logits[0, 1] == 0 and g_logits[0, 3] == 0 and g_logits[1, 0] == 0
        # the same loss with the masked classes left out entirely
        kept = jnp.where(jnp.isinf(logits), -1e30, logits)
        np.testing.assert_allclose(value, fn(kept, tgt), rtol=1e-12)
    # the target gradient at a (target 0, logit -inf) entry is 0 by convention; elsewhere -log p
    t = jnp.array([[0.3, 0.0, 0.7, 0.0], [0.0, 0.5, 0.25, 0.25]])
    g_t = jax.grad(fd.softmax_cross_entropy_with_probs, argnums=1)(logits, t)
    assert np.all(np.isfinite(g_t)) and g_t[0, 1] == 0
    logp = jax.nn.log_softmax(logits)
    np.testing.assert_allclose(g_t[1, 1:], -logp[1, 1:] / 2, rtol=1e-12)
    # under autodiff of the references as well
    g_ref = jax.grad(fd.autodiff(fd.softmax_cross_entropy))(logits, labels)
    assert np.all(np.isfinite(g_ref))


def test_bce_with_logits_is_stable_and_matches_probability_form():
    x = jnp.array([-800.0, -30.0, 0.0, 30.0, 800.0], F64)
    t = jnp.array([1.0, 0.0, 0.5, 1.0, 0.0], F64)
    per = fd.binary_cross_entropy_with_logits(x, t, reduction="none")
    np.testing.assert_allclose(per, [800.0, 0.0, math.log(2.0), 0.0, 800.0], atol=1e-12)
    g = jax.grad(fd.binary_cross_entropy_with_logits)(x, t)
    np.testing.assert_allclose(g, (jax.nn.sigmoid(x) - t) / 5, atol=1e-15)
    # moderate logits: the probability form agrees
    x = _rand(7, (4, 3))
    t = jax.random.uniform(jax.random.PRNGKey(8), (4, 3), F64)
    np.testing.assert_allclose(fd.binary_cross_entropy(jax.nn.sigmoid(x), t),
                               fd.binary_cross_entropy_with_logits(x, t), rtol=1e-12)
    # pos_weight scales the positive term only
    pw = jnp.array([1.0, 2.0, 3.0], F64)
    manual = -(pw * t * jax.nn.log_sigmoid(x) + (1 - t) * jax.nn.log_sigmoid(-x))
    np.testing.assert_allclose(fd.binary_cross_entropy_with_logits(x, t, None, pw, reduction="none"), manual,
                               rtol=1e-12)


def test_bce_probabilities_saturate_finitely():
    p = jnp.array([0.0, 1.0, 0.5], F64)
    t = jnp.array([1.0, 0.0, 1.0], F64)
    np.testing.assert_allclose(fd.binary_cross_entropy(p, t, reduction="none"), [100.0, 100.0, math.log(2)])
    assert np.all(np.isfinite(jax.grad(fd.binary_cross_entropy)(p, t)))


def test_kl_div_reductions_and_log_target():
    logq = jax.nn.log_softmax(_rand(9, (4, 6)))
    p = jax.nn.softmax(_rand(10, (4, 6)))
    true_kl = jnp.sum(p * (jnp.log(p) - logq), -1)          # one KL per row
    np.testing.assert_allclose(fd.kl_div(logq, p, reduction="batchmean"), true_kl.mean(), rtol=1e-12)
    np.testing.assert_allclose(fd.kl_div(logq, p), true_kl.sum() / 24, rtol=1e-12)      # torch's "mean"
    np.testing.assert_allclose(fd.kl_div(logq, jnp.log(p), log_target=True, reduction="sum"), true_kl.sum(),
                               rtol=1e-12)
    # a zero target contributes 0 (0 log 0 = 0)
    p0 = p.at[0, 0].set(0.0)
    assert float(fd.kl_div(logq, p0, reduction="none")[0, 0]) == 0.0
    assert float(fd.kl_div(logq, logq, log_target=True, reduction="sum")) == pytest.approx(0.0, abs=1e-15)


def test_multi_margin_values():
    x = jnp.array([[2.0, 0.5, 1.8], [0.0, 0.0, 3.0]], F64)
    y = jnp.array([0, 2])
    # row 0: h = 1 - 2 + (0.5, 1.8) = (-0.5, 0.8) -> 0.8 / 3;  row 1: h = 1 - 3 + 0 = -2 -> 0
    np.testing.assert_allclose(fd.multi_margin_loss(x, y, reduction="none"), [0.8 / 3, 0.0])
    np.testing.assert_allclose(fd.multi_margin_loss(x, y, reduction="none", p=2), [0.64 / 3, 0.0])
    np.testing.assert_allclose(fd.multi_margin_loss(x, y, margin=3.5, reduction="none"),
                               [(3.5 - 2 + 0.5 + 3.5 - 2 + 1.8) / 3, (0.5 + 0.5) / 3])
    w = jnp.array([2.0, 1.0, 1.0], F64)
    np.testing.assert_allclose(fd.multi_margin_loss(x, y, w), 2 * 0.8 / 3 / 2)   # mean over examples
    g = jax.grad(fd.multi_margin_loss)(x, y)
    np.testing.assert_allclose(g, [[-1 / 6, 0, 1 / 6], [0, 0, 0]])


# ---------------------------------------------------------------------------------------------- errors
def test_errors_outside_jit():
    x = _rand(11, (4, 3))
    with pytest.raises(ValueError, match=r"mse_loss: input shape \(4, 3\) and target shape \(4,\)"):
        fd.mse_loss(x, x[:, 0])
    with pytest.raises(TypeError, match="labels must be integer"):
        fd.nll_loss(x, jnp.zeros(4))
    with pytest.raises(ValueError, match="label 3 is out of range for 3 classes"):
        fd.nll_loss(x, jnp.array([0, 1, 3, 2]))
    with pytest.raises(ValueError, match="label -1 is out of range"):
        fd.multi_margin_loss(x, jnp.array([0, 1, -1, 2]))
    with pytest.raises(ValueError, match="unknown reduction 'avg'"):
        fd.l1_loss(x, x, reduction="avg")
    with pytest.raises(ValueError, match="batchmean"):
        fd.mse_loss(x, x, reduction="batchmean")
    with pytest.raises(ValueError, match="delta must be > 0"):
        fd.huber_loss(x, x, delta=0.0)
    with pytest.raises(ValueError, match="p must be 1 or 2"):
        fd.multi_margin_loss(x, jnp.array([0, 1, 2, 2]), p=3)
    with pytest.raises(ValueError, match="must lie in \\[0, 1\\]"):
        fd.binary_cross_entropy(x, jnp.zeros_like(x))
    with pytest.raises(ValueError, match="class weight shape \\(4,\\) must be \\(3,\\)"):
        fd.softmax_cross_entropy_with_probs(x, jax.nn.softmax(x), jnp.ones(4))
    with pytest.raises(ValueError, match="pos_weight shape \\(4,\\) does not broadcast"):
        fd.binary_cross_entropy_with_logits(x, x, None, jnp.ones(4))
    with pytest.raises(TypeError, match="floating-point"):
        fd.mse_loss(jnp.arange(3), jnp.arange(3))


def test_out_of_range_labels_inside_jit_give_nan():
    """Inside jit values cannot be inspected: the documented behaviour is a NaN loss for that example."""
    logits = _rand(12, (3, 4))
    bad = jnp.array([0, 9, 2])
    for fn, inp in ((fd.softmax_cross_entropy, logits), (fd.nll_loss, jax.nn.log_softmax(logits)),
                    (fd.multi_margin_loss, logits)):
        per = jax.jit(lambda a, b, fn=fn: fn(a, b, reduction="none"))(inp, bad)
        assert math.isnan(float(per[1])) and np.isfinite(per[0]) and np.isfinite(per[2])
        assert math.isnan(float(jax.jit(fn)(inp, bad)))
        g = jax.jit(jax.grad(lambda a, b, fn=fn: fn(a, b, reduction="sum")))(inp, bad)
        assert np.all(g[1] == 0)
    # shape errors are static, so they raise inside jit too
    with pytest.raises(ValueError, match="nll_loss: labels shape"):
        jax.jit(fd.nll_loss)(logits, jnp.array([0, 1]))


def test_mixed_dtypes_give_cotangents_of_each_inputs_dtype():
    x = jnp.ones((3,), jnp.float32)
    t = jnp.zeros((3,), F64)
    gx, gt = jax.grad(fd.mse_loss, argnums=(0, 1))(x, t)
    assert gx.dtype == jnp.float32 and gt.dtype == F64
