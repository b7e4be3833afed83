"""Property-based checking of settings: a primitive's ``space`` draws random configurations that the checker
holds to the same standard as the hand-picked examples (``check_primitive(name, fuzz=N)``)."""

import inspect

import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fd
from funcdl.core import gradcheck as gc

DRAWS = 25      # draws per space in the coverage test (host-side only: nothing is compiled)
FIRST_ORDER = ("vjp", "fd")


def _elu_by_output(x, *, alpha=1.0):
    """y = x for x > 0, alpha (e^x - 1) otherwise.  dx = dy for x > 0, dy alpha e^x otherwise."""
    return jnp.where(x > 0, x, alpha * jnp.expm1(jnp.minimum(x, 0)))


def _elu_by_output_fwd(x, *, alpha=1.0):
    y = _elu_by_output(x, alpha=alpha)
    return y, (y,)


def _elu_by_output_bwd(res, dy, *, alpha=1.0):
    (y,) = res       # the old rule: the branch from y > 0, right only for alpha > 0
    return (jnp.where(y > 0, dy, dy * (y + alpha)),)


def _elu_like(space):
    return fd.primitive(
        "elu_by_output", _elu_by_output, _elu_by_output_fwd, _elu_by_output_bwd,
        examples=lambda key, dtype: [fd.Example((jnp.array([-1.5, -0.5, 0.5, 2.0], dtype),), {"alpha": a})
                                     for a in (1.0, 0.5)],
        space=space, register=False,
    )


def _alpha_space(rng, dtype):
    x = rng.standard_normal(6)
    x = np.where(np.abs(x) < 0.05, 0.05, x)
    return fd.Example((jnp.asarray(x, dtype),), {"alpha": round(float(rng.uniform(-2, 2)), 3)})


def test_a_rule_right_only_for_the_hand_picked_settings_fails_fuzzing():
    prim = _elu_like(_alpha_space)
    # the first-order checks only: the jit/vmap/second-order programs are test_gradcheck's (the suite's budget)
    assert all(r.passed for r in gc.check_primitive(prim, checks=FIRST_ORDER))     # the author's alphas are positive
    fuzzed = gc.check_primitive(prim, fuzz=6, checks=FIRST_ORDER)
    bad = [r for r in fuzzed if not r.passed]
    assert bad and all(r.config.startswith("fuzz#") for r in bad)
    assert all("alpha=-" in r.config for r in bad if r.check == "vjp")  # exactly the negative alphas fail


def test_elu_is_right_for_negative_alpha():
    rows = gc.check_primitive("elu", fuzz=6, checks=FIRST_ORDER)
    assert any("alpha=-" in r.config for r in rows)
    assert all(r.passed for r in rows), "\n" + gc.format_table([r for r in rows if not r.passed])


def test_fuzz_draws_are_reproducible_and_labelled():
    a = gc.fuzz_examples(fd.get("elu"), 3, seed=5)
    b = gc.fuzz_examples(fd.get("elu"), 3, seed=5)
    assert [e.label for e in a] == [e.label for e in b]
    assert all(e.label.startswith(f"fuzz#{j} alpha=") for j, e in enumerate(a))
    assert np.array_equal(np.asarray(a[0].args[0]), np.asarray(b[0].args[0]))
    assert gc.fuzz_examples(fd.get("elu"), 0) == []


WITH_SPACE = [n for n in fd.registered() if fd.get(n).space is not None]


# Every registered primitive declares its space: a new primitive must bring one (or be listed here, on purpose).
NO_SPACE: set[str] = set()


def test_which_primitives_have_no_space():
    assert set(fd.registered()) - set(WITH_SPACE) == NO_SPACE


@pytest.mark.slow
@pytest.mark.parametrize("name", WITH_SPACE)
def test_space_covers_every_setting(name):
    """Each keyword setting the primitive takes appears in some draw, with more than one value when it can
    vary (a space cannot silently leave a setting at its default), and every draw passes the primitive's check."""
    prim = fd.get(name)
    draws = gc.fuzz_examples(prim, DRAWS, seed=1)
    seen: dict[str, set] = {}
    for ex in draws:
        assert set(ex.settings) <= set(prim._settings_defaults), ex.settings
        for k, v in ex.settings.items():
            seen.setdefault(k, set()).add(repr(v))
        if prim.check is not None:
            args = tuple(ex.args) + tuple(prim._input_defaults[k] for k in prim.inputs[len(ex.args):])
            prim.check(*args, **ex.settings)
    missing = set(prim._settings_defaults) - set(seen)
    assert not missing, f"{name}: the space never sets {sorted(missing)}"
    fixed = [k for k, v in seen.items() if len(v) < 2 and not _single_valued(prim, k)]
    assert not fixed, f"{name}: the space draws one value only for {fixed}"


# Settings a space holds at one value, and why (each must still appear in the draws).
FIXED = {
    # a lower-precision matmul cannot meet the checker's float64 tolerances; tests/test_precision.py checks it
    "compute_dtype": "reduced precision by design",
}


def _single_valued(prim, setting):
    return setting in FIXED


def test_space_signature():
    for name in WITH_SPACE:
        assert len(inspect.signature(fd.get(name).space).parameters) == 2, name
