"""optim: optimizers, schedules and gradient transformations as pure functions over pytrees.

The interface is optax's: ``opt.init(params)``, ``opt.update(grads, state, params)``, ``apply_updates``.
Every named optimizer is a ``chain`` of small transforms (``scale_by_adam``, ``add_decayed_weights``, ...)
ending in ``scale_by_learning_rate``, whose state is the one place for the step count and the learning rate
(``optim.current_lr(state)``); each transform's docstring gives its equations. A new rule is a chain:

    opt = optim.chain(optim.scale_by_adam(b1=0.95), optim.add_decayed_weights(0.1), optim.scale_by_learning_rate(3e-4))
"""

from .adaptive import adam, adamax, adamw, nadam, radam
from .base import (
    ChainState,
    GradientTransformation,
    LearningRateState,
    apply_updates,
    chain,
    check_tree_match,
    current_lr,
    find_state_field,
    path_str,
    resolve_lr,
    tree_paths,
)
from .loss_scale import LossScaleState, dynamic_loss_scale, loss_scale
from .masking import SparseState, apply_masks, masked_sparse, masks_of, zero_pruned
from .modern import adafactor, lamb, lion
from .optax_bridge import from_optax, optax_optimizer, to_optax
from .optimizers import adadelta, adagrad, rmsprop, sgd
from .registry import OPTIMIZERS, create, hyperparameters
from .scaling import (
    bias_correction,
    ema,
    ema_sq,
    scale_by_adadelta,
    scale_by_adagrad,
    scale_by_adam,
    scale_by_adamax,
    scale_by_momentum,
    scale_by_nadam,
    scale_by_radam,
    scale_by_rms,
)
from .scaling_modern import scale_by_factored_rms, scale_by_lion, scale_by_relative_step, scale_by_trust_ratio
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
    cast_to_params,
    clip,
    clip_by_global_norm,
    decay_mask,
    flip_sign,
    freeze,
    frozen_mask,
    global_norm,
    identity,
    masked,
    optimizer_chain,
    scale,
    scale_by_learning_rate,
    scale_by_schedule,
)
from .wrappers import accumulate, ema_of, ema_params, lookahead, sam, skip_not_finite

__all__ = [
    "GradientTransformation", "ChainState", "LearningRateState", "apply_updates", "chain", "check_tree_match",
    "current_lr", "find_state_field",
    "path_str", "resolve_lr", "tree_paths",
    "sgd", "adagrad", "rmsprop", "adadelta", "adam", "adamw", "adamax", "nadam", "radam", "lamb", "lion",
    "adafactor", "OPTIMIZERS", "create", "hyperparameters",
    "SCHEDULES", "constant", "cosine_decay", "cosine_restarts", "exponential_decay", "join_schedules", "linear",
    "make_schedule", "multistep_decay", "one_cycle", "piecewise_constant", "polynomial_decay", "step_decay",
    "warmup_cosine",
    "add_decayed_weights", "clip", "clip_by_global_norm", "decay_mask", "freeze", "frozen_mask", "global_norm",
    "identity", "masked", "scale", "scale_by_learning_rate", "scale_by_schedule", "flip_sign", "cast_to_params",
    "optimizer_chain",
    "ema", "ema_sq", "bias_correction", "scale_by_momentum", "scale_by_adagrad", "scale_by_rms", "scale_by_adadelta",
    "scale_by_adam", "scale_by_adamax", "scale_by_nadam", "scale_by_radam", "scale_by_trust_ratio", "scale_by_lion",
    "scale_by_factored_rms", "scale_by_relative_step",
    "LossScaleState", "dynamic_loss_scale", "loss_scale", "to_optax", "from_optax", "optax_optimizer",
    "accumulate", "ema_of", "ema_params", "lookahead", "sam", "skip_not_finite",
    "SparseState", "apply_masks", "masked_sparse", "masks_of", "zero_pruned",
]
