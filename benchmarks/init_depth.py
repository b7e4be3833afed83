"""Initialisation, normalisation and depth: signal propagation at initialisation against mean-field theory, and
whether each deep MLP trains (funcdl.explain.depth).

    nice -n 10 python benchmarks/init_depth.py --out runs/init_depth                # the tables and figures
    nice -n 10 python benchmarks/init_depth.py --quick                              # smaller, a look in ~1 min

Part 1, at initialisation (``--depth`` hidden layers of ``--width`` units, inputs x ~ N(0, 1) of that width, a
N(0, 1) cotangent on the last hidden output, biases zero): per layer the second moment q_l of the activation's
input and g_l of the gradient dL/du_l, measured on ``--networks`` independently drawn networks (the per-layer
ratios averaged over them) and predicted one layer at a time by the mean-field recursions of
``funcdl.explain.depth``. ``fwd err`` / ``bwd err`` is the largest |measured / predicted - 1| over the layers;
``spread`` is the measurement noise of ONE network (the per-layer standard deviation of its ratio around the
mean over networks), so the noise of the average is spread / sqrt(networks). The width sets that noise: deep
in a ReLU net the examples become correlated and only the ``width`` units average (about 2.2 / sqrt(width) per
network), hence width 1024 and 8 networks by default. The N(0, 0.01^2) rows run in float64 (their statistics
and the sigmoid rows run in float64 (their statistics fall below float32's range within 30 to 50 layers); the
others in float32. For square layers Glorot's variance
2 / (fan_in + fan_out) is LeCun's 1 / fan_in: the two rows differ only in the draw (Glorot uniform, LeCun
normal), and their theory is the same.

Part 2, training: the same architectures at ``--train-depth`` x ``--train-width`` on MNIST-1D (40 inputs),
SGD with momentum 0.9 (lr ``--lr``), ``--epochs`` epochs of batch 100, through ``funcdl.training.train``;
test accuracy after the last epoch: "trains" >= 40%, "slowly" 20-40%, "does not train" < 20% (chance is 10%;
the 10 epochs are a short budget -- a shallow MLP reaches about 60% in it). A diverged run (NaN loss) does not
train at this learning rate.

Measured (the default command, 2-vCPU machine under load, about 15 min for part 1 and 10 min for part 2).
Part 1, depth 20, width 1024, 8 networks: every plain network (He, Glorot, LeCun, N(0, 0.01^2) x relu, tanh,
sigmoid) within 5.3% forward and 2.3% backward of the theory at every layer (per-network noise 0.6-5.8%):

    per layer        He/relu  Glorot/tanh  LeCun/sigmoid  N(0,.01)/relu | He/relu+res  Glorot/tanh+res
    q ratio (th.)    0.991 (1)  0.827 (0.827)  0.933 (0.939)  0.0513 (0.0512) | 2.72   1.135    (fwd err 2.8%, 0.5%)
    g ratio (th.)    1.000 (1)  0.841 (0.842)  0.0551 (0.0551) 0.0514 (0.0512) | 2.19   1.36     (bwd err 34.5%, 0.7%)

Sigmoid's gradient shrinks by 0.055 in variance per layer with LeCun/Glorot (<= sigma^2/16 = 0.0625; a factor
~0.23 in scale), g_1/g_20 = 1e-24. With batch norm before the activation the activation's input has unit
variance within 3e-4 for every initialiser, but the gradient grows going down (1.41 per layer for ReLU, g_1/g_20
~ 680: the gradient explosion of batch norm at initialisation, Yang et al. 2019); layer norm keeps ReLU
gradients near constant (0.98 per layer) and does not rescue sigmoid (0.145 per layer).
Part 2 (depth 20, width 96, 10 epochs, test accuracy): He/relu 41.1%, Glorot/tanh 44.7%, LeCun/tanh 50.2%,
LeCun/relu 26.9% (the variance halves per layer: slowly), every sigmoid network and every N(0, 0.01^2) network
at chance (8.9-9.8%); batch norm trains all four initialisers it was tried with (43.7-55.7%, sigmoid included),
layer norm trains relu and tanh (40.3%, 39.5%) but neither sigmoid nor N(0, 0.01^2)/relu; the He/relu residual
network diverges at lr 0.02 (variance x2.7 per layer, 1.8e8 over 20 layers), Glorot/tanh+res trains (48.4%),
with batch or layer norm the He/relu residual network trains (38.9%, 47.5%).
At depth 50 (``--depth 50 --width 512 --networks 8 --no-train``, 12 min; sigmoid then still in float32): the
plain rows within 10.3% forward (N(0, 0.01^2)/relu, where one network's noise is 7.7% at width 512: a wider
layer or more networks close it) and 9.3% backward, q and g of N(0, 0.01^2)/relu fall by 1e-78 over the 50
layers, sigmoid gradients below float32's range; the residual forward predictions hold (<= 5.7%) but the
backward ones fail over 50 layers (tanh 16%, relu 62%, sigmoid 58%): the gradient-independence assumption
breaks as the stream grows.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)       # the float64 rows; every other array stays float32

from funcdl.explain.depth import DeepMLP, summarize_profile, task, theory_profile, variance_profile  # noqa: E402

THEORY = [(i, a, False) for i in ("he", "glorot", "lecun", "normal") for a in ("relu", "tanh", "sigmoid")] + \
    [("he", "relu", True), ("glorot", "tanh", True), ("lecun", "sigmoid", True)]
NORMED = [(i, a, n, r) for n in ("batch", "layer") for (i, a) in
          (("he", "relu"), ("glorot", "tanh"), ("lecun", "sigmoid"), ("normal", "relu"))
          for r in (False,)] + [("he", "relu", "batch", True), ("he", "relu", "layer", True)]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--batch", type=int, default=64, help="examples per network at initialisation")
    p.add_argument("--networks", type=int, default=8, help="independent networks averaged per configuration")
    p.add_argument("--train-depth", type=int, default=20)
    p.add_argument("--train-width", type=int, default=96)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-train", action="store_true", help="part 1 only")
    p.add_argument("--quick", action="store_true", help="depth 10, width 256, 3 networks, 3 epochs")
    p.add_argument("--out", default="runs/init_depth", help="folder for the figures and table.json")
    a = p.parse_args(argv)
    if a.quick:
        a.depth, a.width, a.networks, a.train_depth, a.epochs = 10, 256, 3, 10, 3
    return a


def measure(config: DeepMLP, args, networks: int):
    dtype = jnp.float64 if config.init == "normal" or config.activation == "sigmoid" else jnp.float32
    return [variance_profile(config, jax.random.PRNGKey(1000 * args.seed + s), batch=args.batch, dtype=dtype)
            for s in range(networks)]


def part1(args):
    rows, profiles = [], {}
    print(f"\n== at initialisation: depth {args.depth}, width {args.width}, {args.networks} networks x "
          f"{args.batch} examples ==")
    print(f"{'config':<22}{'q ratio':>9}{'theory':>9}{'fwd err':>9}{'spread':>8}{'g ratio':>9}{'theory':>9}"
          f"{'bwd err':>9}{'spread':>8}   q_L / q_1     g_1 / g_L")
    configs = [DeepMLP(args.width, args.depth, args.width, 10, i, a, "none", r) for i, a, r in THEORY]
    configs += [DeepMLP(args.width, args.depth, args.width, 10, i, a, n, r) for i, a, n, r in NORMED]
    for c in configs:
        t0 = time.perf_counter()
        ps = measure(c, args, args.networks if c.norm == "none" else max(2, args.networks // 4))
        row = summarize_profile(c, ps)
        if c.norm != "none":     # normalised: the activation's input has unit second moment by construction
            row["unit_q_err"] = float(np.max(np.abs(np.mean([p["act_var"] for p in ps], 0) - 1)))
        rows.append(row)
        profiles[c.label] = {k: np.mean([p[k] for p in ps], 0) for k in ("act_var", "grad_var")}
        full = theory_profile(c, ps[0])
        profiles[c.label] |= {"theory_act": full["act"], "theory_grad": full["grad"]}
        fmt = lambda v, w=9, p=4: f"{v:>{w}.{p}g}" if np.isfinite(v) else f"{'-':>{w}}"  # noqa: E731
        pct = lambda v: f"{100 * v:>7.1f}%" if np.isfinite(v) else f"{'-':>8}"  # noqa: E731
        print(f"{c.label:<22}{fmt(row['fwd_ratio'])}{fmt(row['fwd_theory'])}{pct(row['fwd_err'])}"
              f"{pct(row['fwd_spread'])}{fmt(row['bwd_ratio'])}{fmt(row['bwd_theory'])}{pct(row['bwd_err'])}"
              f"{pct(row['bwd_spread'])}   {row['q_last'] / row['q_first']:<12.3g}  "
              f"{row['g_first'] / row['g_last']:<10.3g}" + (f"  |q-1| <= {row['unit_q_err']:.1e}"
                                                          if "unit_q_err" in row else "")
              + f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    return rows, profiles


def part2(args, configs):
    from funcdl.data import load
    from funcdl.training.loop import TrainConfig, train

    data = load("mnist1d", val_fraction=0.0)
    print(f"\n== training: depth {args.train_depth}, width {args.train_width}, SGD momentum 0.9 lr {args.lr}, "
          f"{args.epochs} epochs on MNIST-1D ==")
    results = []
    for c in configs:
        c = DeepMLP(args.train_width, args.train_depth, 40, 10, c.init, c.activation, c.norm, c.residual)
        cfg = TrainConfig(epochs=args.epochs, batch_size=100, optimizer="sgd", optimizer_options={"momentum": 0.9},
                          lr=args.lr, seed=args.seed, progress=False, plots=False)
        t0 = time.perf_counter()
        r = train(task(c), data, cfg)
        losses = [h["loss"] for h in r.history if h["split"] == "train"] or [float("nan")]
        acc = r.summary.get("test_accuracy", 0.0)     # a diverged run is not evaluated
        verdict = "trains" if acc >= 0.4 else "slowly" if acc >= 0.2 else "does not train"
        row = {"config": c.label, "first_loss": losses[0], "final_loss": losses[-1], "test_accuracy": acc,
               "verdict": verdict, "stopped": r.summary["stopped"]}
        results.append(row)
        note = "" if row["stopped"] == "finished" else f" ({row['stopped']})"
        print(f"{c.label:<22} train loss {losses[0]:.3f} -> {losses[-1]:.3f}   test accuracy {100 * acc:5.1f}%   "
              f"{verdict}{note}  ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    return results


def figures(profiles, out: Path):
    from funcdl.plots.dynamics import plot_profiles

    groups = {"plain": [k for k in profiles if "+" not in k], "residual": [k for k in profiles if k.endswith("+res")
                                                                          and "+bn" not in k and "+ln" not in k],
              "normalised": [k for k in profiles if "+bn" in k or "+ln" in k]}
    paths = []
    for name, keys in groups.items():
        if keys:
            paths.append(plot_profiles({k: profiles[k] for k in keys}, out / f"init_{name}.png",
                                       title=f"per-layer second moments at initialisation ({name})"))
    return paths


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, profiles = part1(args)
    configs = [DeepMLP(8, 1, 8, 10, i, a, "none", r) for i, a, r in THEORY] + \
        [DeepMLP(8, 1, 8, 10, i, a, n, r) for i, a, n, r in NORMED]
    plain = [r for r in rows if np.isfinite(r["fwd_err"]) and "+" not in r["config"]]
    print(f"\nplain networks: largest per-layer error {100 * max(r['fwd_err'] for r in plain):.1f}% forward, "
          f"{100 * max(r['bwd_err'] for r in plain):.1f}% backward (criterion 10%)")
    res = [r for r in rows if r["config"].endswith("+res") and np.isfinite(r["fwd_err"])]
    if res:
        print("residual networks: forward " + ", ".join(f"{r['config']} {100 * r['fwd_err']:.1f}%" for r in res)
              + "; backward " + ", ".join(f"{r['config']} {100 * r['bwd_err']:.1f}%" for r in res)
              + " (the backward recursion assumes the gradient independent of the forward pass; a ReLU stream "
              "accumulates a large mean (E[h] ~ 0.8 sqrt(E[h^2])), each unit's ReLU is then nearly always on or off, "
              "and that assumption fails)")
    trained = [] if args.no_train else part2(args, configs)
    for p in figures(profiles, out):
        print(f"wrote {p}")
    table = {"args": vars(args), "init": rows, "train": trained}
    np.savez(out / "profiles.npz", **{f"{k}|{q}": v for k, p in profiles.items() for q, v in p.items()})
    (out / "table.json").write_text(json.dumps(table, indent=1, default=float))
    print(f"wrote {out / 'table.json'}")


if __name__ == "__main__":
    main()
