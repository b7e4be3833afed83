"""Loss landscapes: 1-D interpolation between two parameter sets, 2-D slices along filter-normalised random
directions, and the plane of an optimizer's trajectory (its PCA directions) with the path drawn over it.

A network's loss lives in millions of dimensions; a picture shows a line or a plane through it:

    1-D:  L((1 - a) w_0 + a w_1)                  (Goodfellow et al. 2015: from the initial to the trained
                                                   weights, or between two minima: is there a barrier?)
    2-D:  L(w* + a d_1 + b d_2)                   (Li et al. 2018), on a grid of (a, b)

**Filter normalisation** (Li et al. 2018). A random Gaussian direction means different things for weights of
different scales: ReLU networks are invariant to scaling a filter's incoming weights by c and the next layer's by
1/c, so a step of fixed size is huge for a small filter and nothing for a large one, and plots of two networks
would not compare. Each *filter* of the direction is therefore rescaled to the norm of the same filter of the
weights,

    d_{i,j} <- d_{i,j} / ||d_{i,j}|| * ||w_{i,j}||

where a filter is one output unit: a column ``w[:, j]`` of a dense weight (in, out), one output channel
``w[..., j]`` of a convolution kernel (H, W, I, O) (in general: one slice along the last axis of an array with
two or more dimensions). Biases and normalisation parameters (the 1-D leaves) get a direction of zero, as in the
paper's default, so the plane only moves the weights.

**The path of an optimizer.** Two random directions in millions of dimensions are almost orthogonal to any
trajectory, which then shows as a dot. Li et al. use instead the top two principal directions of the matrix of
the snapshots minus the final point, M = [w_0 - w*, ..., w_K - w*]; the path is the projection of each snapshot on
that plane, and the explained variance says how much of the path the plane holds (often > 90%: training moves in
a very low-dimensional space).

Everything here takes a loss of the parameters alone, ``loss(params) -> scalar`` (close over a fixed set of
batches: ``batches_loss``), so it works on any funcdl model and on any run loaded from disk (``funcdl
landscape``). The plane's grid is evaluated in one compiled ``lax.map``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

__all__ = ["interpolate", "random_direction", "filter_normalize", "filter_normalized_direction", "filter_norms",
           "surface", "pca_directions", "project", "path_range", "batches_loss", "load_trajectory",
           "optimizer_path", "plot_contour", "plot_surface"]


def _floating(a) -> bool:
    return jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating)


# -- 1-D ----------------------------------------------------------------------------------------------------------


def interpolate(loss: Callable, params_a, params_b, alphas) -> np.ndarray:
    """``L((1 - a) w_a + a w_b)`` for each a in ``alphas`` (a = 0 is ``params_a``, 1 is ``params_b``; values
    outside [0, 1] extrapolate). One compiled ``lax.map`` over the alphas."""
    fa, _ = ravel_pytree(params_a)
    fb, _ = ravel_pytree(params_b)
    if fa.shape != fb.shape:
        raise ValueError(f"interpolate: the two parameter sets have {fa.size} and {fb.size} numbers; give two sets "
                         "of the same model")
    if jax.tree.structure(params_a) != jax.tree.structure(params_b):
        raise ValueError("interpolate: the two parameter sets have different structures; give two sets of the same "
                         "model")
    return np.asarray(_line(loss, params_a, fb, jnp.asarray(alphas, fa.dtype)))


@functools.partial(jax.jit, static_argnums=0)
def _line(loss, params_a, fb, alphas):
    fa, unravel = ravel_pytree(params_a)
    return jax.lax.map(lambda a: loss(unravel((1 - a) * fa + a * fb)), alphas)


# -- filter-normalised directions ---------------------------------------------------------------------------------


@jax.jit
def random_direction(key, params):
    """A Gaussian direction shaped as ``params`` (one independent draw per leaf; non-float leaves zero)."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, max(len(leaves), 1))
    out = [jax.random.normal(k, jnp.shape(a), jnp.asarray(a).dtype) if _floating(a) else jnp.zeros_like(a)
           for k, a in zip(keys, leaves, strict=False)]
    return jax.tree.unflatten(treedef, out)


