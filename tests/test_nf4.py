"""NF4 and QLoRA (funcdl/nn/nf4.py): the table, block quantization, storage and the QLoRA layer.

The primitive's hand rule against autodiff and finite differences is `funcdl gradcheck nf4_lora_dense`
(tests/test_gradcheck.py runs it for every registered primitive); here: what the gradcheck does not see."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcdl.nn import lora, nf4


def test_table_is_the_published_one():
    t = nf4.nf4_table()
    assert np.max(np.abs(t.astype(np.float64) - nf4.NF4_PUBLISHED.astype(np.float64))) <= 1e-7
    assert t.shape == (16,) and t[0] == -1.0 and t[-1] == 1.0 and t[7] == 0.0
    assert (np.diff(t) > 0).all() and (t > 0).sum() == 8 and (t < 0).sum() == 7
    # float64 probabilities: the same construction, off by float32 rounding only
    assert 5e-8 < np.max(np.abs(nf4.nf4_table(float32_probabilities=False) - nf4.NF4_PUBLISHED)) < 2e-7


def test_nf4_beats_int4_on_normal_weights():
    w = jax.random.normal(jax.random.PRNGKey(0), (256, 256))
    mse_nf4 = float(jnp.mean((nf4.dequantize(nf4.quantize(w, double=False)) - w) ** 2))
    mse_int4 = float(jnp.mean((nf4.int4_roundtrip(w, 64) - w) ** 2))
    assert mse_nf4 < 0.85 * mse_int4, (mse_nf4, mse_int4)


def test_bits_per_parameter():
    w = jnp.zeros((1024, 1024)).at[0, 0].set(1.0)
    n = w.size
    double = nf4.quantize(w)
    # codes 4 bits, int8 block maxima per 64, float32 scale per 64 * 256, one float32 mean per tensor
    assert double.nbits() == 4 * n + 8 * n // 64 + 32 * n // (64 * 256) + 32
    assert round(nf4.bits_per_parameter(double), 3) == round(4 + 8 / 64 + 32 / (64 * 256), 3) == 4.127
    assert nf4.bits_per_parameter(nf4.quantize(w, double=False)) == 4 + 32 / 64


def test_round_trip():
    w = jax.random.normal(jax.random.PRNGKey(1), (37, 29), jnp.float32)   # 1073 values: the last block is padded
    single = nf4.quantize(w, double=False)
    absmax = np.max(np.abs(np.pad(np.ravel(w), (0, 17 * 64 - w.size)).reshape(-1, 64)), axis=1)
    # every value lands on its nearest level: the error is at most half the widest gap times its block's max
    err = np.abs(np.asarray(nf4.dequantize(single)) - np.asarray(w)).ravel()
    gap = np.max(np.diff(nf4.NF4)) / 2
    assert (err <= gap * np.repeat(absmax, 64)[: w.size] + 1e-6).all()
    # the block maxima themselves and exact zeros are exact
    w0 = w.at[3, 4].set(0.0)
    back = nf4.dequantize(nf4.quantize(w0, double=False))
    assert back[3, 4] == 0.0 and float(jnp.max(jnp.abs(back))) == float(jnp.max(jnp.abs(w0)))
    # double quantization changes the maxima by at most half an int8 step
    dq = nf4.quantize(w)
    half_step = float(jnp.max(dq.scale2)) / 2
    assert dq.absmax.dtype == jnp.int8 and float(jnp.max(jnp.abs(dq.scales() - single.absmax))) <= half_step + 1e-6
    assert np.array_equal(np.asarray(dq.codes), np.asarray(single.codes))


def test_layer_matches_float_lora_and_freezes_the_base():
    k = jax.random.split(jax.random.PRNGKey(2), 4)
    w = jax.random.normal(k[0], (16, 12))
    t = nf4.quantize(w)
    ad = {"a": jax.random.normal(k[1], (16, 3)), "b": jax.random.normal(k[2], (3, 12))}
    x, b = jax.random.normal(k[3], (2, 5, 16)), jnp.arange(12.0)
    y = nf4.qlora_dense(x, t, b, ad, alpha=6.0)
    ref = lora.lora_dense(x, nf4.dequantize(t), b, ad["a"], ad["b"], scale=2.0)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    g = jax.jit(jax.grad(lambda ad, x: jnp.sum(nf4.qlora_dense(x, t, b, ad, 6.0) ** 2), argnums=(0, 1)))(ad, x)
    g_ref = jax.jit(jax.grad(lambda ad, x: jnp.sum(lora.lora_dense(x, nf4.dequantize(t), b, ad["a"], ad["b"],
                                                            scale=2.0) ** 2), argnums=(0, 1)))(ad, x)
    for u, v in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_tree_helpers_on_a_small_gpt():
    from funcdl.models import gpt
    config = gpt.Config(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16, compute_dtype=None)
    params, _ = gpt.init(jax.random.PRNGKey(0), config)
    q = nf4.quantize_tree(params)
    assert isinstance(q["blocks"][0]["attn"]["qkv"]["w"], nf4.NF4Tensor) and q["wte"] is params["wte"]
    adapters = lora.add_adapters(jax.random.PRNGKey(1), params, r"/(qkv|proj|fc)/w$", 2)
    tokens = jnp.zeros((2, 8), jnp.int32)
    batch = {"x": tokens, "y": tokens}

    def loss(ad):
        return gpt.loss(nf4.apply_qlora(q, ad, 4.0), {}, batch, config)[0]

    v, g = jax.jit(jax.value_and_grad(loss))(adapters)
    assert np.isfinite(float(v)) and set(g) == set(adapters)
    # B = 0 at the start, so dA = x^T (s dy B^T) = 0 and only dB moves
    assert all(float(jnp.sum(jnp.abs(d["b"]))) > 0 and not jnp.any(d["a"]) for d in g.values())
    bits = nf4.tree_bits(q)
    assert bits["nf4_params"] == sum(v.size for p, v in _flat(params) if p.endswith("/w") and v.ndim == 2
                                     and "wte" not in p and "wpe" not in p)
    # 4.127 + 32 bits of scale and 32 of mean on (16, 48) and (16, 64) weights: 4.21
    assert 4.12 < bits["nf4_bits_per_param"] < 4.25 and bits["bits_per_param"] > bits["nf4_bits_per_param"]


def _flat(params):
    return [(lora._path(kp), v) for kp, v in jax.tree_util.tree_flatten_with_path(params)[0]]


def test_bad_inputs_are_refused_in_one_line():
    t = nf4.quantize(jnp.ones((8, 16)), double=False)
    a, bb = jnp.ones((8, 2)), jnp.ones((2, 16))
    with pytest.raises(ValueError, match="block must be a positive even int"):
        nf4.quantize(jnp.ones(8), block=3)
    with pytest.raises(TypeError, match="expected a non-empty float array"):
        nf4.quantize(jnp.ones(8, jnp.int32))
    with pytest.raises(ValueError, match="codes must be uint8 of shape"):
        nf4.nf4_lora_dense(jnp.ones((1, 8)), t.codes.astype(jnp.int32), t.absmax, None, a, bb)
    with pytest.raises(ValueError, match="absmax must have shape"):
        nf4.nf4_lora_dense(jnp.ones((1, 8)), t.codes, t.absmax[:1], None, a, bb)
    with pytest.raises(ValueError, match="does not match the weight"):
        nf4.nf4_lora_dense(jnp.ones((1, 7)), t.codes, t.absmax, None, a, bb)
