"""``funcdl quantize RUN --bits 8 [--per-channel | --group-size G] [--activations] [--calibrate 512] [--method
minmax|percentile|mse] --out DIR``: post-training quantization of a trained image classifier, evaluated.

The run's inference graph is rewritten (funcdl.compress.quant_graph): every product of an activation and a weight
gets its weight quantized (per tensor, per output channel or per group) and, with ``--activations``, its input
quantized to int8 with a scale calibrated on ``--calibrate`` training images. The command measures the test
accuracy of the float model, the fake-quantized model and -- with quantized activations and symmetric per-tensor /
per-channel weights -- the integer path (int8 x int8 products accumulated in int32, then rescaled), and how many
test predictions the integer path changes against the fake path. It writes DIR/summary.json and
DIR/weights.npz (per site: int8 ``q``, ``scale``, ``zero``, and the activation's ``act_scale``), never into the
run directory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("quantize", help="post-training quantization of a trained classifier (int8/int4 weights, "
                       "int8 activations), evaluated on the test set", description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="run directory written by `funcdl train` (an image classifier)")
    p.add_argument("--bits", type=int, default=8, help="weight bits, 2-8 (default 8)")
    p.add_argument("--per-channel", action="store_true", help="one weight scale per output channel (default: "
                   "one per tensor)")
    p.add_argument("--group-size", type=int, help="one weight scale per group of G input features in each output "
                   "channel (int4 style; fake path only)")
    p.add_argument("--activations", action="store_true", help="also quantize every product's input activation "
                   "(per tensor, calibrated)")
    p.add_argument("--act-bits", type=int, default=8, help="activation bits with --activations (default 8)")
    p.add_argument("--calibrate", type=int, default=512, help="training images for activation calibration")
    p.add_argument("--method", default="minmax", choices=("minmax", "percentile", "mse"),
                   help="activation clipping range (default minmax)")
    p.add_argument("--weight-method", default="minmax", choices=("minmax", "percentile", "mse"),
                   help="weight clipping range (default minmax)")
    p.add_argument("--asymmetric", action="store_true", help="asymmetric quantizers with zero points (fake path)")
    p.add_argument("--data-dir", help="folder with the data set's files (default: the one the run used)")
    p.add_argument("--out", required=True, help="new folder for summary.json and weights.npz")
    p.set_defaults(func=run)


def specs(args):
    """(weights, activations) QuantSpecs of the command's options."""
    from funcdl.compress.quantize import QuantSpec

    if args.per_channel and args.group_size:
        raise ValueError("quantize: give --per-channel or --group-size G, not both")
    granularity = "group" if args.group_size else "channel" if args.per_channel else "tensor"
    weights = QuantSpec(args.bits, not args.asymmetric, granularity, args.group_size or 32, args.weight_method)
    acts = QuantSpec(args.act_bits, not args.asymmetric, "tensor", 32, args.method) if args.activations else None
    return weights, acts


def _check_out(out: Path, run: Path) -> None:
    if out.resolve() == run.resolve() or run.resolve() in out.resolve().parents:
        raise ValueError(f"quantize: --out {out} is inside the run directory; give a new folder (the run is not "
                         f"modified)")
    if out.exists() and (out / "summary.json").exists():
        raise ValueError(f"quantize: {out} already holds a summary.json; give a new folder")


def _write(out: Path, name: str, write) -> None:
    tmp = out / f".{name}.tmp"
    write(tmp)
    os.replace(tmp, out / name)


def _savez(path: Path, arrays: dict) -> None:
    import numpy as np

    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _trained_accuracy(run_dir: Path) -> str:
    try:
        return f"{json.loads((run_dir / 'summary.json').read_text())['test_accuracy']:.4f}"
    except (OSError, KeyError, ValueError, TypeError):
        return "n/a"


def table(rows: list[dict]) -> str:
    """The float model, then one line per configuration: accuracy, change in points, integer path figures."""
    w = 52
    head = f"{'configuration':<{w}} {'accuracy':>8} {'delta':>7} {'int path':>8} {'int!=fake':>9} {'max|dlogit|':>11}"
    lines = [head, "-" * len(head)]
    if rows and "float_accuracy" in rows[0]:
        lines.append(f"{'float (the trained weights)':<{w}} {rows[0]['float_accuracy']:>8.4f} {'':>7} {'-':>8} "
                     f"{'-':>9} {'-':>11}")
    for r in rows:
        ip = f"{r['int_accuracy']:.4f}" if "int_accuracy" in r else "-"
        mm = str(r["int_vs_fake_mismatches"]) if "int_accuracy" in r else "-"
        dl = f"{r['int_vs_fake_max_logit_diff']:.1e}" if "int_accuracy" in r else "-"
        delta = f"{r['delta_points']:+7.2f}" if "delta_points" in r else f"{'':>7}"
        lines.append(f"{r['label'][:w]:<{w}} {r['accuracy']:>8.4f} {delta} {ip:>8} {mm:>9} {dl:>11}")
    return "\n".join(lines)


def run(args) -> int:
    from funcdl.compress import ptq

    weights, acts = specs(args)
    out, run_dir = Path(args.out), Path(args.run)
    _check_out(out, run_dir)
    loaded = ptq.load(args.run, args.data_dir)
    row, qm = ptq.evaluate_config(loaded, weights, acts, args.calibrate, float_logits=ptq.float_reference(loaded))
    trained = _trained_accuracy(run_dir)
    print(f"{loaded['name']}: float test accuracy {row['float_accuracy']:.4f} (the run's summary.json: {trained})")
    print(table([row]))
    summary = {"run": str(run_dir), "model": loaded["name"], **row, "sites": qm.describe_sites()}
    out.mkdir(parents=True, exist_ok=True)
    _write(out, "weights.npz", lambda p: _savez(p, qm.export()))
    _write(out, "summary.json", lambda p: p.write_text(json.dumps(summary, indent=1)))
    print(f"wrote {out / 'summary.json'} and {out / 'weights.npz'}")
    return 0
