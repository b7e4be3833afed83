"""Latency of an exported forward: funcdl's jitted forward vs the reloaded StableHLO (``jax.export``) vs
onnxruntime on the CPU, for the MNIST-1D MLP, LeNet-5 on MNIST-sized images and the baby GPT, in one process.

    python benchmarks/bench_export.py [--reps 30] [--rounds 3] [--threads 0] [--models mlp,lenet,gpt] [--int8]

The weights are the models' random initialisation (latency does not depend on trained values); the shapes are
those of the default runs: the MLP 40 -> 512 -> 512 -> 10 (``funcdl train mlp``), LeNet-5 on 28x28x1, the baby
GPT (4 layers, 4 heads, width 128, context 64, vocabulary 65). Each model is exported once with a symbolic batch
(``funcdl.export``) and timed at batch 1 and a larger batch (the GPT: sequences of 64 tokens). All three run
float32: funcdl is ``jax.jit`` of the same inference function that was exported (the GPT with float32 matrix
products, not the bfloat16 of its training default); the StableHLO is ``jax.jit(exported.call)`` after
``jax.export.deserialize``; onnxruntime is one ``InferenceSession`` (CPUExecutionProvider, --threads intra-op
threads, 0 = its default). Times are medians over --rounds interleaved rounds of the median of --reps calls
after a warm-up; the error columns are max |export - funcdl| / max |funcdl| on the timed batch.

``--int8`` adds a table of the int8-weight exports (``inference(..., weights="int8")``: matrices stored as int8
with per-channel scales, dequantized in the graph): file sizes against float32, onnxruntime's latency at the
larger batch, and the max relative difference of their logits from the float32 model's.
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


def int8_row(name: str, folder: Path, args) -> dict:
    info, opts, batches = MODELS[name]
    task = get_model(name).build(info, **opts)
    params, state = task.init(jax.random.PRNGKey(0))
    row = {"model": name}
    for w in ("float32", "int8"):
        inf = export.inference(task, params, state, info, name=name, weights=w)
        row[f"onnx_{w}"] = export.to_onnx(inf, folder / f"{name}-{w}.onnx")
        row[f"shlo_{w}"] = export.to_stablehlo(inf, folder / f"{name}-{w}.stablehlo")
    x = export.example_inputs(inf, {"B": batches[-1], "T": 64, "vocab": 65})
    f32 = export.load_onnx(row["onnx_float32"], threads=args.threads or None)
    i8 = export.load_onnx(row["onnx_int8"], threads=args.threads or None)
    t = interleaved({"float32": f32.run, "int8": i8.run}, x, args.reps, args.rounds)
    row.update(input="x".join(map(str, x[0].shape)), t32=t["float32"], t8=t["int8"], err=rel(i8.run(*x), f32.run(*x)))
    return row


def print_int8(rows: list[dict]) -> None:
    print("\nint8 weights (per output channel, dequantized in the graph) vs float32; onnxruntime, median ms per batch")
    print("| model | input | ONNX bytes f32 -> int8 | StableHLO bytes f32 -> int8 | onnxruntime f32 | onnxruntime int8 "
          "| max rel. diff of logits |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        size = {k: Path(r[k]).stat().st_size for k in ("onnx_float32", "onnx_int8", "shlo_float32", "shlo_int8")}
        print(f"| {r['model']} | {r['input']} | {size['onnx_float32']:,} -> {size['onnx_int8']:,} | "
              f"{size['shlo_float32']:,} -> {size['shlo_int8']:,} | {r['t32']:.3f} | {r['t8']:.3f} | {r['err']:.1e} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    ap.add_argument("--models", default="mlp,lenet,gpt")
    ap.add_argument("--int8", action="store_true", help="also the int8-weight exports (sizes, latency, error)")
    args = ap.parse_args()
    rows, rows8 = [], []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            rows += bench_model(name.strip(), Path(folder), args)
            if args.int8:
                rows8.append(int8_row(name.strip(), Path(folder), args))
        print_tables(rows, rows8, args)


def print_tables(rows, rows8, args) -> None:
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}; float32; median ms per batch "
          f"({args.rounds} rounds x {args.reps} calls)")
    print("| model | input | funcdl jit | StableHLO (reloaded) | onnxruntime | StableHLO / funcdl "
          "| onnxruntime / funcdl | max rel. err StableHLO | max rel. err ONNX |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['input']} | {r['funcdl']:.3f} | {r['stablehlo']:.3f} | {r['onnxruntime']:.3f} "
              f"| {r['stablehlo'] / r['funcdl']:.2f} | {r['onnxruntime'] / r['funcdl']:.2f} | {r['err_shlo']:.1e} "
              f"| {r['err_onnx']:.1e} |")
    if rows8:
        print_int8(rows8)


if __name__ == "__main__":
    main()
