"""optim: optimizers, schedules and gradient transformations as pure functions over pytrees.

The interface is optax's: ``opt.init(params)``, ``opt.update(grads, state, params)``, ``apply_updates``.
"""

from .base import GradientTransformation, apply_updates, chain, check_tree_match, resolve_lr
from .optimizers import adam, sgd
from .registry import OPTIMIZERS, create

__all__ = ["GradientTransformation", "apply_updates", "chain", "check_tree_match", "resolve_lr", "adam", "sgd", "OPTIMIZERS", "create"]
