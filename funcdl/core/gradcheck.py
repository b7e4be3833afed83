"""The gradient checker: every registered primitive, checked the same way (DESIGN.md, "What checked means").

For each primitive and each example configuration its factory gives:

1. ``vjp``  hand-derived VJP vs ``jax.vjp`` of the reference, with a random (never all-ones) cotangent, in
   float64 (tolerance 1e-10) and float32 (1e-5);
2. ``fd``   the reference vs central finite differences in float64, by a dot-product test: for random
   ``v`` (direction in one input) and ``u`` (the vjp check's cotangent), ``<u, J v>`` from a fourth-order
   central difference equals ``<J^T u, v>`` from the reference's VJP (tolerance 1e-6);
3. ``jit`` / ``vmap``  values and hand VJPs under ``jit`` and under ``vmap`` (two examples stacked) equal the
   eager ones (tolerance 1e-10 in float64);
4. ``hvp``  second order, through the hand rules: for random ``u`` (cotangent) and ``w`` (one direction per
   input), ``grad_x <J(x)^T u, w>`` -- reverse over reverse, since ``jax.custom_vjp`` has no forward mode --
   differentiates the hand-derived ``bwd`` (and the residuals ``fwd`` kept), and must equal the same product
   of the reference (float64, tolerance 1e-8). SAM, gradient penalties, curvature and meta-learning
   differentiate through the hand rules exactly this way. A primitive whose backward is not differentiable as
   written declares ``second_order="why not"`` and gets a skipped (passing) row that says so.

Fuzzing: a primitive that declares ``space(rng, dtype)`` also gets ``fuzz`` configurations drawn from it with
``numpy.random.default_rng(seed)`` (``check_primitive(name, fuzz=N)``, ``funcdl gradcheck --fuzz N``), each
checked exactly like a hand-picked example (rows labelled ``fuzz#3 alpha=-0.7``; the vmap check stacks the drawn
configuration with itself). A rule that holds only for the settings its author thought of fails there.

The relative error is ``max|a-b| / max(1e-12, max|a| + max|b|)``. Results are rows (one per primitive,
configuration, input, dtype and check) that ``funcdl gradcheck`` prints as a table or as JSON.

``compare_model_grads(loss, params, *args)`` differentiates a whole model's loss both ways (hand-derived
rules vs pure autodiff through the references) and reports the error leaf by leaf.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from .examples import normal, to_device
from .primitive import REGISTRY, Example, Primitive, autodiff

TOL = {"vjp64": 1e-10, "vjp32": 1e-5, "fd": 1e-6, "jit": 1e-10, "vmap": 1e-10, "hvp": 1e-8}
CHECKS = ("vjp", "fd", "jit", "vmap", "hvp")


@dataclasses.dataclass
class Row:
    name: str
    config: str
    check: str
    input: str
    dtype: str
    shapes: str
    rel_error: float
    tol: float
    passed: bool
    message: str = ""

    def asdict(self) -> dict:
        return dataclasses.asdict(self)


def rel_error(a, b, floor: float = 1e-12) -> float:
    """``max|a-b| / max(floor, max|a| + max|b|)`` over all leaves of two pytrees."""
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    if len(la) != len(lb):
        return math.inf
    num, den = 0.0, 0.0
    for x, y in zip(la, lb, strict=True):
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if x.shape != y.shape:
            return math.inf
        if x.size == 0:
            continue
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            same = np.array_equal(x, y, equal_nan=True)
            if not same:
                return math.inf
            finite = np.isfinite(x) & np.isfinite(y)
            x, y = x[finite], y[finite]
            if x.size == 0:
                continue
        num = max(num, float(np.max(np.abs(x - y))))
        den = max(den, float(np.max(np.abs(x))) + float(np.max(np.abs(y))))
    return num / max(floor, den)


def _is_diff(x) -> bool:
    return isinstance(x, jax.Array | np.ndarray) and jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _shape_str(args: Iterable) -> str:
    parts = []
    for a in args:
        if a is None:
            parts.append("None")
        elif hasattr(a, "shape"):
            parts.append("x".join(map(str, a.shape)) or "()")
        else:
            parts.append(type(a).__name__)
    return ",".join(parts)


def _random_like(key, tree):
    """A random cotangent shaped like ``tree`` (arrays or ShapeDtypeStructs); non-float leaves get float0."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, max(1, len(leaves)))
    out = []
    for k, leaf in zip(keys, leaves, strict=False):
        if jnp.issubdtype(leaf.dtype, jnp.inexact):
            out.append(normal(k, leaf.shape, leaf.dtype))
        else:
            out.append(np.zeros(leaf.shape, dtype=jax.dtypes.float0))
    return jax.tree.unflatten(treedef, out)


