"""Data that stays on disk: a prepared (memory-mapped) copy trains the char-GPT with the same loss curve as the
in-memory path for the same seed; prepare_text reads a text file chunk by chunk; text:PATH streams big files."""

import numpy as np
import pytest
from funcdl.models import get_model

import funcdl.data as fdata
from funcdl.data import stream
from funcdl.training.loop import TrainConfig, train


def _gpt_run(data, **kw):
    entry = get_model("gpt")
    task = entry.build(data.info(seq_len=16), **{**entry.small, "block_size": 16, "compute_dtype": "float32"})
    config = TrainConfig(steps=30, batch_size=8, seq_len=16, lr=3e-3, eval_every=15, eval_batches=2,
                         progress=False, plots=False, **kw)
    return train(task, data, config)


@pytest.mark.slow
def test_memory_mapped_char_gpt_has_the_in_memory_loss_curve(tmp_path, shared_data):
    text = (shared_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")[:200_000]
    (tmp_path / "small.txt").write_text(text, encoding="utf-8")
    in_memory = fdata.load(f"text:{tmp_path / 'small.txt'}")
    prepared = fdata.load(f"prepared:{stream.prepare_text(tmp_path / 'small.txt', tmp_path / 'prep')}")
    assert prepared.streaming and not in_memory.streaming
    assert isinstance(prepared.splits["train"]["tokens"], np.memmap)
    a, b = _gpt_run(in_memory), _gpt_run(prepared)
    curve = lambda r, split: [h["loss"] for h in r.history if h["split"] == split]  # noqa: E731
    np.testing.assert_allclose(curve(b, "train"), curve(a, "train"), rtol=1e-5)
    np.testing.assert_allclose(curve(b, "val"), curve(a, "val"), rtol=1e-5)


def test_prepare_text_matches_the_in_memory_tokens(tmp_path, monkeypatch):
    text = "".join(chr(0x61 + i % 7) + ("é" if i % 13 == 0 else "") for i in range(5000))
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    monkeypatch.setattr(stream, "_CHUNK_CHARS", 999)                 # many chunks, a split inside one of them
    prepared = stream.load_prepared(stream.prepare_text(tmp_path / "t.txt", tmp_path / "p", val_fraction=0.3))
    ref = fdata.text.text_dataset("t", text, 0.3)
    for split in ("train", "val"):
        np.testing.assert_array_equal(np.asarray(prepared.splits[split]["tokens"]), ref.splits[split]["tokens"])
    assert prepared.extras["decode"](prepared.splits["val"]["tokens"][:5]) == ref.extras["decode"](
        ref.splits["val"]["tokens"][:5])


def test_big_text_files_stream_from_a_cached_copy(tmp_path, monkeypatch):
    (tmp_path / "big.txt").write_text("to be or not to be " * 500, encoding="utf-8")
    monkeypatch.setattr(stream, "STREAM_TEXT_BYTES", 1000)
    data = fdata.load(f"text:{tmp_path / 'big.txt'}")
    assert data.streaming and data.vocab_size == len(set("to be or not"))
    again = fdata.load(f"text:{tmp_path / 'big.txt'}")                # prepared once, then read from the cache
    np.testing.assert_array_equal(np.asarray(again.splits["train"]["tokens"]),
                                  np.asarray(data.splits["train"]["tokens"]))


def test_a_prepared_classification_set_trains_like_in_memory(tmp_path):
    from test_train import blobs, cfg, mlp_task

    data = blobs()
    prepared = stream.load_prepared(stream.prepare(data, tmp_path))
    a = train(mlp_task(), data, cfg(epochs=2))
    b = train(mlp_task(), prepared, cfg(epochs=2))
    for x, y in zip(a.history, b.history, strict=True):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-6)


def test_missing_prepared_folder_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="funcdl data prepare"):
        fdata.load(f"prepared:{tmp_path}")
