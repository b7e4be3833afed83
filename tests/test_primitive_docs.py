"""Every registered primitive carries its own math: the reference's docstring states the forward and derives the
gradient of each input it differentiates (DESIGN.md, "The primitive: one file reads like one textbook section")."""

import re
import sys

import jax
import jax.numpy as jnp
import pytest

import funcdl as fd
from funcdl.core.primitive import Primitive


def differentiable_inputs(prim: Primitive) -> list[str]:
    """The inputs the checker differentiates: float arrays in some example, minus the declared ``nondiff``."""
    names = set()
    for ex in prim.examples(jax.random.PRNGKey(0), jnp.float64):
        for name, value in zip(prim.inputs, ex.args, strict=False):
            if hasattr(value, "dtype") and jnp.issubdtype(value.dtype, jnp.inexact) and name not in prim.nondiff:
                names.add(name)
    return [n for n in prim.inputs if n in names]


def missing_derivation(prim: Primitive) -> list[str]:
    """What the reference's docstring lacks: its own text, and a gradient ``d<input>`` for each input."""
    doc = prim.reference.__doc__
    module = sys.modules.get(prim.reference.__module__)
    if not doc or len(doc.strip()) < 40:
        return ["a docstring of its own"]
    if module is not None and doc == module.__doc__:
        return ["a docstring of its own (it is the module's)"]
    missing = []
    for name in differentiable_inputs(prim):
        # dx, dx_t, dW_ih or dw_ih, dlogits_nj; not dxhat
        pattern = r"\bd" + re.escape(name).replace("_", "_?") + r"(?![a-z0-9])"
        if not re.search(pattern, doc, flags=re.IGNORECASE):
            missing.append(f"the gradient d{name}")
    return missing


@pytest.mark.parametrize("name", fd.registered())
def test_reference_docstring_derives_every_gradient(name):
    prim = fd.get(name)
    missing = missing_derivation(prim)
    assert not missing, f"{name}: the docstring of {prim.reference.__qualname__} lacks " + ", ".join(missing)


@pytest.mark.parametrize("name", fd.registered())
def test_primitive_doc_is_the_reference_doc(name):
    """No fallback to the module docstring: ``help(fd.conv2d)`` shows conv2d's own derivation."""
    prim = fd.get(name)
    assert prim.__doc__ == prim.reference.__doc__


def test_a_primitive_without_its_derivation_fails():
    """The check is not a rubber stamp: a reference with no docstring, one with the module's docstring, and one
    with a forward formula but no gradient of its inputs are all caught."""
    base = fd.get("dense")

    def bare(x, w, b=None, *, precision=None):
        return base.reference(x, w, b, precision=precision)

    def forward_only(x, w, b=None, *, precision=None):
        """y = x W + b over the leading dimensions, x (..., n_in), W (n_in, n_out), b (n_out,)."""
        return base.reference(x, w, b, precision=precision)

    def module_doc(x, w, b=None, *, precision=None):
        return base.reference(x, w, b, precision=precision)

    module_doc.__doc__ = sys.modules[__name__].__doc__
    for ref in (bare, forward_only, module_doc):
        prim = fd.primitive("dense_undocumented", ref, base.fwd, base.bwd, examples=base.examples, check=base.check,
                            register=False)
        assert missing_derivation(prim), ref.__name__
        assert prim.__doc__ == ref.__doc__                       # no fallback to the module's docstring
    assert not missing_derivation(base)
