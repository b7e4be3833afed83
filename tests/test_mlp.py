"""The MLP's backprop written out (``mlp.grads_by_hand``) and its shapes and errors; the whole-model gradient check
and a few training steps of every registered model are in tests/test_models.py."""

import jax
import jax.numpy as jnp
import pytest
from funcdl.models import mlp

import funcdl as fd
from funcdl.core.gradcheck import rel_error


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu", "silu"])
def test_grads_by_hand_equals_jax_grad(activation):
    config = mlp.Config(sizes=(12, 16, 8, 5), activation=activation)
    params, state = mlp.init(jax.random.PRNGKey(0), config)
    params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    batch = {"x": jax.random.normal(jax.random.PRNGKey(1), (9, 12), jnp.float64), "y": jnp.arange(9) % 5}
    value, g_hand = mlp.grads_by_hand(params, state, batch, config)
    g_auto, _ = jax.grad(fd.autodiff(mlp.loss), has_aux=True)(params, state, batch, config)
    assert float(value) == pytest.approx(float(mlp.loss(params, state, batch, config)[0]), rel=1e-12)
    assert rel_error(g_hand, g_auto) <= 1e-10


def test_mlp_shapes_and_errors():
    config = mlp.Config(sizes=(20, 7, 3))
    params, state = mlp.init(jax.random.PRNGKey(0), config)
    assert state == {}
    logits, new_state = mlp.apply(params, state, jnp.ones((5, 4, 5)), config)
    assert logits.shape == (5, 3) and new_state is state
    with pytest.raises(ValueError, match="dense"):
        mlp.apply(params, state, jnp.ones((5, 21)), config)
    with pytest.raises(ValueError, match="unknown activation"):
        mlp.Config(activation="nope")
