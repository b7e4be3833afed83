"""The GAN models (models/gan.py, models/stylegan.py) at small sizes: a few players steps on a tiny fake image set
move both players and stay finite; the penalties (WGAN-GP, R1) run; sampling is normalised by the reference
batch (a sample does not depend on what is drawn with it); conditional sampling needs labels; an image size the
generator cannot make is refused at build time; the end-of-run report without the judge returns its figures.
(tests/test_models.py checks each registered GAN's whole-model gradient against autodiff.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from funcdl.models import MODELS, gan, get_model

from funcdl.data import Dataset
from funcdl.training.config import TrainConfig
from funcdl.training.step import make_players_step, players_optimizer
from funcdl.training.task import DataInfo

NORM = {"normalization": {"mean": 0.5, "std": 0.5}}
INFO = DataInfo("fake-images", (8, 8, 1), num_classes=10, extras=NORM)
SMALL = {"latent": 4, "width": 2, "judge": False}
NAMES = [n for n in ("gan", "dcgan", "cdcgan", "stylegan") if n in MODELS]
# the style generator's players step compiles for ~15 s on the 2-core machine; its whole-model gradient and a few
# training steps are tests/test_models.py's (the suite's time budget)
STEPPED = [n for n in NAMES if n != "stylegan"]


def fake_images(n=16, size=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, size, size, 1)).astype(np.float32)
    return {"x": jnp.asarray(x), "y": jnp.asarray(rng.integers(0, 10, n), jnp.int32)}


def run_steps(task, batch, steps=3):
    config = TrainConfig(batch_size=batch["x"].shape[0], lr=1e-3, steps=steps)
    opt, opts, _ = players_optimizer(task, config, steps)
    params, state = task.init(jax.random.PRNGKey(0))
    opt_state = opt.init(params)
    step = jax.jit(make_players_step(task, opts, config))
    new, new_opt, new_state = params, opt_state, state
    for i in range(steps):
        new, new_opt, new_state, metrics = step(new, new_opt, new_state, batch, jax.random.PRNGKey(i))
    return params, (new, new_opt, new_state, metrics)


def moved(a, b):
    return any(not np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a),
                                                                               jax.tree.leaves(b), strict=True))


def finite(tree):
    return all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("name", STEPPED)
def test_players_steps_move_both_players_and_stay_finite(name):
    task = get_model(name).build(INFO, **SMALL)
    params, (new, opt_state, state, metrics) = run_steps(task, fake_images())
    assert moved(params["gen"], new["gen"]) and moved(params["disc"], new["disc"])
    assert finite(new) and finite(state) and finite(metrics)
    assert {"disc/loss", "gen/loss", "loss"} <= set(metrics)
    ema = task.extras["sampling_params"](new, opt_state)["gen"]       # the EMA copy, not the trained weights
    assert jax.tree.structure(ema) == jax.tree.structure(new["gen"]) and moved(ema, new["gen"])


@pytest.mark.slow
@pytest.mark.parametrize("options", [{"loss": "wasserstein", "gp": 10.0, "n_critic": 2}, {"gp": 1.0}])
def test_losses_and_penalties_train(options):
    """On the dense GAN: the penalty code is the same for every architecture, and a convolutional critic's
    second-order graph took 30-50 s to compile (the conv rules' second order is gradcheck's and
    tests/test_gan_penalty.py's)."""
    task = get_model("gan").build(INFO, **SMALL, **options)
    params, (new, _, _, metrics) = run_steps(task, fake_images(), steps=2)
    assert finite(new) and finite(metrics) and moved(params["disc"], new["disc"])
    if options.get("gp"):
        assert float(metrics["disc/penalty"]) >= 0


def test_gp_needs_a_loss_it_fits():
    with pytest.raises(ValueError, match="gp adds WGAN-GP") as err:
        get_model("dcgan").build(INFO, **SMALL, loss="hinge", gp=1.0)
    assert "\n" not in str(err.value)


def test_the_critic_is_batch_normalised_unless_a_gradient_penalty_needs_it_per_sample():
    build = get_model("dcgan").build
    assert "bn2" in build(INFO, **SMALL).init(jax.random.PRNGKey(0))[0]["disc"]
    assert "bn2" not in build(INFO, **SMALL, gp=1.0).init(jax.random.PRNGKey(0))[0]["disc"]
    assert "bn2" not in build(INFO, **SMALL, disc_norm=None).init(jax.random.PRNGKey(0))[0]["disc"]   # --set =none
    with pytest.raises(ValueError, match="use --set disc_norm=none with gp") as err:
        build(INFO, **SMALL, gp=1.0, disc_norm="batch")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["dcgan", "cdcgan"])   # batch norm is what could couple samples
