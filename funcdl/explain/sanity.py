"""Do the maps tell the truth? Sanity checks of attribution methods.

* **Cascading randomisation** (Adebayo et al. 2018). Destroy the weights layer by layer from the top (the
  logits) down and compare each method's maps on the randomised model with those on the trained one, by the
  Spearman rank correlation per example. A method that explains the model must change when the model is
  destroyed; one whose maps stay (guided backpropagation, the published finding) shows the input's edges, not
  what the network learned. A layer is a group of parameters (a block ``stages/2/0``, a dense layer ``fc1``);
  the groups are ordered by where the forward first uses them. A randomised group takes its values from a fresh
  initialisation of the model (``fresh=``, the paper's protocol: batch-norm scales back to 1, shifts to 0) or,
  without one, from N(0, rms(leaf)^2), the scale of the trained leaf.
* **Deletion and insertion** (Petsiuk et al. 2018). Delete the input's positions from the most to the least
  important (set them to a baseline) and follow the probability of the class: a faithful map makes it fall
  fast (small area under the curve). Insertion starts from the baseline and puts the positions back in the same
  order: the probability should rise fast (large area). A random ordering is the reference.

``saliency_map(method, apply, params, x)`` is the one map per example (N, *positions) that both checks and the
command line use: |attribution| summed over channels for the gradient methods (signed with ``absolute=False``),
the class activation map for Grad-CAM(++).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Var

from . import attribution as attr
from . import cam

__all__ = ["METHODS", "saliency_map", "layer_groups", "randomize", "cascading_randomization", "spearman",
           "deletion_insertion", "auc", "plot_randomization", "plot_curves"]

METHODS = ("gradient", "gradxinput", "smoothgrad", "ig", "guided", "gradcam", "gradcam++")


def saliency_map(method: str, apply: Callable, params, x, *, target=None, key=None, layer: str | None = None,
                 absolute: bool = True, **options) -> jax.Array:
    """One map per example for any method in :data:`METHODS`; ``options`` go to the method (``steps``,
    ``samples``, ``to_features``, ...). ``layer``: Grad-CAM's feature layer, or where a gradient method
    attributes (e.g. ``embedding:0`` of a token model)."""
    if method in ("gradcam", "gradcam++"):
        fn = cam.gradcam if method == "gradcam" else cam.gradcam_plus_plus
        return fn(apply, params, x, layer=layer, target=target, **options)
    if method not in attr.ATTRIBUTIONS:
        raise ValueError(f"unknown attribution method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "smoothgrad":
        options["key"] = jax.random.PRNGKey(0) if key is None else key
    a = attr.ATTRIBUTIONS[method](apply, params, x, target=target, layer=layer, **options)
    reduce_last = a.ndim >= 4 or (a.ndim == 3 and (layer is not None or a.shape[-1] <= 4))
    return attr.to_map(a, absolute=absolute, reduce_last=reduce_last)


# -- cascading randomisation ------------------------------------------------------------------------------------


def _group_name(path: tuple) -> str:
    """``stages/2/0/convs/1/w`` -> ``stages/2/0`` (up to the first run of list indices), ``fc1/w`` -> ``fc1``."""
    keys = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
    for i, k in enumerate(keys):
        if re.fullmatch(r"\d+", k):
            j = i
            while j + 1 < len(keys) and re.fullmatch(r"\d+", keys[j + 1]):
                j += 1
            return "/".join(keys[: j + 1])
    return "/".join(keys[:-1]) if len(keys) > 1 else keys[0]


def layer_groups(apply: Callable, params, x) -> list[tuple[str, list]]:
    """``[(name, [leaf paths])]`` from the input side to the output side, ordered by the first use of each group's
    parameters in the forward (read from the traced program, so it holds for any model)."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(params)
    jaxpr = jax.make_jaxpr(lambda p: apply(p, x))(params).jaxpr
    first = {}
    for i, eqn in enumerate(jaxpr.eqns):
        for v in eqn.invars:
            if isinstance(v, Var):
                first.setdefault(v, i)
    order, paths = {}, {}
    for (path, _), var in zip(leaves, jaxpr.invars, strict=True):
        name = _group_name(path)
        order[name] = min(order.get(name, np.inf), first.get(var, np.inf))
        paths.setdefault(name, []).append(path)
    return [(name, paths[name]) for name in sorted(order, key=lambda n: order[n])]


