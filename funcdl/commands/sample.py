"""``funcdl sample RUN --prompt TEXT``: generate text from a trained language model (GPT, char-lstm);
``funcdl sample RUN --grid 8x8 --out grid.png [--class K]``: draw a grid of images from a trained image model
(a diffusion model also takes ``--sampler ddpm|ddim --steps N --eta E`` and, class-conditional, ``--guidance W``).

RUN is a run directory of ``funcdl train`` or a ``checkpoint.npz`` inside one; the run's ``config.json`` says which
model, options and data set (for the character vocabulary, or the image shape and classes) to rebuild. An image
model is one whose task has ``extras["sample_images"]`` (funcdl.training.task); when it also has
``extras["sampling_params"]`` (a generator's EMA copy) the optimizer state is restored to read it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .train import read_run_config


def register(sub) -> None:
    p = sub.add_parser("sample", help="generate text from a trained language model, or a grid of images from an "
                       "image model",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="run directory or checkpoint.npz written by `funcdl train`")
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    p.add_argument("--tokens", type=int, default=500, help="number of new tokens (characters)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--samples", type=int, default=1, help="independent samples (a batch)")
    p.add_argument("--ids", help="an imported run (funcdl import hf): the prompt as token ids, e.g. 464,3290")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-cache", action="store_true", help="recompute the whole context per token (no KV cache)")
    p.add_argument("--data-dir", help="folder with the data set's files (default: the one the run used)")
    p.add_argument("--grid", help="image models: ROWSxCOLS samples in one PNG (default 8x8)")
    p.add_argument("--out", help="image models: the PNG to write (default: grid.png in the run directory)")
    p.add_argument("--class", dest="class_", metavar="K", help="image models: the class a class-conditional model "
                   "draws (0-9 on MNIST)")
    p.add_argument("--sampler", choices=("ddpm", "ddim"), help="diffusion models: ddpm (ancestral, all T steps) "
                   "or ddim (default)")
    p.add_argument("--steps", type=int, help="diffusion models: DDIM sampling steps (default 50)")
    p.add_argument("--eta", type=float, help="diffusion models: DDIM's eta, 0 (deterministic, default) to 1")
    p.add_argument("--guidance", type=float, help="class-conditional diffusion models: classifier-free guidance "
                   "weight w, eps = (1 + w) eps(c) - w eps(null) (default 0)")
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
    cfg = read_run_config(config_path)
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
    from .hf import is_imported, sample_imported

    if is_imported(args.checkpoint):            # a Hugging Face checkpoint: token ids in and out, no vocabulary
        return sample_imported(args)
    images = any(v is not None for v in (args.grid, args.out, args.class_, *_diffusion_flags(args).values()))
    if args.grid is not None:
        parse_grid(args.grid)           # a malformed grid fails before anything is loaded
    if not images and _language_data(args.checkpoint):
        return _run_text(args)
    loaded = load_image_model(args.checkpoint, args.data_dir)
    if "sample_images" not in (loaded["task"].extras or {}):
        model = loaded["config"]["model"]
        if images:
            raise ValueError(f"model {model!r} draws no images: --grid, --out and --class are for image generative "
                             "models (their task has extras['sample_images'])")
        if not loaded["text"]:
            raise ValueError(f"model {model!r} neither writes text nor draws images: sample works on language "
                             "models (--prompt) and image generative models (--grid)")
        return _run_text(args)
    return _run_images(args, loaded)


def _run_text(args) -> int:
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


# -- image models -------------------------------------------------------------------------------------------------


def _diffusion_flags(args) -> dict:
    """The diffusion sampler's options given on the command line (those not None)."""
    names = ("sampler", "steps", "eta", "guidance")
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}


def _language_data(path: str) -> bool:
    """Whether the run trained on a language data set (read from its config.json, without loading the data)."""
    import funcdl.data as data

    _, config_path = _locate(path)
    name = json.loads(config_path.read_text()).get("data", "")
    try:
        return data.get_dataset(name).kind == "language"
    except ValueError:
        return False


def load_image_model(path: str, data_dir: str | None = None) -> dict:
    """A run rebuilt for sampling: ``task``, ``params``, ``state``, ``opt_state`` (None unless the task has
    ``sampling_params``, which reads it), ``config`` (config.json), ``data`` (the run's data set, loaded once here),
    ``info`` (the DataInfo) and ``text`` (whether the data set has a character vocabulary)."""
    import jax

    from funcdl import models
    from funcdl.training import checkpoint

    from .train import build_task, load_run_data

    ckpt, config_path = _locate(path)
    cfg = read_run_config(config_path)
    entry = models.get_model(cfg["model"])
    train_cfg = cfg.get("train", {})
    ds = load_run_data(cfg["data"], data_dir or cfg.get("data_dir"), train_cfg)
    info = ds.info(train_cfg.get("seq_len") if ds.windowed else None)
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.get("model_options", {}).items()}
    task = build_task(entry, info, options, train_cfg.get("batch_size"))
    params, state = task.init(jax.random.PRNGKey(0))
    templates = {"params": params, "state": state}
    if "sampling_params" in (task.extras or {}):
        templates["opt_state"] = _opt_state_template(task, params, train_cfg, cfg.get("total_steps"))
    trees, _ = checkpoint.restore(ckpt, templates)
    return {"task": task, "params": trees["params"], "state": trees["state"], "opt_state": trees.get("opt_state"),
            "config": cfg, "data": ds, "info": info, "text": "encode" in (ds.extras or {})}


