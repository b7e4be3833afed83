"""Every expected failure of the command line is one line on stderr and exit code 2, with no traceback and no
change to a run directory (the exact messages are the ones the closing notes of the hardening issue list)."""

import pytest

from funcdl.commands.cli import main


@pytest.mark.parametrize("argv, message", [
    (["train", "mlp", "--set", "hiden=64"], "unknown option 'hiden' for model 'mlp'; valid options: hidden, "
                                            "activation, dropout; did you mean 'hidden'?"),
    (["train", "mlp", "--set", "hidden=abc"], "option hidden=('abc',): expected numbers separated by commas"),
    (["train", "mlp", "--set", "hidden=0"], "option hidden=(0,): expected positive whole numbers"),
    (["train", "mlp", "--set", "lr=abc"], "training option lr='abc': expected a number"),
    (["train", "mlp", "--set", "dropout=abc"], "model 'mlp' option dropout='abc': expected a number"),
    (["train", "mlp", "--set", "ynn=maybe"], "training option ynn='maybe': expected true or false"),
    (["train", "mlp", "--clip-norm", "-1"], "clip_norm must be > 0"),
    (["train", "mlp", "--clip-norm", "0"], "clip_norm must be > 0"),
    (["train", "mlp", "--patience", "0"], "training option patience=0: expected positive whole numbers"),
    (["train", "mlp", "--data-dir", "/no/such/folder"], "--data-dir /no/such/folder is not a folder"),
    (["train", "mlp", "--devices", "3"], "--devices 3: JAX sees 1 device"),
    (["train", "mlp", "--set", "nosuch=1"], "unknown option 'nosuch' for model 'mlp'"),
    (["train", "ddpm", "--set", "report_samplers=1,2"], "option report_samplers=(1, 2): expected words separated "
                                                        "by commas"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys, tmp_path):
    out = tmp_path / "run"
    assert main([*argv, "--out", str(out), "--steps", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists() or not any(p.name != ".lock" for p in out.iterdir())


def test_out_naming_a_file(tmp_path, capsys):
    target = tmp_path / "afile"
    target.write_text("mine")
    assert main(["train", "mlp", "--out", str(target), "--steps", "2", "--quiet"]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err and target.read_text() == "mine"


def test_resume_refuses_what_cannot_change_and_a_damaged_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", "mlp", "--set", "hidden=16", "--out", str(out), "--quiet"]
    assert main([*base, "--steps", "20", "--stop-after", "10"]) == 0
    assert main(["train", "mlp", "--out", str(out), "--resume", "--lr", "0.5"]) == 2
    assert "--resume cannot change lr (lr: 0.001 -> 0.5)" in capsys.readouterr().err
    assert main(["train", "mlp", "--out", str(out), "--resume", "--set", "dropout=0.5"]) == 2
    assert "--resume cannot change model_options" in capsys.readouterr().err
    path = out / "checkpoint.npz"
    path.write_bytes(path.read_bytes()[:500])
    assert main(["train", "mlp", "--out", str(out), "--resume", "--quiet"]) == 2
    assert "is damaged or not a funcdl checkpoint" in capsys.readouterr().err


def test_debug_shows_the_traceback():
    with pytest.raises(ValueError, match="did you mean"):
        main(["--debug", "train", "mlp", "--set", "hiden=64"])


@pytest.mark.parametrize("content, message", [
    ('{"train": {}}', "names no model and no data: it was not written by funcdl train"),
    ("{not json", "is not valid JSON"),
])
def test_sample_refuses_a_config_funcdl_train_did_not_write(content, message, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(content)
    (run / "checkpoint.npz").write_bytes(b"")
    assert main(["sample", str(run), "--grid", "2x2", "--out", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert (run / "config.json").read_text() == content and not (tmp_path / "g.png").exists()
