"""optim: optimizers, schedules and gradient transformations as pure functions over pytrees.

The interface is optax's: ``opt.init(params)``, ``opt.update(grads, state, params)``, ``apply_updates``.
Every rule's docstring gives its update equations; ``optim.current_lr(state)`` reads the learning rate.
"""

from .adaptive import adam, adamax, adamw, nadam, radam
from .base import (
    GradientTransformation,
    apply_updates,
    chain,
    check_tree_match,
    current_lr,
    find_state_field,
    path_str,
    resolve_lr,
    tree_paths,
)
from .modern import adafactor, lamb, lion
from .optimizers import adadelta, adagrad, rmsprop, sgd
from .registry import OPTIMIZERS, create, hyperparameters
from .schedules import (
    SCHEDULES,
    constant,
    cosine_decay,
    cosine_restarts,
    exponential_decay,
    join_schedules,
    linear,
    make_schedule,
    multistep_decay,
    one_cycle,
    piecewise_constant,
    polynomial_decay,
    step_decay,
    warmup_cosine,
)
from .transforms import (
    add_decayed_weights,
    clip,
    clip_by_global_norm,
    decay_mask,
    freeze,
    frozen_mask,
    global_norm,
    identity,
    masked,
    scale,
    scale_by_learning_rate,
    scale_by_schedule,
)
from .wrappers import accumulate, ema_of, ema_params, lookahead, sam, skip_not_finite

__all__ = [
    "GradientTransformation", "apply_updates", "chain", "check_tree_match", "current_lr", "find_state_field",
    "path_str", "resolve_lr", "tree_paths",
    "sgd", "adagrad", "rmsprop", "adadelta", "adam", "adamw", "adamax", "nadam", "radam", "lamb", "lion",
    "adafactor", "OPTIMIZERS", "create", "hyperparameters",
    "SCHEDULES", "constant", "cosine_decay", "cosine_restarts", "exponential_decay", "join_schedules", "linear",
    "make_schedule", "multistep_decay", "one_cycle", "piecewise_constant", "polynomial_decay", "step_decay",
    "warmup_cosine",
    "add_decayed_weights", "clip", "clip_by_global_norm", "decay_mask", "freeze", "frozen_mask", "global_norm",
    "identity", "masked", "scale", "scale_by_learning_rate", "scale_by_schedule",
    "accumulate", "ema_of", "ema_params", "lookahead", "sam", "skip_not_finite",
]
