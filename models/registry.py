"""The model registry the command line reads (name -> builder, defaults, a small test size), and ``as_task``, the
one helper that turns a model module (see ``models/__init__.py`` for the contract) into a training ``Task``.

Each model file calls ``register(...)`` for each model it registers::

    def build(info: DataInfo, *, hidden=(1024, 1024), activation="relu", dropout=0.0) -> Task:
        return as_task(Config(sizes=(n_inputs, *hidden, info.num_classes), activation=activation, dropout=dropout))

    register("mlp", build, data=("mnist1d", "mnist"), description="...",
             defaults={"data": "mnist1d", "epochs": 60, "lr": 1e-2, "hidden": (100, 100)},
             small={"hidden": (8,)}, small_data=DataInfo("fake", (40,), num_classes=10))

``build(info, *, option=default, ...)`` takes the :class:`funcdl.training.task.DataInfo` positionally (the input
shape, for language data ``(seq_len,)``; ``num_classes`` or ``vocab_size``; the data kind) and every model option
as a keyword-only argument with its default, nothing else (no ``**kwargs``): the signature *is* the list of
valid options. ``MODELS[name].build(info, **options)`` checks the options against it first, so a misspelt option
fails with one line naming it, the model, the valid options and the closest match.

``defaults`` mixes two kinds of keys, told apart by :data:`TRAIN_KEYS`:

* training options (keys in ``TRAIN_KEYS``: ``data``, ``epochs`` or ``steps``, ``batch_size``, ``optimizer``,
  ``lr``, ``weight_decay``, ``optimizer_options`` (a dict such as ``{"momentum": 0.9}``), ``schedule``,
  ``warmup_steps``, ``clip_norm``, ``seq_len`` (window length of language data), ``eval_every``, ``patience``,
  ``val_fraction``, ...) go to ``funcdl.training.loop.TrainConfig``;
* every other key is a model option and is passed to ``build`` as a keyword argument (``hidden``, ``dropout``,
  ``n_layers``, ...); ``register`` refuses a model option the builder does not take, and a builder option named like
  a training option (``--set schedule=...`` would set the learning-rate schedule, never the model's), except the
  training batch size (``SHARED_KEYS``), which ``funcdl train`` also hands to a builder that takes it.
  (``presets``, a dict of named option sets for ``funcdl train --preset``, is read by the command line.)

``data_defaults={"mnist": {"epochs": 15, ...}}`` replaces defaults for one data set (a model tuned for MNIST-1D
wants other settings on MNIST). The command line overrides all of them:
``funcdl train mlp --lr 3e-3 --set hidden=256,256 --set dropout=0.1``.

``small`` (model options) and ``small_data`` (a DataInfo) are the model at a size a test can compile and check in
seconds: tests/test_models.py builds every registered model that way on a fake batch made from ``small_data``,
compares its hand-derived gradient with pure autodiff and takes a few optimizer steps — a model that is
registered is a model that is checked.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import sys
from collections.abc import Callable
from typing import NamedTuple

from funcdl.training.config import TrainConfig
from funcdl.training.task import DataInfo, Task

__all__ = ["ModelEntry", "MODELS", "TRAIN_KEYS", "register", "get_model", "split_options", "as_task",
           "check_options"]

# keys of ``defaults`` / ``--set`` that are training options: the fields of TrainConfig, and data
TRAIN_KEYS = frozenset({f.name for f in dataclasses.fields(TrainConfig)} | {"data"})
_NOT_OPTIONS = frozenset({"presets"})   # keys of ``defaults`` the command line reads itself
SHARED_KEYS = frozenset({"batch_size"})  # training options a build may also take (funcdl train passes them on)


class ModelEntry(NamedTuple):
    name: str
    build: Callable             # build(info, **options) -> Task, options checked against the builder's signature
    defaults: dict
    description: str
    data: tuple = ()            # data sets this model is meant for (the first is the default)
    data_defaults: dict = {}    # data name -> defaults that replace the model's own for that data set
    small: dict = {}            # model options of a size the tests compile in seconds
    small_data: DataInfo | None = None   # the data the small model is built for (tests fake a batch from it)

    @property
    def train_defaults(self) -> dict:
        return split_options(self.defaults)[0]

    @property
    def model_defaults(self) -> dict:
        return split_options(self.defaults)[1]

    @property
    def options(self) -> tuple:
        """The model options ``build`` takes (its keyword-only arguments)."""
        return builder_options(self.build)


MODELS: dict[str, ModelEntry] = {}


def split_options(options: dict) -> tuple[dict, dict]:
    """``(training options, model options)`` of a dict of defaults or command-line settings."""
    train = {k: v for k, v in options.items() if k in TRAIN_KEYS}
    model = {k: v for k, v in options.items() if k not in TRAIN_KEYS and k not in _NOT_OPTIONS}
    return train, model


def builder_options(build: Callable) -> tuple:
    return tuple(n for n, p in inspect.signature(build).parameters.items() if p.kind is p.KEYWORD_ONLY)


def check_options(name: str, build: Callable, options) -> None:
    """Raise ``ValueError`` (one line: the key, the model, the valid options, the closest match) for the first
    key of ``options`` that ``build`` does not take."""
    valid = builder_options(build)
    for key in options:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown option {key!r} for model {name!r}; valid options: "
                             f"{', '.join(valid) or 'none'}{hint}")


def _check_builder(name: str, build: Callable) -> None:
    params = list(inspect.signature(build).parameters.values())
    if not params or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
        raise TypeError(f"register({name!r}): build must take the DataInfo as its first positional argument")
    for p in params[1:]:
        if p.kind is not p.KEYWORD_ONLY or p.default is p.empty:
            raise TypeError(f"register({name!r}): build's option {p.name!r} must be keyword-only with a default "
                            "(build(info, *, option=default, ...); no *args or **kwargs)")
        if p.name in TRAIN_KEYS and p.name not in SHARED_KEYS:     # --set NAME=... would reach training only
            raise TypeError(f"register({name!r}): build's option {p.name!r} is also a training option, so "
                            f"`--set {p.name}=...` could never reach the model; rename it")


def register(name: str, build: Callable, *, defaults: dict, description: str, data: tuple = (),
             data_defaults: dict | None = None, small: dict, small_data: DataInfo) -> None:
    """Enter a model (see the module docstring). Every model option in ``defaults``, ``data_defaults``,
    ``defaults["presets"]`` and ``small`` must be an option of ``build``."""
    if name in MODELS:
        raise ValueError(f"model {name!r} is already registered")
    if not callable(build):
        raise TypeError(f"register({name!r}): build must be callable, got {type(build).__name__}")
    _check_builder(name, build)
    if "epochs" in defaults and "steps" in defaults:
        raise ValueError(f"register({name!r}): give 'epochs' or 'steps' in defaults, not both")
    data_defaults = {k: dict(v) for k, v in (data_defaults or {}).items()}
    for d, opts in data_defaults.items():
        if "epochs" in opts and "steps" in opts:
            raise ValueError(f"register({name!r}): data_defaults[{d!r}] gives both 'epochs' and 'steps'")
    for opts in (defaults, *data_defaults.values(), *defaults.get("presets", {}).values()):
        check_options(name, build, split_options(opts)[1])
    check_options(name, build, small)
    if not isinstance(small_data, DataInfo):
        raise TypeError(f"register({name!r}): small_data must be a DataInfo, got {type(small_data).__name__}")

    @functools.wraps(build)
    def checked(info, **options):
        check_options(name, build, options)
        return build(info, **options)

    MODELS[name] = ModelEntry(name, checked, dict(defaults), description, tuple(data), data_defaults, dict(small),
                              small_data)


def get_model(name: str) -> ModelEntry:
    try:
        return MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(MODELS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}{hint}") from None


def as_task(config, **extras) -> Task:
    """The training ``Task`` of a model config: ``init``, ``apply`` and ``loss`` of the module that defines
    ``type(config)``, with ``config`` bound, and the module's ``KIND``. ``task.extras`` holds ``config``, the
    module (``model``), what the module's optional ``extras(config)`` returns (a generator, decoders, ...), and
    ``extras`` given here."""
    model = sys.modules[type(config).__module__]
    for attr in ("init", "apply", "loss", "KIND"):
        if not hasattr(model, attr):
            raise TypeError(f"as_task: {model.__name__} does not follow the model contract (no {attr!r})")

    def init(key):
        return model.init(key, config)

    def loss(params, state, batch, key, train):
        return model.loss(params, state, batch, config, key=key, train=train)

    def apply(params, state, x):
        return model.apply(params, state, x, config)[0]

    more = {"config": config, "model": model}
    if hasattr(model, "extras"):
        more |= model.extras(config)
    return Task(init, loss, model.KIND, apply=apply, extras=more | extras)
