"""Benchmark: one jitted MLP training step, hand-derived rules vs pure autodiff, against the matmul roofline.

    python benchmarks/bench_mlp.py            # 784-1024-1024-10, batch 128, Adam, float32
    python benchmarks/bench_mlp.py --json     # the same figures as one JSON object

What is timed: ``params, opt_state = step(params, opt_state, x, y)`` where ``step`` is ``jax.jit`` of
(loss -> gradient -> ``optim.adam`` update -> apply), with the parameter and optimizer buffers donated.
"hand" differentiates ``models.mlp.loss`` with ``jax.grad`` (every primitive runs its hand-derived
backward); "autodiff" differentiates ``funcdl.autodiff(models.mlp.loss)`` (``jax.grad`` through the plain
jax.numpy references). Both are compiled and run in the same process; their repeats are interleaved so
that a change of machine load hits both alike.

FLOP count (matmuls only; elementwise work, softmax and Adam are left out, which only flatters nobody):
per dense layer with N rows, forward y = xW costs 2 N in out, backward dW = x^T dy another 2 N in out and
dx = dy W^T another 2 N in out, except for the first layer, whose input gradient nobody needs (XLA drops
it: the script counts the dot operations in the compiled step to show it). So

    FLOP/step = sum_l 6 N in_l out_l - 2 N in_1 out_1  = 1.224 GFLOP for 784-1024-1024-10 at N = 128.

The roofline is a jitted 2048 x 2048 float32 matmul (2 * 2048^3 FLOP) timed the same way in the same run
(its repeats interleaved with the steps' repeats).
Timing: warm-up calls first (compilation excluded), ``block_until_ready`` at the end of each repeat of
``--steps`` steps, the median over ``--repeats`` repeats. On a shared, busy machine the medians scatter; the
script also prints each side's best repeat against the best matmul repeat, the least disturbed ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
from funcdl.models import mlp

import funcdl as fd
from funcdl import optim


def flops_per_step(sizes, batch) -> int:
    layers = list(zip(sizes[:-1], sizes[1:], strict=True))
    return sum(6 * batch * i * o for i, o in layers) - 2 * batch * layers[0][0] * layers[0][1]


def make_step(loss, config, opt):
    def step(params, opt_state, x, y):
        grads, _ = jax.grad(loss, has_aux=True)(params, {}, {"x": x, "y": y}, config)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optim.apply_updates(params, updates), opt_state

    return jax.jit(step, donate_argnums=(0, 1))


def compiled_profile(jitted, *args) -> dict:
    """What XLA compiled: the matrix products in the optimised HLO (fusions included) and XLA's own cost
    estimate (FLOP and bytes accessed) — machine-load-independent evidence that two steps do the same work."""
    compiled = jitted.lower(*args).compile()
    text = compiled.as_text()
    cost = compiled.cost_analysis()
    cost = (cost[0] if isinstance(cost, list | tuple) else cost) or {}
    return {"dots": sum(line.count(" dot(") for line in text.splitlines()),
            "xla_flops": float(cost.get("flops", float("nan"))),
            "xla_bytes": float(cost.get("bytes accessed", float("nan")))}


class Runner:
    """Holds one step function and its (donated) state; ``run(k)`` times k steps."""

    def __init__(self, name, step, params, opt_state, x, y):
        self.name, self.step, self.x, self.y = name, step, x, y
        self.state = (params, opt_state)
        self.times: list[float] = []

    def run(self, k: int) -> float:
        params, opt_state = self.state
        start = time.perf_counter()
        for _ in range(k):
            params, opt_state = self.step(params, opt_state, self.x, self.y)
        jax.block_until_ready(params)
        elapsed = time.perf_counter() - start
        self.state = (params, opt_state)
        return elapsed


class MatmulRunner:
    """The roofline: a jitted n x n float32 matmul; ``run(k)`` times k products."""

    def __init__(self, n: int, key):
        ka, kb = jax.random.split(key)
        self.a = jax.random.normal(ka, (n, n), jnp.float32)
        self.b = jax.random.normal(kb, (n, n), jnp.float32)
        self.f = jax.jit(lambda a, b: a @ b)
        self.flops = 2 * n**3
        self.times: list[float] = []

    def run(self, k: int) -> float:
        start = time.perf_counter()
        for _ in range(k):
            out = self.f(self.a, self.b)
        out.block_until_ready()
        return time.perf_counter() - start


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[784, 1024, 1024, 10])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=20, help="steps per timed repeat")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--matmul", type=int, default=2048, help="size of the square float32 matmul roofline")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = p.parse_args(argv)

    key = jax.random.PRNGKey(0)
    config = mlp.Config(sizes=tuple(args.sizes))
    x = jax.random.normal(jax.random.fold_in(key, 1), (args.batch, args.sizes[0]), jnp.float32)
    y = jax.random.randint(jax.random.fold_in(key, 2), (args.batch,), 0, args.sizes[-1])
    opt = optim.adam(1e-3)

    runners, profiles = [], {}
    for name, loss in (("hand", mlp.loss), ("autodiff", fd.autodiff(mlp.loss))):
        params, _ = mlp.init(jax.random.fold_in(key, 3), config)
        # distinct buffers for every leaf (an optimizer may start two moments from one zeros array, and a
        # buffer cannot be donated twice)
        opt_state = jax.tree.map(lambda a: jnp.array(a, copy=True), opt.init(params))
        step = make_step(loss, config, opt)
        profiles[name] = compiled_profile(step, params, opt_state, x, y)
        r = Runner(name, step, params, opt_state, x, y)
        r.run(3)                                     # compile and warm up
        runners.append(r)
    mm = MatmulRunner(args.matmul, jax.random.fold_in(key, 4))
    mm.run(3)
    mm_calls = max(3, args.steps // 2)
    for _ in range(args.repeats):                    # interleave hand, autodiff and the matmul
        for r in runners:
            r.times.append(r.run(args.steps) / args.steps)
        mm.times.append(mm.run(mm_calls) / mm_calls)
    mm_gflops = mm.flops / statistics.median(mm.times) / 1e9
    mm_best = mm.flops / min(mm.times) / 1e9
    flops = flops_per_step(args.sizes, args.batch)

    result = {
        "sizes": args.sizes, "batch": args.batch, "dtype": "float32", "optimizer": "adam",
        "flop_per_step": flops, "matmul_size": args.matmul, "matmul_gflops": mm_gflops, "matmul_gflops_best": mm_best,
        "device": str(jax.devices()[0]), "cpu_count": os.cpu_count(), "jax": jax.__version__,
        "machine": platform.machine(), "load_average_1min": os.getloadavg()[0],
        "steps_per_repeat": args.steps, "repeats": args.repeats,
    }
    for r in runners:
        t = statistics.median(r.times)
        result[r.name] = {
            "step_ms": 1e3 * t, "steps_per_s": 1 / t, "gflops": flops / t / 1e9,
            "fraction_of_matmul": flops / t / 1e9 / mm_gflops, "dots_in_compiled_step": profiles[r.name]["dots"],
            "xla_cost_flops": profiles[r.name]["xla_flops"], "xla_cost_bytes": profiles[r.name]["xla_bytes"],
            "step_ms_min": 1e3 * min(r.times), "step_ms_max": 1e3 * max(r.times),
            # best repeat vs best matmul repeat: the least disturbed figures on a shared machine
            "fraction_of_matmul_best": flops / min(r.times) / 1e9 / mm_best,
        }
    result["hand_over_autodiff_speed"] = result["autodiff"]["step_ms"] / result["hand"]["step_ms"]

    if args.json:
        print(json.dumps(result, indent=1))
    else:
        sizes = "-".join(map(str, args.sizes))
        print(f"MLP {sizes}, batch {args.batch}, float32, Adam; jitted step with donated buffers; {result['device']}, "
              f"{result['cpu_count']} CPUs, jax {jax.__version__}, load average {result['load_average_1min']:.1f}")
        print(f"FLOP per step (matmuls): {flops / 1e9:.3f} G (6*N*in*out per layer, minus the first layer's "
              "input gradient)")
        print(f"roofline: jitted {args.matmul}x{args.matmul} float32 matmul: {mm_gflops:.1f} GFLOP/s")
        print(f"{'grad':<9} {'ms/step':>8} {'steps/s':>8} {'GFLOP/s':>8} {'of matmul':>9} {'dots':>5}"
              f"   (min..max ms over {args.repeats} repeats of {args.steps} steps)")
        for r in runners:
            m = result[r.name]
            print(f"{r.name:<9} {m['step_ms']:>8.2f} {m['steps_per_s']:>8.1f} {m['gflops']:>8.1f} "
                  f"{m['fraction_of_matmul']:>9.1%} {m['dots_in_compiled_step']:>5}   "
                  f"({m['step_ms_min']:.2f}..{m['step_ms_max']:.2f})")
        print("XLA cost analysis of the compiled steps: " + ", ".join(
            f"{n} {result[n]['xla_cost_flops'] / 1e9:.3f} GFLOP, {result[n]['xla_cost_bytes'] / 1e6:.1f} MB"
            for n in ("hand", "autodiff")))
        print(f"hand / autodiff speed: {result['hand_over_autodiff_speed']:.3f} (medians); best repeats: "
              f"hand {result['hand']['fraction_of_matmul_best']:.1%}, autodiff "
              f"{result['autodiff']['fraction_of_matmul_best']:.1%} of the best matmul repeat "
              f"({mm_best:.1f} GFLOP/s)")
    return result


if __name__ == "__main__":
    main()
