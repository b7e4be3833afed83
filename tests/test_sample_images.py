"""``funcdl sample RUN --grid RxC --out FILE [--class K]`` on image models: a tiny two-player "painter" trained for
a few steps by ``funcdl train`` (registered for the test only, on a fake 8x8 data set), then sampled; the errors
are one line each."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl.data as fdata
from funcdl import models, optim
from funcdl.commands.cli import main
from funcdl.commands.sample import parse_grid
from funcdl.data import Dataset
from funcdl.training.task import DataInfo, Player, Task

SIDE, LATENT = 8, 4
SEEN = []          # the generator parameters each sample_images call received


def fake_digits(data_dir=None, **_):
    rng = np.random.default_rng(0)
    split = lambda n: {"x": rng.random((n, SIDE, SIDE, 1)).astype(np.float32),   # noqa: E731
                       "y": rng.integers(0, 10, n).astype(np.int32)}
    return Dataset("fake-digits", {"train": split(64), "test": split(16)}, "classification", num_classes=10)


def build(info, *, conditional=False):
    def init(key):
        kg, kd = jax.random.split(key)
        return {"gen": {"w": 0.3 * jax.random.normal(kg, (LATENT, SIDE * SIDE))},
                "disc": {"w": 0.3 * jax.random.normal(kd, (SIDE * SIDE, 1))}}, {}

    def paint(gen, key, n, labels):
        z = jax.random.normal(key, (n, LATENT))
        if labels is not None:
            z = z.at[:, 0].add(labels.astype(z.dtype))
        return jax.nn.sigmoid(z @ gen["w"]).reshape(n, SIDE, SIDE, 1)

    def critic(params, x):
        return x.reshape(len(x), -1) @ params["disc"]["w"]

    def disc_loss(params, state, batch, key, train):
        fake = jax.lax.stop_gradient(paint(params["gen"], key, len(batch["x"]), None))
        value = jnp.mean(critic(params, fake) ** 2) + jnp.mean((critic(params, batch["x"]) - 1.0) ** 2)
        return value, (state, {"loss": value})

    def gen_loss(params, state, batch, key, train):
        value = jnp.mean((critic(params, paint(params["gen"], key, len(batch["x"]), None)) - 1.0) ** 2)
        return value, (state, {"loss": value})

    def eval_loss(params, state, batch, key, train):      # evaluation passes no key
        return gen_loss(params, state, batch, jax.random.PRNGKey(0), train)

    def sample_images(params, key, n, *, labels=None):
        if conditional and labels is None:
            raise ValueError("painter is class-conditional; pass --class K / labels")
        SEEN.append(np.asarray(params["gen"]["w"]))
        return paint(params["gen"], key, n, labels)

    def sampling_params(params, opt_state):
        return {**params, "gen": optim.ema_of(opt_state["gen"])}

    players = (Player("disc", disc_loss), Player("gen", gen_loss, ema=0.5))
    # no config with a ``conditional`` flag: sample learns it from the 'class-conditional' error
    extras = {"sample_images": sample_images, "sampling_params": sampling_params}
    return Task(init, eval_loss, "regression", extras=extras, players=players)


@pytest.fixture
def painter(tmp_path, monkeypatch):
    """A function ``run_dir(conditional)``: a finished `funcdl train` run of the painter."""
    monkeypatch.setitem(fdata.DATASETS, "fake-digits", fdata.DatasetEntry("fake-digits", fake_digits, "test"))
    monkeypatch.setitem(models.MODELS, "painter", models.ModelEntry(
        "painter", build, {"data": "fake-digits"}, "a test image model", ("fake-digits",), {}, {},
        DataInfo("fake-digits", (SIDE, SIDE, 1), 10)))

    def run_dir(conditional=False):
        out = tmp_path / f"run-{conditional}"
        args = ["train", "painter", "--data", "fake-digits", "--steps", "4", "--batch-size", "16", "--quiet",
                "--no-compile-cache", "--out", str(out)]
        assert main(args + (["--set", "conditional=true"] if conditional else [])) == 0
        return out

    return run_dir


def test_grid_of_an_unconditional_model(painter, tmp_path, capsys):
    run = painter()
    SEEN.clear()
    png = tmp_path / "grid.png"
    assert main(["sample", str(run), "--grid", "3x5", "--out", str(png), "--seed", "1"]) == 0
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "3x5 samples" in capsys.readouterr().out
    # the grid is drawn with the generator's EMA copy, read from the restored optimizer state
    from funcdl.training import checkpoint
    arrays, _ = checkpoint.load_arrays(run / "checkpoint.npz")
    raw = arrays["params/['gen']['w']"]
    assert SEEN[-1].shape == raw.shape and not np.allclose(SEEN[-1], raw)
    # the default output is grid.png in the run directory (the run's samples.png is kept), 8x8
    assert main(["sample", str(run)]) == 0 and (run / "grid.png").is_file()

    assert main(["sample", str(run), "--class", "3", "--out", str(png)]) == 2
    assert "is unconditional" in capsys.readouterr().err
    # the diffusion sampler's flags on a model that is not a diffusion model
    assert main(["sample", str(run), "--steps", "5", "--guidance", "2", "--out", str(png)]) == 2
    assert "takes no --steps --guidance: --sampler, --steps, --eta and --guidance are for diffusion models" in \
        capsys.readouterr().err


def test_class_conditional_model(painter, tmp_path, capsys):
    run = painter(conditional=True)
    png = tmp_path / "three.png"
    assert main(["sample", str(run), "--grid", "2x2", "--class", "3", "--out", str(png)]) == 0
    assert png.is_file()
    assert main(["sample", str(run), "--grid", "2x2", "--out", str(png)]) == 2
    err = capsys.readouterr().err
    assert "is class-conditional; pass --class K (0-9)" in err and len(err.strip().splitlines()) == 1
    for bad in ("10", "-1", "three"):
        assert main(["sample", str(run), "--class", bad, "--out", str(png)]) == 2
        err = capsys.readouterr().err
        assert "--class must be a whole number from 0 to 9" in err and len(err.strip().splitlines()) == 1


def test_malformed_grid_and_non_image_models(painter, tmp_path, capsys):
    run = tmp_path / "no-run-needed"          # the grid is checked before the run is read
    for bad in ("8", "8x", "0x3", "8x8x8", "axb", "100x2"):
        assert main(["sample", str(run), "--grid", bad, "--out", str(tmp_path / "g.png")]) == 2
        err = capsys.readouterr().err
        assert "--grid expects ROWSxCOLS" in err and len(err.strip().splitlines()) == 1
    assert parse_grid("4x16") == (4, 16) and parse_grid(" 2X3 ") == (2, 3)
    # a classifier run draws no images
    mlp = tmp_path / "mlp"
    assert main(["train", "logreg", "--data", "fake-digits", "--steps", "2", "--batch-size", "16", "--quiet",
                 "--no-compile-cache", "--out", str(mlp)]) == 0
    assert main(["sample", str(mlp), "--grid", "2x2"]) == 2
    assert "draws no images" in capsys.readouterr().err
    assert main(["sample", str(mlp)]) == 2
    assert "neither writes text nor draws images" in capsys.readouterr().err


def test_generative_plots_write_pngs(tmp_path):
    from funcdl.plots import generative as g

    rng = np.random.default_rng(0)
    x = rng.random((20, 28, 28, 1)).astype(np.float32)
    written = [g.image_grid(x, 4, 5, tmp_path / "grid.png", title="samples"),
               g.reconstructions(x, 1 - x, tmp_path / "rec.png"),
               g.triples(x[:5], x[:5] / 2, 1 - x[:5], tmp_path / "tri.png"),
               g.interpolation(x.reshape(2, 10, 28, 28, 1), tmp_path / "interp.png"),
               g.latent_scatter(rng.normal(size=(50, 2)), rng.integers(0, 10, 50), tmp_path / "z.png")]
    for path in written:
        assert path.is_file() and path.read_bytes()[:4] == b"\x89PNG"
    tiles = g.mosaic(x[:3, :, :, 0], 2, 2)                    # (N, H, W) works too; missing tiles stay white
    assert tiles.shape == (2 * 29 + 1, 2 * 29 + 1, 1) and tiles[-10, -10, 0] == 1.0
    with pytest.raises(ValueError, match="same shape"):
        g.reconstructions(x, x[:3], tmp_path / "bad.png")
    with pytest.raises(ValueError, match=r"z2d \(N, 2\)"):
        g.latent_scatter(rng.normal(size=(50, 3)), rng.integers(0, 10, 50), tmp_path / "bad.png")
