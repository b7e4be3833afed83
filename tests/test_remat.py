"""--remat: each block's activations recomputed in the backward (jax.checkpoint) — the same gradients for the GPT
at context 256 and the ResNet, and less memory:
* what the forward keeps for the backward (the residuals in the VJP closure, measured abstractly with
  ``jax.eval_shape``): the GPT at context 256, 4 layers, batch 4: 31.0 MB -> 2.7 MB;
* the peak of temporaries in XLA's compiled memory analysis: smaller for the ResNet. For the GPT on the CPU it
  is 42.7 MB both ways: XLA's CPU buffer assignment keeps each layer's backward temporaries (the MLP's
  1024x256 blocks) in buffers of their own, so the residuals remat removes are not what sets its peak there."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from funcdl.models import gpt, resnet

pytestmark = pytest.mark.slow          # trains or compiles for tens of seconds (CI runs it)


def _grad_and_temp_bytes(loss, params):
    grad = jax.jit(jax.grad(loss))
    compiled = grad.lower(params).compile()
    analysis = compiled.memory_analysis()
    if analysis is None:
        pytest.skip("this backend gives no memory analysis")
    return grad(params), analysis.temp_size_in_bytes


def _same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


def _residual_bytes(loss, params):
    """Bytes the forward keeps for the backward: the arrays closed over by ``jax.vjp``'s function."""
    shapes = jax.eval_shape(lambda p: jax.vjp(loss, p)[1], params)
    return sum(int(np.prod(a.shape)) * a.dtype.itemsize for a in jax.tree.leaves(shapes))


def test_gpt_remat_at_context_256_same_gradients_fewer_residuals():
    results, kept = {}, {}
    for remat in (False, True):
        config = gpt.Config(vocab_size=65, n_layer=4, n_head=4, n_embd=64, block_size=256, remat=remat)
        params, state = gpt.init(jax.random.PRNGKey(0), config)
        tokens = jax.random.randint(jax.random.PRNGKey(1), (4, 257), 0, 65)
        batch = {"x": tokens[:, :-1], "y": tokens[:, 1:]}
        params = jax.tree.map(lambda p: p.astype(jnp.float32), params)
        loss = lambda p, c=config, s=state, b=batch: gpt.loss(p, s, b, c)[0]
        results[remat] = jax.jit(jax.grad(loss))(params)
        kept[remat] = _residual_bytes(loss, params)
    _same(results[True], results[False])
    assert kept[True] * 4 < kept[False], kept          # 2.7 MB against 31.0 MB


def test_resnet_remat_same_gradients_less_memory():
    results = {}
    for remat in (False, True):
        config = resnet.Config(image=(16, 16, 1), widths=(8, 16), blocks=(2, 2), remat=remat)
        params, state = resnet.init(jax.random.PRNGKey(0), config)
        params = jax.tree.map(lambda p: p.astype(jnp.float32), params)
        batch = {"x": jax.random.normal(jax.random.PRNGKey(1), (32, 16, 16, 1)), "y": jnp.arange(32) % 10}
        results[remat] = _grad_and_temp_bytes(
            lambda p, c=config, s=state, b=batch: resnet.loss(p, s, b, c, train=True)[0], params)
    _same(results[True][0], results[False][0])
    assert results[True][1] < results[False][1], results
