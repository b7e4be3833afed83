"""One DDPM training step of the UNet (models/unet.py; the simple loss, Adam, the EMA) in funcdl (jitted, as
``funcdl train ddpm`` runs it) and the same network and step in PyTorch on the CPU, with funcdl's weights copied
into the torch network and the two losses compared on the same x_t, t and noise first.

    python benchmarks/bench_unet.py [--batch 64] [--channels 16,32,64] [--conditional] [--reps 5] [--rounds 3]

PyTorch: nn.Conv2d (at stride 2 after ZeroPad2d((0, 1, 0, 1)): XLA's SAME padding) / GroupNorm / SiLU / Linear /
F.scaled_dot_product_attention / F.interpolate in the same order, Adam(1e-3) and an EMA (torch._foreach_lerp_),
``torch.set_num_threads`` = the CPU count. funcdl is timed as one jitted call per step and as 4 steps per
``lax.scan`` call (how ``funcdl train`` runs). Times are medians over --rounds interleaved rounds of the median of
--reps calls after warm-up; torch is skipped with a line when it is not installed.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics

import jax
import jax.numpy as jnp
import numpy as np
from bench_conv import timeit  # noqa: E402  (median of reps after a warm-up; this folder is on sys.path when run)
from bench_dcgan import players_runners  # noqa: E402  (one players step, jitted and in lax.scan)
from funcdl.models import get_model

from funcdl import diffusion as dif
from funcdl.training.config import TrainConfig
from funcdl.training.task import DataInfo

SCAN = 4           # steps per lax.scan call in the "funcdl (scan)" variant
INFO = DataInfo("mnist", (28, 28, 1), num_classes=10, extras={"normalization": {"mean": 0.1307, "std": 0.3081}})


def build(args):
    model = "cddpm" if args.conditional else "ddpm"
    return get_model(model).build(INFO, channels=args.channels, judge=False)


def funcdl_step(task, args, x, y):
    config = TrainConfig(batch_size=args.batch, lr=1e-3, steps=1)
    return players_runners(task, config, {"x": jnp.asarray(x), "y": jnp.asarray(y)}, scan=SCAN)


def torch_unet(p, config):
    """A torch module computing models.unet.unet with the funcdl parameters ``p`` copied in."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    def t(a, conv=False):
        a = np.asarray(a)
        a = np.transpose(a, (3, 2, 0, 1)) if conv else (a.T if a.ndim == 2 else a)
        return nn.Parameter(torch.from_numpy(np.ascontiguousarray(a)))

    def conv(q, stride=1):
        """XLA's SAME padding: k // 2 each side at stride 1; at stride 2 on an even size (3x3 kernel) nothing
        before and one after, which torch's symmetric padding cannot say: an explicit ZeroPad2d."""
        k = q["w"].shape[0]
        m = nn.Conv2d(q["w"].shape[2], q["w"].shape[3], k, stride, padding=k // 2 if stride == 1 else 0)
        m.weight, m.bias = t(q["w"], True), t(q["b"])
        return m if stride == 1 else nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), m)

    def lin(q):
        m = nn.Linear(*q["w"].shape)
        m.weight, m.bias = t(q["w"]), t(q["b"])
        return m

    def gn(q):
        m = nn.GroupNorm(config.groups, q["scale"].shape[0])
        m.weight, m.bias = t(q["scale"]), t(q["bias"])
        return m

    class Res(nn.Module):
        def __init__(self, q):
            super().__init__()
            self.n1, self.c1, self.film, self.n2, self.c2 = gn(q["norm1"]), conv(q["conv1"]), lin(q["film"]), \
                gn(q["norm2"]), conv(q["conv2"])
            self.skip = conv(q["skip"]) if "skip" in q else None

        def forward(self, x, emb):
            h = self.c1(F.silu(self.n1(x)))
            g, b = self.film(emb)[:, :, None, None].chunk(2, dim=1)
            h = self.c2(F.silu(self.n2(h) * (1 + g) + b))
            return h + (self.skip(x) if self.skip is not None else x)

    class Attn(nn.Module):
        def __init__(self, q):
            super().__init__()
            self.n, self.qkv, self.out = gn(q["norm"]), lin(q["qkv"]), lin(q["out"])

        def forward(self, x):
            n, c, h, w = x.shape
            s = self.n(x).flatten(2).transpose(1, 2)
            qq, kk, vv = (z.reshape(n, h * w, config.heads, -1).transpose(1, 2) for z in self.qkv(s).chunk(3, -1))
            o = F.scaled_dot_product_attention(qq, kk, vv).transpose(1, 2).reshape(n, h * w, c)
            return x + self.out(o).transpose(1, 2).reshape(n, c, h, w)

    def blocks(level):
        return nn.ModuleList(nn.ModuleList([Res(b["res"])] + ([Attn(b["attn"])] if "attn" in b else []))
                             for b in level["blocks"])

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.t1, self.t2, self.stem = lin(p["time1"]), lin(p["time2"]), conv(p["stem"])
            self.classes = nn.Parameter(torch.from_numpy(np.array(p["classes"]))) if "classes" in p else None
            self.down = nn.ModuleList(blocks(lv) for lv in p["down"])
            self.downs = nn.ModuleList(conv(lv["down"], 2) for lv in p["down"] if "down" in lv)
            self.mid = nn.ModuleList([Res(p["mid"]["res1"]), Attn(p["mid"]["attn"]), Res(p["mid"]["res2"])])
            self.up = nn.ModuleList(blocks(lv) for lv in p["up"])
            self.ups = nn.ModuleList(conv(lv["upconv"]) for lv in p["up"] if "upconv" in lv)
            self.on, self.out = gn(p["out_norm"]), conv(p["out"])
            half = config.channels[0] // 2
            self.register_buffer("freqs", torch.exp(-math.log(10000.0) * torch.arange(half) / half))

        def forward(self, x, steps, labels):
            a = steps.float()[:, None] * self.freqs[None]
            emb = self.t2(F.silu(self.t1(torch.cat([torch.sin(a), torch.cos(a)], 1))))
            if self.classes is not None:
                emb = emb + self.classes[labels]
            emb = F.silu(emb)
            h = self.stem(x)
            skips = [h]
            for i, level in enumerate(self.down):
                for mods in level:
                    h = mods[0](h, emb)
                    h = mods[1](h) if len(mods) > 1 else h
                    skips.append(h)
                if i < len(self.downs):
                    h = self.downs[i](h)
                    skips.append(h)
            h = self.mid[2](self.mid[1](self.mid[0](h, emb)), emb)
            for i, level in enumerate(self.up):
                for mods in level:
                    h = mods[0](torch.cat([h, skips.pop()], 1), emb)
                    h = mods[1](h) if len(mods) > 1 else h
                if i < len(self.ups):
                    h = self.ups[i](F.interpolate(h, scale_factor=2, mode="nearest"))
            return self.out(F.silu(self.on(h)))

    return UNet()


