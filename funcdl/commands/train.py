"""``funcdl train MODEL --data NAME ...``: train a registered model on a registered data set.

Options come from four places, later ones winning: the training defaults of ``TrainConfig``, the model's
registered ``defaults``, its ``data_defaults`` for the chosen data set (see ``models/registry.py``), then the
command line (``--lr``, ..., ``--set k=v``).
``--set`` takes model options (``--set hidden=256,256``) and training options alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

# flag name -> TrainConfig field, for the options that have their own flag
_FLAGS = ("epochs", "steps", "batch_size", "optimizer", "lr", "weight_decay", "schedule", "warmup_steps", "min_lr",
          "clip_norm", "grad", "seed", "eval_every", "patience", "freeze", "init_from", "precision", "devices",
          "shard", "tensorboard")


def _models():
    from funcdl import models

    return models


def _catalog_epilog() -> str:
    try:
        import funcdl.data as data

        ms = _models().MODELS
        lines = ["models:"] + [f"  {n:<18} {m.description}" for n, m in sorted(ms.items())]
        lines += ["data sets:"] + [f"  {n:<18} {e.description}" for n, e in sorted(data.DATASETS.items())]
        lines += ["  text:PATH          any local UTF-8 text file, character level"]
        lines += ["", "examples:", "  funcdl train mlp --data mnist1d",
                  "  funcdl train mlp --data mnist --data-dir ../shared/data/mnist --epochs 10",
                  "  funcdl train mlp --set hidden=256,256 --lr 3e-3 --grad autodiff",
                  "  funcdl train mlp --out runs/a --resume"]
        return "\n".join(lines)
    except Exception as err:  # the help must show even if a model module is broken
        return f"(could not list models/data sets: {err})"


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="train a model on a data set (metrics, checkpoints, plots)",
        description="Train a registered model with the generic jitted loop. Writes config.json, metrics.jsonl, "
        "summary.json, checkpoint.npz and loss/accuracy/lr plots into the run directory. With --resume, only "
        "how long to train and how to report may change (--epochs, --steps, --eval-every, --patience, "
        "--devices, --quiet, --tensorboard, --set eval_batch_size/log_every/plots/scan/ynn/track/track_every); "
        "other changed options are refused, and what changed is recorded in config.json. --set track=gradflow "
        "and/or track=trajectory (track_every=N) record per-layer gradient flow (gradflow.jsonl, gradflow.png) "
        "and parameter snapshots (trajectory.npz) into the run directory. Exit status: 0 finished (or stopped "
        "early), 1 the loss diverged, 2 bad input, 130 interrupted.",
        epilog=_catalog_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="model name (see the list below, or `funcdl models`)")
    p.add_argument("--data", help="data set name (default: the model's; see `funcdl data`) or text:PATH")
    p.add_argument("--data-dir", help="folder with the data set's files (instead of the cache / a download)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--epochs", type=int, help="passes over the training split")
    g.add_argument("--steps", type=int, help="optimizer steps")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--optimizer", help="optimizer name (optim.create), e.g. adam, sgd")
    p.add_argument("--lr", type=float, help="learning rate (peak value with a schedule)")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--schedule", help="learning-rate schedule: constant, cosine, linear, exponential, step, "
                   "polynomial, one_cycle, cosine_restarts (optim.SCHEDULES)")
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--min-lr", type=float, help="the learning rate a decaying schedule ends at (default 0)")
    p.add_argument("--preset", help="a named set of model and training options the model registers "
                   "(e.g. gpt: shakespeare-char)")
    p.add_argument("--clip-norm", type=float, help="clip the global gradient norm to this value")
    p.add_argument("--grad", choices=("manual", "autodiff"),
                   help="manual: hand-derived backward rules (default); autodiff: jax.grad of the references")
    p.add_argument("--seed", type=int)
    p.add_argument("--out", help="run directory (default runs/MODEL-DATA-TIMESTAMP)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (or the latest matching run)")
    p.add_argument("--init-from", help="checkpoint (file or run dir) whose params matching by path+shape are loaded")
    p.add_argument("--freeze", help="regex searched in parameter paths such as layers/0/w (e.g. '^layers/0/'); "
                   "those parameters get no updates")
    p.add_argument("--eval-every", type=int, help="steps between evaluations (default: one epoch)")
    p.add_argument("--patience", type=int, help="early stopping: evaluations without validation improvement")
    p.add_argument("--no-scan", action="store_true",
                   help="a Python loop of jitted steps instead of whole epochs inside lax.scan (to compare speed)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="model or training option, e.g. --set hidden=256,256 --set dropout=0.1 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"),
                   help="compute dtype (float32 master weights and optimizer state; fp16 adds dynamic loss scaling)")
    p.add_argument("--devices", type=int, help="data parallel over this many devices (default: all JAX sees)")
    p.add_argument("--shard", choices=("none", "optimizer", "params"),
                   help="ZeRO: shard the optimizer state (optimizer) or the parameters too (params) over --devices")
    p.add_argument("--tensorboard", action="store_true", default=None,
                   help="also write TensorBoard event files into the run directory")
    p.add_argument("--remat", action="store_true",
                   help="recompute each block's activations in the backward (jax.checkpoint): less memory, more "
                   "compute; for the models whose builder takes remat (gpt, resnet, resnet18)")
    p.add_argument("--no-compile-cache", action="store_true",
                   help="do not use JAX's persistent compilation cache (in the funcdl cache folder)")
    p.add_argument("--coordinator", metavar="HOST:PORT",
                   help="multi-process training (jax.distributed): the address of process 0; 'auto' under Slurm")
    p.add_argument("--num-processes", type=int, help="with --coordinator: how many processes take part")
    p.add_argument("--process-id", type=int, help="with --coordinator: this process's rank, 0 .. P-1")
    p.add_argument("--stop-after", type=int, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def load_run_data(name: str, data_dir, train_options: dict):
    """The data set a run trains on: ``funcdl.data.load`` with the run's validation share, then restricted to
    its ``classes`` / ``label_fraction`` when it names them (transfer learning)."""
    import funcdl.data as fdata

    data = fdata.load(name, data_dir=data_dir, val_fraction=train_options.get("val_fraction"))
    return data.subset(train_options.get("classes"), train_options.get("label_fraction"))



def parse_value(text: str):
    """``"3"`` -> 3, ``"1e-3"`` -> 0.001, ``"true"`` -> True, ``"none"`` -> None, ``"256,256"`` -> (256, 256)."""
    text = text.strip()
    if "," in text:
        return tuple(parse_value(t) for t in text.split(",") if t.strip())
    low = text.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items:
        for part in [item]:
            if "=" not in part:
                raise ValueError(f"--set expects KEY=VALUE, got {part!r}")
            k, v = part.split("=", 1)
            out[k.strip().replace("-", "_")] = parse_value(v)
    return out


def _expect(option: str, value, default, owner: str):
    """``value`` must be of the kind of ``default`` (numbers, booleans, tuples of numbers, strings)."""
    if default is None or value is None:
        return value
    number = lambda v: isinstance(v, int | float) and not isinstance(v, bool)  # noqa: E731
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif number(default):
        ok = number(value) and (isinstance(default, float) or isinstance(value, int))
        value = float(value) if ok and isinstance(default, float) else value
    elif isinstance(default, dict):
        ok = isinstance(value, dict)
    elif isinstance(default, tuple | list) and default and all(isinstance(d, str) for d in default):
        value = tuple(value) if isinstance(value, tuple | list) else (value,)      # words separated by commas
        ok = all(isinstance(v, str) for v in value)
    elif isinstance(default, tuple | list):
        ok = all(number(v) for v in (value if isinstance(value, tuple | list) else (value,))) or not default
    else:
        ok = isinstance(value, type(default))
    sizes = [d for d in (default if isinstance(default, tuple | list) else (default,)) if number(d)]
    if ok and sizes and all(isinstance(d, int) and d >= 1 for d in sizes):     # a size: a positive whole number
        ok = all(isinstance(v, int) and v >= 1 for v in (value if isinstance(value, tuple | list) else (value,)))
        if not ok:
            raise ValueError(f"{owner} option {option}={value!r}: expected positive whole numbers (default "
                             f"{default!r})")
    if not ok:
        kind = {bool: "true or false", tuple: "numbers separated by commas", list: "numbers separated by commas",
                str: "a word"}.get(type(default), "a number")
        if isinstance(default, tuple | list) and default and isinstance(default[0], str):
            kind = "words separated by commas"
        raise ValueError(f"{owner} option {option}={value!r}: expected {kind} (default {default!r})")
    return value


def check_values(entry, train_opts: dict, model_opts: dict) -> None:
    """Every option's value has the kind its default has (``--set lr=abc`` names the option)."""
    import inspect

    from funcdl.training.loop import TrainConfig

    missing = dataclasses.MISSING
    train_defaults = {f.name: f.default if f.default is not missing else
                      f.default_factory() if f.default_factory is not missing else None
                      for f in dataclasses.fields(TrainConfig)}
    train_defaults |= {"lr": 1e-3, "weight_decay": 0.0, "clip_norm": 1.0, "devices": 1, "epochs": 1, "steps": 1,
                       "eval_every": 1, "patience": 1, "eval_batch_size": 1, "stop_after": 1, "label_fraction": 1.0,
                       "eval_limit": 1,
                       "scan": True, "ynn": True, "val_fraction": 0.1, "track_every": 1}
    for k, v in train_opts.items():
        train_opts[k] = _expect(k, v, train_defaults.get(k), "training")
    params = inspect.signature(entry.build).parameters
    for k, v in model_opts.items():
        if k in params and params[k].default is not inspect.Parameter.empty:
            model_opts[k] = _expect(k, v, params[k].default, f"model {entry.name!r}")


