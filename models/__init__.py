"""models: architectures composed from funcdl primitives, and the registry the command line reads."""

from . import cnn, densenet, forecast, gpt, mbconv, mlp, resnet, rnn, seq2seq, tcn, transformer
from .registry import MODELS, ModelEntry, get_model, register

__all__ = ["MODELS", "ModelEntry", "get_model", "register", "mlp", "rnn", "seq2seq", "gpt", "cnn", "resnet", "densenet",
           "mbconv", "tcn", "forecast", "transformer"]
