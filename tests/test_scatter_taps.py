"""The strided scatter of every tap-by-tap rule (``funcdl.nn._windows.scatter_taps``), computed phase by phase,
against its definition: each tap's contribution put on the grid dilated by s - 1 zeros it was read from, summed,
then cropped by the padding (negative padding included, as pooling's reach can be)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from funcdl.nn._windows import _taps, conv_output_shape, scatter_taps


def dilated_sum(contributions, kernel, in_spatial, stride, pads, dilation):
    n = len(kernel)
    out = contributions[0].shape[1:1 + n]
    padded = tuple(length + lo + hi for length, (lo, hi) in zip(in_spatial, pads, strict=True))
    total = 0.0
    for g, (_, start, limit) in zip(contributions, _taps(kernel, dilation, stride, out), strict=True):
        cfg = ((0, 0, 0), *((st, p - lim, s - 1) for st, lim, p, s in zip(start, limit, padded, stride, strict=True)),
               (0, 0, 0))
        total = total + lax.pad(g, 0.0, cfg)
    return lax.pad(total, 0.0, ((0, 0, 0), *((-lo, -hi, 0) for lo, hi in pads), (0, 0, 0)))


@pytest.mark.parametrize("in_spatial, kernel, stride, pads, dilation", [
    ((14, 14), (4, 4), (2, 2), ((1, 1), (1, 1)), (1, 1)),        # a DCGAN transposed conv
    ((7, 9), (3, 2), (3, 2), ((0, 2), (1, 0)), (1, 2)),          # odd lengths, per-axis stride and dilation
    ((11,), (2,), (4,), ((-1, 0),), (1,)),                       # stride above the kernel, a negative pad
    ((5, 6, 4), (2, 3, 1), (2, 1, 3), ((1, 0), (0, 1), (0, 0)), (2, 1, 1)),
])
def test_phase_scatter_is_the_dilated_sum(in_spatial, kernel, stride, pads, dilation):
    out = conv_output_shape(in_spatial, kernel, stride, pads, dilation)
    keys = jax.random.split(jax.random.PRNGKey(0), int(np.prod(kernel)))
    parts = [jax.random.normal(k, (2, *out, 3)) for k in keys]
    got = scatter_taps(parts, kernel, in_spatial, stride, pads, dilation)
    want = dilated_sum(parts, kernel, in_spatial, stride, pads, dilation)
    assert got.shape == want.shape == (2, *in_spatial, 3)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-6)
    assert float(jnp.max(jnp.abs(want))) > 0
