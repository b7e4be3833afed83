"""Autoencoders, denoising autoencoders and VAEs (models/autoencoder.py, models/vae.py) and binarised MNIST
(funcdl/data/generative.py), on tiny synthetic images: the ELBO's pieces, the IWAE bound, conditional sampling,
training through the loop, a denoiser's PSNR gain and the end-of-run reports."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from funcdl.models import autoencoder, get_model, vae
from jax.scipy.stats import norm

import funcdl as fd
from funcdl.data import Dataset
from funcdl.data.generative import binarize
from funcdl.training import checkpoint
from funcdl.training.config import TrainConfig
from funcdl.training.loop import train
from funcdl.training.task import DataInfo

SMALL = vae.Config(image=(8, 8, 1), hidden=(16,), latent=3)


def toy_images(n: int, seed: int = 0, flip: float = 0.05):
    """n binary 8x8 images: one of 10 fixed random templates (the label) with a share ``flip`` of pixels flipped."""
    templates = np.random.default_rng(123).random((10, 8, 8, 1)) < 0.3
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = templates[y] ^ (rng.random((n, 8, 8, 1)) < flip)
    return x.astype(np.float32), y.astype(np.int32)


def toy_data(n_train=512, n_test=64, flip=0.05) -> Dataset:
    splits = {}
    for i, (name, n) in enumerate((("train", n_train), ("val", n_test), ("test", n_test))):
        x, y = toy_images(n, seed=i, flip=flip)
        splits[name] = {"x": x, "y": y}
    return Dataset("toy", splits, "classification", num_classes=10,
                   extras={"normalization": {"mean": 0.0, "std": 1.0}})


def init64(config, seed=0):
    params, _ = vae.init(jax.random.PRNGKey(seed), config)
    return jax.tree.map(lambda a: a.astype(jnp.float64), params)


# -- binarised MNIST ---------------------------------------------------------------------------------------------


def test_binarize_draws_each_pixel_with_its_grey_level():
    grey = np.full((200, 28, 28, 1), 64, np.uint8)
    bits = binarize(grey, seed=5)
    assert np.array_equal(bits, binarize(grey, seed=5)) and not np.array_equal(bits, binarize(grey, seed=6))
    assert set(np.unique(bits)) == {0, 1}
    assert abs(bits.mean() - 64 / 255) < 0.005
    assert binarize(np.zeros((2, 3), np.uint8), 0).max() == 0 and binarize(np.full((2, 3), 255, np.uint8), 0).min() == 1
    with pytest.raises(ValueError, match="uint8"):
        binarize(grey.astype(np.float32), 0)


def test_binarized_mnist_is_the_same_bits_every_time(shared_data):
    a = fd.data.load("binarized_mnist", data_dir=shared_data / "mnist")
    b = fd.data.load("binarized_mnist", data_dir=shared_data / "mnist")
    assert {k: a.size(k) for k in a.splits} == {"train": 55000, "val": 5000, "test": 10000}
    for split in a.splits:
        x = a.splits[split]["x"]
        assert x.dtype == np.float32 and x.shape[1:] == (28, 28, 1)
        assert np.array_equal(np.unique(x), [0.0, 1.0])
        assert np.array_equal(x, b.splits[split]["x"]) and np.array_equal(a.splits[split]["y"], b.splits[split]["y"])
    assert a.kind == "classification" and a.num_classes == 10
    assert a.extras["normalization"] == {"mean": 0.0, "std": 1.0}
    assert 0.12 < a.splits["test"]["x"].mean() < 0.145            # MNIST's mean grey level is 0.1325


# -- the ELBO and the IWAE bound ---------------------------------------------------------------------------------


def _bce_sum(logits, x):
    """-log p(x|z) of Bernoulli pixels written out: -sum x log sigma(l) + (1 - x) log(1 - sigma(l))."""
    return -jnp.sum(x * jax.nn.log_sigmoid(logits) + (1 - x) * jax.nn.log_sigmoid(-logits), axis=(1, 2, 3))


def test_elbo_pieces_add_up():
    x, _ = toy_images(16)
    params, key = init64(SMALL), jax.random.PRNGKey(7)
    value, (_, m) = vae.loss(params, {}, {"x": x.astype(np.float64)}, SMALL, key=key, train=True)
    assert float(m["nelbo"]) == pytest.approx(float(m["recon"]) + float(m["kl"]), rel=1e-12)
    assert float(value) == pytest.approx(float(m["nelbo"]), rel=1e-12)
    # each piece against the formulas written out with the same z
    mu, logvar = vae.encode(params, x.astype(np.float64), SMALL)
    z = mu + jnp.exp(logvar / 2) * jax.random.normal(key, mu.shape, mu.dtype)
    recon = jnp.mean(_bce_sum(vae.decode_logits(params, z, SMALL), x))
    kl = jnp.mean(0.5 * jnp.sum(jnp.exp(logvar) + mu**2 - 1 - logvar, axis=1))
    np.testing.assert_allclose([float(m["recon"]), float(m["kl"])], [recon, kl], rtol=1e-10)
    # beta weighs only the KL term of the training loss; nelbo is still reported
    beta = vae.Config(**{**SMALL.__dict__, "beta": 4.0})
    value4, (_, m4) = vae.loss(params, {}, {"x": x.astype(np.float64)}, beta, key=key, train=True)
    assert float(value4) == pytest.approx(float(m4["recon"]) + 4 * float(m4["kl"]), rel=1e-12)
    assert float(m4["nelbo"]) == pytest.approx(float(m["nelbo"]), rel=1e-12)


def test_iwae_with_one_sample_is_the_single_sample_elbo():
    x, _ = toy_images(12)
    x = x.astype(np.float64)
    params, key = init64(SMALL), jax.random.PRNGKey(3)
    got = vae.iwae_nll_per_image(params, x, key, 1, SMALL)
    # the same z (block 0's eps), the ELBO with the sampled KL: -(log p(x|z) + log p(z) - log q(z|x))
    mu, logvar = vae.encode(params, x, SMALL)
    eps = jax.random.normal(jax.random.fold_in(key, 0), (1, *mu.shape), mu.dtype)[0]
    z = mu + jnp.exp(logvar / 2) * eps
    log_q = jnp.sum(norm.logpdf(z, mu, jnp.exp(logvar / 2)), axis=1)
    want = _bce_sum(vae.decode_logits(params, z, SMALL), x) - jnp.sum(norm.logpdf(z), axis=1) + log_q
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_iwae_bound_is_tighter_than_the_elbo_on_average():
    x, _ = toy_images(32)
    x = x.astype(np.float64)
    params = init64(SMALL)
    keys = jax.random.split(jax.random.PRNGKey(0), 200)
    recon, kl = jax.jit(jax.vmap(lambda k: vae.nelbo_per_image(params, x, k, SMALL)))(keys)
    nelbo = float(jnp.mean(recon + kl))
    one = float(jnp.mean(jax.jit(jax.vmap(lambda k: vae.iwae_nll(params, x, k, 1, SMALL)))(keys)))
    assert one == pytest.approx(nelbo, rel=0.01)     # k = 1 is the ELBO (sampled vs analytic KL: same mean)
    bounds = [float(jax.jit(lambda p, k=k: vae.iwae_nll(p, x, jax.random.PRNGKey(1), k, SMALL, chunk=16))(params))
              for k in (10, 50)]
    assert bounds[1] < bounds[0] < nelbo            # k = 50 runs in 4 blocks (16, 16, 16, then 2)
    with pytest.raises(ValueError, match="k must be a positive"):
        vae.iwae_nll(params, x, jax.random.PRNGKey(1), 0, SMALL)


# -- conditional model --------------------------------------------------------------------------------------------


def test_conditional_model_needs_labels_and_its_gradient_matches_autodiff():
    task = get_model("vae").build(DataInfo("toy", (8, 8, 1), num_classes=10), hidden=(8,), latent=2,
                                  conditional=True, judge=False)
    sample, config = task.extras["sample_images"], task.extras["config"]
    params, _ = task.init(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="class-conditional; pass --class K / labels"):
        sample(params, jax.random.PRNGKey(1), 4)
    images = sample(params, jax.random.PRNGKey(1), 4, labels=np.array([0, 1, 2, 9]))
    assert images.shape == (4, 8, 8, 1) and images.dtype == jnp.float32
    assert float(images.min()) >= 0 and float(images.max()) <= 1
    with pytest.raises(ValueError, match="labels must lie in 0..9"):
        sample(params, jax.random.PRNGKey(1), 2, labels=np.array([0, 10]))
    with pytest.raises(ValueError, match="labels must be 4 whole numbers"):
        sample(params, jax.random.PRNGKey(1), 4, labels=np.array([0, 1]))
    plain = get_model("vae").build(DataInfo("toy", (8, 8, 1), num_classes=10), hidden=(8,), judge=False)
    with pytest.raises(ValueError, match="not class-conditional"):
        plain.extras["sample_images"](plain.init(jax.random.PRNGKey(0))[0], jax.random.PRNGKey(1), 2,
                                      labels=np.array([0, 1]))
    # the labels change the decoder's output, and the hand-derived gradient equals autodiff
    assert not np.allclose(sample(params, jax.random.PRNGKey(1), 1, labels=np.array([0])),
                           sample(params, jax.random.PRNGKey(1), 1, labels=np.array([5])))
    x, y = toy_images(6)
    batch = {"x": x.astype(np.float64), "y": y}
    p64 = init64(config)
    loss = lambda p: task.loss(p, {}, batch, jax.random.PRNGKey(2), True)  # noqa: E731
    g_hand, g_auto = jax.jit(lambda p: (jax.grad(loss, has_aux=True)(p)[0],
                                        jax.grad(fd.autodiff(loss), has_aux=True)(p)[0]))(p64)
    for a, b in zip(jax.tree.leaves(g_hand), jax.tree.leaves(g_auto), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_a_latent_size_that_does_not_match_the_checkpoint_is_one_clear_line(tmp_path):
    info = DataInfo("toy", (8, 8, 1), num_classes=10)
    saved = get_model("vae").build(info, hidden=(8,), latent=3).init(jax.random.PRNGKey(0))[0]
    path = checkpoint.save(tmp_path / "checkpoint.npz", {"params": saved})
    wanted = get_model("vae").build(info, hidden=(8,), latent=4).init(jax.random.PRNGKey(0))[0]
    # the first array that differs (the decoder's first weight, z -> hidden) is named with both shapes
    with pytest.raises(ValueError, match=r"params/\['decoder'\]\[0\]\['w'\] has shape \(3, 8\), the model "
                                         r"expects \(4, 8\)") as err:
        checkpoint.restore(path, {"params": wanted})
    assert "\n" not in str(err.value)


# -- training, denoising and the reports -------------------------------------------------------------------------


def _train(task, data, steps, lr=3e-3):
    cfg = TrainConfig(steps=steps, batch_size=32, lr=lr, eval_every=steps, progress=False, plots=False,
                      log_every=5)
    return train(task, data, cfg)


@pytest.mark.slow
def test_training_the_tiny_vae_lowers_its_loss_and_reports_bounds(tmp_path):
    data = toy_data()
    task = get_model("vae").build(data.info(), hidden=(32,), latent=4, judge=False)
    result = _train(task, data, 120)
    losses = [r["loss"] for r in result.history if r["split"] == "train"]
    assert losses[-1] < 0.7 * losses[0]
    s = result.summary
    assert s["test_nelbo"] == pytest.approx(s["test_recon"] + s["test_kl"], abs=2e-3)
    assert s["test_iwae_nll"] <= s["test_nelbo"] and s["test_iwae_k"] == 1000 and s["test_iwae_images"] == 64
    # the report itself, small, with its pictures
    out = vae.report(result.params, result.state, result.opt_state, data, tmp_path, config=task.extras["config"],
                     judge=False, draws=2, iwae_k=20, iwae_images=16)
    assert {"test_nelbo", "test_recon", "test_kl", "test_nelbo_draws", "test_iwae_nll", "test_iwae_k",
            "test_iwae_images"} <= set(out)
    assert out["test_iwae_images"] == 16 and out["test_nelbo_draws"] == 2
    assert not any(k.startswith("judge_") for k in out)
    if autoencoder.plots_module() is not None:
        assert {p.name for p in tmp_path.iterdir()} >= {"samples.png", "reconstructions.png", "interpolation.png",
                                                     "traversal.png"}
    encode, decode = task.extras["encode"], task.extras["decode"]
    mu, logvar = encode(result.params, data.splits["test"]["x"][:5])
    assert mu.shape == logvar.shape == (5, 4) and decode(result.params, mu).shape == (5, 8, 8, 1)


@pytest.mark.slow
def test_a_denoising_autoencoder_raises_the_psnr_of_noisy_images(tmp_path):
    data = toy_data(flip=0.0)                   # clean images are the 10 templates: a denoiser can recover them
    # (the convolutional one learns these 8x8 random templates slowly; tests/test_models.py trains it)
    for kind in ("gaussian",):          # masking noise: tests/test_models.py trains the small conv denoiser with it
        task = get_model("autoencoder").build(data.info(), hidden=(32,), latent=8, noise=0.3, noise_kind=kind)
        result = _train(task, data, 150, lr=1e-2)
        out = task.extras["report"](result.params, result.state, result.opt_state, data, tmp_path)
        assert set(out) == {"test_mse", "test_psnr_output", "test_psnr_input", "psnr_gain_db"}
        assert out["psnr_gain_db"] > 3, (kind, out)
        assert out["psnr_gain_db"] == pytest.approx(out["test_psnr_output"] - out["test_psnr_input"], abs=2e-3)
        if autoencoder.plots_module() is not None:
            assert (tmp_path / "triples.png").is_file()
    plain = get_model("autoencoder").build(data.info(), hidden=(8,), latent=2)
    out = plain.extras["report"](*plain.init(jax.random.PRNGKey(0)), None, data, None)
    assert set(out) == {"test_mse", "test_psnr_output"}      # a plain autoencoder has no noisy input


def test_autoencoder_options_are_checked():
    info = DataInfo("toy", (8, 8, 1), num_classes=10)
    with pytest.raises(ValueError, match="noise_kind must be one of gaussian, masking"):
        get_model("autoencoder").build(info, noise=0.5, noise_kind="salt")
    with pytest.raises(ValueError, match="drop probability below 1"):
        get_model("autoencoder").build(info, noise=1.0, noise_kind="masking")
    with pytest.raises(ValueError, match="divisible by 16"):
        get_model("conv_autoencoder").build(info, channels=(2, 4, 8, 8))
    with pytest.raises(ValueError, match="needs a data set with classes"):
        get_model("vae").build(DataInfo("toy", (8, 8, 1)), conditional=True)
