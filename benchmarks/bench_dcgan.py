"""One DCGAN training step (a discriminator update, then a generator update, with the generator's EMA) in funcdl
(jitted, as ``funcdl train dcgan`` runs it) and the same network and step in PyTorch on the CPU.

    python benchmarks/bench_dcgan.py [--batch 64] [--width 32] [--latent 64] [--disc-depth 3] [--gen-head conv3]
                                     [--reps 20] [--rounds 3] [--grad manual|autodiff] [--model dcgan|cdcgan]

funcdl: ``funcdl.training.step.make_players_step`` of the registered model, compiled with the options a training
step gets (``funcdl.core.xla.compiler_options``). PyTorch: the same layers (Linear, BatchNorm2d, ConvTranspose2d
4x4/2, with --gen-head conv3 (the registered models') a BatchNorm2d, ReLU and a 3x3 Conv2d at full resolution
after the last; Conv2d 4x4/2 and, with --disc-depth 3 (the registered models'), 3x3/2, the critic's batch norm
after each conv but the first, LeakyReLU 0.2), the same losses (non-saturating), Adam(2e-4, betas (0.5, 0.999))
and an EMA of the generator, with ``torch.set_num_threads`` = the CPU count. Times are medians over --rounds interleaved
rounds of the median of --reps steps after warm-up, funcdl also as SCAN steps per ``lax.scan`` call (reported per
step); torch is skipped with a line when it is not installed.
"""

from __future__ import annotations

import argparse
import os
import statistics

import jax
import jax.numpy as jnp
import numpy as np
from bench_conv import timeit  # noqa: E402  (median of reps after a warm-up; this folder is on sys.path when run)
from funcdl.models import get_model

import funcdl as fd
from funcdl.training.config import TrainConfig
from funcdl.training.step import make_players_step, players_optimizer

INFO_EXTRAS = {"normalization": {"mean": 0.1307, "std": 0.3081}}


SCAN = 4                   # steps per lax.scan call in the scanned timing (funcdl train scans its steps)


def funcdl_step(args, x, y):
    """``(one, scanned)``: zero-argument functions that run one jitted players step, and SCAN steps in one
    ``lax.scan`` call (blocking)."""
    from funcdl.training.task import DataInfo

    info = DataInfo("mnist", (28, 28, 1), num_classes=10, extras=INFO_EXTRAS)
    task = get_model(args.model).build(info, latent=args.latent, width=args.width, disc_depth=args.disc_depth,
                                       gen_head=args.gen_head, judge=False)
    config = TrainConfig(batch_size=args.batch, lr=2e-4, optimizer_options={"b1": 0.5, "b2": 0.999},
                         grad=args.grad, steps=1)
    return players_runners(task, config, {"x": jnp.asarray(x), "y": jnp.asarray(y)}, scan=SCAN)


def players_runners(task, config, batch, scan: int = 4):
    """``(run, run_scan)``: zero-argument functions that run one jitted players step of ``task`` on ``batch``, and
    ``scan`` steps in one ``lax.scan`` call (how ``funcdl train`` runs its steps), both blocking and compiled with
    the options a training step gets (``funcdl.core.xla.compiler_options``). They share the carried state."""
    opt, opts, _ = players_optimizer(task, config, 1)
    params, state = task.init(jax.random.PRNGKey(0))
    opt_state = opt.init(params)
    step = make_players_step(task, opts, config)
    carry = [params, opt_state, state, jax.random.PRNGKey(1)]
    compiled = jax.jit(step, compiler_options=fd.xla.compiler_options(step, params, opt_state, state, batch,
                                                                          carry[3]))

    def run():
        carry[3], key = jax.random.split(carry[3])
        carry[0], carry[1], carry[2], metrics = compiled(carry[0], carry[1], carry[2], batch, key)
        jax.block_until_ready(metrics)

    def scanned(params, opt_state, state, key):
        def body(c, k):
            p, o, s, m = step(*c, batch, k)
            return (p, o, s), m
        return jax.lax.scan(body, (params, opt_state, state), jax.random.split(key, scan))

    in_scan = jax.jit(scanned, compiler_options=fd.xla.compiler_options(scanned, params, opt_state, state,
                                                                            carry[3]))

    def run_scan():
        carry[3], key = jax.random.split(carry[3])
        (carry[0], carry[1], carry[2]), metrics = in_scan(carry[0], carry[1], carry[2], key)
        jax.block_until_ready(metrics)
    return run, run_scan


