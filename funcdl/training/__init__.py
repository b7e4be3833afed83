"""Training: the generic loop, the task contract, checkpoints and augmentation."""
