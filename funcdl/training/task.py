"""What the generic training loop needs from a model: the contract between ``models`` and ``funcdl.training.loop``.

A ``Task`` is two pure functions and a kind:

* ``init(key) -> (params, state)``: parameters and mutable statistics (``{}`` when there are none);
* ``loss(params, state, batch, key, train) -> (loss, (state, metrics))``: the scalar training loss on a
  batch (a dict of arrays, e.g. ``{"x": ..., "y": ...}``), the new state, and a dict of per-batch metrics
  (means over the batch, e.g. ``{"loss": ..., "accuracy": ...}``). ``train`` is a Python bool (static);
  ``key`` is a PRNG key for dropout and friends (``None`` in evaluation).
* ``kind``: ``"classification"`` (reports accuracy), ``"language"`` (reports loss in nats per token) or
  ``"regression"``.

``funcdl.autodiff(task.loss)`` is the same loss differentiated through the references instead of the
hand-derived rules; the training loop's ``grad="autodiff"`` uses exactly that.

Several players (a GAN: a discriminator and a generator) share one ``params`` dict, one entry per player, and
the Task lists them in ``players``: each :class:`Player` names its parameter group, its own loss (of the whole
``params``; only its group is differentiated), how many updates it makes per training step (``n_critic``), its
optimizer (None: the one the training options build) and an optional EMA of its weights (for sampling, read
with ``optim.ema_of``). One training step updates the players in order; ``Task.loss`` is still what evaluation
reports. One checkpoint holds every group and every optimizer state.

``Task.extras`` may name entry points the commands use: ``generate`` (a language model's sampler);
``sample_images(params, key, n, *, labels=None)`` (an image model's samples, NHWC floats in [0, 1]; ``labels``
for a class-conditional one), which ``funcdl sample RUN --grid 8x8`` draws; ``sampling_params(params,
opt_state)`` (the weights to sample with, e.g. a generator's EMA copy); and ``report(params, state, opt_state,
data, out_dir) -> dict``, called once at the end of a run: its figures (a VAE's test negative ELBO, a GAN's
Fréchet distance) go into ``summary.json`` and its pictures into the run directory (``out_dir`` may be None).

``DataInfo`` is what a data set tells a model builder: the shape of one input, the number of classes or
the vocabulary size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple


class Player(NamedTuple):
    name: str                           # its parameter group: params[name]
    loss: Callable[..., tuple[Any, tuple[Any, dict]]]   # (params, state, batch, key, train), as Task.loss
    steps: int = 1                      # updates per training step (a WGAN critic: 5)
    optimizer: Any = None               # a GradientTransformation; None: the training options' optimizer
    ema: float | None = None            # decay of an EMA copy of params[name] kept in its optimizer state (with
                                        # optim.ema_params' warm-up: min(ema, (1 + t) / (10 + t)))
    lr_scale: float = 1.0               # the training options' optimizer at lr * lr_scale (and min_lr *
                                        # lr_scale) on the same schedule: two time-scale updates (TTUR, Heusel
                                        # et al. 2017); ignored when ``optimizer`` is given


class Task(NamedTuple):
    init: Callable[[Any], tuple[Any, Any]]
    loss: Callable[..., tuple[Any, tuple[Any, dict]]]
    kind: str = "classification"
    apply: Callable | None = None       # (params, state, x) -> outputs, for plots and sampling
    extras: dict | None = None          # anything else a command may use (config, sample function, ...)
    players: tuple = ()                 # several players (Player), updated in order; () for one loss


class DataInfo(NamedTuple):
    name: str
    input_shape: tuple
    num_classes: int | None = None
    vocab_size: int | None = None
    kind: str = "classification"
    extras: dict | None = None
