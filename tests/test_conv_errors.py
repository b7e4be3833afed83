"""Bad input to convolution, pooling and normalisation layers: clear messages naming the layer and the shapes."""

import jax.numpy as jnp
import pytest

import funcdl as fd


def test_kernel_larger_than_padded_input():
    with pytest.raises(ValueError, match=r"conv2d: kernel \(5, 5, 3, 4\).*larger than the padded input.*\(1, 4, 4"):
        fd.conv2d(jnp.ones((1, 4, 4, 3)), jnp.ones((5, 5, 3, 4)))
    fd.conv2d(jnp.ones((1, 4, 4, 3)), jnp.ones((5, 5, 3, 4)), padding=1)     # padding makes it fit
    with pytest.raises(ValueError, match="max_pool2d: window.*larger than the padded input"):
        fd.max_pool2d(jnp.ones((1, 2, 2, 3)), kernel=3)


def test_channels_not_divisible_by_groups():
    with pytest.raises(ValueError, match=r"conv2d: output channels 5 .* not divisible by groups=2"):
        fd.conv2d(jnp.ones((1, 6, 6, 4)), jnp.ones((3, 3, 2, 5)), groups=2)
    with pytest.raises(ValueError, match=r"conv2d: input shape \(1, 6, 6, 5\).*not divisible by groups=2"):
        fd.conv2d(jnp.ones((1, 6, 6, 5)), jnp.ones((3, 3, 2, 4)), groups=2)
    with pytest.raises(ValueError, match="group_norm: channels 6 .* not divisible by groups=4"):
        fd.group_norm(jnp.ones((2, 3, 3, 6)), groups=4)


def test_nchw_input_is_recognised():
    x = jnp.ones((8, 3, 28, 28))          # torch layout
    w = jnp.ones((3, 3, 3, 16))
    with pytest.raises(ValueError, match=r"conv2d: input shape \(8, 3, 28, 28\).*channels-first \(NCHW\).*moveaxis"):
        fd.conv2d(x, w)
    with pytest.raises(ValueError, match="conv_transpose2d: .*channels-first"):
        fd.conv_transpose2d(jnp.ones((2, 4, 5, 5)), jnp.ones((2, 2, 4, 3)))


def test_wrong_rank_and_bias():
    with pytest.raises(ValueError, match=r"conv1d: input must be 3-D \(N, W, C\)"):
        fd.conv1d(jnp.ones((10, 3)), jnp.ones((3, 3, 4)))
    with pytest.raises(ValueError, match=r"conv2d: bias shape \(3,\) must be \(4,\)"):
        fd.conv2d(jnp.ones((1, 5, 5, 3)), jnp.ones((3, 3, 3, 4)), jnp.ones(3))
    with pytest.raises(ValueError, match="CAUSAL.*1-D"):
        fd.conv2d(jnp.ones((1, 5, 5, 3)), jnp.ones((3, 3, 3, 4)), padding="CAUSAL")
    with pytest.raises(ValueError, match="batch_norm: scale gamma shape"):
        fd.batch_norm(jnp.ones((4, 3)), jnp.ones(4))


def test_output_shapes():
    x = jnp.ones((2, 9, 10, 4))
    w = jnp.ones((3, 3, 4, 6))
    assert fd.conv2d(x, w, padding="SAME", stride=2).shape == (2, 5, 5, 6)
    assert fd.conv2d(x, w, dilation=2).shape == (2, 5, 6, 6)
    assert fd.conv2d(x, jnp.ones((3, 3, 1, 8)), groups=4, padding=1).shape == (2, 9, 10, 8)
    assert fd.conv_transpose2d(x, jnp.ones((4, 4, 4, 3)), stride=2, padding=1).shape == (2, 18, 20, 3)
    assert fd.max_pool2d(x, kernel=2).shape == (2, 4, 5, 4)
    assert fd.adaptive_avg_pool2d(x, output_size=(3, 2)).shape == (2, 3, 2, 4)
    assert fd.conv1d(jnp.ones((2, 10, 3)), jnp.ones((3, 3, 5)), padding="CAUSAL", dilation=4).shape == (2, 10, 5)
