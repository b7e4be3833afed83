"""Optimizers by name, for the command line: ``create("adamw", learning_rate=1e-3, weight_decay=0.1)``."""

from __future__ import annotations

from collections.abc import Callable

from . import optimizers

OPTIMIZERS: dict[str, Callable] = {
    "sgd": optimizers.sgd,
    "adam": optimizers.adam,
}


def create(name: str, learning_rate=1e-3, **hyper):
    """Build the optimizer ``name`` with ``learning_rate`` (number or schedule) and its hyper-parameters.

    Hyper-parameters left as ``None`` take the optimizer's default.
    """
    try:
        factory = OPTIMIZERS[name]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; valid optimizers: {', '.join(sorted(OPTIMIZERS))}") from None
    hyper = {k: v for k, v in hyper.items() if v is not None}
    return factory(learning_rate=learning_rate, **hyper)
