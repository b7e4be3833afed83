"""Latency of an exported forward: funcdl's jitted forward vs the reloaded StableHLO (``jax.export``) vs
onnxruntime on the CPU, for the MNIST-1D MLP, LeNet-5 on MNIST-sized images and the baby GPT, in one process.

    python benchmarks/bench_export.py [--reps 30] [--rounds 3] [--threads 0] [--models mlp,lenet,gpt]

The weights are the models' random initialisation (latency does not depend on trained values); the shapes are
those of the default runs: the MLP 40 -> 512 -> 512 -> 10 (``funcdl train mlp``), LeNet-5 on 28x28x1, the baby
GPT (4 layers, 4 heads, width 128, context 64, vocabulary 65). Each model is exported once with a symbolic batch
(``funcdl.export``) and timed at batch 1 and a larger batch (the GPT: sequences of 64 tokens). All three run
float32: funcdl is ``jax.jit`` of the same inference function that was exported (the GPT with float32 matrix
products, not the bfloat16 of its training default); the StableHLO is ``jax.jit(exported.call)`` after
``jax.export.deserialize``; onnxruntime is one ``InferenceSession`` (CPUExecutionProvider, --threads intra-op
threads, 0 = its default). Times are medians over --rounds interleaved rounds of the median of --reps calls
after a warm-up; the error columns are max |export - funcdl| / max |funcdl| on the timed batch.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from funcdl.models import get_model

from funcdl import export
from funcdl.training.task import DataInfo

MODELS = {
    "mlp": (DataInfo("mnist1d", (40,), num_classes=10), {"hidden": (512, 512)}, (1, 1000)),
    "lenet": (DataInfo("mnist", (28, 28, 1), num_classes=10), {}, (1, 256)),
    "gpt": (DataInfo("tinyshakespeare", (64,), vocab_size=65, kind="language"), {}, (1, 16)),
}


def median_ms(fn, x, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        np.asarray(fn(*x))
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def interleaved(fns: dict, x, reps: int, rounds: int) -> dict:
    for fn in fns.values():                       # warm-up (compilation, session set-up)
        np.asarray(fn(*x))
    out = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            out[k].append(median_ms(fn, x, reps))
    return {k: statistics.median(v) for k, v in out.items()}


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def bench_model(name: str, folder: Path, args) -> list[dict]:
    info, opts, batches = MODELS[name]
    task = get_model(name).build(info, **opts)
    params, state = task.init(jax.random.PRNGKey(0))
    inf = export.inference(task, params, state, info, name=name)
    shlo = export.load_stablehlo(export.to_stablehlo(inf, folder / f"{name}.stablehlo"))
    onnx = export.load_onnx(export.to_onnx(inf, folder / f"{name}.onnx"), threads=args.threads or None)
    fns = {"funcdl": jax.jit(inf.fn), "stablehlo": jax.jit(shlo.handle.call), "onnxruntime": onnx.run}
    rows = []
    for b in batches:
        x = export.example_inputs(inf, {"B": b, "T": 64, "vocab": 65})
        ref = fns["funcdl"](*x)
        t = interleaved(fns, x, args.reps, args.rounds)
        shape = "x".join(map(str, x[0].shape))
        rows.append({"model": name, "input": shape, **t, "err_shlo": rel(fns["stablehlo"](*x), ref),
                     "err_onnx": rel(fns["onnxruntime"](*x), ref)})
        print(f"  {name} {shape}: " + ", ".join(f"{k} {v:.3f} ms" for k, v in t.items()), file=sys.stderr)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    ap.add_argument("--models", default="mlp,lenet,gpt")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            rows += bench_model(name.strip(), Path(folder), args)
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}; float32; median ms per batch "
          f"({args.rounds} rounds x {args.reps} calls)")
    print("| model | input | funcdl jit | StableHLO (reloaded) | onnxruntime | StableHLO / funcdl "
          "| onnxruntime / funcdl | max rel. err StableHLO | max rel. err ONNX |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['input']} | {r['funcdl']:.3f} | {r['stablehlo']:.3f} | {r['onnxruntime']:.3f} "
              f"| {r['stablehlo'] / r['funcdl']:.2f} | {r['onnxruntime'] / r['funcdl']:.2f} | {r['err_shlo']:.1e} "
              f"| {r['err_onnx']:.1e} |")


if __name__ == "__main__":
    main()
