"""``funcdl prune RUN --sparsity 0.9 [--scope global|layer] [--structured channels|heads] [--finetune-steps N]
--out DIR``: prune a trained run's weights, optionally fine-tune with the mask held, and write a new run.

Magnitude pruning drops the smallest ``|w|`` of every prunable leaf (``ndim >= 2``: dense and conv kernels,
embeddings; ``--pattern`` picks leaves by path instead), per layer (``--scope layer``) or over all of them at
once (``--scope global``). ``--structured channels`` drops whole output units / channels by the L2 (``--norm
l1``: L1) norm of their filters, with their biases; ``--structured heads`` drops attention heads of the GPT's
fused qkv layout. Fine-tuning runs the run's own optimizer wrapped in ``optim.masking.masked_sparse``, so the
pruned weights stay exactly zero. DIR is a new run directory (config.json, checkpoint.npz, summary.json with
the sparsity report and the test metrics before and after) that ``funcdl sample``/``prune`` can load.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("prune", help="prune a trained run's weights (magnitude or structured), optionally "
                       "fine-tune with the mask held, write a new run", description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="run directory written by `funcdl train`")
    p.add_argument("--sparsity", type=float, required=True, help="share of the prunable weights (or units, "
                   "heads) set to zero, in [0, 1)")
    p.add_argument("--scope", choices=("layer", "global"), default="layer", help="magnitude pruning per layer "
                   "(default) or over all prunable weights at once")
    p.add_argument("--structured", choices=("channels", "heads"), help="drop whole output channels/units or "
                   "attention heads instead of single weights")
    p.add_argument("--norm", choices=("l1", "l2"), default="l2", help="structured pruning: the filter norm")
    p.add_argument("--pattern", help="regex on parameter paths (layers/0/w) choosing the prunable leaves")
    p.add_argument("--finetune-steps", type=int, default=0, help="optimizer steps of fine-tuning after pruning")
    p.add_argument("--lr", type=float, help="fine-tuning learning rate (default: the run's lr / 10)")
    p.add_argument("--seed", type=int, default=0, help="fine-tuning batch order")
    p.add_argument("--out", required=True, help="a new folder for the pruned run")
    p.set_defaults(func=run)


def _check_args(args):
    if not 0.0 <= args.sparsity < 1.0:
        raise ValueError(f"--sparsity must lie in [0, 1) (the share set to zero), got {args.sparsity}")
    if args.finetune_steps < 0:
        raise ValueError(f"--finetune-steps must be >= 0, got {args.finetune_steps}")
    if args.lr is not None and not args.lr > 0:
        raise ValueError(f"--lr must be > 0, got {args.lr}")
    if args.structured and args.scope == "global":
        raise ValueError("--scope global is for magnitude pruning; structured pruning is per layer (drop --scope)")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} already exists and is not an empty folder; name a new folder")
    if out.resolve() == Path(args.run).resolve():
        raise ValueError("--out must differ from the run being pruned (the original stays as it is)")
    return out


def make_masks(params, args, model_options: dict, model_config=None):
    from funcdl.compress import prune

    if args.structured == "heads":
        n_heads = getattr(model_config, "n_head", None) or model_options.get("n_head")
        return prune.structured_masks(params, args.sparsity, kind="heads", norm=args.norm, n_heads=n_heads)
    if args.structured == "channels":
        return prune.structured_masks(params, args.sparsity, kind="channels", norm=args.norm, pattern=args.pattern)
    return prune.magnitude_masks(params, args.sparsity, scope=args.scope, pattern=args.pattern)


def finetune(task, params, state, train_arrays, masks, train_cfg: dict, steps: int, lr, seed: int,
             windowed: bool = False):
    """``steps`` updates of the run's optimizer (constant ``lr``) inside ``masked_sparse(., masks)`` on random
    batches of ``train_arrays`` (random windows of its ``tokens`` for language data); returns (params, state)."""
    import dataclasses

    import jax

    from funcdl.data.base import sample_windows
    from funcdl.optim.masking import masked_sparse
    from funcdl.training.config import TrainConfig
    from funcdl.training.step import make_optimizer, make_train_step

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    keep = {k: v for k, v in train_cfg.items() if k in fields and k not in ("prune", "schedule", "warmup_steps",
                                                                           "steps", "epochs", "freeze")}
    config = TrainConfig(**{**keep, "lr": float(lr), "devices": None, "shard": "none"})
    opt, _ = make_optimizer(config, steps)
    opt = masked_sparse(opt, masks)
    step = jax.jit(make_train_step(task, opt, dataclasses.replace(config, augment=None)))
    opt_state = opt.init(params)
    n = len(next(iter(train_arrays.values())))
    key = jax.random.PRNGKey(seed)
    for i in range(steps):
        k_batch, k_step = jax.random.split(jax.random.fold_in(key, i))
        if windowed:
            batch = sample_windows(train_arrays["tokens"], k_batch, config.batch_size, config.seq_len)
        else:
            idx = jax.random.randint(k_batch, (min(config.batch_size, n),), 0, n)
            batch = {name: v[idx] for name, v in train_arrays.items()}
        params, opt_state, state, _ = step(params, opt_state, state, batch, k_step)
    return params, state


def _metrics(task, params, state, data, train_cfg: dict) -> dict:
    from funcdl.training.config import TrainConfig
    from funcdl.training.evaluate import evaluate, window_evaluator

    if data.windowed:       # language data: the loss on the run's fixed validation windows
        d = TrainConfig()
        ev = window_evaluator(task, train_cfg.get("batch_size", d.batch_size), train_cfg.get("seq_len", d.seq_len),
                              train_cfg.get("eval_batches", d.eval_batches), train_cfg.get("eval_seed", d.eval_seed))
        split = "val" if "val" in data.splits else "test"
        return {f"{split}_{k}": v for k, v in ev(params, state, data.splits[split]).items()}
    split = "test" if "test" in data.splits else "val"
    return {f"{split}_{k}": v for k, v in evaluate(task, params, state, data.splits[split]).items()}


def run(args) -> int:
    from funcdl.compress import prune
    from funcdl.optim.masking import apply_masks

    from .train import load_run

    out = _check_args(args)
    loaded = load_run(args.run)
    task, params, state, data, cfg = (loaded[k] for k in ("task", "params", "state", "data", "config"))
    train_cfg = cfg.get("train", {})
    before = _metrics(task, params, state, data, train_cfg)
    masks = make_masks(params, args, cfg.get("model_options", {}), (task.extras or {}).get("config"))
    params = apply_masks(params, masks)
    pruned = _metrics(task, params, state, data, train_cfg)
    if args.finetune_steps:
        lr = args.lr if args.lr is not None else float(train_cfg.get("lr", 1e-3)) / 10
        params, state = finetune(task, params, state, data.splits["train"], masks, train_cfg,
                                 args.finetune_steps, lr, args.seed, data.windowed)
    after = _metrics(task, params, state, data, train_cfg)
    report = prune.sparsity_report(params, args.pattern)
    print(prune.format_report(report))
    for name, m in (("before", before), ("pruned", pruned), ("after fine-tuning", after)):
        if name != "after fine-tuning" or args.finetune_steps:
            print(f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(m.items())))
    record = {"source": str(Path(args.run)), "sparsity": args.sparsity, "scope": args.scope,
              "structured": args.structured, "norm": args.norm, "pattern": args.pattern,
              "finetune_steps": args.finetune_steps}
    summary = {"pruned": record, "before": before, "after_pruning": pruned, "after": after,
               "sparsity_report": report, **after}
    _write_run(out, cfg, params, state, record, summary, loaded.get("step"))
    print(f"wrote {out}")
    return 0


def _write_run(out: Path, cfg: dict, params, state, record: dict, summary: dict, step) -> None:
    """Build the run in a hidden sibling folder, then rename it into place: no half-written run at ``out``."""
    from funcdl.training import checkpoint

    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.mkdir(parents=True)
    try:
        (tmp / "config.json").write_text(json.dumps({**cfg, "pruned": record}, indent=1, default=str))
        checkpoint.save(tmp / "checkpoint.npz", {"params": params, "state": state}, {"step": step, "pruned": True})
        (tmp / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
        if out.exists():
            out.rmdir()            # checked empty in _check_args
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