def load_classifier(path: str, data_dir: str | None = None, command: str = "funcdl") -> dict:
    """A classifier run for the commands that evaluate one (explain, quantize): ``apply(params, x) -> logits``
    with its batch-norm state bound, ``params``, ``init`` (the task's), ``train`` and ``test`` splits (``val``
    where the data set has no test split), ``config`` and ``name``."""
    loaded = load_image_model(path, data_dir)
    task, cfg, data = loaded["task"], loaded["config"], loaded["data"]
    if task.kind != "classification" or task.apply is None:
        raise ValueError(f"{command}: {path} is a {task.kind} run; {command} works on classifiers")
    split = "test" if "test" in data.splits else "val"
    if split not in data.splits or "x" not in data.splits[split]:
        raise ValueError(f"{command}: data set {cfg['data']!r} has no test split with inputs 'x'")
    state = loaded["state"]
    return {"apply": lambda p, x: task.apply(p, state, x), "params": loaded["params"], "init": task.init,
            "train": data.splits["train"], "test": data.splits[split], "config": cfg,
            "name": f"{cfg['model']}/{cfg['data']}"}


def _opt_state_template(task, params, train_cfg: dict, total_steps):
    """A fresh optimizer state of the run's optimizer (one per player for a several-players task), the template
    the checkpoint's optimizer state is restored into."""
    import dataclasses

    from funcdl.training.config import TrainConfig
    from funcdl.training.step import make_optimizer, players_optimizer, with_freezing

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in train_cfg.items() if k in fields})
    total = int(total_steps or 1)
    if task.players:
        opt = players_optimizer(task, config, total)[0]
    else:
        opt, _ = make_optimizer(config, total)
        opt, _ = with_freezing(opt, params, config.freeze)
    return opt.init(params)


def parse_grid(text: str) -> tuple[int, int]:
    """``"8x8"`` -> (8, 8); rows and columns from 1 to 64."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text or "")
    if not m or not (1 <= int(m[1]) <= 64 and 1 <= int(m[2]) <= 64):
        raise ValueError(f"--grid expects ROWSxCOLS with 1 to 64 each, such as 8x8; got {text!r}")
    return int(m[1]), int(m[2])


def _conditional(task, params, sample) -> bool:
    """Whether the model needs labels: its config's ``conditional`` flag, else whether sampling without labels
    raises the 'class-conditional' error the sample_images convention prescribes."""
    import jax

    flag = getattr(task.extras.get("config"), "conditional", None)
    if isinstance(flag, bool):
        return flag
    try:
        sample(params, jax.random.PRNGKey(0), 1)
    except ValueError as err:
        if "class-conditional" in str(err):
            return True
        raise
    return False


def _class_label(text, conditional: bool, num_classes: int, model: str):
    if not conditional:
        if text is not None:
            raise ValueError(f"--class: model {model!r} is unconditional (it draws every class); drop --class")
        return None
    if text is None:
        raise ValueError(f"model {model!r} is class-conditional; pass --class K (0-{num_classes - 1})")
    if not re.fullmatch(r"\s*\d+\s*", str(text)) or not 0 <= int(text) < num_classes:
        raise ValueError(f"--class must be a whole number from 0 to {num_classes - 1}, got {text!r}")
    return int(text)


def _run_images(args, loaded: dict) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from funcdl.plots.generative import image_grid

    task, params, model = loaded["task"], loaded["params"], loaded["config"]["model"]
    rows, cols = parse_grid(args.grid if args.grid is not None else "8x8")
    sample = task.extras["sample_images"]
    config = task.extras.get("config")
    num_classes = getattr(config, "num_classes", None) or loaded["info"].num_classes or 10
    label = _class_label(args.class_, _conditional(task, params, sample), num_classes, model)
    if "sampling_params" in task.extras:
        params = task.extras["sampling_params"](params, loaded["opt_state"])
    n = rows * cols
    labels = None if label is None else jnp.full((n,), label, jnp.int32)
    options = _diffusion_flags(args)
    accepted = task.extras.get("sample_options", ())
    refused = [k for k in options if k not in accepted]
    if refused:
        raise ValueError(f"model {model!r} takes no --{' --'.join(refused)}: --sampler, --steps, --eta and "
                         "--guidance are for diffusion models (ddpm, cddpm)")
    images = np.asarray(sample(params, jax.random.PRNGKey(args.seed), n, labels=labels, **options))
    out = Path(args.out) if args.out else _locate(args.checkpoint)[0].parent / "grid.png"
    title = f"{model}: {n} samples, seed {args.seed}" + ("" if label is None else f", class {label}") + \
        "".join(f", {k} {v}" for k, v in options.items())
    path = image_grid(images, rows, cols, out, title=title)
    print(f"wrote {path} ({rows}x{cols} samples{'' if label is None else f' of class {label}'})")
    return 0