def _vjp(fn, args: tuple, diff: list[int], ct):
    """Cotangents of ``fn(*args)`` w.r.t. ``args[i]`` for ``i in diff``."""

    def f(*d):
        full = list(args)
        for i, v in zip(diff, d, strict=True):
            full[i] = v
        return fn(*full)

    out, pullback = jax.vjp(f, *[args[i] for i in diff])
    return out, pullback(ct)


def _inner(a, b) -> float:
    return float(sum(np.vdot(np.asarray(x, np.float64), np.asarray(y, np.float64)) for x, y in
                     zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)))


def _cast(args: tuple, dtype) -> tuple:
    """The float inputs in ``dtype``, converted on the host (an eager ``astype`` compiles one program per shape)."""
    return tuple(to_device(np.asarray(a), dtype) if _is_diff(a) else a for a in args)


# The checker's own programs are small and run once: XLA's backend optimisations would cost more compile time
# than they could save (about half of the checker's time), and they do not change what is computed.
# XLA's older CPU emitters compile these programs ~40% faster (the same values to rounding).
jit_once = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0,
                                                        "xla_cpu_use_fusion_emitters": False})


def _fd_jv(evals, h):
    """J v from f at x + 2hv, x + hv, x - hv, x - 2hv (stacked on a leading axis): the fourth-order central difference
    (-f(x+2h) + 8 f(x+h) - 8 f(x-h) + f(x-2h)) / 12h."""
    host = jax.tree.map(lambda x: np.asarray(x, np.float64), evals)     # index on the host: x[j] on a device
    fp2, fp1, fm1, fm2 = (jax.tree.map(lambda x, j=j: x[j], host) for j in range(4))   # array compiles a slice
    # on the host: eager jnp arithmetic would compile one small program per output shape
    return jax.tree.map(lambda a, b, c, d: (-a + 8 * b - 8 * c + d) / (12 * h), fp2, fp1, fm1, fm2)


def _fd_noise(u, evals, h) -> float:
    """What rounding alone can put in ``<u, J v>`` by differences: each f carries ~eps |f|, the stencil's
    weights sum to 18/12h, times sum |u|; ten times that. A direction whose true product is 0 (an input
    wholly in a flat region, e.g. hard_tanh's clipped side) measures this noise, not a wrong gradient."""
    f_max = max((float(np.max(np.abs(np.asarray(x, np.float64)))) for x in jax.tree.leaves(evals) if np.size(x)),
                default=0.0)
    u_sum = sum(float(np.sum(np.abs(np.asarray(x, np.float64)))) for x in jax.tree.leaves(u)
                if np.asarray(x).dtype != jax.dtypes.float0)
    return 10 * 1.5 * np.finfo(np.float64).eps * f_max * u_sum / h


@dataclasses.dataclass
class _Case:
    """One example configuration of one primitive, and the rows its checks write."""

    prim: Primitive
    settings: dict
    cfg: str
    base: tuple          # the inputs in float64
    diff: list           # positions of the inputs that get a gradient
    rows: list

    def hand(self, *a):
        return self.prim.hand(*a, **self.settings)

    def ref(self, *a):
        return self.prim.ref(*a, **self.settings)

    def tol(self, check, dt="float64"):
        name = {"vjp": "vjp32" if dt == "float32" else "vjp64"}.get(check, check)
        return self.prim.tolerance.get(name, TOL[name])

    def row(self, check, inp, dtype, err, tol, msg=""):
        ok = bool(err <= tol) and not math.isnan(err)
        self.rows.append(Row(self.prim.name, self.cfg, check, inp, dtype, _shape_str(self.base), float(err), tol,
                             ok, msg))

    def failed(self, check, inp, dtype, e):
        """A crash is a failed check, reported with its message."""
        self.row(check, inp, dtype, math.inf, self.tol(check, dtype), f"{type(e).__name__}: {e}")

    def grads(self, names, dtype, hand, ref):
        """One ``forward`` row and one ``vjp`` row per differentiable input: (output, grads) hand vs ref."""
        self.row("forward", "output", dtype, rel_error(hand[0], ref[0]), self.tol("vjp", dtype))
        for i, gh, gr in zip(self.diff, hand[1], ref[1], strict=True):
            self.row("vjp", names[i], dtype, rel_error(gh, gr), self.tol("vjp", dtype))


