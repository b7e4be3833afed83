"""Post-training quantization of one trained classifier, every configuration of issue 19's table in one run.

    python benchmarks/quant_table.py RUN [--calibrate 512] [--data-dir DIR] [--json OUT.json] [--quick]

Rows: the float model; int8 weights per tensor / per channel (activations float); int8 weights + int8 activations
per tensor / per channel (activation ranges by minmax, percentile and mse); int4 weights only per channel (minmax
and mse) and per group of 32; int4 weights + int8 activations. For every row with quantized activations and
symmetric per-tensor / per-channel weights the integer path (int8 x int8 -> int32, rescaled) runs too: its accuracy,
the number of test predictions that differ from the fake-quant path, and the largest logit difference (0 means
bit-identical outputs; see funcdl/compress/quant_graph.py). ``--quick`` keeps six rows: int8 per tensor / per
channel, weights only and weights + activations (minmax), int4 per channel and per group.

``--qat BITS --qat-steps N`` adds quantization-aware fine-tuning from the run's weights (funcdl.compress.qat: STE
with per-channel minmax scales, and LSQ with learned per-channel steps), N Adam steps at lr 1e-4 with the run's
batch size, evaluated on the test set with the same fake-quantized weights (activations float), next to the
post-training figure for the same bit width.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from funcdl.commands.quantize import table  # noqa: E402
from funcdl.compress import ptq  # noqa: E402
from funcdl.compress.quantize import QuantSpec  # noqa: E402


def configurations(quick: bool = False) -> list[tuple]:
    """(weights, activations) pairs, in the table's order."""
    a8 = QuantSpec(8, granularity="tensor")
    rows = [
        (QuantSpec(8, granularity="tensor"), None),
        (QuantSpec(8, granularity="channel"), None),
        (QuantSpec(8, granularity="tensor"), a8),
        (QuantSpec(8, granularity="channel"), a8),
        (QuantSpec(8, granularity="channel"), QuantSpec(8, granularity="tensor", method="percentile")),
        (QuantSpec(8, granularity="channel"), QuantSpec(8, granularity="tensor", method="mse")),
        (QuantSpec(4, granularity="channel"), None),
        (QuantSpec(4, granularity="channel", method="mse"), None),
        (QuantSpec(4, granularity="group", group_size=32), None),
        (QuantSpec(4, granularity="channel", method="mse"), a8),
    ]
    return [rows[i] for i in (0, 1, 2, 3, 6, 8)] if quick else rows


def qat_finetune(run_dir: str, data_dir, bits: int, method: str, steps: int) -> float:
    """Test accuracy after ``steps`` of QAT fine-tuning from the run's weights (the loss and the evaluation see
    the fake-quantized weights)."""
    from funcdl.commands.sample import load_image_model
    from funcdl.commands.train import load_run_data
    from funcdl.compress.qat import qat_task
    from funcdl.training.config import TrainConfig
    from funcdl.training.loop import train

    loaded = load_image_model(run_dir, data_dir)
    cfg = loaded["config"]
    data = load_run_data(cfg["data"], data_dir or cfg.get("data_dir"), cfg.get("train", {}))
    base = loaded["task"]._replace(init=lambda key: (loaded["params"], loaded["state"]))
    config = TrainConfig(steps=steps, batch_size=cfg.get("train", {}).get("batch_size", 128), lr=1e-4,
                         eval_every=steps, progress=False)
    return float(train(qat_task(base, bits, method), data, config).summary["test_accuracy"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run")
    p.add_argument("--calibrate", type=int, default=512)
    p.add_argument("--data-dir")
    p.add_argument("--json", help="also write the rows to this file")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--qat", type=int, metavar="BITS", help="also fine-tune with QAT at this weight width")
    p.add_argument("--qat-steps", type=int, default=500)
    args = p.parse_args(argv)
    run = ptq.load(args.run, args.data_dir)
    float_logits = ptq.float_reference(run)
    rows = []
    configs = configurations(args.quick)
    if args.qat:
        configs = [(QuantSpec(args.qat, granularity="channel"), None)]
    for weights, acts in configs:
        row, _ = ptq.evaluate_config(run, weights, acts, args.calibrate, float_logits=float_logits)
        rows.append(row)
        print(f"  {row['label']}: {row['accuracy']:.4f} ({row['seconds']} s)", file=sys.stderr, flush=True)
    print(f"{run['name']} ({args.run}): float test accuracy {rows[0]['float_accuracy']:.4f}, "
          f"calibration on {args.calibrate} training images")
    print(table(rows))
    if args.qat:
        for method in ("ste", "lsq"):
            acc = qat_finetune(args.run, args.data_dir, args.qat, method, args.qat_steps)
            rows.append({"label": f"QAT {method} int{args.qat} per channel, {args.qat_steps} steps", "accuracy": acc,
                         "delta_points": round(100 * (acc - rows[0]["float_accuracy"]), 4)})
            print(f"QAT {method}: int{args.qat} per-channel weights after {args.qat_steps} steps: test accuracy "
                  f"{acc:.4f} (post-training: {rows[0]['accuracy']:.4f}, float {rows[0]['float_accuracy']:.4f})")
    if args.json:
        Path(args.json).write_text(json.dumps({"run": args.run, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
