"""Post-training quantization of any model, by rewriting its traced inference graph (no change to the model).

``QuantizedModel(apply, params, example_x, weights=QuantSpec(...), activations=QuantSpec(...) or None)`` traces
``apply(params, x)`` to a jaxpr (every funcdl primitive in reference mode, so the graph holds plain
``dot_general`` / ``conv_general_dilated`` equations) and interprets it. A *site* is a product one of whose
operands depends on the input x and the other does not: the latter is a weight (a parameter leaf, or anything
computed from parameters alone), the former an activation. The interpreter recurses into ``pjit``,
``closed_call``, ``custom_jvp_call`` and ``custom_vjp_call`` sub-jaxprs; products inside loops (scan, while) and
products of two activations (attention scores) stay in float.

At each site:

* the weight is quantized once (:func:`funcdl.compress.quantize.quantize_tensor`): per output channel (the
  weight's non-contracting axes of a ``dot_general``, the kernel's output-feature axis of a convolution), per
  tensor, or per group of consecutive input weights (the contracted axes flattened) of each output channel;
* the activation, when ``activations`` is given, gets one per-tensor scale calibrated on calibration batches
  (``calibrate(xs)``: the float graph is run and each site's input recorded).

Three executions of the same graph (``apply(params, x, mode=...)``):

* ``"float"``  the original model (the interpreter with nothing replaced);
* ``"fake"``   the fake-quantized float path: each site computes the original product of x_hat = s(q - z) for
  the weight and (if quantized) the activation -- what quantization-aware training simulates;
* ``"int"``    the integer path: q_a (int8) x q_w (int8) in ``lax.dot_general`` / ``lax.conv_general_dilated``
  with ``preferred_element_type=int32`` (exact: no int32 overflow is possible, the site checks that
  K * |qmax_a| * |qmax_w| < 2^31 for its contraction length K), then one float rescale acc * (s_a s_w) per
  output channel. Needs symmetric per-tensor / per-channel weights and symmetric activations (zero points 0).

What "equal" means: at a site with symmetric per-tensor / per-channel weights and a quantized activation, the
fake path computes (s_a s_w) * (q_a . q_w) with q_a, q_w integer-valued floats (the scales factor out of the
product: this IS s_a q_a . s_w q_w, dequantized after the product instead of before). The integer path computes the
same (s_a s_w) * float(q_a . q_w) with the product in int32. Both accumulations are exact -- int32 cannot overflow
(K |qmax_a| |qmax_w| < 2^31, checked), and a float sum of integers is exact while its partial sums stay below 2^24
(float32; 2^53 in float64), which holds whenever sum_k |q_a q_w| < 2^24, e.g. for every K <= 1040 at 8 bits and far
beyond in practice -- so the two paths give bit-identical outputs, site by site and hence for the whole network.
``benchmarks/quant_table.py`` shows it on the whole test set: 0 differing predictions and a maximum logit
difference of exactly 0. Elsewhere (asymmetric or per-group weights, weights-only) the fake path dequantizes
before the product (x_hat = s (q - z)), the usual simulation, and there is no integer path.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.extend.core as jcore
import jax.numpy as jnp
import numpy as np

from ..core.primitive import use_reference
from .quantize import QuantSpec, calibrate_samples, fake_quantize, quantize, quantize_tensor, summarize_sample

__all__ = ["QuantizedModel", "Site", "interpret"]

SITE_PRIMITIVES = ("dot_general", "conv_general_dilated")
CALLS = ("pjit", "jit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call", "remat", "checkpoint")
SUB_JAXPR_PARAMS = ("jaxpr", "call_jaxpr", "fun_jaxpr")


@dataclasses.dataclass(frozen=True)
class Site:
    """One quantized product: its index in traversal order, primitive, which operand is the weight, the weight's
    output-channel axes, the contraction length and how to broadcast a per-channel
    weight scale onto the output."""

    index: int
    kind: str
    weight_operand: int
    weight_shape: tuple
    channel_axes: tuple
    contraction: int
    out_scale_shape: tuple       # the weight scale reshaped for the output (per channel), from the squeezed scale
    out_scale_perm: tuple        # transpose of the squeezed (non-contracting axes) scale before that reshape
    source: str                  # the parameter path when the weight is a parameter leaf as it is, else "derived"


def _site(index, eqn, wi, w_shape, out_ndim, source) -> Site:
    p = eqn.params
    if eqn.primitive.name == "dot_general":
        (lc, rc), (lb, rb) = p["dimension_numbers"]
        contract, batch = (lc, lb) if wi == 0 else (rc, rb)
        free = tuple(a for a in range(len(w_shape)) if a not in contract and a not in batch)
        kept = tuple(a for a in range(len(w_shape)) if a not in contract)
        perm = tuple(kept.index(a) for a in (*batch, *free))
        n_other_free = out_ndim - len(batch) - len(free)
        mid = (1,) * n_other_free
        fshape = tuple(w_shape[a] for a in free)
        bshape = tuple(w_shape[a] for a in batch)
        out_shape = bshape + (mid + fshape if wi == 1 else fshape + mid)
        k = math.prod(w_shape[a] for a in contract)
        return Site(index, "dot_general", wi, tuple(w_shape), kept, k, out_shape, perm, source)
    lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
    shape = [1] * out_ndim
    shape[out_spec[1]] = w_shape[rhs_spec[0]]
    k = math.prod(w_shape) // w_shape[rhs_spec[0]]
    return Site(index, "conv_general_dilated", 1, tuple(w_shape), (rhs_spec[0],), k, tuple(shape), (0,),
                source)


def _is_site(eqn, deps) -> int | None:
    """The weight operand's index when ``eqn`` is a quantizable product, else None."""
    name = eqn.primitive.name
    if name not in SITE_PRIMITIVES or len(deps) != 2 or deps[0] == deps[1]:
        return None
    if any(not jnp.issubdtype(v.aval.dtype, jnp.floating) for v in eqn.invars):
        return None
    wi = 1 if deps[0] else 0
    if name == "conv_general_dilated" and (wi != 1 or eqn.params.get("batch_group_count", 1) != 1):
        return None
    return wi


