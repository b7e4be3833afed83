"""Training throughput of this tree against an earlier commit, side by side, from one command.

    python benchmarks/bench_engine.py --baseline b4703e9 [--rounds 2] [--models mlp,cnn,resnet,gpt]

For each model the same ``funcdl train MODEL --data DATA --steps N --seed 0`` runs as a separate process in the
baseline's tree (a ``git worktree`` of ``--baseline``, made on first use) and in this one, alternating, ``--rounds``
times; the figure is ``steps_per_second_steady`` from ``summary.json`` (steps per second after the first,
compiling call), the median over rounds. The last column is new / baseline (> 1: this tree is faster). Runs that
need the local data copies (MNIST, tiny shakespeare) read them from ``--data-root``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# name -> (data, data folder under --data-root or None, steps, extra options)
RUNS = {
    "mlp": ("mnist1d", None, 3000, []),
    "cnn": ("mnist1d", None, 3000, []),
    "resnet": ("mnist", "mnist", 80, ["--warmup-steps", "10"]),
    "gpt": ("tinyshakespeare", "tinyshakespeare", 300, []),
}


def baseline_tree(rev: str) -> Path:
    path = Path(tempfile.gettempdir()) / f"funcdl-baseline-{rev}"
    if not (path / "funcdl").is_dir():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(path), rev], check=True,
                       capture_output=True)
    return path


def one_run(tree: Path, model: str, data_root: Path) -> float:
    data, folder, steps, extra = RUNS[model]
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "funcdl", "train", model, "--data", data, "--steps", str(steps), "--seed", "0",
               "--out", out, "--quiet", *extra]
        if folder:
            cmd += ["--data-dir", str(data_root / folder)]
        env = {**os.environ, "PYTHONPATH": str(tree), "MPLBACKEND": "Agg"}
        done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{model} in {tree}: {done.stderr[-1500:]}")
        summary = json.loads((Path(out) / "summary.json").read_text())
    return float(summary.get("steps_per_second_steady") or summary["steps_per_second"])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--baseline", required=True, help="the commit to compare against (e.g. b4703e9)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--models", default=",".join(RUNS))
    p.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    args = p.parse_args()
    base = baseline_tree(args.baseline)
    print(f"baseline {args.baseline} in {base}; this tree {ROOT}; median of {args.rounds} alternating rounds")
    print(f"{'model':<8} {'steps':>6} {'baseline steps/s':>17} {'this tree steps/s':>18} {'ratio':>6}")
    for model in args.models.split(","):
        old, new = [], []
        for _ in range(args.rounds):
            old.append(one_run(base, model, Path(args.data_root)))
            new.append(one_run(ROOT, model, Path(args.data_root)))
        a, b = statistics.median(old), statistics.median(new)
        print(f"{model:<8} {RUNS[model][2]:>6} {a:>17.1f} {b:>18.1f} {b / a:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
