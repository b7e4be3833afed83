import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fd


def test_forward_is_a_gather():
    table = jnp.arange(12.0).reshape(4, 3)
    ids = jnp.array([[3, 0], [1, 1]])
    out = fd.embedding(table, ids)
    assert out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out[0, 0], table[3])
    np.testing.assert_array_equal(out[1, 1], table[1])


def test_repeated_ids_accumulate_by_sum():
    table = jnp.zeros((5, 2))
    ids = jnp.array([1, 3, 1, 1])
    dout = jnp.array([[1.0, 2.0], [10.0, 20.0], [100.0, 200.0], [1000.0, 2000.0]])
    _, pullback = jax.vjp(lambda t: fd.embedding(t, ids), table)
    (dtable,) = pullback(dout)
    np.testing.assert_allclose(dtable[1], [1101.0, 2202.0])
    np.testing.assert_allclose(dtable[3], [10.0, 20.0])
    np.testing.assert_array_equal(dtable[jnp.array([0, 2, 4])], 0.0)
    # same as autodiff through the reference
    (dref,) = jax.vjp(lambda t: fd.embedding.ref(t, ids), table)[1](dout)
    np.testing.assert_allclose(dtable, dref)


def test_padding_idx_maps_to_zero_and_does_not_learn():
    table = jax.random.normal(jax.random.PRNGKey(0), (4, 3))
    ids = jnp.array([0, 2, 2, 1])
    out = fd.embedding(table, ids, padding_idx=2)
    np.testing.assert_array_equal(out[1], 0.0)
    g = jax.grad(lambda t: jnp.sum(fd.embedding(t, ids, padding_idx=2) ** 2))(table)
    np.testing.assert_array_equal(g[2], 0.0)
    assert float(jnp.abs(g[0]).sum()) > 0


def test_out_of_vocabulary_ids():
    table = jnp.ones((4, 3))
    with pytest.raises(ValueError, match="token id 4 is outside the vocabulary 0..3"):
        fd.embedding(table, jnp.array([0, 4]))
    with pytest.raises(ValueError, match="token id -1"):
        fd.embedding(table, jnp.array([-1, 2]))
    with pytest.raises(TypeError, match="integer"):
        fd.embedding(table, jnp.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="2-D"):
        fd.embedding(jnp.ones((4,)), jnp.array([0]))
    # inside jit: a NaN row and no gradient for the bad id
    out = jax.jit(fd.embedding)(table, jnp.array([0, 7]))
    assert bool(jnp.all(jnp.isfinite(out[0]))) and bool(jnp.all(jnp.isnan(out[1])))
    g = jax.jit(jax.grad(lambda t, i: jnp.sum(jnp.nan_to_num(fd.embedding(t, i)))))(table, jnp.array([0, 7]))
    np.testing.assert_array_equal(g, jnp.zeros((4, 3)).at[0].set(1.0))


def test_against_torch():
    torch = pytest.importorskip("torch")
    table = np.random.default_rng(0).normal(size=(7, 5))
    ids = np.random.default_rng(1).integers(0, 7, size=(3, 6))
    dout = np.random.default_rng(2).normal(size=(3, 6, 5))
    emb = torch.nn.Embedding(7, 5, padding_idx=3, dtype=torch.float64)
    with torch.no_grad():
        emb.weight.copy_(torch.tensor(table))
        emb.weight[3] = 0.0
    t_out = emb(torch.tensor(ids))
    t_out.backward(torch.tensor(dout))
    tab = jnp.asarray(table).at[3].set(0.0)
    out, pullback = jax.vjp(lambda t: fd.embedding(t, jnp.asarray(ids), padding_idx=3), tab)
    np.testing.assert_allclose(out, t_out.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(pullback(jnp.asarray(dout))[0], emb.weight.grad.numpy(), rtol=1e-12, atol=1e-12)
