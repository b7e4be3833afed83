"""``funcdl train``, ``funcdl models``, ``funcdl data`` end to end (tiny runs on MNIST-1D, no network)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from funcdl.commands.cli import main
from funcdl.commands.train import parse_sets, parse_value


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FUNCDL_DATA", str(tmp_path_factory.getbasetemp() / "funcdl-cache"))
    monkeypatch.setenv("FUNCDL_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")


@pytest.mark.slow
def test_train_writes_a_run(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "mlp", "--data", "mnist1d", "--steps", "30", "--eval-every", "15", "--set", "hidden=16",
               "--set", "dropout=0.1", "--lr", "3e-3", "--out", str(out), "--quiet"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    for key in ("model", "data", "grad", "steps", "wall_seconds", "steps_per_second", "params", "test_accuracy"):
        assert key in s, key
    assert s["model"] == "mlp" and s["data"] == "mnist1d" and s["steps"] == 30 and s["grad"] == "manual"
    assert s["params"] == 40 * 16 + 16 + 16 * 10 + 10
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_options"] == {"hidden": [16], "dropout": 0.1}          # a tuple default takes one value
    assert cfg["train"]["lr"] == 3e-3 and cfg["train"]["eval_every"] == 15
    for f in ("metrics.jsonl", "checkpoint.npz", "loss.png", "accuracy.png", "lr.png"):
        assert (out / f).is_file(), f
    assert "test_accuracy" in capsys.readouterr().out

    # resume extends the same run; a second plain run into the same folder is refused
    rc = main(["train", "mlp", "--out", str(out), "--resume", "--steps", "45", "--quiet"])
    assert rc == 0
    assert json.loads((out / "summary.json").read_text())["steps"] == 45
    assert main(["train", "mlp", "--out", str(out), "--steps", "5", "--quiet"]) == 2
    assert "already holds a run" in capsys.readouterr().err

    from funcdl.commands.train import load_run
    run = load_run(out)
    assert run["step"] == 45 and run["params"]["layers"][0]["w"].shape == (40, 16)
    logits = run["task"].apply(run["params"], run["state"], run["data"].splits["test"]["x"][:5])
    assert logits.shape == (5, 10)


def test_autodiff_and_no_scan_flags(tmp_path):
    base = ["train", "logreg", "--steps", "12", "--quiet", "--eval-every", "12"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    assert main([*base, "--out", str(tmp_path / "b"), "--grad", "autodiff", "--no-scan"]) == 0
    a = json.loads((tmp_path / "a" / "summary.json").read_text())
    b = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert b["grad"] == "autodiff" and b["scan"] is False
    assert abs(a["val_loss"] - b["val_loss"]) < 1e-5


def test_unknown_names_list_the_valid_ones(capsys):
    assert main(["train", "nosuchmodel"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'nosuchmodel'" in err and "mlp" in err and "logreg" in err
    assert main(["train", "mlp", "--data", "nosuchdata", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "unknown data set 'nosuchdata'" in err and "mnist1d" in err
    assert main(["train", "mlp", "--steps", "1", "--optimizer", "nosuchopt", "--quiet"]) == 2
    assert "unknown optimizer" in capsys.readouterr().err
    assert main(["models", "nosuchmodel"]) == 2
    assert main(["data", "nosuchdata"]) == 2


def test_help_lists_models_and_data(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for word in ("mlp", "logreg", "mnist1d", "fashion_mnist", "tinyshakespeare", "--grad", "--resume", "--set"):
        assert word in text, word


def test_models_and_data_commands(capsys):
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    assert "mlp:" in text and "hidden=512,512" in text and "training:" in text
    assert main(["models", "mlp", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mlp"]["defaults"]["data"] == "mnist1d"
    assert main(["data"]) == 0
    text = capsys.readouterr().out
    assert "mnist1d" in text and "cifar10" in text and "text:PATH" in text
    assert main(["data", "mnist1d", "--load", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mnist1d"]["splits"] == {"train": 3600, "test": 1000, "val": 400}


def test_parse_values():
    assert parse_value("3") == 3 and parse_value("1e-3") == 1e-3 and parse_value("relu") == "relu"
    assert parse_value("256,256") == (256, 256) and parse_value("8,") == (8,)
    assert parse_value("true") is True and parse_value("none") is None
    assert parse_sets(["hidden=1,2", "dropout=0.5"]) == {"hidden": (1, 2), "dropout": 0.5}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_sets(["hidden"])


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "FUNCDL_OFFLINE": "1", "MPLBACKEND": "Agg", "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "funcdl", "train", "mlp", "--set", "hidden=8", "--epochs", "100000",
           "--eval-every", "5", "--quiet", "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not (out / "checkpoint.npz").is_file():
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "no checkpoint within 120 s"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output                     # interrupted: `funcdl train ... && next` stops
    s = json.loads((out / "summary.json").read_text())
    assert s["stopped"] == "interrupted" and 0 < s["steps"] < s["total_steps"]
    from funcdl.training.checkpoint import load_meta
    assert load_meta(out)["step"] == s["steps"]
    assert "Traceback" not in output


def test_per_data_defaults_beat_model_defaults_and_flags_beat_both():
    from funcdl.models import get_model

    from funcdl.commands.cli import build_parser
    from funcdl.commands.train import resolve_options

    entry = get_model("mlp")
    parse = lambda argv: build_parser().parse_args(["train", *argv])
    data, train, model = resolve_options(entry, parse(["mlp"]))
    assert data == "mnist1d" and train["epochs"] == entry.defaults["epochs"] and "schedule" not in train
    data, train, model = resolve_options(entry, parse(["mlp", "--data", "mnist"]))
    assert data == "mnist" and train["epochs"] == 15 and train["schedule"] == "cosine"
    data, train, model = resolve_options(entry, parse(["mlp", "--data", "mnist", "--epochs", "2"]))
    assert train["epochs"] == 2 and model["hidden"] == entry.defaults["hidden"]


def test_preset_merges_model_and_training_options():
    from funcdl.models import get_model

    from funcdl.commands.cli import build_parser
    from funcdl.commands.train import resolve_options

    entry = get_model("gpt")
    parse = lambda argv: build_parser().parse_args(["train", *argv])
    _, train, model = resolve_options(entry, parse(["gpt"]))
    assert model["n_layer"] == 4 and train["steps"] == 2000 and train["min_lr"] == 1e-4 and "presets" not in model
    _, train, model = resolve_options(entry, parse(["gpt", "--preset", "shakespeare-char", "--steps", "7"]))
    assert model["n_layer"] == 6 and model["n_embd"] == 384 and train["batch_size"] == 64 and train["steps"] == 7
    with pytest.raises(ValueError, match="valid presets: shakespeare-char"):
        resolve_options(entry, parse(["gpt", "--preset", "huge"]))


def test_qat_option_wraps_any_model_and_reloads(tmp_path, capsys):
    """--set qat=4 trains through 4-bit fake-quantized weights; the run reloads with the same wrapping."""
    out = tmp_path / "qat"
    assert main(["train", "logreg", "--steps", "6", "--eval-every", "6", "--set", "qat=4", "--set", "qat_method=lsq",
                 "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "config.json").read_text())["model_options"] == {"qat": 4, "qat_method": "lsq"}
    from funcdl.commands.train import load_run
    run = load_run(out)
    assert run["task"].extras["qat"] == {"bits": 4, "method": "lsq"} and "qat_steps" in run["params"]
    assert main(["train", "logreg", "--steps", "1", "--set", "qat=9", "--out", str(tmp_path / "bad")]) == 2
    assert "bits must be an int in 2..8" in capsys.readouterr().err and not (tmp_path / "bad").exists()
