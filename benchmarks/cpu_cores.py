"""How much floating-point work the CPUs give when used at once: a single-threaded float32 matmul timed alone, then
in one process per CPU running at the same moment. On the development machine (2 vCPUs of an AMD EPYC) one
thread gets 210 GFLOP/s and two get 107 + 107: the vCPUs share one core's floating-point units, so compute-bound
code gains nothing from the second one.

    python benchmarks/cpu_cores.py [--size 1024] [--reps 100]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time


def gflops(size: int, reps: int, start=None) -> float:
    os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false"      # one thread per process
    import jax
    import jax.numpy as jnp

    a = jnp.ones((size, size), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    f(a, a).block_until_ready()
    if start is not None:
        start.wait()                                                    # all processes begin together
    t = time.perf_counter()
    for _ in range(reps):
        r = f(a, a)
    r.block_until_ready()
    return 2 * size**3 * reps / (time.perf_counter() - t) / 1e9


def _worker(size, reps, start, out):
    out.put(gflops(size, reps, start))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--reps", type=int, default=100)
    args = p.parse_args()
    n = os.cpu_count() or 1
    ctx = mp.get_context("spawn")
    one = ctx.Queue()
    proc = ctx.Process(target=_worker, args=(args.size, args.reps, None, one))
    proc.start()
    print(f"{args.size}² float32 matmul, one thread alone: {one.get():.1f} GFLOP/s")
    proc.join()
    start, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(args.size, args.reps, start, out)) for _ in range(n)]
    for q in procs:
        q.start()
    rates = [out.get() for _ in procs]
    for q in procs:
        q.join()
    print(f"{n} threads at once (one per CPU): " + " + ".join(f"{r:.1f}" for r in rates)
          + f" = {sum(rates):.1f} GFLOP/s")


if __name__ == "__main__":
    main()
