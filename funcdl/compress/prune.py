"""Pruning over parameter pytrees: masks, magnitude and structured pruning, the gradual schedule, reports.

A *mask* is a pytree with the params' structure: a 0/1 array (1 keep, 0 prune) for each prunable leaf and
``None`` for the others. Prunable by default: the leaves with ``ndim >= 2`` (dense and conv kernels, embedding
tables); ``pattern`` (a regex searched in the ``"layers/0/w"`` path) chooses among those instead. Biases and
norm scales are never pruned unless ``pattern`` picks them and they have ``ndim >= 1``.

- ``magnitude_masks(params, sparsity, scope="layer"|"global")``: drop the ``sparsity`` share of weights with
  the smallest ``|w|``, in each layer or over all prunable weights at once (exact counts: ties broken by
  position). The sparsity may be a traced number (the gradual schedule runs under ``jit``).
- ``structured_masks(params, sparsity, kind="channels"|"heads")``: drop whole output channels (the last axis of
  a dense ``(n_in, n_out)`` or conv ``(..., C_in, C_out)`` kernel, with the matching entries of a sibling bias)
  by the L1 or L2 norm of each filter; or whole attention heads of the fused layout the GPT uses
  (``{"qkv": {"w": (d, 3d)}, "proj": {"w": (d, d)}}``: head h owns columns ``h*dh:(h+1)*dh`` of each of q, k, v
  and the same rows of ``proj``), scored by the norm of everything the head owns. Other layouts are not
  supported for heads (a ValueError says so).
- ``cubic_sparsity``: Zhu & Gupta (2017), ``s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3`` for
  ``t0 <= t <= t0 + n dt``, updated every ``dt`` steps; ``gradual_refresh`` turns it into the ``refresh`` of
  ``optim.masking.masked_sparse``, so the masks live in the optimizer state.
- ``prune_remaining``: one lottery-ticket round (drop ``fraction`` of the weights still kept, per layer or
  globally); ``sparsity_report`` / ``format_report``: zeros per layer and overall.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np

from funcdl.optim.base import path_str
from funcdl.optim.masking import apply_masks

__all__ = ["prunable", "ones_masks", "magnitude_masks", "structured_masks", "prune_remaining", "cubic_sparsity",
           "gradual_refresh", "gradual_optimizer", "parse_prune", "sparsity_report", "format_report", "apply_masks",
           "mask_sparsity"]


def _is_none(x):
    return x is None


def _paths_leaves(tree):
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_none)
    return [path_str(k) for k, _ in flat], [v for _, v in flat], treedef


def _check_sparsity(sparsity, what="sparsity"):
    if isinstance(sparsity, jax.core.Tracer):
        return
    try:
        s = float(sparsity)
    except (TypeError, ValueError):
        raise TypeError(f"{what} must be a number in [0, 1), got {sparsity!r}") from None
    if not 0.0 <= s < 1.0:
        raise ValueError(f"{what} must lie in [0, 1) (the share of weights set to zero), got {sparsity}")


def prunable(params, pattern: str | None = None):
    """A pytree of bools like ``params``: True for the leaves pruning may touch (``ndim >= 2``, or, with
    ``pattern``, the leaves of ``ndim >= 1`` whose path matches it). Raises when nothing is prunable."""
    if pattern is not None:
        try:
            rx = re.compile(pattern)
        except re.error as err:
            raise ValueError(f"prune pattern {pattern!r} is not a valid regular expression ({err})") from None
    paths, leaves, treedef = _paths_leaves(params)
    keep = [None if v is None else
            (jnp.ndim(v) >= 1 and bool(rx.search(p))) if pattern is not None else jnp.ndim(v) >= 2
            for p, v in zip(paths, leaves, strict=True)]
    if not any(keep):
        hint = f"pattern {pattern!r} matches no array leaf" if pattern else "no leaf has ndim >= 2"
        raise ValueError(f"nothing to prune: {hint}; parameter paths look like {', '.join(paths[:4])}")
    return jax.tree_util.tree_unflatten(treedef, keep)


def ones_masks(params, pattern: str | None = None):
    """Masks keeping everything: ones for the prunable leaves, ``None`` elsewhere."""
    return jax.tree.map(lambda p, k: jnp.ones_like(p) if k else None, params, prunable(params, pattern),
                        is_leaf=_is_none)


@jax.jit
def _keep_top(scores, n_prune):
    """0/1 (float32) of the shape of the flat ``scores``: 0 at the ``n_prune`` smallest (ties: by position)."""
    order = jnp.argsort(scores, stable=True)
    rank_ok = jnp.arange(scores.size) >= n_prune
    return jnp.zeros(scores.shape, jnp.float32).at[order].set(rank_ok.astype(jnp.float32))


def _scores(leaf, old):
    """``|w|``, with the positions an older mask already pruned ranked first (-1): masks only ever shrink."""
    s = jnp.abs(leaf).astype(jnp.float32).ravel()
    return s if old is None else jnp.where(jnp.ravel(old) != 0, s, -1.0)


def magnitude_masks(params, sparsity, *, scope: str = "layer", pattern: str | None = None, masks=None):
    """Masks dropping the ``sparsity`` share of the smallest-magnitude prunable weights, per layer
    (``scope="layer"``) or over all of them at once (``"global"``). ``masks``: an older mask whose zeros stay
    zeros. ``sparsity`` may be a number or a traced scalar; a per-layer ``dict`` ``{path: sparsity}`` is allowed
    with ``scope="layer"`` (layers not named keep the default 0)."""
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
    per_layer = sparsity if isinstance(sparsity, dict) else None
    if per_layer is not None and scope != "layer":
        raise ValueError("a per-layer sparsity dict needs scope='layer'")
    for s in (per_layer.values() if per_layer is not None else [sparsity]):
        _check_sparsity(s)
    which = prunable(params, pattern) if masks is None else jax.tree.map(
        lambda m: m is not None, masks, is_leaf=_is_none)
    paths, leaves, treedef = _paths_leaves(params)
    flags = jax.tree_util.tree_leaves(which, is_leaf=_is_none)
    olds = [None] * len(leaves) if masks is None else jax.tree_util.tree_leaves(masks, is_leaf=_is_none)
    chosen = [i for i, f in enumerate(flags) if f]
    out = [None] * len(leaves)
    if scope == "global":
        scores = jnp.concatenate([_scores(leaves[i], olds[i]) for i in chosen])
        keep = _keep_top(scores, _count(sparsity, scores.size))
        start = 0
        for i in chosen:
            n = int(np.size(leaves[i]))
            out[i] = keep[start:start + n].reshape(jnp.shape(leaves[i])).astype(leaves[i].dtype)
            start += n
    else:
        for i in chosen:
            s = per_layer.get(paths[i], 0.0) if per_layer is not None else sparsity
            sc = _scores(leaves[i], olds[i])
            out[i] = _keep_top(sc, _count(s, sc.size)).reshape(jnp.shape(leaves[i])).astype(leaves[i].dtype)
    return jax.tree_util.tree_unflatten(treedef, out)


def _count(sparsity, n):
    """How many of ``n`` weights a sparsity drops (round to nearest; works for traced sparsities)."""
    return jnp.round(jnp.asarray(sparsity, jnp.float32) * n).astype(jnp.int32)


def mask_sparsity(masks) -> float:
    """The share of zeros over all the masked positions."""
    leaves = [np.asarray(m) for m in jax.tree_util.tree_leaves(masks)]
    total = sum(m.size for m in leaves)
    return float(sum((m == 0).sum() for m in leaves) / max(total, 1))


def prune_remaining(params, masks, fraction, *, scope: str = "layer", overrides: dict | None = None):
    """One iterative-pruning (lottery ticket) round: drop ``fraction`` of the weights each mask still keeps
    (per layer, or over all layers with ``scope="global"``), smallest ``|w|`` first. ``overrides``:
    ``{path regex: fraction}`` for layers pruned at another rate (Frankle & Carbin prune LeNet's output layer
    at half the rate)."""
    _check_sparsity(fraction, "fraction")
    paths, _, _ = _paths_leaves(params)
    m_leaves = jax.tree_util.tree_leaves(masks, is_leaf=_is_none)
    if scope == "global":
        kept = sum(float(np.asarray(m).sum()) for m in m_leaves if m is not None)
        total = sum(np.size(m) for m in m_leaves if m is not None)
        return magnitude_masks(params, 1.0 - kept * (1.0 - fraction) / total, scope="global", masks=masks)
    target = {}
    for p, m in zip(paths, m_leaves, strict=True):
        if m is None:
            continue
        f = next((v for rx, v in (overrides or {}).items() if re.search(rx, p)), fraction)
        target[p] = 1.0 - float(np.asarray(m).sum()) * (1.0 - f) / np.size(m)
    return magnitude_masks(params, target, scope="layer", masks=masks)


# ---- structured pruning ----------------------------------------------------------------------------------

def _norm(x, axis, norm):
    if norm == "l1":
        return jnp.sum(jnp.abs(x), axis=axis)
    return jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32)), axis=axis))


def structured_masks(params, sparsity, *, kind: str = "channels", norm: str = "l2", pattern: str | None = None,
                     n_heads: int | None = None):
    """Masks dropping whole output channels (``kind="channels"``) or attention heads (``"heads"``, with
    ``n_heads``) in each prunable layer: the ``sparsity`` share with the smallest L1/L2 norm. See the module
    docstring for the layouts."""
    _check_sparsity(sparsity)
    if norm not in ("l1", "l2"):
        raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")
    if kind == "channels":
        return _channel_masks(params, float(sparsity), norm, pattern)
    if kind == "heads":
        return _head_masks(params, float(sparsity), norm, n_heads)
    raise ValueError(f"structured pruning supports kind 'channels' or 'heads', got {kind!r}")


def _channel_masks(params, sparsity, norm, pattern):
    which = jax.tree_util.tree_leaves(prunable(params, pattern), is_leaf=_is_none)
    paths, leaves, treedef = _paths_leaves(params)
    index = {p: i for i, p in enumerate(paths)}
    out = [None] * len(leaves)
    for i, (p, w) in enumerate(zip(paths, leaves, strict=True)):
        if not which[i] or jnp.ndim(w) < 2:
            continue
        n_out = w.shape[-1]
        score = _norm(w.reshape(-1, n_out), 0, norm)
        keep = _keep_top(score, int(round(sparsity * n_out)))
        out[i] = jnp.broadcast_to(keep, w.shape).astype(w.dtype)
        parent = p.rsplit("/", 1)[0] if "/" in p else ""
        for name in ("b", "bias"):          # the bias of a dropped unit goes too, so the unit outputs act(0)
            j = index.get(f"{parent}/{name}" if parent else name)
            if j is not None and leaves[j] is not None and jnp.shape(leaves[j]) == (n_out,):
                out[j] = keep.astype(leaves[j].dtype)
    return jax.tree_util.tree_unflatten(treedef, out)


def _head_masks(params, sparsity, norm, n_heads):
    masks = jax.tree.map(lambda _: None, params, is_leaf=_is_none)
    found = []                          # (params node, masks node) of every attention layer of the fused layout

    def walk(node, mnode):
        if isinstance(node, dict):
            if isinstance(node.get("qkv"), dict) and isinstance(node.get("proj"), dict) and "w" in node["qkv"]:
                found.append((node, mnode))
            for k, v in node.items():
                if isinstance(v, (dict, list)):
                    walk(v, mnode[k])
        elif isinstance(node, list):
            for v, mv in zip(node, mnode, strict=True):
                walk(v, mv)

    walk(params, masks)
    if not found:
        raise ValueError("head pruning found no attention layer of the supported layout {'qkv': {'w': (d, 3d)}, "
                         "'proj': {'w': (d, d)}} (the GPT's); use --structured channels for other models")
    if not isinstance(n_heads, int) or n_heads < 1:
        raise ValueError("head pruning needs n_heads (a positive whole number: the model's heads per layer)")
    for node, mnode in found:
        _one_attention(node, mnode, sparsity, norm, n_heads)
    return masks


def _one_attention(node, mnode, sparsity, norm, n_heads):
    wqkv, wproj = node["qkv"]["w"], node["proj"]["w"]
    d = wproj.shape[0]
    if wqkv.shape != (d, 3 * d) or d % n_heads:
        raise ValueError(f"head pruning: qkv kernel {wqkv.shape} / proj {wproj.shape} do not fit {n_heads} heads "
                         "of the fused (d, 3d) layout")
    dh = d // n_heads
    q = wqkv.reshape(d, 3, n_heads, dh)
    owned = jnp.concatenate([jnp.moveaxis(q, 2, 0).reshape(n_heads, -1), wproj.reshape(n_heads, -1)], axis=1)
    keep = _keep_top(_norm(owned, 1, norm), int(round(sparsity * n_heads)))
    cols = jnp.tile(jnp.repeat(keep, dh), 3)                      # (3d,): q, k, v blocks, head-major within each
    mnode["qkv"]["w"] = jnp.broadcast_to(cols, wqkv.shape).astype(wqkv.dtype)
    if node["qkv"].get("b") is not None:
        mnode["qkv"]["b"] = cols.astype(node["qkv"]["b"].dtype)
    mnode["proj"]["w"] = jnp.broadcast_to(jnp.repeat(keep, dh)[:, None], wproj.shape).astype(wproj.dtype)


# ---- the gradual schedule --------------------------------------------------------------------------------

def cubic_sparsity(step, final: float, *, begin: int = 0, end: int, every: int = 1, initial: float = 0.0):
    """Zhu & Gupta's schedule: ``s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3`` with ``t0 = begin``,
    ``n dt = end - begin``; ``t`` is rounded down to a multiple of ``every`` after ``t0`` (the masks change every
    ``dt`` steps), ``s_i`` before ``t0`` and ``s_f`` after ``end``. Works on traced steps."""
    _check_sparsity(final, "final sparsity")
    _check_sparsity(initial, "initial sparsity")
    if not (isinstance(every, int) and every >= 1 and isinstance(begin, int) and begin >= 0):
        raise ValueError(f"cubic_sparsity: every must be >= 1 and begin >= 0 (whole numbers), got {every}, {begin}")
    if not (isinstance(end, int) and end > begin):
        raise ValueError(f"cubic_sparsity: end ({end}) must be a whole number after begin ({begin})")
    t = jnp.asarray(step, jnp.float32)
    t = begin + jnp.floor((t - begin) / every) * every
    frac = jnp.clip((t - begin) / (end - begin), 0.0, 1.0)
    return final + (initial - final) * (1.0 - frac) ** 3


def gradual_refresh(final: float, *, begin: int, end: int, every: int, initial: float = 0.0,
                    scope: str = "layer"):
    """``refresh(params, masks, count) -> masks`` for ``optim.masking.masked_sparse``: on every ``every``-th
    step from ``begin`` to ``end`` the masks become ``magnitude_masks`` at ``cubic_sparsity(count)`` (zeros stay
    zeros); between those steps they are kept (``lax.cond``, so the sort runs only when the masks change)."""
    cubic_sparsity(0, final, begin=begin, end=end, every=every, initial=initial)   # checks the arguments

    def refresh(params, masks, count):
        s = cubic_sparsity(count, final, begin=begin, end=end, every=every, initial=initial)
        due = (count >= begin) & (count <= end) & ((count - begin) % every == 0)
        return jax.lax.cond(due, lambda: magnitude_masks(params, s, scope=scope, masks=masks), lambda: masks)

    return refresh


def parse_prune(text: str):
    """``"gradual:0.9"`` (or ``"gradual:0.9:global"``) -> ``(final sparsity, scope)``; a one-line ValueError
    otherwise."""
    parts = str(text).split(":")
    try:
        if parts[0] != "gradual" or len(parts) not in (2, 3):
            raise ValueError
        final = float(parts[1])
        scope = parts[2] if len(parts) == 3 else "layer"
        if scope not in ("layer", "global") or not 0.0 < final < 1.0:
            raise ValueError
    except ValueError:
        raise ValueError(f"prune must be 'gradual:S' or 'gradual:S:global' with a final sparsity 0 < S < 1 "
                         f"(e.g. gradual:0.9), got {text!r}") from None
    return final, scope


# ---- reports ---------------------------------------------------------------------------------------------

def sparsity_report(params, pattern: str | None = None) -> dict:
    """Zeros in each prunable leaf of ``params`` and overall: ``{"layers": [{"path", "size", "zeros",
    "sparsity"}], "size", "zeros", "sparsity", "all_params", "all_zeros"}``."""
    paths, leaves, _ = _paths_leaves(params)
    which = jax.tree_util.tree_leaves(prunable(params, pattern), is_leaf=_is_none)
    rows = []
    for p, v, f in zip(paths, leaves, which, strict=True):
        if f:
            a = np.asarray(v)
            rows.append({"path": p, "size": int(a.size), "zeros": int((a == 0).sum()),
                         "sparsity": float((a == 0).mean())})
    size = sum(r["size"] for r in rows)
    zeros = sum(r["zeros"] for r in rows)
    every = [np.asarray(v) for v in leaves if v is not None]
    return {"layers": rows, "size": size, "zeros": zeros, "sparsity": zeros / max(size, 1),
            "all_params": int(sum(a.size for a in every)), "all_zeros": int(sum((a == 0).sum() for a in every))}


def format_report(report: dict) -> str:
    lines = [f"{'layer':<32} {'weights':>10} {'zeros':>10} {'sparsity':>9}"]
    for r in report["layers"]:
        lines.append(f"{r['path']:<32} {r['size']:>10} {r['zeros']:>10} {r['sparsity']:>8.1%}")
    lines.append(f"{'prunable total':<32} {report['size']:>10} {report['zeros']:>10} {report['sparsity']:>8.1%}")
    lines.append(f"all parameters: {report['all_params']}, nonzero {report['all_params'] - report['all_zeros']} "
                 f"({report['all_params'] / max(report['all_params'] - report['all_zeros'], 1):.1f}x fewer)")
    return "\n".join(lines)


def gradual_optimizer(opt, spec: str, total_steps: int):
    """``opt`` wrapped for ``--set prune=gradual:S[:global]``: ``masked_sparse`` over the prunable leaves with
    the cubic schedule from 10% to 70% of ``total_steps`` (Zhu & Gupta prune early and let the last part of
    training recover), the masks changing about 20 times on the way (every ``(end - begin) // 20`` steps)."""
    from funcdl.optim.masking import masked_sparse

    final, scope = parse_prune(spec)
    begin = int(0.1 * total_steps)
    end = max(begin + 1, int(0.7 * total_steps))
    every = max(1, (end - begin) // 20)
    end = begin + every * max(1, (end - begin) // every)
    return masked_sparse(opt, ones_masks, refresh=gradual_refresh(final, begin=begin, end=end, every=every,
                                                                   scope=scope))