def _sub_jaxpr(eqn):
    if eqn.primitive.name not in CALLS:
        return None
    for key in SUB_JAXPR_PARAMS:
        sub = eqn.params.get(key)
        if isinstance(sub, jcore.ClosedJaxpr) and len(sub.jaxpr.invars) == len(eqn.invars):
            return sub
        if isinstance(sub, jcore.Jaxpr) and len(sub.invars) == len(eqn.invars) and not sub.constvars:
            return jcore.ClosedJaxpr(sub, ())
    return None


def interpret(closed, args, deps, hook, names=None):
    """Evaluate a ClosedJaxpr on ``args``; ``deps[i]`` says whether argument i depends on the model input.
    ``hook(site, eqn, values) -> output`` replaces each product site (numbered in traversal order);
    ``names[i]`` is argument i's parameter path (or None)."""
    counter = [0]
    return _interpret(closed.jaxpr, closed.consts, list(args), list(deps), hook, counter,
                      list(names or [None] * len(args)))


def _interpret(jaxpr, consts, args, deps, hook, counter, names):
    env = {}
    for v, c in zip(jaxpr.constvars, consts, strict=True):
        env[v] = (c, False, None)
    for v, a, d, n in zip(jaxpr.invars, args, deps, names, strict=True):
        env[v] = (a, d, n)

    def read(v):
        return (v.val, False, None) if isinstance(v, jcore.Literal) else env[v]

    for eqn in jaxpr.eqns:
        vals, ds, ns = zip(*(read(v) for v in eqn.invars), strict=True) if eqn.invars else ((), (), ())
        dep = any(ds)
        sub = _sub_jaxpr(eqn)
        wi = _is_site(eqn, ds)
        if wi is not None and hook is not None:
            site = _site(counter[0], eqn, wi, eqn.invars[wi].aval.shape, eqn.outvars[0].aval.ndim, ns[wi] or "derived")
            counter[0] += 1
            outs = [hook(site, eqn, list(vals))]
        elif sub is not None:
            outs = _interpret(sub.jaxpr, sub.consts, list(vals), list(ds), hook, counter, list(ns))
        else:
            outs = _bind(eqn, vals)
            if not eqn.primitive.multiple_results:
                outs = [outs]
        for v, o in zip(eqn.outvars, outs, strict=True):
            env[v] = (o, dep, None)
    return [read(v)[0] for v in jaxpr.outvars]


def _bind(eqn, vals, **changes):
    with eqn.ctx.manager:
        return eqn.primitive.bind(*vals, **eqn.primitive.get_bind_params({**eqn.params, **changes}))


def _path(kp) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in kp)


