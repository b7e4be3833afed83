"""Blockwise (flash) attention: equal to the plain attention, and memory linear in the sequence length."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fd


def _inputs(key, shape_q, s, dv=None, dtype=jnp.float32):
    k = jax.random.split(key, 4)
    *batch, t, d = shape_q
    q = jax.random.normal(k[0], shape_q, dtype)
    kk = jax.random.normal(k[1], (*batch, s, d), dtype)
    v = jax.random.normal(k[2], (*batch, s, dv or d), dtype)
    g = jax.random.normal(k[3], (*batch, t, dv or d), dtype)
    return q, kk, v, g


def _both(q, k, v, g, kv_mask=None, causal=False, block_size=16):
    mask = None if kv_mask is None else kv_mask[..., None, :]
    plain = lambda q, k, v: fd.dot_product_attention(q, k, v, None, mask, causal=causal)
    flash = lambda q, k, v: fd.flash_attention(q, k, v, kv_mask, causal=causal, block_size=block_size)
    out_p, vjp_p = jax.vjp(plain, q, k, v)
    out_f, vjp_f = jax.vjp(flash, q, k, v)
    return (out_p, vjp_p(g)), (out_f, vjp_f(g))


@pytest.mark.slow
@pytest.mark.parametrize("t, s, block, causal", [(50, 50, 16, True), (37, 53, 16, False), (64, 64, 64, True),
                                                 (20, 45, 7, True)])
def test_flash_equals_plain_float32(t, s, block, causal):
    q, k, v, g = _inputs(jax.random.PRNGKey(t + s), (2, 3, t, 8), s)
    lengths = jnp.array([s, s - 5])
    kv_mask = (jnp.arange(s)[None, :] < lengths[:, None])[:, None, :]             # (B, 1, S) key padding
    (op, gp), (of, gf) = _both(q, k, v, g, kv_mask, causal, block)
    np.testing.assert_allclose(of, op, atol=2e-6, rtol=1e-5)
    for a, b in zip(gf, gp, strict=True):
        np.testing.assert_allclose(a, b, atol=5e-6, rtol=1e-4)


def test_fully_masked_rows_give_zero_output_and_gradient():
    q, k, v, g = _inputs(jax.random.PRNGKey(0), (1, 6, 4), 6)
    kv_mask = jnp.array([[False, False, True, True, True, True]])
    (op, gp), (of, gf) = _both(q, k, v, g, kv_mask, causal=True, block_size=4)
    assert np.all(np.asarray(of[0, :2]) == 0) and np.all(np.asarray(gf[0][0, :2]) == 0)
    np.testing.assert_allclose(of, op, atol=1e-6)
    assert all(np.all(np.isfinite(x)) for x in gf)


def test_flash_bad_input():
    q, k, v, _ = _inputs(jax.random.PRNGKey(0), (2, 5, 4), 6)
    with pytest.raises(ValueError, match="kv_mask"):
        fd.flash_attention(q, k, v, jnp.ones((2, 5), bool))
    with pytest.raises(ValueError, match="block_size"):
        fd.flash_attention(q, k, v, block_size=0)
    with pytest.raises(ValueError, match="same rank|share"):
        fd.flash_attention(q, k[None], v)


def peak_bytes(fn, *args) -> int:
    """Temporaries + outputs + arguments of the compiled function (XLA's own accounting)."""
    m = jax.jit(fn).lower(*args).compile().memory_analysis()
    return int(m.temp_size_in_bytes + m.output_size_in_bytes + m.argument_size_in_bytes - m.alias_size_in_bytes)


def attention_memory(t: int = 4096, d: int = 64, block_size: int = 128, causal: bool = True) -> tuple[int, int]:
    """Peak bytes of forward+backward (a scalar loss, gradients of q, k, v) for the plain and the flash version."""
    q = jax.ShapeDtypeStruct((1, t, d), jnp.float32)
    g = jax.ShapeDtypeStruct((1, t, d), jnp.float32)

    def loss(attn):
        return lambda q, k, v, g: jax.grad(lambda q, k, v: jnp.sum(attn(q, k, v) * g), (0, 1, 2))(q, k, v)

    plain = loss(lambda q, k, v: fd.dot_product_attention(q, k, v, causal=causal))
    flash = loss(lambda q, k, v: fd.flash_attention(q, k, v, causal=causal, block_size=block_size))
    return peak_bytes(plain, q, q, q, g), peak_bytes(flash, q, q, q, g)


def test_flash_memory_is_linear_and_a_quarter_of_plain_at_4096():
    plain, flash = attention_memory(4096)
    assert flash * 4 <= plain, (plain, flash)
    plain2, flash2 = attention_memory(2048)
    assert flash / flash2 < 2.5                       # linear: doubling T about doubles the memory
    assert plain / plain2 > 3.0                       # quadratic
