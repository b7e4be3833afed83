"""A neural radiance field (Mildenhall et al. 2020): an MLP maps a 3-D point and a view direction to a density
and a colour, and a volume renderer turns the samples along each camera ray into the pixel's colour.

For a batch of rays r(t) = o + t d (``x`` = (o, d), (B, 6); ``y`` the pixel colours (B, 3)):

1. **stratified sampling**: [near, far] cut into S_c equal bins, one uniform draw per bin (training) or the bin
   centres (evaluation): t_1 < ... < t_{S_c}; delta_i = t_{i+1} - t_i (the last gets one bin width).
2. **the coarse MLP** at the points o + t_i d: gamma(x) (``funcdl.nn.render.posenc``, L_x frequencies) through
   ``depth`` ReLU layers of ``width`` units gives sigma = softplus(.) and a feature; the feature and gamma(d)
   (L_d frequencies) through one more layer give rgb = sigmoid(.).
3. **volume rendering** (``volume_render``: alpha compositing, hand-derived backward): C_c = sum_i w_i c_i.
4. **hierarchical sampling**: S_f more depths drawn from the piecewise-constant density of the coarse weights
   (inverse transform sampling of their CDF; the weights are a constant here, as in the paper), merged with the
   coarse ones and sorted; **the fine MLP** (its own weights) renders C_f there.
5. **loss** = MSE(C_c, y) + MSE(C_f, y); the metric ``mse`` is MSE(C_f, y) (PSNR = -10 log10 mse, in dB).

Empty space shows ``background`` (0 black, 1 white): C + (1 - A) background, A the accumulated opacity.
``encoding="none"`` feeds the raw coordinates instead of gamma(.) (the ablation of the paper's Table 2).
The end-of-run report renders every held-out test view whole, writes ``test_psnr`` (mean over views of the
per-image PSNR), ``test_psnr_views`` and ``test_depth_mae`` into summary.json, and ``renders.png`` (ground truth,
render, true depth, rendered depth per test view), ``depth_XX.png`` and ``turntable.gif`` into the run directory.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import funcdl as fd
from funcdl.data.scenes import camera_rays, look_at
from funcdl.nn.render import posenc, posenc_size, volume_render
from funcdl.training.task import DataInfo

from .layers import dense_init
from .registry import as_task, register

__all__ = ["Config", "KIND", "init", "apply", "loss", "render_rays", "render_image", "stratified", "sample_pdf",
           "report"]

KIND = "regression"
ENCODINGS = ("posenc", "none")


@dataclasses.dataclass(frozen=True)
class Config:
    near: float = 2.0
    far: float = 6.0
    n_coarse: int = 32                 # stratified samples per ray
    n_fine: int = 32                   # importance samples per ray (0: the coarse network alone)
    width: int = 64
    depth: int = 4                     # ReLU layers of the trunk
    pos_freqs: int = 8                 # L of gamma(x)
    dir_freqs: int = 4                 # L of gamma(d)
    encoding: str = "posenc"           # or "none": raw x and d
    background: float = 0.0

    def __post_init__(self):
        if self.encoding not in ENCODINGS:
            raise ValueError(f"nerf: encoding must be one of {ENCODINGS}, got {self.encoding!r}")
        if not 0.0 <= self.near < self.far:
            raise ValueError(f"nerf: need 0 <= near < far, got near={self.near}, far={self.far}")
        for name in ("n_coarse", "width", "depth"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"nerf: {name} must be a positive int, got {getattr(self, name)!r}")
        if not isinstance(self.n_fine, int) or self.n_fine < 0:
            raise ValueError(f"nerf: n_fine must be an int >= 0 (0 turns hierarchical sampling off), got "
                             f"{self.n_fine!r}")

    @property
    def in_sizes(self) -> tuple[int, int]:
        if self.encoding == "none":
            return 3, 3
        return posenc_size(3, self.pos_freqs), posenc_size(3, self.dir_freqs)


def _mlp_init(key, config: Config) -> dict:
    n_x, n_d = config.in_sizes
    k = jax.random.split(key, config.depth + 3)
    trunk = [dense_init(k[i], n_x if i == 0 else config.width, config.width) for i in range(config.depth)]
    head = config.width // 2
    return {"trunk": trunk, "sigma": dense_init(k[-3], config.width, 1),
            "feature": dense_init(k[-2], config.width, config.width),
            "color": [dense_init(k[-1], config.width + n_d, head), dense_init(jax.random.fold_in(k[-1], 1), head, 3)]}


def init(key, config: Config):
    """``({"coarse": mlp, "fine": mlp}, {})`` (no fine network when n_fine = 0), torch's Linear initialisation."""
    kc, kf = jax.random.split(key)
    params = {"coarse": _mlp_init(kc, config)}
    if config.n_fine:
        params["fine"] = _mlp_init(kf, config)
    return params, {}


