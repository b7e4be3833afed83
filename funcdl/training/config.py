"""The options of a training run (``TrainConfig``), what a run returns, and the loop's named constants."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

__all__ = ["TrainConfig", "TrainResult", "RESUMABLE"]

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
    clip_norm: float | None = None         # clip the global gradient norm (optim.clip_by_global_norm)
    grad: str = "manual"                   # "manual" (hand-derived rules) or "autodiff" (references)
    seed: int = 0
    eval_every: int | None = None          # steps between evaluations; default one epoch (language data:
                                           # LANGUAGE_EVAL_EVERY)
    eval_batch_size: int | None = None     # default max(batch_size, MIN_EVAL_BATCH)
    eval_batches: int = 20                 # language data: random validation windows batches per evaluation
    eval_limit: int | None = None          # evaluate on the first N validation and test examples only (quick
                                           # runs; Lightning's limit_val_batches); the summary says so
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
    tensorboard: bool = False              # also write TensorBoard event files into the run directory
    stop_after: int | None = None          # stop (with a checkpoint) after this many steps, as Ctrl-C would
    val_fraction: float | None = None      # share of train held out for validation (None: the data set's own)
    precision: str = "fp32"                # compute dtype: fp32, bf16 or fp16 (float32 master weights, optimizer
                                           # state and loss; fp16 adds dynamic loss scaling)
    devices: int | None = None             # data parallel over this many devices (None: all JAX sees)
    shard: str = "none"                    # "optimizer": ZeRO-sharded optimizer state; "params": params too
    prune: str | None = None               # "gradual:0.9[:global]": magnitude pruning to that sparsity on Zhu &
                                           # Gupta's cubic schedule, masks in the optimizer state
                                           # (funcdl.compress.prune.gradual_optimizer)
    track: str | None = None               # "gradflow", "trajectory" or both comma-separated: RUN/gradflow.jsonl,
                                           # RUN/trajectory.npz (funcdl.training.tracking)
    track_every: int | None = None         # steps between tracked records (None: wherever a chunk ends)

    def __post_init__(self):
        _at_least(self, 1, "batch_size", "steps", "epochs", "eval_every", "patience", "log_every", "eval_batches",
                  "seq_len", "stop_after", "eval_batch_size", "track_every", "eval_limit")
        _at_least(self, 0, "warmup_steps")
        for name, allowed in (("grad", ("manual", "autodiff")), ("windows", ("random", "sequential")),
                              ("monitor", ("val_loss", "val_accuracy")), ("precision", ("fp32", "bf16", "fp16")),
                              ("shard", ("none", "optimizer", "params"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be {' or '.join(map(repr, allowed))}, got {getattr(self, name)!r}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"clip_norm must be > 0 (the largest global gradient norm kept), got {self.clip_norm}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        for what in ("freeze", "init_exclude"):
            pattern = getattr(self, what)
            if pattern:
                try:
                    re.compile(pattern)
                except re.error as err:
                    raise ValueError(f"{what} pattern {pattern!r} is not a valid regular expression: {err}") from None
        if self.prune is not None:
            from ..compress.prune import parse_prune
            parse_prune(self.prune)
        if self.track is not None:
            from .tracking import parse_track
            self.track = ",".join(parse_track(self.track)) or None
        if self.track_every is not None and not self.track:
            raise ValueError("track_every needs track=gradflow and/or trajectory (--set track=...)")
        if self.label_fraction is not None and not 0.0 < self.label_fraction <= 1.0:
            raise ValueError(f"label_fraction must lie in (0, 1], got {self.label_fraction}")

    def asdict(self) -> dict:
        return dataclasses.asdict(self)


def _at_least(config, low, *names):
    for name in names:
        value = getattr(config, name)
        if value is not None and value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")


# the options a resumed run may change (everything else must match the checkpoint's run, see rundir.py):
# how long to train and how to report, not what is trained or how the gradient is made
RESUMABLE = frozenset({
    "epochs", "steps", "eval_every", "eval_batch_size", "patience", "scan", "ynn", "log_every", "progress",
    "plots", "stop_after", "devices", "tensorboard", "track", "track_every",
})


@dataclasses.dataclass
class TrainResult:
    params: Any
    state: Any
    opt_state: Any
    summary: dict
    history: list


def enable_compile_cache(folder=None, min_seconds: float = 0.5) -> str:
    """Turn on JAX's persistent compilation cache (``funcdl train`` does, unless ``--no-compile-cache``): a
    second run of the same model skips XLA's compilation of every program that took over ``min_seconds``.
    The default folder is ``jax-compile`` in funcdl's cache folder ($FUNCDL_DATA or ~/.cache/funcdl)."""
    import jax

    from ..data.download import cache_dir

    folder = str(folder or cache_dir("jax-compile"))
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_seconds))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder
