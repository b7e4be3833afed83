"""Run by tests/test_parallel.py in a fresh process with 8 forced CPU devices (XLA_FLAGS is read once, when JAX
starts, so the test process itself cannot grow devices): trains the same tasks on 1, 2, 4 and 8 devices and with
each --shard choice, and prints one JSON line per run: the largest parameter difference to the single-device
run, and the per-device bytes of the optimizer state against its total."""

import json
import os
import sys

if __name__ == "__main__":     # not when test_parallel imports RUNS: its children (notebook kernels, CLI runs)
    # XLA's default optimisation, as a user's run gets it: the suite's cheaper settings (tests/conftest.py) put
    # the ResNet's 2-device run 1.8e-4 away from one device after 50 steps, the defaults 1.2e-7. The older CPU
    # emitters alone keep every run as close (<= 2.4e-7) and compile faster (this worker: 27.5 -> 19.5 s)
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8 --xla_cpu_use_fusion_emitters=false"

import jax  # noqa: E402
import numpy as np  # noqa: E402
from funcdl.models import get_model  # noqa: E402

from funcdl.data.base import Dataset  # noqa: E402
from funcdl.training.loop import TrainConfig, train  # noqa: E402
from funcdl.training.parallel import make_parallel, per_device_bytes  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from test_train import blobs, mlp_task  # noqa: E402


def model_task(name, info):
    """A registered model at its registered ``small`` size (the ResNet: batch norm in every block)."""
    entry = get_model(name)
    return entry.build(info, **entry.small)


def images(n=160, side=8, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n).astype(np.int32)
    x = rng.normal(size=(n, side, side, 1)).astype(np.float32) + y[:, None, None, None] * 0.1
    return Dataset("images", {"train": {"x": x, "y": y}}, "classification", num_classes=classes)


def tokens(n=2000, vocab=11, seed=0):
    text = np.random.default_rng(seed).integers(0, vocab, n).astype(np.int32)
    return Dataset("tokens", {"train": {"tokens": text}}, "language", vocab_size=vocab)


# (devices, shard) per task: the MLP on 2, 4 and 8 devices under each shard choice; the ResNet (batch-norm statistics
# synchronised over the devices) and the GPT (windows sharded) once each, sharded, without the full product (each
# run compiles its own step: the suite's time budget; tests/test_multiprocess.py adds two processes)
RUNS = {"mlp": [(2, "none"), (4, "optimizer"), (8, "params")],
        "resnet": [(4, "params")],
        "gpt": [(8, "optimizer")]}
STEPS = {"mlp": 60, "resnet": 50, "gpt": 50}


def max_diff(a, b):
    return max([0.0] + [float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
                        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)])


def main():
    data = blobs(n=400)        # 12 steps per epoch at batch 32
    # SGD for the ResNet: a bias before a batch norm has a zero gradient, which Adam would divide by its own noise
    pictures, text = images(), tokens()
    tasks = {"mlp": (lambda: mlp_task(hidden=(16,)), "adam", {}, data, dict(epochs=5, batch_size=32)),
             # the models themselves: ResNet's batch norm synchronised over the devices, GPT's windows sharded
             "resnet": (lambda: model_task("resnet", pictures.info()), "sgd", {"momentum": 0.9}, pictures,
                        dict(epochs=5, batch_size=16)),
             # SGD again: at initialisation some of GPT's query/key weights get gradients at the rounding level,
             # which Adam divides by their own size (8 devices after 50 AdamW steps: 5e-4 apart, SGD: 1e-8)
             "gpt": (lambda: model_task("gpt", text.info(8)), "sgd", {"momentum": 0.9}, text,
                     dict(steps=50, batch_size=8, seq_len=8))}
    for name, (make, optimizer, options, data, size) in tasks.items():
        config = dict(**size, optimizer=optimizer, optimizer_options=options, lr=1e-2, progress=False, plots=False)
        base = train(make(), data, TrainConfig(**config, devices=1))
        for n, shard in RUNS[name]:
            r = train(make(), data, TrainConfig(**config, devices=n, shard=shard))
            layouts = make_parallel(n, shard).layouts(r.params, r.opt_state, r.state)
            print(json.dumps({
                "task": name, "devices": n, "shard": shard, "steps": r.summary["steps"],
                "params_diff": max_diff(base.params, r.params), "state_diff": max_diff(base.state, r.state),
                "opt_bytes_device": per_device_bytes(r.opt_state),
                "opt_bytes_layout": per_device_bytes(r.opt_state, layouts[1]),
                "opt_bytes_total": sum(np.asarray(x).nbytes for x in jax.tree.leaves(r.opt_state)),
                "split_leaves_are_1_over_n": all(
                    x.addressable_shards[0].data.nbytes * n == x.nbytes for x in jax.tree.leaves(r.opt_state)
                    if x.ndim and x.shape[0] % n == 0) if shard != "none" else None,
            }), flush=True)


if __name__ == "__main__":
    main()
