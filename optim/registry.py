"""Optimizers by name, for the command line: ``create("adamw", learning_rate=1e-3, weight_decay=0.1)``."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from . import adaptive, modern, optimizers

OPTIMIZERS: dict[str, Callable] = {
    "sgd": optimizers.sgd,
    "adagrad": optimizers.adagrad,
    "rmsprop": optimizers.rmsprop,
    "adadelta": optimizers.adadelta,
    "adam": adaptive.adam,
    "adamw": adaptive.adamw,
    "adamax": adaptive.adamax,
    "nadam": adaptive.nadam,
    "radam": adaptive.radam,
    "lamb": modern.lamb,
    "lion": modern.lion,
    "adafactor": modern.adafactor,
}


def hyperparameters(name: str) -> dict:
    """The hyper-parameters of optimizer ``name`` (other than the learning rate) with their defaults."""
    factory = _get(name)
    return {k: p.default for k, p in inspect.signature(factory).parameters.items() if k != "learning_rate"}


def _get(name):
    try:
        return OPTIMIZERS[name]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; valid optimizers: {', '.join(sorted(OPTIMIZERS))}") from None


def create(name: str, learning_rate=1e-3, **hyper):
    """Build the optimizer ``name`` with ``learning_rate`` (number or schedule) and its hyper-parameters;
    ``optax:NAME`` builds optax's (when optax is installed).

    Hyper-parameters left as ``None`` take the optimizer's default; ``betas=(b1, b2)`` is accepted as torch
    spells it. A hyper-parameter the optimizer does not have is an error that lists the ones it has.
    """
    hyper = {k: v for k, v in hyper.items() if v is not None}
    if name.startswith("optax:"):               # an optax optimizer through the bridge (optax is optional)
        from .optax_bridge import optax_optimizer

        return optax_optimizer(name[len("optax:"):], learning_rate, **hyper)
    factory = _get(name)
    if "betas" in hyper:
        b1, b2 = hyper.pop("betas")
        hyper.setdefault("b1", b1)
        hyper.setdefault("b2", b2)
    valid = hyperparameters(name)
    unknown = sorted(set(hyper) - set(valid))
    if unknown:
        raise ValueError(f"optimizer {name!r} has no hyper-parameter {', '.join(map(repr, unknown))}; "
                         f"its hyper-parameters: {', '.join(f'{k}={v!r}' for k, v in valid.items())}")
    return factory(learning_rate=learning_rate, **hyper)
