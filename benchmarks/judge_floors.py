"""The shipped judge's floors: for N = 10000, 5000, 1000 and 500 images, what real MNIST scores (N test images; the
Frechet distance of N training images to them) and what uniform noise scores, as models.judge.judge_report reads
them. Every generated sample count has its own floor, so compare a model's distance with the row of its N.

    python benchmarks/judge_floors.py --data-dir ../shared/data/mnist
"""

import argparse

import numpy as np
from funcdl.models import judge

import funcdl.data as fdata


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="the MNIST folder (default: the download cache)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 5000, 1000, 500])
    args = parser.parse_args(argv)
    data = fdata.load("mnist", data_dir=args.data_dir)
    rng = np.random.default_rng(0)
    print("| N | real classifier score | real Frechet distance | real nearest train image | noise classifier score "
          "| noise Frechet distance | noise nearest train image |\n|---|---|---|---|---|---|---|")
    for n in args.sizes:
        r = judge.judge_report(rng.random((n, 28, 28, 1), dtype=np.float32), data)
        print(f"| {n} | {r['classifier_score_real']:.2f} | {r['frechet_distance_real']:.2f} | "
              f"{r['nearest_neighbour_real']:.2f} | {r['classifier_score']:.2f} | {r['frechet_distance']:.0f} | "
              f"{r['nearest_neighbour']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
