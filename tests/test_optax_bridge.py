"""The optional optax bridge: funcdl transforms inside optax chains, optax optimizers inside funcdl and training."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcdl import optim

optax = pytest.importorskip("optax")


def _trajectory(opt, steps=20):
    params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.ones(3)}
    loss = lambda p: jnp.sum((p["w"] @ jnp.ones(3) - 0.5) ** 4) + jnp.sum(jnp.sin(p["b"]))  # noqa: E731
    state = opt.init(params)
    for _ in range(steps):
        updates, state = opt.update(jax.grad(loss)(params), state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
    return params


def _close(a, b, tol=1e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


def test_optax_adam_through_the_bridge_is_funcdls_adam():
    _close(_trajectory(optim.from_optax(optax.adam(1e-2))), _trajectory(optim.adam(1e-2)))
    _close(_trajectory(optim.create("optax:adam", 1e-2)), _trajectory(optim.adam(1e-2)))


def test_funcdl_optimizer_inside_an_optax_chain():
    ours = optim.chain(optim.clip_by_global_norm(0.5), optim.adamw(1e-2, weight_decay=0.1))
    mixed = optax.chain(optax.clip_by_global_norm(0.5), optim.to_optax(optim.adamw(1e-2, weight_decay=0.1)))
    _close(_trajectory(mixed), _trajectory(ours))


def test_training_with_an_optax_optimizer():
    from test_train import blobs, cfg, mlp_task

    from funcdl.training.loop import train

    r = train(mlp_task(), blobs(), cfg(epochs=3, optimizer="optax:adamw", lr=1e-2))
    losses = [h["loss"] for h in r.history if h["split"] == "train"]
    assert losses[-1] < 0.5 * losses[0]


def test_unknown_optax_name_is_a_clear_error():
    with pytest.raises(ValueError, match="optax has no optimizer 'adamz'"):
        optim.create("optax:adamz", 1e-3)
