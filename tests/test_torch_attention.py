"""Attention and normalisation against PyTorch: values and gradients (skipped when torch is absent)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fd
from funcdl.nn import attention as A

pytestmark = pytest.mark.slow          # compiles many configurations (CI runs it; the quick subset skips it)

torch = pytest.importorskip("torch")
F = torch.nn.functional


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _t(x):
    return torch.tensor(np.asarray(x), dtype=torch.float64, requires_grad=True)


def _data(seed, shape_q, s):
    rng = np.random.default_rng(seed)
    *b, t, d = shape_q
    return (rng.standard_normal(shape_q), rng.standard_normal((*b, s, d)), rng.standard_normal((*b, s, d)),
            rng.standard_normal((*b, t, d)))


def _compare(jax_fn, torch_fn, arrays, g):
    out, vjp = jax.vjp(jax_fn, *[jnp.asarray(a) for a in arrays])
    grads = vjp(jnp.asarray(g))
    ts = [_t(a) for a in arrays]
    t_out = torch_fn(*ts)
    t_out.backward(torch.tensor(g))
    np.testing.assert_allclose(out, t_out.detach().numpy(), rtol=1e-10, atol=1e-12)
    for mine, theirs in zip(grads, ts, strict=True):
        np.testing.assert_allclose(mine, theirs.grad.numpy(), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("flash", [False, True])
def test_sdpa_causal(flash):
    q, k, v, g = _data(0, (2, 3, 7, 4), 7)
    fn = ((lambda q, k, v: fd.flash_attention(q, k, v, causal=True, block_size=3)) if flash
          else (lambda q, k, v: fd.dot_product_attention(q, k, v, causal=True)))
    _compare(fn, lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), (q, k, v), g)


def test_sdpa_boolean_and_additive_masks():
    q, k, v, g = _data(1, (2, 3, 5, 4), 6)
    rng = np.random.default_rng(2)
    mask = rng.random((2, 1, 5, 6)) < 0.7
    mask[..., 0] = True                                       # torch gives NaN rows when all keys are masked
    bias = rng.standard_normal((3, 5, 6))
    m = jnp.asarray(mask)
    _compare(lambda q, k, v: fd.dot_product_attention(q, k, v, None, m),
             lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=torch.tensor(mask)), (q, k, v), g)
    b = jnp.asarray(bias)
    _compare(lambda q, k, v: fd.dot_product_attention(q, k, v, b, scale=0.3),
             lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=torch.tensor(bias), scale=0.3),
             (q, k, v), g)


def test_sdpa_key_padding_flash():
    q, k, v, g = _data(3, (2, 2, 6, 4), 9)
    kv = np.arange(9)[None, :] < np.array([9, 6])[:, None]                  # (B, S)
    kvj = jnp.asarray(kv)[:, None, :]
    _compare(lambda q, k, v: fd.flash_attention(q, k, v, kvj, block_size=4),
             lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=torch.tensor(kv[:, None, None, :])),
             (q, k, v), g)


@pytest.mark.parametrize("cross", [False, True])
def test_multihead_attention_with_copied_weights(cross):
    d, h, b, t, s = 8, 2, 2, 5, 7
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(d, h, batch_first=True, dtype=torch.float64)
    params = {"w_qkv": jnp.asarray(mha.in_proj_weight.detach().numpy().T),
              "b_qkv": jnp.asarray(mha.in_proj_bias.detach().numpy()),
              "w_o": jnp.asarray(mha.out_proj.weight.detach().numpy().T),
              "b_o": jnp.asarray(mha.out_proj.bias.detach().numpy())}
    rng = np.random.default_rng(4)
    x = rng.standard_normal((b, t, d))
    ctx = rng.standard_normal((b, s, d)) if cross else x
    s_len = ctx.shape[1]
    keep = np.arange(s_len)[None, :] < np.array([s_len, s_len - 2])[:, None]
    g = rng.standard_normal((b, t, d))

    def mine(p, x, c):
        out, w = fd.multi_head_attention(p, x, c if cross else None, n_heads=h, key_padding_mask=jnp.asarray(keep),
                                         return_weights=True)
        return out, w

    (out, w), vjp = jax.vjp(mine, params, jnp.asarray(x), jnp.asarray(ctx))
    dp, dx, dc = vjp((jnp.asarray(g), jnp.zeros_like(w)))
    xt = torch.tensor(x, requires_grad=True)
    ct = torch.tensor(ctx, requires_grad=True) if cross else xt
    t_out, t_w = mha(xt, ct, ct, key_padding_mask=torch.tensor(~keep), need_weights=True,
                     average_attn_weights=False)
    t_out.backward(torch.tensor(g))
    np.testing.assert_allclose(out, t_out.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(w, t_w.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dp["w_qkv"], mha.in_proj_weight.grad.numpy().T, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(dp["b_qkv"], mha.in_proj_bias.grad.numpy(), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(dp["w_o"], mha.out_proj.weight.grad.numpy().T, rtol=1e-9, atol=1e-11)
    x_grad = dx + (0 if cross else dc)
    np.testing.assert_allclose(x_grad, xt.grad.numpy(), rtol=1e-9, atol=1e-11)
    if cross:
        np.testing.assert_allclose(dc, ct.grad.numpy(), rtol=1e-9, atol=1e-11)


def _compare_norm(jax_fn, torch_fn, shape, seed):
    rng = np.random.default_rng(seed)
    x, w, b, g = (rng.standard_normal(shape) * 2 + 1, rng.standard_normal(shape[-1:]),
                  rng.standard_normal(shape[-1:]), rng.standard_normal(shape))
    out, vjp = jax.vjp(jax_fn, jnp.asarray(x), jnp.asarray(w), jnp.asarray(b))
    grads = vjp(jnp.asarray(g))
    ts = [_t(a) for a in (x, w, b)]
    t_out = torch_fn(*ts)
    t_out.backward(torch.tensor(g))
    np.testing.assert_allclose(out, t_out.detach().numpy(), rtol=1e-10, atol=1e-12)
    for mine, theirs in zip(grads, ts, strict=True):
        np.testing.assert_allclose(mine, theirs.grad.numpy(), rtol=1e-9, atol=1e-11)


def test_layer_norm_matches_torch():
    _compare_norm(lambda x, w, b: fd.layer_norm(x, w, b, eps=1e-5),
                  lambda x, w, b: F.layer_norm(x, (x.shape[-1],), w, b, eps=1e-5), (3, 4, 6), 5)


def test_rms_norm_matches_torch():
    if not hasattr(F, "rms_norm"):
        pytest.skip("this torch has no F.rms_norm")
    _compare_norm(lambda x, w, b: fd.rms_norm(x, w, eps=1e-6) + 0 * b,
                  lambda x, w, b: F.rms_norm(x, (x.shape[-1],), w, eps=1e-6) + 0 * b, (3, 4, 6), 6)


def test_gelu_mlp_matches_torch():
    rng = np.random.default_rng(7)
    x, w1, b1, w2, b2, g = (rng.standard_normal(s) for s in ((2, 3, 4), (4, 8), (8,), (8, 4), (4,), (2, 3, 4)))
    fn = lambda x, w1, b1, w2, b2: fd.gelu_mlp(x, w1, b1, w2, b2)
    out, vjp = jax.vjp(fn, *(jnp.asarray(a) for a in (x, w1, b1, w2, b2)))
    grads = vjp(jnp.asarray(g))
    ts = [_t(a) for a in (x, w1, b1, w2, b2)]
    t_out = F.gelu(ts[0] @ ts[1] + ts[2]) @ ts[3] + ts[4]
    t_out.backward(torch.tensor(g))
    np.testing.assert_allclose(out, t_out.detach().numpy(), rtol=1e-10)
    for mine, theirs in zip(grads, ts, strict=True):
        np.testing.assert_allclose(mine, theirs.grad.numpy(), rtol=1e-9, atol=1e-11)


def test_causal_mask_helper_matches_torch_for_square():
    assert np.array_equal(np.asarray(A.causal_mask(5)), np.tril(np.ones((5, 5), bool)))
