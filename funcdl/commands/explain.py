"""``funcdl explain RUN --method gradcam|gradcam++|gradient|gradxinput|smoothgrad|ig|guided --index 0:16 --out DIR``:
attribution maps of a trained classifier on test examples.

For each chosen test example it writes DIR/NNNNN_input.png, NNNNN_map.png and NNNNN_overlay.png (the map over
the input), DIR/overview.png (all of them, one row per example) and DIR/maps.npz (``maps`` (N, *positions),
``inputs``, ``index``, ``target``, ``predicted``, ``label``, ``method``). The class explained is ``--target K`` or
each example's predicted class. Grad-CAM reads the last ReLU with a feature map unless ``--layer NAME:I`` names
a primitive call (``relu:1``); a ViT (no such ReLU) gets its last block's first layer norm with the tokens put
back on the patch grid. A model of token ids is explained through its embeddings (``embedding:0``). DIR is a new
folder outside the run directory, written whole or not at all.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

METHOD_NAMES = ("gradcam", "gradcam++", "gradient", "gradxinput", "smoothgrad", "ig", "guided")


def register(sub) -> None:
    p = sub.add_parser("explain", help="attribution maps (Grad-CAM, gradients, IG, ...) of a trained classifier, "
                       "as PNG overlays and an .npz", description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="run directory written by `funcdl train` (a classifier)")
    p.add_argument("--method", default="gradcam", choices=METHOD_NAMES, help="attribution method (default gradcam)")
    p.add_argument("--index", default="0:16", help="test examples: START:STOP, I or I,J,K (default 0:16)")
    p.add_argument("--out", required=True, help="new folder for the PNGs and maps.npz (outside the run)")
    p.add_argument("--target", type=int, help="class to explain (default: each example's predicted class)")
    p.add_argument("--layer", help="primitive call NAME:I for Grad-CAM's features or a gradient method's "
                   "variable (default: see above)")
    p.add_argument("--steps", type=int, default=256, help="ig: path intervals (default 256)")
    p.add_argument("--samples", type=int, default=32, help="smoothgrad: noisy copies (default 32)")
    p.add_argument("--noise", type=float, default=0.15, help="smoothgrad: noise / input range (default 0.15)")
    p.add_argument("--seed", type=int, default=0, help="smoothgrad's noise")
    p.add_argument("--data-dir", help="folder with the data set's files (default: the one the run used)")
    p.set_defaults(func=run)


def load_classifier(path: str, data_dir: str | None = None) -> dict:
    """A classifier run through ``funcdl sample``'s loader (``sample.load_classifier``)."""
    from .sample import load_classifier as load

    return load(path, data_dir, "explain")


def parse_index(text: str, n: int) -> list[int]:
    """``"0:16"`` -> 0..15, ``"7"`` -> [7], ``"3,9"`` -> [3, 9]; every index inside 0..n-1."""
    try:
        if ":" in text:
            start, _, stop = text.partition(":")
            idx = list(range(int(start or 0), int(stop) if stop else n))
        else:
            idx = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"--index expects START:STOP, I or I,J,K (such as 0:16), got {text!r}") from None
    if not idx or min(idx) < 0 or max(idx) >= n:
        raise ValueError(f"--index {text!r} selects nothing or goes past the {n} test examples (0..{n - 1})")
    if len(idx) > 256:
        raise ValueError(f"--index selects {len(idx)} examples; explain at most 256 at a time")
    return idx


