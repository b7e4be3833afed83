"""Convolution forward+backward: hand-derived rules vs JAX autodiff vs torch (when installed); and one ResNet
training step (funcdl's small ResNet vs the same network written in torch).

    python benchmarks/bench_conv.py [--batch 32] [--size 32] [--channels 32] [--reps 20] [--no-resnet] [--layers]
                                    [--rounds 3] [--ynn auto|off]

Each row times one call of a jitted function returning (dx, dw) of sum(conv(x, w) * g) for a fixed random g:
"hand" runs funcdl's hand-derived backward, "autodiff" differentiates the reference (``funcdl.autodiff``),
torch runs ``F.conv2d`` + ``backward`` on NCHW tensors. Times are medians over --rounds interleaved rounds
(hand, autodiff, torch in turn) of the median of --reps calls after a warm-up.
The ratio column is autodiff / hand (> 1: the hand rule is faster). Every function is compiled the way
``funcdl train`` compiles a step with convolutions (``funcdl.core.xla.compiler_options``: XLA's YNNPACK option on
CPU); ``--ynn off`` gives XLA's defaults instead.

The ResNet step is timed in --rounds interleaved rounds (hand, autodiff, hand 4 steps per ``lax.scan`` call --
how ``funcdl train`` runs it --, the same compiled with XLA's default options, torch), so a busy machine slows
all variants alike; then autodiff's step inside ``lax.scan`` once.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import funcdl as fd


def jit(fn, args, *example):
    """jax.jit with the compiler options a training step with this computation gets (funcdl.core.xla: YNNPACK for
    convolutions on CPU, unless --ynn off)."""
    return jax.jit(fn, compiler_options=fd.xla.compiler_options(fn, *example, ynn=False if args.ynn == "off" else None))


def interleaved(fns, reps, rounds):
    """{name: median over --rounds of the median of reps calls}; the rounds run the variants in turn, so a
    busy machine slows them alike."""
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(timeit(fn, reps))
    return {name: statistics.median(ts) for name, ts in times.items()}


def timeit(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def conv_rows(n, size, c):
    """(label, primitive, x shape, kernel shape, settings, torch settings)"""
    return [
        ("3x3 stride 1", fd.conv2d, (n, size, size, c), (3, 3, c, c), {"padding": 1}, {"padding": 1}),
        ("3x3 stride 2", fd.conv2d, (n, size, size, c), (3, 3, c, 2 * c), {"padding": 1, "stride": 2},
         {"padding": 1, "stride": 2}),
        ("depthwise 3x3", fd.conv2d, (n, size, size, 4 * c), (3, 3, 1, 4 * c), {"padding": 1, "groups": 4 * c},
         {"padding": 1, "groups": 4 * c}),
        ("dilated 3x3 (d=2)", fd.conv2d, (n, size, size, c), (3, 3, c, c), {"padding": 2, "dilation": 2},
         {"padding": 2, "dilation": 2}),
        ("1x1", fd.conv2d, (n, size, size, 4 * c), (1, 1, 4 * c, c), {}, {}),
        ("transposed 4x4 stride 2", fd.conv_transpose2d, (n, size // 2, size // 2, c), (4, 4, c, c),
         {"stride": 2, "padding": 1}, {"stride": 2, "padding": 1}),
    ]


def bench_convs(args):
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        torch = None
    print(f"conv2d forward+backward, batch {args.batch}, {args.size}x{args.size}, {args.channels} channels, "
          f"float32, median of {args.rounds} interleaved rounds of {args.reps} calls")
    print(f"{'shape':<26}{'hand ms':>10}{'autodiff ms':>13}{'torch ms':>10}{'autodiff/hand':>15}{'torch/hand':>12}")
    rng = np.random.default_rng(0)
    for label, prim, xs, ws, settings, tsettings in conv_rows(args.batch, args.size, args.channels):
        x = jnp.asarray(rng.normal(size=xs), jnp.float32)
        w = jnp.asarray(rng.normal(size=ws) * 0.1, jnp.float32)
        y = prim(x, w, **settings)
        g = jnp.asarray(rng.normal(size=y.shape), jnp.float32)

        def loss(x, w, g, prim=prim, settings=settings):
            return jnp.vdot(prim(x, w, **settings), g)

        hand = jit(jax.grad(loss, argnums=(0, 1)), args, x, w, g)
        auto = jit(jax.grad(fd.autodiff(loss), argnums=(0, 1)), args, x, w, g)
        dh, da = hand(x, w, g), auto(x, w, g)
        err = max(float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-30)) for a, b in zip(dh, da, strict=True))
        assert err < 1e-4, (label, err)
        fns = {"hand": lambda hand=hand, x=x, w=w, g=g: jax.block_until_ready(hand(x, w, g)),
               "auto": lambda auto=auto, x=x, w=w, g=g: jax.block_until_ready(auto(x, w, g))}
        if torch is not None:
            tx = torch.tensor(np.moveaxis(np.asarray(x), -1, 1).copy(), requires_grad=True)
            if prim is fd.conv2d:
                tw = torch.tensor(np.transpose(np.asarray(w), (3, 2, 0, 1)).copy(), requires_grad=True)
                tfn = lambda tx=tx, tw=tw, s=tsettings: F.conv2d(tx, tw, **s)
            else:
                tw = torch.tensor(np.transpose(np.asarray(w), (2, 3, 0, 1)).copy(), requires_grad=True)
                tfn = lambda tx=tx, tw=tw, s=tsettings: F.conv_transpose2d(tx, tw, **s)
            tg = torch.tensor(np.moveaxis(np.asarray(g), -1, 1).copy())

            def torch_step(tx=tx, tw=tw, tg=tg, tfn=tfn):
                tx.grad = None
                tw.grad = None
                tfn().backward(tg)

            fns["torch"] = torch_step
        t = interleaved(fns, args.reps, args.rounds)
        th, ta, tt = t["hand"], t["auto"], t.get("torch", float("nan"))
        print(f"{label:<26}{th * 1e3:>10.2f}{ta * 1e3:>13.2f}{tt * 1e3:>10.2f}{ta / th:>15.2f}{tt / th:>12.2f}")


# -- the ResNet's layers one by one --------------------------------------------------------------------------


RESNET_LAYERS = [   # (label, input (H, C_in), C_out, stride, kernel)
    ("stem 1->16", (28, 1), 16, 1, 3), ("16->16", (28, 16), 16, 1, 3), ("16->32 /2", (28, 16), 32, 2, 3),
    ("32->32", (14, 32), 32, 1, 3), ("32->64 /2", (14, 32), 64, 2, 3), ("64->64", (7, 64), 64, 1, 3),
    ("1x1 16->32 /2", (28, 16), 32, 2, 1),
]


def bench_layers(args):
    """Each convolution of the small ResNet (batch --resnet-batch) forward+backward, hand vs autodiff vs torch, and
    batch norm + ReLU at the three widths: where the ResNet step's time goes."""
    try:
        import torch
    except ImportError:
        torch = None
    n = args.resnet_batch
    rng = np.random.default_rng(0)
    print(f"\nResNet layers, batch {n}, float32, forward+backward (ms; GFLOP/s of the hand rule, 3 x the forward's "
          "FLOPs)")
    print(f"{'layer':<16}{'hand':>8}{'autodiff':>10}{'torch':>8}{'GFLOP/s':>9}")
    for label, (size, cin), cout, stride, k in RESNET_LAYERS:
        pad = 1 if k == 3 else 0
        x = jnp.asarray(rng.normal(size=(n, size, size, cin)), jnp.float32)
        w = jnp.asarray(rng.normal(size=(k, k, cin, cout)) * 0.1, jnp.float32)
        y = fd.conv2d(x, w, stride=stride, padding=pad)
        g = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
        argnums = (0, 1) if cin > 1 else (1,)      # the stem's input is data: no input gradient

        def loss(x, w, g, stride=stride, pad=pad):
            return jnp.vdot(fd.conv2d(x, w, stride=stride, padding=pad), g)

        hand = jit(jax.grad(loss, argnums=argnums), args, x, w, g)
        auto = jit(jax.grad(fd.autodiff(loss), argnums=argnums), args, x, w, g)
        fns = {"hand": lambda hand=hand, x=x, w=w, g=g: jax.block_until_ready(hand(x, w, g)),
               "auto": lambda auto=auto, x=x, w=w, g=g: jax.block_until_ready(auto(x, w, g))}
        if torch is not None:
            tx = torch.tensor(np.moveaxis(np.asarray(x), -1, 1).copy(), requires_grad=cin > 1)
            tw = torch.tensor(np.transpose(np.asarray(w), (3, 2, 0, 1)).copy(), requires_grad=True)
            tg = torch.tensor(np.moveaxis(np.asarray(g), -1, 1).copy())

            def torch_step(tx=tx, tw=tw, tg=tg, stride=stride, pad=pad):
                tx.grad = tw.grad = None
                torch.nn.functional.conv2d(tx, tw, stride=stride, padding=pad).backward(tg)

            fns["torch"] = torch_step
        t = interleaved(fns, args.reps, args.rounds)
        th, ta, tt = t["hand"], t["auto"], t.get("torch", float("nan"))
        flops = 2 * y.size * k * k * cin * (1 + len(argnums))
        print(f"{label:<16}{th * 1e3:>8.2f}{ta * 1e3:>10.2f}{tt * 1e3:>8.2f}{flops / th / 1e9:>9.0f}")
    for size, c in [(28, 16), (14, 32), (7, 64)]:
        x = jnp.asarray(rng.normal(size=(n, size, size, c)), jnp.float32)
        g = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
        params, state = fd.batch_norm_init(c)

        def loss(p, x, g, state=state):
            y, _ = fd.batch_norm_apply(p, state, x, train=True)
            return jnp.vdot(fd.relu(y), g)

        hand = jit(jax.grad(loss, argnums=(0, 1)), args, params, x, g)
        auto = jit(jax.grad(fd.autodiff(loss), argnums=(0, 1)), args, params, x, g)
        fns = {"hand": lambda hand=hand, p=params, x=x, g=g: jax.block_until_ready(hand(p, x, g)),
               "auto": lambda auto=auto, p=params, x=x, g=g: jax.block_until_ready(auto(p, x, g))}
        if torch is not None:
            bn = torch.nn.BatchNorm2d(c)
            tx = torch.tensor(np.moveaxis(np.asarray(x), -1, 1).copy(), requires_grad=True)
            tg = torch.tensor(np.moveaxis(np.asarray(g), -1, 1).copy())

            def torch_bn(tx=tx, tg=tg, bn=bn):
                tx.grad = None
                bn.zero_grad()
                torch.relu(bn(tx)).backward(tg)

            fns["torch"] = torch_bn
        t = interleaved(fns, args.reps, args.rounds)
        th, ta, tt = t["hand"], t["auto"], t.get("torch", float("nan"))
        label = f"bn+relu {size}x{size}x{c}"
        print(f"{label:<16}{th * 1e3:>8.2f}{ta * 1e3:>10.2f}{tt * 1e3:>8.2f}")


