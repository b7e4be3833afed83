"""The GPT model: gradients of the settings the registry test does not build (unfused with biases, another
chunking, dropout), KV-cache decoding, sampling, bad input. The whole-model gradient check of the registered
small GPT and a few training steps are in tests/test_models.py."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from funcdl.models import gpt

from funcdl.core.gradcheck import compare_model_grads, max_model_error

SMALL = gpt.Config(vocab_size=11, block_size=12, n_layer=2, n_head=2, n_embd=8)


def _batch(key, b=3, t=12, v=11):
    k1, k2 = jax.random.split(key)
    return {"x": jax.random.randint(k1, (b, t), 0, v), "y": jax.random.randint(k2, (b, t), 0, v)}


def _params(config, key=0):
    return gpt.init(jax.random.PRNGKey(key), config)[0]


@pytest.mark.slow
@pytest.mark.parametrize("config", [
    dataclasses.replace(SMALL, fused=False, bias=True),
    dataclasses.replace(SMALL, grad_chunks=3),
])
def test_model_gradients_hand_vs_autodiff_float64(config):
    with jax.enable_x64(True):
        params, state = gpt.init(jax.random.PRNGKey(0), config)
        params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
        params = jax.tree.map(lambda a: a + 0.05 * jnp.sin(jnp.arange(a.size).reshape(a.shape)), params)
        batch = _batch(jax.random.PRNGKey(1))
        errs = compare_model_grads(gpt.loss, params, state, batch, config, has_aux=True)
        assert max_model_error(errs) < 1e-10, max(errs, key=lambda e: e.rel_error)


def test_dropout_gradients_hand_vs_autodiff():
    config = dataclasses.replace(SMALL, dropout=0.2)
    with jax.enable_x64(True):
        params, state = gpt.init(jax.random.PRNGKey(0), config)
        params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
        errs = compare_model_grads(gpt.loss, params, state, _batch(jax.random.PRNGKey(2)), config, has_aux=True,
                                   key=jax.random.PRNGKey(3), train=True)
        assert max_model_error(errs) < 1e-10


def test_fused_and_unfused_models_agree():
    params, state = gpt.init(jax.random.PRNGKey(0), SMALL)
    batch = _batch(jax.random.PRNGKey(4))
    a, _ = gpt.loss(params, state, batch, SMALL)
    b, _ = gpt.loss(params, state, batch, dataclasses.replace(SMALL, fused=False))
    np.testing.assert_allclose(a, b, rtol=1e-5)
    assert abs(float(a) - np.log(11)) < 0.1                       # a fresh model predicts ~uniformly


def test_weight_tying_and_param_count():
    params = _params(SMALL)
    assert "lm_head" not in params                                 # the unembedding is wte
    d = SMALL.n_embd
    per_block = 2 * d + d * 3 * d + d * d + d * 4 * d + 4 * d * d
    assert gpt.count_params(params, non_embedding=False) == 11 * d + 12 * d + 2 * per_block + d
    baby = _params(gpt.Config())
    assert gpt.count_params(baby, non_embedding=False) == 804096    # nanoGPT reports 0.80M for the baby GPT


@pytest.mark.slow
@pytest.mark.parametrize("sampling", [dict(temperature=1.0), dict(temperature=0.8, top_k=5),
                                      dict(temperature=1.2, top_p=0.9), dict(temperature=0.0)])
def test_kv_cache_decoding_equals_recomputation(sampling):
    params = _params(SMALL)
    prompt = jnp.array([[1, 2, 3], [4, 5, 6]])
    key = jax.random.PRNGKey(7)
    cached = gpt.generate(params, prompt, key, 15, config=SMALL, **sampling)     # beyond block_size: slides
    full = gpt.generate_recompute(params, prompt, key, 15, config=SMALL, **sampling)
    assert cached.shape == (2, 18)
    np.testing.assert_array_equal(cached, full)
    np.testing.assert_array_equal(cached[:, :3], prompt)


@pytest.mark.slow
def test_kv_cache_logits_match_full_forward():
    params, state = gpt.init(jax.random.PRNGKey(1), SMALL)
    tokens = _batch(jax.random.PRNGKey(5), b=2, t=9)["x"]
    full, _ = gpt.apply(params, state, tokens, SMALL)
    cache = gpt.init_cache(SMALL, 2)
    h, cache = gpt.hidden(params, tokens[:, :5], SMALL, cache=cache, start=0)
    steps = [h @ params["wte"].T]
    for i in range(5, 9):
        h, cache = gpt.hidden(params, tokens[:, i:i + 1], SMALL, cache=cache, start=i)
        steps.append(h @ params["wte"].T)
    np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, atol=1e-5)


def test_sampling_filters():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
    keys = jax.random.split(jax.random.PRNGKey(0), 300)
    draw = lambda **kw: np.array([int(gpt.sample_logits(k, logits, **kw)[0]) for k in keys[:150]])
    assert set(draw(top_k=2)) <= {0, 1}
    assert set(draw(top_p=0.6)) <= {0, 1}                        # 0.5 < 0.6: the second token completes the set
    assert set(draw(top_p=0.4)) == {0}
    assert set(draw(temperature=0.0)) == {0}
    with pytest.raises(ValueError, match="top_p"):
        gpt.sample_logits(keys[0], logits, top_p=1.5)


def test_bad_input_errors():
    params, state = gpt.init(jax.random.PRNGKey(0), SMALL)
    too_long = jnp.zeros((1, 13), jnp.int32)
    with pytest.raises(ValueError, match="longer than the positional table"):
        gpt.apply(params, state, too_long, SMALL)
    with pytest.raises(ValueError, match="must divide n_embd"):
        gpt.Config(n_head=3, n_embd=128)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        gpt.loss(params, state, {"x": jnp.zeros((1, 4), jnp.int32), "y": jnp.full((1, 4), 11)}, SMALL)