def randomize(params, paths: list, key, fresh=None) -> dict:
    """``params`` with the leaves at ``paths`` replaced by those of ``fresh`` (a new initialisation, same
    structure) or, without it, by N(0, rms(leaf)^2) draws."""
    wanted = {jax.tree_util.keystr(p) for p in paths}
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    if fresh is not None:
        new_leaves, new_def = jax.tree_util.tree_flatten(fresh)
        if new_def != treedef:
            raise ValueError("randomize: fresh parameters must have the structure of params (the same model's "
                             "init)")
    out = []
    for i, (path, leaf) in enumerate(leaves):
        if jax.tree_util.keystr(path) in wanted:
            if fresh is not None:
                leaf = jnp.asarray(new_leaves[i], leaf.dtype).reshape(leaf.shape)
            else:
                rms = jnp.sqrt(jnp.mean(jnp.square(leaf)))
                leaf = rms * jax.random.normal(jax.random.fold_in(key, i), leaf.shape, leaf.dtype)
        out.append(leaf)
    return jax.tree_util.tree_unflatten(treedef, out)


def _ranks(a: np.ndarray) -> np.ndarray:
    """Ranks of each row, ties sharing their average rank."""
    out = np.empty(a.shape, np.float64)
    for r, row in enumerate(a):
        _, inverse, counts = np.unique(row, return_inverse=True, return_counts=True)
        ends = np.cumsum(counts)
        out[r] = (ends - (counts - 1) / 2.0)[inverse]
    return out


def spearman(a, b) -> np.ndarray:
    """Spearman rank correlation of each example's two maps (flattened), (N,). A constant map gives 0."""
    a = _ranks(np.asarray(a, np.float64).reshape(len(a), -1))
    b = _ranks(np.asarray(b, np.float64).reshape(len(b), -1))
    a -= a.mean(1, keepdims=True)
    b -= b.mean(1, keepdims=True)
    denom = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    return np.where(denom > 0, (a * b).sum(1) / np.where(denom > 0, denom, 1.0), 0.0)


def cascading_randomization(apply: Callable, params, x, methods=("gradient", "gradcam", "guided"), *, key=None,
                            groups: list | None = None, target=None, fresh=None, **options) -> dict:
    """``{"layers": [top group, ...], "correlation": {method: (L, N)}, "maps": {method: (L + 1, N, ...)}}``: row l
    after randomising the l + 1 top groups (cumulatively); maps[method][0] is the trained model's. The target
    class of every map is the trained model's prediction (or ``target``). ``fresh``: see :func:`randomize`."""
    key = jax.random.PRNGKey(0) if key is None else key
    groups = layer_groups(apply, params, x) if groups is None else groups
    logits = apply(params, x)
    target = attr.targets_of(logits, target)
    trained = {m: saliency_map(m, apply, params, x, target=target, **options) for m in methods}
    maps = {m: [np.asarray(trained[m])] for m in methods}
    corr = {m: [] for m in methods}
    randomized = params
    for i, (_, paths) in enumerate(reversed(groups)):
        randomized = randomize(randomized, paths, jax.random.fold_in(key, i), fresh)
        for m in methods:
            mp = np.asarray(saliency_map(m, apply, randomized, x, target=target, **options))
            maps[m].append(mp)
            corr[m].append(spearman(maps[m][0], mp))
    return {"layers": [name for name, _ in reversed(groups)],
            "correlation": {m: np.stack(c) for m, c in corr.items()},
            "maps": {m: np.stack(v) for m, v in maps.items()}}


# -- deletion and insertion -------------------------------------------------------------------------------------


