"""Sharpness of the minima SGD, Adam and SAM find: the top Hessian eigenvalue (Lanczos through the hand-derived
rules) and the trace (stochastic Lanczos quadrature) of the training loss at the end of training, per seed.

An MLP 40-100-100-10 (ReLU) on MNIST-1D (all 4000 training examples, generated offline), the same batches and the
same initialisation per seed for the three optimizers: SGD (constant lr), SAM wrapped around that same SGD
(``optim.sam``, rho 0.05) and Adam. The curvature is that of the loss on the whole training split.

    nice -n 10 .venv/bin/python benchmarks/sharpness.py                 # seeds 0-2, 4000 steps each
    nice -n 10 .venv/bin/python benchmarks/sharpness.py --seeds 0 --steps 500 --json out.json

Cross-entropy on a training set the MLP can memorise keeps falling towards 0, and the Hessian shrinks with it
(the softmax saturates), so lambda_max at the *end* of training mostly ranks the final losses. The fair comparison
is at the same training loss: the first snapshot (every 100 steps) at which each run's loss is <= 0.05.
Measured (the default command, 2 cores shared with other jobs, 157 s in all, 72 s of CPU):

    seed  optimizer  at loss <= 0.05: step  loss    lambda_max  trace   |  end (4000): loss  lambda_max  trace
    0     SGD                           1900  0.0327  3.49        81.9    |  0.0013            0.34        8.4
    0     SAM                           2100  0.0250  1.53        61.9    |  0.0058            0.83        21.2
    0     Adam                          2000  0.0458  7.39        155.6   |  0.0022            0.91        18.0
    1     SGD                           1900  0.0362  2.67        89.2    |  0.0013            0.28        7.0
    1     SAM                           2100  0.0499  2.06        80.3    |  0.0111            1.03        28.0
    1     Adam                          2000  0.0453  6.84        141.3   |  0.0022            0.86        20.6
    2     SGD                           1800  0.0261  2.40        73.9    |  0.0015            0.33        9.6
    2     SAM                           2100  0.0424  1.84        89.6    |  0.0063            1.14        23.1
    2     Adam                          2000  0.0327  5.34        122.2   |  0.0020            0.70        17.5

At the same loss SAM's lambda_max is below SGD's in all three seeds (in seeds 1 and 2 at a *higher* loss) and
Adam's is 2-3 times SGD's; the trace is not smaller for SAM in every seed (seed 2). At the end of training the
order of SGD and SAM flips with their losses. Test accuracy: SGD 67.7/65.7/68.3%, SAM 68.2/65.7/67.5%, Adam
63.9/64.7/64.7% at the target loss.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from funcdl.models import as_task, mlp
from jax.flatten_util import ravel_pytree

import funcdl.data as fdata
from funcdl import optim
from funcdl.explain import curvature as C
from funcdl.explain import landscape as L


def optimizers(args) -> dict:
    """name -> (factory of the optimizer given the loss, whether update needs the batch)."""
    return {
        "sgd": (lambda loss: optim.sgd(args.lr, momentum=args.momentum), False),
        "sam": (lambda loss: optim.sam(optim.sgd(args.lr, momentum=args.momentum), loss, rho=args.rho), True),
        "adam": (lambda loss: optim.adam(args.adam_lr), False),
    }


def run_seed(seed: int, args, task, train, test) -> list[dict]:
    x, y = jnp.asarray(train["x"], jnp.float32), jnp.asarray(train["y"])
    rows_idx = np.random.default_rng(seed).integers(0, len(y), (args.steps, args.batch_size))
    batches = {"x": x[rows_idx], "y": y[rows_idx]}
    params0, _ = task.init(jax.random.PRNGKey(seed))
    _, unravel = ravel_pytree(params0)

    def batch_loss(p, b):
        return task.loss(p, {}, b, None, True)[0]

    def full_loss(p):       # the training loss whose curvature we measure: the whole training split
        return task.loss(p, {}, {"x": x, "y": y}, None, False)[0]

    accuracy = jax.jit(lambda p: jnp.mean(jnp.argmax(task.apply(p, {}, jnp.asarray(test["x"], jnp.float32)), -1)
                                          == jnp.asarray(test["y"])))
    losses_of = jax.jit(jax.vmap(lambda f: full_loss(unravel(f))))
    out = []
    for name, (make, needs_batch) in optimizers(args).items():
        t0 = time.time()
        params, steps, snaps, _ = L.optimizer_path(batch_loss, params0, make(batch_loss), batches,
                                                   every=args.check_every, batch_to_update=needs_batch)
        losses = np.asarray(losses_of(jnp.asarray(snaps)))
        t1 = time.time()
        row = {"seed": seed, "optimizer": name, "train_s": round(t1 - t0, 1)}
        # the end of training, and the first snapshot whose training loss is down to the target (same loss for all)
        hit = np.flatnonzero(losses <= args.target)
        points = {"end": params, "target": unravel(jnp.asarray(snaps[hit[0]])) if hit.size else None}
        for where, p in points.items():
            if p is None:
                row |= {f"{where}_step": None, f"{where}_lambda_max": None, f"{where}_trace": None}
                continue
            s = C.sharpness(full_loss, p, k=1, iters=args.iters, probes=args.probes, seed=seed)
            row |= {f"{where}_step": int(steps[hit[0]]) if where == "target" else args.steps,
                    f"{where}_lambda_max": s["lambda_max"], f"{where}_trace": s["trace"],
                    f"{where}_train_loss": float(losses[hit[0]]) if where == "target" else float(losses[-1]),
                    f"{where}_test_accuracy": float(accuracy(p))}
        row["curvature_s"] = round(time.time() - t1, 1)
        out.append(row)
        print(f"seed {seed}  {name:4s}  " + "  ".join(
            f"{w}: step {row[f'{w}_step']} loss {row.get(f'{w}_train_loss', float('nan')):.4f} lambda_max "
            f"{row[f'{w}_lambda_max'] or float('nan'):.3f} trace {row[f'{w}_trace'] or float('nan'):.1f} acc "
            f"{row.get(f'{w}_test_accuracy', float('nan')):.4f}" for w in points)
            + f"  ({row['train_s']} s + {row['curvature_s']} s)", flush=True)
    return out


def _fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


def report(rows: list[dict], args) -> None:
    """The table, and per seed whether SAM's lambda_max is below SGD's at the end and at the target loss."""
    print(f"| seed | optimizer | end: train loss | lambda_max | trace | test acc | at loss <= {args.target}: step | "
          "lambda_max | trace | test acc |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {r['optimizer']} | {r['end_train_loss']:.4f} | {r['end_lambda_max']:.2f} | "
              f"{r['end_trace']:.1f} | {100 * r['end_test_accuracy']:.1f}% | {_fmt(r['target_step'], 'd')} | "
              f"{_fmt(r['target_lambda_max'], '.2f')} | {_fmt(r['target_trace'], '.1f')} | "
              f"{_fmt(r.get('target_test_accuracy') and 100 * r['target_test_accuracy'], '.1f')}% |")
    by = {(r["seed"], r["optimizer"]): r for r in rows}
    for where in ("end", "target"):
        pairs = [(by[(s, "sam")][f"{where}_lambda_max"], by[(s, "sgd")][f"{where}_lambda_max"]) for s in args.seeds]
        wins = [a < b for a, b in pairs if a is not None and b is not None]
        print(f"{where}: SAM's lambda_max below SGD's in {sum(wins)} of {len(wins)} seeds")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=0.05, help="SGD's (and SAM's inner SGD's) learning rate")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD's (and SAM's inner SGD's) momentum")
    p.add_argument("--rho", type=float, default=0.05, help="SAM's radius")
    p.add_argument("--adam-lr", type=float, default=3e-3)
    p.add_argument("--hidden", type=int, nargs="+", default=[100, 100])
    p.add_argument("--check-every", type=int, default=100, help="steps between snapshots (training loss checks)")
    p.add_argument("--target", type=float, default=0.05, help="the training loss at which the three are compared")
    p.add_argument("--iters", type=int, default=20, help="Lanczos steps for the top eigenvalue")
    p.add_argument("--probes", type=int, default=2, help="SLQ probes for the trace")
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args(argv)

    data = fdata.load("mnist1d", val_fraction=0.0)
    train, test = data.splits["train"], data.splits["test"]
    task = as_task(mlp.Config(sizes=(40, *args.hidden, 10)))
    t0 = time.time()
    rows = [r for seed in args.seeds for r in run_seed(seed, args, task, train, test)]

    print(f"\nMLP 40-{'-'.join(map(str, args.hidden))}-10 on MNIST-1D ({len(train['y'])} train), {args.steps} steps "
          f"of {args.batch_size}; SGD lr {args.lr} momentum {args.momentum}; SAM rho {args.rho} around the same SGD; "
          f"Adam lr {args.adam_lr}. Curvature of the whole training loss (Lanczos {args.iters} steps; trace by SLQ, "
          f"{args.probes} probes)")
    report(rows, args)
    print(f"total {time.time() - t0:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