def resolve_options(entry, args) -> tuple[str, dict, dict]:
    """``(data name, training options, model options)`` from the model's defaults and the command line."""
    from funcdl.models.registry import TRAIN_KEYS
    from funcdl.training.loop import TrainConfig

    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    merged = dict(entry.defaults)
    chosen = args.data or merged.get("data") or (entry.data[0] if entry.data else None)
    for k, v in entry.data_defaults.get(chosen, {}).items():   # per-data-set defaults beat the model's own
        merged[k] = v
        if k == "epochs":
            merged.pop("steps", None)
        if k == "steps":
            merged.pop("epochs", None)
    presets = merged.pop("presets", {})
    if args.preset is not None:     # a preset beats the defaults; explicit flags still beat the preset
        if args.preset not in presets:
            valid = ", ".join(sorted(presets)) or "none"
            raise ValueError(f"model {entry.name!r} has no preset {args.preset!r}; valid presets: {valid}")
        for k, v in presets[args.preset].items():
            merged[k] = v
            if k == "epochs":
                merged.pop("steps", None)
            if k == "steps":
                merged.pop("epochs", None)
    for name in _FLAGS:
        value = getattr(args, name, None)
        if value is not None:
            merged[name] = value
            if name == "epochs":
                merged.pop("steps", None)
            if name == "steps":
                merged.pop("epochs", None)
    sets = parse_sets(args.set)
    if args.remat:
        sets["remat"] = True
    for k, v in sets.items():            # "--set hidden=64" for a tuple-valued default means (64,)
        if isinstance(entry.defaults.get(k), tuple | list) and not isinstance(v, tuple | list) and v is not None:
            sets[k] = (v,)
    merged |= sets
    if "epochs" in sets and "steps" not in sets:
        merged.pop("steps", None)
    data_name = args.data or merged.pop("data", None) or (entry.data[0] if entry.data else None)
    merged.pop("data", None)
    if data_name is None:
        raise ValueError(f"model {entry.name!r} has no default data set; pass --data NAME")
    train_opts = {k: v for k, v in merged.items() if k in TRAIN_KEYS}
    model_opts = {k: v for k, v in merged.items() if k not in TRAIN_KEYS}
    unknown = set(train_opts) - train_fields
    if unknown:
        raise ValueError(f"unknown training options {sorted(unknown)}")
    if args.no_scan:
        train_opts["scan"] = False
    if args.quiet:
        train_opts["progress"] = False
    if args.stop_after is not None:
        train_opts["stop_after"] = args.stop_after
    return data_name, train_opts, model_opts


