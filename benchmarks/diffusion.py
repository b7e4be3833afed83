"""The diffusion table of the README from finished runs: per run (seed), the judge's Fréchet distance and
classifier score for each sampler next to real data's, the ratio DDIM 50 / DDPM 1000, the classes present and the
guided class accuracy, with the training time read from the run.

    funcdl train cddpm --data mnist --data-dir ../shared/data/mnist --seed S --out runs/cddpm-S   (S = 0, 1, 2)
    python benchmarks/diffusion.py --runs runs/cddpm-0 runs/cddpm-1 runs/cddpm-2

A run whose report sampled fewer samplers (``--set report_samplers=ddim50``) shows the ones it has.

    python benchmarks/diffusion.py --report RUN --samplers ddim50,ddim50eta0.5,ddim50eta1

runs the end-of-run report again on a finished run with other samplers (nothing is written to the run) and prints
its figures: the judge's Fréchet distance and classifier score per sampler at the run's N. With ``--draws K`` it
reports K times, each from other starting noise (draw d gives sampler i the key 100 + d * len(samplers) + i; draw 0
is the run's own report when the samplers are the run's), and prints each sampler's distances, their mean and
standard deviation: at N = 500 one draw's Fréchet distance has an sd of 6-8 (ddpm, seeds 0-2), so a ratio of two
samplers wants several.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def row(run: Path) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    config = json.loads((run / "config.json").read_text())
    return {"run": run.name, "seed": config.get("train", {}).get("seed", summary.get("seed")), "summary": summary}


def report_again(run: str, samplers: tuple, draws: int = 1) -> None:
    import dataclasses

    import numpy as np
    from funcdl.models import ddpm

    from funcdl.commands.sample import load_image_model

    loaded = load_image_model(run)
    extras = loaded["task"].extras
    config = dataclasses.replace(extras["config"], report_samplers=samplers)
    params = extras["sampling_params"](loaded["params"], loaded["opt_state"])
    distances = {name: [] for name in samplers}
    for d in range(draws):
        out = ddpm.report(params, loaded["data"], None, config, first_key=100 + d * len(samplers))
        print(json.dumps({"draw": d} | {k: out[k] for k in ("frechet_distance", "classifier_score",
                                                            "frechet_distance_real", "report_samples") if k in out}))
        for name, value in out.get("frechet_distance", {}).items():
            distances[name].append(value)
    if draws > 1:
        for name, values in distances.items():
            if values:
                print(f"{name}: Frechet distance over {len(values)} draws "
                      f"{' '.join(f'{v:.2f}' for v in values)}: mean {np.mean(values):.2f}, sd {np.std(values):.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", help="run directories of funcdl train ddpm/cddpm")
    parser.add_argument("--report", help="a run directory to report again with --samplers")
    parser.add_argument("--samplers", default="ddim50", help="comma-separated report samplers (with --report)")
    parser.add_argument("--draws", type=int, default=1, help="reports from different starting noise (with --report)")
    args = parser.parse_args()
    if args.draws < 1:
        parser.error(f"--draws must be at least 1, got {args.draws}")
    if args.report:
        return report_again(args.report, tuple(args.samplers.split(",")), args.draws)
    if not args.runs:
        parser.error("give --runs RUN ... (the table) or --report RUN --samplers ... (a new report)")
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
