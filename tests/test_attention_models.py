"""Transformer encoder (BERT classifier head), encoder-decoder and ViT: padding, decoding, bad input. The
whole-model gradient check and a few training steps of every registered model (bert_mlm, transformer_seq2seq,
vit) are in tests/test_models.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from funcdl.models import bert, layers, transformer_seq2seq, vit

from funcdl.core.gradcheck import compare_model_grads, max_model_error

BERT = bert.Config(vocab_size=13, max_len=10, n_layer=1, n_head=2, d_model=8, n_classes=3)


def test_classifier_head_with_padding_mask_gradients():
    with jax.enable_x64(True):
        params, state = bert.init(jax.random.PRNGKey(0), BERT)
        params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
        tokens = jax.random.randint(jax.random.PRNGKey(1), (3, 7), 0, 12)
        mask = jnp.arange(7)[None, :] < jnp.array([7, 5, 3])[:, None]
        logits, _ = bert.classify(params, state, tokens, BERT, mask=mask)
        assert logits.shape == (3, 3)
        errs = compare_model_grads(lambda p: jnp.sum(jnp.sin(bert.classify(p, state, tokens, BERT, mask=mask)[0])),
                                   params)
        assert max_model_error(errs) < 1e-10


def test_padding_does_not_change_the_classification():
    params, state = bert.init(jax.random.PRNGKey(0), BERT)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (1, 5), 1, 12)
    padded = jnp.concatenate([tokens, jnp.zeros((1, 3), tokens.dtype)], axis=1)
    a, _ = bert.classify(params, state, tokens, BERT)
    b, _ = bert.classify(params, state, padded, BERT, mask=jnp.arange(8)[None] < 5)
    assert jnp.allclose(a, b, atol=1e-5)


def test_seq2seq_decoding_shapes():
    config = transformer_seq2seq.Config(vocab_size=13, max_len=10, tgt_len=5, n_layer=1, n_head=2, d_model=8)
    params, state = transformer_seq2seq.init(jax.random.PRNGKey(0), config)
    src = jnp.array([[5, 6, 7, 8, 0, 0], [9, 10, 11, 0, 0, 0]])
    out, _ = transformer_seq2seq.apply(params, state, src, config)
    assert out.shape == (2, 5)
    assert transformer_seq2seq.decode_greedy(params, src, config, max_len=3).shape == (2, 3)


def test_bad_input_errors():
    with pytest.raises(ValueError, match="patch size"):
        vit.Config(patch=5, image_shape=(8, 8, 1), num_classes=2)
    with pytest.raises(ValueError, match="must divide d_model"):
        bert.Config(n_head=3, d_model=8)
    params, _ = bert.init(jax.random.PRNGKey(0), BERT)
    with pytest.raises(ValueError, match="longer than the positional table"):
        layers.encoder(params, jnp.zeros((1, 11), jnp.int32), BERT)