def _check_float64(c: _Case, key, checks, h):
    """Hand vs reference VJP and the finite-difference test, as ONE compiled program; returns the hand VJP
    and its cotangent (the jit check compares the eager run to them), or None after a crash."""
    k_ct, k_v, _ = jax.random.split(key, 3)
    steps = (2 * h, h, -h, -2 * h)

    def shifted(a, i, t, v):
        full = list(a)
        full[i] = a[i] + t * v
        return tuple(full)

    def program(a, ct, vs):
        hand_out = _vjp(c.hand, a, c.diff, ct)
        ref_out = _vjp(c.ref, a, c.diff, ct)       # also the finite-difference test's J^T u, with u = ct
        # the four shifted evaluations of each input as one batched call: a quarter of the program to compile
        evals = [jax.vmap(lambda t, i=i, v=v: c.ref(*shifted(a, i, t, v)))(jnp.asarray(steps, a[i].dtype))
                 for i, v in zip(c.diff, vs, strict=True)]
        return hand_out, ref_out, evals

    try:
        out_shape = jax.eval_shape(c.hand, *c.base)
        ct = _random_like(k_ct, out_shape)
        vkeys = jax.random.split(k_v, max(1, len(c.diff)))
        vs = [normal(kv, c.base[i].shape, c.base[i].dtype) for i, kv in zip(c.diff, vkeys, strict=False)]
        hand64, ref64, evals = jit_once(program)(c.base, ct, vs)
    except Exception as e:
        for check in ("vjp", "fd", "jit"):
            if check in checks:
                c.failed(check, "*", "float64", e)
        return None
    if "vjp" in checks:
        c.grads(c.prim.inputs, "float64", hand64, ref64)
    if "fd" in checks and c.prim.surrogate:     # a surrogate gradient by design: differences cannot measure it
        for i in c.diff:
            c.row("fd", c.prim.inputs[i], "float64", 0.0, c.tol("fd"), f"skipped: surrogate ({c.prim.surrogate})")
    elif "fd" in checks:        # <u, J v> by finite differences against <J^T u, v> from the reference's VJP
        for i, v, g, ev in zip(c.diff, vs, ref64[1], evals, strict=True):
            lhs, rhs = _inner(ct, _fd_jv(ev, h)), _inner(g, v)
            den = max(1e-12, abs(lhs) + abs(rhs), _fd_noise(ct, ev, h) / c.tol("fd"))
            c.row("fd", c.prim.inputs[i], "float64", abs(lhs - rhs) / den, c.tol("fd"))
    return hand64, ct


def _check_dtype(c: _Case, key, dt):
    """Hand vs reference VJP in another dtype (float32), one compiled program."""
    args = _cast(c.base, dt)
    try:
        ct = _random_like(key, jax.eval_shape(c.hand, *args))
        both = jit_once(lambda a, t: (_vjp(c.hand, a, c.diff, t), _vjp(c.ref, a, c.diff, t)))
        hand, ref = both(args, ct)
    except Exception as e:
        c.failed("vjp", "*", dt, e)
        return
    c.grads(c.prim.inputs, dt, hand, ref)


def _check_jit(c: _Case, compiled):
    """The one op-by-op run: the eager forward and VJP against the compiled ones."""
    hand64, ct = compiled
    try:
        c.row("jit", "*", "float64", rel_error(_vjp(c.hand, c.base, c.diff, ct), hand64), c.tol("jit"))
    except Exception as e:
        c.failed("jit", "*", "float64", e)