def _check_out(out: Path, run: Path) -> None:
    if out.resolve() == run.resolve() or run.resolve() in out.resolve().parents:
        raise ValueError(f"explain: --out {out} is inside the run directory; give a new folder (the run is not "
                         "modified)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"explain: --out {out} exists and is not empty; give a new folder")


def _cam_options(apply, params, x, layer):
    """Grad-CAM's layer and token reshape: the last ReLU with a feature map, else a ViT's last ln_1 on its grid."""
    from funcdl.explain import attribution, cam

    if layer is not None:
        return layer, None
    try:
        return cam.default_cam_layer(apply, params, x), None
    except ValueError:
        pass
    # a pre-norm block calls layer_norm twice on its tokens (N, T, D); the first of the last block's two feeds the
    # attention, through which the [CLS] output depends on every patch token (the second feeds a per-token MLP)
    shapes = attribution._count_calls(apply, params, x, "layer_norm")
    tokens = [i for i, s in enumerate(shapes) if len(s.shape) == 3]
    if len(tokens) >= 2:
        n = shapes[tokens[-2]].shape[1] - 1
        side = math.isqrt(n)
        if side * side == n:
            return f"layer_norm:{tokens[-2]}", cam.tokens_to_map((side, side))
    raise ValueError("explain: this model has no ReLU feature map nor ViT tokens for Grad-CAM; pick a gradient "
                     "method or name --layer")


def compute(method: str, model: dict, x, *, target=None, layer=None, steps=256, samples=32, noise=0.15, seed=0):
    """``(maps, target, predicted)`` of one method on a batch (the command's work, without the files)."""
    import jax
    import jax.numpy as jnp

    from funcdl.explain import attribution, sanity

    apply, params = model["apply"], model["params"]
    x = jnp.asarray(x)
    logits = apply(params, x)
    predicted = jnp.argmax(logits, -1)
    t = attribution.targets_of(logits, target)
    num_classes = logits.shape[-1]
    if target is not None and not 0 <= target < num_classes:
        raise ValueError(f"explain: --target {target} is not a class of this model (0..{num_classes - 1})")
    options = {}
    if method in ("gradcam", "gradcam++"):
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError("explain: Grad-CAM needs images or sequences of numbers; a model of token ids is "
                             "explained with a gradient method (through its embeddings)")
        layer, reshape = _cam_options(apply, params, x, layer)
        if reshape is not None:
            options["to_features"] = reshape
    elif not jnp.issubdtype(x.dtype, jnp.floating):
        layer = layer or "embedding:0"
    if method == "ig":
        options["steps"] = steps
    if method == "smoothgrad":
        options.update(samples=samples, noise=noise)
    maps = sanity.saliency_map(method, apply, params, x, target=t, key=jax.random.PRNGKey(seed), layer=layer,
                               **options)
    return jax.device_get(maps), jax.device_get(t), jax.device_get(predicted)


def run(args) -> int:
    import numpy as np

    if args.method not in METHOD_NAMES:
        raise ValueError(f"explain: unknown method {args.method!r}; choose one of {', '.join(METHOD_NAMES)}")
    if args.steps < 1 or args.samples < 1 or args.noise < 0:
        raise ValueError("explain: --steps and --samples must be >= 1 and --noise >= 0")
    out, run_dir = Path(args.out), Path(args.run)
    _check_out(out, run_dir if run_dir.is_dir() else run_dir.parent)
    model = load_classifier(args.run, args.data_dir)
    test = model["test"]
    idx = parse_index(args.index, len(test["x"]))
    x = np.asarray(test["x"])[idx]
    maps, t, pred = compute(args.method, model, x, target=args.target, layer=args.layer, steps=args.steps,
                            samples=args.samples, noise=args.noise, seed=args.seed)
    labels = np.asarray(test["y"])[idx] if "y" in test else np.full(len(idx), -1)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        np.savez(tmp / "maps.npz", maps=maps, inputs=x, index=np.asarray(idx), target=t, predicted=pred,
                 label=labels, method=np.asarray(args.method))
        _write_pngs(tmp, x, maps, idx, t, pred, args.method)
        if out.exists():
            out.rmdir()                 # empty (checked above)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"explain {model['name']}: {args.method} maps of {len(idx)} test examples "
          f"(accuracy on them {np.mean(pred == labels):.3f}) -> {out}")
    return 0


# -- pictures ---------------------------------------------------------------------------------------------------


def _display(x):
    """An input as an image in [0, 1]: (H, W) grey, (H, W, 3) colour; None for a sequence."""
    import numpy as np

    x = np.asarray(x, np.float64)
    if x.ndim == 3 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim not in (2, 3):
        return None
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def _unit(m):
    import numpy as np

    m = np.asarray(m, np.float64)
    lo, hi = m.min(), m.max()
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def _draw(ax, kind, x, m):
    import numpy as np

    img = _display(x)
    ax.set_xticks([])
    ax.set_yticks([])
    if img is not None and np.ndim(m) == 2:
        if kind in ("input", "overlay"):
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
        if kind in ("map", "overlay"):
            ax.imshow(_unit(m), cmap="jet", alpha=0.5 if kind == "overlay" else 1.0, vmin=0, vmax=1)
        return
    seq = np.asarray(x, np.float64).reshape(len(m) if np.ndim(m) == 1 else -1, -1)
    if kind in ("input", "overlay"):
        ax.plot(seq, color="k", lw=1)
    if kind in ("map", "overlay"):
        lo, hi = (ax.get_ylim() if kind == "overlay" else (0, 1))
        ax.imshow(_unit(np.reshape(m, (1, -1))), cmap="jet", aspect="auto", alpha=0.5 if kind == "overlay" else 1,
                  extent=(-0.5, np.size(m) - 0.5, lo, hi), vmin=0, vmax=1)


def _write_pngs(folder: Path, x, maps, idx, t, pred, method: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = ("input", "map", "overlay")
    for n, i in enumerate(idx):
        for kind in kinds:
            fig, ax = plt.subplots(figsize=(3, 3))
            _draw(ax, kind, x[n], maps[n])
            fig.tight_layout(pad=0.1)
            fig.savefig(folder / f"{i:05d}_{kind}.png", dpi=80)
            plt.close(fig)
    rows = len(idx)
    fig, axes = plt.subplots(rows, 3, figsize=(6, 2 * rows), squeeze=False)
    for n, i in enumerate(idx):
        for c, kind in enumerate(kinds):
            _draw(axes[n, c], kind, x[n], maps[n])
        axes[n, 0].set_ylabel(f"#{i} class {int(t[n])} (pred {int(pred[n])})", fontsize=7)
    for c, kind in enumerate(kinds):
        axes[0, c].set_title(kind if c else f"{method}: input", fontsize=9)
    fig.tight_layout()
    fig.savefig(folder / "overview.png", dpi=80)
    plt.close(fig)
