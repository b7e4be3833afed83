"""Post-training quantization of a trained run: load it, calibrate on training images, evaluate on the test set.

``load(run_dir)`` rebuilds an image classifier run (``funcdl train`` output) with its data; ``evaluate_config``
quantizes it one way (a :class:`~funcdl.compress.quant_graph.QuantizedModel`) and measures the float, fake-quant
and (when it applies) integer paths on the whole test split: accuracy, and for the integer path the number of
test examples whose prediction differs from the fake path and the largest logit difference.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

from .quant_graph import QuantizedModel
from .quantize import QuantSpec

__all__ = ["load", "evaluate_config", "calibration_batches", "predict"]


def load(run: str, data_dir: str | None = None) -> dict:
    """``{"apply", "params", "test", "train", "config", "name"}`` of an image classifier run directory."""
    from funcdl.commands.sample import load_classifier

    return load_classifier(run, data_dir, "quantize")


def calibration_batches(train: dict, n: int, batch: int = 256, seed: int = 0) -> list:
    """``n`` training inputs drawn without replacement (seed fixed), in batches."""
    if n < 1:
        raise ValueError(f"quantize: --calibrate needs at least 1 image, got {n}")
    x = train["x"]
    idx = np.sort(np.random.default_rng(seed).permutation(len(x))[: min(n, len(x))])
    return [x[idx[i:i + batch]] for i in range(0, len(idx), batch)]


def predict(qm: QuantizedModel, x, mode: str, batch: int = 1000) -> np.ndarray:
    """Logits of every row of x (batches of ``batch``; the last one shorter)."""
    return np.concatenate([np.asarray(qm.apply(x[i:i + batch], mode)) for i in range(0, len(x), batch)])


def evaluate_config(run: dict, weights: QuantSpec | None, activations: QuantSpec | None, calibrate: int = 512,
                    integer: bool = True, float_logits: np.ndarray | None = None) -> tuple[dict, QuantizedModel]:
    """One quantization of a loaded run: ``(row, model)``; the row holds the float and quantized test accuracy,
    and with ``integer`` (when the integer path applies) the integer path's accuracy, the number of test
    predictions that differ from the fake path and the largest logit difference."""
    t0 = time.time()
    x, y = run["test"]["x"], np.asarray(run["test"]["y"])
    qm = QuantizedModel(run["apply"], run["params"], x[:1], weights, activations)
    qm.calibrate(calibration_batches(run["train"], calibrate))
    if float_logits is None:
        float_logits = predict(qm, x, "float")
    fake = predict(qm, x, "fake")
    row = {"weights": None if weights is None else dataclasses.asdict(weights),
           "activations": None if activations is None else dataclasses.asdict(activations),
           "label": _label(weights, activations), "calibrate": calibrate,
           "float_accuracy": float(np.mean(float_logits.argmax(-1) == y)),
           "accuracy": float(np.mean(fake.argmax(-1) == y)),
           "agree_with_float": float(np.mean(fake.argmax(-1) == float_logits.argmax(-1)))}
    row["delta_points"] = round(100 * (row["accuracy"] - row["float_accuracy"]), 4)
    if integer and _integer_applies(weights, activations, qm):
        ints = predict(qm, x, "int")
        row |= {"int_accuracy": float(np.mean(ints.argmax(-1) == y)),
                "int_vs_fake_mismatches": int(np.sum(ints.argmax(-1) != fake.argmax(-1))),
                "int_vs_fake_max_logit_diff": float(np.max(np.abs(ints - fake))),
                "logit_scale": float(np.max(np.abs(fake)))}
    row["granularities"] = sorted({s["granularity"] for s in qm.describe_sites()})
    row["seconds"] = round(time.time() - t0, 1)
    return row, qm


def _integer_applies(weights, activations, qm) -> bool:
    try:
        qm._check_integer_path()
    except ValueError:
        return False
    return weights is not None and activations is not None


def _label(weights: QuantSpec | None, activations: QuantSpec | None) -> str:
    w = "float weights" if weights is None else f"W {weights.describe()}"
    a = "float acts" if activations is None else f"A int{activations.bits} {activations.method}"
    return f"{w}, {a}"


def float_reference(run: dict) -> np.ndarray:
    """The float logits of the test split through the model's own apply (jitted), for the rows to share."""
    fn = jax.jit(run["apply"])
    x = run["test"]["x"]
    return np.concatenate([np.asarray(fn(run["params"], x[i:i + 1000])) for i in range(0, len(x), 1000)])