def _field(p, points, dirs, config: Config):
    """(sigma (..., S), rgb (..., S, 3)) of the MLP ``p`` at points (..., S, 3) seen along dirs (..., 3)."""
    if config.encoding == "posenc":
        hx, hd = posenc(points, n_freqs=config.pos_freqs), posenc(dirs, n_freqs=config.dir_freqs)
    else:
        hx, hd = points, dirs
    lead = points.shape[:-1]
    h = hx.reshape(-1, hx.shape[-1])
    for layer in p["trunk"]:
        h = fd.relu(fd.dense(h, layer["w"], layer["b"]))
    sigma = fd.softplus(fd.dense(h, p["sigma"]["w"], p["sigma"]["b"]))[:, 0]
    feat = fd.dense(h, p["feature"]["w"], p["feature"]["b"])
    hd = jnp.broadcast_to(hd[..., None, :], (*lead, hd.shape[-1])).reshape(-1, hd.shape[-1])
    c = fd.relu(fd.dense(jnp.concatenate([feat, hd], -1), p["color"][0]["w"], p["color"][0]["b"]))
    rgb = fd.sigmoid(fd.dense(c, p["color"][1]["w"], p["color"][1]["b"]))
    return sigma.reshape(lead), rgb.reshape(*lead, 3)


def stratified(key, n_rays: int, n: int, near: float, far: float, dtype=jnp.float32):
    """(n_rays, n) depths, one uniform draw in each of n equal bins of [near, far] (bin centres when key is None)."""
    u = jnp.full((n_rays, n), 0.5, dtype) if key is None else jax.random.uniform(key, (n_rays, n), dtype)
    return near + (far - near) * (jnp.arange(n, dtype=dtype) + u) / n


def sample_pdf(key, bins, weights, n: int):
    """n depths per ray drawn from the piecewise-constant density with ``weights`` (R, K) on the K intervals of
    ``bins`` (R, K + 1): inverse transform sampling of its CDF, u stratified (training) or evenly spaced (key
    None). A constant of the parameters (stop_gradient), as in NeRF."""
    weights = jax.lax.stop_gradient(weights) + 1e-5
    pdf = weights / jnp.sum(weights, -1, keepdims=True)
    cdf = jnp.concatenate([jnp.zeros_like(pdf[:, :1]), jnp.cumsum(pdf, axis=-1)], -1)        # (R, K + 1)
    r = bins.shape[0]
    if key is None:
        u = jnp.broadcast_to((jnp.arange(n, dtype=bins.dtype) + 0.5) / n, (r, n))
    else:
        u = (jnp.arange(n, dtype=bins.dtype) + jax.random.uniform(key, (r, n), bins.dtype)) / n
    k = weights.shape[-1]
    idx = jnp.clip(jnp.sum(cdf[:, None, :] <= u[:, :, None], -1) - 1, 0, k - 1)          # the interval of each u
    c0, c1 = jnp.take_along_axis(cdf, idx, -1), jnp.take_along_axis(cdf, idx + 1, -1)
    b0, b1 = jnp.take_along_axis(bins, idx, -1), jnp.take_along_axis(bins, idx + 1, -1)
    frac = jnp.clip((u - c0) / jnp.maximum(c1 - c0, 1e-10), 0.0, 1.0)
    return jax.lax.stop_gradient(b0 + frac * (b1 - b0))


def _deltas(t, last):
    return jnp.concatenate([t[:, 1:] - t[:, :-1], jnp.full_like(t[:, :1], last)], -1)


def _render(p, o, d, t, config: Config):
    dirs = d / jnp.linalg.norm(d, axis=-1, keepdims=True)
    points = o[:, None, :] + t[..., None] * d[:, None, :]
    sigma, rgb = _field(p, points, dirs, config)
    color, depth, acc, w = volume_render(sigma, rgb, _deltas(t, (config.far - config.near) / config.n_coarse), t)
    return color + (1.0 - acc)[:, None] * config.background, depth, acc, w


def render_rays(params, rays, config: Config, key=None) -> dict:
    """Colour, depth and opacity of rays (R, 6) by the coarse and (if any) the fine network: ``{"coarse":
    (C, D, A), "fine": (C, D, A)}``; stratified draws with ``key``, bin centres without."""
    o, d = rays[:, :3], rays[:, 3:6]
    kc, kf = (None, None) if key is None else jax.random.split(key)
    t = stratified(kc, rays.shape[0], config.n_coarse, config.near, config.far, rays.dtype)
    c, dep, acc, w = _render(params["coarse"], o, d, t, config)
    out = {"coarse": (c, dep, acc)}
    if config.n_fine:
        mids = 0.5 * (t[:, 1:] + t[:, :-1])
        bins = jnp.concatenate([jnp.full_like(t[:, :1], config.near), mids, jnp.full_like(t[:, :1], config.far)], -1)
        t_fine = sample_pdf(kf, bins, w, config.n_fine)
        t_all = jnp.sort(jnp.concatenate([t, t_fine], -1), -1)
        out["fine"] = _render(params["fine"], o, d, t_all, config)[:3]
    return out


