"""Data sets: MNIST-1D against the frozen pickle, splits and normalisation, batching by key, IDX / CIFAR /
text readers on small files written here, the cache and download rules (no network needed)."""

import gzip
import hashlib
import pickle
import random

import jax
import numpy as np
import pytest

import funcdl.data as data
from funcdl.data import Dataset, MissingDataError
from funcdl.data.images import MNIST_FILES, read_idx


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """One cache folder for this module (MNIST-1D generated once), and never the network."""
    monkeypatch.setenv("FUNCDL_DATA", str(tmp_path_factory.getbasetemp() / "funcdl-cache"))
    monkeypatch.setenv("FUNCDL_OFFLINE", "1")


def test_mnist1d_generation_matches_the_frozen_pickle_and_keeps_global_rng(shared_data):
    path = shared_data / "mnist1d" / "mnist1d_data.pkl"
    if not path.is_file():
        pytest.skip("no frozen mnist1d pickle")
    with open(path, "rb") as f:
        frozen = pickle.load(f)
    np.random.seed(7)
    random.seed(7)
    before = (np.random.random(), random.random())
    np.random.seed(7)
    random.seed(7)
    generated = data.mnist1d.generate()
    after = (np.random.random(), random.random())
    assert before == after                                   # the generator's seeding did not leak
    for k in ("y", "y_test"):
        np.testing.assert_array_equal(generated[k], frozen[k])
    for k in ("x", "x_test"):
        assert generated[k].shape == frozen[k].shape
        np.testing.assert_allclose(generated[k], frozen[k], rtol=0, atol=1e-12)


def test_mnist1d_splits_and_cache():
    ds = data.load("mnist1d")
    assert {k: ds.size(k) for k in ds.splits} == {"train": 3600, "val": 400, "test": 1000}
    assert ds.splits["train"]["x"].dtype == np.float32 and ds.splits["train"]["y"].dtype == np.int32
    assert ds.info().input_shape == (40,) and ds.info().num_classes == 10
    assert (data.cache_dir("mnist1d") / "mnist1d_default.npz").is_file()
    full = data.load("mnist1d", val_fraction=0.0)
    assert "val" not in full.splits and full.size("train") == 4000
    # train and val partition the 4000 training examples
    both = np.concatenate([ds.splits["train"]["x"], ds.splits["val"]["x"]])
    assert np.array_equal(np.sort(both, axis=0), np.sort(full.splits["train"]["x"], axis=0))


def test_mnist1d_shuffled_is_one_fixed_permutation():
    a, b = data.load("mnist1d"), data.load("mnist1d_shuffled")
    perm = np.array(b.extras["permutation"])
    assert sorted(perm) == list(range(40)) and not np.array_equal(perm, np.arange(40))
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(b.splits[split]["x"], a.splits[split]["x"][:, perm])
        np.testing.assert_array_equal(b.splits[split]["y"], a.splits[split]["y"])


def test_split_and_standardize_use_train_only():
    rng = np.random.default_rng(0)
    arrays = {"x": rng.normal(3.0, 2.0, size=(100, 4)), "y": np.arange(100)}
    train, val = data.split_validation(arrays, 0.2)
    assert len(val["y"]) == 20 and len(train["y"]) == 80
    assert set(train["y"]) | set(val["y"]) == set(range(100)) and not set(train["y"]) & set(val["y"])
    train2, _ = data.split_validation(arrays, 0.2)
    assert np.array_equal(train["y"], train2["y"])            # fixed seed
    splits = {"train": train, "val": val}
    val_before = val["x"].copy()
    stats = data.standardize(splits)
    assert abs(float(splits["train"]["x"].mean())) < 1e-5 and abs(float(splits["train"]["x"].std()) - 1) < 1e-4
    np.testing.assert_allclose(splits["val"]["x"], (val_before - stats["mean"]) / stats["std"], rtol=1e-5)
    with pytest.raises(ValueError, match="fraction"):
        data.split_validation(arrays, 1.5)


def test_batches_by_key():
    arrays = {"x": np.arange(10) * 10, "y": np.arange(10)}
    key = jax.random.PRNGKey(3)
    got = list(data.batches(arrays, 3, key))
    assert len(got) == 3 and all(b["x"].shape == (3,) for b in got)
    ys = np.concatenate([b["y"] for b in got])
    assert len(set(ys)) == 9
    for b in got:
        np.testing.assert_array_equal(b["x"], b["y"] * 10)          # arrays stay aligned
    again = np.concatenate([b["y"] for b in data.batches(arrays, 3, key)])
    other = np.concatenate([b["y"] for b in data.batches(arrays, 3, jax.random.PRNGKey(4))])
    assert np.array_equal(ys, again) and not np.array_equal(ys, other)
    with pytest.raises(ValueError, match="larger"):
        list(data.batches(arrays, 11, key))