def _latest_run(model: str, data: str | None) -> Path:
    runs = sorted(Path("runs").glob(f"{model}-{data or '*'}-*"), key=lambda p: p.stat().st_mtime)
    runs = [r for r in runs if (r / "checkpoint.npz").is_file()]
    if not runs:
        raise FileNotFoundError(f"--resume: no run of {model} with a checkpoint under runs/; pass --out RUN_DIR")
    return runs[-1]


def run(args) -> int:
    from funcdl.models.registry import check_options
    from funcdl.training.loop import TrainConfig, train

    entry = _models().get_model(args.model)

    if args.data_dir is not None and not Path(args.data_dir).expanduser().is_dir():
        raise FileNotFoundError(f"--data-dir {args.data_dir} is not a folder")
    if args.resume:
        out, data_name, data_dir, train_opts, model_opts = _resume_options(entry, args)
    else:
        data_name, train_opts, model_opts = resolve_options(entry, args)
        data_dir = args.data_dir
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = Path(args.out) if args.out else Path("runs") / f"{args.model}-{data_name.replace(':', '_')}-{stamp}"
        if args.out and (out / "checkpoint.npz").is_file():
            raise ValueError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a directory; name a new or existing folder")

    # a misspelt --set fails before any data is loaded (qat/qat_method wrap any model: build_task takes them)
    check_options(args.model, entry.build, {k: v for k, v in model_opts.items() if k not in WRAPPER_OPTIONS})
    check_values(entry, train_opts, model_opts)
    if args.coordinator:
        from funcdl.training.parallel import initialize_distributed

        initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    if not args.no_compile_cache:
        from funcdl.training.config import enable_compile_cache

        enable_compile_cache()
    config = TrainConfig(**train_opts)
    data = load_run_data(data_name, data_dir, config.asdict())
    info = data.info(seq_len=config.seq_len if data.windowed else None)
    try:
        task = build_task(entry, info, model_opts, config.batch_size)
    except TypeError as err:          # an option of the wrong kind (a list where a number belongs, ...)
        raise ValueError(f"model {args.model!r}: {err}") from None
    if (task.kind == "language") != data.windowed:
        raise ValueError(f"model {args.model!r} is a {task.kind} model but {data_name!r} is {data.kind} data; "
                         f"it is meant for: {', '.join(entry.data) or 'any'}")
    print(f"{args.model} on {data.describe()}; run directory {out}")
    run_info = {"model": args.model, "data": data_name, "data_dir": data_dir, "model_options": model_opts}
    result = train(task, data, config, out, resume=args.resume, run_info=run_info)
    s = result.summary
    keys = [k for k in ("test_accuracy", "test_loss", "val_accuracy", "val_loss") if k in s]
    figures = ", ".join(f"{k} {s[k]:.4f}" for k in keys)
    print(f"{s['stopped']} after {s['steps']} steps in {s['wall_seconds']:.1f} s "
          f"({s['steps_per_second']} steps/s); {figures}")
    print(f"wrote {out}/summary.json")
    if s["stopped"] != "diverged":
        _print_sample(task, result.params, data)
    return {"diverged": 1, "interrupted": 130}.get(s["stopped"], 0)


