"""What a run records about its own dynamics when asked: ``--set track=gradflow``, ``track=trajectory`` or both.

* ``gradflow``: per parameter leaf the gradient norm, the optimizer's update norm over the weight norm, and per
  activation layer of the forward pass its RMS, its share of zeros and (ReLU) of dead units, on one fixed
  training batch (``funcdl.explain.dynamics``). One JSON record per tracked step in ``RUN/gradflow.jsonl``,
  plotted into ``RUN/gradflow.png`` at the end of the run.
* ``trajectory``: ``RUN/trajectory.npz`` with ``steps`` (K,) and ``params`` (K, P) float32, the rows
  ``ravel_pytree(params)[0]`` -- the input of ``funcdl landscape RUN --path``.

When: at chunk boundaries, outside the compiled steps. The training step and its ``lax.scan`` are the same
functions with and without tracking; tracking only cuts the scanned chunks at the multiples of ``track_every``
(when given; otherwise it records wherever a chunk ends anyway: each epoch for in-memory data, each evaluation
for language data) and at the start and the end of the run. Choose ``track_every`` as a divisor or a multiple of
the epoch length, or chunks of several lengths each compile once.

Gradients are measured on a fixed batch (the same rows at every record, drawn once from the seed), in float32,
with the run's ``grad`` choice (hand rules or autodiff), so records compare across time; the update is
``opt.update`` of that gradient in the optimizer's current state, computed and discarded.

Resume: the files keep their records up to the checkpoint's step and the resumed run appends to them.
``trajectory.npz`` is rewritten atomically whenever the checkpoint is.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ..core.primitive import autodiff
from ..explain.dynamics import activation_stats, capture_activations, gradient_flow, leaf_paths
from .parallel import to_host

__all__ = ["TRACK_KINDS", "parse_track", "Tracker"]

TRACK_KINDS = ("gradflow", "trajectory")
PROBE_SEED = 0x7ACC        # the fixed probe batch's rows are drawn from this seed


def parse_track(value) -> tuple[str, ...]:
    """``"gradflow,trajectory"`` / ``("gradflow", "trajectory")`` / None -> a tuple of known kinds."""
    if value in (None, "", ()):
        return ()
    if not isinstance(value, str | tuple | list):
        raise ValueError(f"track={value!r}: expected gradflow and/or trajectory (--set track=gradflow,trajectory)")
    parts = value.split(",") if isinstance(value, str) else list(value)
    kinds = tuple(dict.fromkeys(str(p).strip() for p in parts if str(p).strip()))
    bad = [k for k in kinds if k not in TRACK_KINDS]
    if bad:
        raise ValueError(f"track={value!r}: unknown {', '.join(bad)}; valid: {', '.join(TRACK_KINDS)} "
                         "(comma-separated, e.g. --set track=gradflow,trajectory)")
    return kinds


def probe_batch(arrays: dict, windowed: bool, batch_size: int, seq_len: int) -> dict:
    """One fixed training batch: rows (or window starts) drawn once from ``PROBE_SEED``; works for device
    arrays and memory maps alike."""
    rng = np.random.default_rng(PROBE_SEED)
    if windowed:
        tokens = arrays["tokens"]
        starts = rng.integers(0, tokens.shape[0] - seq_len, batch_size)
        idx = starts[:, None] + np.arange(seq_len)[None, :]
        take = lambda i: jnp.asarray(np.asarray(tokens[i]).astype(np.int32))  # noqa: E731  (no full copy of a map)
        return {"x": take(idx), "y": take(idx + 1)}
    n = len(next(iter(arrays.values())))
    rows = np.sort(rng.choice(n, size=min(batch_size, n), replace=False))
    return {k: jnp.asarray(np.asarray(v[rows])) for k, v in arrays.items()}


class Tracker:
    """Records gradient flow and/or the parameter trajectory of one run into its run directory."""

    def __init__(self, kinds, every, rundir, task, opt, config, batch, step_key):
        if not rundir:
            raise ValueError("track=... writes into the run directory; give train() an out_dir (--out)")
        if jax.process_count() > 1:
            raise ValueError("track=... runs in a single process for now (its probe batch and snapshots are read "
                             "on the host); drop --coordinator or the track option")
        if "gradflow" in kinds and task.players:
            raise ValueError("track=gradflow follows one loss and one optimizer; this task has several players "
                             "(track=trajectory works)")
        self.kinds, self.every, self.rundir = kinds, every, rundir
        self.batch, self.key = batch, jax.random.fold_in(step_key, PROBE_SEED)
        self.steps: list[int] = []           # trajectory rows held in memory
        self.rows: list[np.ndarray] = []
        self.last = None                     # the last step recorded
        self._ravel = jax.jit(lambda p: ravel_pytree(p)[0].astype(jnp.float32))
        if "gradflow" in kinds:
            loss = task.loss if config.grad == "manual" else autodiff(task.loss)

            def probe(params, opt_state, state, batch, key):
                flow = gradient_flow(loss, opt, params, opt_state, state, batch, key)
                # the forward of the hand-rule loss: its activation wrappers are what capture recognises
                _, found = capture_activations(lambda p: task.loss(p, state, batch, key, True), params)
                found_names = [name for name, _ in found]
                return flow | activation_stats(found), found_names

            self._names = None
            self._probe = jax.jit(lambda *a: probe(*a)[0])
            self._probe_names = probe

    def cuts(self, total: int) -> list[int]:
        """Extra chunk boundaries: the multiples of ``track_every`` below ``total``."""
        return [] if not self.every else list(range(self.every, total, self.every))

    def begin(self, step: int, resumed: bool, params, opt_state, state):
        """Keep what the files hold up to ``step`` (resume) or start them empty; record ``step`` when missing."""
        path = self.rundir.file("gradflow.jsonl")
        kept = []
        if resumed and path.is_file():
            kept = [r for r in map(json.loads, path.read_text().splitlines()) if r["step"] <= step]
        if "gradflow" in self.kinds and self.rundir.writer:
            _write_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))
        if resumed and self.rundir.has("trajectory.npz"):
            with np.load(self.rundir.file("trajectory.npz")) as f:
                keep = f["steps"] <= step
                self.steps, self.rows = [int(s) for s in f["steps"][keep]], list(f["params"][keep])
        steps = [r["step"] for r in kept] if "gradflow" in self.kinds else self.steps
        self.last = steps[-1] if steps else None
        if self.last != step:
            self.record(step, params, opt_state, state)

    def due(self, step: int) -> bool:
        return not self.every or step % self.every == 0

    def record(self, step: int, params, opt_state, state):
        if "trajectory" in self.kinds:
            self.steps.append(int(step))
            self.rows.append(np.asarray(self._ravel(params)))
        if "gradflow" in self.kinds:
            self._log_gradflow(step, params, opt_state, state)
        self.last = step

    def _log_gradflow(self, step, params, opt_state, state):
        if self._names is None:      # the activation names, from one trace
            self._names = _activation_names(self._probe_names, params, opt_state, state, self.batch, self.key)
        out = to_host(self._probe(params, opt_state, state, self.batch, self.key))
        listed = lambda a: [None if not np.isfinite(v) else float(v) for v in np.asarray(a)]  # noqa: E731
        record = {"step": int(step), "loss": float(out["loss"]), "params": leaf_paths(params),
                  "grad_norm": listed(out["grad_norm"]), "update_ratio": listed(out["update_ratio"]),
                  "param_norm": listed(out["param_norm"]), "activations": self._names,
                  "act_rms": listed(out["rms"]), "act_zero": listed(out["zero"]), "dead_relu": listed(out["dead"])}
        if self.rundir.writer:
            with open(self.rundir.file("gradflow.jsonl"), "a") as f:
                f.write(json.dumps(record) + "\n")

    def flush(self):
        """Rewrite ``trajectory.npz`` (atomically) with every row so far."""
        if "trajectory" not in self.kinds or not self.rows or not self.rundir.writer:
            return
        path = self.rundir.file("trajectory.npz")
        tmp = path.with_name(f"trajectory.tmp-{os.getpid()}.npz")
        np.savez(tmp, steps=np.asarray(self.steps, np.int64), params=np.stack(self.rows).astype(np.float32))
        os.replace(tmp, path)

    def finish(self, step: int, params, opt_state, state, plots: bool):
        """Record the final step (when not yet), write the files and the gradient-flow figure."""
        if self.last != step:
            self.record(step, params, opt_state, state)
        self.flush()
        if plots and "gradflow" in self.kinds and self.rundir.writer:
            try:
                from ..plots.dynamics import plot_gradflow
                plot_gradflow(self.rundir.path)
            except Exception as err:  # a plotting problem must not lose a finished run
                print(f"warning: gradient-flow plot not written: {err}")


def _activation_names(probe, *args) -> list[str]:
    names: list = []

    def traced(*a):
        out, found = probe(*a)
        names.extend(found)
        return out
    jax.eval_shape(traced, *args)
    return names


def _write_atomic(path, text: str):
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
