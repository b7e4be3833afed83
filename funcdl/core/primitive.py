"""The primitive mechanism: one helper turns (reference, fwd, bwd) into a differentiable function.

A primitive is written in the order a reader wants it (see DESIGN.md):

    def _relu(x):                      # 1. reference forward in plain jax.numpy, with the math
        '''y = max(x, 0);  dy/dx = 1[x > 0], so dx = dy * 1[y > 0].  Keep y.'''
        return jnp.maximum(x, 0)

    def _relu_fwd(x):                  # 2. forward that also returns the residuals
        y = _relu(x)
        return y, (y,)

    def _relu_bwd(res, dy):            # 3. the hand-derived backward
        (y,) = res
        return (dy * (y > 0),)

    relu = primitive("relu", _relu, _relu_fwd, _relu_bwd, examples=..., space=...)   # 4. one registration

Conventions
-----------
Every primitive in ``funcdl/nn`` follows these; arithmetic shared by several files lives in ``funcdl/nn/_*.py``.

* Names: the reference is ``_<name>``, the forward ``_<name>_fwd``, the backward ``_<name>_bwd``, the shape
  check ``_<name>_check`` (``_check`` in a file of one primitive) and the example factory
  ``_<name>_examples``. A family built from one formula (conv1d/2d/3d, max_pool1d/2d, ...) comes from one
  factory ``_make_<family>(name, n)`` whose inner functions follow the same rule with the family's name
  (the reference is renamed ``_<name>``); primitives that draw their examples or checks one way share a
  factory called at the registration (``_unary(kinks=...)``, ``_regression_examples(...)``).
* The math lives in the reference's own docstring: forward formula, shapes, and the gradient of every
  differentiable input (``dx``, ``dw``, ...) derived in a few lines, with the residuals it keeps. A
  Primitive's ``__doc__`` is that docstring (there is no fallback to the module's); ``tests/test_primitive_docs.py``
  fails for a primitive without one.
* ``fwd`` calls the reference for its primal output; where it cannot (it keeps intermediates such as mu/rstd
  or P, or runs a faster path such as blockwise attention), a one-line comment at its top says why. Either way
  the checker holds the hand rule to the reference, so ``fwd`` is also the forward that runs when nothing is
  differentiated (XLA drops the unused residuals).
* Array inputs are the positional parameters of the reference; settings (stride, axis, epsilon, rate, ...)
  are keyword-only parameters (after ``*``). Settings are static: they must be hashable and they select
  which ``jax.custom_vjp`` function runs. Lists given as settings are turned into tuples.
* An optional input (bias, mask, weight, key) is ``None`` when absent; the residuals keep the input itself
  (or that ``None``), and ``bwd`` returns ``None`` for it when it is absent, e.g. ``db = None if b is None
  else sum_rows(dy)``. No presence flags in residuals or settings.
* ``bwd(residuals, cotangent, **settings)`` returns one cotangent per positional input, each in its input's
  dtype. ``None`` stands for "no gradient" and is what PRNG keys, integer inputs (labels, indices) and absent
  optional inputs get.
* Discrete inputs are named for what they hold: ``DISCRETE_INPUTS`` (labels, targets, ids, positions, a PRNG
  ``key``, a boolean ``mask``/``kv_mask``) may be integers or booleans; every other array input must be a
  floating array, and a primitive refuses an integer array or a Python list there with a one-line
  ``TypeError`` that names it (the checker runs every example through that check).
* ``nondiff=("weight",)`` names float inputs that get no gradient by definition (class weights, fixed
  masks); their cotangent is ``None`` and the checker leaves them out.
* ``space(rng, dtype)``, when given, draws one random configuration from everything the primitive accepts
  (``rng`` is a ``numpy.random.Generator``); ``funcdl gradcheck --fuzz N`` checks N of them like the
  examples, so a rule that holds only for the settings its author thought of fails. Every keyword setting
  appears in some draw (``tests/test_fuzz.py``); one the space leaves out must be refused by ``check``.
* ``surrogate="why"`` declares a primitive whose hand rule is a surrogate gradient by design (the
  straight-through estimator of a rounding step, funcdl/nn/quant.py): its reference is written so that autodiff
  of it IS the surrogate (``x + stop_gradient(q(x) - x)``), the vjp check holds the hand rule to that, and the
  finite-difference check, which measures the forward's true derivative (0 between the steps), reports a
  skipped row with this reason instead.
* ``check(*args, **settings)``, when given, validates shapes and dtypes at trace time and raises a
  ``ValueError`` naming the primitive; shapes are static, so this works inside ``jit`` too.
* Primitives are never jitted on their own: jit the step that calls them (DESIGN.md).

Two ways to differentiate
-------------------------
By default a registered primitive runs its hand-derived ``bwd`` under ``jax.grad``. ``autodiff(fn)`` wraps a
function so that, while it is traced, every primitive calls its reference instead and ``jax.grad``
differentiates plain ``jax.numpy``. The switch is read at trace time by the wrapper itself, so ``jit`` of
``fn`` and ``jit`` of ``autodiff(fn)`` are two different functions with two different caches: nothing hidden
can leak from one trace into the other. (Jit the outer function, not the primitives inside it.)

Swapping a rule
---------------
``with_rules(fn, relu=bwd)`` wraps a function so that, while it is traced, the named primitives run another
backward ``bwd(residuals, dy, **settings)`` with their own forward and residuals (guided backpropagation swaps
relu's), or, given ``Instead(call)``, run ``call(run, *args, **settings)`` in their place, where ``run(*args)`` is
the primitive as it would have run (a tap that records an intermediate and perturbs it: Grad-CAM). The switch
travels with the function object as ``autodiff``'s does.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "Example",
    "DISCRETE_INPUTS",
    "Instead",
    "Primitive",
    "REGISTRY",
    "autodiff",
    "get",
    "primitive",
    "registered",
    "use_reference",
    "with_rules",
]


class Example(NamedTuple):
    """One set of example inputs for the checker.

    ``args`` are the positional (array) inputs, ``settings`` the keyword-only settings, ``label`` a short
    description of the configuration (e.g. ``"stride=2 dilation=2 groups=4 SAME"``).
    """

    args: tuple
    settings: dict = {}
    label: str = ""


# the input names that may hold integers or booleans (see Conventions); every other array input is floating
DISCRETE_INPUTS = frozenset({"labels", "targets", "ids", "positions", "key", "mask", "kv_mask", "codes"})


def _check_input_kind(name: str, input_name: str, value: Any) -> None:
    """Refuse a Python list or tuple anywhere, and an integer or boolean array where a float is expected."""
    if isinstance(value, list | tuple):
        raise TypeError(f"{name}: input {input_name!r} is a Python {type(value).__name__}; pass an array, e.g. "
                        f"jnp.asarray({input_name}, jnp.float32)")
    if input_name in DISCRETE_INPUTS or value is None:
        return
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        if isinstance(value, bool | int):
            raise TypeError(f"{name}: input {input_name!r} is the Python {type(value).__name__} {value!r}; "
                            f"pass a float ({float(value)!r}) or a float array")
        return
    if not jnp.issubdtype(dtype, jnp.inexact):
        raise TypeError(f"{name}: input {input_name!r} must be a floating-point array, got dtype {dtype} "
                        f"(gradients are defined for real values); pass {input_name}.astype(jnp.float32)")


# name -> Primitive; every check reads this one dictionary.
REGISTRY: dict[str, Primitive] = {}

_state = threading.local()


def _reference_mode() -> bool:
    return getattr(_state, "reference", False)


@contextlib.contextmanager
def use_reference(flag: bool = True):
    """Context manager: primitives traced inside it run their reference forward (autodiff differentiates it).

    Prefer :func:`autodiff`, which wraps a function so that the switch travels with the function object.
    """
    old = _reference_mode()
    _state.reference = flag
    try:
        yield
    finally:
        _state.reference = old


def autodiff(fn: Callable) -> Callable:
    """Return ``fn`` with every primitive replaced by its reference forward while ``fn`` is traced.

    ``jax.grad(autodiff(loss))`` is the pure-autodiff gradient of the same loss whose ``jax.grad(loss)`` runs
    the hand-derived rules.
    """

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with use_reference(True):
            return fn(*args, **kwargs)

    wrapped.__funcdl_autodiff__ = True
    return wrapped


class Instead(NamedTuple):
    """A rule for :func:`with_rules` that runs ``call(run, *args, **settings)`` in the primitive's place;
    ``run(*args)`` is the primitive with the same settings, as it would have run without the rule."""

    call: Callable


def _rules() -> dict:
    return getattr(_state, "rules", {})


def with_rules(fn: Callable, **rules: Callable | Instead) -> Callable:
    """Return ``fn`` with the rules of the named primitives swapped while ``fn`` is traced.

    A rule is a backward ``bwd(residuals, dy, **settings) -> tuple of cotangents`` that takes the primitive's own
    residuals (its forward is unchanged), or an :class:`Instead`. A rule holds in reference mode too (it names
    its primitive on purpose); an inner ``with_rules`` wins over an outer one for the same name. Pass a function
    defined once (not a new lambda per call): the custom_vjp built for it is cached by its identity.
    """
    for name in rules:
        get(name)        # an unknown name fails now, with the list of valid ones

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        old = _rules()
        _state.rules = {**old, **rules}
        try:
            return fn(*args, **kwargs)
        finally:
            _state.rules = old

    wrapped.__funcdl_rules__ = dict(getattr(fn, "__funcdl_rules__", {}), **rules)
    return wrapped


def _freeze(value: Any) -> Any:
    """Make a setting hashable (lists -> tuples, dicts -> sorted tuples)."""
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    try:
        hash(value)
    except TypeError as err:
        raise TypeError(f"setting value {value!r} is not hashable; settings must be static") from err
    return value


class Primitive:
    """A differentiable function with a hand-derived VJP, its reference and its example inputs."""

    def __init__(
        self,
        name: str,
        reference: Callable,
        fwd: Callable,
        bwd: Callable,
        *,
        examples: Callable[[jax.Array, Any], Sequence[Example]] | None = None,
        space: Callable[[Any, Any], Example] | None = None,
        check: Callable | None = None,
        fd_step: float = 1e-4,
        tolerance: dict | None = None,
        nondiff: tuple[str, ...] = (),
        surrogate: str | None = None,
        doc: str | None = None,
    ):
        self.name = name
        self.reference = reference
        self.fwd = fwd
        self.bwd = bwd
        self.examples = examples
        # space(rng, dtype) -> Example: ONE random configuration (settings, shapes, values) drawn from
        # everything the primitive accepts; the checker fuzzes with it (``check_primitive(..., fuzz=N)``)
        self.space = space
        self.check = check
        self.fd_step = fd_step
        # float inputs that carry no gradient by definition (class weights, fixed masks); bwd returns None
        self.nondiff = tuple(nondiff)
        # a surrogate gradient by design (see Conventions): the reason the finite-difference check is skipped
        self.surrogate = surrogate
        # per-check tolerances may be loosened by a primitive that has a good reason (documented there)
        self.tolerance = dict(tolerance or {})
        sig = inspect.signature(reference)
        self.inputs: list[str] = []
        self._input_defaults: dict[str, Any] = {}
        self._settings_defaults: dict[str, Any] = {}
        for p in sig.parameters.values():
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                self.inputs.append(p.name)
                if p.default is not p.empty:
                    self._input_defaults[p.name] = p.default
            elif p.kind == p.KEYWORD_ONLY:
                self._settings_defaults[p.name] = p.default if p.default is not p.empty else inspect.Parameter.empty
            else:
                raise TypeError(f"primitive {name}: reference must not take *args/**kwargs")
        for n in self.nondiff:
            if n not in self.inputs:
                raise TypeError(f"primitive {name}: nondiff input {n!r} is not one of {self.inputs}")
        self._cache: dict[tuple, Callable] = {}
        # the math lives in the reference's own docstring (tests/test_primitive_docs.py holds every primitive to it)
        self.__doc__ = doc or reference.__doc__
        self.__name__ = name
        self.__wrapped__ = reference

    # -- calling -------------------------------------------------------------------------------------------
    def _split(self, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if len(args) > len(self.inputs):
            raise TypeError(
                f"{self.name}() takes {len(self.inputs)} array inputs ({', '.join(self.inputs)}) but "
                f"{len(args)} were given; settings are keyword-only"
            )
        values = dict(zip(self.inputs, args, strict=False))
        settings = {}
        for k, v in kwargs.items():
            if k in self.inputs:
                if k in values:
                    raise TypeError(f"{self.name}() got multiple values for input {k!r}")
                values[k] = v
            elif k in self._settings_defaults:
                settings[k] = v
            else:
                valid = ", ".join(self.inputs + list(self._settings_defaults))
                raise TypeError(f"{self.name}() got an unexpected argument {k!r}; valid arguments: {valid}")
        ordered = []
        for k in self.inputs:
            if k in values:
                ordered.append(values[k])
            elif k in self._input_defaults:
                ordered.append(self._input_defaults[k])
            else:
                raise TypeError(f"{self.name}() missing required input {k!r}")
        for k, v in zip(self.inputs, ordered, strict=True):
            _check_input_kind(self.name, k, v)
        for k, d in self._settings_defaults.items():
            if k not in settings:
                if d is inspect.Parameter.empty:
                    raise TypeError(f"{self.name}() missing required keyword setting {k!r}")
                settings[k] = d
        return tuple(ordered), settings

    def _vjp_function(self, settings: dict, bwd: Callable | None = None) -> Callable:
        key = tuple(sorted((k, _freeze(v)) for k, v in settings.items()))
        if bwd is not None:                 # a swapped backward (with_rules) gets its own custom_vjp
            key = (key, bwd)
        fn = self._cache.get(key)
        if fn is None:
            fwd, bwd, name = self.fwd, bwd or self.bwd, self.name

            @jax.custom_vjp
            def fn(*args):
                return fwd(*args, **settings)[0]

            def fn_fwd(*args):
                return fwd(*args, **settings)

            def fn_bwd(res, g):
                cts = bwd(res, g, **settings)
                if not isinstance(cts, tuple):
                    raise TypeError(f"{name}: bwd must return a tuple of cotangents, got {type(cts).__name__}")
                return cts

            fn.defvjp(fn_fwd, fn_bwd)
            fn.__name__ = f"{name}_hand_vjp"
            self._cache[key] = fn
        return fn

    def __call__(self, *args, **kwargs):
        args, settings = self._split(args, kwargs)
        if self.check is not None:
            self.check(*args, **settings)
        rule = _rules().get(self.name)
        if isinstance(rule, Instead):
            return rule.call(lambda *a: self._run(a, settings), *args, **settings)
        if rule is not None:
            return self._vjp_function(settings, rule)(*args)
        return self._run(args, settings)

    def _run(self, args: tuple, settings: dict):
        if _reference_mode():
            return self.reference(*args, **settings)
        return self._vjp_function(settings)(*args)

    def hand(self, *args, **kwargs):
        """Always the hand-derived rule, whatever mode is active (used by the checker)."""
        args, settings = self._split(args, kwargs)
        if self.check is not None:
            self.check(*args, **settings)
        return self._vjp_function(settings)(*args)

    def ref(self, *args, **kwargs):
        """Always the reference forward (plain jax.numpy, differentiated by autodiff)."""
        args, settings = self._split(args, kwargs)
        if self.check is not None:
            self.check(*args, **settings)
        return self.reference(*args, **settings)

    def __repr__(self) -> str:
        return f"<funcdl primitive {self.name}({', '.join(self.inputs)})>"


def primitive(
    name: str,
    reference: Callable,
    fwd: Callable,
    bwd: Callable,
    *,
    examples: Callable | None = None,
    space: Callable | None = None,
    check: Callable | None = None,
    fd_step: float = 1e-4,
    tolerance: dict | None = None,
    nondiff: tuple[str, ...] = (),
    surrogate: str | None = None,
    register: bool = True,
) -> Primitive:
    """Wire a reference, a ``fwd`` with residuals and a hand-derived ``bwd`` into one registered primitive.

    ``examples(key, dtype)`` returns the hand-picked configurations; ``space(rng, dtype)``, when given, draws ONE
    random configuration (an :class:`Example`) from everything the primitive accepts, with ``rng`` a
    ``numpy.random.Generator``: its settings (ranges, choices, constraints between them) and its inputs' shapes
    and values. A setting the primitive accepts is either in its space or refused by its ``check``.
    """
    if register and name in REGISTRY:
        raise ValueError(f"a primitive named {name!r} is already registered")
    p = Primitive(
        name, reference, fwd, bwd, examples=examples, space=space, check=check, fd_step=fd_step, tolerance=tolerance,
        nondiff=nondiff, surrogate=surrogate,
    )
    if register:
        if examples is None:
            raise ValueError(f"primitive {name!r}: a registered primitive needs an examples factory")
        REGISTRY[name] = p
    return p


def registered() -> list[str]:
    """Names of all registered primitives, in registration order."""
    return list(REGISTRY)


def get(name: str) -> Primitive:
    """Look a primitive up by name; an unknown name lists the valid ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown primitive {name!r}; registered: {', '.join(sorted(REGISTRY))}") from None


# -- helpers shared by primitive files -------------------------------------------------------------------


def unbroadcast(g: jax.Array, shape: tuple) -> jax.Array:
    """Sum a gradient over the axes along which an input of ``shape`` was broadcast."""
    if g.shape == tuple(shape):
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, s in enumerate(shape) if s == 1 and g.shape[i + lead] != 1)
    return jnp.sum(g, axis=axes).reshape(shape)


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds values we can inspect now (not a tracer inside jit/vmap/grad)."""
    return not isinstance(x, jax.core.Tracer)
