"""Run one `funcdl train` command for several seeds and print the per-seed table of its summary figures.

    python benchmarks/seeds.py --seeds 0 1 2 -- cnn --data mnist1d --precision bf16

Every accuracy the README claims for a default command comes from a run of this script (one run per seed, back
to back, each in its own run directory under a temporary folder that is removed afterwards)."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIGURES = ("test_accuracy", "val_accuracy", "test_loss", "val_loss")


def run(train_args: list[str], seed: int, root: Path) -> dict:
    out = root / f"seed{seed}"
    cmd = [sys.executable, "-m", "funcdl.commands.cli", "train", *train_args, "--seed", str(seed), "--out", str(out)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"seed {seed}: `{' '.join(cmd)}` exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {"seed": seed, "wall_s": round(wall, 1), **{k: summary[k] for k in FIGURES if k in summary}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="after --: the arguments of `funcdl train`")
    args = parser.parse_args(argv)
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    if not train_args:
        parser.error("give the model and options after --, e.g. -- cnn --data mnist1d")
    rows = []
    with tempfile.TemporaryDirectory(prefix="funcdl-seeds-") as tmp:
        for seed in args.seeds:
            rows.append(run(train_args, seed, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    print(f"funcdl train {' '.join(train_args)}")
    for key in FIGURES:
        values = [r[key] for r in rows if key in r]
        if len(values) == len(rows):
            shown = " / ".join(f"{100 * v:.1f}" if "accuracy" in key else f"{v:.3f}" for v in values)
            mean = statistics.mean(values)
            print(f"  {key}: seeds {', '.join(map(str, args.seeds))}: {shown}; mean "
                  f"{100 * mean if 'accuracy' in key else mean:.{1 if 'accuracy' in key else 3}f}; "
                  f"min {100 * min(values) if 'accuracy' in key else min(values):.{1 if 'accuracy' in key else 3}f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
