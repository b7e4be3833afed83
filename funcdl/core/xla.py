"""What funcdl asks of XLA's CPU backend for steps with convolutions.

Two facts about XLA's CPU backend (jaxlib 0.10, measured on 2 vCPUs) shape how convolutional models run:

* **A convolution in a non-canonical dimension order is slow inside ``lax.scan``.** XLA compiles it in a loop
  body through a generic code path instead of its convolution library. JAX's autodiff writes the kernel
  gradient that way (the example index as the contracted feature): the autodiff step of the small ResNet
  (batch 128) takes 158 ms as a jitted call and 2038 ms inside ``lax.scan``. The hand-derived rules move the
  axes themselves and call every convolution in the canonical order (``funcdl.nn.conv.kernel_grad``), and their
  step runs *faster* inside ``lax.scan``: 97 against 134 ms (``python benchmarks/bench_conv.py``). So only a
  step with a non-canonical convolution runs as a Python loop of jitted steps; everything else keeps whole
  epochs inside one ``lax.scan`` (:func:`scan_is_slow`).
* **The convolutions run about twice as fast with XLA's YNNPACK fusion list set to {dot, reduce}.** The
  compiler option ``xla_cpu_experimental_ynn_fusion_type`` names the operations XLA hands to the YNNPACK
  library; setting it replaces jaxlib's default list. With ``dot,reduce`` the 3x3 convolutions with 32 or 64
  channels at batch 128 run at ~170 instead of ~90 GFLOP/s (forward, input gradient and kernel gradient
  alike), and the batch-norm reductions stay on YNNPACK (``dot`` alone makes them 1.5-2.5x slower). The
  ResNet step inside ``lax.scan``: 97 ms with the option, 137 ms with XLA's defaults
  (``python benchmarks/bench_conv.py``; ``--ynn off`` compiles everything with the defaults). The same option
  makes a matmul-heavy step slower (``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=dot,reduce`` in front
  of ``python benchmarks/bench_mlp.py``: 10.3 -> 11.1 ms; ``bench_gpt.py --variants hand``: 36 -> 42 ms), so
  it is asked for per compiled function, only where the step contains a convolution
  (:func:`compiler_options`), never as a process-wide ``XLA_FLAGS``.

The hand-derived rules do not depend on either choice: they are the same functions, compiled differently.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.extend import core as jex_core

CONV_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE"}


def _convolutions(jaxpr):
    """Every ``conv_general_dilated`` equation of a jaxpr, sub-jaxprs (jit, scan, cond, custom_vjp) included."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(sub, jex_core.ClosedJaxpr):
                    yield from _convolutions(sub.jaxpr)
                elif isinstance(sub, jex_core.Jaxpr):
                    yield from _convolutions(sub)


def _canonical(eqn) -> bool:
    """Whether a convolution is in the dimension order XLA's CPU backend runs through its convolution library:
    input (batch, *spatial, feature), kernel (*spatial, in, out), output (batch, *spatial, feature)."""
    dn = eqn.params["dimension_numbers"]
    n = len(dn.lhs_spec) - 2
    sp = tuple(range(1, n + 1))
    return (tuple(dn.lhs_spec) == (0, n + 1, *sp) and tuple(dn.out_spec) == (0, n + 1, *sp)
            and tuple(dn.rhs_spec) == (n + 1, n, *range(n)) and eqn.params["batch_group_count"] == 1)


def has_convolution(fn, *args) -> bool:
    """Whether the computation of ``fn(*args)`` contains a convolution (traced, not run; args may be
    ``jax.ShapeDtypeStruct``)."""
    return any(True for _ in _convolutions(jax.make_jaxpr(fn)(*args).jaxpr))


def scan_is_slow(fn, *args) -> bool:
    """Whether ``fn(*args)`` would run much slower inside ``lax.scan`` than as one jitted call per step: on CPU,
    when its computation contains a convolution in a non-canonical dimension order (module docstring). The
    hand-derived rules write every convolution canonically; JAX's own transpose rules (``grad="autodiff"``)
    do not."""
    if jax.default_backend() != "cpu":
        return False
    return not all(_canonical(eqn) for eqn in _convolutions(jax.make_jaxpr(fn)(*args).jaxpr))


@functools.cache
def ynn_available() -> bool:
    """Whether this jaxlib accepts the YNNPACK compiler option (it is experimental: a jaxlib that renamed or
    dropped it compiles without it instead of failing)."""
    if jax.default_backend() != "cpu":
        return False
    try:
        jax.jit(lambda a: a @ a, compiler_options=CONV_OPTIONS).lower(jnp.ones((2, 2), jnp.float32)).compile()
    except Exception:  # noqa: BLE001 - any refusal means "not available"
        return False
    return True


def compiler_options(fn, *args, ynn: bool | None = None) -> dict | None:
    """The ``compiler_options`` to give ``jax.jit`` for a function like ``fn(*args)``.

    ``ynn=None`` (auto): the YNNPACK option on CPU when the computation contains a convolution; ``True``: on
    CPU whatever the computation; ``False``: XLA's defaults. ``None`` is returned where no option applies, so
    the result can be passed straight to ``jax.jit(..., compiler_options=...)``.
    """
    if ynn is False or not ynn_available():
        return None
    if ynn is None and not has_convolution(fn, *args):
        return None
    return dict(CONV_OPTIONS)
