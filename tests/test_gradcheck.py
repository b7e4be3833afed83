"""Every registered primitive is checked by construction: the suite is parametrised over the registry."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

import funcdl as fd
from funcdl.core import gradcheck as gc

FUZZ = 1            # configurations drawn from each primitive's space (fixed seed) on top of its hand-picked examples
SECOND_ORDER = 1    # the hvp check on the first configuration here (funcdl gradcheck checks every one)
EXTRAS = 1          # the float32 VJP, vmap and jit (against an eager run) on the first configuration here
                    # (funcdl gradcheck: every one); the float64 VJP and finite differences run on every
                    # configuration and every draw


# every primitive's registry check is slow-marked (CI runs them all); the quick subset keeps the checker's own
# tests below, and `funcdl gradcheck NAME` checks the primitive being changed in seconds
@pytest.mark.slow
@pytest.mark.parametrize("name", fd.registered())
def test_primitive_gradients(name):
    rows = gc.check_primitive(name, fuzz=FUZZ, second_order=SECOND_ORDER, extras=EXTRAS)
    checks = {r.check for r in rows}
    assert {"vjp", "fd", "jit", "vmap", "hvp"} <= checks, f"{name}: some checks did not run ({checks})"
    assert {r.dtype for r in rows if r.check == "vjp"} == {"float64", "float32"}
    failed = [r for r in rows if not r.passed]
    assert not failed, "\n" + gc.format_table(failed)
    worst64 = max(r.rel_error for r in rows if r.check == "vjp" and r.dtype == "float64")
    assert worst64 <= 1e-10
    if fd.get(name).space is not None:
        assert sum(r.config.startswith("fuzz#") for r in rows if r.check == "vjp"), f"{name}: nothing fuzzed"


def test_checker_catches_a_wrong_backward():
    """A deliberately wrong rule (missing factor 2) must fail: the checker is not a rubber stamp."""
    sq = fd.primitive(
        "square_wrong", lambda x: x * x, lambda x: (x * x, (x,)), lambda res, g: (g * res[0],),
        examples=lambda key, dtype: [fd.Example((jax.random.normal(key, (4,), dtype),))], register=False,
    )
    rows = gc.check_primitive(sq)
    assert any(not r.passed for r in rows if r.check == "vjp")
    # the finite-difference test checks the reference, which is right
    assert all(r.passed for r in rows if r.check == "fd")


def test_checker_catches_a_wrong_reference():
    """Hand and reference agree with each other but not with the math: finite differences catch it."""
    wrong = fd.primitive(
        "sin_wrong", lambda x: jnp.sin(x), lambda x: (jnp.sin(x), (x,)), lambda res, g: (g * jnp.cos(res[0]),),
        examples=lambda key, dtype: [fd.Example((jax.random.normal(key, (4,), dtype),))], register=False,
    )
    # make the reference's derivative wrong by a custom jvp on the reference itself
    @jax.custom_jvp
    def bad_sin(x):
        return jnp.sin(x)

    bad_sin.defjvp(lambda p, t: (jnp.sin(p[0]), 2 * jnp.cos(p[0]) * t[0]))
    wrong.reference = bad_sin
    wrong.bwd = lambda res, g: (2 * g * jnp.cos(res[0]),)
    rows = gc.check_primitive(wrong)
    assert all(r.passed for r in rows if r.check == "vjp")
    assert any(not r.passed for r in rows if r.check == "fd")


def test_checker_catches_a_backward_that_is_right_only_to_first_order():
    """dx = 2 stop_gradient(x) dy has the right value but no derivative: SAM or a gradient penalty through it
    would be wrong. The second-order check (grad of <J^T u, w>, reverse over reverse) must fail it."""
    sq = fd.primitive(
        "square_flat", lambda x: x * x, lambda x: (x * x, (x,)),
        lambda res, g: (2 * jax.lax.stop_gradient(res[0]) * g,),
        examples=lambda key, dtype: [fd.Example((jax.random.normal(key, (4,), dtype),))], register=False,
    )
    rows = gc.check_primitive(sq)
    assert all(r.passed for r in rows if r.check in ("vjp", "fd", "jit", "vmap"))
    assert [r.passed for r in rows if r.check == "hvp"] == [False]


def test_first_order_only_is_declared_and_reported():
    sq = fd.primitive(
        "square_first_order", lambda x: x * x, lambda x: (x * x, (x,)),
        lambda res, g: (2 * jax.lax.stop_gradient(res[0]) * g,),
        examples=lambda key, dtype: [fd.Example((jax.random.normal(key, (4,), dtype),))], register=False,
    )
    sq.second_order = "the backward stops the gradient of x"
    (row,) = [r for r in gc.check_primitive(sq) if r.check == "hvp"]
    assert row.passed and "first order only (the backward stops the gradient of x)" in row.message


def test_rel_error_definition():
    a = jnp.array([1.0, 2.0])
    b = jnp.array([1.0, 2.5])
    assert gc.rel_error(a, b) == pytest.approx(0.5 / (2.0 + 2.5))
    assert gc.rel_error(jnp.zeros(3), jnp.zeros(3)) == 0.0


def test_autodiff_switch_runs_the_reference():
    calls = []
    p = fd.primitive(
        "probe", lambda x: (calls.append("ref"), x * 3.0)[1], lambda x: (calls.append("fwd") or x * 3.0, ()),
        lambda res, g: (3.0 * g,), register=False,
    )
    jax.grad(lambda x: p(x))(1.0)
    assert calls[-1] == "fwd"
    jax.grad(fd.autodiff(lambda x: p(x)))(1.0)
    assert calls[-1] == "ref"


def test_primitive_argument_errors():
    with pytest.raises(TypeError, match="unexpected argument 'stride'"):
        fd.relu(jnp.ones(3), stride=2)
    with pytest.raises(TypeError, match="keyword-only"):
        fd.relu(jnp.ones(3), jnp.ones(3))
    with pytest.raises(KeyError, match="registered"):
        fd.get("no_such_primitive")


def test_cli_gradcheck_json_and_exit_code():
    out = subprocess.run([sys.executable, "-m", "funcdl", "gradcheck", "--json", "relu", "identity"],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert {"name", "dtype", "input", "rel_error", "passed"} <= set(rows[0])
    assert {r["name"] for r in rows} == {"relu", "identity"}
    bad = subprocess.run([sys.executable, "-m", "funcdl", "gradcheck", "nope"], capture_output=True, text=True,
                         check=False)
    assert bad.returncode == 2 and "registered" in bad.stderr


def test_cli_quick_runs_the_costly_checks_on_the_first_configuration_only(capsys):
    """``funcdl gradcheck --quick`` (the book's default and the suite's depth): float64 VJP and finite differences
    on every configuration; float32, jit, vmap and second order on the first one only."""
    from funcdl.commands.cli import main

    assert main(["gradcheck", "--json", "--quick", "--fuzz", "2", "relu"]) == 0
    rows = json.loads(capsys.readouterr().out)
    configs = list(dict.fromkeys(r["config"] for r in rows))
    assert len(configs) > 1
    assert {r["config"] for r in rows if r["check"] in ("hvp", "jit", "vmap")} == {configs[0]}
    assert {r["config"] for r in rows if r["check"] == "vjp" and r["dtype"] == "float32"} == {configs[0]}
    assert {r["config"] for r in rows if r["check"] == "fd"} == set(configs)
