"""The model registry the command line reads: name -> how to build a Task for a data set, with defaults.

Each model file calls ``register(...)`` once. ``build(info: funcdl.task.DataInfo, **options)`` returns a
``funcdl.task.Task``; ``defaults`` are the training options that make ``funcdl train NAME`` alone sensible
(``data``, ``epochs`` or ``steps``, ``batch_size``, ``optimizer``, ``lr``, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple


class ModelEntry(NamedTuple):
    name: str
    build: Callable
    defaults: dict
    description: str
    data: tuple = ()          # data sets this model is meant for (the first is the default)


MODELS: dict[str, ModelEntry] = {}


def register(name: str, build: Callable, *, defaults: dict, description: str, data: tuple = ()) -> None:
    if name in MODELS:
        raise ValueError(f"model {name!r} is already registered")
    MODELS[name] = ModelEntry(name, build, dict(defaults), description, tuple(data))


def get_model(name: str) -> ModelEntry:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}") from None
