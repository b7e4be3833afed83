"""Initializers: bounds, standard deviations on large draws, orthogonality, gains, fans, errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcdl.nn import init

KEY = jax.random.PRNGKey(0)
BIG = (800, 600)          # 480k draws: a sample std is within ~0.2% of the true one


def _std(x):
    return float(np.std(np.asarray(x, np.float64)))


def test_fans_dense_and_conv():
    assert init.fans((784, 100)) == (784, 100)
    assert init.fans((3, 5, 16, 32)) == (3 * 5 * 16, 3 * 5 * 32)       # HWIO: receptive field x channels
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        init.fans((10,))


def test_gains_as_torch():
    assert init.calculate_gain("linear") == 1.0
    assert init.calculate_gain("sigmoid") == 1.0
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("leaky_relu") == pytest.approx(math.sqrt(2 / (1 + 0.01**2)))
    assert init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    assert init.calculate_gain("selu") == 0.75
    with pytest.raises(ValueError, match="unknown nonlinearity 'swishy'"):
        init.calculate_gain("swishy")


def test_constant_initializers():
    assert jnp.all(init.zeros(KEY, (3, 2)) == 0) and init.zeros(KEY, (3, 2)).shape == (3, 2)
    assert jnp.all(init.ones(KEY, (4,)) == 1)
    c = init.constant(KEY, (2, 2), jnp.float64, value=0.25)
    assert c.dtype == jnp.float64 and jnp.all(c == 0.25)


def test_uniform_and_normal():
    u = init.uniform(KEY, BIG, low=-2.0, high=3.0)
    assert float(u.min()) >= -2.0 and float(u.max()) < 3.0
    assert float(u.mean()) == pytest.approx(0.5, abs=0.01)
    assert _std(u) == pytest.approx(5 / math.sqrt(12), rel=0.01)
    n = init.normal(KEY, BIG, mean=1.0, std=0.3)
    assert float(n.mean()) == pytest.approx(1.0, abs=0.003)
    assert _std(n) == pytest.approx(0.3, rel=0.01)


def test_truncated_normal_bounds_and_std():
    x = init.truncated_normal(KEY, BIG, jnp.float64, mean=0.5, std=2.0, a=-1.5, b=2.5)
    assert float(x.min()) >= -1.5 and float(x.max()) <= 2.5
    # standard normal truncated to [alpha, beta] = [-1, 1]: var = 1 - 2 phi(1) / (Phi(1) - Phi(-1))
    phi = math.exp(-0.5) / math.sqrt(2 * math.pi)
    mass = math.erf(1 / math.sqrt(2))
    assert _std(x) == pytest.approx(2.0 * math.sqrt(1 - 2 * phi / mass), rel=0.01)
    assert float(x.mean()) == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("shape", [(300, 500), (3, 3, 64, 128)])
def test_glorot(shape):
    fan_in, fan_out = init.fans(shape)
    a = math.sqrt(6 / (fan_in + fan_out))
    u = init.glorot_uniform(KEY, shape)
    assert float(jnp.abs(u).max()) <= a
    assert _std(u) == pytest.approx(a / math.sqrt(3), rel=0.01)
    n = init.xavier_normal(KEY, shape, gain=2.0)
    assert _std(n) == pytest.approx(2.0 * math.sqrt(2 / (fan_in + fan_out)), rel=0.01)
    assert init.xavier_uniform is init.glorot_uniform


@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
@pytest.mark.parametrize("nonlinearity,a", [("relu", 0.0), ("leaky_relu", 0.2), ("tanh", 0.0)])
def test_kaiming(mode, nonlinearity, a):
    shape = (3, 3, 40, 90)
    fan = init.fans(shape)[0 if mode == "fan_in" else 1]
    std = init.calculate_gain(nonlinearity, a) / math.sqrt(fan)
    u = init.kaiming_uniform(KEY, shape, a=a, mode=mode, nonlinearity=nonlinearity)
    assert float(jnp.abs(u).max()) <= std * math.sqrt(3)
    assert _std(u) == pytest.approx(std, rel=0.01)
    n = init.he_normal(KEY, shape, a=a, mode=mode, nonlinearity=nonlinearity)
    assert _std(n) == pytest.approx(std, rel=0.01)


def test_kaiming_default_is_torch_default_and_torch_linear_bound():
    # torch's default kaiming_uniform_: a=0, fan_in, leaky_relu -> gain sqrt(2)
    u = init.kaiming_uniform(KEY, (500, 700))
    assert _std(u) == pytest.approx(math.sqrt(2 / 500), rel=0.01)
    # nn.Linear's default weight: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    w = init.torch_linear(KEY, (400, 1000))
    bound = 1 / math.sqrt(400)
    assert float(jnp.abs(w).max()) <= bound and float(jnp.abs(w).max()) > 0.99 * bound
    assert _std(w) == pytest.approx(bound / math.sqrt(3), rel=0.01)


def test_lecun():
    u = init.lecun_uniform(KEY, (250, 2000))
    assert float(jnp.abs(u).max()) <= math.sqrt(3 / 250)
    assert _std(u) == pytest.approx(1 / math.sqrt(250), rel=0.01)
    assert _std(init.lecun_normal(KEY, (250, 2000))) == pytest.approx(1 / math.sqrt(250), rel=0.01)


@pytest.mark.parametrize("shape", [(64, 32), (32, 64), (50, 50), (3, 3, 8, 16)])
def test_orthogonal(shape):
    gain = 1.7
    w = init.orthogonal(KEY, shape, jnp.float64, gain=gain)
    assert w.shape == shape and w.dtype == jnp.float64
    m = np.asarray(w).reshape(-1, shape[-1])
    rows, cols = m.shape
    gram = m.T @ m if rows >= cols else m @ m.T
    np.testing.assert_allclose(gram, gain**2 * np.eye(min(rows, cols)), atol=1e-12)
    # float32 is orthogonal to float32 precision
    w32 = np.asarray(init.orthogonal(KEY, shape), np.float64).reshape(-1, shape[-1])
    g32 = w32.T @ w32 if rows >= cols else w32 @ w32.T
    np.testing.assert_allclose(g32, np.eye(min(rows, cols)), atol=1e-5)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        init.orthogonal(KEY, (5,))


def test_orthogonal_is_haar_distributed_not_biased():
    """Sign fixing by diag(R) makes Q uniform: the mean of many draws' (0, 0) entries is ~ 0."""
    draws = jax.vmap(lambda k: init.orthogonal(k, (4, 4), jnp.float64)[0, 0])(jax.random.split(KEY, 4000))
    assert abs(float(draws.mean())) < 0.05


def test_dtypes_determinism_and_keys():
    for name, fn in init.INITIALIZERS.items():
        a = fn(KEY, (16, 8), jnp.float64)
        b = fn(KEY, (16, 8), jnp.float64)
        assert a.dtype == jnp.float64 and a.shape == (16, 8), name
        np.testing.assert_array_equal(a, b)
        assert fn(KEY, (16, 8), jnp.bfloat16).dtype == jnp.bfloat16, name
        if name not in ("zeros", "ones", "constant"):
            assert not np.array_equal(a, fn(jax.random.PRNGKey(1), (16, 8), jnp.float64)), name


def test_get_by_name_and_errors():
    assert init.get("glorot_uniform") is init.glorot_uniform
    he = init.get("he_normal")(KEY, BIG)
    assert _std(he) == pytest.approx(math.sqrt(2 / BIG[0]), rel=0.01)      # relu gain
    with pytest.raises(ValueError, match="unknown initializer 'glorot'.*glorot_uniform"):
        init.get("glorot")
    with pytest.raises(ValueError, match="mode must be 'fan_in' or 'fan_out'"):
        init.kaiming_normal(KEY, (4, 4), mode="fan_avg")
