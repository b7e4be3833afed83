import jax
import jax.numpy as jnp
import pytest
from funcdl.models import mlp

import funcdl as fd
from funcdl.core.gradcheck import compare_model_grads, max_model_error, rel_error


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu", "silu"])
def test_grads_by_hand_equals_jax_grad(activation):
    cfg = mlp.MLPConfig(sizes=(12, 16, 8, 5), activation=activation)
    params = jax.tree.map(lambda a: a.astype(jnp.float64), mlp.init(jax.random.PRNGKey(0), cfg))
    x = jax.random.normal(jax.random.PRNGKey(1), (9, 12), jnp.float64)
    y = jnp.arange(9) % 5
    value, g_hand = mlp.grads_by_hand(params, x, y, cfg)
    g_auto = jax.grad(fd.autodiff(mlp.loss))(params, x, y, cfg)
    assert float(value) == pytest.approx(float(mlp.loss(params, x, y, cfg)), rel=1e-12)
    assert rel_error(g_hand, g_auto) <= 1e-10


def test_whole_model_comparison_both_ways():
    cfg = mlp.MLPConfig(sizes=(6, 10, 3), activation="elu")
    params = jax.tree.map(lambda a: a.astype(jnp.float64), mlp.init(jax.random.PRNGKey(2), cfg))
    x = jax.random.normal(jax.random.PRNGKey(3), (4, 6), jnp.float64)
    errors = compare_model_grads(mlp.loss, params, x, jnp.array([0, 1, 2, 1]), cfg)
    assert len(errors) == 4 and max_model_error(errors) <= 1e-10


def test_mlp_shapes_and_errors():
    cfg = mlp.MLPConfig(sizes=(20, 7, 3))
    params = mlp.init(jax.random.PRNGKey(0), cfg)
    assert mlp.apply(params, jnp.ones((5, 4, 5)), cfg).shape == (5, 3)
    with pytest.raises(ValueError, match="dense"):
        mlp.apply(params, jnp.ones((5, 21)), cfg)
    with pytest.raises(ValueError, match="unknown activation"):
        mlp.MLPConfig(activation="nope")