def _check_vmap(c: _Case, key, ex2: Example):
    """Two examples stacked under ``vmap``, against each computed alone."""
    other = _cast(ex2.args, jnp.float64)
    try:
        axes = tuple(None if a is None else 0 for a in c.base)
        # stacked and unstacked on the host (eager jnp.stack and t[j] would compile per shape)
        stacked = tuple(None if a is None else jax.device_put(np.stack([np.asarray(a), np.asarray(b)]))
                        for a, b in zip(c.base, other, strict=True))
        out_shape = jax.eval_shape(c.hand, *c.base)
        cts = [_random_like(jax.random.fold_in(key, j), out_shape) for j in range(2)]
        ct_stacked = jax.tree.map(lambda a, b: np.stack([np.asarray(a), np.asarray(b)]), cts[0], cts[1])

        def program(cs, st, a1, a2, c1, c2):
            batched = jax.vmap(lambda t, *a: _vjp(c.hand, a, c.diff, t), in_axes=(0, *axes))(cs, *st)
            return batched, (_vjp(c.hand, a1, c.diff, c1), _vjp(c.hand, a2, c.diff, c2))

        (v_out, v_grads), singles = jit_once(program)(ct_stacked, stacked, c.base, other, cts[0], cts[1])
        v_out, v_grads = jax.tree.map(np.asarray, (v_out, v_grads))
        err = 0.0
        for j in range(2):
            err = max(err, rel_error(jax.tree.map(lambda t, j=j: t[j], v_out), singles[j][0]))
            err = max(err, rel_error(jax.tree.map(lambda t, j=j: t[j], v_grads), singles[j][1]))
        c.row("vmap", "*", "float64", err, c.tol("vmap"))
    except Exception as e:
        c.failed("vmap", "*", "float64", e)


def _check_hvp(c: _Case, key):
    """Second order through the hand rules: ``grad_x <J(x)^T u, w>``, hand vs reference, one compiled program."""
    reason = getattr(c.prim, "second_order", True)
    if reason is not True:
        c.row("hvp", "*", "float64", 0.0, c.tol("hvp"), f"skipped: first order only ({reason})")
        return
    k_u, k_w = jax.random.split(key)

    def hvp(fn, a, u, ws):
        def inner(*d):
            full = list(a)
            for i, v in zip(c.diff, d, strict=True):
                full[i] = v
            grads = _vjp(fn, tuple(full), c.diff, u)[1]
            return sum(jnp.vdot(g, w) for g, w in zip(grads, ws, strict=True))
        return jax.grad(inner, argnums=tuple(range(len(c.diff))))(*[a[i] for i in c.diff])

    try:
        u = _random_like(k_u, jax.eval_shape(c.hand, *c.base))
        wkeys = jax.random.split(k_w, max(1, len(c.diff)))
        ws = [normal(k, c.base[i].shape, c.base[i].dtype) for i, k in zip(c.diff, wkeys, strict=False)]
        hand, ref = jit_once(lambda a, u, ws: (hvp(c.hand, a, u, ws), hvp(c.ref, a, u, ws)))(c.base, u, ws)
    except Exception as e:
        c.failed("hvp", "*", "float64", e)
        return
    # floor 1e-6: where the exact second derivative is zero (attention over one key: P = 1 whatever q and k) both
    # sides are float64 rounding noise, ~1e-16, whose ratio means nothing; O(1) values are compared relatively
    for i, h, r in zip(c.diff, hand, ref, strict=True):
        c.row("hvp", c.prim.inputs[i], "float64", rel_error(h, r, floor=1e-6), c.tol("hvp"))


