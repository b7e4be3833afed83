"""WGAN-GP through the hand-derived rules: the critic's loss holds the gradient of the critic w.r.t. its input, so
differentiating it w.r.t. the critic's parameters differentiates the hand-written backward of dense, leaky_relu
and gradient_penalty a second time. That must equal pure autodiff of the references."""

import jax
import jax.numpy as jnp
import numpy as np

import funcdl as fd
from funcdl.core import gradcheck as gc

D_IN, HIDDEN, N = 5, 7, 6


def critic(p, x):
    """Two dense layers with a leaky relu between them; one score per example."""
    h = fd.leaky_relu(fd.dense(x, p["w1"], p["b1"]), negative_slope=0.2)
    return fd.dense(h, p["w2"], p["b2"])[:, 0]


def critic_loss(p, real, fake, mix, lam=10.0):
    """Wasserstein critic loss plus lam * (||grad_x D(x_hat)|| - 1)^2 at points between real and fake."""
    x_hat = mix * real + (1 - mix) * fake
    grads = jax.grad(lambda xh: jnp.sum(critic(p, xh)))(x_hat)
    return fd.gan_d_loss(critic(p, real), critic(p, fake), kind="wasserstein") + lam * fd.gradient_penalty(grads)


def _setup(seed=0):
    k = jax.random.split(jax.random.PRNGKey(seed), 7)
    p = {"w1": jax.random.normal(k[0], (D_IN, HIDDEN), jnp.float64) / np.sqrt(D_IN),
         "b1": 0.1 * jax.random.normal(k[1], (HIDDEN,), jnp.float64),
         "w2": jax.random.normal(k[2], (HIDDEN, 1), jnp.float64) / np.sqrt(HIDDEN),
         "b2": jnp.zeros((1,), jnp.float64)}
    real = jax.random.normal(k[3], (N, D_IN), jnp.float64) + 1.0
    fake = jax.random.normal(k[4], (N, D_IN), jnp.float64)
    mix = jax.random.uniform(k[5], (N, 1), jnp.float64)
    return p, real, fake, mix


def test_wgan_gp_critic_gradient_hand_rules_equal_autodiff():
    p, real, fake, mix = _setup()
    errors = gc.compare_model_grads(critic_loss, p, real, fake, mix)
    assert gc.max_model_error(errors) < 1e-10, errors
    # the penalty's second-order path matters: without it the gradient is different
    both = gc.jit_once(lambda q: (jax.grad(critic_loss)(q, real, fake, mix),
                                  jax.grad(critic_loss)(q, real, fake, mix, lam=0.0)))
    g_full, g_plain = both(p)
    assert float(jnp.max(jnp.abs(g_full["w1"] - g_plain["w1"]))) > 1e-3


def test_penalty_vanishes_for_unit_norm_input_gradients():
    """A critic whose input gradient is Q w2 with Q orthogonal and ||w2|| = 1 (every hidden unit active) has
    ||grad|| = 1 at every point: no penalty. Twice that critic has ||grad|| = 2: penalty (2 - 1)^2 = 1."""
    k = jax.random.split(jax.random.PRNGKey(1), 3)
    q, _ = jnp.linalg.qr(jax.random.normal(k[0], (D_IN, D_IN), jnp.float64))
    w2 = jax.random.normal(k[1], (D_IN, 1), jnp.float64)
    p = {"w1": q, "b1": jnp.full((D_IN,), 50.0), "w2": w2 / jnp.linalg.norm(w2), "b2": jnp.zeros((1,))}
    x = jax.random.normal(k[2], (N, D_IN), jnp.float64)
    penalty = lambda scale: fd.gradient_penalty(jax.grad(lambda xh: jnp.sum(scale * critic(p, xh)))(x))
    unit, doubled = gc.jit_once(lambda: (penalty(1.0), penalty(2.0)))()
    assert float(unit) < 1e-20
    np.testing.assert_allclose(float(doubled), 1.0, rtol=1e-12)
