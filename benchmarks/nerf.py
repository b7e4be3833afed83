"""NeRF on the synthetic scene with and without the positional encoding: held-out-view PSNR per seed, with the
training times and the machine's load.

    python benchmarks/nerf.py --seeds 0 1 2 --out runs/nerf              # trains (encoding posenc and none)
    python benchmarks/nerf.py --out runs/nerf --read                     # only reads the runs already there
    python benchmarks/nerf.py --seeds 0 --encodings posenc -- --steps 500   # extra `funcdl train` options

Each run is ``funcdl train nerf --data synthetic_scene --seed S --set encoding=E --out OUT/E-seedS`` (plus the
options after ``--``), one after another; an existing run directory is read, not retrained. The table prints
``test_psnr`` (mean over the held-out test views of each view's PSNR), the training time (``train_seconds``: the
steps only; ``wall_seconds``: with compiling and evaluation) and the 1-minute load average at the start and end of
each run (times on a shared machine are only comparable at similar load; PSNRs are)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path


def run_dir(out: Path, encoding: str, seed: int) -> Path:
    return out / f"{encoding}-seed{seed}"


def train(out: Path, encoding: str, seed: int, extra: list[str]) -> dict:
    """Train one run (unless its summary exists) and return its row."""
    path = run_dir(out, encoding, seed)
    load = {}
    if not (path / "summary.json").is_file():
        cmd = [sys.executable, "-m", "funcdl.commands.cli", "train", "nerf", "--data", "synthetic_scene", "--seed",
               str(seed), "--set", f"encoding={encoding}", "--out", str(path), "--quiet", *extra]
        print(" ".join(cmd[2:]), flush=True)
        load["load_start"] = round(os.getloadavg()[0], 2)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        load["load_end"] = round(os.getloadavg()[0], 2)
        if proc.returncode != 0:
            raise SystemExit(f"{encoding} seed {seed}: exited {proc.returncode}:\n{proc.stderr[-2000:]}")
        (path / "benchmark_load.json").write_text(json.dumps(load))
    return read(path, encoding, seed)


def read(path: Path, encoding: str, seed: int) -> dict:
    if not (path / "summary.json").is_file():
        raise SystemExit(f"{path} has no summary.json (train it first, without --read)")
    s = json.loads((path / "summary.json").read_text())
    load_file = path / "benchmark_load.json"
    load = json.loads(load_file.read_text()) if load_file.is_file() else {}
    return {"encoding": encoding, "seed": seed, "test_psnr": s.get("test_psnr"), "steps": s.get("steps"),
            "train_seconds": s.get("train_seconds"), "wall_seconds": s.get("wall_seconds"), **load}


def table(rows: list[dict]) -> str:
    lines = [f"{'encoding':<9} {'seed':>4} {'test PSNR dB':>12} {'steps':>6} {'train s':>8} {'wall s':>8} "
             f"{'load start/end':>15}"]
    for r in rows:
        load = f"{r.get('load_start', '?')}/{r.get('load_end', '?')}"
        lines.append(f"{r['encoding']:<9} {r['seed']:>4} {r['test_psnr']:>12.2f} {r['steps']:>6} "
                     f"{r['train_seconds']:>8.0f} {r['wall_seconds']:>8.0f} {load:>15}")
    for enc in dict.fromkeys(r["encoding"] for r in rows):
        values = [r["test_psnr"] for r in rows if r["encoding"] == enc]
        lines.append(f"{enc}: mean {statistics.mean(values):.2f} dB, min {min(values):.2f} over {len(values)} seed(s)")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--encodings", nargs="+", default=["posenc", "none"], choices=["posenc", "none"])
    parser.add_argument("--out", type=Path, required=True, help="folder of the run directories")
    parser.add_argument("--read", action="store_true", help="read existing runs only, train nothing")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="after --: more `funcdl train` options")
    args = parser.parse_args(argv)
    extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra
    rows = []
    for enc in args.encodings:
        for seed in args.seeds:
            path = run_dir(args.out, enc, seed)
            if args.read and not (path / "summary.json").is_file():
                continue
            rows.append(read(path, enc, seed) if args.read else train(args.out, enc, seed, extra))
    if not rows:
        raise SystemExit(f"no runs under {args.out}")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
