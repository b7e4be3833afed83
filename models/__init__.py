"""models: architectures composed from funcdl primitives, one model per module, and the registry the command
line reads.

The contract every model module follows (``models/mlp.py`` is the shortest example):

* ``Config`` — a frozen dataclass with every setting of the architecture (hashable: ``jit`` takes it as a
  static argument). It validates itself in ``__post_init__``.
* ``KIND`` — ``"classification"`` (the loop reports ``accuracy``), ``"language"`` (loss in nats per token) or
  ``"regression"``.
* ``init(key, config) -> (params, state)`` — parameters and mutable state (batch-norm running statistics, a
  carried hidden state); ``state`` is ``{}`` when there is none.
* ``apply(params, state, x, config, *, key=None, train=False) -> (outputs, state)`` — the model's outputs for a
  batch of inputs (logits; a forecast; decoded tokens for a translation model) and the new state. ``key`` is a
  PRNG key for dropout and friends; ``train`` a Python bool.
* ``loss(params, state, batch, config, *, key=None, train=False) -> (loss, (state, metrics))`` — the scalar
  training loss on a batch (a dict of arrays: ``{"x": ..., "y": ...}``), the new state and a dict of per-batch
  metrics (``{"loss": ..., "accuracy": ...}``). ``jax.grad(loss, has_aux=True)`` runs the hand-derived rules;
  ``jax.grad(funcdl.autodiff(loss), has_aux=True)`` differentiates the plain-``jax.numpy`` references.
* optionally ``extras(config) -> dict`` — further entry points a command may use (``generate`` for a language
  model, ``decode_greedy`` / ``decode_beam`` for a translation model).
* ``build(info, *, option=default, ...) -> Task`` and a ``register(...)`` call for each model the command line
  trains (see ``models/registry.py``); every model option is an explicit keyword argument.

Extra entry points take the same conventions: ``params`` first, the data next, ``config`` after the data (or
as the keyword ``config=``), e.g. ``gpt.generate(params, prompt, key, n, config=config)``,
``seq2seq.decode_beam(params, src, config, beam=4)``, ``mlp.grads_by_hand(params, state, batch, config)``.

``as_task(config)`` turns any such module into the ``funcdl.training.task.Task`` the training loop runs: the
module is the one that defines ``type(config)``::

    from funcdl.models import as_task, mlp
    task = as_task(mlp.Config(sizes=(40, 64, 10)))

Modules: ``mlp`` (mlp, logreg), ``cnn`` (the MNIST-1D paper's 1-D CNN), ``lenet``, ``dilated``, ``resnet``
(resnet, resnet18), ``densenet``, ``mbconv``, ``tcn``, ``rnn`` (rnn, lstm, gru classifiers; the recurrent layer
stack), ``char_lstm`` (char-lstm), ``forecast`` (lstm-forecast), ``seq2seq`` (GRU with attention), ``gpt``,
``bert`` (bert_mlm), ``transformer_seq2seq``, ``vit``, ``autoencoder`` (autoencoder, conv_autoencoder),
``vae`` (vae, conv_vae), ``gan`` (gan, dcgan, cdcgan), ``stylegan``; ``judge`` is the MNIST classifier that scores
generated images, ``hf`` maps Hugging Face GPT-2/BERT checkpoints in and out and ``pretrained`` loads MiniLM
(none of the three is a registered model); ``bert_classifier`` fine-tunes a pretrained encoder; ``qa`` is a
T5/BART-style encoder-decoder for extractive question answering; ``yolo`` (yolo, ssd: single-shot detectors),
``aaconv`` (aa_resnet: attention-augmented convolutions), ``cifar_fast`` (the fast CIFAR-10 recipe), ``nerf`` (a
neural radiance field that renders held-out views), ``ddpm`` (ddpm, cddpm: denoising diffusion with DDPM/DDIM
samplers and classifier-free guidance, on the UNet of ``unet``);
``layers`` holds the building blocks they share.
Adding a model is one new module with a ``register(...)`` call, plus its name in the import line below: the
registry test (tests/test_models.py) then builds it at its ``small`` size, checks its whole-model gradient
against pure autodiff and trains it a few steps, with no test edit.
"""

from . import (
    aaconv,
    autoencoder,
    bert,
    bert_classifier,
    char_lstm,
    cifar_fast,
    cnn,
    ddpm,
    densenet,
    dilated,
    forecast,
    gan,
    gpt,
    judge,
    layers,
    lenet,
    mbconv,
    mlp,
    nerf,
    pretrained,
    qa,
    resnet,
    rnn,
    seq2seq,
    stylegan,
    tcn,
    transformer_seq2seq,
    unet,
    vae,
    vit,
    yolo,
)
from .registry import MODELS, ModelEntry, as_task, get_model, register

__all__ = ["MODELS", "ModelEntry", "as_task", "get_model", "register", "layers", "mlp", "cnn", "lenet", "dilated",
           "resnet", "densenet", "mbconv", "tcn", "rnn", "char_lstm", "forecast", "seq2seq", "gpt", "bert",
           "transformer_seq2seq", "vit", "autoencoder", "vae", "gan", "stylegan", "judge", "bert_classifier",
           "pretrained", "qa", "aaconv", "cifar_fast", "nerf", "yolo", "ddpm", "unet"]
