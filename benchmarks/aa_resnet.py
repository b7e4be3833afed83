"""The attention-augmented ResNet (models/aaconv.py) against the plain small ResNet on MNIST: test accuracy per
seed, parameters and training-step time in one table.

    python benchmarks/aa_resnet.py --data-dir /work/shared/data/mnist [--steps 200] [--seeds 0,1,2] [--batch 128]

Both models train with ``funcdl train`` and the plain ResNet's MNIST recipe (SGD momentum 0.9, lr 0.05, weight
decay 5e-4, 100 warm-up steps then cosine, +-2 pixel translations, batch 128), for --steps steps instead of its 8
epochs (200 steps = 0.47 epoch of the 55000 training images: a short run, to compare the two, not to reach their
best accuracy); the test accuracy is on all 10000 test images. The step time is timed separately, in --rounds
interleaved rounds (resnet, aa_resnet in turn) of the median of --reps jitted steps on one batch, so a busy machine
slows both alike. Runs are written to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from funcdl.models import MODELS

import funcdl as fd
from funcdl.commands.cli import main as cli
from funcdl.training.config import TrainConfig
from funcdl.training.step import make_optimizer, make_train_step
from funcdl.training.task import DataInfo

MODELS_COMPARED = ("resnet", "aa_resnet")


def train_runs(args, out_root: Path) -> dict:
    """{(model, seed): summary.json}"""
    results = {}
    for seed in args.seeds:
        for model in MODELS_COMPARED:
            out = out_root / f"{model}-{seed}"
            rc = cli(["train", model, "--data", "mnist", "--data-dir", args.data_dir, "--steps", str(args.steps),
                      "--seed", str(seed), "--batch-size", str(args.batch), "--eval-every", str(args.steps),
                      "--out", str(out), "--quiet", "--set", "plots=false"])
            if rc != 0:
                raise SystemExit(f"{model} seed {seed} failed (exit {rc})")
            results[model, seed] = json.loads((out / "summary.json").read_text())
            print(f"  {model} seed {seed}: test accuracy {results[model, seed]['test_accuracy']:.4f}", flush=True)
    return results


def step_times(args) -> dict:
    """{model: seconds per training step} at --batch, timed in interleaved rounds."""
    info = DataInfo("mnist", (28, 28, 1), num_classes=10)
    rng = np.random.default_rng(0)
    batch = {"x": rng.normal(size=(args.batch, 28, 28, 1)).astype(np.float32),
             "y": rng.integers(0, 10, args.batch).astype(np.int32)}
    config = TrainConfig(optimizer="sgd", lr=0.05, weight_decay=5e-4, optimizer_options={"momentum": 0.9})
    runs = {}
    for model in MODELS_COMPARED:
        task = MODELS[model].build(info)
        opt, _ = make_optimizer(config, 1000)
        params, state = task.init(jax.random.PRNGKey(0))
        opt_state = opt.init(params)
        step = make_train_step(task, opt, config)
        key = jax.random.PRNGKey(1)
        step = jax.jit(step, compiler_options=fd.xla.compiler_options(step, params, opt_state, state, batch, key))
        carry = [params, opt_state, state]

        def run(step=step, carry=carry, key=key):
            carry[:] = step(*carry, batch, key)[:3]
            jax.block_until_ready(carry[0])

        run()
        runs[model] = run
    times = {m: [] for m in runs}
    for _ in range(args.rounds):
        for m, run in runs.items():
            ts = []
            for _ in range(args.reps):
                t = time.perf_counter()
                run()
                ts.append(time.perf_counter() - t)
            times[m].append(statistics.median(ts))
    return {m: statistics.median(ts) for m, ts in times.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True, help="folder with MNIST's IDX files")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-train", action="store_true", help="only the parameters and the step times")
    args = p.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    results = {}
    if not args.no_train:
        with tempfile.TemporaryDirectory(prefix="aa_resnet-") as tmp:
            results = train_runs(args, Path(tmp))
    times = step_times(args)
    print(f"\nMNIST, {args.steps} steps of batch {args.batch} ({args.steps * args.batch / 55000:.2f} epochs), resnet's "
          f"MNIST recipe; step time: median of {args.rounds} interleaved rounds of {args.reps} steps, CPU "
          f"({os.cpu_count()} cores)")
    seeds = "".join(f"{'seed ' + str(s):>9}" for s in args.seeds)
    print(f"{'model':<11}{seeds}{'mean':>9}{'params':>9}{'step ms':>9}")
    for model in MODELS_COMPARED:
        accs = [results[model, s]["test_accuracy"] for s in args.seeds] if results else []
        params = fd_params(model)
        cells = "".join(f"{a:>9.4f}" for a in accs) if accs else "".join(f"{'-':>9}" for _ in args.seeds)
        mean = f"{np.mean(accs):>9.4f}" if accs else f"{'-':>9}"
        print(f"{model:<11}{cells}{mean}{params:>9}{times[model] * 1e3:>9.1f}")
    print("load average (1, 5, 15 min):", " ".join(f"{v:.2f}" for v in os.getloadavg()))


def fd_params(model: str) -> int:
    task = MODELS[model].build(DataInfo("mnist", (28, 28, 1), num_classes=10))
    shapes = jax.eval_shape(lambda k: task.init(k)[0], jax.random.PRNGKey(0))
    return int(sum(np.prod(a.shape) for a in jax.tree.leaves(shapes)))


if __name__ == "__main__":
    main()
