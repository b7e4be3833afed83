"""Compression and deployment over parameter pytrees: ``quantize`` (post-training quantization, calibration, the
integer inference path, quantization-aware training), ``prune`` (magnitude and structured pruning, sparsity
schedules, lottery tickets). Import the modules by name: ``from funcdl.compress import quantize, prune``.
Exporting a run to ONNX or StableHLO lives in ``funcdl.export``.
"""