def torch_step(task, args, x, y):
    """The torch step, and the largest difference between the torch and funcdl losses on fixed x_t, t, noise."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    config = task.extras["config"]
    params, _ = task.init(jax.random.PRNGKey(0))
    params = jax.tree.map(lambda a: a + 0.02 * jax.random.normal(jax.random.PRNGKey(5), a.shape), params)
    net = torch_unet(params["unet"], config.unet)
    sched = dif.make_schedule(config.schedule, config.timesteps)
    abar = torch.from_numpy(np.asarray(sched.alpha_bars))
    x0 = torch.from_numpy(np.moveaxis(2 * (x * config.std + config.mean) - 1, -1, 1).copy())
    labels = torch.from_numpy(y.astype(np.int64)) if config.conditional else None
    # agreement: funcdl's network and torch's on the same inputs
    steps = np.arange(args.batch) * 7 % config.timesteps
    from funcdl.models.unet import unet
    ours = unet(params["unet"], jnp.asarray(np.moveaxis(x0.numpy(), 1, -1)), jnp.asarray(steps),
                jnp.asarray(y) if config.conditional else None, config.unet)
    with torch.no_grad():
        theirs = net(x0, torch.from_numpy(steps), labels).numpy()
    diff = float(np.max(np.abs(np.moveaxis(np.asarray(ours), -1, 1) - theirs)))
    ema = [q.detach().clone() for q in net.parameters()]
    opt = torch.optim.Adam(net.parameters(), 1e-3)

    def run():
        opt.zero_grad()
        t = torch.randint(0, config.timesteps, (args.batch,))
        noise = torch.randn_like(x0)
        a = abar[t][:, None, None, None]
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        lab = labels
        if lab is not None:
            lab = torch.where(torch.rand(args.batch) < config.p_uncond, config.num_classes, lab)
        torch.mean((net(xt, t, lab) - noise) ** 2).backward()
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, [q.detach() for q in net.parameters()], 1 - config.ema)
    return run, diff, sum(q.numel() for q in net.parameters())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--channels", type=lambda s: tuple(int(c) for c in s.split(",")), default=(16, 32, 64))
    parser.add_argument("--conditional", action="store_true")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, args.batch).astype(np.int32)
    task = build(args)
    n_params = sum(a.size for a in jax.tree.leaves(task.init(jax.random.PRNGKey(0))[0]))
    one, scanned = funcdl_step(task, args, x, y)
    fns = {"funcdl": one, "funcdl (scan)": scanned}
    try:
        fns["torch"], diff, torch_params = torch_step(task, args, x, y)
        print(f"same network: {n_params:,} parameters in funcdl, {torch_params:,} in torch; outputs agree to "
              f"{diff:.2e} (max abs) with funcdl's weights copied")
    except ImportError:
        print("torch is not installed: timing funcdl only")
    times = {name: [] for name in fns}
    for _ in range(args.rounds):
        for name, fn in fns.items():
            times[name].append(timeit(fn, args.reps))
    ms = {name: 1e3 * statistics.median(t) / (SCAN if "scan" in name else 1) for name, t in times.items()}
    print(f"UNet DDPM step ({'conditional, ' if args.conditional else ''}batch {args.batch}, channels "
          f"{args.channels}, {os.cpu_count()} CPUs)")
    for name, value in ms.items():
        print(f"  {name:14s} {value:8.2f} ms/step")
    if "torch" in ms:
        print(f"  torch / funcdl = {ms['torch'] / ms['funcdl']:.2f} (one jitted call per step), "
              f"{ms['torch'] / ms['funcdl (scan)']:.2f} ({SCAN} steps per lax.scan call, how funcdl train runs)")


if __name__ == "__main__":
    main()
