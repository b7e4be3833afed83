"""``funcdl import hf PATH --out RUN`` and ``funcdl export hf RUN --out DIR``: Hugging Face checkpoints of GPT-2
and BERT in and out of funcdl run directories (the mapping is ``funcdl.models.hf``; nothing is downloaded).

An imported run directory holds ``config.json`` (model ``gpt`` or ``bert_mlm``, its options, ``"data": null`` and
where it came from) and ``checkpoint.npz`` (the params, step 0): ``funcdl train MODEL --init-from RUN`` copies
every parameter whose path and shape match, and ``funcdl export hf`` writes it (or any ``gpt`` / ``bert_mlm`` run)
back as ``config.json`` + ``model.safetensors``.
"""

from __future__ import annotations

import json
from pathlib import Path

FORMATS = ("hf",)


def register(sub) -> None:
    p = sub.add_parser("import", help="make a run directory from a Hugging Face GPT-2 / BERT checkpoint",
                       description="Read a local Hugging Face model folder (config.json + model.safetensors or "
                       "pytorch_model.bin) of GPT2LMHeadModel, GPT2Model, BertModel, BertForMaskedLM or "
                       "BertForPreTraining and write a funcdl run directory (config.json, checkpoint.npz).")
    p.add_argument("format", choices=FORMATS, help="checkpoint format: hf (Hugging Face)")
    p.add_argument("path", help="the model folder (as save_pretrained writes it)")
    p.add_argument("--out", required=True, help="the run directory to create")
    p.set_defaults(func=run_import)
    # ``funcdl export hf RUN --out DIR`` (and ``funcdl export RUN --format hf``) is parsed by commands/export.py,
    # the one ``export`` command, which calls run_export below


def _set_flags(options: dict) -> str:
    """The ``--set`` flags that rebuild the imported architecture in ``funcdl train``."""
    skip = {"dropout", "compute_dtype", "grad_chunks", "mask_id"}
    parts = []
    for k, v in options.items():
        if k in skip or v is None:
            continue
        text = str(v).lower() if isinstance(v, bool) else str(v)
        parts.append(f"--set {k}={text}")
    return " ".join(parts)


def import_run(path, out) -> dict:
    """Import the Hugging Face folder ``path`` into the new run directory ``out``; returns its config.json."""
    import jax

    from funcdl.models import hf
    from funcdl.training import checkpoint

    out = Path(out)
    if (out / "checkpoint.npz").exists():
        raise ValueError(f"{out} already holds a run; choose another --out")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a directory; name a new folder")
    model, options, params = hf.import_hf(path)
    source = json.loads((Path(path) / "config.json").read_text())
    arch = source["architectures"][0]
    n = sum(int(a.size) for a in jax.tree.leaves(params))
    config = {"model": model, "data": None, "data_dir": None, "model_options": options,
              "train": {"seq_len": options.get("block_size") or options.get("max_len")},
              "imported_from": {"format": "huggingface", "path": str(Path(path).resolve()), "architecture": arch,
                                "vocab_size": int(source["vocab_size"]), "parameters": n}}
    out.mkdir(parents=True, exist_ok=True)
    checkpoint.save(out / "checkpoint.npz", {"params": params, "state": {}},
                    {"step": 0, "imported_from": config["imported_from"]})
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return config


def load_imported(run_dir):
    """``(task, params)`` of a run directory without loading its data set (an imported run has none): the
    vocabulary's size is read from the checkpoint. For ``funcdl sample`` on an imported run (token ids in and out)."""
    from funcdl.models import hf

    model, options, config, params = hf.load_run(run_dir)
    return hf.build_task(model, options, config.vocab_size), params


def run_import(args) -> int:
    config = import_run(args.path, args.out)
    src = config["imported_from"]
    print(f"imported {src['architecture']} ({src['parameters']:,} parameters) from {args.path} as "
          f"{config['model']} into {args.out}")
    print(f"fine-tune: funcdl train {config['model']} --data DATA --init-from {args.out} "
          f"{_set_flags(config['model_options'])}")
    return 0


def run_export(args) -> int:
    """Write config.json + model.safetensors of a gpt run (GPT2LMHeadModel) or a post-norm bert_mlm run
    (BertForMaskedLM with the MLM head, else BertModel) that transformers' from_pretrained loads."""
    from funcdl.models import hf

    out = hf.export_hf(args.run, args.out)
    print(f"wrote {out}/config.json and {out}/model.safetensors "
          f"({json.loads((out / 'config.json').read_text())['architectures'][0]})")
    return 0


# -- sampling from an imported run (called by ``funcdl sample``) ---------------------------------------------------


def is_imported(path) -> bool:
    """Whether ``path`` (a run directory or its checkpoint.npz) is a run made by ``funcdl import``."""
    p = Path(path)
    cfg = (p if p.is_dir() else p.parent) / "config.json"
    try:
        return "imported_from" in json.loads(cfg.read_text())
    except (OSError, ValueError):
        return False


def parse_ids(text: str) -> list[int]:
    try:
        ids = [int(t) for t in text.replace(" ", ",").split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"--ids takes token ids separated by commas (e.g. 464,3290), got {text!r}") from None
    if not ids:
        raise ValueError("--ids is empty; give at least one token id")
    return ids


def sample_imported(args) -> int:
    """``funcdl sample RUN --ids 464,3290`` on an imported GPT-2: continue the ids, print the new sequence of ids
    (funcdl has no byte-level BPE tokenizer, so text in and out is not offered)."""
    import jax
    import jax.numpy as jnp

    run = Path(args.checkpoint)
    run = run if run.is_dir() else run.parent
    ids = getattr(args, "ids", None)
    if ids is None:
        raise ValueError(f"{run} was imported from Hugging Face and has no vocabulary (funcdl has no GPT-2 "
                         "tokenizer); pass the prompt as token ids: --ids 464,3290")
    task, params = load_imported(run)
    generate = (task.extras or {}).get("generate")
    if generate is None:
        raise ValueError(f"{run} holds a {task.extras['model'].__name__.rsplit('.', 1)[-1]} model, which does not "
                         "generate; sample draws from gpt runs")
    prompt = jnp.asarray(parse_ids(ids) if isinstance(ids, str) else ids, jnp.int32)
    vocab = task.extras["config"].vocab_size
    if int(prompt.max()) >= vocab or int(prompt.min()) < 0:
        raise ValueError(f"--ids: every id must lie in 0 .. {vocab - 1} (the model's vocabulary)")
    prompt = prompt[None].repeat(args.samples, axis=0)
    out = generate(params, prompt, jax.random.PRNGKey(args.seed), args.tokens, temperature=args.temperature,
                   top_k=args.top_k, top_p=args.top_p, use_cache=not args.no_cache)
    for row in out:
        print(",".join(str(int(t)) for t in row))
    return 0