def deletion_insertion(apply: Callable, params, x, maps, *, target=None, baseline=None, steps: int = 28) -> dict:
    """``{"fraction": (S + 1,), "deletion": (N, S + 1), "insertion": (N, S + 1)}``: the probability of the target
    class as the most important positions of each map (N, *positions) are deleted (set to the baseline) or
    inserted (into the baseline), in ``steps`` equal portions. Baseline: as Integrated Gradients' default."""
    x = jnp.asarray(x)
    maps = jnp.asarray(maps)
    if maps.shape[0] != x.shape[0] or maps.shape[1:] != x.shape[1:1 + maps.ndim - 1]:
        raise ValueError(f"deletion_insertion: maps {maps.shape} do not match the inputs' positions {x.shape}")
    base = attr.default_baseline(x) if baseline is None else jnp.broadcast_to(jnp.asarray(baseline, x.dtype),
                                                                            x.shape)
    t = attr.targets_of(apply(params, x), target)
    n, positions = maps.shape[0], int(np.prod(maps.shape[1:]))
    order = jnp.argsort(-maps.reshape(n, -1), axis=1)
    rank = jnp.zeros((n, positions), jnp.int32).at[jnp.arange(n)[:, None], order].set(
        jnp.arange(positions, dtype=jnp.int32))
    rank = rank.reshape(maps.shape + (1,) * (x.ndim - maps.ndim))
    counts = jnp.round(jnp.linspace(0, positions, steps + 1)).astype(jnp.int32)
    deletion, insertion = _curves(apply, params, x, base, rank, t, counts)
    return {"fraction": np.asarray(counts / positions), "deletion": np.asarray(deletion.T),
            "insertion": np.asarray(insertion.T)}


@functools.partial(jax.jit, static_argnames="apply")
def _curves(apply, params, x, base, rank, t, counts):
    """The target's probability with the first k positions of ``rank`` deleted / inserted, for each k."""
    def pick(z):
        return jnp.take_along_axis(jax.nn.softmax(apply(params, z), -1), t[:, None], -1)[:, 0]

    def one(k):
        gone = rank < k
        return pick(jnp.where(gone, base, x)), pick(jnp.where(gone, x, base))

    return jax.lax.map(one, counts)


def auc(fraction, curve) -> np.ndarray:
    """Area under each curve (trapezoid rule over the fraction), (N,) for curves (N, S + 1)."""
    curve = np.asarray(curve)
    dx = np.diff(np.asarray(fraction))
    return ((curve[..., 1:] + curve[..., :-1]) / 2 * dx).sum(-1)


# -- plots ------------------------------------------------------------------------------------------------------


def plot_randomization(result: dict, path, *, title: str = "cascading randomisation"):
    """Mean Spearman correlation (with its spread over examples) per randomised layer, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = result["layers"]
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(layers) + 2), 3.5))
    steps = np.arange(len(layers))
    for m, c in result["correlation"].items():
        mean, sd = c.mean(1), c.std(1)
        ax.plot(steps, mean, marker="o", label=m)
        ax.fill_between(steps, mean - sd, mean + sd, alpha=0.15)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(steps, layers, rotation=45, ha="right")
    ax.set_xlabel("randomised down to (cumulative, from the logits)")
    ax.set_ylabel("Spearman rank correlation")
    ax.set_ylim(-0.3, 1.05)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_curves(results: dict, path, *, title: str = "deletion and insertion"):
    """``results``: {label: deletion_insertion(...)}; mean curves with their areas in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for label, r in results.items():
        for ax, kind in zip(axes, ("deletion", "insertion"), strict=True):
            mean = r[kind].mean(0)
            ax.plot(r["fraction"], mean, label=f"{label} (AUC {auc(r['fraction'], r[kind]).mean():.3f})")
    for ax, kind in zip(axes, ("deletion", "insertion"), strict=True):
        ax.set_xlabel(f"fraction of positions {'deleted' if kind == 'deletion' else 'inserted'}")
        ax.set_ylabel("probability of the class")
        ax.set_title(kind)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
