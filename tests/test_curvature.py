"""Curvature through the hand-derived rules (funcdl.explain.curvature): Hessian-vector products against pure
autodiff for the MLP, the CNN and the GPT; Lanczos against a dense eigendecomposition; the quadrature of
stochastic Lanczos quadrature against the moments it must reproduce."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from funcdl.models import MODELS
from jax.flatten_util import ravel_pytree
from test_models import FAST_COMPILE, fake_batch

import funcdl as fd
from funcdl.explain import curvature as C
from funcdl.training.task import DataInfo

TOL = 1e-8      # float64: both sides are exact formulas, they agree to rounding

# the smallest configurations that still have every kind of layer of the model
TINY = {
    "mlp": (DataInfo("fake", (6,), num_classes=3), {"hidden": (5,), "dropout": 0.0}),
    "cnn": (DataInfo("fake-mnist1d", (40,), num_classes=10), {"channels": 2}),
    "gpt": (DataInfo("fake-text", (4,), vocab_size=7, kind="language"),
            {"n_layer": 1, "n_head": 2, "n_embd": 4, "block_size": 4, "compute_dtype": "float32", "grad_chunks": 2}),
}


def _f64(tree):
    return jax.tree.map(lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def tiny_loss(name: str, batch: int = 3):
    """``(loss(params), params)`` of a tiny float64 model from the registry, evaluation mode, on a fake batch."""
    info, options = TINY[name]
    task = MODELS[name].build(info, **options)
    data = {k: np.asarray(a, np.float64) if np.issubdtype(a.dtype, np.floating) else a
            for k, a in fake_batch(info, batch).items()}
    key = jax.random.key(0, impl="unsafe_rbg")
    params, state = jax.jit(lambda k: _f64(task.init(k)))(key)
    return (lambda p: task.loss(p, state, data, None, False)[0]), params


def _random_like(params, seed=1):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape), a.dtype), params)


@pytest.mark.parametrize("name", [
    "mlp", pytest.param("cnn", marks=pytest.mark.slow), pytest.param("gpt", marks=pytest.mark.slow)])
def test_hvp_through_hand_rules_equals_autodiff(name):
    loss, params = tiny_loss(name)
    v = _random_like(params)
    both = jax.jit(lambda p, v: (C.hvp(loss, p, v), C.hvp(fd.autodiff(loss), p, v)))
    hand, auto = both.lower(params, v).compile(FAST_COMPILE)(params, v)
    assert jax.tree.structure(hand) == jax.tree.structure(params)
    err = C.relative_error(hand, auto)
    assert err <= TOL, f"{name}: HVP hand vs autodiff relative error {err:.2e}"
    assert max(float(jnp.abs(x).max()) for x in jax.tree.leaves(hand)) > 1e-6     # not a vacuous zero


def test_lanczos_top_eigenvalues_match_a_dense_hessian():
    loss, params = tiny_loss("mlp")
    flat, unravel = ravel_pytree(params)
    dense = np.asarray(jax.jit(jax.hessian(lambda x: fd.autodiff(loss)(unravel(x))))(flat))
    exact = np.linalg.eigvalsh((dense + dense.T) / 2)[::-1]
    n = flat.size
    top, vecs = C.top_eigenvalues(loss, params, k=3, iters=n, vectors=True)     # the whole Krylov space
    np.testing.assert_allclose(top, exact[:3], rtol=1e-9, atol=1e-12 * abs(exact[0]))
    # a Ritz vector is an eigenvector: H u = lambda u
    np.testing.assert_allclose(dense @ vecs[0], top[0] * vecs[0], atol=1e-8 * abs(top[0]))
    # far fewer products than parameters already find the largest one
    assert C.top_eigenvalues(loss, params, iters=20)[0] == pytest.approx(exact[0], rel=1e-6)


def test_dense_hessian_of_a_quadratic():
    a = _symmetric(np.array([3.0, -1.0, 0.5, 2.0]))
    h = C.dense_hessian(lambda p: 0.5 * p["w"] @ jnp.asarray(a) @ p["w"] + jnp.sum(p["b"] ** 3),
                        {"w": jnp.ones(4), "b": jnp.asarray([1.0, 2.0])})
    expected = np.zeros((6, 6))             # ravel_pytree order: b, then w
    expected[:2, :2], expected[2:, 2:] = np.diag([6.0, 12.0]), a
    np.testing.assert_allclose(h, expected, atol=1e-12)


def _symmetric(eigenvalues, seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((len(eigenvalues),) * 2))
    return (q * eigenvalues) @ q.T


def test_lanczos_with_reorthogonalisation_finds_every_eigenvalue():
    lam = np.concatenate([np.linspace(0.0, 1.0, 117), [3.0, 5.0, 10.0]])
    a = _symmetric(lam)
    res = C.lanczos(lambda x: a @ x, len(lam), len(lam), keep_basis=True)
    assert len(res.alphas) == len(lam)
    np.testing.assert_allclose(np.sort(res.ritz()[0]), np.sort(lam), atol=1e-10)
    np.testing.assert_allclose(res.basis @ res.basis.T, np.eye(len(lam)), atol=1e-10)      # orthonormal
    np.testing.assert_allclose(res.basis @ a @ res.basis.T, res.tridiagonal, atol=1e-9)    # T = Q^T A Q


def test_lanczos_stops_when_the_krylov_space_closes():
    a = np.diag(np.repeat([-1.0, 2.0, 4.0], 10))        # three distinct eigenvalues: a 3-dimensional Krylov space
    res = C.lanczos(lambda x: a @ x, 30, 20)
    assert len(res.alphas) == 3 and len(res.betas) == 2
    np.testing.assert_allclose(res.ritz()[0], [-1.0, 2.0, 4.0], atol=1e-12)


def test_slq_quadrature_reproduces_the_moments_of_its_probe():
    lam = np.random.default_rng(3).uniform(-0.5, 2.0, 60)
    a = _symmetric(lam, seed=4)
    m = 6
    nodes, weights = C.slq(lambda x: a @ x, 60, probes=1, iters=m, seed=7)
    v = np.random.default_rng(7).standard_normal(60)
    v /= np.linalg.norm(v)
    assert weights.sum() == pytest.approx(1.0, abs=1e-12)
    for k in range(2 * m):                 # Gauss quadrature with m nodes is exact up to degree 2m - 1
        assert np.sum(weights * nodes**k) == pytest.approx(v @ np.linalg.matrix_power(a, k) @ v, rel=1e-9, abs=1e-12)


def test_spectral_density_integrates_to_one_and_estimates_the_trace():
    lam = np.random.default_rng(5).uniform(0.0, 1.0, 400)
    a = _symmetric(lam, seed=6)
    nodes, weights = C.slq(lambda x: a @ x, 400, probes=8, iters=25)
    sd = C.SpectralDensity(nodes, weights, 400)
    grid = np.linspace(-0.5, 1.5, 2001)
    assert np.trapezoid(sd.density(grid, sigma=0.02), grid) == pytest.approx(1.0, abs=1e-3)
    assert sd.trace == pytest.approx(lam.sum(), rel=0.1)


def test_bad_input_is_one_line():
    with pytest.raises(ValueError, match="iters must be a positive integer"):
        C.lanczos(lambda x: x, 4, 0)
    with pytest.raises(ValueError, match="start vector is zero"):
        C.lanczos(lambda x: x, 4, 2, v0=np.zeros(4))
    with pytest.raises(ValueError, match="has 3 entries"):
        C.lanczos(lambda x: x, 4, 2, v0=np.ones(3))
    with pytest.raises(ValueError, match="not finite"):
        C.lanczos(lambda x: x * np.nan, 4, 2)
    with pytest.raises(ValueError, match="use lanczos instead"):
        C.dense_hessian(lambda p: jnp.sum(p["w"] ** 2), {"w": jnp.zeros(20_001)})
    with pytest.raises(ValueError, match="k must be >= 1"):
        C.top_eigenvalues(lambda p: jnp.sum(p["w"] ** 2), {"w": jnp.ones(3)}, k=0)
    with pytest.raises(ValueError, match="probes must be >= 1"):
        C.slq(lambda x: x, 4, probes=0)