def test_sample_windows_shift_by_one():
    tokens = np.arange(50, dtype=np.int32)
    b = data.sample_windows(tokens, jax.random.PRNGKey(0), 16, 8)
    x, y = np.asarray(b["x"]), np.asarray(b["y"])
    assert x.shape == y.shape == (16, 8)
    np.testing.assert_array_equal(y, x + 1)
    np.testing.assert_array_equal(np.diff(x, axis=1), 1)
    assert x.min() >= 0 and y.max() <= 49
    with pytest.raises(ValueError, match="does not fit"):
        data.sample_windows(tokens[:5], jax.random.PRNGKey(0), 2, 8)


def test_text_dataset_and_vocab(tmp_path):
    text = "hello world, " * 50
    ds = data.text_dataset("t", text)
    vocab = ds.extras["vocab"]
    assert vocab == "".join(sorted(set(text))) and ds.vocab_size == len(vocab)
    assert ds.extras["decode"](ds.extras["encode"]("hello")) == "hello"
    n = len(text)
    assert ds.size("train") == int(0.9 * n) and ds.size("train") + ds.size("val") == n
    assert ds.extras["decode"](ds.splits["train"]["tokens"]) + ds.extras["decode"](ds.splits["val"]["tokens"]) == text
    assert ds.info(seq_len=16).input_shape == (16,) and ds.kind == "language"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        ds.extras["encode"]("xyz")
    f = tmp_path / "corpus.txt"
    f.write_text(text)
    ds2 = data.load(f"text:{f}")
    assert ds2.vocab_size == ds.vocab_size and ds2.name == "text:corpus.txt"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load(f"text:{tmp_path / 'missing.txt'}")


def test_tinyshakespeare_local(shared_data):
    if not (shared_data / "tinyshakespeare" / "input.txt").is_file():
        pytest.skip("no local tinyshakespeare")
    ds = data.load("tinyshakespeare", data_dir=shared_data / "tinyshakespeare")
    assert ds.vocab_size == 65 and ds.size("train") + ds.size("val") == 1115394
    assert ds.extras["decode"](ds.splits["train"]["tokens"][:9]) == "First Cit"


def write_idx(path, array):
    dtype_code = {np.uint8: 0x08}[array.dtype.type]
    header = bytes([0, 0, dtype_code, array.ndim]) + np.array(array.shape, ">i4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def fake_idx_folder(folder, n_train=24, n_test=8):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8))
    write_idx(folder / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, n_train, dtype=np.uint8))
    write_idx(folder / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, n_test, dtype=np.uint8))
    return folder


def test_idx_reader_and_fashion_mnist_from_local_files(tmp_path):
    folder = fake_idx_folder(tmp_path / "fm")
    images = read_idx(folder / "train-images-idx3-ubyte.gz")
    assert images.shape == (24, 28, 28) and images.dtype == np.uint8
    ds = data.load("fashion_mnist", data_dir=folder, val_fraction=0.25)
    assert {k: ds.size(k) for k in ds.splits} == {"train": 18, "val": 6, "test": 8}
    x = ds.splits["train"]["x"]
    assert x.shape == (18, 28, 28, 1) and x.dtype == np.float32
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-3      # train statistics
    assert ds.extras["classes"][9] == "Ankle boot"
    # unpacked copies are read too
    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz") as f:
        (folder / "t10k-labels-idx1-ubyte").write_bytes(f.read())
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    assert data.load("fashion_mnist", data_dir=folder).size("test") == 8
    # a truncated file is reported, not misread
    with gzip.open(folder / "t10k-images-idx3-ubyte.gz") as f:
        raw = f.read()
    with gzip.open(folder / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(raw[:-10])
    with pytest.raises(ValueError, match="truncated"):
        data.load("fashion_mnist", data_dir=folder)


def test_mnist_local_checksums_and_load(shared_data):
    folder = shared_data / "mnist"
    if not folder.is_dir():
        pytest.skip("no local mnist")
    for name, md5 in MNIST_FILES.items():
        assert data.download.checksum(folder / name, "md5", decompress=True) == md5
    ds = data.load("mnist", data_dir=folder)
    assert {k: ds.size(k) for k in ds.splits} == {"train": 55000, "val": 5000, "test": 10000}
    assert ds.info().input_shape == (28, 28, 1)
    assert abs(ds.extras["normalization"]["mean"] - 0.1307) < 1e-3


def test_missing_files_say_what_to_do(tmp_path):
    with pytest.raises(MissingDataError) as err:
        data.load("mnist")
    msg = str(err.value)
    assert "train-images-idx3-ubyte.gz" in msg and "https://" in msg and str(data.cache_dir("mnist")) in msg
    with pytest.raises(MissingDataError, match="--data-dir"):
        data.load("mnist", data_dir=tmp_path)
    with pytest.raises(MissingDataError, match="cifar-10-python.tar.gz"):
        data.load("cifar10")
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"not the archive")    # a local archive is verified too
    with pytest.raises(MissingDataError, match="has md5 .* not the published"):
        data.load("cifar10", data_dir=tmp_path)
    assert not (tmp_path / "cifar-10-batches-py").exists()