def apply(params, state, x, config: Config, *, key=None, train: bool = False):
    """``(colours (B, 3), state)`` of the rays ``x`` (B, 6), from the fine network when there is one."""
    out = render_rays(params, x, config, key if train else None)
    return out["fine" if config.n_fine else "coarse"][0], state


def loss(params, state, batch, config: Config, *, key=None, train: bool = False):
    """MSE of the coarse and of the fine colours against ``batch["y"]``; metrics loss and mse (fine)."""
    out = render_rays(params, batch["x"], config, key if train else None)
    y = batch["y"]
    mse_c = fd.mse_loss(out["coarse"][0], y)
    total = mse_c
    mse = mse_c
    if config.n_fine:
        mse = fd.mse_loss(out["fine"][0], y)
        total = total + mse
    # no per-batch PSNR metric: the loop averages metrics over batches, and a mean of per-batch PSNRs (a batch of
    # background rays scores 40 dB) is not the PSNR of the split; -10 log10 of the mean ``mse`` is
    return total, (state, {"loss": total, "mse": jax.lax.stop_gradient(mse)})


# ---------------------------------------------------------------------------------------------- the report
def render_image(params, pose, height: int, width: int, focal: float, config: Config, *, chunk: int = 4096,
                 _fn=None):
    """Colour (H, W, 3), depth (H, W) and opacity (H, W) of one camera, in chunks of rays (evaluation mode)."""
    o, d = camera_rays(np.asarray(pose), height, width, focal)
    rays = np.concatenate([o, d], -1).reshape(-1, 6).astype(np.float32)
    fn = _fn or jax.jit(lambda p, r: render_rays(p, r, config)["fine" if config.n_fine else "coarse"])
    n = len(rays)
    pad = (-n) % chunk if n > chunk else 0
    rays = np.concatenate([rays, np.repeat(rays[-1:], pad, 0)]) if pad else rays
    parts = [fn(params, jnp.asarray(rays[s:s + chunk])) for s in range(0, len(rays), chunk)]
    c, dep, acc = (np.concatenate([np.asarray(p[i]) for p in parts])[:n] for i in range(3))
    return c.reshape(height, width, 3), dep.reshape(height, width), acc.reshape(height, width)


def _psnr(a, b) -> float:
    return float(-10.0 * np.log10(max(float(np.mean((np.asarray(a) - np.asarray(b)) ** 2)), 1e-10)))


def _to_u8(img):
    return (np.clip(np.asarray(img), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def _depth_u8(depth, near, far):
    grey = _to_u8(1.0 - (np.asarray(depth) - near) / (far - near))      # near is bright, empty space black
    return np.repeat(np.where(np.asarray(depth)[..., None] > 0, grey[..., None], 0), 3, -1)


def surface_depth(depth, acc, threshold: float = 0.5):
    """The depth of the surface a pixel sees, D / A (the expected depth given that the ray stops), 0 where the
    opacity A is below ``threshold`` (empty space)."""
    depth, acc = np.asarray(depth), np.asarray(acc)
    return np.where(acc > threshold, depth / np.maximum(acc, 1e-6), 0.0)


def _turntable(params, data, config, fn, frames: int = 24, elevation: float = 30.0):
    ex = data.extras
    radius = float(np.linalg.norm(np.asarray(ex["poses"]["train"][0])[:3, 3]))
    out = []
    for a in np.linspace(0.0, 2.0 * math.pi, frames, endpoint=False):
        e = math.radians(elevation)
        eye = radius * np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)])
        out.append(_to_u8(render_image(params, look_at(eye), ex["height"], ex["width"], ex["focal"], config,
                                       _fn=fn)[0]))
    return out