def _filter_axes(a) -> tuple:
    """The axes one filter spans: all but the last (a filter is one slice along the output axis)."""
    return tuple(range(jnp.ndim(a) - 1))


@functools.partial(jax.jit, static_argnames=("ignore_1d", "eps"))
def filter_normalize(direction, params, *, ignore_1d: bool = True, eps: float = 1e-12):
    """``direction`` with each filter rescaled to the norm of the same filter of ``params`` (Li et al. 2018).
    Leaves with fewer than two dimensions (biases, norm scales and shifts) become zero with ``ignore_1d``;
    without it each is rescaled as one filter. A zero weight filter gives a zero direction filter."""
    if jax.tree.structure(direction) != jax.tree.structure(params):
        raise ValueError("filter_normalize: the direction and the parameters have different structures")

    def one(d, w):
        if not _floating(w):
            return jnp.zeros_like(d)
        if jnp.ndim(w) < 2:
            if ignore_1d:
                return jnp.zeros_like(d)
            return d * (jnp.linalg.norm(w) / (jnp.linalg.norm(d) + eps))
        axes = _filter_axes(w)
        nd = jnp.sqrt(jnp.sum(d * d, axis=axes, keepdims=True))
        nw = jnp.sqrt(jnp.sum(w * w, axis=axes, keepdims=True))
        return d * (nw / (nd + eps))

    return jax.tree.map(one, direction, params)


def filter_normalized_direction(key, params, *, ignore_1d: bool = True):
    """A random Gaussian direction, filter-normalised to ``params``."""
    return filter_normalize(random_direction(key, params), params, ignore_1d=ignore_1d)


def filter_norms(tree) -> list:
    """Per leaf (in ``jax.tree.leaves`` order): the norm of each filter (a vector over the last axis) for leaves
    with two or more dimensions, None for the others."""
    return [np.sqrt(np.sum(np.square(np.asarray(a, np.float64)), axis=_filter_axes(a))) if np.ndim(a) >= 2
            else None for a in jax.tree.leaves(tree)]


# -- 2-D ----------------------------------------------------------------------------------------------------------


def surface(loss: Callable, params, d1, d2, alphas, betas, *, chunk: int | None = None) -> np.ndarray:
    """The loss on the plane ``w + a d1 + b d2``: Z of shape (len(betas), len(alphas)) with
    ``Z[j, i] = L(w + alphas[i] d1 + betas[j] d2)`` (rows are b: matplotlib's ``contour(alphas, betas, Z)``).
    ``d1``, ``d2`` are pytrees shaped as ``params`` or flat vectors in ``ravel_pytree`` order. ``chunk`` grid
    points are evaluated at once (vmapped; default one at a time, the least memory)."""
    flat, _ = ravel_pytree(params)
    f1, f2 = _as_flat(d1, flat, "d1"), _as_flat(d2, flat, "d2")
    alphas, betas = np.asarray(alphas, np.float64), np.asarray(betas, np.float64)
    if alphas.ndim != 1 or betas.ndim != 1 or not alphas.size or not betas.size:
        raise ValueError("surface: alphas and betas must be non-empty 1-D arrays of coordinates")
    A, B = np.meshgrid(alphas, betas)                   # (len(betas), len(alphas))
    coords = jnp.asarray(np.stack([A.ravel(), B.ravel()], 1), flat.dtype)
    return np.asarray(_grid(loss, chunk, params, f1, f2, coords)).reshape(A.shape)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _grid(loss, chunk, params, f1, f2, coords):
    """The plane's losses, compiled once per loss function and grid size (params and directions are arguments)."""
    flat, unravel = ravel_pytree(params)
    return jax.lax.map(lambda ab: loss(unravel(flat + ab[0] * f1 + ab[1] * f2)), coords, batch_size=chunk)


def _as_flat(d, flat, name):
    out = d if isinstance(d, np.ndarray | jax.Array) and np.ndim(d) == 1 else ravel_pytree(d)[0]
    out = jnp.asarray(out, flat.dtype)
    if out.shape != flat.shape:
        raise ValueError(f"surface: {name} has {out.size} numbers, the parameters {flat.size}")
    return out


