"""Signal propagation at initialisation (funcdl.explain.depth): the Gaussian moments behind the mean-field
theory, measured per-layer ratios against it, normalisation, and the deep MLP's hand-rule gradient."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fd
from funcdl.explain.depth import (
    DeepMLP,
    forward,
    gauss_moments,
    init,
    summarize_profile,
    task,
    theory_profile,
    variance_profile,
)


def test_gaussian_moments_of_the_registered_activations():
    q = np.array([0.5, 2.0])
    mean, sq, dsq = gauss_moments("relu", q)
    np.testing.assert_allclose(sq, q / 2)
    np.testing.assert_allclose(mean, np.sqrt(q / (2 * math.pi)))
    np.testing.assert_allclose(dsq, 0.5)
    mean, sq, dsq = gauss_moments("tanh", np.array([1e-6]))     # the linear regime: tanh(z) ~ z
    assert abs(mean[0]) < 1e-9 and sq[0] == pytest.approx(1e-6, rel=1e-4) and dsq[0] == pytest.approx(1, rel=1e-4)
    rng = np.random.default_rng(0)
    z = rng.normal(size=400_000) * math.sqrt(3.0)
    _, sq, dsq = gauss_moments("sigmoid", 3.0)
    s = 1 / (1 + np.exp(-z))
    assert sq == pytest.approx(np.mean(s ** 2), rel=3e-3)
    assert dsq == pytest.approx(np.mean((s * (1 - s)) ** 2), rel=3e-3) and dsq <= 1 / 16


@pytest.mark.parametrize("residual", [False, True])
def test_tanh_network_follows_the_mean_field_recursion(residual):
    config = DeepMLP(width=256, depth=6, n_in=256, init="glorot", activation="tanh", residual=residual)
    profiles = [variance_profile(config, jax.random.PRNGKey(s), batch=32) for s in range(2)]
    row = summarize_profile(config, profiles)
    assert row["fwd_err"] < 0.1 and row["bwd_err"] < 0.1, row
    full = theory_profile(config, profiles[0])          # the recursion through the whole depth, nothing measured
    np.testing.assert_allclose(profiles[0]["act_var"], full["act"], rtol=0.1)
    np.testing.assert_allclose(profiles[0]["grad_var"], full["grad"], rtol=0.1)
    if not residual:
        assert row["fwd_ratio"] < 1 and row["bwd_theory"] < 1     # Glorot through tanh: slowly shrinking


def test_he_keeps_relu_variance_and_small_normal_kills_it():
    he = summarize_profile(DeepMLP(256, 6, 256, init="he"), variance_profile(DeepMLP(256, 6, 256, init="he"),
                                                                            jax.random.PRNGKey(0), batch=32))
    small = DeepMLP(256, 6, 256, init="normal", init_std=0.01)
    tiny = summarize_profile(small, variance_profile(small, jax.random.PRNGKey(0), batch=32))
    assert he["fwd_theory"] == pytest.approx(1.0, rel=0.01) and 0.8 < he["fwd_ratio"] < 1.25
    assert tiny["fwd_theory"] == pytest.approx(256 * 1e-4 / 2, rel=0.02)     # sigma^2 / 2 per layer
    assert tiny["q_last"] < 1e-6 * tiny["q_first"]


def test_normalised_layers_feed_unit_variance_and_hand_rules_match_autodiff():
    x = jax.random.normal(jax.random.PRNGKey(1), (16, 12))
    y = jnp.arange(16) % 5
    for norm in ("batch", "layer"):
        config = DeepMLP(width=8, depth=2, n_in=12, n_out=5, init="he", activation="relu", norm=norm,
                         residual=True)
        params, state = init(jax.random.PRNGKey(0), config)
        t = task(config)

        @jax.jit
        def check(params, state, t=t, config=config):
            _, new_state, trace = forward(params, state, x, config, train=True)
            loss = lambda p: t.loss(p, state, {"x": x, "y": y}, None, True)[0]  # noqa: E731
            return ([jnp.mean(z ** 2) for z in trace["z"]], new_state, jax.grad(loss)(params),
                    jax.grad(fd.autodiff(loss))(params))
        moments, new_state, hand, auto = check(params, state)
        np.testing.assert_allclose(moments, 1.0, rtol=1e-2)
        for a, b in zip(jax.tree.leaves(hand), jax.tree.leaves(auto), strict=True):
            np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)
        if norm == "batch":
            assert not np.allclose(new_state["layers"][0]["mean"], 0.0)      # running statistics moved


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="init must be one of"):
        DeepMLP(init="xavier")
    with pytest.raises(ValueError, match="norm must be one of"):
        DeepMLP(norm="group")
