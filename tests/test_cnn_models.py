"""CNN models: shapes, batch-norm state, and the whole-model gradient (hand-derived rules vs pure autodiff)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from funcdl.models import get_model

import funcdl as fd
from funcdl.core import gradcheck as gc
from funcdl.training.task import DataInfo

IMAGES = DataInfo("tiny", (8, 8, 1), 10)
SEQ = DataInfo("tiny1d", (40,), 10)


def _batch(info, n=4, seed=0):
    rng = np.random.default_rng(seed)
    return {"x": jnp.asarray(rng.normal(size=(n, *info.input_shape))),
            "y": jnp.asarray(rng.integers(0, info.num_classes, size=n), jnp.int32)}


CASES = [
    ("cnn", SEQ, {}), ("dilated", SEQ, {"channels": 6}), ("lenet", DataInfo("m", (28, 28, 1), 10), {}),
    ("resnet", IMAGES, {"widths": (4, 8), "blocks": (1, 1)}),
    ("resnet", IMAGES, {"widths": (2, 4), "blocks": (1, 1), "block": "bottleneck"}),
    ("densenet", IMAGES, {"growth": 3, "blocks": (2, 1)}),
    ("mbconv", IMAGES, {"stem": 8, "stages": ((8, 1, 1, 1), (8, 2, 2, 1)), "head": 16}),
]


@pytest.mark.parametrize("name,info,opts", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_model_hand_gradient_equals_autodiff(name, info, opts):
    with jax.enable_x64(True):
        task = get_model(name).build(info, **opts)
        params, state = task.init(jax.random.PRNGKey(0))
        params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
        state = jax.tree.map(lambda a: a.astype(jnp.float64), state)
        batch = _batch(info)

        def loss(p):
            value, (new_state, metrics) = task.loss(p, state, batch, jax.random.PRNGKey(1), True)
            return value

        g_hand = gc.jit_once(jax.grad(loss))(params)
        g_auto = gc.jit_once(jax.grad(fd.autodiff(loss)))(params)
        # one relative error over the whole model: a leaf whose exact gradient is zero (the shift of a batch norm
        # that feeds another batch norm) holds rounding noise on both sides, so leaf-wise ratios mean nothing
        err = gc.rel_error(g_hand, g_auto)
        assert err <= 1e-10, err
        value, (new_state, metrics) = task.loss(params, state, batch, None, True)
        assert np.isfinite(float(value)) and 0 <= float(metrics["accuracy"]) <= 1
        assert jax.tree.structure(new_state) == jax.tree.structure(state)
        if jax.tree.leaves(state):   # batch norm: running statistics moved in training, not in evaluation
            moved = any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(state),
                                                              strict=True))
            assert moved
            _, (eval_state, _) = task.loss(params, state, batch, None, False)
            assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(eval_state), jax.tree.leaves(state),
                                                            strict=True))
        logits = task.apply(params, state, batch["x"])
        assert logits.shape == (4, 10)


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