# -- the plane of a trajectory ------------------------------------------------------------------------------------


def pca_directions(trajectory, origin) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(d1, d2, explained)``: the top two principal directions (unit flat vectors, float64) of the snapshots
    ``trajectory`` (K, n) minus ``origin`` (n,) (Li et al.: the final point), and the share of the variance each
    explains. The sign of each direction is fixed so that the first snapshot has positive coordinates."""
    traj = np.asarray(trajectory, np.float64)
    origin = np.asarray(origin, np.float64).ravel()
    if traj.ndim != 2 or traj.shape[1] != origin.size:
        raise ValueError(f"pca_directions: the trajectory must be (K, {origin.size}) snapshots of these parameters, "
                         f"got shape {traj.shape}")
    if traj.shape[0] < 3:
        raise ValueError(f"pca_directions: {traj.shape[0]} snapshots; a plane needs at least 3")
    m = traj - origin
    m = m - m.mean(0)
    # the principal directions are the right singular vectors; the K x K Gram matrix keeps it cheap for large n
    vals, vecs = np.linalg.eigh(m @ m.T)
    order = np.argsort(vals)[::-1]
    vals, vecs = np.clip(vals[order], 0, None), vecs[:, order]
    dirs = []
    for i in range(2):
        d = m.T @ vecs[:, i]
        d = d / max(np.linalg.norm(d), 1e-300)
        dirs.append(d if (traj[0] - origin) @ d >= 0 else -d)
    explained = vals[:2] / max(vals.sum(), 1e-300)
    return dirs[0], dirs[1], explained


def project(trajectory, origin, d1, d2) -> np.ndarray:
    """(K, 2) coordinates of each snapshot minus ``origin`` in the plane of ``d1``, ``d2`` (least squares, so the
    directions need not be orthonormal)."""
    m = np.asarray(trajectory, np.float64) - np.asarray(origin, np.float64).ravel()
    basis = np.stack([np.asarray(d1, np.float64).ravel(), np.asarray(d2, np.float64).ravel()], 1)
    return np.linalg.lstsq(basis, m.T, rcond=None)[0].T


def path_range(coords, margin: float = 0.25, points: int = 51) -> tuple[np.ndarray, np.ndarray]:
    """Grid coordinates (alphas, betas) that cover a projected path with a ``margin`` share on every side."""
    coords = np.asarray(coords, np.float64)
    out = []
    for k in range(2):
        lo, hi = min(coords[:, k].min(), 0.0), max(coords[:, k].max(), 0.0)
        pad = margin * max(hi - lo, 1e-6)
        out.append(np.linspace(lo - pad, hi + pad, points))
    return out[0], out[1]


# -- losses and trajectories --------------------------------------------------------------------------------------


def batches_loss(loss: Callable, batches) -> Callable:
    """``params -> mean of loss(params, batch)`` over ``batches``, a pytree of arrays stacked along a leading
    axis (nb, B, ...): one ``lax.map``, so a grid costs one compiled program whatever the number of batches."""
    def total(params):
        return jnp.mean(jax.lax.map(lambda b: loss(params, b), batches))

    return total


def load_trajectory(path, n_params: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(steps (K,), params (K, n))`` from a ``trajectory.npz`` written by training with ``--set
    track=trajectory`` (snapshots of ``ravel_pytree(params)[0]``); checked against ``n_params`` when given."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no trajectory at {path}: train the run with --set track=trajectory to record one")
    with np.load(path) as f:
        if "steps" not in f or "params" not in f:
            raise ValueError(f"{path} holds {sorted(f.files)}, not the 'steps' and 'params' of a trajectory")
        steps, params = np.asarray(f["steps"]), np.asarray(f["params"])
    if params.ndim != 2 or steps.shape != (params.shape[0],):
        raise ValueError(f"{path}: 'params' must be (K, n) and 'steps' (K,); got {params.shape} and {steps.shape}")
    if n_params is not None and params.shape[1] != n_params:
        raise ValueError(f"{path}: snapshots of {params.shape[1]} numbers, but the run's model has {n_params}; "
                         "is the trajectory from another run?")
    return steps, params


def optimizer_path(loss: Callable, params, opt, batches, *, every: int = 1, batch_to_update: bool = False):
    """Train with ``opt`` (a funcdl.optim GradientTransformation) over ``batches`` (a pytree stacked along the
    step axis, one batch per step) in one ``lax.scan``, recording ``ravel_pytree(params)`` every ``every`` steps.
    ``loss(params, batch) -> scalar``; ``batch_to_update`` passes the batch to ``opt.update`` (``optim.sam``
    needs it for its second gradient). Returns ``(params, steps (K,), snapshots (K, n) float32, losses (S,))``;
    the first snapshot is the starting point (step 0)."""
    n_steps = jax.tree.leaves(batches)[0].shape[0]
    if every < 1 or n_steps % every:
        raise ValueError(f"optimizer_path: every={every} must divide the {n_steps} steps")
    chunks = jax.tree.map(lambda a: a.reshape(n_steps // every, every, *a.shape[1:]), batches)
    final, snaps, losses = _train(loss, opt, batch_to_update, params, chunks)
    first = ravel_pytree(params)[0].astype(jnp.float32)[None]
    snaps = np.concatenate([np.asarray(first), np.asarray(snaps)])
    return final, np.arange(0, n_steps + 1, every), snaps, np.asarray(losses)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _train(loss, opt, batch_to_update, params, chunks):
    """Compiled once per (loss, optimizer, shapes): a scan over chunks of steps, a snapshot after each chunk."""
    def step(carry, batch):
        p, s = carry
        value, g = jax.value_and_grad(loss)(p, batch)
        u, s = opt.update(g, s, p, batch) if batch_to_update else opt.update(g, s, p)
        return (jax.tree.map(lambda a, b: (a + b).astype(a.dtype), p, u), s), value

    def chunk(carry, batches_k):
        carry, values = jax.lax.scan(step, carry, batches_k)
        return carry, (ravel_pytree(carry[0])[0].astype(jnp.float32), values)

    (p, _), (snaps, values) = jax.lax.scan(chunk, (params, opt.init(params)), chunks)
    return p, snaps, values.reshape(-1)


# -- pictures -----------------------------------------------------------------------------------------------------


def plot_contour(ax, alphas, betas, z, *, path=None, levels: int = 30, log: bool = True, title: str | None = None):
    """Contours of ``z`` (rows are betas) on ``ax``; with ``path`` ((K, 2) coordinates) the path drawn over them,
    its start and end marked. ``log`` spaces the levels logarithmically (losses span decades)."""
    z = np.asarray(z, np.float64)
    finite = z[np.isfinite(z)]
    if log and finite.size and finite.min() > 0:
        lv = np.geomspace(finite.min(), finite.max(), levels) if finite.max() > finite.min() else levels
    else:
        lv = levels
    cs = ax.contour(alphas, betas, z, levels=lv, cmap="viridis", linewidths=0.8)
    ax.figure.colorbar(cs, ax=ax, shrink=0.85, label="loss")
    ax.plot([0], [0], "k*", ms=9)
    if path is not None:
        path = np.asarray(path)
        ax.plot(path[:, 0], path[:, 1], ".-", color="tab:red", ms=3, lw=1)
        ax.plot(path[0, 0], path[0, 1], "o", color="tab:red", mfc="white")
    ax.set_xlabel("direction 1")
    ax.set_ylabel("direction 2")
    if title:
        ax.set_title(title)
    return cs


def plot_surface(ax, alphas, betas, z, *, title: str | None = None, clip: float | None = None):
    """The loss as a 3-D surface on ``ax`` (an ``Axes3D``: ``fig.add_subplot(projection="3d")``); ``clip`` caps
    z (a few huge values at the corners would flatten the rest)."""
    A, B = np.meshgrid(alphas, betas)
    z = np.asarray(z, np.float64)
    if clip is not None:
        z = np.minimum(z, clip)
    ax.plot_surface(A, B, z, cmap="viridis", linewidth=0, antialiased=True, rstride=1, cstride=1)
    ax.set_xlabel("direction 1")
    ax.set_ylabel("direction 2")
    ax.set_zlabel("loss")
    if title:
        ax.set_title(title)