def check_example(prim: Primitive, ex: Example, key, *, dtypes=("float64", "float32"),
                  checks=CHECKS, ex2: Example | None = None) -> list[Row]:
    """Run the checks on one example configuration of one primitive.

    Cost matters (hundreds of configurations, each compile ~0.2 s): everything in float64 — the hand and
    reference VJPs (the reference's also serves the finite-difference test) and the 4 x inputs shifted forward
    evaluations — is one compiled program; float32 is a second, the vmap test a third. Only the ``jit`` check
    runs the primitive op by op, because eager execution is what it compares against.
    """
    settings = dict(ex.settings)
    base = _cast(ex.args, jnp.float64)
    diff = [i for i, a in enumerate(base) if _is_diff(a) and prim.inputs[i] not in prim.nondiff]
    c = _Case(prim, settings, ex.label or ",".join(f"{k}={v}" for k, v in settings.items()), base, diff, [])
    k_ct = jax.random.split(key, 3)[0]           # the float32 and vmap cotangents share the float64 one's key
    compiled = _check_float64(c, key, checks, prim.fd_step)
    if "vjp" in checks:
        for dt in (d for d in dtypes if d != "float64"):
            _check_dtype(c, k_ct, dt)
    if "jit" in checks and compiled is not None:
        _check_jit(c, compiled)
    if "vmap" in checks and ex2 is not None:
        _check_vmap(c, k_ct, ex2)
    if "hvp" in checks and c.diff:
        _check_hvp(c, jax.random.fold_in(key, 2))
    return c.rows


def _setting_str(settings: dict) -> str:
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v).replace(" ", "")
    return " ".join(f"{k}={fmt(v)}" for k, v in settings.items())


def fuzz_examples(prim: Primitive, n: int, *, seed: int = 0, dtype=jnp.float64) -> list[Example]:
    """``n`` configurations drawn from ``prim.space`` with ``numpy.random.default_rng(seed)``, labelled
    ``fuzz#j <settings>``; none for a primitive without a space."""
    if prim.space is None or n <= 0:
        return []
    rng = np.random.default_rng(seed)
    out = []
    for j in range(n):
        ex = prim.space(rng, dtype)
        if not isinstance(ex, Example):
            raise TypeError(f"{prim.name}: space must return an Example, got {type(ex).__name__}")
        out.append(Example(tuple(ex.args), dict(ex.settings),
                           f"fuzz#{j} {ex.label or _setting_str(ex.settings)}".rstrip()))
    return out


def check_primitive(name: str | Primitive, *, seed: int = 0, fuzz: int = 0, second_order: int | None = None,
                    extras: int | None = None, **kw) -> list[Row]:
    """All checks for every example configuration of one primitive, plus ``fuzz`` configurations drawn from
    its ``space`` (when it declares one). ``second_order=k`` runs the (costly) hvp check on the first k
    configurations only, ``extras=k`` the float32 VJP, the vmap and the jit check on the first k (two more
    compiled programs per configuration, and the jit check's eager run compiles every operation on its own:
    the test suite's budget); None runs them on all. The float64 VJP and finite differences run on every
    configuration whatever these say."""
    prim = name if isinstance(name, Primitive) else REGISTRY[name]
    key = jax.random.PRNGKey(seed)
    k1, k2, k3 = jax.random.split(key, 3)
    with jax.enable_x64(True):
        exs = list(prim.examples(k1, jnp.float64)) if prim.examples is not None else []
        exs2 = list(prim.examples(k2, jnp.float64)) if prim.examples is not None else []
        if len(exs2) != len(exs):
            exs2 = [None] * len(exs)
        drawn = fuzz_examples(prim, fuzz, seed=seed)
        exs, exs2 = exs + drawn, exs2 + drawn     # a drawn configuration is stacked with itself for vmap
        rows = []
        checks = kw.pop("checks", CHECKS)
        for j, (ex, ex2) in enumerate(zip(exs, exs2, strict=True)):
            these = checks if second_order is None or j < second_order else tuple(c for c in checks if c != "hvp")
            if extras is not None and j >= extras:
                these = tuple(c for c in these if c not in ("vmap", "jit"))
                kw_j = {**kw, "dtypes": ("float64",)}
            else:
                kw_j = kw
            rows += check_example(prim, ex, jax.random.fold_in(k3, j), ex2=ex2, checks=these, **kw_j)
    return rows


def check_all(names: Iterable[str] | None = None, **kw) -> list[Row]:
    rows = []
    for name in names if names is not None else list(REGISTRY):
        rows += check_primitive(name, **kw)
        jax.clear_caches()   # hundreds of small executables: keep memory flat across the whole registry
    return rows