def _write_pictures(out_dir: Path, views, data, params, config, fn, frames):
    from PIL import Image

    ex = data.extras
    rows = []
    for i, (img, dep, gt, gt_depth) in enumerate(views):
        cells = [_to_u8(gt), _to_u8(img)]
        if gt_depth is not None:
            cells.append(_depth_u8(gt_depth, config.near, config.far))
        cells.append(_depth_u8(dep, config.near, config.far))
        rows.append(np.concatenate(cells, 1))
        Image.fromarray(_depth_u8(dep, config.near, config.far)).save(out_dir / f"depth_{i:02d}.png")
    grid = Image.fromarray(np.concatenate(rows, 0))
    scale = max(1, 128 // ex["width"])
    grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST).save(out_dir / "renders.png")
    frames = [Image.fromarray(f) for f in _turntable(params, data, config, fn, frames)]
    scale = max(1, 128 // ex["width"])
    frames = [f.resize((f.width * scale, f.height * scale), Image.NEAREST) for f in frames]
    frames[0].save(out_dir / "turntable.gif", save_all=True, append_images=frames[1:], duration=80, loop=0)


def report(params, state, opt_state, data, out_dir, *, config: Config, frames: int = 24) -> dict:
    """Render every test view: ``test_psnr`` (mean of per-view PSNR), ``test_psnr_views``, ``test_depth_mae``
    (mean |D / A - true depth| on the pixels that see a surface, synthetic scene), ``render_seconds`` (per view);
    pictures into ``out_dir``."""
    ex = data.extras or {}
    if not ex.get("rays") or "test" not in ex.get("poses", {}):
        return {}
    fn = jax.jit(lambda p, r: render_rays(p, r, config)["fine" if config.n_fine else "coarse"])
    t0 = time.perf_counter()
    views, psnrs, depth_err = [], [], []
    for i, pose in enumerate(ex["poses"]["test"]):
        img, dep, acc = render_image(params, pose, ex["height"], ex["width"], ex["focal"], config, _fn=fn)
        dep = surface_depth(dep, acc)
        gt = ex["images"]["test"][i]
        psnrs.append(_psnr(img, gt))
        gt_depth = ex["depths"]["test"][i] if "depths" in ex else None
        if gt_depth is not None:
            hit = ex["hits"]["test"][i]
            depth_err.append(float(np.abs(dep - gt_depth)[hit].mean()))
        views.append((img, dep, gt, gt_depth))
    seconds = time.perf_counter() - t0
    out = {"test_psnr": round(float(np.mean(psnrs)), 4), "test_psnr_views": [round(p, 3) for p in psnrs],
           "render_seconds": round(seconds / len(psnrs), 4)}
    if depth_err:
        out["test_depth_mae"] = round(float(np.mean(depth_err)), 5)
    if out_dir is not None:
        _write_pictures(Path(out_dir), views, data, params, config, fn, frames)
    print(f"nerf: test PSNR {out['test_psnr']:.2f} dB over {len(psnrs)} held-out views "
          f"({out['render_seconds']:.2f} s per view)")
    return out


# ------------------------------------------------------------------------------------------------- builder
def build(info: DataInfo, *, n_coarse=32, n_fine=32, width=64, depth=4, pos_freqs=8, dir_freqs=4,
          encoding="posenc", background=None):
    """A NeRF for a ray data set (``synthetic_scene``, ``tiny_nerf``): near, far and the background colour come
    from the data set's extras (``background`` overrides the last)."""
    ex = info.extras or {}
    if tuple(info.input_shape) != (6,):
        raise ValueError(f"nerf: needs a ray data set (x = origin and direction, 6 numbers per ray); {info.name!r} "
                         f"has inputs of shape {tuple(info.input_shape)}; use --data synthetic_scene or tiny_nerf")
    bg = ex.get("background", 0.0) if background is None else float(background)
    encoding = "none" if encoding is None else encoding          # `--set encoding=none` arrives as None
    config = Config(near=float(ex.get("near", 2.0)), far=float(ex.get("far", 6.0)), n_coarse=n_coarse,
                    n_fine=n_fine, width=width, depth=depth, pos_freqs=pos_freqs, dir_freqs=dir_freqs,
                    encoding=encoding, background=bg)

    def _report(params, state, opt_state, data, out_dir):
        return report(params, state, opt_state, data, out_dir, config=config)

    return as_task(config, report=_report)


register(
    "nerf", build, data=("synthetic_scene", "tiny_nerf"),
    description="neural radiance field: posenc MLP, stratified + hierarchical sampling, hand-derived volume "
                "rendering; renders held-out views",
    # 3000 steps of 512 rays: held-out test PSNR 28.69 / 28.91 / 28.59 dB (seeds 0 / 1 / 2; encoding=none: 21.75,
    # seed 0) in 8-21 min of training on a shared 2-core CPU (load 7-14); benchmarks/nerf.py
    defaults={"data": "synthetic_scene", "steps": 3000, "batch_size": 512, "optimizer": "adam", "lr": 5e-3,
              "schedule": "cosine", "min_lr": 1e-4, "eval_every": 500, "n_coarse": 16, "n_fine": 32, "depth": 3},
    small={"n_coarse": 4, "n_fine": 3, "width": 8, "depth": 1, "pos_freqs": 2, "dir_freqs": 1},
    small_data=DataInfo("fake-rays", (6,), kind="regression", extras={"horizon": 3, "near": 0.5, "far": 2.0}),
)
