"""models: architectures composed from funcdl primitives, and the registry the command line reads."""

from . import mlp, rnn
from .registry import MODELS, ModelEntry, get_model, register

__all__ = ["MODELS", "ModelEntry", "get_model", "register", "mlp", "rnn"]
