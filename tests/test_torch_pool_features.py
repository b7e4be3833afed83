"""Pooling features matched with torch.nn.functional, values and gradients: ceil_mode (max and average, both
divisors), the 3-D pools, adaptive max pooling (1-D to 3-D, ties included) and adaptive pooling to outputs larger
than the input. torch is channels-first: inputs and outputs are transposed."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fd

pytestmark = pytest.mark.slow          # compiles many configurations (CI runs it; the quick subset skips it)

torch = pytest.importorskip("torch")
F = torch.nn.functional

MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
ADAPTIVE_MAX = {1: F.adaptive_max_pool1d, 2: F.adaptive_max_pool2d, 3: F.adaptive_max_pool3d}
ADAPTIVE_AVG = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}


def nchw(t, n):
    return t.permute(0, n + 1, *range(1, n + 1))


def nhwc(t, n):
    return t.permute(0, *range(2, n + 2), 1)


def compare(prim, torch_fn, x, settings, seed=0):
    """prim(x, **settings) and its hand VJP against torch_fn on the channels-first input, float64."""
    n = x.ndim - 2
    x = jnp.asarray(x, jnp.float64)

    @jax.jit
    def value_and_grad(x, ct):
        y, pull = jax.vjp(lambda x: prim(x, **settings), x)
        return y, pull(ct)[0]

    tx = torch.tensor(np.asarray(x), dtype=torch.float64, requires_grad=True)
    yt = nhwc(torch_fn(nchw(tx, n)), n)
    ct = np.random.default_rng(seed).normal(size=tuple(yt.shape))
    y, g = value_and_grad(x, jnp.asarray(ct))
    yt.backward(torch.tensor(ct))
    label = f"{prim.__name__ if hasattr(prim, '__name__') else prim} {x.shape} {settings}"
    assert y.shape == tuple(yt.shape), (label, y.shape, tuple(yt.shape))
    np.testing.assert_allclose(np.asarray(y), yt.detach().numpy(), rtol=1e-10, atol=1e-10, err_msg=label)
    np.testing.assert_allclose(np.asarray(g), tx.grad.numpy(), rtol=1e-10, atol=1e-10, err_msg=label)
    return np.asarray(y), np.asarray(g)


def data(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape)


# (input shape, kernel, stride, padding (symmetric, as torch), dilation): each changes the output length in ceil
# mode; the 5 / k=2 / s=2 / p=1 axes hit torch's rule that drops a last window starting in the right padding
CEIL = {
    1: [((2, 7, 2), 3, 2, 1, 1), ((1, 5, 2), 2, 2, 1, 1), ((1, 6, 1), 2, 3, 1, 2), ((1, 5, 1), 2, 2, 0, 1)],
    2: [((2, 5, 6, 2), 3, 2, 1, 1), ((1, 5, 4, 2), (2, 3), (2, 2), (1, 0), 1), ((1, 5, 5, 1), 2, 2, 1, (1, 2))],
    3: [((1, 5, 4, 3, 2), 2, 2, 1, 1), ((1, 4, 3, 5, 1), (3, 1, 3), (2, 1, 2), (1, 0, 0), 1)],
}


@pytest.mark.parametrize("n", [1, 2, 3])
def test_ceil_mode_max_pool_matches_torch(n):
    name = f"max_pool{n}d"
    longer = 0
    for shape, k, s, p, d in CEIL[n]:
        settings = {"kernel": k, "stride": s, "padding": p, "dilation": d}
        y, _ = compare(fd.get(name), lambda t, k=k, s=s, p=p, d=d: MAX[n](t, k, s, p, d, ceil_mode=True),
                       data(shape), {**settings, "ceil_mode": True})
        floor = jax.eval_shape(lambda x, settings=settings: fd.get(name)(x, **settings), jnp.zeros(shape)).shape
        longer += y.shape != floor
    assert longer >= 1, "the configurations should exercise ceil mode"


@pytest.mark.parametrize("n", [1, 2, 3])
def test_ceil_mode_avg_pool_matches_torch(n):
    """Both divisors: count_include_pad=True counts the padding but not the ceil-mode overhang past it."""
    name = f"avg_pool{n}d"
    for shape, k, s, p, _ in CEIL[n]:
        x = data(shape, 1)
        for include in (True, False):
            compare(fd.get(name),
                    lambda t, k=k, s=s, p=p, c=include: AVG[n](t, k, s, p, ceil_mode=True, count_include_pad=c), x,
                    {"kernel": k, "stride": s, "padding": p, "count_include_pad": include, "ceil_mode": True})


def test_3d_pools_match_torch():
    x = data((2, 5, 4, 5, 2), 2)
    for k, s, p, d in [(3, 2, 1, 1), ((3, 2, 2), (1, 2, 3), (1, 1, 0), 1), (2, 1, 0, (2, 1, 2))]:
        compare(fd.max_pool3d, lambda t, k=k, s=s, p=p, d=d: F.max_pool3d(t, k, s, p, d), x,
                {"kernel": k, "stride": s, "padding": p, "dilation": d})
    for k, s, p, include in [(3, 2, 1, True), ((3, 2, 2), (1, 2, 3), (1, 1, 0), False)]:
        compare(fd.avg_pool3d, lambda t, k=k, s=s, p=p, c=include: F.avg_pool3d(t, k, s, p, count_include_pad=c),
                x, {"kernel": k, "stride": s, "padding": p, "count_include_pad": include})


ADAPTIVE = {
    1: [((2, 7, 2), 3), ((1, 3, 2), 5), ((1, 4, 1), 4)],
    2: [((2, 5, 4, 2), (3, 2)), ((1, 3, 2, 2), (5, 3)), ((1, 4, 4, 1), 3)],
    3: [((1, 4, 3, 5, 2), (2, 3, 2)), ((1, 2, 3, 2, 1), (3, 4, 2))],
}


@pytest.mark.parametrize("n", [1, 2, 3])
def test_adaptive_max_pool_matches_torch(n):
    """Smaller and larger outputs (overlapping windows); then integer values, so windows hold ties: the first
    maximal element in row-major order gets the gradient, as torch's CPU kernel."""
    prim = fd.get(f"adaptive_max_pool{n}d")
    for shape, size in ADAPTIVE[n]:
        compare(prim, lambda t, size=size: ADAPTIVE_MAX[n](t, size), data(shape, 3), {"output_size": size})
    shape, size = ADAPTIVE[n][0]
    ties = np.random.default_rng(4).integers(0, 3, size=shape).astype(np.float64)
    y, g = compare(prim, lambda t: ADAPTIVE_MAX[n](t, size), ties, {"output_size": size})
    assert np.count_nonzero(g) < ties.size


