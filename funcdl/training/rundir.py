"""The run directory: ``config.json``, ``metrics.jsonl``, checkpoints, ``summary.json`` and plots, behind a lock.

One process writes a run directory at a time: ``RunDir.lock()`` takes an exclusive ``flock`` on ``.lock`` for the
life of the run, so a second ``funcdl train --out`` into the same folder stops at once with a message instead of
interleaving ``metrics.jsonl`` and overwriting checkpoints. Nothing is written before the lock is held and the
options are checked, so a refused run leaves the folder as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np

from . import checkpoint as ckpt
from .config import RESUMABLE

__all__ = ["RunDir", "RunDirectoryBusy"]

try:
    import fcntl
except ImportError:          # pragma: no cover - not POSIX: no lock, as before
    fcntl = None


class RunDirectoryBusy(RuntimeError):
    """Another process is writing into the same run directory."""


def jsonable(x):
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items() if not callable(v)}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def _write_atomic(path: Path, text: str):
    """Replace ``path`` in one step (other processes of the run may be reading it)."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


class RunDir:
    """A run's folder (or nothing, when ``path`` is None: every write is then skipped). In a multi-process run
    every process reads it (resume) and only the ``writer`` (process 0) locks and writes it."""

    def __init__(self, path, writer: bool = True):
        self.path = Path(path) if path is not None else None
        self.writer = writer
        self.events = None          # a TensorBoard EventWriter, once start(tensorboard=True)
        if self.path is not None and self.path.exists() and not self.path.is_dir():
            raise ValueError(f"--out {self.path} is a file, not a directory; name a new or existing folder")

    def __bool__(self):
        return self.path is not None

    def file(self, name: str) -> Path | None:
        return None if self.path is None else self.path / name

    @contextlib.contextmanager
    def lock(self):
        """Hold ``.lock`` exclusively while the run lives; raise :class:`RunDirectoryBusy` if another holds it."""
        if self.path is None or fcntl is None or not self.writer:
            yield
            return
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                owner = f.read().strip() or "another process"
                raise RunDirectoryBusy(f"{self.path} is in use by a running funcdl train (pid {owner}); wait for "
                                       "it to finish or choose another --out") from None
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
            try:
                yield
            finally:
                f.truncate(0)
                fcntl.flock(f, fcntl.LOCK_UN)

    # ---- resume -----------------------------------------------------------------------------------------
    def checkpoint_path(self) -> Path:
        if self.path is None or not (self.path / "checkpoint.npz").is_file():
            raise FileNotFoundError(f"--resume: no checkpoint.npz in {self.path}; train without --resume first")
        return self.path / "checkpoint.npz"

    def changed_options(self, train_options: dict, run_info: dict) -> dict:
        """Options that differ from the run being resumed: ``{name: [before, now]}``. Raises ValueError for those
        that cannot change mid-run (what is trained, on what, and how the gradient is made)."""
        path = self.path / "config.json"
        if not path.is_file():
            return {}
        before = json.loads(path.read_text())
        old_train, now_train = before.get("train", {}), jsonable(train_options)
        changed = {k: [old_train.get(k), v] for k, v in now_train.items() if k in old_train and old_train[k] != v}
        for key in ("model", "data", "model_options"):
            old, new = before.get(key), jsonable(run_info.get(key))
            if key in run_info and old is not None and old != new:
                changed[key] = [old, new]
        fixed = sorted(k for k in changed if k not in RESUMABLE)
        if fixed:
            detail = "; ".join(f"{k}: {changed[k][0]!r} -> {changed[k][1]!r}" for k in fixed)
            raise ValueError(f"--resume cannot change {', '.join(fixed)} ({detail}); only "
                             f"{', '.join(sorted(RESUMABLE))} may change when resuming. Start a new --out instead")
        return changed

    def history_until(self, step: int) -> list[dict]:
        path = self.path / "metrics.jsonl"
        if not path.is_file():
            return []
        return [r for r in map(json.loads, path.read_text().splitlines()) if r["step"] <= step]

    # ---- writing ----------------------------------------------------------------------------------------
    def start(self, config: dict, history: list[dict], resumed: dict | None = None, tensorboard: bool = False):
        """Write ``config.json`` (with the list of resumes and what each changed) and rewrite ``metrics.jsonl``
        so that it ends at the checkpoint."""
        if self.path is None or not self.writer:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        old = self.path / "config.json"
        resumes = json.loads(old.read_text()).get("resumes", []) if resumed is not None and old.is_file() else []
        if resumed is not None:
            resumes.append(resumed)
        config = {**config, **({"resumes": resumes} if resumes else {})}
        _write_atomic(self.path / "config.json", json.dumps(jsonable(config), indent=1, default=str))
        _write_atomic(self.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
        if tensorboard:
            from .tensorboard import EventWriter
            self.events = EventWriter(self.path)

    def log(self, record: dict):
        if self.path is not None and self.writer:
            with open(self.path / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            if self.events is not None:
                values = {k: v for k, v in record.items() if k not in ("split", "step")}
                self.events.scalars(record["step"], values, prefix=f"{record['split']}/")

    def save(self, name: str, trees: dict, meta: dict):
        if self.path is not None and self.writer:
            ckpt.save(self.path / name, trees, meta)

    def has(self, name: str) -> bool:
        return self.path is not None and (self.path / name).is_file()

    def finish(self, summary: dict, plots: bool):
        if self.path is None or not self.writer:
            return
        (self.path / "summary.json").write_text(json.dumps(summary, indent=1))
        if plots and (self.path / "metrics.jsonl").stat().st_size:
            try:
                from ..plots.training import plot_run
                plot_run(self.path)
            except Exception as err:  # a plotting problem must not lose a finished run
                print(f"warning: plots not written: {err}")
