"""``funcdl landscape RUN [--grid 51] [--range 1] [--examples 1000 | --batches K] [--path] --out DIR``: the loss
surface around a trained run's weights, as contour and surface PNGs and the grid as ``landscape.npz``.

The plane is ``w* + a d1 + b d2`` with d1, d2 random Gaussian directions normalised filter by filter to the
weights (Li et al. 2018; biases and normalisation parameters fixed), a and b on a grid of ``--grid`` points in
``[-R, R]`` (``--range R``, or ``--range LO:HI``). The loss (the run's own, in evaluation mode) is the mean over
``--examples`` training examples (``--batches K``: K batches of the run's batch size; windows for a language
model). With ``--path`` the run's ``trajectory.npz`` (written by ``funcdl train ... --set track=trajectory``)
gives a second plane: the top two principal directions of the trajectory, with the optimizer's path projected on
it (pca_contour.png), and the 1-D loss along the straight line from the first snapshot to the trained weights
(interpolation.png). DIR (default RUN/landscape) is a new folder, written in one piece.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("landscape", help="loss surface around a trained run (filter-normalised random plane; "
                       "with --path the PCA plane of its trajectory): PNGs and the grid as .npz",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="run directory written by `funcdl train`")
    p.add_argument("--grid", type=int, default=51, help="points per axis (default 51: 2601 loss evaluations)")
    p.add_argument("--range", dest="range_", default="1", metavar="R|LO:HI",
                   help="coordinates of the random plane: [-R, R] or [LO, HI] on both axes (default 1)")
    p.add_argument("--examples", type=int, default=1000, help="training examples the loss averages over "
                   "(default 1000; windows for a language model)")
    p.add_argument("--batches", type=int, help="instead of --examples: this many batches of the run's batch size")
    p.add_argument("--split", default="train", help="data split the loss is measured on (default train)")
    p.add_argument("--path", action="store_true", help="also the PCA plane of RUN/trajectory.npz with the "
                   "optimizer's path (train with --set track=trajectory to record it)")
    p.add_argument("--seed", type=int, default=0, help="the random directions and the choice of examples")
    p.add_argument("--chunk", type=int, default=1, help="grid points evaluated at once (more: faster, more memory)")
    p.add_argument("--data-dir", help="folder with the data set's files (default: the one the run used)")
    p.add_argument("--out", help="a new folder for the results (default RUN/landscape)")
    p.set_defaults(func=run)


def parse_range(text: str) -> tuple[float, float]:
    """``"1"`` -> (-1.0, 1.0); ``"-0.5:2"`` -> (-0.5, 2.0)."""
    try:
        if ":" in text:
            lo, hi = (float(t) for t in text.split(":"))
        else:
            hi = float(text)
            lo = -hi
    except ValueError:
        raise ValueError(f"--range expects R (for [-R, R]) or LO:HI, such as 1 or -0.5:1.5; got {text!r}") from None
    if not (lo < hi and abs(lo) < float("inf") and abs(hi) < float("inf")):
        raise ValueError(f"--range must give LO < HI (finite), got {text!r}")
    return lo, hi


def _check_args(args) -> tuple[Path, tuple[float, float]]:
    if not 3 <= args.grid <= 501:
        raise ValueError(f"--grid must lie in 3..501 points per axis, got {args.grid}")
    if args.examples < 1:
        raise ValueError(f"--examples must be >= 1, got {args.examples}")
    if args.batches is not None and args.batches < 1:
        raise ValueError(f"--batches must be >= 1, got {args.batches}")
    if args.chunk < 1:
        raise ValueError(f"--chunk must be >= 1, got {args.chunk}")
    bounds = parse_range(args.range_)
    run_dir = Path(args.run)
    if not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.json); give a folder written by "
                                "`funcdl train`")
    if args.path and not (run_dir / "trajectory.npz").is_file():
        raise FileNotFoundError(f"--path: {run_dir} has no trajectory.npz; train with --set track=trajectory to "
                                "record the optimizer's path")
    out = Path(args.out) if args.out else run_dir / "landscape"
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} already exists and is not an empty folder; name a new folder")
    return out, bounds


def loss_batches(loaded: dict, data, args) -> dict:
    """The fixed batches the loss averages over, stacked (nb, B, ...): random examples of ``args.split`` (random
    windows of a language data set), ``args.examples`` of them or ``args.batches`` batches of the run's size."""
    import jax
    import numpy as np

    from funcdl.data.base import sample_windows

    train_cfg = loaded["config"].get("train", {})
    batch_size = int(train_cfg.get("batch_size") or 100)
    if args.split not in data.splits:
        raise ValueError(f"--split {args.split!r}: the data set has the splits {', '.join(sorted(data.splits))}")
    split = data.splits[args.split]
    total = args.batches * batch_size if args.batches else args.examples
    if data.windowed:
        seq_len = int(train_cfg.get("seq_len") or loaded["info"].input_shape[0])
        nb = -(-total // batch_size)
        keys = jax.random.split(jax.random.PRNGKey(args.seed), nb)
        tokens = jax.numpy.asarray(split["tokens"])
        return jax.vmap(lambda k: sample_windows(tokens, k, batch_size, seq_len))(keys)
    n = len(next(iter(split.values())))
    total = min(total, n)
    batch = min(batch_size, total)
    nb = total // batch                 # whole batches only: every batch weighs the same in the mean
    idx = np.random.default_rng(args.seed).permutation(n)[: nb * batch].reshape(nb, batch)
    return {k: np.asarray(v)[idx] for k, v in split.items()}


def run(args) -> int:
    import jax
    import numpy as np

    from funcdl.explain import landscape as L

    from .sample import load_image_model

    out, (lo, hi) = _check_args(args)
    t0 = time.time()
    loaded = load_image_model(args.run, args.data_dir)
    cfg, data = loaded["config"], loaded["data"]
    task, params, state = loaded["task"], loaded["params"], loaded["state"]
    batches = loss_batches(loaded, data, args)
    loss = L.batches_loss(lambda p, b: task.loss(p, state, b, None, False)[0], batches)
    center = float(jax.jit(loss)(params))

    k1, k2 = jax.random.split(jax.random.PRNGKey(args.seed))
    d1, d2 = L.filter_normalized_direction(k1, params), L.filter_normalized_direction(k2, params)
    coords = np.linspace(lo, hi, args.grid)
    z = L.surface(loss, params, d1, d2, coords, coords, chunk=args.chunk)
    results = {"alphas": coords, "betas": coords, "loss": z, "center_loss": center, "seed": args.seed}
    summary = {"run": str(args.run), "model": cfg.get("model"), "data": cfg.get("data"), "split": args.split,
               "examples": int(np.prod(jax.tree.leaves(batches)[0].shape[:2])), "grid": args.grid,
               "range": [lo, hi], "seed": args.seed, "trained_loss": center,
               "surface_min": float(np.nanmin(z)), "surface_max": float(np.nanmax(z))}
    if args.path:
        results |= _path_plane(loss, params, Path(args.run) / "trajectory.npz", args.grid, args.chunk)
        summary["pca_explained_variance"] = [float(v) for v in results["explained"]]
        summary["snapshots"] = int(len(results["steps"]))
    summary["seconds"] = round(time.time() - t0, 1)
    _write(out, results, summary, f"{cfg.get('model')} on {cfg.get('data')}")
    print(f"landscape of {args.run}: trained loss {center:.4f}; random plane [{lo:g}, {hi:g}]^2, {args.grid}^2 "
          f"points: loss {summary['surface_min']:.4f} .. {summary['surface_max']:.4f}")
    if args.path:
        e = summary["pca_explained_variance"]
        print(f"PCA plane of {summary['snapshots']} snapshots: {100 * e[0]:.1f}% + {100 * e[1]:.1f}% of the "
              "path's variance")
    print(f"wrote {out}/ ({', '.join(sorted(p.name for p in out.iterdir()))}) in {summary['seconds']} s")
    return 0


def _path_plane(loss, params, traj_path: Path, grid: int, chunk: int) -> dict:
    import numpy as np
    from jax.flatten_util import ravel_pytree

    from funcdl.explain import landscape as L

    origin = np.asarray(ravel_pytree(params)[0], np.float64)
    steps, snaps = L.load_trajectory(traj_path, origin.size)
    p1, p2, explained = L.pca_directions(snaps, origin)
    path = L.project(snaps, origin, p1, p2)
    pa, pb = L.path_range(path, points=grid)
    z = L.surface(loss, params, p1, p2, pa, pb, chunk=chunk)
    _, unravel = ravel_pytree(params)
    alphas = np.union1d(np.linspace(-0.25, 1.25, grid), [0.0, 1.0])     # both ends exactly on the line
    line = L.interpolate(loss, unravel(snaps[0]), params, alphas)
    return {"pca_alphas": pa, "pca_betas": pb, "pca_loss": z, "path": path, "steps": steps,
            "explained": explained, "interp_alphas": alphas, "interp_loss": line}


def _write(out: Path, results: dict, summary: dict, name: str) -> None:
    """Everything into a temporary sibling folder, renamed to ``out`` at the end (no half-written results)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from funcdl.explain import landscape as L

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        np.savez(tmp / "landscape.npz", **{k: np.asarray(v) for k, v in results.items()})
        (tmp / "summary.json").write_text(json.dumps(summary, indent=1))
        a, b, z = results["alphas"], results["betas"], results["loss"]
        fig, ax = plt.subplots(figsize=(6, 5))
        L.plot_contour(ax, a, b, z, title=f"{name}: filter-normalised random plane")
        fig.savefig(tmp / "contour.png", dpi=120, bbox_inches="tight")
        plt.close(fig)
        fig = plt.figure(figsize=(7, 5.5))
        ax = fig.add_subplot(projection="3d")
        L.plot_surface(ax, a, b, z, clip=float(np.nanquantile(z, 0.95)), title=f"{name}: loss surface")
        fig.savefig(tmp / "surface.png", dpi=120, bbox_inches="tight")
        plt.close(fig)
        if "path" in results:
            fig, ax = plt.subplots(figsize=(6, 5))
            e = results["explained"]
            L.plot_contour(ax, results["pca_alphas"], results["pca_betas"], results["pca_loss"],
                           path=results["path"], title=f"{name}: PCA plane of the path ({100 * e[0]:.0f}% + "
                           f"{100 * e[1]:.0f}%)")
            fig.savefig(tmp / "pca_contour.png", dpi=120, bbox_inches="tight")
            plt.close(fig)
            fig, ax = plt.subplots(figsize=(6, 3.5))
            ax.plot(results["interp_alphas"], results["interp_loss"])
            ax.axvline(0, color="gray", ls=":")
            ax.axvline(1, color="gray", ls=":")
            ax.set_xlabel("a  (0: first snapshot, 1: trained)")
            ax.set_ylabel("loss")
            ax.set_title(f"{name}: 1-D interpolation")
            fig.savefig(tmp / "interpolation.png", dpi=120, bbox_inches="tight")
            plt.close(fig)
        if out.exists():
            out.rmdir()                 # an empty folder (checked before): the rename takes its place
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
