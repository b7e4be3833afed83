"""The generic training loop: a Task, a data set and an optimizer in; metrics, checkpoints and plots out.

One training step is the whole of gradient descent:

    (loss, (state, metrics)), g = value_and_grad(task.loss)(params, state, batch, key, train=True)
    g = clip(g)                                          # optional: rescale to global norm <= clip_norm
    updates, opt_state = opt.update(g, opt_state, params)
    params = params + mask * updates                     # mask = 0 on frozen parameters (--freeze)

``grad="manual"`` differentiates ``task.loss`` as it is, so ``jax.grad`` runs every primitive's hand-derived
rule; ``grad="autodiff"`` differentiates ``funcdl.autodiff(task.loss)``, the same loss through the plain
``jax.numpy`` references. The two give the same numbers up to float32 rounding.

Speed: the step is compiled once with ``jax.jit`` and its parameter and optimizer buffers are donated (updated
in place). When the data sit on the device (the default), many steps run inside ONE compiled call with
``lax.scan``: a whole epoch for data read by example (the batch order of epoch ``e`` is a permutation drawn
from ``fold_in(data_key, e)`` on the device), or a chunk of steps for language data (random windows drawn on
the device from ``fold_in(data_key, step)``). ``scan=False`` runs the same step from a Python loop instead,
one compiled call per step, so the difference can be measured.

Reproducibility: every random choice is a function of the seed and the step number (batch order of an epoch,
windows, dropout keys), so a run resumed from a checkpoint at step k takes exactly the steps the uninterrupted
run would have taken. A checkpoint (``checkpoint.npz``) holds params, optimizer state, model state, the step,
the PRNG key and the data position, and is written atomically at every evaluation, on Ctrl-C and at the end.

The run directory gets ``config.json``, ``metrics.jsonl`` (one JSON record per logged train window and per
evaluation), ``summary.json``, ``checkpoint.npz`` (``best.npz`` with early stopping) and PNG plots.
"""

from __future__ import annotations

import dataclasses
import json
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import optim
from ..core.primitive import autodiff
from ..core.xla import compiler_options, scan_is_slow
from ..data.base import Dataset, epoch_indices, sample_windows, sequential_windows
from . import checkpoint as ckpt
from .augment import make_augment
from .task import Task

__all__ = ["TrainConfig", "TrainResult", "train", "evaluate", "make_optimizer", "make_schedule", "param_count",
           "freeze_mask", "TrainingDiverged"]

# fold_in index of the augmentation draws: the step key itself drives dropout, so augmentation takes its own stream
AUGMENT_STREAM = 0x5EED
# language data: evaluate every this many steps unless eval_every says otherwise
LANGUAGE_EVAL_EVERY = 500
# evaluation batches hold at least this many examples (evaluation needs no gradients, so bigger batches are cheap)
MIN_EVAL_BATCH = 500
# at most this many steps per compiled call: bounds the stacked per-step metrics and keeps the progress bar moving
MAX_STEPS_PER_CALL = 2000


