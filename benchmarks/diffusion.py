"""The diffusion table of the README from finished runs: per run (seed), the judge's Fréchet distance and
classifier score for each sampler next to real data's, the ratio DDIM 50 / DDPM 1000, the classes present and the
guided class accuracy, with the training time read from the run.

    funcdl train cddpm --data mnist --data-dir ../shared/data/mnist --seed S --out runs/cddpm-S   (S = 0, 1, 2)
    python benchmarks/diffusion.py --runs runs/cddpm-0 runs/cddpm-1 runs/cddpm-2

A run whose report sampled fewer samplers (``--set report_samplers=ddim50``) shows the ones it has.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def row(run: Path) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    config = json.loads((run / "config.json").read_text())
    return {"run": run.name, "seed": config.get("train", {}).get("seed", summary.get("seed")), "summary": summary}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, help="run directories of funcdl train ddpm/cddpm")
    args = parser.parse_args()
    rows = [row(Path(r)) for r in args.runs]
    samplers = []
    for r in rows:
        for name in r["summary"].get("frechet_distance", {}):
            if name not in samplers:
                samplers.append(name)
    print("| seed | " + " | ".join(f"FD {s}" for s in samplers) + " | FD real | DDIM50/DDPM1000 | CS " +
          " | CS ".join(samplers) + " | classes | guided accuracy | N | steps | training (wall, with evaluations) |")
    print("|---" * (8 + 2 * len(samplers)) + "|")
    for r in rows:
        s = r["summary"]
        fd, cs = s.get("frechet_distance", {}), s.get("classifier_score", {})
        ratio = f"{fd['ddim50'] / fd['ddpm1000']:.2f}" if "ddim50" in fd and "ddpm1000" in fd else "-"
        guided = s.get("guided_class_accuracy")
        cells = [str(r["seed"])] + [f"{fd[k]:.2f}" if k in fd else "-" for k in samplers]
        cells += [f"{s.get('frechet_distance_real', float('nan')):.2f}", ratio]
        cells += [f"{cs[k]:.2f}" if k in cs else "-" for k in samplers]
        cells += [str(s.get("classes_present", "-")), "-" if guided is None else f"{100 * guided:.1f}%",
                  str(s.get("report_samples", "-")), str(s.get("steps", "-")),
                  f"{s.get('wall_seconds', float('nan')) / 60:.1f} min"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
