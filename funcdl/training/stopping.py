"""When a run stops early: Ctrl-C, a loss that is no longer finite, early stopping, ``stop_after``."""

from __future__ import annotations

import signal
import threading

import numpy as np

__all__ = ["Interrupt", "EarlyStopping", "first_bad_step"]


class Interrupt:
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


def first_bad_step(losses) -> int | None:
    """Index of the first loss that is NaN or infinite, or None."""
    bad = np.flatnonzero(~np.isfinite(np.asarray(losses)))
    return int(bad[0]) if bad.size else None


class EarlyStopping:
    """Counts evaluations without improvement of the monitored metric; ``best`` is checkpointed with the run."""

    def __init__(self, monitor: str, patience: int | None, best: dict | None = None):
        self.key = "loss" if monitor == "val_loss" else "accuracy"
        self.lower_is_better = monitor == "val_loss"
        self.patience = patience
        self.best = dict(best or {"value": None, "step": None, "bad_evals": 0})

    def update(self, metrics: dict, step: int) -> bool:
        """Record one evaluation; True when it is the best so far."""
        value, best = metrics[self.key], self.best["value"]
        improved = best is None or (value < best if self.lower_is_better else value > best)
        if improved:
            self.best = {"value": value, "step": step, "bad_evals": 0}
        else:
            self.best["bad_evals"] += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.best["bad_evals"] >= self.patience
