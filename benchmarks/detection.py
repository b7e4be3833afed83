"""The detection recipe of issue 21 per seed: mAP@0.5, mAP@0.5:0.95, per-class AP@0.5 and the time, as tables.

    python benchmarks/detection.py --data-dir /work/shared/data/mnist --seeds 0 1 2 --out runs/detection
    python benchmarks/detection.py --runs runs/detection/seed0 runs/detection/seed1 runs/detection/seed2

The first trains ``funcdl train yolo --data mnist_detection --data-dir DIR --seed S`` with the model's registered
recipe (1000 Adam steps of 64 images, cosine; extra arguments after ``--`` are passed on), one seed after the
other, and records the machine's load average before and after each run; the second only reads run directories
(summary.json, with the report's ``test_map50``, ``test_map`` and ``test_ap50``) that were trained before.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def train(seed: int, out: Path, data_dir: str, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "funcdl.commands.cli", "train", "yolo", "--data", "mnist_detection", "--data-dir",
           data_dir, "--seed", str(seed), "--out", str(out), "--quiet", *extra]
    load_before = os.getloadavg()[0]
    start, cpu0 = time.perf_counter(), os.times()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall, cpu1 = time.perf_counter() - start, os.times()
    if proc.returncode != 0:
        raise SystemExit(f"seed {seed}: `{' '.join(cmd)}` exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    cpu = (cpu1.children_user - cpu0.children_user) + (cpu1.children_system - cpu0.children_system)
    return {"process_s": wall, "cpu_s": cpu, "load": f"{load_before:.1f}->{os.getloadavg()[0]:.1f}"}


def row(path: Path, timing: dict | None = None) -> dict:
    summary = json.loads((path / "summary.json").read_text())
    config = json.loads((path / "config.json").read_text())
    if "test_map50" not in summary:
        raise SystemExit(f"{path}: summary.json has no test_map50 (not a detector run, or its report failed)")
    out = {"run": str(path), "seed": config.get("train", {}).get("seed", summary.get("seed")),
           "steps": summary.get("steps"), "map50": summary["test_map50"], "map": summary["test_map"],
           "ap50": summary.get("test_ap50", {}), "train_s": summary.get("train_seconds"),
           "wall_s": summary.get("wall_seconds")}
    return out | (timing or {})


def print_tables(rows: list[dict]) -> None:
    print("| seed | steps | mAP@0.5 | mAP@0.5:0.95 | train s | run wall s | extra |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        extra = ", ".join(f"{k} {v:.0f}" if isinstance(v, float) else f"{k} {v}"
                          for k, v in r.items() if k in ("process_s", "cpu_s", "load"))
        print(f"| {r['seed']} | {r['steps']} | {r['map50']:.4f} | {r['map']:.4f} | {r['train_s']:.0f} | "
              f"{r['wall_s']:.0f} | {extra} |")
    if len(rows) > 1:
        for key in ("map50", "map"):
            values = [r[key] for r in rows]
            print(f"{key}: mean {statistics.mean(values):.4f}, std {statistics.stdev(values):.4f}, "
                  f"min {min(values):.4f}")
    classes = list(rows[0]["ap50"])
    print("\n| class | " + " | ".join(f"AP@0.5 seed {r['seed']}" for r in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for c in classes:
        print(f"| {c} | " + " | ".join(f"{r['ap50'].get(c, float('nan')):.4f}" for r in rows) + " |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", help="read these run directories instead of training")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data-dir", help="the MNIST files (training only)")
    parser.add_argument("--out", default="runs/detection", help="parent folder of the new runs (training only)")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="after --: more arguments of `funcdl train`")
    args = parser.parse_args(argv)
    if args.runs:
        rows = [row(Path(p)) for p in args.runs]
    else:
        if not args.data_dir:
            parser.error("training needs --data-dir (the folder with the MNIST files)")
        extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra
        rows = []
        for seed in args.seeds:
            out = Path(args.out) / f"seed{seed}"
            if out.exists():
                parser.error(f"{out} exists; give a new --out")
            rows.append(row(out, train(seed, out, args.data_dir, extra)))
    print_tables(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
