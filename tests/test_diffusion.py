"""Diffusion (issue 17): schedules, the forward process, the losses, the samplers (DDPM as DDIM's eta = 1 case,
chunked scans, an oracle denoiser they must invert), guidance, the ddpm/cddpm models end to end and their errors."""

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcdl import diffusion as dif

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def test_schedules_match_their_formulas():
    lin = dif.make_schedule("linear", 1000)
    np.testing.assert_allclose(np.asarray(lin.betas)[[0, -1]], [1e-4, 0.02], rtol=1e-6)
    np.testing.assert_allclose(lin.alpha_bars, np.cumprod(1 - np.linspace(1e-4, 0.02, 1000)), rtol=1e-5)
    cos = dif.make_schedule("cosine", 1000)
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2    # noqa: E731
    for t in (1, 250, 500, 900):        # abar_t = f(t) / f(0) (no beta clipping before the last steps)
        assert float(cos.alpha_bars[t - 1]) == pytest.approx(f(t) / f(0), rel=1e-5)
    for s in (lin, cos):
        r = np.asarray(dif.snr(s))
        assert np.all(np.diff(r) < 0) and r[-1] < 1e-3      # SNR falls to (almost) pure noise
    # the cosine schedule is slower to destroy the signal at the start (Nichol & Dhariwal's point)
    assert float(cos.alpha_bars[300]) > float(lin.alpha_bars[300])


def test_q_sample_moments_and_v_round_trip():
    s = dif.make_schedule("linear", 100)
    x0 = jnp.full((20000, 1), 0.7)
    t = jnp.full((20000,), 40)
    eps = jax.random.normal(jax.random.PRNGKey(0), x0.shape)
    xt = dif.q_sample(s, x0, t, eps)
    a = float(s.alpha_bars[40])
    assert float(xt.mean()) == pytest.approx(math.sqrt(a) * 0.7, abs=0.02)
    assert float(xt.var()) == pytest.approx(1 - a, rel=0.03)
    v = dif.v_target(s, x0, t, eps)
    for pred, out in (("eps", eps), ("v", v)):     # both parameterisations give back x_0 and eps exactly
        x0_hat, eps_hat = dif.split_prediction(s, xt, t, out, pred, clip=False)
        np.testing.assert_allclose(x0_hat, x0, atol=2e-5)
        np.testing.assert_allclose(eps_hat, eps, atol=2e-5)