@dataclasses.dataclass
class TrainConfig:
    """Training options (the model's own options go to its ``build``, not here)."""

    epochs: int | None = None              # passes over the training split (ignored when steps is set)
    steps: int | None = None               # total optimizer steps
    batch_size: int = 100
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float | None = None      # None: the optimizer's default
    optimizer_options: dict = dataclasses.field(default_factory=dict)   # momentum, b1, ... (optim.create)
    schedule: str = "constant"
    warmup_steps: int = 0
    min_lr: float = 0.0                    # the floor a decaying schedule ends at (nanoGPT: lr / 10)
    clip_norm: float | None = None         # clip the global gradient norm
    grad: str = "manual"                   # "manual" (hand-derived rules) or "autodiff" (references)
    seed: int = 0
    eval_every: int | None = None          # steps between evaluations; default one epoch (language data:
                                           # LANGUAGE_EVAL_EVERY)
    eval_batch_size: int | None = None     # default max(batch_size, MIN_EVAL_BATCH)
    eval_batches: int = 20                 # language data: random validation windows batches per evaluation
    eval_seed: int = 12345                 # language data: the validation windows are drawn from this key, the
                                           # same for every training seed, so runs compare on the same windows
    seq_len: int = 128                     # language data: window length
    windows: str = "random"                # language data: "random" windows, or "sequential" streams (truncated
                                           # BPTT: row b of batch s+1 continues row b of batch s)
    patience: int | None = None            # early stopping: evaluations without improvement
    monitor: str = "val_loss"              # val_loss (lower is better) or val_accuracy (higher is better)
    scan: bool | None = None               # many steps per compiled call (lax.scan) vs one call per step;
                                           # None: scan unless XLA's CPU backend would slow the step down
                                           # (autodiff's convolutions, see funcdl.core.xla.scan_is_slow)
    ynn: bool | None = None                # XLA's YNNPACK option (CPU); None: on for steps with convolutions
                                           # (funcdl.core.xla.compiler_options)
    freeze: str | None = None              # regex on parameter paths ("layers/0/w"); those are not updated
    init_from: str | None = None           # checkpoint whose matching params replace the initial ones
    init_exclude: str | None = None        # regex on parameter paths --init-from must not copy (a new head: "^out/")
    augment: str | None = None             # training-batch augmentation: "translate=2", "crop=4+flip+cutmix=1"
                                           # (funcdl.training.augment.make_augment)
    classes: Any = None                    # keep only these classes ("0-4", (5, 6, 7, 8, 9)), relabelled 0..k-1
    label_fraction: float | None = None    # keep this share of the training labels (per class, fixed seed 0)
    log_every: int = 10                    # steps per train record in metrics.jsonl
    progress: bool = True                  # tqdm progress bar
    plots: bool = True
    stop_after: int | None = None          # stop (with a checkpoint) after this many steps, as Ctrl-C would
    val_fraction: float | None = None      # share of train held out for validation (None: the data set's own)

    def __post_init__(self):
        if self.grad not in ("manual", "autodiff"):
            raise ValueError(f"grad must be 'manual' or 'autodiff', got {self.grad!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.windows not in ("random", "sequential"):
            raise ValueError(f"windows must be 'random' or 'sequential', got {self.windows!r}")
        if self.monitor not in ("val_loss", "val_accuracy"):
            raise ValueError(f"monitor must be 'val_loss' or 'val_accuracy', got {self.monitor!r}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"clip_norm must be > 0 (the largest global gradient norm kept), got {self.clip_norm}")
        if self.eval_every is not None and self.eval_every < 1:
            raise ValueError(f"eval_every must be >= 1, got {self.eval_every}")
        for what in ("freeze", "init_exclude"):
            pattern = getattr(self, what)
            if pattern:
                try:
                    re.compile(pattern)
                except re.error as err:
                    raise ValueError(f"{what} pattern {pattern!r} is not a valid regular expression: {err}") from None
        if self.label_fraction is not None and not 0.0 < self.label_fraction <= 1.0:
            raise ValueError(f"label_fraction must lie in (0, 1], got {self.label_fraction}")

    def asdict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class TrainResult:
    params: Any
    state: Any
    opt_state: Any
    summary: dict
    history: list


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


# ---------------------------------------------------------------------------------------------------------
# optimizer, schedule, freezing


def make_schedule(name: str, lr: float, total_steps: int, warmup_steps: int = 0, min_lr: float = 0.0):
    """A learning-rate schedule by name (``optim.make_schedule``): a float for ``constant`` without warm-up,
    else a function ``step -> lr``. Names: ``optim.SCHEDULES`` (constant, cosine, linear, one_cycle, ...)."""
    if name in (None, "", "constant") and not warmup_steps:
        return float(lr)
    return optim.make_schedule(name or "constant", lr, int(total_steps), int(warmup_steps or 0), float(min_lr or 0.0))


def make_optimizer(config: TrainConfig, total_steps: int):
    """``optim.create(config.optimizer, schedule, weight_decay=..., **config.optimizer_options)``, after
    ``optim.clip_by_global_norm(config.clip_norm)`` when clipping is asked for."""
    lr = make_schedule(config.schedule, config.lr, total_steps, config.warmup_steps, config.min_lr)
    hyper = dict(config.optimizer_options)
    if config.weight_decay is not None:
        hyper["weight_decay"] = config.weight_decay
    try:
        opt = optim.create(config.optimizer, lr, **hyper)
    except TypeError as err:
        raise ValueError(f"optimizer {config.optimizer!r} does not take these options {sorted(hyper)}: {err}") \
            from None
    if config.clip_norm is not None:
        opt = optim.chain(optim.clip_by_global_norm(config.clip_norm), opt)
    return opt, lr


def freeze_mask(params, pattern: str | None):
    """A pytree of bools like ``params``: True where the leaf's path (``layers/0/w``) matches ``pattern``
    (``re.search``), as ``optim.frozen_mask`` reads it."""
    if not pattern:
        return jax.tree.map(lambda _: False, params)
    return optim.frozen_mask(params, pattern)


def optim_paths(params) -> list[str]:
    return [optim.path_str(k) for k, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def param_count(params) -> int:
    return int(sum(np.size(x) for x in jax.tree.leaves(params)))


# ---------------------------------------------------------------------------------------------------------
# evaluation


def _eval_fns(task: Task, loop: bool = False, compiler_options: dict | None = None):
    def batch_metrics(params, state, batch):
        _, (_, metrics) = task.loss(params, state, batch, None, False)
        return metrics

    one_batch = jax.jit(batch_metrics, compiler_options=compiler_options)

    def full_batches_scan(params, state, arrays):       # arrays: each (nb, EB, ...)
        def body(_, batch):
            return None, batch_metrics(params, state, batch)
        _, metrics = jax.lax.scan(body, None, arrays)
        return jax.tree.map(lambda m: jnp.mean(m, 0), metrics)

    full_batches_scan = jax.jit(full_batches_scan, compiler_options=compiler_options)

    def full_batches_loop(params, state, arrays):
        nb = len(next(iter(arrays.values())))
        ms = [one_batch(params, state, {k: v[i] for k, v in arrays.items()}) for i in range(nb)]
        return jax.tree.map(lambda *m: jnp.mean(jnp.stack(m), 0), *ms)

    return (full_batches_loop if loop else full_batches_scan), one_batch


def evaluate(task: Task, params, state, arrays: dict, batch_size: int = MIN_EVAL_BATCH, _fns=None) -> dict:
    """Metrics of ``task.loss`` (evaluation mode) averaged over every example of a split (exact average:
    full batches inside one ``lax.scan`` -- or a loop of jitted calls where a scan is slow, see
    :func:`scan_is_slow` -- plus one remainder batch, weighted by their sizes)."""
    if _fns is None:
        probe = {k: v[: min(batch_size, len(v))] for k, v in arrays.items()}
        fn = lambda p, s, b: task.loss(p, s, b, None, False)  # noqa: E731
        _fns = _eval_fns(task, loop=scan_is_slow(fn, params, state, probe),
                         compiler_options=compiler_options(fn, params, state, probe))
    full_batches, one_batch = _fns
    n = len(next(iter(arrays.values())))
    bs = min(batch_size, n)
    nb, rest = divmod(n, bs)
    parts = []
    if nb:
        stacked = {k: v[: nb * bs].reshape(nb, bs, *v.shape[1:]) for k, v in arrays.items()}
        parts.append((nb * bs, full_batches(params, state, stacked)))
    if rest:
        parts.append((rest, one_batch(params, state, {k: v[nb * bs:] for k, v in arrays.items()})))
    out = {}
    for key in parts[0][1]:
        out[key] = float(sum(w * float(m[key]) for w, m in parts) / n)
    return out


# ---------------------------------------------------------------------------------------------------------
# the loop


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items() if not callable(v)}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


class _Interrupt:
    """SIGINT sets a flag that the loop reads between compiled calls (a call is never cut in half)."""

    def __init__(self):
        self.flag = False
        self.old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.old = signal.getsignal(signal.SIGINT)

            def handler(signum, frame):
                if self.flag:                 # a second Ctrl-C: stop at once
                    raise KeyboardInterrupt
                self.flag = True
                print("\ninterrupt: finishing the current chunk, saving a checkpoint (Ctrl-C again to abort)",
                      flush=True)

            signal.signal(signal.SIGINT, handler)
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)


def _chunks(start: int, total: int, boundaries: list[int], epoch_len: int | None, max_len: int):
    """Step ranges [a, b) from start to total, cut at every boundary and epoch end, at most max_len long."""
    cuts = {total} | {b for b in boundaries if start < b < total}
    if epoch_len:
        cuts |= set(range((start // epoch_len + 1) * epoch_len, total, epoch_len))
    a = start
    for b in sorted(cuts):
        while b - a > max_len:
            yield a, a + max_len
            a += max_len
        if b > a:
            yield a, b
        a = b


def train(task: Task, data: Dataset, config: TrainConfig | None = None, out_dir=None, *, resume: bool = False,
          run_info: dict | None = None) -> TrainResult:
    """Train ``task`` on ``data`` with ``config``; write the run files into ``out_dir`` when given.

    ``resume=True`` continues from ``out_dir/checkpoint.npz``. ``run_info`` (model and data names, model
    options) is copied into ``config.json`` and ``summary.json``. Returns the final params, state, optimizer
    state, the summary dict and the metric history (list of records).
    """
    config = config or TrainConfig()
    run_info = dict(run_info or {})
    out = Path(out_dir) if out_dir is not None else None
    t_start = time.perf_counter()

    # ---- data geometry --------------------------------------------------------------------------------
    B = config.batch_size
    windowed = data.windowed
    train_arrays = data.splits["train"]
    if windowed:
        n_tokens = data.size("train")
        epoch_len = None
        if config.steps is None and config.epochs is None:
            raise ValueError("language data need --steps (or --epochs: passes of batch_size * seq_len tokens)")
        steps_per_epoch = max(1, n_tokens // (B * config.seq_len))
        for split in data.splits:
            if data.size(split) < config.seq_len + 1:
                raise ValueError(f"{data.name}[{split!r}] has {data.size(split)} tokens, fewer than seq_len + 1 = "
                                 f"{config.seq_len + 1}; use a smaller --set seq_len=...")
    else:
        n_train = data.size("train")
        if B > n_train:
            raise ValueError(f"batch size {B} is larger than the {n_train} training examples of {data.name}")
        steps_per_epoch = n_train // B
        epoch_len = steps_per_epoch
    if config.steps is not None:
        total = int(config.steps)
    else:
        total = int((config.epochs or 1) * steps_per_epoch)
    eval_every = config.eval_every or (LANGUAGE_EVAL_EVERY if windowed else steps_per_epoch)
    has_val = "val" in data.splits
    has_test = "test" in data.splits
    if config.patience is not None and not has_val:
        raise ValueError(f"early stopping (patience) needs a validation split; {data.name} has "
                         f"{sorted(data.splits)} (set val_fraction > 0)")
    eval_bs = config.eval_batch_size or max(B, MIN_EVAL_BATCH)

    # ---- model, optimizer, keys --------------------------------------------------------------------------
    key = jax.random.PRNGKey(config.seed)
    init_key, data_key, step_key = jax.random.split(key, 3)
    params, state = task.init(init_key)
    if config.init_from:
        params, copied, skipped = ckpt.load_matching(config.init_from, params, exclude=config.init_exclude)
        if not copied:
            raise ValueError(f"--init-from {config.init_from}: no parameter matches this model by path and shape")
        print(f"init-from {config.init_from}: copied {len(copied)} arrays, kept fresh {len(skipped)}"
              + (f" ({', '.join(skipped[:4])}{'...' if len(skipped) > 4 else ''})" if skipped else ""))
        if jax.tree.leaves(state):      # batch-norm running statistics travel with the weights they belong to
            state, s_copied, _ = ckpt.load_matching(config.init_from, state, name="state",
                                                    exclude=config.init_exclude)
            print(f"init-from {config.init_from}: copied {len(s_copied)} state arrays (running statistics)")
    opt, lr_schedule = make_optimizer(config, total)
    mask = freeze_mask(params, config.freeze)
    n_frozen = sum(np.size(p) for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask), strict=True) if m)
    if config.freeze and not n_frozen:
        raise ValueError(f"--freeze {config.freeze!r} matches no parameter; parameter paths look like "
                         f"{', '.join(optim_paths(params)[:4])}")
    if n_frozen:
            opt = optim.freeze(opt, config.freeze)      # frozen leaves: no optimizer state, exactly zero updates
    opt_state = opt.init(params)
    # donation needs one buffer per leaf: optimizers may put the same zeros in two places (Adam's mu and nu)
    params, opt_state, state = jax.tree.map(lambda x: jnp.array(x, copy=True), (params, opt_state, state))
    n_params = param_count(params)

    loss_fn = task.loss if config.grad == "manual" else autodiff(task.loss)

    def objective(params, state, batch, key):
        return loss_fn(params, state, batch, key, True)

    augment = make_augment(config.augment, data.num_classes) if config.augment else None

    def train_step(params, opt_state, state, batch, key):
        if augment is not None:
            batch = augment(jax.random.fold_in(key, AUGMENT_STREAM), batch)
        (loss, (new_state, metrics)), grads = jax.value_and_grad(objective, has_aux=True)(params, state, batch,
                                                                                           key)
        # keep every carried array's dtype (mixed float32/float64 models under jax_enable_x64 would promote)
        grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params)
        state = jax.tree.map(lambda n, o: jnp.asarray(n).astype(jnp.asarray(o).dtype), new_state, state)
        gnorm = optim.global_norm(grads)             # logged before clipping (clipping is part of opt)
        updates, new_opt_state = opt.update(grads, opt_state, params)
        opt_state = jax.tree.map(lambda n, o: jnp.asarray(n).astype(jnp.asarray(o).dtype), new_opt_state, opt_state)
        params = jax.tree.map(lambda p, u: (p + u).astype(p.dtype), params, updates)
        metrics = {**metrics, "loss": loss, "grad_norm": gnorm}
        return params, opt_state, state, metrics

    # ---- data on the device --------------------------------------------------------------------------
    dev_train = jax.device_put(train_arrays)
    n_train_rows = data.size("train")

    def batch_at(arrays, idx):
        return {k: v[idx] for k, v in arrays.items()}

    @jax.jit
    def epoch_order(e):
        return epoch_indices(jax.random.fold_in(data_key, e), n_train_rows, B)

    def window_batch(tokens, s):
        if config.windows == "sequential":
            return sequential_windows(tokens, s, B, config.seq_len)
        return sample_windows(tokens, jax.random.fold_in(data_key, s), B, config.seq_len)

    # scan path: one compiled call per chunk
    def chunk_fn(params, opt_state, state, arrays, s0, epoch, length):
        steps = s0 + jnp.arange(length)
        if windowed:
            def body(carry, s):
                batch = window_batch(arrays["tokens"], s)
                p, o, st, m = train_step(*carry, batch, jax.random.fold_in(step_key, s))
                return (p, o, st), m
            (params, opt_state, state), metrics = jax.lax.scan(body, (params, opt_state, state), steps)
        else:
            order = epoch_indices(jax.random.fold_in(data_key, epoch), n_train_rows, B)
            idx = jax.lax.dynamic_slice_in_dim(order, s0 - epoch * epoch_len, length)

            def body(carry, xs):
                s, rows = xs
                p, o, st, m = train_step(*carry, batch_at(arrays, rows), jax.random.fold_in(step_key, s))
                return (p, o, st), m
            (params, opt_state, state), metrics = jax.lax.scan(body, (params, opt_state, state), (steps, idx))
        return params, opt_state, state, metrics

    # python-loop path: one compiled call per step (batch gathered inside the same call)
    def one_step(params, opt_state, state, arrays, s, rows):
        batch = window_batch(arrays["tokens"], s) if windowed else batch_at(arrays, rows)
        return train_step(params, opt_state, state, batch, jax.random.fold_in(step_key, s))

    # ---- scan or loop, compiler options (funcdl.core.xla) ------------------------------------------------------
    if windowed:
        probe_batch = jax.eval_shape(lambda t: window_batch(t, 0), dev_train["tokens"])
    else:
        probe_batch = jax.eval_shape(lambda a: batch_at(a, jnp.arange(B)), dev_train)
    probe = (params, opt_state, state, probe_batch, step_key)
    use_scan = config.scan
    if use_scan is None:
        use_scan = not scan_is_slow(train_step, *probe)
    xla_options = compiler_options(train_step, *probe, ynn=config.ynn)
    run_chunk = jax.jit(chunk_fn, static_argnames="length", donate_argnums=(0, 1, 2), compiler_options=xla_options)
    run_step = jax.jit(one_step, donate_argnums=(0, 1, 2), compiler_options=xla_options)
    eval_fns = _eval_fns(task, loop=not use_scan, compiler_options=xla_options)
    dev_val = jax.device_put(data.splits["val"]) if has_val else None

    eval_key = jax.random.PRNGKey(config.eval_seed)

    @jax.jit
    def window_eval(params, state, tokens):
        def body(_, i):
            batch = sample_windows(tokens, jax.random.fold_in(eval_key, i), B, config.seq_len)
            _, (_, m) = task.loss(params, state, batch, None, False)
            return None, m
        _, ms = jax.lax.scan(body, None, jnp.arange(config.eval_batches))
        return jax.tree.map(lambda m: jnp.mean(m, 0), ms)

    def run_eval(split_arrays):
        if windowed:
            m = window_eval(params, state, split_arrays["tokens"])
            return {k: float(v) for k, v in m.items()}
        return evaluate(task, params, state, split_arrays, eval_bs, eval_fns)

    # ---- resume ------------------------------------------------------------------------------------------
    step = 0
    best = {"value": None, "step": None, "bad_evals": 0}
    history: list[dict] = []
    if resume:
        if out is None or not (out / "checkpoint.npz").is_file():
            raise FileNotFoundError(f"--resume: no checkpoint.npz in {out}")
        trees, meta = ckpt.restore(out / "checkpoint.npz",
                                   {"params": params, "opt_state": opt_state, "state": state})
        params, opt_state, state = trees["params"], trees["opt_state"], trees["state"]
        step = int(meta["step"])
        best = meta.get("best", best)
        if meta.get("key") != np.asarray(key).tolist():
            raise ValueError(f"--resume: the checkpoint was written with another seed ({meta.get('key')})")
        if (out / "metrics.jsonl").is_file():
            lines = (out / "metrics.jsonl").read_text().splitlines()
            history = [r for r in map(json.loads, lines) if r["step"] <= step]
        print(f"resuming {out} at step {step}/{total}")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        cfg = {**run_info, "train": _jsonable(config.asdict()), "data_size": {k: data.size(k) for k in data.splits},
               "params": n_params, "total_steps": total, "steps_per_epoch": steps_per_epoch}
        (out / "config.json").write_text(json.dumps(cfg, indent=1, default=str))
        with open(out / "metrics.jsonl", "w") as f:          # rewritten so that it ends at the checkpoint
            for r in history:
                f.write(json.dumps(r) + "\n")

    def lr_at(s):
        return float(lr_schedule(s)) if callable(lr_schedule) else float(lr_schedule)

    def save_checkpoint(path_name="checkpoint.npz"):
        if out is None:
            return
        ckpt.save(out / path_name, {"params": params, "opt_state": opt_state, "state": state},
                  {"step": step, "epoch": step // steps_per_epoch, "position": step % steps_per_epoch,
                   "key": np.asarray(key).tolist(), "best": best, "total_steps": total,
                   "model": run_info.get("model"), "data": run_info.get("data")})

    def log(record):
        history.append(record)
        if out is not None:
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    # ---- the loop ----------------------------------------------------------------------------------------
    stop_reason = "finished"
    error = None
    boundaries = list(range(eval_every, total, eval_every))
    if config.stop_after is not None:
        boundaries.append(int(config.stop_after))
    max_chunk = eval_every if windowed else (epoch_len or total)
    max_chunk = min(max_chunk, MAX_STEPS_PER_CALL)
    train_seconds, first_chunk_seconds, first_len, steps_done = 0.0, None, 0, 0
    best_params = None
    examples_per_step = B * (config.seq_len if windowed else 1)
    bar = None
    if config.progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, initial=step, unit="step", dynamic_ncols=True,
                   desc=f"{run_info.get('model', 'model')}/{data.name}")
    last_val: dict = {}
    with _Interrupt() as interrupt:
        for a, b in _chunks(step, total, boundaries, epoch_len, max_chunk):
            t0 = time.perf_counter()
            epoch = a // steps_per_epoch
            if use_scan:
                params, opt_state, state, metrics = run_chunk(
                    params, opt_state, state, dev_train, jnp.int32(a), jnp.int32(epoch), length=b - a)
            else:
                order = None if windowed else epoch_order(epoch)
                ms = []
                for s in range(a, b):
                    rows = None if windowed else order[s - epoch * epoch_len]
                    params, opt_state, state, m = run_step(params, opt_state, state, dev_train, jnp.int32(s), rows)
                    ms.append(m)
                    if bar is not None and (s - a) % 10 == 9:      # a slow loop still shows its progress
                        bar.update(10)
                metrics = jax.tree.map(lambda *x: jnp.stack(x), *ms)
            metrics = jax.tree.map(np.asarray, metrics)    # waits for the device
            dt = time.perf_counter() - t0
            train_seconds += dt
            if first_chunk_seconds is None:
                first_chunk_seconds, first_len = dt, b - a
            losses = metrics["loss"]
            bad = np.flatnonzero(~np.isfinite(losses))
            if bad.size:
                bad_step = a + int(bad[0]) + 1
                error = (f"loss became {losses[bad[0]]} at step {bad_step} (epoch {epoch}); stopped. The last good "
                         f"checkpoint ({out / 'checkpoint.npz' if out else 'none written'}) is kept. Try a lower "
                         "--lr, --clip-norm or a warm-up.")
                stop_reason = "diverged"
                break
            step = b
            steps_done += b - a
            for w0 in range(0, b - a, config.log_every):
                w1 = min(b - a, w0 + config.log_every)
                rec = {"split": "train", "step": a + w1, "epoch": (a + w1) / steps_per_epoch, "lr": lr_at(a + w0)}
                rec |= {k: float(np.mean(v[w0:w1])) for k, v in metrics.items()}
                log(rec)
            is_eval = step % eval_every == 0 or step == total
            if is_eval and has_val:
                last_val = run_eval(dev_val)
                log({"split": "val", "step": step, "epoch": step / steps_per_epoch, **last_val})
                if config.patience is not None:
                    value = last_val["loss" if config.monitor == "val_loss" else "accuracy"]
                    better = best["value"] is None or (value < best["value"] if config.monitor == "val_loss"
                                                       else value > best["value"])
                    if better:
                        best = {"value": value, "step": step, "bad_evals": 0}
                        best_params = jax.device_get(params)
                        save_checkpoint("best.npz")
                    else:
                        best["bad_evals"] += 1
            if bar is not None:
                post = {"loss": f"{float(np.mean(losses)):.4f}", "steps/s": f"{(b - a) / dt:.0f}"}
                if last_val:
                    post["val_loss"] = f"{last_val['loss']:.4f}"
                    if "accuracy" in last_val:
                        post["val_acc"] = f"{last_val['accuracy']:.3f}"
                bar.set_postfix(post, refresh=False)
                bar.update(b - a - (0 if use_scan else (b - a) // 10 * 10))
            if is_eval or step == total:
                save_checkpoint()
            if interrupt.flag:
                stop_reason = "interrupted"
                save_checkpoint()
                break
            if config.stop_after is not None and step >= config.stop_after and step < total:
                stop_reason = "stopped"
                save_checkpoint()
                break
            if config.patience is not None and best["bad_evals"] >= config.patience:
                stop_reason = "early_stopping"
                save_checkpoint()
                break
    if bar is not None:
        bar.close()

    # ---- final evaluation and summary --------------------------------------------------------------------
    wall = time.perf_counter() - t_start
    summary: dict[str, Any] = {
        **{k: v for k, v in run_info.items() if k in ("model", "data", "model_options")},
        "grad": config.grad, "scan": bool(use_scan), "optimizer": config.optimizer, "lr": config.lr,
        "batch_size": B, "seed": config.seed, "steps": step, "total_steps": total,
        "epochs": round(step / steps_per_epoch, 3), "params": n_params, "stopped": stop_reason,
        "wall_seconds": round(wall, 3), "train_seconds": round(train_seconds, 3),
        "steps_per_second": round(steps_done / train_seconds, 2) if train_seconds else None,
        "examples_per_second": round(steps_done * examples_per_step / train_seconds, 1) if train_seconds else None,
    }
    if steps_done and first_chunk_seconds is not None and train_seconds > first_chunk_seconds:
        steady = (steps_done - first_len) / (train_seconds - first_chunk_seconds)
        summary["steps_per_second_steady"] = round(steady, 2)      # without the first (compiling) call
    if config.freeze:
        summary["frozen_params"] = int(n_frozen)
    if error:
        summary["error"] = error
    final_params = params
    if stop_reason not in ("diverged",):
        if config.patience is not None and best["step"] is not None and best["step"] != step:
            if best_params is not None:
                final_params = jax.device_put(best_params)
            elif out is not None:          # the best step came before a resume: read it back
                final_params = ckpt.restore(out / "best.npz", {"params": params})[0]["params"]
            summary["best_step"] = best["step"]
        params_for_eval = final_params
        saved = params
        params = params_for_eval
        if has_val:
            val = last_val if (params is saved and last_val) else run_eval(dev_val)
            summary |= {f"val_{k}": round(v, 6) for k, v in val.items()}
        if has_test and not windowed:
            test = run_eval(jax.device_put(data.splits["test"]))
            summary |= {f"test_{k}": round(v, 6) for k, v in test.items()}
        params = saved
    if history:
        last_train = [r for r in history if r["split"] == "train"][-1]
        summary["train_loss"] = round(last_train["loss"], 6)
    if out is not None:
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        if config.plots and history:
            try:
                from ..plots.training import plot_run
                plot_run(out)
            except Exception as err:  # a plotting problem must not lose a finished run
                print(f"warning: plots not written: {err}")
    if error:
        print(error)
    return TrainResult(final_params, state, opt_state, summary, history)
