"""Transformer encoder (MLM, classification), encoder-decoder and ViT: shapes, hand-vs-autodiff gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from funcdl.models import transformer as tr

from funcdl.core.gradcheck import compare_model_grads, max_model_error

CFG = tr.TransformerConfig(vocab_size=13, max_len=10, n_layer=1, n_head=2, d_model=8, n_classes=3, patch=4,
                           image_shape=(8, 8, 1))


def _x64(tree):
    return jax.tree.map(lambda a: a.astype(jnp.float64), tree)


def test_encoder_mlm_and_classifier_gradients():
    with jax.enable_x64(True):
        params = _x64(tr.encoder_init(jax.random.PRNGKey(0), CFG))
        tokens = jax.random.randint(jax.random.PRNGKey(1), (3, 7), 0, 12)
        mask = jnp.arange(7)[None, :] < jnp.array([7, 5, 3])[:, None]
        assert tr.classify(params, tokens, CFG, mask).shape == (3, 3)
        errs = compare_model_grads(lambda p: tr.mlm_loss(p, tokens, jax.random.PRNGKey(2), CFG, mask_token=12), params)
        assert max_model_error(errs) < 1e-10
        errs = compare_model_grads(lambda p: jnp.sum(jnp.sin(tr.classify(p, tokens, CFG, mask))), params)
        assert max_model_error(errs) < 1e-10


def test_padding_does_not_change_the_classification():
    params = tr.encoder_init(jax.random.PRNGKey(0), CFG)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (1, 5), 1, 12)
    padded = jnp.concatenate([tokens, jnp.zeros((1, 3), tokens.dtype)], axis=1)
    a = tr.classify(params, tokens, CFG)
    b = tr.classify(params, padded, CFG, jnp.arange(8)[None] < 5)
    assert jnp.allclose(a, b, atol=1e-5)


def test_seq2seq_gradients_and_decoding():
    with jax.enable_x64(True):
        params = _x64(tr.seq2seq_init(jax.random.PRNGKey(0), CFG))
        src = jnp.array([[5, 6, 7, 8, 0, 0], [9, 10, 11, 0, 0, 0]])
        tgt = jnp.array([[8, 7, 6, 5, 2], [11, 10, 9, 2, 0]])
        errs = compare_model_grads(lambda p: tr.seq2seq_loss(p, src, tgt, CFG)[0], params)
        assert max_model_error(errs) < 1e-10
        out = tr.seq2seq_greedy(params, src, CFG, 5)
        assert out.shape == (2, 5)


def test_vit_gradients_and_errors():
    with jax.enable_x64(True):
        params = _x64(tr.vit_init(jax.random.PRNGKey(0), CFG))
        images = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8))
        assert tr.vit_apply(params, images, CFG).shape == (2, 3)
        errs = compare_model_grads(lambda p: jnp.sum(jnp.sin(tr.vit_apply(p, images, CFG))), params)
        assert max_model_error(errs) < 1e-10
    with pytest.raises(ValueError, match="patch size"):
        tr.vit_init(jax.random.PRNGKey(0), tr.TransformerConfig(patch=5, image_shape=(8, 8, 1), n_classes=2))
    with pytest.raises(ValueError, match="longer than the positional table"):
        tr.encoder(tr.encoder_init(jax.random.PRNGKey(0), CFG), jnp.zeros((1, 11), jnp.int32), CFG)