def test_download_is_verified_and_atomic(tmp_path, monkeypatch):
    monkeypatch.delenv("FUNCDL_OFFLINE")
    src = tmp_path / "src.bin"
    src.write_bytes(b"some data" * 100)
    md5 = hashlib.md5(src.read_bytes()).hexdigest()
    url = src.as_uri()
    with pytest.raises(MissingDataError, match="expected 0000"):
        data.fetch("demo", "file.bin", url, md5="0000")
    folder = data.cache_dir("demo")
    assert not folder.exists() or not list(folder.iterdir())        # nothing half-written left behind
    path = data.fetch("demo", "file.bin", url, md5=md5)
    assert path == folder / "file.bin" and path.read_bytes() == src.read_bytes()
    assert list(folder.iterdir()) == [path]
    src.unlink()
    assert data.fetch("demo", "file.bin", url, md5=md5) == path       # cached: no second download
    with pytest.raises(MissingDataError, match="download failed"):
        data.fetch("demo", "other.bin", (tmp_path / "nope").as_uri())


def write_cifar_batch(path, n, seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, n).tolist()
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"fake", b"labels": labels, b"data": images.reshape(n, 3072)}, f)
    return images, labels


def test_cifar10_python_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    written = [write_cifar_batch(folder / f"data_batch_{i}", 4, i) for i in range(1, 6)]
    test_images, test_labels = write_cifar_batch(folder / "test_batch", 6, 9)
    ds = data.load("cifar10", data_dir=tmp_path, val_fraction=0.0)
    assert ds.size("train") == 20 and ds.size("test") == 6
    x = ds.splits["train"]["x"]
    assert x.shape == (20, 32, 32, 3)
    np.testing.assert_array_equal(ds.splits["test"]["y"], test_labels)
    # NHWC: pixel (h, w) of channel c of the first image is the CHW plane value, after standardisation
    mean = np.array(ds.extras["normalization"]["mean"])
    std = np.array(ds.extras["normalization"]["std"])
    first = written[0][0][0]                                          # (3, 32, 32) uint8
    np.testing.assert_allclose(x[0, 5, 7, :] * std + mean, first[:, 5, 7] / 255.0, atol=1e-5)
    assert np.abs(x.reshape(-1, 3).mean(0)).max() < 1e-4              # per-channel train statistics
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="CIFAR-10"):
        data.load("cifar10", data_dir=tmp_path)


def test_digits():
    pytest.importorskip("sklearn")
    ds = data.load("digits")
    assert ds.info().input_shape == (8, 8, 1) and ds.num_classes == 10
    assert sum(ds.size(k) for k in ds.splits) == 1797


def test_registry_and_errors():
    assert {"mnist1d", "mnist1d_shuffled", "digits", "mnist", "fashion_mnist", "cifar10",
            "tinyshakespeare"} <= set(data.names())
    with pytest.raises(ValueError, match="valid data sets: .*mnist1d"):
        data.load("mnistt")
    with pytest.raises(ValueError, match="already registered"):
        data.register_dataset("mnist1d", data.mnist1d.load_mnist1d, "again")

    def tiny(data_dir=None, val_fraction=0.0, **_):
        return Dataset("tiny", {"train": {"x": np.zeros((4, 2)), "y": np.zeros(4, np.int32)}}, num_classes=2)

    data.register_dataset("tiny_for_test", tiny, "a test set")
    try:
        assert data.load("tiny_for_test").size() == 4
    finally:
        del data.DATASETS["tiny_for_test"]
    with pytest.raises(ValueError, match="differ in their first dimension"):
        Dataset("bad", {"train": {"x": np.zeros((4, 2)), "y": np.zeros(3)}})