def _resume_options(entry, args):
    """The saved run's options with the ones given on this command line on top; the loop refuses the changes a
    resumed run cannot take and records the others (``funcdl.training.config.RESUMABLE``)."""
    out = Path(args.out) if args.out else _latest_run(args.model, args.data)
    cfg_path = out / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"--resume: no config.json in {out}")
    saved = json.loads(cfg_path.read_text())
    if saved.get("model") != args.model:
        raise ValueError(f"--resume: {out} is a run of {saved.get('model')!r}, not {args.model!r}")
    if args.data is not None and args.data != saved["data"]:
        raise ValueError(f"--resume cannot change data: {saved['data']!r} -> {args.data!r}")
    train_opts = dict(saved["train"])
    model_opts = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.get("model_options", {}).items()}
    given = {name: getattr(args, name) for name in _FLAGS if getattr(args, name, None) is not None}
    given |= parse_sets(args.set)
    for name in ("epochs", "steps"):          # a resumed run may be extended by either
        if name in given:
            train_opts["steps" if name == "epochs" else "epochs"] = None
    from funcdl.models.registry import split_options

    new_train, new_model = split_options(given)
    train_opts |= new_train
    model_opts |= new_model
    train_opts["progress"] = not args.quiet
    train_opts["stop_after"] = args.stop_after
    if args.no_scan:
        train_opts["scan"] = False
    return out, saved["data"], args.data_dir or saved.get("data_dir"), train_opts, model_opts


