"""models/judge.py: the metric math on cases with known answers, and the judge's train / cache / checksum path on a
tiny fake MNIST-shaped data set with a tiny training budget (the real recipe, RECIPE, is measured by the command in
the module's docstring, not here: it trains for minutes)."""

import json

import numpy as np
import pytest
from funcdl.models import judge as J

from funcdl.data import Dataset

TINY = {**J.RECIPE, "channels": (2, 4), "hidden": 8, "epochs": 1, "batch_size": 40, "augment": None}


# -- the metrics --------------------------------------------------------------------------------------------------


def exact_gaussian_sample(rng, mean, cov, n=400):
    """n points whose sample mean and (unbiased) sample covariance are exactly ``mean`` and ``cov``."""
    x = rng.normal(size=(n, len(mean)))
    x -= x.mean(0)
    x = x @ np.linalg.inv(np.linalg.cholesky(np.cov(x, rowvar=False))).T
    return x @ np.linalg.cholesky(cov).T + mean


def test_frechet_distance_of_a_set_with_itself_is_zero():
    f = np.random.default_rng(0).normal(size=(300, 16)) * np.linspace(0.1, 3, 16)
    assert J.frechet_distance(f, f) == pytest.approx(0.0, abs=1e-8)
    assert J.frechet_distance(f, f + 2.0) == pytest.approx(16 * 4.0, rel=1e-8)     # a shift adds |mu1 - mu2|^2


def test_frechet_distance_against_closed_forms():
    rng = np.random.default_rng(1)
    # 2-D: Tr (S1 S2)^(1/2) = sqrt(tr(S1 S2) + 2 sqrt(det(S1 S2))) (the two eigenvalues' roots, summed and squared)
    s1, s2 = np.array([[2.0, 0.6], [0.6, 1.0]]), np.array([[0.5, -0.2], [-0.2, 3.0]])
    mu1, mu2 = np.array([0.0, 1.0]), np.array([1.5, -0.5])
    p = s1 @ s2
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2) - 2 * np.sqrt(np.trace(p) + 2 * np.sqrt(np.linalg.det(p)))
    got = J.frechet_distance(exact_gaussian_sample(rng, mu1, s1), exact_gaussian_sample(rng, mu2, s2))
    assert got == pytest.approx(expected, rel=1e-9)
    # diagonal covariances commute: d^2 = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2
    a, b = rng.uniform(0.1, 4, 6), rng.uniform(0.1, 4, 6)
    got = J.frechet_distance(exact_gaussian_sample(rng, np.zeros(6), np.diag(a)),
                             exact_gaussian_sample(rng, np.ones(6), np.diag(b)))
    assert got == pytest.approx(6.0 + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2), rel=1e-9)


def test_frechet_distance_matches_scipy_sqrtm_in_higher_dimensions():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(2)
    f1 = rng.normal(size=(500, 20)) @ rng.normal(size=(20, 20))
    f2 = rng.normal(size=(500, 20)) @ rng.normal(size=(20, 20)) + 0.3
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    root = np.real(linalg.sqrtm(s1 @ s2))
    expected = np.sum((f1.mean(0) - f2.mean(0)) ** 2) + np.trace(s1 + s2 - 2 * root)
    assert J.frechet_distance(f1, f2) == pytest.approx(expected, rel=1e-6)
    # a rank-deficient covariance (fewer points than features) stays finite and non-negative
    assert 0.0 <= J.frechet_distance(f1[:5], f2[:7]) < np.inf


def test_classifier_score_bounds():
    same = np.tile([0.05, 0.9, 0.05] + [0.0] * 7, (50, 1))
    assert J.classifier_score(same) == pytest.approx(1.0)                 # the same prediction for every sample
    assert J.classifier_score(np.eye(10)) == pytest.approx(10.0)          # ten confident, distinct classes
    assert J.classifier_score(np.eye(10)[[0, 1] * 20]) == pytest.approx(2.0)
    mixed = np.random.default_rng(0).dirichlet(np.full(10, 0.3), size=200)
    assert 1.0 < J.classifier_score(mixed) < 10.0


