"""One training step, built from small pieces: the optimizer a config asks for, and the step itself.

    (loss, (state, metrics)), g = value_and_grad(task.loss)(params, state, batch, key, train=True)
    updates, opt_state = opt.update(g, opt_state, params)     # opt = [clip ->] optimizer [-> freeze]
    params = params + updates

Mixed precision is a policy of the step, not of the model (``precision``): the float32 master parameters and
the batch's float arrays are cast to the compute dtype (bfloat16 or float16) on the way in, so the forward and
backward run in it, and the cast's own derivative brings the gradient back to float32, where the optimizer
keeps its moments. The loss is reported in float32. float16 adds dynamic loss scaling
(``optim.dynamic_loss_scale``): the step multiplies the loss by the scale kept in the optimizer state, the
optimizer divides it out, skips steps whose gradients overflow and adapts the scale.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from .. import optim
from ..compress.prune import gradual_optimizer
from ..core.primitive import autodiff
from .config import AUGMENT_STREAM, TrainConfig
from .task import Task

__all__ = ["make_schedule", "make_optimizer", "freeze_mask", "param_count", "make_train_step", "donatable",
           "players_optimizer"]


def make_schedule(name: str, lr: float, total_steps: int, warmup_steps: int = 0, min_lr: float = 0.0):
    """A learning-rate schedule by name (``optim.make_schedule``): a float for ``constant`` without warm-up,
    else a function ``step -> lr``. Names: ``optim.SCHEDULES`` (constant, cosine, linear, one_cycle, ...)."""
    if name in (None, "", "constant") and not warmup_steps:
        return float(lr)
    return optim.make_schedule(name or "constant", lr, int(total_steps), int(warmup_steps or 0), float(min_lr or 0.0))


def make_optimizer(config: TrainConfig, total_steps: int):
    """``optim.create(config.optimizer, schedule, weight_decay=..., **config.optimizer_options)``, after
    ``optim.clip_by_global_norm(config.clip_norm)`` when clipping is asked for, inside the gradual pruning of
    ``config.prune`` when asked for. Returns ``(opt, schedule)``."""
    lr = make_schedule(config.schedule, config.lr, total_steps, config.warmup_steps, config.min_lr)
    hyper = dict(config.optimizer_options)
    if config.weight_decay is not None:
        hyper["weight_decay"] = config.weight_decay
    try:
        opt = optim.create(config.optimizer, lr, **hyper)
    except TypeError as err:
        raise ValueError(f"optimizer {config.optimizer!r} does not take these options {sorted(hyper)}: {err}") \
            from None
    if config.clip_norm is not None:
        opt = optim.chain(optim.clip_by_global_norm(config.clip_norm), opt)
    if config.prune:                # masked gradients (before clipping), masks in the state, pruned weights zero
        opt = gradual_optimizer(opt, config.prune, total_steps)
    if config.precision == "fp16":
        opt = optim.dynamic_loss_scale(opt)
    return opt, lr


def players_optimizer(task: Task, config: TrainConfig, total_steps: int):
    """One optimizer per player (its own, or the training options' at the player's ``lr_scale``), each with its
    EMA when asked, as one GradientTransformation over ``{player: group}`` whose state is ``{player: state}``.
    Returns (opt, schedule): the schedule of the training options' learning rate (scale 1)."""
    default, schedule = make_optimizer(config, total_steps)
    opts = {}
    for p in task.players:
        if not p.lr_scale > 0:
            raise ValueError(f"player {p.name!r}: lr_scale must be > 0, got {p.lr_scale!r}")
        if p.optimizer is not None:
            opt = p.optimizer
        elif p.lr_scale == 1:
            opt = default
        else:
            scaled = dataclasses.replace(config, lr=config.lr * p.lr_scale, min_lr=config.min_lr * p.lr_scale)
            opt = make_optimizer(scaled, total_steps)[0]
        opts[p.name] = optim.ema_params(opt, p.ema, warmup=True) if p.ema is not None else opt

    def init(params):
        missing = sorted(set(opts) - set(params))
        if missing:
            raise ValueError(f"players {missing} have no parameter group; params has {sorted(params)}")
        return {name: o.init(params[name]) for name, o in opts.items()}

    def update(grads, state, params=None):
        raise TypeError("a players optimizer is applied one player at a time (funcdl.training.step)")

    return optim.GradientTransformation(init, update), opts, schedule


def freeze_mask(params, pattern: str | None):
    """A pytree of bools like ``params``: True where the leaf's path (``layers/0/w``) matches ``pattern``
    (``re.search``), as ``optim.frozen_mask`` reads it."""
    if not pattern:
        return jax.tree.map(lambda _: False, params)
    return optim.frozen_mask(params, pattern)


