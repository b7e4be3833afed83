"""Training: one loop every model uses, built from small pieces.

``config`` (TrainConfig), ``step`` (optimizer and the jitted step), ``evaluate``, ``rundir`` (the run folder: lock,
config, metrics, checkpoints, resume), ``stopping`` (Ctrl-C, NaN, early stopping), ``loop`` (the driver:
``train``), plus ``task`` (what a model gives the loop), ``checkpoint`` and ``augment``.
"""