def format_table(rows: list[Row]) -> str:
    header = ("primitive", "config", "check", "input", "dtype", "shapes", "rel_error", "ok")
    body = [
        (r.name, r.config[:40], r.check, r.input, r.dtype, r.shapes[:34], f"{r.rel_error:.1e}",
         "pass" if r.passed else "FAIL" + (f" ({r.message[:60]})" if r.message else ""))
        for r in rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
    out = [line(header), line(["-" * w for w in widths])] + [line(b) for b in body]
    return "\n".join(out)


def summary(rows: list[Row]) -> str:
    prims = {r.name for r in rows}
    failed = [r for r in rows if not r.passed]
    worst = lambda dt, check: max((r.rel_error for r in rows if r.dtype == dt and r.check == check), default=0.0)
    return (
        f"{len(prims)} primitives, {len(rows)} checks, {len(failed)} failed; max rel error: "
        f"vjp float64 {worst('float64', 'vjp'):.1e}, vjp float32 {worst('float32', 'vjp'):.1e}, "
        f"finite differences {worst('float64', 'fd'):.1e}, second order (hvp) {worst('float64', 'hvp'):.1e}"
    )


def markdown_table(rows: list[Row]) -> str:
    """One line per primitive: configurations, worst errors per check, pass/fail (the README's feature table)."""
    out = ["| primitive | configs | vjp float64 | vjp float32 | finite diff. | jit/vmap | hvp (2nd order) | ok |",
           "|---|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r.name for r in rows):
        mine = [r for r in rows if r.name == name]
        worst = lambda pred, mine=mine: max((r.rel_error for r in mine if pred(r)), default=0.0)
        out.append(
            f"| `{name}` | {len({r.config for r in mine})} "
            f"| {worst(lambda r: r.check == 'vjp' and r.dtype == 'float64'):.0e} "
            f"| {worst(lambda r: r.check == 'vjp' and r.dtype == 'float32'):.0e} "
            f"| {_fd_cell(mine, worst)} "
            f"| {worst(lambda r: r.check in ('jit', 'vmap')):.0e} "
            f"| {_hvp_cell(mine)} "
            f"| {'pass' if all(r.passed for r in mine) else 'FAIL'} |"
        )
    return "\n".join(out)


def _fd_cell(rows: list[Row], worst) -> str:
    if any(r.check == "fd" and r.message.startswith("skipped: surrogate") for r in rows):
        return "surrogate (skipped)"
    return f"{worst(lambda r: r.check == 'fd'):.0e}"


def _hvp_cell(rows: list[Row]) -> str:
    hvp = [r for r in rows if r.check == "hvp"]
    if hvp and all(r.message.startswith("skipped") for r in hvp):
        return "first order only"
    return f"{max((r.rel_error for r in hvp), default=0.0):.0e}"


# -- whole models ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class LeafError:
    path: str
    shape: tuple
    rel_error: float


def compare_model_grads(loss: Callable, params, *args, has_aux: bool = False, **kwargs) -> list[LeafError]:
    """Gradient of ``loss(params, *args)`` with hand-derived rules vs pure autodiff, leaf by leaf. Each gradient
    is one compiled program (``jit_once``): a model run op by op compiles every operation on its own."""
    g_hand = jit_once(lambda p: jax.grad(loss, has_aux=has_aux)(p, *args, **kwargs))(params)
    g_auto = jit_once(lambda p: jax.grad(autodiff(loss), has_aux=has_aux)(p, *args, **kwargs))(params)
    if has_aux:
        g_hand, g_auto = g_hand[0], g_auto[0]
    flat_h = jax.tree_util.tree_flatten_with_path(g_hand)[0]
    flat_a = jax.tree.leaves(g_auto)
    return [
        LeafError(jax.tree_util.keystr(path), tuple(np.shape(gh)), rel_error(gh, ga))
        for (path, gh), ga in zip(flat_h, flat_a, strict=True)
    ]


def max_model_error(errors: list[LeafError]) -> float:
    return max((e.rel_error for e in errors), default=0.0)
