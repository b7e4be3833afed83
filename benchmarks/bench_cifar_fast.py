"""The fast CIFAR-10 recipe's training step (models/cifar_fast.py) against the same network and update in PyTorch,
in one run.

    python benchmarks/bench_cifar_fast.py [--batch 128] [--widths 64,256,256] [--reps 5] [--rounds 3]

One step on a fixed random batch of 32x32x3 images: forward, label-smoothed cross-entropy (0.2), backward, SGD
with Nesterov momentum 0.9 and weight decay 5e-4, and the EMA of the weights (decay 0.99). funcdl runs the step
``funcdl train cifar_fast`` compiles (``funcdl.training.step.make_players_step``, the one-player optimizer with
``optim.ema_params``, XLA options of ``funcdl.core.xla.compiler_options``), after the whitening filters were set
by a first step; torch runs the same layers (a frozen 2x2 whitening convolution with a trained bias, GELU, three
residual groups, global max pool, a bias-free linear layer scaled by 1/9) in eager mode,
with ``torch.optim.SGD`` and an in-place EMA. Augmentation is left out of both (it is data-side work that the two
would do differently). Times are medians over --rounds interleaved rounds (funcdl, torch in turn) of the median
of --reps steps after a warm-up; the ratio is torch / funcdl (> 1: funcdl is faster).
"""

from __future__ import annotations

import argparse
import os
import statistics

import jax
import jax.numpy as jnp
import numpy as np
from bench_conv import timeit  # the one median-of-reps timer the benchmarks share (run from benchmarks/)
from funcdl.models import cifar_fast

import funcdl as fd
from funcdl.training.config import TrainConfig
from funcdl.training.step import make_players_step, players_optimizer
from funcdl.training.task import DataInfo

LR, MOMENTUM, WD, EMA, SMOOTH = 0.05, 0.9, 5e-4, 0.99, 0.2


def funcdl_step(widths, x, y):
    """A callable running one jitted training step in place, and the (params, state) after the first step."""
    task = cifar_fast.build(DataInfo("cifar10", (32, 32, 3), num_classes=10), widths=widths, ema=EMA)
    config = TrainConfig(optimizer="sgd", lr=LR, weight_decay=WD,
                         optimizer_options={"momentum": MOMENTUM, "nesterov": True})
    opt, opts, _ = players_optimizer(task, config, 1000)
    step = make_players_step(task, opts, config)
    params, state = task.init(jax.random.PRNGKey(0))
    opt_state = opt.init(params)
    batch = {"x": x, "y": y}
    key = jax.random.PRNGKey(1)
    step = jax.jit(step, donate_argnums=(0, 1, 2),
                   compiler_options=fd.xla.compiler_options(step, params, opt_state, state, batch, key))
    carry = list(step(params, opt_state, state, batch, key)[:3])          # sets the whitening filters

    def run():
        carry[:] = step(*carry, batch, key)[:3]
        jax.block_until_ready(carry[0])

    return run, carry


def torch_step(widths, x, y, whiten_w):
    import torch
    from torch import nn

    class Group(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.Conv2d(cout, cout, 3, padding=1,
                                                                                               bias=False)
            self.bn1, self.bn2 = nn.BatchNorm2d(cout), nn.BatchNorm2d(cout)

        def forward(self, h):
            h = nn.functional.gelu(self.bn1(nn.functional.max_pool2d(self.conv1(h), 2)))
            return h + nn.functional.gelu(self.bn2(self.conv2(h)))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.whiten = nn.Conv2d(3, whiten_w.shape[-1], 2)
            self.whiten.weight.data = torch.tensor(np.transpose(whiten_w, (3, 2, 0, 1)).copy())
            self.whiten.weight.requires_grad_(False)
            cins = (whiten_w.shape[-1], *widths[:-1])
            self.groups = nn.Sequential(*(Group(a, b) for a, b in zip(cins, widths, strict=True)))
            self.head = nn.Linear(widths[-1], 10, bias=False)

        def forward(self, h):
            h = self.groups(nn.functional.gelu(self.whiten(h)))
            return self.head(torch.amax(h, dim=(2, 3))) / 9

    net = Net()
    trainable = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.SGD(trainable, lr=LR, momentum=MOMENTUM, nesterov=True, weight_decay=WD)
    ema = [p.detach().clone() for p in trainable]
    tx = torch.tensor(np.moveaxis(np.asarray(x), -1, 1).copy())
    ty = torch.tensor(np.asarray(y), dtype=torch.long)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=SMOOTH)

    def run():
        opt.zero_grad(set_to_none=True)
        loss_fn(net(tx), ty).backward()
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, trainable, 1 - EMA)

    return run, net