def test_histogram_confidence_and_nearest_neighbour():
    probs = np.array([[0.95, 0.05] + [0.0] * 8, [0.2, 0.8] + [0.0] * 8, [0.0] * 9 + [1.0]])
    assert J.class_histogram(probs).tolist() == [1, 1] + [0] * 7 + [1]
    assert J.confident_share(probs) == pytest.approx(2 / 3)
    rng = np.random.default_rng(3)
    train = rng.random((300, 28, 28, 1)).astype(np.float32)
    assert J.nearest_neighbour(train[[5, 17, 299]], train, batch_size=2) == 0.0   # training images: exactly 0
    moved = train[:2].copy()
    moved[0, 0, 0, 0] += 0.5
    moved[1, 3, 4, 0] -= 0.25
    assert J.nearest_neighbour(moved, train) == pytest.approx(0.375, abs=1e-6)     # one pixel off each
    with pytest.raises(ValueError, match="same size"):
        J.nearest_neighbour(train[:2, :14], train)


# -- the judge: training, the cache, the checksum, the report --------------------------------------------------------


def fake_mnist(n_train=200, n_test=60, seed=0):
    """Digits k drawn as a bright 6x6 square at a class-dependent place, plus noise; in [0, 1]."""
    rng = np.random.default_rng(seed)

    def split(n):
        y = rng.integers(0, 10, n)
        x = 0.2 * rng.random((n, 28, 28, 1))
        for i, k in enumerate(y):
            r, c = 2 + 8 * (k // 4), 2 + 6 * (k % 4)
            x[i, r:r + 6, c:c + 6] = 1.0
        return {"x": x.astype(np.float32), "y": y.astype(np.int32)}

    return Dataset("fake-mnist", {"train": split(n_train), "test": split(n_test)}, "classification", num_classes=10)


@pytest.fixture(scope="module")
def tiny_judge(tmp_path_factory):
    folder = tmp_path_factory.mktemp("judge-cache")
    return folder, J._load_or_train(folder, fake_mnist, TINY)


def test_train_once_then_load_from_the_cache(tiny_judge, capsys):
    folder, judge = tiny_judge
    record = json.loads((folder / "judge.json").read_text())
    assert record["sha256"] == J._sha256(folder / "judge.npz") and record == judge.record
    assert record["recipe"] == json.loads(json.dumps(TINY)) and 0.0 <= record["test_accuracy"] <= 1.0
    assert {"funcdl_version", "train_seconds"} <= set(record)
    again = J._load_or_train(folder, lambda: pytest.fail("a cached judge must not train again"), TINY)
    assert "training the MNIST judge" not in capsys.readouterr().out
    x = fake_mnist(seed=1).splits["test"]["x"][:7]
    feats, probs = again.read(x)
    assert feats.shape == (7, 8) and probs.shape == (7, 10)
    np.testing.assert_allclose(probs, judge.probs(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        judge.read(x * 255)
    with pytest.raises(ValueError, match=r"\(N, 28, 28, 1\)"):
        judge.read(x[:, :14])


def test_checksum_mismatch_then_retrain(tiny_judge, tmp_path, capsys):
    folder, _ = tiny_judge
    copy = tmp_path / "judge"
    copy.mkdir()
    for name in ("judge.npz", "judge.json"):
        (copy / name).write_bytes((folder / name).read_bytes())
    with open(copy / "judge.npz", "ab") as f:
        f.write(b"tampered")
    with pytest.raises(ValueError, match="do not match the sha256") as err:
        J._load_or_train(copy, fake_mnist, TINY)
    assert "delete" in str(err.value) and "\n" not in str(err.value)
    (copy / "judge.npz").unlink()                      # as the message says: delete it, and it is trained again
    J._load_or_train(copy, fake_mnist, TINY)
    assert "training the MNIST judge once" in capsys.readouterr().out
    assert json.loads((copy / "judge.json").read_text())["sha256"] == J._sha256(copy / "judge.npz")


def test_the_shipped_judge_loads_without_training_and_refuses_a_damaged_copy(tmp_path, monkeypatch, capsys):
    """load_judge() reads the judge that ships with funcdl (sha256 checked, nothing trained or read from data); a
    damaged copy is refused in one line that says what to do."""
    monkeypatch.setenv("FUNCDL_DATA", str(tmp_path / "cache"))
    judge = J.load_judge(data_dir=tmp_path / "never-read")
    assert judge.record["recipe"] == json.loads(json.dumps(J.RECIPE)) and judge.record["test_accuracy"] >= 0.99
    assert judge.record["sha256"] == J._sha256(J.SHIPPED)
    assert "training the MNIST judge" not in capsys.readouterr().out and not (tmp_path / "cache" / "judge").exists()
    damaged = tmp_path / "judge_weights.npz"
    damaged.write_bytes(J.SHIPPED.read_bytes() + b"x")
    (tmp_path / "judge_weights.json").write_bytes(J.SHIPPED.with_suffix(".json").read_bytes())
    monkeypatch.setattr(J, "SHIPPED", damaged)
    with pytest.raises(ValueError, match="do not match the sha256.*reinstall funcdl") as err:
        J.load_judge()
    assert "\n" not in str(err.value)


def test_the_shipped_judge_reads_mnist_at_its_recorded_accuracy(shared_data):
    import funcdl.data as fdata

    if not (shared_data / "mnist").is_dir():
        pytest.skip("no local MNIST")
    judge = J.load_judge()
    data = fdata.load("mnist", data_dir=shared_data / "mnist", val_fraction=0.0)
    test = data.splits["test"]
    accuracy = float(np.mean(judge.probs(J.pixels01(test["x"], data)).argmax(1) == np.asarray(test["y"])))
    assert accuracy >= 0.99 and abs(accuracy - judge.record["test_accuracy"]) < 1e-3, accuracy


def test_load_judge_trains_into_funcdl_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FUNCDL_DATA", str(tmp_path))
    monkeypatch.setattr(J, "RECIPE", TINY)
    monkeypatch.setattr(J, "_mnist01", lambda data_dir=None, data=None: fake_mnist())
    judge = J.load_judge(shipped=False)
    assert (tmp_path / "judge" / "judge.npz").is_file() and "training the MNIST judge" in capsys.readouterr().out
    assert J.load_judge(shipped=False).record == judge.record


def test_judge_report(tiny_judge):
    _, judge = tiny_judge
    data = fake_mnist(300, 80, seed=2)
    norm = {"mean": 0.3, "std": 0.4}           # a standardised copy: the report maps it back with the statistics
    splits = {k: {"x": (v["x"] - norm["mean"]) / norm["std"], "y": v["y"]} for k, v in data.splits.items()}
    data = Dataset("fake-std", splits, "classification", num_classes=10, extras={"normalization": norm})
    samples = fake_mnist(40, 40, seed=3).splits["test"]
    before = len(J._FLOORS)
    r = J.judge_report(samples["x"], data, labels=samples["y"], judge=judge, prefix="s_")
    assert set(r) == {"s_" + k for k in ("classifier_score", "classifier_score_real", "frechet_distance",
                                         "frechet_distance_real", "class_histogram", "classes_present",
                                         "confident_share", "nearest_neighbour", "nearest_neighbour_real",
                                         "conditional_accuracy")}
    assert sum(r["s_class_histogram"]) == 40 and 1 <= r["s_classes_present"] <= 10
    assert 1.0 <= r["s_classifier_score"] <= 10.0 and r["s_frechet_distance"] >= 0.0
    assert 0.0 <= r["s_conditional_accuracy"] <= 1.0
    # training images sit at distance 0 from the reference set; the real floor is cached for the process
    copies = J.pixels01(data.splits["train"]["x"][:40], data)
    r2 = J.judge_report(copies, data, judge=judge)
    assert r2["nearest_neighbour"] < 1e-3 < r2["nearest_neighbour_real"] == r["s_nearest_neighbour_real"]
    assert len(J._FLOORS) == before + 1 and "conditional_accuracy" not in r2
    with pytest.raises(ValueError, match="one class per image"):
        J.judge_report(samples["x"], data, labels=samples["y"][:3], judge=judge)
    with pytest.raises(ValueError, match="at least 2 images"):
        J.judge_report(samples["x"][:1], data, judge=judge)
