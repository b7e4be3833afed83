"""The generic training loop: a Task, a data set and an optimizer in; metrics, checkpoints and plots out.

One training step is the whole of gradient descent (``funcdl.training.step``):

    (loss, (state, metrics)), g = value_and_grad(task.loss)(params, state, batch, key, train=True)
    updates, opt_state = opt.update(g, opt_state, params)     # opt = [clip ->] optimizer [-> freeze]
    params = params + updates

``grad="manual"`` differentiates ``task.loss`` as it is, so ``jax.grad`` runs every primitive's hand-derived
rule; ``grad="autodiff"`` differentiates ``funcdl.autodiff(task.loss)``, the same loss through the plain
``jax.numpy`` references. The two give the same numbers up to float32 rounding.

The pieces: ``config`` (the options), ``step`` (optimizer and step), ``evaluate``, ``rundir`` (the run folder,
its lock, checkpoints and resume), ``stopping`` (Ctrl-C, NaN, early stopping) and this driver.

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
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..core.xla import compiler_options, scan_is_slow
from ..data.base import Dataset, epoch_indices, sample_windows, sequential_windows
from . import checkpoint as ckpt
from .augment import make_augment
from .config import LANGUAGE_EVAL_EVERY, MAX_STEPS_PER_CALL, MIN_EVAL_BATCH, TrainConfig, TrainResult
from .evaluate import eval_functions, evaluate, window_evaluator
from .parallel import is_writer, make_parallel, per_device_bytes, to_host
from .rundir import RunDir, RunDirectoryBusy
from .step import (
    donatable,
    freeze_mask,
    make_optimizer,
    make_players_step,
    make_schedule,
    make_train_step,
    param_count,
    players_optimizer,
    with_freezing,
)
from .stopping import EarlyStopping, Interrupt, first_bad_step
from .streaming import StreamPlan, make_stream_runner, stream_window_evaluator
from .task import Task
from .tracking import Tracker, parse_track, probe_batch

__all__ = ["TrainConfig", "TrainResult", "train", "evaluate", "make_optimizer", "make_schedule", "param_count",
           "freeze_mask", "RunDirectoryBusy", "scan_is_slow"]


@dataclasses.dataclass(frozen=True)
class Geometry:
    """How the data and the options cut a run into steps."""

    batch_size: int
    windowed: bool                 # language data: random windows of a token stream
    steps_per_epoch: int
    epoch_len: int | None          # steps per pass over the examples (None for windows)
    total: int
    eval_every: int
    eval_batch_size: int
    examples_per_step: int


def geometry(data: Dataset, config: TrainConfig) -> Geometry:
    B = config.batch_size
    if data.windowed:
        if config.steps is None and config.epochs is None:
            raise ValueError("language data need --steps (or --epochs: passes of batch_size * seq_len tokens)")
        for split in data.splits:
            if data.size(split) < config.seq_len + 1:
                raise ValueError(f"{data.name}[{split!r}] has {data.size(split)} tokens, fewer than seq_len + 1 = "
                                 f"{config.seq_len + 1}; use a smaller --set seq_len=...")
        steps_per_epoch, epoch_len = max(1, data.size("train") // (B * config.seq_len)), None
    else:
        n_train = data.size("train")
        if B > n_train:
            raise ValueError(f"batch size {B} is larger than the {n_train} training examples of {data.name}")
        steps_per_epoch = epoch_len = n_train // B
    total = int(config.steps if config.steps is not None else (config.epochs or 1) * steps_per_epoch)
    if config.patience is not None and "val" not in data.splits:
        raise ValueError(f"early stopping (patience) needs a validation split; {data.name} has "
                         f"{sorted(data.splits)} (set val_fraction > 0)")
    return Geometry(B, data.windowed, steps_per_epoch, epoch_len, total,
                    config.eval_every or (LANGUAGE_EVAL_EVERY if data.windowed else steps_per_epoch),
                    config.eval_batch_size or max(B, MIN_EVAL_BATCH), B * (config.seq_len if data.windowed else 1))


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


def _initial_params(task: Task, config: TrainConfig, key):
    """``task.init(key)``, then ``--init-from``: matching parameters (and batch-norm statistics) copied in."""
    params, state = task.init(key)
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
    return params, state


def make_runner(train_step, geo: Geometry, config: TrainConfig, data_key, step_key, n_rows: int, probe,
                use_scan: bool | None, stream: StreamPlan | None = None, put_batches=None):
    """``run(params, opt_state, state, arrays, a, b, bar) -> (params, opt_state, state, metrics)``: steps a..b-1.

    With ``use_scan`` the steps run inside one compiled ``lax.scan``; otherwise as a Python loop of compiled
    steps. Batches are drawn on the device from the seed and the step: windows from ``fold_in(data_key, s)``,
    or rows of the permutation of epoch e drawn from ``fold_in(data_key, e)``. Returns the runner and whether it
    scans (``use_scan=None``: scan unless XLA's CPU backend would slow this step down). With a ``stream`` plan
    the batches are read on the host instead (``training.streaming``), always scanned.
    """
    B = geo.batch_size

    def window_batch(tokens, s):
        if config.windows == "sequential":
            return sequential_windows(tokens, s, B, config.seq_len)
        return sample_windows(tokens, jax.random.fold_in(data_key, s), B, config.seq_len)

    def chunk(params, opt_state, state, arrays, s0, epoch, length):
        steps = s0 + jnp.arange(length)
        if geo.windowed:
            rows = steps                                   # unused: the windows come from the step number
        else:
            order = epoch_indices(jax.random.fold_in(data_key, epoch), n_rows, B)
            rows = jax.lax.dynamic_slice_in_dim(order, s0 - epoch * geo.epoch_len, length)

        def body(carry, xs):
            s, r = xs
            batch = window_batch(arrays["tokens"], s) if geo.windowed else {k: v[r] for k, v in arrays.items()}
            p, o, st, m = train_step(*carry, batch, jax.random.fold_in(step_key, s))
            return (p, o, st), m
        (params, opt_state, state), metrics = jax.lax.scan(body, (params, opt_state, state), (steps, rows))
        return params, opt_state, state, metrics

    def one_step(params, opt_state, state, arrays, s, rows):
        batch = window_batch(arrays["tokens"], s) if geo.windowed else {k: v[rows] for k, v in arrays.items()}
        return train_step(params, opt_state, state, batch, jax.random.fold_in(step_key, s))

    if stream is not None:
        # (the global batch: in several processes the plan reads this process's rows only)
        batch_shape = jax.tree.map(lambda x: jax.ShapeDtypeStruct((B, *x.shape[2:]), x.dtype), stream.batches(0, 1))
    elif geo.windowed:
        batch_shape = jax.eval_shape(lambda a: window_batch(a["tokens"], 0), probe[-1])
    else:
        batch_shape = jax.eval_shape(lambda a: {k: v[jnp.arange(B)] for k, v in a.items()}, probe[-1])
    step_probe = (*probe[:3], batch_shape, step_key)
    if use_scan is None:
        use_scan = not scan_is_slow(train_step, *step_probe)
    options = compiler_options(train_step, *step_probe, ynn=config.ynn)
    if stream is not None:
        return make_stream_runner(train_step, stream, step_key, options, put_batches), True, options
    run_chunk = jax.jit(chunk, static_argnames="length", donate_argnums=(0, 1, 2), compiler_options=options)
    run_step = jax.jit(one_step, donate_argnums=(0, 1, 2), compiler_options=options)
    epoch_order = jax.jit(lambda e: epoch_indices(jax.random.fold_in(data_key, e), n_rows, B))

    def run(params, opt_state, state, arrays, a, b, bar):
        epoch = a // geo.steps_per_epoch
        if use_scan:
            return run_chunk(params, opt_state, state, arrays, jnp.int32(a), jnp.int32(epoch), length=b - a)
        order = None if geo.windowed else epoch_order(epoch)
        ms = []
        for s in range(a, b):
            rows = None if geo.windowed else order[s - epoch * geo.epoch_len]
            params, opt_state, state, m = run_step(params, opt_state, state, arrays, jnp.int32(s), rows)
            ms.append(m)
            if bar is not None and (s - a) % 10 == 9:      # a slow loop still shows its progress
                bar.update(10)
        return params, opt_state, state, jax.tree.map(lambda *x: jnp.stack(x), *ms)

    return run, use_scan, options


@dataclasses.dataclass
class _Run:
    """What changes while a run goes: the trees, the step, the history, the stopping state and the timings."""

    params: Any
    opt_state: Any
    state: Any
    key: Any
    step: int = 0
    history: list = dataclasses.field(default_factory=list)
    last_val: dict = dataclasses.field(default_factory=dict)
    best_params: Any = None
    stop_reason: str = "finished"
    error: str | None = None
    train_seconds: float = 0.0
    first_chunk: tuple | None = None       # (seconds, steps) of the first, compiling call
    steps_done: int = 0

    def trees(self) -> dict:
        return {"params": self.params, "opt_state": self.opt_state, "state": self.state}


def train(task: Task, data: Dataset, config: TrainConfig | None = None, out_dir=None, *, resume: bool = False,
          run_info: dict | None = None) -> TrainResult:
    """Train ``task`` on ``data`` with ``config``; write the run files into ``out_dir`` when given.

    ``resume=True`` continues from ``out_dir/checkpoint.npz`` (options outside ``config.RESUMABLE`` must not
    change). ``run_info`` (model and data names, model options) is copied into ``config.json`` and
    ``summary.json``. Returns the final params, state, optimizer state, the summary and the metric history.
    The run directory is locked for the life of the run (a second writer gets :class:`RunDirectoryBusy`).
    """
    config = config or TrainConfig()
    rundir = RunDir(out_dir, writer=is_writer())
    with rundir.lock():
        return _train(task, data, config, rundir, resume, dict(run_info or {}))


def _train(task, data, config, rundir, resume, run_info) -> TrainResult:
    t_start = time.perf_counter()
    if config.eval_limit is not None:
        data = data.eval_head(config.eval_limit)
    geo = geometry(data, config)
    key = jax.random.PRNGKey(config.seed)
    init_key, data_key, step_key = jax.random.split(key, 3)
    params, state = _initial_params(task, config, init_key)
    augment = make_augment(config.augment, data.num_classes) if config.augment else None
    parallel = make_parallel(config.devices, config.shard, geo.batch_size)
    if task.players:
        if config.freeze or config.precision != "fp32" or parallel is not None:
            raise ValueError("a several-players task trains in fp32 on one device without --freeze (for now)")
        opt, opts, schedule = players_optimizer(task, config, geo.total)
        n_frozen = 0
    else:
        opt, schedule = make_optimizer(config, geo.total)
        opt, n_frozen = with_freezing(opt, params, config.freeze)
    params, opt_state, state = donatable(params, opt.init(params), state)
    layouts = None if parallel is None else parallel.layouts(params, opt_state, state)
    if task.players:
        train_step = make_players_step(task, opts, config, augment)
    else:
        train_step = make_train_step(task, opt, config, augment, parallel, layouts)

    put = jax.device_put if parallel is None else (
        lambda tree: parallel.put(tree, jax.tree.map(lambda _: parallel.replicated, tree)))
    if parallel is not None:
        params, opt_state, state = (parallel.put(t, s) for t, s in zip((params, opt_state, state), layouts,
                                                                         strict=True))
        if is_writer():
            _report_layout(parallel, params, opt_state, layouts)
    if data.streaming:      # the data stay on disk: chunks read on the host (training.streaming)
        dev_train, rows, batch_put = data.splits["train"], None, put
        if parallel is not None:    # each process reads only its devices' rows of every batch
            rows = parallel.local_rows(geo.batch_size)
            batch_put = functools.partial(parallel.put_local_batches, batch_size=geo.batch_size)
        runner, use_scan, options = make_runner(train_step, geo, config, data_key, step_key, data.size("train"),
                                                (params, opt_state, state, None), config.scan,
                                                StreamPlan(geo, config, data_key, dev_train, rows), batch_put)
    else:
        dev_train = put(data.splits["train"])
        runner, use_scan, options = make_runner(train_step, geo, config, data_key, step_key, data.size("train"),
                                                (params, opt_state, state, dev_train), config.scan)
    fns = eval_functions(task, loop=not use_scan, options=options)
    if geo.windowed and data.streaming:
        evaluator = stream_window_evaluator(fns[0], geo.batch_size, config.seq_len, config.eval_batches,
                                            config.eval_seed, put)
    elif geo.windowed:
        evaluator = window_evaluator(task, geo.batch_size, config.seq_len, config.eval_batches, config.eval_seed)
    else:
        evaluator = lambda p, s, arrays: evaluate(task, p, s, arrays, geo.eval_batch_size, fns)  # noqa: E731

    dev_val = None if "val" not in data.splits else data.splits["val"] if data.streaming else put(data.splits["val"])
    tracker = None
    if config.track:        # outside the compiled steps: see funcdl.training.tracking
        tracker = Tracker(parse_track(config.track), config.track_every, rundir, task, opt, config,
                          probe_batch(dev_train, geo.windowed, geo.batch_size, config.seq_len), step_key)
    plan = _Plan(geo, config, rundir, runner, use_scan, evaluator, schedule, dev_train, dev_val,
                 f"{run_info.get('model', 'model')}/{data.name}", run_info, tracker)
    run = _Run(params, opt_state, state, key)
    stopper = EarlyStopping(config.monitor, config.patience)
    resumed = _resume(run, stopper, rundir, config, run_info, parallel, layouts) if resume else None
    if resume:
        print(f"resuming {rundir.path} at step {run.step}/{geo.total}")
    rundir.start({**run_info, "train": config.asdict(), "data_size": {k: data.size(k) for k in data.splits},
                  "params": param_count(params), "total_steps": geo.total, "steps_per_epoch": geo.steps_per_epoch},
                 run.history, resumed, tensorboard=config.tensorboard)
    if tracker is not None:
        tracker.begin(run.step, resume, run.params, run.opt_state, run.state)
    _loop(run, stopper, plan)
    if tracker is not None and run.stop_reason != "diverged":
        tracker.finish(run.step, run.params, run.opt_state, run.state, config.plots)

    summary = _summary(run, geo, config, run_info, use_scan, time.perf_counter() - t_start, n_frozen)
    final_params = run.params
    if run.stop_reason != "diverged":
        final_params = _best_params(run, stopper, rundir, summary)
        if dev_val is not None:
            val = run.last_val if (final_params is run.params and run.last_val) else \
                evaluator(final_params, run.state, dev_val)
            summary |= {f"val_{k}": round(v, 6) for k, v in val.items()}
        if "test" in data.splits and not geo.windowed:
            test = evaluator(final_params, run.state, put(data.splits["test"]))
            summary |= {f"test_{k}": round(v, 6) for k, v in test.items()}
    if run.history:
        summary["train_loss"] = round([r for r in run.history if r["split"] == "train"][-1]["loss"], 6)
    report = (task.extras or {}).get("report")
    if report is not None and run.stop_reason != "diverged" and is_writer():
        # the model's own end-of-run figures and pictures (a generative model's sample metrics)
        summary |= report(final_params, run.state, run.opt_state, data, rundir.path)
    rundir.finish(summary, config.plots and bool(run.history))
    if run.error:
        print(run.error)
    return TrainResult(final_params, run.state, run.opt_state, summary, run.history)


def _report_layout(parallel, params, opt_state, layouts):
    """Print what one device holds: the parameters, the gradients and the optimizer state."""
    grads = parallel.split_first_axis(params) if parallel.shard != "none" else layouts[0]
    size = lambda tree, s: f"{per_device_bytes(tree, s) / 1024:,.1f} KiB"  # noqa: E731
    print(f"data parallel over {parallel.size} devices, shard={parallel.shard}; per device: params "
          f"{size(params, layouts[0])}, gradients {size(params, grads)}, optimizer state {size(opt_state, layouts[1])}")


def _resume(run: _Run, stopper: EarlyStopping, rundir: RunDir, config: TrainConfig, run_info: dict, parallel,
            layouts) -> dict:
    """Load the checkpoint into ``run`` (onto the mesh, when there is one); returns the resume record for
    ``config.json``."""
    path = rundir.checkpoint_path()
    changed = rundir.changed_options(config.asdict(), run_info)
    trees, meta = ckpt.restore(path, to_host(run.trees()))
    run.params, run.opt_state, run.state = trees["params"], trees["opt_state"], trees["state"]
    if parallel is not None:
        run.params, run.opt_state, run.state = (parallel.put(t, s) for t, s in zip(
            (run.params, run.opt_state, run.state), layouts, strict=True))
    run.step = int(meta["step"])
    stopper.best = meta.get("best", stopper.best)
    if meta.get("key") != np.asarray(run.key).tolist():
        raise ValueError(f"--resume: the checkpoint was written with another seed ({meta.get('key')})")
    run.history = rundir.history_until(run.step)
    if changed:
        print("resume changes " + ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items()))
    return {"step": run.step, "changed": changed}


def _progress_bar(config: TrainConfig, geo: Geometry, step: int, name: str):
    if not config.progress or not is_writer():
        return None
    from tqdm.auto import tqdm
    return tqdm(total=geo.total, initial=step, unit="step", dynamic_ncols=True, desc=name)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What a run does, fixed before its first step."""

    geo: Geometry
    config: TrainConfig
    rundir: RunDir
    runner: Any                 # make_runner's run(params, opt_state, state, arrays, a, b, bar)
    use_scan: bool
    evaluator: Any              # (params, state, split arrays) -> metrics
    schedule: Any               # the learning rate: a number or step -> lr
    dev_train: Any
    dev_val: Any
    name: str                   # model/data, for the progress bar
    run_info: dict
    tracker: Tracker | None = None      # --set track=...: records at chunk boundaries


def _loop(run: _Run, stopper: EarlyStopping, plan: _Plan):
    """Run the chunks from ``run.step`` to the end or until a stopping rule fires; log, evaluate, checkpoint."""
    geo, config, rundir, run_info = plan.geo, plan.config, plan.rundir, plan.run_info
    boundaries = list(range(geo.eval_every, geo.total, geo.eval_every))
    if config.stop_after is not None:
        boundaries.append(int(config.stop_after))
    if plan.tracker is not None:
        boundaries += plan.tracker.cuts(geo.total)
    max_chunk = min(geo.eval_every if geo.windowed else (geo.epoch_len or geo.total), MAX_STEPS_PER_CALL)
    bar = _progress_bar(config, geo, run.step, plan.name)

    def save(name="checkpoint.npz"):
        rundir.save(name, to_host(run.trees()), {
            "step": run.step, "epoch": run.step // geo.steps_per_epoch, "position": run.step % geo.steps_per_epoch,
            "key": np.asarray(run.key).tolist(), "best": stopper.best, "total_steps": geo.total,
            "model": run_info.get("model"), "data": run_info.get("data")})
        if plan.tracker is not None and name == "checkpoint.npz":
            plan.tracker.flush()        # the trajectory file and the checkpoint end at the same step

    with Interrupt() as interrupt:
        for a, b in _chunks(run.step, geo.total, boundaries, geo.epoch_len, max_chunk):
            t0 = time.perf_counter()
            run.params, run.opt_state, run.state, metrics = plan.runner(run.params, run.opt_state, run.state,
                                                                        plan.dev_train, a, b, bar)
            metrics = to_host(metrics)                     # waits for the device
            dt = time.perf_counter() - t0
            run.train_seconds += dt
            run.first_chunk = run.first_chunk or (dt, b - a)
            bad = first_bad_step(metrics["loss"])
            if bad is not None:
                run.stop_reason, run.error = "diverged", _diverged_message(metrics["loss"][bad], a + bad + 1,
                                                                           a // geo.steps_per_epoch, rundir)
                break
            run.step = b
            run.steps_done += b - a
            for w0 in range(0, b - a, config.log_every):
                w1 = min(b - a, w0 + config.log_every)
                rec = {"split": "train", "step": a + w1, "epoch": (a + w1) / geo.steps_per_epoch,
                       "lr": float(plan.schedule(a + w0)) if callable(plan.schedule) else float(plan.schedule)}
                _log(run, rundir, rec | {k: float(np.mean(v[w0:w1])) for k, v in metrics.items()})
            if plan.tracker is not None and plan.tracker.due(run.step):
                plan.tracker.record(run.step, run.params, run.opt_state, run.state)
            is_eval = run.step % geo.eval_every == 0 or run.step == geo.total
            if is_eval and plan.dev_val is not None:
                run.last_val = plan.evaluator(run.params, run.state, plan.dev_val)
                _log(run, rundir, {"split": "val", "step": run.step, "epoch": run.step / geo.steps_per_epoch,
                                   **run.last_val})
                if config.patience is not None and stopper.update(run.last_val, run.step):
                    run.best_params = to_host(run.params)
                    save("best.npz")
            _show(bar, metrics["loss"], run.last_val, b - a, dt, 0 if plan.use_scan else (b - a) // 10 * 10)
            run.stop_reason = _stop_reason(interrupt, config, stopper, run.step, geo.total)
            if is_eval or run.step == geo.total or run.stop_reason != "finished":
                save()
            if run.stop_reason != "finished":
                break
    if bar is not None:
        bar.close()


def _log(run: _Run, rundir: RunDir, record: dict):
    run.history.append(record)
    rundir.log(record)


def _show(bar, losses, last_val, n, dt, already):
    if bar is None:
        return
    post = {"loss": f"{float(np.mean(losses)):.4f}", "steps/s": f"{n / dt:.0f}"}
    if last_val:
        post["val_loss"] = f"{last_val['loss']:.4f}"
        if "accuracy" in last_val:
            post["val_acc"] = f"{last_val['accuracy']:.3f}"
    bar.set_postfix(post, refresh=False)
    bar.update(n - already)


def _stop_reason(interrupt, config: TrainConfig, stopper: EarlyStopping, step: int, total: int) -> str:
    if interrupt.flag:
        return "interrupted"
    if config.stop_after is not None and config.stop_after <= step < total:
        return "stopped"
    if stopper.should_stop:
        return "early_stopping"
    return "finished"


def _diverged_message(loss, step: int, epoch: int, rundir: RunDir) -> str:
    if rundir.has("checkpoint.npz"):
        kept = f"The last good checkpoint ({rundir.file('checkpoint.npz')}) is kept."
    else:
        kept = "No checkpoint had been written yet."
    return (f"loss became {loss} at step {step} (epoch {epoch}); stopped. {kept} Try a lower --lr, --clip-norm "
            "or a warm-up.")


def _best_params(run: _Run, stopper: EarlyStopping, rundir: RunDir, summary: dict):
    """With early stopping, the best evaluation's parameters (from memory, or from ``best.npz`` when the best
    step came before a resume); else the final ones."""
    best_step = stopper.best["step"]
    if stopper.patience is None or best_step is None or best_step == run.step:
        return run.params
    summary["best_step"] = best_step
    if run.best_params is not None:
        return jax.device_put(run.best_params)
    return ckpt.restore(rundir.file("best.npz"), {"params": run.params})[0]["params"]


def _summary(run: _Run, geo: Geometry, config: TrainConfig, run_info: dict, use_scan: bool, wall: float,
             n_frozen: int) -> dict:
    summary: dict[str, Any] = {
        **{k: v for k, v in run_info.items() if k in ("model", "data", "model_options")},
        "grad": config.grad, "scan": bool(use_scan), "optimizer": config.optimizer, "lr": config.lr,
        "batch_size": geo.batch_size, "seed": config.seed, "steps": run.step, "total_steps": geo.total,
        "epochs": round(run.step / geo.steps_per_epoch, 3), "params": param_count(run.params),
        "stopped": run.stop_reason, "wall_seconds": round(wall, 3), "train_seconds": round(run.train_seconds, 3),
        "steps_per_second": round(run.steps_done / run.train_seconds, 2) if run.train_seconds else None,
        "examples_per_second": (round(run.steps_done * geo.examples_per_step / run.train_seconds, 1)
                                if run.train_seconds else None),
    }
    if run.steps_done and run.first_chunk is not None and run.train_seconds > run.first_chunk[0]:
        first_seconds, first_len = run.first_chunk
        steady = (run.steps_done - first_len) / (run.train_seconds - first_seconds)
        summary["steps_per_second_steady"] = round(steady, 2)      # without the first (compiling) call
    if config.freeze:
        summary["frozen_params"] = n_frozen
    if config.eval_limit is not None:
        summary["eval_limit"] = config.eval_limit        # val_* and test_* are over the first N examples
    if run.error:
        summary["error"] = run.error
    return summary