def torch_step(args, x, y):
    import torch
    from torch import nn

    torch.set_num_threads(os.cpu_count() or 1)
    w, h = args.width, 7
    head = [nn.ConvTranspose2d(2 * w, 1, 4, 2, 1)] if args.gen_head == "convT" else \
        [nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.BatchNorm2d(w), nn.ReLU(), nn.Conv2d(w, 1, 3, 1, 1)]
    gen = nn.Sequential(nn.Linear(args.latent, h * h * 4 * w), nn.Unflatten(1, (4 * w, h, h)), nn.BatchNorm2d(4 * w),
                        nn.ReLU(), nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1), nn.BatchNorm2d(2 * w), nn.ReLU(),
                        *head, nn.Tanh())
    layers = [nn.Conv2d(1, w, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(w, 2 * w, 4, 2, 1), nn.BatchNorm2d(2 * w),
              nn.LeakyReLU(0.2)]
    if args.disc_depth == 3:
        layers += [nn.Conv2d(2 * w, 4 * w, 3, 2, 1), nn.BatchNorm2d(4 * w), nn.LeakyReLU(0.2)]
    features = h * h * 2 * w if args.disc_depth == 2 else 4 * 4 * 4 * w
    disc = nn.Sequential(*layers, nn.Flatten(), nn.Linear(features, 1))
    ema = [p.detach().clone() for p in gen.parameters()]
    opt_g = torch.optim.Adam(gen.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), 2e-4, betas=(0.5, 0.999))
    real = torch.from_numpy(np.moveaxis(x, -1, 1).copy())
    bce = nn.functional.binary_cross_entropy_with_logits
    ones, zeros = torch.ones(args.batch), torch.zeros(args.batch)

    def run():
        opt_d.zero_grad()
        fake = gen(torch.randn(args.batch, args.latent)).detach()
        (bce(disc(real)[:, 0], ones) + bce(disc(fake)[:, 0], zeros)).backward()
        opt_d.step()
        opt_g.zero_grad()
        bce(disc(gen(torch.randn(args.batch, args.latent)))[:, 0], ones).backward()
        opt_g.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in gen.parameters()], 0.001)
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--latent", type=int, default=64)
    parser.add_argument("--disc-depth", type=int, choices=(2, 3), default=3)
    parser.add_argument("--gen-head", choices=("convT", "conv3"), default="conv3")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--grad", choices=("manual", "autodiff"), default="manual")
    parser.add_argument("--model", choices=("dcgan", "cdcgan"), default="dcgan")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, args.batch).astype(np.int32)
    one, scanned = funcdl_step(args, x, y)
    fns = {"funcdl": one, "funcdl (scan)": scanned}
    try:
        import torch  # noqa: F401
        if args.model == "dcgan":
            fns["torch"] = torch_step(args, x, y)
        else:
            print("torch: the conditional step is not written in torch here; timing funcdl only")
    except ImportError:
        print("torch is not installed: timing funcdl only")
    times = {name: [] for name in fns}
    for _ in range(args.rounds):
        for name, fn in fns.items():
            times[name].append(timeit(fn, args.reps))
    ms = {name: 1e3 * statistics.median(t) / (SCAN if "scan" in name else 1) for name, t in times.items()}
    print(f"{args.model} step (D then G, batch {args.batch}, width {args.width}, latent {args.latent}, "
          f"critic depth {args.disc_depth}, generator head {args.gen_head}, "
          f"{os.cpu_count()} CPUs, grad {args.grad})")
    for name, value in ms.items():
        print(f"  {name:14s} {value:8.2f} ms/step")
    if "torch" in ms:
        print(f"  funcdl / torch = {ms['funcdl'] / ms['torch']:.2f} (one jitted call per step), "
              f"{ms['funcdl (scan)'] / ms['torch']:.2f} ({SCAN} steps per lax.scan call, how funcdl train runs)")


if __name__ == "__main__":
    main()
