"""Time one jitted optimizer update on a 10M-parameter pytree, for every optimizer in ``optim``, next to a plain
``jax.tree.map`` SGD step (the memory-bandwidth floor: read p and g, write p).

    python benchmarks/bench_optim.py                          # 10M parameters, every optimizer, 5 rounds
    python benchmarks/bench_optim.py --params 1e6 --rounds 3 --optimizers sgd,adam,adamw

One "update" is ``updates, state = opt.update(grads, state, params); params = apply_updates(params, updates)``
in one jitted function with the parameter and state buffers donated, as a training step runs it. The pytree
is a small transformer-like set of leaves (two large matrices, an embedding, vectors). The rounds are
interleaved (floor, sgd, adam, ..., floor, sgd, ...) so a busy machine slows every variant alike; the report
gives the median ms per update, the ratio to the floor, the optimizer state size, and the effective bandwidth
(bytes of params, grads and state read and written, divided by the time).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from funcdl import optim  # noqa: E402


def make_params(n_params: int, key):
    """Leaves shaped like a small transformer: ~40% + 40% two square matrices, ~19% an embedding, vectors."""
    d = int((0.4 * n_params) ** 0.5)
    vocab = max(1, int(0.19 * n_params) // d)
    shapes = {"attn": {"w": (d, d), "b": (d,)}, "mlp": {"w": (d, d), "b": (d,)}, "embed": (vocab, d),
              "norm": {"scale": (d,), "offset": (d,)}}
    rest = n_params - sum(a * b for a, b in [(d, d), (d, d), (vocab, d)]) - 4 * d
    if rest > 0:
        shapes["tail"] = (rest,)
    leaves, treedef = jax.tree.flatten(shapes, is_leaf=lambda x: isinstance(x, tuple))
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(treedef, [jax.random.normal(k, s, jnp.float32) * 0.02 for k, s in zip(keys, leaves,
                                                                                                     strict=True)])


def nbytes(tree) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree) if hasattr(x, "dtype"))


def bench_one(step, args, repeats):
    """Run ``step`` ``repeats`` times threading its outputs back in; return seconds per call (median of 3 blocks)."""
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(repeats):
            args = step(*args)
        jax.block_until_ready(args)
        times.append((time.perf_counter() - t0) / repeats)
    return statistics.median(times), args


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", type=float, default=10e6, help="number of parameters (default 1e7)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    ap.add_argument("--repeats", type=int, default=5, help="updates per timed block (default 5)")
    ap.add_argument("--optimizers", default=",".join(sorted(optim.OPTIMIZERS)))
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.optimizers.split(",") if n.strip()]
    for n in names:
        optim.create(n)  # unknown names fail here with the list
    params = make_params(int(args.params), jax.random.PRNGKey(0))
    n = sum(x.size for x in jax.tree.leaves(params))
    grads = jax.tree.map(lambda p: p * 0.1 + 1e-3, params)
    pbytes = nbytes(params)
    print(f"# {n:,} parameters in {len(jax.tree.leaves(params))} leaves ({pbytes / 1e6:.0f} MB float32), "
          f"jax {jax.__version__}, {jax.devices()[0].device_kind}")

    def floor_step(p, g):
        return jax.tree.map(lambda p, g: p - 1e-3 * g, p, g), g

    variants = {"tree.map sgd (floor)": (jax.jit(floor_step, donate_argnums=0),
                                         lambda: (jax.tree.map(jnp.copy, params), grads), 0)}
    for name in names:
        opt = optim.create(name, 1e-3)

        def step(p, s, g, opt=opt):
            u, s = opt.update(g, s, p)
            return optim.apply_updates(p, u), s, g

        def fresh(opt=opt):
            p = jax.tree.map(jnp.copy, params)
            return p, opt.init(p), grads

        state_bytes = nbytes(opt.init(params))
        variants[name] = (jax.jit(step, donate_argnums=(0, 1)), fresh, state_bytes)

    live = {}
    for name, (fn, fresh, _) in variants.items():            # compile + one warm call each
        a = fresh()
        a = fn(*a)
        jax.block_until_ready(a)
        live[name] = a
    results = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (fn, _, _) in variants.items():
            t, live[name] = bench_one(fn, live[name], args.repeats)
            results[name].append(t)
    floor = statistics.median(results["tree.map sgd (floor)"])
    print(f"{'update':24s} {'ms':>9s} {'x floor':>8s} {'state MB':>9s} {'GB/s':>7s}")
    for name, (_, _, state_bytes) in variants.items():
        t = statistics.median(results[name])
        moved = 3 * pbytes + 2 * state_bytes      # read p, g, state; write p, state
        print(f"{name:24s} {t * 1e3:9.2f} {t / floor:8.2f} {state_bytes / 1e6:9.1f} {moved / t / 1e9:7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
