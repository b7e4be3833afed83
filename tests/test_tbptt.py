"""Truncated BPTT in the training loop: sequential windows continue row by row, and the carried state moves."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcdl.data.base import sequential_windows
from funcdl.training.loop import TrainConfig


def test_sequential_windows_continue_each_row():
    tokens = jnp.arange(1000)
    b0 = sequential_windows(tokens, 0, 4, 10)
    b1 = sequential_windows(tokens, 1, 4, 10)
    assert b0["x"].shape == (4, 10)
    np.testing.assert_array_equal(b0["y"][:, :-1], b0["x"][:, 1:])
    np.testing.assert_array_equal(b1["x"][:, 0], b0["x"][:, -1] + 1)       # row b of step 1 follows row b of step 0
    with pytest.raises(ValueError, match="streams"):
        sequential_windows(jnp.arange(20), 0, 4, 10)


def test_windows_option_is_checked():
    with pytest.raises(ValueError, match="windows"):
        TrainConfig(windows="shuffled")


def test_char_lstm_with_carried_state_trains(tmp_path):
    from funcdl.models import as_task, char_lstm

    from funcdl.data.base import Dataset
    from funcdl.training.loop import train

    text = np.random.default_rng(0).integers(0, 7, size=4000).astype(np.int32)
    data = Dataset("toy", {"train": {"tokens": text[:3600]}, "val": {"tokens": text[3600:]}}, kind="language",
                   vocab_size=7)
    task = as_task(char_lstm.Config(7, 8, 16, 1, 0.0, 0, tbptt=True, batch_size=4))
    _, state0 = task.init(jax.random.PRNGKey(0))
    cfg = TrainConfig(steps=6, batch_size=4, seq_len=12, windows="sequential", eval_every=3, progress=False,
                      plots=False, lr=1e-2)
    result = train(task, data, cfg, tmp_path / "run")
    assert np.isfinite(result.summary["val_loss"])
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), result.state, state0)
    assert max(jax.tree.leaves(moved)) > 0, "the hidden state carried between batches never changed"
