"""CNN models: batch-norm state in training and evaluation, the ResNet-18 layout, the MNIST-1D paper's CNN. The
whole-model gradient check and a few training steps of every registered model are in tests/test_models.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from funcdl.models import get_model

from funcdl.training.task import DataInfo

IMAGES = DataInfo("tiny", (8, 8, 1), 10)
SEQ = DataInfo("tiny1d", (40,), 10)


def test_batch_norm_state_moves_in_training_only():
    task = get_model("dilated").build(SEQ, channels=4, dilations=(1, 2))
    params, state = task.init(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    batch = {"x": jnp.asarray(rng.normal(size=(4, 40)), jnp.float32), "y": jnp.array([0, 1, 2, 3])}
    loss = jax.jit(task.loss, static_argnums=4)
    _, (train_state, _) = loss(params, state, batch, None, True)
    assert all(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(train_state), jax.tree.leaves(state),
                                                     strict=True))
    _, (eval_state, _) = loss(params, state, batch, None, False)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(eval_state), jax.tree.leaves(state), strict=True))


def test_resnet18_layout_shapes():
    """ResNet-18 on 32x32 and 224x224 (shapes only, nothing compiled): 11.2 M parameters as torchvision's."""
    for size, classes in [(32, 10), (224, 1000)]:
        task = get_model("resnet18").build(DataInfo("img", (size, size, 3), classes))
        params, state = jax.eval_shape(task.init, jax.random.PRNGKey(0))
        n = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
        if size == 224:
            assert n == 11_689_512          # torchvision.models.resnet18(): 11,689,512 parameters
        out = jax.eval_shape(task.apply, params, state, jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32))
        assert out.shape == (2, classes)
        assert len(params["stages"]) == 4 and all(len(s) == 2 for s in params["stages"])


def test_cnn_is_the_paper_model():
    task = get_model("cnn").build(SEQ)
    params, _ = task.init(jax.random.PRNGKey(0))
    n = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    # conv1 1*5*25+25, conv2/3 25*3*25+25, dense 125*10+10
    assert n == (125 + 25) + 2 * (1875 + 25) + 1260
    with pytest.raises(ValueError, match="1-D CNN"):
        get_model("cnn").build(IMAGES)