def copy_into_torch(net, params):
    """funcdl's weights (HWIO kernels, (in, out) dense) into the torch network (OIHW, (out, in))."""
    import torch

    t = lambda a, axes=None: torch.tensor(np.transpose(np.asarray(a), axes).copy())  # noqa: E731
    p = params["net"]
    with torch.no_grad():
        net.whiten.bias.copy_(t(p["whiten_b"]))
        for group, g in zip(net.groups, p["groups"], strict=True):
            group.conv1.weight.copy_(t(g["conv1"]["w"], (3, 2, 0, 1)))
            group.conv2.weight.copy_(t(g["conv2"]["w"], (3, 2, 0, 1)))
            for bn, q in ((group.bn1, g["bn1"]), (group.bn2, g["bn2"])):
                bn.weight.copy_(t(q["scale"]))
                bn.bias.copy_(t(q["bias"]))
        net.head.weight.copy_(t(p["head"]["w"], (1, 0)))


def same_loss(net, params, state, widths, x, y) -> float:
    """|funcdl loss - torch loss| on the batch, training mode, the same weights: the two run the same network."""
    import torch

    copy_into_torch(net, params)
    config = cifar_fast.Config(widths=widths, ema=EMA)
    mine = float(cifar_fast.loss(params, state, {"x": x, "y": y}, config, train=True)[0])
    net.train()
    with torch.no_grad():
        theirs = float(torch.nn.CrossEntropyLoss(label_smoothing=SMOOTH)(
            net(torch.tensor(np.moveaxis(np.asarray(x), -1, 1).copy())), torch.tensor(np.asarray(y), dtype=torch.long)))
    return abs(mine - theirs)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--widths", default="64,256,256")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    import torch

    widths = tuple(int(w) for w in args.widths.split(","))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(args.batch, 32, 32, 3)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, args.batch), jnp.int32)
    f_run, carry = funcdl_step(widths, x, y)
    whiten_w = np.asarray(carry[2]["whiten"]["w"])
    t_run, net = torch_step(widths, x, y, whiten_w)
    n_torch = sum(p.numel() for p in net.parameters() if p.requires_grad)
    n_funcdl = sum(a.size for a in jax.tree.leaves(carry[0]))
    assert n_torch == n_funcdl, (n_torch, n_funcdl)
    gap = same_loss(net, jax.tree.map(np.asarray, carry[0]), carry[2], widths, x, y)
    assert gap < 1e-4, f"funcdl and torch losses differ by {gap} with the same weights"
    times = {"funcdl": [], "torch": []}
    for _ in range(args.rounds):
        times["funcdl"].append(timeit(f_run, args.reps))
        times["torch"].append(timeit(t_run, args.reps))
    tf, tt = (statistics.median(times[k]) for k in ("funcdl", "torch"))
    print(f"cifar_fast training step, batch {args.batch}, widths {widths}, float32, CPU "
          f"({os.cpu_count()} cores, torch threads {torch.get_num_threads()}); median of {args.rounds} interleaved "
          f"rounds of {args.reps} steps; {n_funcdl} trained parameters in both, the same loss to {gap:.1e} "
          "with funcdl's weights copied in")
    print(f"{'funcdl ms':>10}{'torch ms':>10}{'torch/funcdl':>14}")
    print(f"{tf * 1e3:>10.1f}{tt * 1e3:>10.1f}{tt / tf:>14.2f}")
    print("load average (1, 5, 15 min):", " ".join(f"{v:.2f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()
