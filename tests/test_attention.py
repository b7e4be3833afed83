"""Attention, normalisation and feed-forward primitives: behaviour beyond the registry's gradient checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fd
from funcdl.core.gradcheck import compare_model_grads, max_model_error
from funcdl.nn import attention as A
from funcdl.nn import feedforward as F


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _qkv(key, b=2, h=3, t=5, s=6, d=4):
    k = jax.random.split(key, 3)
    return (jax.random.normal(k[0], (b, h, t, d)), jax.random.normal(k[1], (b, h, s, d)),
            jax.random.normal(k[2], (b, h, s, d)))


def test_attention_matches_softmax_formula():
    q, k, v = _qkv(jax.random.PRNGKey(0))
    out = fd.dot_product_attention(q, k, v)
    p = jax.nn.softmax(q @ jnp.swapaxes(k, -1, -2) / 2.0, axis=-1)
    np.testing.assert_allclose(out, p @ v, rtol=1e-12, atol=1e-12)


def test_causal_equals_boolean_mask_and_additive_mask():
    q, k, v = _qkv(jax.random.PRNGKey(1), t=6, s=6)
    causal = fd.dot_product_attention(q, k, v, causal=True)
    boolean = fd.dot_product_attention(q, k, v, mask=A.causal_mask(6))
    additive = fd.dot_product_attention(q, k, v, bias=jnp.where(A.causal_mask(6), 0.0, -jnp.inf))
    np.testing.assert_allclose(causal, boolean, atol=1e-12)
    np.testing.assert_allclose(causal, additive, atol=1e-12)
    # the first query sees only the first key
    np.testing.assert_allclose(causal[..., 0, :], v[..., 0, :], atol=1e-12)


def test_causal_with_cache_is_bottom_right_aligned():
    q, k, v = _qkv(jax.random.PRNGKey(2), t=6, s=6)
    full = fd.dot_product_attention(q, k, v, causal=True)
    last2 = fd.dot_product_attention(q[..., 4:, :], k, v, causal=True)      # 2 new queries over 6 keys
    np.testing.assert_allclose(last2, full[..., 4:, :], atol=1e-12)


def test_key_padding_ignores_padded_keys_and_empty_rows_are_zero():
    q, k, v = _qkv(jax.random.PRNGKey(3))
    mask = A.padding_mask(jnp.array([6, 4]), 6)
    out = fd.dot_product_attention(q, k, v, mask=mask)
    trimmed = fd.dot_product_attention(q[1:], k[1:, :, :4], v[1:, :, :4])
    np.testing.assert_allclose(out[1:], trimmed, atol=1e-12)
    nothing = fd.dot_product_attention(q, k, v, mask=jnp.zeros((5, 6), bool))
    assert np.all(np.asarray(nothing) == 0)
    g = jax.grad(lambda q: jnp.sum(fd.dot_product_attention(q, k, v, mask=jnp.zeros((5, 6), bool))))(q)
    assert np.all(np.isfinite(g)) and np.all(np.asarray(g) == 0)


def test_weights_are_returned_and_rows_sum_to_one():
    q, k, v = _qkv(jax.random.PRNGKey(4))
    out, w = fd.dot_product_attention(q, k, v, causal=True, return_weights=True)
    assert w.shape == (2, 3, 5, 6)
    np.testing.assert_allclose(jnp.sum(w, -1), 1.0, atol=1e-12)
    np.testing.assert_allclose(out, w @ v, atol=1e-12)


def test_dropout_on_weights_is_reproducible_and_unbiased():
    q, k, v = _qkv(jax.random.PRNGKey(5))
    a = fd.dot_product_attention(q, k, v, key=jax.random.PRNGKey(0), dropout_rate=0.5)
    b = fd.dot_product_attention(q, k, v, key=jax.random.PRNGKey(0), dropout_rate=0.5)
    c = fd.dot_product_attention(q, k, v, key=jax.random.PRNGKey(1), dropout_rate=0.5)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    keys = jax.random.split(jax.random.PRNGKey(9), 400)
    mean = jnp.mean(jax.vmap(lambda kk: fd.dot_product_attention(q, k, v, key=kk, dropout_rate=0.5))(keys), 0)
    np.testing.assert_allclose(mean, fd.dot_product_attention(q, k, v), atol=0.25)


@pytest.mark.parametrize("bad, message", [
    (dict(mask=jnp.ones((4, 6), bool)), "does not broadcast"),
    (dict(mask=jnp.ones((5, 6))), "must be boolean"),
    (dict(bias=jnp.ones((2, 3, 5, 7))), "does not broadcast"),
    (dict(dropout_rate=0.1), "needs a PRNG key"),
])
def test_bad_masks_give_clear_errors(bad, message):
    q, k, v = _qkv(jax.random.PRNGKey(6))
    with pytest.raises((ValueError, TypeError), match=message):
        fd.dot_product_attention(q, k, v, **bad)


def test_mha_heads_must_divide_width():
    with pytest.raises(ValueError, match="must divide the model width"):
        A.mha_init(jax.random.PRNGKey(0), 10, 3)
    with pytest.raises(ValueError, match="must divide n_heads"):
        A.mha_init(jax.random.PRNGKey(0), 12, 4, n_kv_heads=3)


def test_grouped_query_equals_repeated_kv_heads():
    d, h, hkv = 12, 4, 2
    params = A.mha_init(jax.random.PRNGKey(0), d, h, n_kv_heads=hkv)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 5, d))
    out, w = fd.multi_head_attention(params, x, n_heads=h, n_kv_heads=hkv, causal=True, return_weights=True)
    q, k, v = A.qkv_projection(params, x, n_heads=h, n_kv_heads=hkv)
    k_rep, v_rep = jnp.repeat(k, h // hkv, axis=1), jnp.repeat(v, h // hkv, axis=1)
    o = fd.dot_product_attention(q, k_rep, v_rep, causal=True)
    ref = fd.dense(A.merge_heads(o), params["w_o"], params["b_o"])
    np.testing.assert_allclose(out, ref, atol=1e-12)
    assert w.shape == (2, 4, 5, 5)
    errs = compare_model_grads(
        lambda p, x: jnp.sum(jnp.sin(fd.multi_head_attention(p, x, n_heads=h, n_kv_heads=hkv, causal=True))),
        params, x)
    assert max_model_error(errs) < 1e-10


def test_cross_attention_uses_context_for_keys():
    d, h = 8, 2
    params = A.mha_init(jax.random.PRNGKey(0), d, h)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 3, d))
    ctx = jax.random.normal(jax.random.PRNGKey(2), (2, 7, d))
    lengths = jnp.array([7, 5])
    kpm = jnp.arange(7)[None, :] < lengths[:, None]
    out, w = fd.multi_head_attention(params, x, ctx, n_heads=h, key_padding_mask=kpm, return_weights=True)
    assert out.shape == (2, 3, d) and w.shape == (2, 2, 3, 7)
    assert np.all(np.asarray(w[1, :, :, 5:]) == 0)
    with pytest.raises(ValueError, match="key_padding_mask"):
        fd.multi_head_attention(params, x, ctx, n_heads=h, key_padding_mask=kpm[:, :5])


def test_packed_and_sublayer_primitives_equal_the_composition():
    d, h = 12, 3
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, d))
    w_qkv = 0.3 * jax.random.normal(jax.random.PRNGKey(1), (d, 3 * d))
    w_o = 0.3 * jax.random.normal(jax.random.PRNGKey(2), (d, d))
    qkv = x @ w_qkv
    q, k, v = (A.split_heads(qkv[..., i * d:(i + 1) * d], h) for i in range(3))
    ref = A.merge_heads(fd.dot_product_attention(q, k, v, causal=True))
    np.testing.assert_allclose(A.packed_causal_attention(qkv, n_heads=h), ref, atol=1e-12)
    np.testing.assert_allclose(A.causal_self_attention(x, w_qkv, None, w_o, None, n_heads=h), ref @ w_o, atol=1e-12)


def test_mixed_precision_sublayers_are_close_to_float32():
    with jax.enable_x64(False):
        x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 16))
        w1 = 0.2 * jax.random.normal(jax.random.PRNGKey(1), (16, 64))
        w2 = 0.2 * jax.random.normal(jax.random.PRNGKey(2), (64, 16))
        full = F.gelu_mlp(x, w1, None, w2)
        half = F.gelu_mlp(x, w1, None, w2, compute_dtype="bfloat16")
        assert half.dtype == jnp.float32
        assert float(jnp.max(jnp.abs(full - half))) < 3e-2 * float(jnp.max(jnp.abs(full)))
        with pytest.raises(ValueError, match="compute_dtype"):
            F.gelu_mlp(x, w1, None, w2, compute_dtype="int8")


def test_layer_norm_statistics_and_errors():
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 9)) * 3 + 2
    y = fd.layer_norm(x)
    np.testing.assert_allclose(jnp.mean(y, -1), 0, atol=1e-12)
    np.testing.assert_allclose(jnp.var(y, -1), 1, atol=1e-4)
    r = fd.rms_norm(x, eps=0.0)
    np.testing.assert_allclose(jnp.mean(r ** 2, -1), 1, atol=1e-12)
    with pytest.raises(ValueError, match="scale shape"):
        fd.layer_norm(x, jnp.ones(8))


def test_feedforward_blocks_and_tied_loss():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 4))
    p = F.gelu_mlp_init(jax.random.PRNGKey(1), 4, 8, std=0.5)
    y = fd.gelu_mlp(x, p["w1"], p["b1"], p["w2"], p["b2"])
    np.testing.assert_allclose(y, fd.dense(fd.gelu(fd.dense(x, p["w1"], p["b1"])), p["w2"], p["b2"]), atol=1e-12)
    s = F.swiglu_init(jax.random.PRNGKey(2), 4, 6, std=0.5)
    ys = fd.swiglu(x, s["w_gate"], s["w_up"], s["w_down"])
    np.testing.assert_allclose(ys, (jax.nn.silu(x @ s["w_gate"]) * (x @ s["w_up"])) @ s["w_down"], atol=1e-12)
    table = jax.random.normal(jax.random.PRNGKey(3), (7, 4))
    t = jax.random.randint(jax.random.PRNGKey(4), (2, 3), 0, 7)
    ce = fd.tied_softmax_cross_entropy(x, table, t)
    np.testing.assert_allclose(ce, fd.softmax_cross_entropy(x @ table.T, t), atol=1e-12)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        fd.tied_softmax_cross_entropy(x, table, t.at[0, 0].set(9))
