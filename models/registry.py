"""The model registry the command line reads: name -> how to build a Task for a data set, with defaults.

Each model file calls ``register(...)`` once::

    register("mlp", build, data=("mnist1d", "mnist"), description="...",
             defaults={"data": "mnist1d", "epochs": 60, "lr": 1e-2, "hidden": (100, 100)})

``build(info: DataInfo, **model_options) -> Task`` (both from ``funcdl.training.task``). ``info`` says the input shape
(for language data ``(seq_len,)``), ``num_classes`` or ``vocab_size``, and the data kind.

``defaults`` mixes two kinds of keys, told apart by :data:`TRAIN_KEYS`:

* training options (keys in ``TRAIN_KEYS``: ``data``, ``epochs`` or ``steps``, ``batch_size``, ``optimizer``,
  ``lr``, ``weight_decay``, ``optimizer_options`` (a dict such as ``{"momentum": 0.9}``), ``schedule``,
  ``warmup_steps``, ``clip_norm``, ``seq_len`` (window length of language data), ``eval_every``, ``patience``,
  ``val_fraction``, ...) go to ``funcdl.training.loop.TrainConfig``;
* every other key is a model option and is passed to ``build`` as a keyword argument (``hidden``, ``dropout``,
  ``n_layers``, ...), so ``build`` must accept each model option its defaults list.

``data_defaults={"mnist": {"epochs": 15, ...}}`` replaces defaults for one data set (a model tuned for MNIST-1D
wants other settings on MNIST). The command line overrides all of them:
``funcdl train mlp --lr 3e-3 --set hidden=256,256 --set dropout=0.1``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

__all__ = ["ModelEntry", "MODELS", "TRAIN_KEYS", "register", "get_model", "split_options"]

# keys of ``defaults`` / ``--set`` that are training options (the fields of funcdl.training.loop.TrainConfig, and data)
TRAIN_KEYS = frozenset({
    "data", "epochs", "steps", "batch_size", "optimizer", "lr", "weight_decay", "optimizer_options", "schedule",
    "warmup_steps", "min_lr", "windows", "clip_norm", "grad", "seed", "eval_every", "eval_batch_size",
    "eval_batches", "seq_len",
    "patience", "monitor", "scan", "freeze", "init_from", "log_every", "progress", "plots", "stop_after",
    "val_fraction", "init_exclude", "classes", "label_fraction", "augment",
})


class ModelEntry(NamedTuple):
    name: str
    build: Callable
    defaults: dict
    description: str
    data: tuple = ()          # data sets this model is meant for (the first is the default)
    data_defaults: dict = {}  # data name -> defaults that replace the model's own for that data set

    @property
    def train_defaults(self) -> dict:
        return split_options(self.defaults)[0]

    @property
    def model_defaults(self) -> dict:
        return split_options(self.defaults)[1]


MODELS: dict[str, ModelEntry] = {}


def split_options(options: dict) -> tuple[dict, dict]:
    """``(training options, model options)`` of a dict of defaults or command-line settings."""
    train = {k: v for k, v in options.items() if k in TRAIN_KEYS}
    model = {k: v for k, v in options.items() if k not in TRAIN_KEYS}
    return train, model


def register(name: str, build: Callable, *, defaults: dict, description: str, data: tuple = (),
             data_defaults: dict | None = None) -> None:
    if name in MODELS:
        raise ValueError(f"model {name!r} is already registered")
    if not callable(build):
        raise TypeError(f"register({name!r}): build must be callable, got {type(build).__name__}")
    if "epochs" in defaults and "steps" in defaults:
        raise ValueError(f"register({name!r}): give 'epochs' or 'steps' in defaults, not both")
    data_defaults = {k: dict(v) for k, v in (data_defaults or {}).items()}
    for d, opts in data_defaults.items():
        if "epochs" in opts and "steps" in opts:
            raise ValueError(f"register({name!r}): data_defaults[{d!r}] gives both 'epochs' and 'steps'")
    MODELS[name] = ModelEntry(name, build, dict(defaults), description, tuple(data), data_defaults)


def get_model(name: str) -> ModelEntry:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}") from None