# -- ResNet training step --------------------------------------------------------------------------------------


def torch_resnet(widths=(16, 32, 64)):
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            h = torch.relu(self.b1(self.c1(x)))
            h = self.b2(self.c2(h))
            return torch.relu(h + (x if self.down is None else self.down(x)))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                      nn.ReLU())
            blocks, cin = [], widths[0]
            for i, w in enumerate(widths):
                blocks.append(Block(cin, w, 1 if i == 0 else 2))
                cin = w
            self.blocks = nn.Sequential(*blocks)
            self.head = nn.Linear(cin, 10)

        def forward(self, x):
            return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))

    return Net()


def bench_resnet(args):
    from funcdl.models import get_model

    from funcdl import optim
    from funcdl.training.task import DataInfo

    task = get_model("resnet").build(DataInfo("mnist", (28, 28, 1), 10))
    params, state = task.init(jax.random.PRNGKey(0))
    opt = optim.adam(learning_rate=1e-3)
    opt_state = opt.init(params)
    rng = np.random.default_rng(0)
    batch = {"x": jnp.asarray(rng.normal(size=(args.resnet_batch, 28, 28, 1)), jnp.float32),
             "y": jnp.asarray(rng.integers(0, 10, args.resnet_batch), jnp.int32)}

    def make_step(loss_fn):
        def step(params, state, opt_state, batch):
            (value, (state, _)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, batch, None, True)
            updates, opt_state = opt.update(grads, opt_state, params)
            return optim.apply_updates(params, updates), state, opt_state, value
        return step

    print(f"\nResNet (small: widths 16/32/64, one basic block per stage) training step, batch {args.resnet_batch}, "
          f"28x28x1, Adam; {args.rounds} interleaved rounds of {args.reps} steps, median ms/step [range of the rounds]")
    hand_step, auto_step = make_step(task.loss), make_step(fd.autodiff(task.loss))
    example = (params, state, opt_state, batch)

    def scan_of(step):                                # 4 steps per call inside lax.scan
        def scanned(params, state, opt_state, batch):
            def body(carry, _):
                p, s, o, v = step(*carry, batch)
                return (p, s, o), v
            return jax.lax.scan(body, (params, state, opt_state), None, length=4)
        return scanned

    variants = {"hand": (jit(hand_step, args, *example), 1), "autodiff": (jit(auto_step, args, *example), 1),
                "hand in lax.scan": (jit(scan_of(hand_step), args, *example), 4)}     # how funcdl train runs it
    if args.ynn == "auto" and fd.xla.ynn_available():
        variants["  same, XLA default"] = (jax.jit(scan_of(hand_step)), 4)
    runs = {}
    for name, (step, per_call) in variants.items():
        def run(step=step):
            jax.block_until_ready(step(*example)[-1])
        runs[name] = (run, per_call)
    try:
        import torch

        net = torch_resnet()
        topt = torch.optim.Adam(net.parameters(), lr=1e-3)
        tx = torch.tensor(np.moveaxis(np.asarray(batch["x"]), -1, 1).copy())
        ty = torch.tensor(np.asarray(batch["y"]), dtype=torch.long)

        def tstep():
            topt.zero_grad()
            torch.nn.functional.cross_entropy(net(tx), ty).backward()
            topt.step()

        runs["torch"] = (tstep, 1)
    except ImportError:
        pass
    rounds = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, (run, per_call) in runs.items():
            rounds[name].append(timeit(run, max(1, args.reps // per_call)) / per_call)
    med = {name: statistics.median(ts) for name, ts in rounds.items()}
    for name, ts in rounds.items():
        print(f"  {name:<19}{med[name] * 1e3:>8.1f} ms/step  [{min(ts) * 1e3:.1f}..{max(ts) * 1e3:.1f}]   "
              f"({med[name] / med['hand']:.2f}x hand)")
    if "torch" in med:
        print(f"  time / torch's: hand {med['hand'] / med['torch']:.2f}, hand in lax.scan (as funcdl train runs "
              f"the step) {med['hand in lax.scan'] / med['torch']:.2f}")
    # autodiff's kernel gradient is a non-canonical convolution, which XLA's CPU backend runs through a generic
    # loop inside lax.scan (funcdl.core.xla.scan_is_slow): one call of 4 steps, timed once (it takes seconds)
    auto_scan = jit(scan_of(auto_step), args, *example)
    jax.block_until_ready(auto_scan(*example)[-1])
    t = time.perf_counter()
    jax.block_until_ready(auto_scan(*example)[-1])
    print(f"  autodiff in lax.scan (one call of 4 steps): {(time.perf_counter() - t) / 4 * 1e3:.0f} ms/step")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--resnet-batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (median reported)")
    p.add_argument("--no-resnet", action="store_true")
    p.add_argument("--layers", action="store_true", help="also time each ResNet layer (conv, batch norm) alone")
    p.add_argument("--ynn", choices=["auto", "off"], default="auto",
                   help="auto: compile as training does (YNNPACK for convolutions on CPU, funcdl.core.xla); "
                        "off: XLA's default CPU compilation")
    args = p.parse_args()
    ynn = args.ynn == "auto" and fd.xla.ynn_available()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; YNNPACK option for convolutions: "
          f"{'on' if ynn else 'off'}")
    bench_convs(args)
    if args.layers:
        bench_layers(args)
    if not args.no_resnet:
        bench_resnet(args)


if __name__ == "__main__":
    main()
