"""Input kinds: integer arrays and Python lists are refused by name.

The registry keeps to ``DISCRETE_INPUTS`` by construction: the checker calls every primitive on its examples and
drawn configurations through the same input check, so an example with an integer where a float belongs fails
``tests/test_gradcheck.py``."""

import jax.numpy as jnp
import pytest

import funcdl as fd


@pytest.mark.parametrize("call, message", [
    (lambda: fd.sigmoid(jnp.arange(3, dtype=jnp.int32)),
     "sigmoid: input 'x' must be a floating-point array, got dtype int32"),
    (lambda: fd.max_pool2d(jnp.ones((1, 4, 4, 1), jnp.int32), kernel=2),
     "max_pool2d: input 'x' must be a floating-point array, got dtype int32"),
    (lambda: fd.dense([[1.0, 2.0]], jnp.ones((2, 3))), "dense: input 'x' is a Python list; pass an array"),
    (lambda: fd.relu(True), "relu: input 'x' is the Python bool True"),
])
def test_wrong_input_kinds_name_the_primitive(call, message):
    with pytest.raises(TypeError) as err:
        call()
    assert message in str(err.value) and "\n" not in str(err.value)


def test_discrete_and_scalar_inputs_still_work():
    table = jnp.ones((5, 3))
    assert fd.embedding(table, jnp.array([0, 4])).shape == (2, 3)
    assert float(fd.sigmoid(0.0)) == 0.5
    logits = jnp.zeros((2, 3))
    assert fd.softmax_cross_entropy(logits, jnp.array([0, 2])).shape == ()
