"""``funcdl export RUN --format onnx|stablehlo|hf --out PATH``: a trained model for deployment.

* ``stablehlo``: the forward through ``jax.export`` (symbolic batch; the GPT's length up to its block size), one
  file of serialised bytes plus ``PATH.json`` with the input specs; ``jax.export.deserialize`` reloads it with JAX
  alone (funcdl.export's docstring shows how);
* ``onnx``: the same forward through jax2onnx (``pip install -e ".[export]"``), dynamic batch (and the GPT's
  length up to its block size; ``--seq-len`` fixes it), plus ``PATH.json``;
* ``hf``: a gpt / bert_mlm run as a Hugging Face checkpoint folder (``funcdl export hf RUN --out DIR``, the older
  spelling, still works).

Exports are float32 (a GPT's bfloat16 matrix products too); ``--int8`` stores the weight matrices as int8 with
per-channel scales, dequantized in the graph. After writing, the export is reloaded and compared with funcdl's
forward on a batch of another size than any fixed one (3), and the maximum relative difference is printed.

TensorRT (an NVIDIA GPU): ``funcdl export RUN --format onnx --opset 17 --out m.onnx``, then ``trtexec --onnx=m.onnx
--minShapes=x:1x40 --optShapes=x:256x40 --maxShapes=x:1024x40`` (the input is ``x``, a GPT's ``tokens``; see
funcdl/export.py).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

FORMATS = ("onnx", "stablehlo", "hf")


def register(sub) -> None:
    p = sub.add_parser("export", help="write a trained model as ONNX, StableHLO or a Hugging Face checkpoint",
                       description=__doc__.split("\n\n")[0] + " Classifiers (MLP, CNNs) and GPT runs export to "
                       "onnx / stablehlo; gpt and bert_mlm runs to hf.")
    p.add_argument("target", metavar="RUN", help="run directory (funcdl train or funcdl import); the older spelling "
                   "`funcdl export hf RUN --out DIR` is accepted")
    p.add_argument("target2", nargs="?", help=argparse.SUPPRESS)         # RUN of the older `export hf RUN`
    p.add_argument("--format", choices=FORMATS, help="onnx, stablehlo or hf")
    p.add_argument("--out", required=True, help="the file to write (hf: the folder)")
    p.add_argument("--int8", action="store_true", help="weight matrices as int8 with per-channel scales")
    p.add_argument("--seq-len", type=int, help="onnx, GPT: fix the sequence length to this (default: dynamic, up "
                   "to the block size)")
    p.add_argument("--opset", type=int, help="onnx: the opset (default: jax2onnx's)")
    p.add_argument("--data-dir", help="folder with the run's data set (default: the one the run used); read for "
                   "the input shape and classes only")
    p.add_argument("--no-check", action="store_true", help="skip the comparison with funcdl after writing")
    p.set_defaults(func=run)


def parse_target(target: list[str], fmt: str | None) -> tuple[str, str]:
    """``(format, run)`` from ``RUN --format F`` or the older ``hf RUN``."""
    if len(target) == 2 and target[0] in FORMATS:
        if fmt not in (None, target[0]):
            raise ValueError(f"two formats given ({target[0]} and --format {fmt}); give one")
        return target[0], target[1]
    if len(target) != 1:
        raise ValueError(f"export takes one run directory (funcdl export RUN --format onnx --out FILE), got "
                         f"{' '.join(target)!r}")
    if fmt is None:
        raise ValueError(f"--format is missing: funcdl export {target[0]} --format onnx|stablehlo|hf --out PATH")
    return fmt, target[0]


def load_for_export(run_dir: str, data_dir: str | None = None) -> dict:
    """A run as ``funcdl.export`` takes it: ``task``, ``params``, ``state``, ``info`` (None for an imported
    Hugging Face run) and ``config`` -- ``funcdl sample``'s loader (the data set is loaded for its DataInfo)."""
    from .hf import is_imported, load_imported
    from .sample import load_image_model

    if is_imported(run_dir):
        task, params = load_imported(Path(run_dir) if Path(run_dir).is_dir() else Path(run_dir).parent)
        cfg = json.loads((Path(run_dir) / "config.json").read_text()) if Path(run_dir).is_dir() else {}
        return {"task": task, "params": params, "state": {}, "info": None, "config": cfg}
    loaded = load_image_model(run_dir, data_dir)
    return {k: loaded[k] for k in ("task", "params", "state", "info", "config")}


def check(inf, path: Path, fmt: str, vocab: int | None) -> float:
    """Max relative difference ``max|export - funcdl| / max|funcdl|`` on a batch of 3 (and, for a GPT with a
    dynamic length, a sequence one shorter than the block size)."""
    import jax
    import numpy as np

    from funcdl import export

    loaded = export.load_onnx(path) if fmt == "onnx" else export.load_stablehlo(path)
    sizes = {"B": 3, "vocab": vocab or 2}
    for d, shape in zip(inf.inputs[0].shape, loaded.spec["inputs"][0]["shape"], strict=True):
        if isinstance(d, str) and d != "B":
            sizes[d] = shape if isinstance(shape, int) else max(1, inf.bounds[d] - 1)
    x = export.example_inputs(inf, sizes)
    ref = np.asarray(jax.jit(inf.fn)(*x), np.float64)
    return float(np.abs(np.asarray(loaded(*x), np.float64) - ref).max() / max(np.abs(ref).max(), 1e-30))


def run(args) -> int:
    fmt, run_dir = parse_target([t for t in (args.target, args.target2) if t is not None], args.format)
    if fmt == "hf":
        if args.int8 or args.seq_len or args.opset:
            raise ValueError("--int8, --seq-len and --opset are for onnx / stablehlo, not hf")
        from .hf import run_export

        args.run = run_dir
        return run_export(args)
    from funcdl import export

    out = Path(args.out)
    if out.exists() and not Path(str(out) + ".json").is_file():
        raise ValueError(f"--out {out} exists and is not an export; choose a new file name")
    loaded = load_for_export(run_dir, args.data_dir)
    model = loaded["config"].get("model") or "model"
    inf = export.inference(loaded["task"], loaded["params"], loaded["state"], loaded["info"], name=model,
                           weights="int8" if args.int8 else "float32")
    if fmt == "onnx":
        path = export.to_onnx(inf, out, seq_len=args.seq_len, opset=args.opset)
    else:
        if args.seq_len or args.opset:
            raise ValueError("--seq-len and --opset are for onnx (StableHLO keeps the length dynamic)")
        path = export.to_stablehlo(inf, out)
    spec = export.read_spec(path)
    shapes = ", ".join(f"{i['name']} ({', '.join(map(str, i['shape']))}) {i['dtype']}" for i in spec["inputs"])
    bounds = "".join(f", {d} <= {m}" for d, m in spec["bounds"].items())
    print(f"wrote {path} and {path.name}.json: {model} ({inf.weights} weights), {shapes}{bounds} -> logits "
          f"({path.stat().st_size:,} bytes)")
    if not args.no_check:
        vocab = getattr((loaded["task"].extras or {}).get("config"), "vocab_size", None)
        err = check(inf, path, fmt, vocab)
        print(f"checked: reloaded {fmt} vs funcdl's float32 forward on a batch of 3: max relative difference "
              f"{err:.1e}")
    return 0