def test_a_sample_does_not_depend_on_the_others_drawn_with_it(name):
    task = get_model(name).build(INFO, **SMALL)
    config = task.extras["config"]
    params, _ = task.init(jax.random.PRNGKey(0))
    z = jax.random.normal(jax.random.PRNGKey(1), (5, config.latent), jnp.float32)
    labels = jnp.arange(5) % 10
    key = jax.random.PRNGKey(2)
    many = gan.sample_from(params["gen"], z, labels, key, config)
    assert many.shape == (5, 8, 8, 1) and float(many.min()) >= 0 and float(many.max()) <= 1
    one = gan.sample_from(params["gen"], z[:1], labels[:1], key, config)
    np.testing.assert_allclose(np.asarray(one[0]), np.asarray(many[0]), atol=1e-5)


def test_conditional_sampling_needs_labels():
    task = get_model("cdcgan").build(INFO, **SMALL)
    params, _ = task.init(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="cdcgan is class-conditional; pass --class K / labels") as err:
        task.extras["sample_images"](params, jax.random.PRNGKey(0), 4)
    assert "\n" not in str(err.value)
    images = task.extras["sample_images"](params, jax.random.PRNGKey(0), 4, labels=np.array([0, 1, 2, 3]))
    assert images.shape == (4, 8, 8, 1)
    with pytest.raises(ValueError, match="labels must lie in 0..9"):
        task.extras["sample_images"](params, jax.random.PRNGKey(0), 2, labels=np.array([0, 10]))


def test_conditional_option_needs_classes():
    with pytest.raises(ValueError, match="needs a classification data set"):
        get_model("dcgan").build(DataInfo("plain", (8, 8, 1), extras=NORM), **SMALL, conditional=True)


@pytest.mark.parametrize("name", [n for n in NAMES if n != "gan"])
def test_an_image_the_generator_cannot_make_is_refused_at_build(name):
    with pytest.raises(ValueError, match="30x30") as err:
        get_model(name).build(DataInfo("odd", (30, 30, 1), num_classes=10, extras=NORM), **SMALL)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["dcgan", "cdcgan"])
def test_report_without_the_judge(name, tmp_path):
    task = get_model(name).build(INFO, **SMALL)
    config = task.extras["config"]
    extras = gan.extras(gan.Config(**{**config.__dict__, "report_samples": 30}))
    params, state = task.init(jax.random.PRNGKey(0))
    opt, opts, _ = players_optimizer(task, TrainConfig(steps=1), 1)
    data = Dataset("fake", {"train": {k: np.asarray(v) for k, v in fake_images().items()}}, "classification",
                   num_classes=10, extras=NORM)
    out = extras["report"](params, state, opt.init(params), data, None)
    assert out["report_samples"] == 30 and 0 <= out["sample_pixel_mean"] <= 1 and out["sample_pixel_std"] >= 0
    assert "classifier_score" not in out
    assert extras["report"](params, state, opt.init(params), data, tmp_path) == out      # same samples, pictures
    assert (tmp_path / "samples.png").is_file() and (tmp_path / "interpolation.png").is_file()


def test_a_conditional_report_draws_classes_in_the_training_sets_proportions():
    """judge.sample_classes: n labels whose counts are the training labels' proportions rounded by largest
    remainder, shuffled by a fixed seed; "turn" (or no training labels): the classes in turn; cdcgan's report_classes
    picks the draw and refuses anything else in one line."""
    from funcdl.models import judge

    y = np.array([0] * 30 + [1] * 50 + [2] * 20)          # proportions 0.3 / 0.5 / 0.2
    data = Dataset("fake", {"train": {"x": np.zeros((100, 8, 8, 1), np.float32), "y": y}}, "classification",
                   num_classes=3, extras=NORM)
    labels = judge.sample_classes(data, 7, 3)            # 2.1 / 3.5 / 1.4 -> 2 / 4 / 1
    assert np.bincount(labels, minlength=3).tolist() == [2, 4, 1]
    assert np.array_equal(labels, judge.sample_classes(data, 7, 3))
    assert not np.array_equal(labels, np.sort(labels))     # shuffled, so no class owns the first latents
    assert np.bincount(judge.sample_classes(data, 1000, 3)).tolist() == [300, 500, 200]
    assert judge.sample_classes(None, 5, 3).tolist() == [0, 1, 2, 0, 1]
    assert judge.sample_classes(data, 5, 3, "turn").tolist() == [0, 1, 2, 0, 1]
    assert get_model("cdcgan").build(INFO, **SMALL, report_classes="turn").extras["config"].report_classes == "turn"
    with pytest.raises(ValueError, match="report_classes must be 'prior' or 'turn'") as err:
        get_model("cdcgan").build(INFO, **SMALL, report_classes="uniform")
    assert "\n" not in str(err.value)