@pytest.mark.parametrize("n", [1, 2, 3])
def test_adaptive_avg_pool_to_a_larger_output_matches_torch(n):
    prim = fd.get(f"adaptive_avg_pool{n}d")
    cases = {1: [((2, 3, 2), 5)], 2: [((1, 3, 2, 2), (5, 7)), ((1, 4, 3, 1), (2, 6))],
             3: [((1, 2, 3, 2, 2), (3, 4, 5)), ((1, 4, 3, 3, 1), 2)]}[n]
    for shape, size in cases:
        y, _ = compare(prim, lambda t, size=size: ADAPTIVE_AVG[n](t, size), data(shape, 5), {"output_size": size})
        assert y.shape[1:1 + n] == ((size,) * n if isinstance(size, int) else size)


@pytest.mark.parametrize("call, match", [
    (lambda: fd.max_pool3d(jnp.ones((1, 4, 4, 2)), kernel=2), r"max_pool3d: input must be 5-D \(N, D, H, W, C\)"),
    (lambda: fd.avg_pool3d(jnp.ones((1, 4, 4, 4, 2)), kernel=2, ceil_mode="yes"), "avg_pool3d: ceil_mode must be"),
    (lambda: fd.max_pool1d(jnp.ones((1, 2, 2)), kernel=3, stride=1, ceil_mode=True), "max_pool1d: window .* larger"),
    (lambda: fd.avg_pool2d(jnp.ones((1, 5, 5, 2)), kernel=2, padding=2, ceil_mode=True),
     r"avg_pool2d: padding .* \[0, window/2\]"),
    (lambda: fd.adaptive_max_pool2d(jnp.ones((1, 4, 4, 2)), output_size=0), "adaptive_max_pool2d: output_size"),
    (lambda: fd.adaptive_max_pool3d(jnp.ones((1, 4, 4, 2)), output_size=2), "adaptive_max_pool3d: input must be"),
    (lambda: fd.adaptive_avg_pool3d(jnp.ones((1, 0, 4, 4, 2)), output_size=2), "adaptive_avg_pool3d: input .* empty"),
])
def test_bad_settings_give_one_line_errors_naming_the_primitive(call, match):
    with pytest.raises(ValueError, match=match) as err:
        call()
    assert "\n" not in str(err.value)