def with_freezing(opt, params, pattern: str | None):
    """``optim.freeze(opt, pattern)`` when the pattern matches a parameter; returns ``(opt, frozen count)``."""
    if not pattern:
        return opt, 0
    mask = freeze_mask(params, pattern)
    n_frozen = sum(np.size(p) for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask), strict=True) if m)
    if not n_frozen:
        paths = [optim.path_str(k) for k, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
        raise ValueError(f"--freeze {pattern!r} matches no parameter; parameter paths look like "
                         f"{', '.join(paths[:4])}")
    return optim.freeze(opt, pattern), int(n_frozen)    # frozen leaves: no optimizer state, exactly zero updates


def param_count(params) -> int:
    return int(sum(np.size(x) for x in jax.tree.leaves(params)))


def donatable(*trees):
    """Fresh copies of every leaf: donation needs one buffer per leaf, and an optimizer may put the same zeros
    in two places (Adam's mu and nu)."""
    return jax.tree.map(lambda x: jnp.array(x, copy=True), trees)


def _same_dtypes(new, old):
    """``new`` cast leaf by leaf to ``old``'s dtypes: a carried array keeps its dtype (mixed float32/float64
    models under jax_enable_x64 would otherwise promote)."""
    return jax.tree.map(lambda n, o: jnp.asarray(n).astype(jnp.asarray(o).dtype), new, old)


COMPUTE_DTYPES = {"fp32": None, "bf16": jnp.bfloat16, "fp16": jnp.float16}


def cast_floats(tree, dtype):
    """Every floating-point leaf of ``tree`` as ``dtype`` (labels and other integers as they are)."""
    if dtype is None:
        return tree
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) else x,
                        tree)


def make_players_step(task: Task, opts: dict, config: TrainConfig, augment=None):
    """The step of a several-players task: each player in turn makes ``steps`` updates of its own group with its
    own loss and optimizer (the other groups held fixed), on the same batch with its own dropout/noise keys.
    Metrics are each player's, prefixed ``name/``; ``loss`` is the last player's."""
    losses = {p.name: p.loss if config.grad == "manual" else autodiff(p.loss) for p in task.players}

    def update(p, params, opt_state, state, batch, key):
        def objective(group):
            return losses[p.name]({**params, p.name: group}, state, batch, key, True)
        (loss, (new_state, metrics)), g = jax.value_and_grad(objective, has_aux=True)(params[p.name])
        g = _same_dtypes(g, params[p.name])
        u, s = opts[p.name].update(g, opt_state[p.name], params[p.name])
        group = jax.tree.map(lambda w, du: (w + du).astype(w.dtype), params[p.name], u)
        metrics = {**metrics, "loss": loss, "grad_norm": optim.global_norm(g)}
        return ({**params, p.name: group}, {**opt_state, p.name: _same_dtypes(s, opt_state[p.name])},
                _same_dtypes(new_state, state), metrics)

    def train_step(params, opt_state, state, batch, key):
        if augment is not None:
            batch = augment(jax.random.fold_in(key, AUGMENT_STREAM), batch)
        out = {}
        for i, p in enumerate(task.players):
            for r in range(p.steps):
                k = jax.random.fold_in(jax.random.fold_in(key, i), r)
                params, opt_state, state, m = update(p, params, opt_state, state, batch, k)
            out |= {f"{p.name}/{name}": v for name, v in m.items()}
        return params, opt_state, state, {**out, "loss": m["loss"]}

    return train_step


def make_train_step(task: Task, opt, config: TrainConfig, augment=None, parallel=None, layouts=None):
    """``step(params, opt_state, state, batch, key) -> (params, opt_state, state, metrics)``: one update.

    ``config.grad == "autodiff"`` differentiates ``funcdl.autodiff(task.loss)`` (the references) instead of the
    hand-derived rules. ``augment(key, batch)`` runs on the batch first when given. The metrics are the task's,
    plus ``loss`` and ``grad_norm`` (the global norm before clipping). With ``parallel`` (training.parallel) the
    batch is split over the devices and (params, optimizer state, state) kept in ``layouts``; the gradient takes
    the optimizer state's layout (reduce-scattered under ZeRO).
    """
    hold = (lambda tree, s: tree) if parallel is None else parallel.constrain  # noqa: E731
    loss_fn = task.loss if config.grad == "manual" else autodiff(task.loss)
    compute = COMPUTE_DTYPES[config.precision]
    scaled = config.precision == "fp16"

    def objective(params, state, batch, key, scale):
        loss, aux = loss_fn(cast_floats(params, compute), state, cast_floats(batch, compute), key, True)
        if compute is None:
            return loss, (loss, aux)
        loss = loss.astype(jnp.float32)
        return (loss * scale if scaled else loss), (loss, aux)

    def train_step(params, opt_state, state, batch, key):
        if parallel is not None:
            batch = parallel.constrain_batch(batch)
        if augment is not None:
            batch = augment(jax.random.fold_in(key, AUGMENT_STREAM), batch)
        scale = optim.loss_scale(opt_state) if scaled else None
        (_, (loss, (new_state, metrics))), grads = jax.value_and_grad(objective, has_aux=True)(
            params, state, batch, key, scale)
        grads = _same_dtypes(grads, params)
        if parallel is not None and parallel.shard != "none":
            grads = hold(grads, parallel.split_first_axis(grads))
        updates, new_opt_state = opt.update(grads, opt_state, params)
        params = jax.tree.map(lambda p, u: (p + u).astype(p.dtype), params, updates)
        metrics = {**metrics, "loss": loss, "grad_norm": optim.global_norm(grads) / (1.0 if scale is None else scale)}
        if compute is not None:
            metrics = jax.tree.map(lambda m: jnp.asarray(m).astype(jnp.float32), metrics)
        if scaled:
            metrics["loss_scale"] = scale
        new = (params, _same_dtypes(new_opt_state, opt_state), _same_dtypes(new_state, state))
        if layouts is not None:
            new = tuple(hold(t, s) for t, s in zip(new, layouts, strict=True))
        return (*new, metrics)

    return train_step
