"""The generative-model primitives against PyTorch in float64, values and gradients: the Gaussian NLL (every
reduction, full, homoscedastic variances, a variance clamped at eps), the KL divergences against
torch.distributions, the Bernoulli log-likelihood, the GAN losses against torch expressions, spectral
normalisation against torch.nn.utils.spectral_norm from the same u, and the modulated convolution against a
per-example grouped F.conv2d."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fd

pytestmark = pytest.mark.slow          # many small compiled programs (CI runs it; the quick subset skips it)

torch = pytest.importorskip("torch")
F = torch.nn.functional
D = torch.distributions


from test_torch_features import close, tt  # noqa: E402  (float64 comparison helpers shared by the torch tests)


def against_torch(fn, torch_fn, args, seed=0):
    """fn's value and hand-derived VJP (one compiled program) for a random cotangent against torch_fn's value
    and autograd gradients for the same cotangent."""
    args = [np.asarray(a, np.float64) for a in args]
    ct = np.random.default_rng(seed).normal(size=jax.eval_shape(fn, *map(jnp.asarray, args)).shape)

    def program(a, c):
        y, pull = jax.vjp(fn, *a)
        return y, pull(c)

    y, grads = jax.jit(program)([jnp.asarray(a) for a in args], jnp.asarray(ct))
    ts = [tt(a) for a in args]
    ty = torch_fn(*ts)
    ty.backward(torch.tensor(ct))
    close(y, ty.detach().numpy())
    for g, t in zip(grads, ts, strict=True):
        close(g, t.grad.numpy())


def draw(seed, *shapes, positive=()):
    rng = np.random.default_rng(seed)
    return [rng.uniform(0.2, 2.0, s) if i in positive else rng.normal(size=s) for i, s in enumerate(shapes)]


# -- Gaussian NLL ----------------------------------------------------------------------------------------------

NLL = [((4, 3), (4, 3), {}), ((4, 3), (4,), {"reduction": "sum", "full": True}),
       ((4, 3), (4, 1), {"reduction": "none"}), ((2, 3, 4), (2, 1, 4), {"full": True, "eps": 1e-3}),
       ((5,), (5,), {"reduction": "sum"})]


@pytest.mark.parametrize("shape, var_shape, settings", NLL)
def test_gaussian_nll_loss(shape, var_shape, settings):
    x, t, var = draw(1, shape, shape, var_shape, positive=(2,))
    against_torch(lambda a, b, v: fd.gaussian_nll_loss(a, b, v, **settings),
                  lambda a, b, v: F.gaussian_nll_loss(a, b, v, **settings), [x, t, var])


def test_gaussian_nll_loss_clamped_variance_and_float_variance():
    """A variance below eps: torch clamps its value under no_grad, so its gradient is dl/dv at eps, passed
    through (not zero); and a Python float variance."""
    x, t, var = draw(2, (3, 4), (3, 4), (3, 4), positive=(2,))
    var[0, 1], var[2, 3] = 1e-5, 0.0
    against_torch(lambda a, b, v: fd.gaussian_nll_loss(a, b, v, eps=1e-3, reduction="sum"),
                  lambda a, b, v: F.gaussian_nll_loss(a, b, v, eps=1e-3, reduction="sum"), [x, t, var])
    against_torch(lambda a, b: fd.gaussian_nll_loss(a, b, 0.7, full=True),
                  lambda a, b: F.gaussian_nll_loss(a, b, 0.7, full=True), [x, t])


def test_gaussian_nll_loss_errors():
    x = jnp.zeros((4, 3))
    with pytest.raises(ValueError, match="var shape \\(3,\\) does not fit input shape"):
        fd.gaussian_nll_loss(x, x, jnp.ones((3,)))
    with pytest.raises(ValueError, match="negative entries"):
        fd.gaussian_nll_loss(x, x, -jnp.ones((4, 3)))


# -- KL divergences, Bernoulli log-likelihood, reparameterisation -----------------------------------------------

def _reduce(v, reduction):
    return v.mean() if reduction == "mean" else v.sum() if reduction == "sum" else v


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_kl_normal(reduction):
    mu, lv = draw(3, (5, 4), (5, 4))

    def torch_kl(m, lv_):
        q = D.Independent(D.Normal(m, (0.5 * lv_).exp()), 1)
        p = D.Independent(D.Normal(torch.zeros_like(m), torch.ones_like(m)), 1)
        return _reduce(D.kl_divergence(q, p), reduction)

    against_torch(lambda a, b: fd.kl_normal(a, b, reduction=reduction), torch_kl, [mu, lv])


@pytest.mark.parametrize("p_shape, reduction", [((2, 3, 4), "mean"), ((4,), "sum"), ((3, 1), "none")])
def test_kl_normal_normal(p_shape, reduction):
    mq, lq, mp, lp = draw(4, (2, 3, 4), (2, 3, 4), p_shape, p_shape)

    def torch_kl(a, b, c, d):
        q = D.Independent(D.Normal(a, (0.5 * b).exp()), 1)
        shape = a.shape
        p = D.Independent(D.Normal(c.expand(shape), (0.5 * d).exp().expand(shape)), 1)
        return _reduce(D.kl_divergence(q, p), reduction)

    against_torch(lambda a, b, c, d: fd.kl_normal_normal(a, b, c, d, reduction=reduction), torch_kl,
                  [mq, lq, mp, lp])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bernoulli_log_likelihood(reduction):
    logits, = draw(5, (3, 4, 4, 1))
    x = np.random.default_rng(6).uniform(size=(3, 4, 4, 1))
    x[0] = np.round(x[0])
    torch_ll = lambda a, b: _reduce(D.Bernoulli(logits=a, validate_args=False).log_prob(b).sum((1, 2, 3)), reduction)
    against_torch(lambda a, b: fd.bernoulli_log_likelihood(a, b, reduction=reduction), torch_ll, [logits * 3, x])


def test_reparameterize():
    mu, lv, eps = draw(7, (4, 3), (4, 3), (4, 3))
    against_torch(fd.reparameterize, lambda m, v, e: m + (0.5 * v).exp() * e, [mu, lv, eps])


# -- GAN losses ------------------------------------------------------------------------------------------------

def _bce(x, label):
    return F.binary_cross_entropy_with_logits(x, torch.full_like(x, float(label)))


TORCH_D = {
    "minimax": lambda r, f: _bce(r, 1) + _bce(f, 0),
    "non_saturating": lambda r, f: _bce(r, 1) + _bce(f, 0),
    "least_squares": lambda r, f: 0.5 * ((r - 1) ** 2).mean() + 0.5 * (f ** 2).mean(),
    "hinge": lambda r, f: F.relu(1 - r).mean() + F.relu(1 + f).mean(),
    "wasserstein": lambda r, f: f.mean() - r.mean(),
}
TORCH_G = {
    "minimax": lambda f: -_bce(f, 0),                      # mean log(1 - sigma(f))
    "non_saturating": lambda f: _bce(f, 1),                # -mean log sigma(f)
    "least_squares": lambda f: 0.5 * ((f - 1) ** 2).mean(),
    "hinge": lambda f: -f.mean(),
    "wasserstein": lambda f: -f.mean(),
}


@pytest.mark.parametrize("kind", list(TORCH_D))
def test_gan_losses(kind):
    r, f = draw(8, (6, 1), (4, 1))
    r, f = 3 * r, 3 * f
    against_torch(lambda a, b: fd.gan_d_loss(a, b, kind=kind), TORCH_D[kind], [r, f])
    against_torch(lambda b: fd.gan_g_loss(b, kind=kind), TORCH_G[kind], [f])


def test_gan_losses_are_stable_for_large_logits():
    big = jnp.array([[80.0], [-80.0]])
    for kind in TORCH_D:
        d, g = fd.gan_d_loss(big, big, kind=kind), fd.gan_g_loss(big, kind=kind)
        gd = jax.grad(lambda r, k=kind: fd.gan_d_loss(r, big, kind=k))(big)
        assert np.isfinite(float(d)) and np.isfinite(float(g)) and np.all(np.isfinite(gd)), kind
    with pytest.raises(ValueError, match="unknown kind 'vanilla'"):
        fd.gan_g_loss(big, kind="vanilla")


@pytest.mark.parametrize("shape, target", [((4, 3), 1.0), ((3, 4, 4, 1), 0.5)])
def test_gradient_penalty(shape, target):
    g, = draw(9, shape)
    against_torch(lambda a: fd.gradient_penalty(a, target=target),
                  lambda a: ((a.flatten(1).norm(dim=1) - target) ** 2).mean(), [g])


# -- spectral normalisation ------------------------------------------------------------------------------------

@pytest.mark.parametrize("layer, n_iter", [("dense", 1), ("dense", 3), ("conv", 2)])
def test_spectral_norm(layer, n_iter):
    """torch.nn.utils.spectral_norm from the same u: the normalised weight, the new u and the gradient of the
    weight (torch's weight_orig) for a random cotangent on the normalised weight."""
    rng = np.random.default_rng(10)
    if layer == "dense":
        w = rng.normal(size=(5, 3))
        module, x = torch.nn.Linear(5, 3, bias=False), torch.zeros(1, 5, dtype=torch.float64)
        to_torch = lambda a: a.T                                         # (in, out) -> torch's (out, in)
    else:
        w = rng.normal(size=(3, 3, 2, 4))
        module, x = torch.nn.Conv2d(2, 4, 3, bias=False), torch.zeros(1, 2, 5, 5, dtype=torch.float64)
        to_torch = lambda a: np.transpose(a, (3, 2, 0, 1))              # HWIO -> (out, in, kh, kw)
    u0 = rng.normal(size=w.shape[-1])
    u0 /= np.linalg.norm(u0)
    ct = rng.normal(size=w.shape)
    module = module.double()
    with torch.no_grad():
        module.weight.copy_(torch.tensor(to_torch(w)))
    module = torch.nn.utils.spectral_norm(module, n_power_iterations=n_iter)
    with torch.no_grad():
        module.weight_u.copy_(torch.tensor(u0))
    module.train()
    module(x)                                                            # the pre-hook runs the power iteration
    (module.weight * torch.tensor(to_torch(ct))).sum().backward()

    def ours(w_):
        y, u_new = fd.spectral_norm(w_, jnp.asarray(u0), n_iter=n_iter)
        return jnp.sum(y * ct), (y, u_new)

    grad, (y, u_new) = jax.jit(jax.grad(ours, has_aux=True))(jnp.asarray(w))
    close(to_torch(np.asarray(y)), module.weight.detach().numpy())
    close(u_new, module.weight_u.numpy())
    close(to_torch(np.asarray(grad)), module.weight_orig.grad.numpy())


def test_spectral_norm_state_carries_no_gradient():
    w = jnp.asarray(np.random.default_rng(11).normal(size=(4, 3)))
    g = jax.grad(lambda a: jnp.sum(fd.spectral_norm(a, jnp.ones(3) / math.sqrt(3))[1]))(w)
    assert float(jnp.max(jnp.abs(g))) == 0.0
    with pytest.raises(ValueError, match="u shape \\(4,\\) must be \\(3,\\)"):
        fd.spectral_norm(w, jnp.ones(4))


# -- modulated convolution -------------------------------------------------------------------------------------

def torch_modulated_conv(x, w, s, demodulate, pad, eps=1e-8):
    """Per-example kernels as one grouped F.conv2d (groups = N), NCHW inside, NHWC/HWIO outside."""
    n, h, wd, cin = x.shape
    kh, kw, _, cout = w.shape
    wm = w.permute(3, 2, 0, 1)[None] * s[:, None, :, None, None]        # (N, C_out, C_in, kh, kw)
    if demodulate:
        wm = wm * torch.rsqrt((wm ** 2).sum((2, 3, 4), keepdim=True) + eps)
    xg = x.permute(0, 3, 1, 2).reshape(1, n * cin, h, wd)
    y = F.conv2d(xg, wm.reshape(n * cout, cin, kh, kw), padding=pad, groups=n)
    return y.reshape(n, cout, *y.shape[2:]).permute(0, 2, 3, 1)


@pytest.mark.parametrize("demodulate, padding, torch_pad", [(True, "SAME", 1), (False, "SAME", 1),
                                                            (True, "VALID", 0)])
def test_modulated_conv2d(demodulate, padding, torch_pad):
    x, w, s = draw(12, (3, 6, 5, 2), (3, 3, 2, 4), (3, 2), positive=(2,))
    against_torch(lambda a, b, c: fd.modulated_conv2d(a, b, c, demodulate=demodulate, padding=padding),
                  lambda a, b, c: torch_modulated_conv(a, b, c, demodulate, torch_pad), [x, 0.5 * w, s])


def test_minibatch_stddev_group_error():
    with pytest.raises(ValueError, match="batch size 6 is not divisible by the group size 4"):
        fd.minibatch_stddev(jnp.zeros((6, 2, 2, 1)))
    assert fd.minibatch_stddev(jnp.zeros((8, 2, 2, 3))).shape == (8, 2, 2, 4)
