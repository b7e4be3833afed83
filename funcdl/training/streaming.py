"""Training on data that stays on disk (``dataset.streaming``: memory maps, see ``funcdl.data.stream``).

Each chunk of steps is assembled on the host: the batch rows (or window starts) of steps a..b-1 are computed
with the same functions of (seed, step) the in-memory path runs on the device, the rows are read from the
memory maps, and the stacked batches go to the device in one transfer, while a background thread already reads
the next chunk. The compiled chunk is a ``lax.scan`` over those batches. Same seed, same batches, same loss curve
as the in-memory path; the data never has to fit in device (or host) memory.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np

from ..data.base import epoch_indices
from .parallel import to_host

__all__ = ["StreamPlan", "make_stream_runner", "stream_window_evaluator"]


def _host(x):
    """Token ids and labels as int32 (prepared files store them narrower), floats as they are."""
    x = np.asarray(x)
    return x.astype(np.int32) if np.issubdtype(x.dtype, np.integer) else x


class StreamPlan:
    """The host side: which rows each step reads, and reading them."""

    def __init__(self, geo, config, data_key, arrays: dict, rows: slice | None = None):
        # rows: the part of each global batch this process reads (``Parallel.local_rows``; all of it by default)
        self.geo, self.config, self.arrays = geo, config, arrays
        self.rows = slice(None) if rows is None else rows
        B, T = geo.batch_size, config.seq_len
        if geo.windowed:
            n = arrays["tokens"].shape[0]
            self.per_stream = (n - 1) // B
            self._starts = jax.jit(jax.vmap(lambda s: jax.random.randint(
                jax.random.fold_in(data_key, s), (B,), 0, n - T)))
        else:
            n = len(next(iter(arrays.values())))
            self._order = jax.jit(lambda e: epoch_indices(jax.random.fold_in(data_key, e), n, B))
        self._epoch = (None, None)

    def batches(self, a: int, b: int) -> dict:
        """The stacked batches of steps a..b-1 (host arrays of shape (b - a, B, ...))."""
        geo, steps = self.geo, np.arange(a, b)
        if geo.windowed:
            T = self.config.seq_len
            if self.config.windows == "sequential":
                windows = self.per_stream // T
                starts = np.arange(geo.batch_size)[None] * self.per_stream + (steps[:, None] % windows) * T
            else:
                starts = np.asarray(self._starts(jnp.asarray(steps)))
            idx = starts[:, self.rows, None] + np.arange(T)
            tokens = self.arrays["tokens"]
            return {"x": _host(tokens[idx]), "y": _host(tokens[idx + 1])}
        epoch = a // geo.steps_per_epoch
        if self._epoch[0] != epoch:
            self._epoch = (epoch, np.asarray(self._order(epoch)))
        rows = self._epoch[1][steps - epoch * geo.epoch_len][:, self.rows]  # (b - a, this process's rows)
        return {k: _host(v[rows.reshape(-1)]).reshape(*rows.shape, *v.shape[1:]) for k, v in self.arrays.items()}


def make_stream_runner(train_step, plan: StreamPlan, step_key, options, put):
    """``run(params, opt_state, state, arrays, a, b, bar)`` for streamed data (``arrays`` is unused: the plan
    reads the chunk), prefetching the next chunk of the same length in a background thread."""
    def chunk(params, opt_state, state, xs, s0):
        steps = s0 + jnp.arange(next(iter(xs.values())).shape[0])

        def body(carry, inp):
            s, batch = inp
            p, o, st, m = train_step(*carry, batch, jax.random.fold_in(step_key, s))
            return (p, o, st), m
        (params, opt_state, state), metrics = jax.lax.scan(body, (params, opt_state, state), (steps, xs))
        return params, opt_state, state, metrics

    run_chunk = jax.jit(chunk, donate_argnums=(0, 1, 2), compiler_options=options)
    pool = ThreadPoolExecutor(max_workers=1)
    pending: dict = {}

    def run(params, opt_state, state, arrays, a, b, bar):
        future = pending.pop((a, b), None)
        xs = future.result() if future is not None else plan.batches(a, b)
        pending.clear()
        if b + (b - a) <= plan.geo.total:
            pending[(b, 2 * b - a)] = pool.submit(plan.batches, b, 2 * b - a)
        return run_chunk(params, opt_state, state, put(xs), jnp.int32(a))

    return run


def stream_window_evaluator(full_batches, batch_size: int, seq_len: int, n_batches: int, seed: int, put):
    """The window evaluator (``evaluate.window_evaluator``) for a token memory map: the same windows, read on
    the host; ``full_batches`` is ``evaluate.eval_functions(task)[0]`` (metrics averaged over stacked batches)."""
    key = jax.random.PRNGKey(seed)
    starts_fn = jax.jit(jax.vmap(lambda i, n: jax.random.randint(jax.random.fold_in(key, i), (batch_size,), 0,
                                                                  n - seq_len), in_axes=(0, None)),
                        static_argnums=1)

    def run(params, state, split):
        tokens = split["tokens"]
        starts = np.asarray(starts_fn(jnp.arange(n_batches), int(tokens.shape[0])))
        idx = starts[..., None] + np.arange(seq_len)
        xs = put({"x": _host(tokens[idx]), "y": _host(tokens[idx + 1])})
        return {k: float(v) for k, v in to_host(full_batches(params, state, xs)).items()}

    return run
