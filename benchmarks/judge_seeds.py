"""The judge's per-seed accuracies: train models.judge's recipe once per seed (nothing is cached) and print each
seed's MNIST test accuracy and training time.

    python benchmarks/judge_seeds.py --data-dir ../shared/data/mnist --seeds 0 1 2
"""

import argparse

from funcdl.models import judge


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="the MNIST folder (default: the download cache)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    data = judge._mnist01(args.data_dir)
    print("| seed | test accuracy | seconds |\n|---|---|---|")
    for seed in args.seeds:
        _, _, accuracy, seconds = judge._train_judge(data, {**judge.RECIPE, "seed": seed})
        print(f"| {seed} | {100 * accuracy:.2f}% | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
