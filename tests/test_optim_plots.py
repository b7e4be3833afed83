"""``funcdl plot optimizers`` and ``funcdl plot schedules`` write PNG files; unknown kinds fail clearly."""

import pytest

from funcdl.commands.cli import main


def _is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_plot_schedules(tmp_path, capsys):
    assert main(["plot", "schedules", "--out", str(tmp_path), "--steps", "200", "--warmup", "20"]) == 0
    assert _is_png(tmp_path / "schedules.png")
    assert "schedules.png" in capsys.readouterr().out


@pytest.mark.slow
def test_plot_optimizers(tmp_path):
    assert main(["plot", "optimizers", "--out", str(tmp_path), "--steps", "20", "--optimizers", "sgd,adam"]) == 0
    assert _is_png(tmp_path / "optimizer_paths.png") and _is_png(tmp_path / "optimizer_losses.png")


def test_plot_bad_input(tmp_path, capsys):
    assert main(["plot", "optimizers", "--out", str(tmp_path), "--optimizers", "sgdd"]) == 2
    assert "valid optimizers" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["plot", "nonsense"])
    assert "invalid choice" in capsys.readouterr().err


def test_best_learning_rate_path_reaches_quadratic_minimum():
    from funcdl.plots.optim import TEST_FUNCTIONS, optimizer_paths

    quad = TEST_FUNCTIONS[3]
    lr, path, gaps = optimizer_paths("adam", quad, 200)
    assert path.shape == (201, 2) and gaps[-1] < 1e-3 * gaps[0] and 1e-4 <= lr <= 10
