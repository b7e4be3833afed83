"""Quantization primitives (fake quantization with the straight-through estimator, learned step size)."""
