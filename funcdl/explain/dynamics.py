"""Gradient flow and training dynamics: per-layer gradient norms, update/weight ratios, activation statistics.

For every parameter leaf l (``layers/0/w``, ``layers/0/b``, ...) of a model with loss L:

    grad_norm_l    = ||dL/dW_l||_2                 (on one batch)
    update_ratio_l = ||u_l||_2 / ||W_l||_2         u = the optimizer's update for that gradient
                                                   (lr * g for SGD; Adam's lr * m / (sqrt v + eps) ...)

The update/weight ratio is the rule of thumb of CS231n: around 1e-3 per step the layer learns at a healthy pace;
1e-1 and it is being rewritten every step, 1e-6 and it is frozen. The update is the optimizer's own
``opt.update(g, opt_state, params)`` evaluated and thrown away, so it includes momentum, Adam's scaling and
clipping exactly as the next step would apply them.

Activations are read from the forward pass itself: :func:`capture_activations` traces any function to a jaxpr
and evaluates it again, keeping the output of every registered elementwise activation (relu, tanh, gelu, ...)
it meets, in order. An activation is recognised by comparing its traced body with the registered primitive's
(the hand-rule wrappers carry no name in the jaxpr). Activations inside a ``lax.scan`` or ``while`` body (a
scanned stack of blocks, a recurrent cell, a loss computed in scanned chunks) are not seen; those inside
``jit``, ``checkpoint`` and other ``custom_vjp`` functions are, and so are those a fused primitive calls as
primitives (one that computes its activation inline, as ``gelu_mlp``, hides it).
Statistics per activation layer: the root mean square, the share of exact zeros and, for ReLU, the share of
*dead* units -- units (all axes but the batch) that are zero for every example of the batch.

Files of a run with ``--set track=gradflow`` / ``track=trajectory`` (written by ``funcdl.training.tracking``):
``gradflow.jsonl`` (one JSON record per tracked step) and ``trajectory.npz`` (``steps`` (K,), ``params``
(K, P) float32 rows of ``jax.flatten_util.ravel_pytree(params)[0]``); :func:`read_gradflow` and
:func:`read_trajectory` read them back.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from ..nn import activations as _acts

__all__ = ["leaf_paths", "leaf_norms", "gradient_flow", "capture_activations", "activation_stats",
           "read_gradflow", "read_trajectory", "TRACKED_ACTIVATIONS"]

# the elementwise activations capture_activations recognises (name -> registered primitive, default settings)
TRACKED_ACTIVATIONS = ("relu", "leaky_relu", "elu", "selu", "gelu", "silu", "sigmoid", "tanh", "softplus",
                       "mish", "hard_tanh", "hard_sigmoid")


def _key_str(k) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def leaf_paths(tree) -> list[str]:
    """The leaves' paths as ``"layers/0/w"`` (dict keys, indices and attribute names joined by '/')."""
    return ["/".join(_key_str(k) for k in path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def leaf_norms(tree):
    """``(L,)`` float32: the L2 norm of every leaf, in ``leaf_paths`` order."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.zeros((0,), jnp.float32)
    return jnp.stack([jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32)))) for x in leaves])


def gradient_flow(loss, opt, params, opt_state, state, batch, key) -> dict:
    """Per-leaf gradient, update and weight norms for one batch, without taking the step.

    ``loss(params, state, batch, key, train) -> (loss, aux)`` (a Task's loss), ``opt`` anything with
    ``update(grads, opt_state, params) -> (updates, opt_state)``. Returns ``{"loss": (), "grad_norm": (L,),
    "update_norm": (L,), "param_norm": (L,), "update_ratio": (L,)}``; jit it whole."""
    (value, _), grads = jax.value_and_grad(loss, has_aux=True)(params, state, batch, key, True)
    grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params)
    updates, _ = opt.update(grads, opt_state, params)
    g, u, w = leaf_norms(grads), leaf_norms(updates), leaf_norms(params)
    return {"loss": jnp.asarray(value, jnp.float32), "grad_norm": g, "update_norm": u, "param_norm": w,
            "update_ratio": u / jnp.maximum(w, 1e-12)}


# ---- activations from the forward pass ------------------------------------------------------------------

@functools.lru_cache(maxsize=256)
def _fingerprint(name: str, shape: tuple, dtype) -> str | None:
    """The printed body of the registered activation ``name`` on an input of this shape (None: not a wrapper)."""
    fn = _acts.get_activation(name)
    jaxpr = jax.make_jaxpr(fn)(jax.ShapeDtypeStruct(shape, dtype)).jaxpr
    calls = [e for e in jaxpr.eqns if e.primitive.name == "custom_vjp_call"]
    return str(calls[0].params["call_jaxpr"].jaxpr) if len(calls) == 1 else None


def _which_activation(eqn, names) -> str | None:
    if len(eqn.invars) != 1 or len(eqn.outvars) != 1:
        return None
    aval = eqn.outvars[0].aval
    if getattr(eqn.invars[0], "aval", None) != aval or not jnp.issubdtype(aval.dtype, jnp.floating):
        return None
    body = str(eqn.params["call_jaxpr"].jaxpr)
    for name in names:
        if _fingerprint(name, tuple(aval.shape), aval.dtype) == body:
            return name
    return None


_CALLS = {"pjit": "jaxpr", "jit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr",
          "remat": "jaxpr", "remat2": "jaxpr", "checkpoint": "jaxpr", "custom_jvp_call": "call_jaxpr"}


def _eval(jaxpr, consts, args, names, found):
    """Evaluate ``jaxpr``; append ``(name, output)`` to ``found`` for every recognised activation call."""
    env = {}

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]

    for v, x in zip(jaxpr.constvars, consts, strict=True):
        env[v] = x
    for v, x in zip(jaxpr.invars, args, strict=True):
        env[v] = x
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        prim = eqn.primitive.name
        if prim == "custom_vjp_call":      # forward only: the hand rule is not needed
            inner = eqn.params["call_jaxpr"]
            tag = _which_activation(eqn, names) if names else None
            # an activation is recorded whole; any other wrapper (a fused primitive, a model's chunked loss) is
            # looked into, so the activations it calls are seen
            outs = _eval(inner.jaxpr, inner.consts, invals, () if tag else names, found)
            if tag is not None:
                found.append((tag, outs[0]))
        elif prim in _CALLS and _CALLS[prim] in eqn.params:
            inner = eqn.params[_CALLS[prim]]
            closed = inner if hasattr(inner, "consts") else jcore.ClosedJaxpr(inner, ())
            outs = _eval(closed.jaxpr, closed.consts, invals, names, found)
        else:
            with eqn.ctx.manager:
                outs = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
            outs = outs if eqn.primitive.multiple_results else [outs]
        for v, x in zip(eqn.outvars, outs, strict=True):
            if not isinstance(v, jcore.DropVar):
                env[v] = x
    return [read(v) for v in jaxpr.outvars]


def capture_activations(fn, *args, names=TRACKED_ACTIVATIONS):
    """``(fn(*args), [(name, activation), ...])``: the output and every registered activation's output met in
    the forward pass, in order (see the module docstring for what is and is not seen). Works under ``jit``."""
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
    found: list = []
    outs = _eval(closed.jaxpr, closed.consts, jax.tree.leaves(args), tuple(names), found)
    return jax.tree.unflatten(jax.tree.structure(out_shape), outs), found


def activation_stats(found) -> dict:
    """Per captured activation: ``rms`` sqrt(mean a^2), ``zero`` the share of exact zeros, ``dead`` the share of
    units zero for every example of the batch (ReLU only, NaN for the others). Arrays of shape (A,)."""
    if not found:
        empty = jnp.zeros((0,), jnp.float32)
        return {"rms": empty, "zero": empty, "dead": empty}
    rms, zero, dead = [], [], []
    for name, a in found:
        a = a.astype(jnp.float32)
        rms.append(jnp.sqrt(jnp.mean(jnp.square(a))))
        zero.append(jnp.mean(a == 0))
        if name == "relu" and a.ndim >= 2:
            dead.append(jnp.mean(jnp.all(a.reshape(a.shape[0], -1) == 0, axis=0)))
        else:
            dead.append(jnp.float32(jnp.nan))
    return {"rms": jnp.stack(rms), "zero": jnp.stack(zero).astype(jnp.float32),
            "dead": jnp.stack(dead).astype(jnp.float32)}


# ---- reading a run's files --------------------------------------------------------------------------------

def read_gradflow(run_dir) -> dict:
    """``RUN/gradflow.jsonl`` as arrays: ``steps`` (K,), ``params`` (leaf paths), ``activations`` (names),
    and ``grad_norm``, ``update_ratio``, ``param_norm`` (K, L), ``act_rms``, ``act_zero``, ``dead_relu`` (K, A)."""
    path = Path(run_dir) / "gradflow.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no gradflow.jsonl in {run_dir}; train with --set track=gradflow")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not records:
        raise ValueError(f"{path} is empty; the run recorded no gradient-flow step yet")
    out = {"steps": np.array([r["step"] for r in records], np.int64), "params": records[-1]["params"],
           "activations": records[-1].get("activations", [])}
    for key in ("grad_norm", "update_ratio", "param_norm", "act_rms", "act_zero", "dead_relu"):
        rows = [r.get(key, []) for r in records]
        width = max(len(r) for r in rows)
        out[key] = np.array([[np.nan if v is None else v for v in r] + [np.nan] * (width - len(r)) for r in rows],
                            np.float64).reshape(len(rows), width)
    return out


def read_trajectory(run_dir) -> dict:
    """``RUN/trajectory.npz``: ``{"steps": (K,) int, "params": (K, P) float32}``."""
    path = Path(run_dir) / "trajectory.npz"
    if not path.is_file():
        raise FileNotFoundError(f"no trajectory.npz in {run_dir}; train with --set track=trajectory")
    with np.load(path) as f:
        return {"steps": f["steps"], "params": f["params"]}