class QuantizedModel:
    """A model's inference function with its products quantized (see the module docstring).

    ``apply(params, x) -> outputs``; ``weights`` a QuantSpec (None: float weights), ``activations`` a QuantSpec
    (None: float activations, weights-only quantization)."""

    def __init__(self, apply, params, example, weights: QuantSpec | None, activations: QuantSpec | None = None):
        if weights is None and activations is None:
            raise ValueError("quantize: nothing to quantize (give a weight spec, an activation spec or both)")
        if activations is not None and activations.granularity != "tensor":
            activations = dataclasses.replace(activations, granularity="tensor")   # one scale per activation
        self.fn, self.params = apply, params
        self.weights, self.activations = weights, activations
        leaves = jax.tree_util.tree_flatten_with_path(params)[0]
        self._names = [_path(kp) for kp, _ in leaves] + [None]
        self.sites: dict[int, Site] = {}
        self.qweights: dict[int, dict] = {}
        self.act_params: dict[int, tuple] = {}
        self._jitted: dict = {}
        self._prepare(jnp.asarray(example)[:1])

    # -- tracing and interpretation -------------------------------------------------------------------------
    def _closed(self, x):
        def flat(*leaves_and_x):
            p = jax.tree.unflatten(jax.tree.structure(self.params), leaves_and_x[:-1])
            return self.fn(p, leaves_and_x[-1])

        shapes = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in (*jax.tree.leaves(self.params), x)]
        with use_reference(True):
            return jax.make_jaxpr(flat)(*shapes)

    def _run(self, params, x, hook):
        leaves = jax.tree.leaves(params)
        out = interpret(self._closed(x), [*leaves, x], [False] * len(leaves) + [True], hook, self._names)
        return out[0] if len(out) == 1 else tuple(out)

    def _prepare(self, x):
        """Find the sites and quantize every site's weight once (one compiled program)."""
        static = {}

        def quantize_weights(params, x):
            arrays = {}

            def hook(site, eqn, vals):
                self.sites[site.index] = site
                if self.weights is not None:
                    r = quantize_tensor(vals[site.weight_operand], self.weights, site.channel_axes)
                    static[site.index] = {"granularity": r.pop("granularity")}
                    arrays[site.index] = r
                return _bind(eqn, vals)

            self._run(params, x, hook)
            return arrays

        arrays = jax.jit(quantize_weights)(self.params, x)
        if not self.sites:
            raise ValueError("quantize: the model has no dot_general/conv_general_dilated between its input and a "
                             "weight: nothing to quantize")
        self.qweights = {i: {**{k: np.asarray(v) for k, v in arrays[i].items()}, **static[i]} for i in arrays}

    def calibrate(self, batches):
        """Per-tensor activation scales from the float graph run on ``batches`` (an iterable of input arrays)."""
        if self.activations is None:
            return self

        def stats(p, x):
            store = {}
            self._run(p, x, lambda site, eqn, vals: _record(store, site, eqn, vals))
            return store

        fn = jax.jit(stats)
        records: dict[int, list] = {}
        for xb in batches:
            for i, r in fn(self.params, jnp.asarray(xb)).items():
                records.setdefault(i, []).append(r)
        self.act_params = {i: tuple(np.asarray(a) for a in calibrate_samples(r, self.activations))
                           for i, r in records.items()}
        return self

    # -- the three paths ------------------------------------------------------------------------------------
    def apply(self, x, mode: str = "fake"):
        """Outputs on a batch x: ``mode`` "float", "fake" or "int" (see the module docstring), jitted per mode."""
        if mode not in ("float", "fake", "int"):
            raise ValueError(f"quantize: mode {mode!r} is not one of float, fake, int")
        if mode != "float" and self.activations is not None and not self.act_params:
            raise ValueError("quantize: activations are quantized but not calibrated; call calibrate(batches) first")
        if mode == "int":
            self._check_integer_path()
        fn = self._jitted.get(mode)
        if fn is None:
            hook = {"float": None, "fake": self._fake_hook, "int": self._int_hook}[mode]
            fn = self._jitted[mode] = jax.jit(lambda p, q, a, x: self._run(p, x, hook and hook(q, a)))
        return fn(self.params, self._qw_arrays(), self.act_params, jnp.asarray(x))

    def _qw_arrays(self):
        return {i: {k: r[k] for k in ("q", "scale", "zero", "x_hat")} for i, r in self.qweights.items()}

    def _factored(self, site) -> bool:
        """Symmetric weights per tensor/channel and a symmetric activation: the site's fake path computes
        (s_a s_w) * (q_a . q_w) in float, the same arithmetic as the integer path (see the module docstring)."""
        r = self.qweights.get(site.index)
        return (r is not None and r["granularity"] != "group" and self.weights.symmetric
                and self.activations is not None and self.activations.symmetric)

    def _out_scale(self, site, qw, s_a, dtype):
        """s_a s_w broadcast onto the site's output (s_w per output channel or per tensor)."""
        s_w = qw[site.index]["scale"]
        if self.qweights[site.index]["granularity"] == "tensor":
            s_w = s_w.reshape(())
        else:
            s_w = jnp.squeeze(s_w, axis=tuple(a for a in range(s_w.ndim) if a not in site.channel_axes))
            s_w = jnp.transpose(s_w, site.out_scale_perm).reshape(site.out_scale_shape)
        return (s_a * s_w).astype(dtype)

    def _fake_hook(self, qw, acts):
        def hook(site, eqn, vals):
            vals = list(vals)
            ai, wi = 1 - site.weight_operand, site.weight_operand
            a = vals[ai]
            if site.index in acts and self._factored(site):
                s_a, _ = acts[site.index]
                vals[ai] = quantize(a, s_a.astype(a.dtype), 0.0, self.activations)     # q_a, as floats
                vals[wi] = qw[site.index]["q"].astype(a.dtype)
                high = (jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGHEST)
                return _bind(eqn, vals, precision=high) * self._out_scale(site, qw, s_a, a.dtype)
            if site.index in qw:
                vals[wi] = qw[site.index]["x_hat"].astype(vals[wi].dtype)
            if site.index in acts:
                s, z = acts[site.index]
                vals[ai] = fake_quantize(a, s, z, self.activations)
            return _bind(eqn, vals)
        return hook

    def _int_hook(self, qw, acts):
        def hook(site, eqn, vals):
            ai, wi = 1 - site.weight_operand, site.weight_operand
            a = vals[ai]
            s_a, _ = acts[site.index]
            ints = [None, None]
            ints[ai] = quantize(a, s_a.astype(a.dtype), 0.0, self.activations).astype(jnp.int8)
            ints[wi] = qw[site.index]["q"].astype(jnp.int8)
            acc = _bind(eqn, ints, preferred_element_type=jnp.int32, precision=None)
            return acc.astype(a.dtype) * self._out_scale(site, qw, s_a, a.dtype)
        return hook

    def _check_integer_path(self):
        if self.activations is None or self.weights is None:
            raise ValueError("quantize: the integer path needs quantized weights AND activations (--activations)")
        if not (self.weights.symmetric and self.activations.symmetric):
            raise ValueError("quantize: the integer path uses symmetric quantizers (zero points 0); drop --asymmetric")
        for i, r in self.qweights.items():
            if r["granularity"] == "group":
                raise ValueError("quantize: the integer path rescales once per output channel; per-group weights "
                                 "are simulated by the fake path only (use per-channel or per-tensor)")
            bound = self.sites[i].contraction * self.activations.qmax * self.weights.qmax
            if bound >= 2 ** 31:
                raise ValueError(f"quantize: site {i} sums {self.sites[i].contraction} products: int32 could overflow")

    # -- export ----------------------------------------------------------------------------------------------
    def export(self) -> dict:
        """Arrays for an .npz: per site ``site{i}_q`` (int8), ``_scale``, ``_zero`` and the activation's
        ``_act_scale``, ``_act_zero``."""
        out = {}
        for i, r in self.qweights.items():
            out[f"site{i}_q"] = np.asarray(r["q"]).astype(np.int8)
            out[f"site{i}_scale"] = np.asarray(r["scale"], np.float32)
            out[f"site{i}_zero"] = np.asarray(r["zero"]).astype(np.int8)
        for i, (s, z) in self.act_params.items():
            out[f"site{i}_act_scale"] = np.asarray(s, np.float32)
            out[f"site{i}_act_zero"] = np.asarray(z).astype(np.int8)
        return out

    def describe_sites(self) -> list[dict]:
        return [{"site": i, "op": s.kind, "weight": s.source, "shape": list(s.weight_shape),
                 "granularity": self.qweights.get(i, {}).get("granularity", "float"), "contraction": s.contraction}
                for i, s in sorted(self.sites.items())]


def _record(store, site, eqn, vals):
    store[site.index] = summarize_sample(vals[1 - site.weight_operand])
    return _bind(eqn, vals)
