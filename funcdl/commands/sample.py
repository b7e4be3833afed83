"""``funcdl sample CHECKPOINT --prompt TEXT``: generate text from a trained language model (GPT).

CHECKPOINT is a run directory of ``funcdl train`` or a ``checkpoint.npz`` inside one; the run's
``config.json`` says which model, options and data set (for the character vocabulary) to rebuild.
"""

from __future__ import annotations

import json
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("sample", help="generate text from a trained language model checkpoint",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="run directory or checkpoint.npz written by `funcdl train`")
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    p.add_argument("--tokens", type=int, default=500, help="number of new tokens (characters)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--samples", type=int, default=1, help="independent samples (a batch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-cache", action="store_true", help="recompute the whole context per token (no KV cache)")
    p.add_argument("--data-dir", help="folder with the data set's files (default: the one the run used)")
    p.set_defaults(func=run)


def _locate(path: str) -> tuple[Path, Path]:
    p = Path(path)
    ckpt = p / "checkpoint.npz" if p.is_dir() else p
    if not ckpt.is_file():
        raise FileNotFoundError(f"no checkpoint at {path} (give a run directory or a .npz file)")
    config = ckpt.parent / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{config} is missing: sample needs the run's config.json next to the checkpoint")
    return ckpt, config


def load_model(path: str, data_dir: str | None = None):
    """(task, params, encode, decode) rebuilt from a run directory or checkpoint."""
    import jax

    import funcdl.data as data
    from funcdl import models
    from funcdl.training import checkpoint

    ckpt, config_path = _locate(path)
    cfg = json.loads(config_path.read_text())
    entry = models.get_model(cfg["model"])
    ds = data.load(cfg["data"], data_dir=data_dir or cfg.get("data_dir"))
    extras = ds.extras or {}
    if "encode" not in extras:
        raise ValueError(f"data set {cfg['data']!r} has no text vocabulary: sample works on language models")
    from .train import build_task

    options = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.get("model_options", {}).items()}
    train_cfg = cfg.get("train", {})
    task = build_task(entry, ds.info(train_cfg.get("seq_len")), options, train_cfg.get("batch_size"))
    template, _ = task.init(jax.random.PRNGKey(0))
    trees, _ = checkpoint.restore(ckpt, {"params": template})
    return task, trees["params"], extras["encode"], extras["decode"]


def run(args) -> int:
    import jax
    import jax.numpy as jnp

    task, params, encode, decode = load_model(args.checkpoint, args.data_dir)
    generate = (task.extras or {}).get("generate")
    if generate is None:
        raise ValueError("this model has no generate function (sample works on GPT-style language models)")
    if args.tokens < 0:
        raise ValueError(f"--tokens must be >= 0, got {args.tokens}")
    prompt = jnp.asarray(encode(args.prompt))[None].repeat(args.samples, axis=0)
    out = generate(params, prompt, jax.random.PRNGKey(args.seed), args.tokens, temperature=args.temperature,
                   top_k=args.top_k, top_p=args.top_p, use_cache=not args.no_cache)
    for i in range(args.samples):
        if args.samples > 1:
            print(f"--- sample {i + 1}")
        print(decode(out[i]))
    return 0