def test_ddim_eta1_on_every_step_is_the_ddpm_posterior():
    s = dif.make_schedule("cosine", 50)
    k = jax.random.split(jax.random.PRNGKey(1), 3)
    x0, xt = jax.random.normal(k[0], (5, 3)), jax.random.normal(k[1], (5, 3))
    for t in (1, 20, 49):
        eps = (xt - jnp.sqrt(s.alpha_bars[t]) * x0) / jnp.sqrt(1 - s.alpha_bars[t])
        mean, var = dif.posterior(s, xt, x0, t)
        step0 = dif.ddim_step(s, xt, t, t - 1, eps, eta=1.0, noise=jnp.zeros_like(xt), x0=x0)
        step1 = dif.ddim_step(s, xt, t, t - 1, eps, eta=1.0, noise=jnp.ones_like(xt), x0=x0)
        np.testing.assert_allclose(step0, mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(step1 - step0, jnp.sqrt(var) * jnp.ones_like(xt), rtol=1e-4, atol=1e-6)


def _oracle(target):
    """The exact noise predictor of a data distribution that is one point: eps = (x_t - sqrt(abar) x*) / ..."""
    def fn(params, x, t, cond):
        abar = params["abar"][t].reshape(-1, *(1,) * (x.ndim - 1))
        return (x - jnp.sqrt(abar) * target) / jnp.sqrt(1 - abar)
    return fn


@pytest.mark.parametrize("sampler,steps,eta", [("ddpm", None, None), ("ddim", 7, 0.0), ("ddim", 20, 0.5)])
def test_samplers_invert_an_oracle(sampler, steps, eta):
    s = dif.make_schedule("linear", 60)
    target = jnp.linspace(-0.8, 0.8, 6).reshape(1, 6)
    fn = _oracle(target)
    x = dif.sample(fn, {"abar": s.alpha_bars}, s, (3, 6), jax.random.PRNGKey(2), steps=steps, sampler=sampler,
                   eta=0.0 if eta is None else eta, chunk=4)
    np.testing.assert_allclose(x, jnp.broadcast_to(target, (3, 6)), atol=1e-4)


def test_chunking_and_padding_do_not_change_the_samples():
    s = dif.make_schedule("linear", 40)

    def fn(params, x, t, cond):
        return 0.3 * x + 0.01 * t[:, None].astype(x.dtype) * params["w"]

    p = {"w": jnp.ones((4,))}
    a = dif.sample(fn, p, s, (2, 4), jax.random.PRNGKey(3), steps=13, chunk=50)
    b = dif.sample(fn, p, s, (2, 4), jax.random.PRNGKey(3), steps=13, chunk=4)    # 4 chunks of 4, 3 no-ops
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert dif.step_sequence(1000, 4).tolist() == [999, 666, 333, 0]


def test_sampler_and_schedule_errors():
    s = dif.make_schedule("linear", 10)
    fn = _oracle(jnp.zeros((1, 2)))
    cases = [(lambda: dif.make_schedule("quadratic"), "unknown noise schedule"),
             (lambda: dif.sample(fn, {}, s, (1, 2), jax.random.PRNGKey(0), sampler="euler"), "unknown sampler"),
             (lambda: dif.sample(fn, {}, s, (1, 2), jax.random.PRNGKey(0), steps=11), "from 1 to the schedule's 10"),
             (lambda: dif.sample(fn, {}, s, (1, 2), jax.random.PRNGKey(0), eta=2.0), "eta must lie in"),
             (lambda: dif.sample(fn, {}, s, (1, 2), jax.random.PRNGKey(0), sampler="ddpm", steps=5), "ddpm sampler"),
             (lambda: dif.diffusion_loss(None, s, jnp.zeros((1, 2)), None, prediction="x0"), "unknown prediction")]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


# -- the models -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_cddpm():
    from funcdl import models

    entry = models.get_model("cddpm")
    task = entry.build(entry.small_data, **entry.small)
    params, _ = task.init(jax.random.PRNGKey(0))
    return task, params


def test_guidance_combines_the_two_predictions(small_cddpm):
    from funcdl.models import ddpm
    from funcdl.models.unet import unet

    task, params = small_cddpm
    config = task.extras["config"]
    params = jax.tree.map(lambda p: p + 0.05 * jnp.ones_like(p), params)   # zero-initialised outputs come alive
    x = jax.random.normal(jax.random.PRNGKey(4), (3, 8, 8, 1))
    t, labels = jnp.array([1, 4, 7]), jnp.array([2, 5, 9])
    fn = ddpm.denoise(config)

    @jax.jit                    # one program: the UNet called eagerly op by op costs seconds per call
    def outputs(p):
        cond_out = unet(p, x, t, labels, config.unet)
        null_out = unet(p, x, t, jnp.full((3,), 10), config.unet)
        return cond_out, null_out, fn(p, x, t, {"labels": labels, "guidance": jnp.float32(3.0)})

    cond_out, null_out, got = outputs(params["unet"])
    np.testing.assert_allclose(got, 4.0 * cond_out - 3.0 * null_out, rtol=1e-4, atol=1e-5)


def test_sample_images_errors(small_cddpm):
    task, params = small_cddpm
    sample = task.extras["sample_images"]
    with pytest.raises(ValueError, match="class-conditional; pass --class"):
        sample(params, jax.random.PRNGKey(0), 2)
    with pytest.raises(ValueError, match="labels must lie in"):
        sample(params, jax.random.PRNGKey(0), 2, labels=jnp.array([3, 12]))
    with pytest.raises(ValueError, match="guidance must be >= 0"):
        sample(params, jax.random.PRNGKey(0), 2, labels=jnp.array([3, 1]), guidance=-1.0)
    x = sample(params, jax.random.PRNGKey(0), 3, labels="null", steps=2)
    assert x.shape == (3, 8, 8, 1) and float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def test_bad_image_size_and_report_sampler():
    from funcdl import models
    from funcdl.training.task import DataInfo

    entry = models.get_model("ddpm")
    with pytest.raises(ValueError, match="cannot be halved 2 times"):
        entry.build(DataInfo("odd", (30, 30, 1), num_classes=10))
    with pytest.raises(ValueError, match="ddpm runs all 1000 steps"):
        entry.build(DataInfo("m", (28, 28, 1), num_classes=10), report_samplers=("ddpm50",))
    with pytest.raises(ValueError, match="needs a classification data set"):
        models.get_model("cddpm").build(DataInfo("m", (28, 28, 1)))
    from funcdl.models.ddpm import parse_sampler

    assert parse_sampler("ddim50eta0.5", 1000) == ("ddim", 50, 0.5)
    assert parse_sampler("ddim25", 1000) == ("ddim", 25, 0.0) and parse_sampler("ddpm8", 8) == ("ddpm", 8, 1.0)
    for bad in ("ddim50eta2", "ddpm1000eta0.5", "ddim50eta"):
        with pytest.raises(ValueError, match="ddimKetaE"):
            parse_sampler(bad, 1000)


@pytest.mark.skipif(not (SHARED / "train-images-idx3-ubyte.gz").exists(), reason="no local MNIST copy")
def test_train_report_and_sample_command(tmp_path, capsys):
    """A two-step cddpm run on MNIST (three classes) through the command line: its report (samplers, guidance; no
    judge) and pictures, then `funcdl sample` with each sampler option, and the sample errors."""
    from funcdl.commands.cli import main

    run = tmp_path / "run"
    # report_samples = the classes picture's 3 x 10 and T = 4, so the guided report, the picture and the sample
    # command below share one compiled sampling program
    small = ["--set", "channels=8,8", "--set", "attention=1", "--set", "heads=2", "--set", "groups=4",
             "--set", "timesteps=4", "--set", "judge=false", "--set", "report_samples=30", "--set", "eval_limit=16",
             "--set", "report_samplers=ddim4"]
    assert main(["train", "cddpm", "--data", "mnist", "--data-dir", str(SHARED), "--steps", "2", "--batch-size",
                 "8", "--warmup-steps", "0", "--set", "classes=0-2", "--set", "plots=false", "--quiet",
                 "--out", str(run), *small]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["sampling_seconds"]) == {"ddim4"} and summary["guidance"] == 3.0
    for name in ("samples_ddim4.png", "forward.png", "reverse.png", "classes.png"):
        assert (run / name).stat().st_size > 0, name
    out = tmp_path / "g.png"
    assert main(["sample", str(run), "--grid", "5x6", "--class", "2", "--guidance", "3", "--sampler", "ddim",
                 "--steps", "4", "--eta", "0.5", "--out", str(out)]) == 0
    assert out.stat().st_size > 0 and "class 2" in capsys.readouterr().out
    capsys.readouterr()
    assert main(["sample", str(run), "--grid", "1x2", "--steps", "3", "--out", str(out)]) == 2
    assert "is class-conditional; pass --class K (0-2)" in capsys.readouterr().err
    assert main(["sample", str(run), "--class", "1", "--sampler", "ddpm", "--steps", "3", "--out", str(out)]) == 2
    assert "ddpm sampler runs all 4 steps" in capsys.readouterr().err
