"""Evaluation: a task's metrics in evaluation mode, averaged exactly over a split or over fixed random windows."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..core.xla import compiler_options, scan_is_slow
from ..data.base import sample_windows
from .config import MIN_EVAL_BATCH
from .parallel import to_host
from .task import Task

__all__ = ["evaluate", "eval_functions", "window_evaluator"]


def eval_functions(task: Task, loop: bool = False, options: dict | None = None):
    """``(full_batches, one_batch)``: metrics of stacked full batches (one ``lax.scan``, or a loop of jitted calls
    where a scan is slow) and of one batch, each compiled once with XLA ``options``."""
    def batch_metrics(params, state, batch):
        _, (_, metrics) = task.loss(params, state, batch, None, False)
        return metrics

    one_batch = jax.jit(batch_metrics, compiler_options=options)

    def full_batches_scan(params, state, arrays):       # arrays: each (nb, EB, ...)
        def body(_, batch):
            return None, batch_metrics(params, state, batch)
        _, metrics = jax.lax.scan(body, None, arrays)
        return jax.tree.map(lambda m: jnp.mean(m, 0), metrics)

    def full_batches_loop(params, state, arrays):
        nb = len(next(iter(arrays.values())))
        ms = [one_batch(params, state, {k: v[i] for k, v in arrays.items()}) for i in range(nb)]
        return jax.tree.map(lambda *m: jnp.mean(jnp.stack(m), 0), *ms)

    full = full_batches_loop if loop else jax.jit(full_batches_scan, compiler_options=options)
    return full, one_batch


def evaluate(task: Task, params, state, arrays: dict, batch_size: int = MIN_EVAL_BATCH, _fns=None) -> dict:
    """Metrics of ``task.loss`` (evaluation mode) averaged over every example of a split (exact average:
    full batches inside one ``lax.scan`` -- or a loop of jitted calls where a scan is slow, see
    :func:`funcdl.core.xla.scan_is_slow` -- plus one remainder batch, weighted by their sizes)."""
    if _fns is None:
        probe = {k: v[: min(batch_size, len(v))] for k, v in arrays.items()}
        fn = lambda p, s, b: task.loss(p, s, b, None, False)  # noqa: E731
        _fns = eval_functions(task, loop=scan_is_slow(fn, params, state, probe),
                              options=compiler_options(fn, params, state, probe))
    full_batches, one_batch = _fns
    n = len(next(iter(arrays.values())))
    bs = min(batch_size, n)
    nb, rest = divmod(n, bs)
    parts = []
    if nb:
        stacked = {k: v[: nb * bs].reshape(nb, bs, *v.shape[1:]) for k, v in arrays.items()}
        parts.append((nb * bs, to_host(full_batches(params, state, stacked))))
    if rest:
        parts.append((rest, to_host(one_batch(params, state, {k: v[nb * bs:] for k, v in arrays.items()}))))
    return {key: float(sum(w * float(m[key]) for w, m in parts) / n) for key in parts[0][1]}


def window_evaluator(task: Task, batch_size: int, seq_len: int, n_batches: int, seed: int):
    """``evaluate(params, state, split) -> metrics`` over ``n_batches`` batches of random windows of the token
    stream ``split["tokens"]``, the same windows at every call (drawn from ``PRNGKey(seed)``), in one compiled
    ``lax.scan``."""
    key = jax.random.PRNGKey(seed)

    @jax.jit
    def window_eval(params, state, tokens):
        def body(_, i):
            batch = sample_windows(tokens, jax.random.fold_in(key, i), batch_size, seq_len)
            _, (_, m) = task.loss(params, state, batch, None, False)
            return None, m
        _, ms = jax.lax.scan(body, None, jnp.arange(n_batches))
        return jax.tree.map(lambda m: jnp.mean(m, 0), ms)

    def run(params, state, split):
        return {k: float(v) for k, v in to_host(window_eval(params, state, split["tokens"])).items()}

    return run