# model options that wrap whatever task a model builds, taken by build_task rather than the builder
WRAPPER_OPTIONS = ("qat", "qat_method")


def build_task(entry, info, model_opts: dict, batch_size):
    """``entry.build(info, **model_opts)`` (which checks the options against the builder's signature); a builder
    that takes ``batch_size`` also gets the training batch size (a model that carries state between batches, such
    as char-lstm with truncated BPTT, needs it). ``qat=BITS`` (and ``qat_method=ste|lsq``) wraps any model for
    quantization-aware training (funcdl.compress.qat: weights fake-quantized per channel inside the loss)."""
    opts = dict(model_opts)
    qat, qat_method = opts.pop("qat", None), opts.pop("qat_method", "ste")
    if "batch_size" in entry.options and batch_size is not None:
        opts.setdefault("batch_size", int(batch_size))
    task = entry.build(info, **opts)
    if qat is None:
        return task
    from funcdl.compress.qat import qat_task

    return qat_task(task, qat, qat_method)


def _print_sample(task, params, data, n_tokens: int = 300) -> None:
    """A language model ends its run with a sample (temperature 0.8, top-k 20) from a newline prompt."""
    import jax
    import jax.numpy as jnp

    generate = (task.extras or {}).get("generate")
    extras = data.extras or {}
    if task.kind != "language" or generate is None or "encode" not in extras:
        return
    prompt = jnp.asarray(extras["encode"]("\n"))[None]
    tokens = generate(params, prompt, jax.random.PRNGKey(0), n_tokens, temperature=0.8, top_k=20)
    print("sample:\n" + extras["decode"](tokens[0]))


def read_run_config(path) -> dict:
    """A run's config.json, refused in one line when it does not name the model and data ``funcdl train``
    records (a file written by something else, or cut short)."""
    path = Path(path)
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); it was not written by funcdl train") from None
    missing = [k for k in ("model", "data") if not isinstance(cfg, dict) or k not in cfg]
    if missing:
        raise ValueError(f"{path} names no {' and no '.join(missing)}: it was not written by funcdl train (a run "
                         "directory's config.json records both)")
    return cfg


def load_run(run_dir, *, load_data: bool = True):
    """Rebuild a finished (or interrupted) run for other commands (``sample``, ``plot``): returns a dict with
    ``task``, ``params``, ``state``, ``config`` (config.json), ``data`` (the Dataset, or None) and ``info``."""
    import jax

    from funcdl.training import checkpoint as ckpt

    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.json)")
    cfg = read_run_config(cfg_path)
    entry = _models().get_model(cfg["model"])
    train_cfg = cfg.get("train", {})
    data = load_run_data(cfg["data"], cfg.get("data_dir"), train_cfg) if load_data else None
    if data is not None:
        info = data.info(seq_len=train_cfg.get("seq_len") if data.windowed else None)
    else:
        info = None
    if info is None:
        raise ValueError("load_run needs the data set to rebuild the model (load_data=True)")
    model_opts = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.get("model_options", {}).items()}
    task = build_task(entry, info, model_opts, train_cfg.get("batch_size"))
    params, state = task.init(jax.random.PRNGKey(0))
    trees, meta = ckpt.restore(run_dir / "checkpoint.npz", {"params": params, "state": state})
    return {"task": task, "params": trees["params"], "state": trees["state"], "config": cfg, "data": data,
            "info": info, "step": meta.get("step")}