def test_lr_scale_gives_each_player_its_own_learning_rate():
    """TTUR: a player's lr_scale runs the training options' optimizer (here SGD, whose update is -lr * grad) at
    lr * lr_scale on the same schedule; a scale that is not positive is refused in one line."""
    from funcdl.training.task import Player, Task

    def quad(name):
        return lambda p, s, b, k, t: (jnp.sum(p[name] ** 2), (s, {"loss": jnp.sum(p[name] ** 2)}))

    players = (Player("a", quad("a")), Player("b", quad("b"), lr_scale=3.0))
    task = Task(init=lambda key: ({"a": jnp.ones(2), "b": jnp.ones(2)}, {}), loss=quad("a"), players=players)
    config = TrainConfig(optimizer="sgd", lr=0.1, steps=1, batch_size=1)
    opt, opts, _ = players_optimizer(task, config, 1)
    params, state = task.init(None)
    new = jax.jit(make_players_step(task, opts, config))(params, opt.init(params), state, {"x": jnp.zeros((1, 1))},
                                                         jax.random.PRNGKey(0))[0]
    np.testing.assert_allclose(np.asarray(new["a"]), 1 - 0.1 * 2, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(new["b"]), 1 - 0.3 * 2, rtol=1e-6)
    with pytest.raises(ValueError, match="lr_scale must be > 0") as err:
        players_optimizer(task._replace(players=(players[0], players[1]._replace(lr_scale=0.0))), config, 1)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="disc_lr_scale must be > 0"):
        get_model("dcgan").build(INFO, **SMALL, disc_lr_scale=-1.0)


def test_a_deeper_wider_critic():
    """disc_depth=3 adds a third strided conv (4 width channels of disc_width, batch-normalised like the second);
    both players still train; a depth the model does not have is refused in one line."""
    task = get_model("dcgan").build(INFO, **SMALL, disc_depth=3, disc_width=3)
    params, (new, _, _, metrics) = run_steps(task, fake_images())
    disc = params["disc"]
    assert disc["conv1"]["w"].shape[-1] == 3 and disc["conv3"]["w"].shape[-1] == 12 and "bn3" in disc
    assert disc["out"]["w"].shape[0] == 1 * 1 * 12             # 8x8 images: 4x4 -> 2x2 -> 1x1
    assert moved(params["disc"], new["disc"]) and finite(new) and finite(metrics)
    with pytest.raises(ValueError, match="disc_depth must be 2 or 3") as err:
        get_model("dcgan").build(INFO, **SMALL, disc_depth=4)
    assert "\n" not in str(err.value)


def test_a_generator_with_a_full_resolution_conv_head():
    """gen_head="conv3": the last transposed conv makes ``width`` channels, batch-normalised, and a 3x3 conv at
    full resolution makes the image; both players train; an unknown head is refused in one line."""
    task = get_model("cdcgan").build(INFO, **SMALL, gen_head="conv3")
    params, (new, _, _, metrics) = run_steps(task, fake_images())
    gen = params["gen"]
    assert gen["up2"]["w"].shape[-1] == 2 and "bn2" in gen and gen["out"]["w"].shape == (3, 3, 2, 1)
    assert moved(params["gen"], new["gen"]) and finite(new) and finite(metrics)
    images = task.extras["sample_images"](new, jax.random.PRNGKey(0), 4, labels=jnp.arange(4))
    assert images.shape == (4, 8, 8, 1) and float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    with pytest.raises(ValueError, match="gen_head must be 'convT' or 'conv3'") as err:
        get_model("dcgan").build(INFO, **SMALL, gen_head="conv5")
    assert "\n" not in str(err.value)


def test_conditional_batch_norm_and_the_critics_minibatch_stddev():
    """gen_cond="bn": every generator batch norm gets a per-class gain and shift (zero at first) that training
    moves; disc_mbstd: the critic's head sees one more channel, so a logit depends on the other examples of its
    group of 4; both refuse a wrong value in one line."""
    task = get_model("cdcgan").build(INFO, **SMALL, gen_head="conv3", gen_cond="bn", disc_mbstd=True, disc_depth=3)
    params, (new, _, _, metrics) = run_steps(task, fake_images())
    for bn in ("bn0", "bn1", "bn2"):
        assert params["gen"][bn]["gain"].shape == (10, params["gen"][bn]["scale"].shape[0])
        assert not np.any(params["gen"][bn]["gain"]) and np.any(new["gen"][bn]["gain"])
    assert new["disc"]["out"]["w"].shape[0] == 1 * 1 * (4 * 2 + 1)        # (8/8)^2 pixels, 4 width + 1 channels
    assert finite(new) and finite(metrics)
    config = gan.Config(image=(8, 8, 1), latent=4, width=2, num_classes=10, disc_depth=3, disc_mbstd=True)
    x = jnp.asarray(fake_images(8)["x"])
    labels = jnp.arange(8)
    logits = gan.discriminate(new["disc"], x, labels, config)
    other = gan.discriminate(new["disc"], x.at[4].multiply(3.0), labels, config)
    assert float(jnp.abs(logits[0] - other[0])) > 0        # example 0 shares its group with example 4
    images = task.extras["sample_images"](new, jax.random.PRNGKey(0), 4, labels=jnp.arange(4))
    assert images.shape == (4, 8, 8, 1) and finite(images)
    with pytest.raises(ValueError, match="gen_cond must be 'input' or 'bn'") as err:
        get_model("cdcgan").build(INFO, **SMALL, gen_cond="film")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="gen_cond='bn' needs a class-conditional model"):
        gan.Config(image=(8, 8, 1), gen_cond="bn")
