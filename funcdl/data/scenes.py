"""Multi-view data sets for neural radiance fields: ``synthetic_scene`` (an analytic scene, exact ray casting, no
download) and ``tiny_nerf`` (the public tiny-NeRF file, 106 views of the Lego bulldozer at 100 x 100).

Both are *ray* data sets: every pixel of every view is one example,

    x = (o_x, o_y, o_z, d_x, d_y, d_z)  float32 (N, 6)   the ray's origin and unit direction in world space
    y = (r, g, b)                       float32 (N, 3)   the pixel's colour in [0, 1]

so a training batch is a set of rays drawn from all training views (as NeRF trains). Views are split by camera
pose, never by pixel: a held-out view is a pose the model has not seen. ``extras`` carries what rendering needs:
``height``, ``width``, ``focal`` (pixels), ``near``, ``far``, ``background`` (the colour of empty space),
``poses`` {split: (V, 4, 4) camera-to-world}, ``images`` {split: (V, H, W, 3)} and, for the synthetic scene,
``depths`` {split: (V, H, W)} (distance along the ray to the first surface, 0 where the ray misses) and
``hits`` (a boolean mask of the pixels that see a surface).

Cameras follow NeRF's convention: a camera looks down its -z axis, x to the right, y up; pixel (i, j) (column,
row) has the direction R ((i + 0.5 - W/2) / f, -(j + 0.5 - H/2) / f, -1), normalised, with R the pose's rotation.

The synthetic scene (``SCENE``): three spheres and two boxes (one turned about the vertical axis) around the
origin, z up, lit by one directional light and an ambient term. Materials: ``diffuse`` (Lambert: albedo
(ambient + (1 - ambient) max(0, n . l))), ``checker`` (the same with the albedo alternating between two colours on
a 3-D checkerboard) and ``glossy`` (Lambert plus a Blinn-Phong highlight k (n . h)^p, the one view-dependent
term). No shadows. Pixel colours are exact for the ray through the pixel centre (no anti-aliasing).
"""

from __future__ import annotations

import math

import numpy as np

from .base import Dataset
from .download import fetch

__all__ = ["SCENE", "camera_rays", "sphere_poses", "look_at", "cast", "render_view", "load_synthetic_scene",
           "load_tiny_nerf", "tiny_nerf_dataset", "TINY_NERF_URL"]

# (kind, parameters, material): spheres (centre, radius), boxes (centre, half sizes, turn about z in degrees)
SCENE = (
    ("sphere", {"center": (0.0, 0.0, 0.35), "radius": 0.55}, {"type": "glossy", "albedo": (0.85, 0.2, 0.15),
                                                              "specular": 0.35, "shininess": 24.0}),
    ("sphere", {"center": (0.75, -0.55, -0.15), "radius": 0.3}, {"type": "diffuse", "albedo": (0.2, 0.45, 0.9)}),
    ("sphere", {"center": (-0.7, 0.6, -0.2), "radius": 0.28}, {"type": "diffuse", "albedo": (0.95, 0.85, 0.2)}),
    ("box", {"center": (0.0, 0.0, -0.45), "half": (0.9, 0.9, 0.08), "turn": 0.0},
     {"type": "checker", "albedo": (0.9, 0.9, 0.9), "albedo2": (0.25, 0.55, 0.3), "scale": 1.0}),
    ("box", {"center": (-0.55, -0.55, -0.1), "half": (0.18, 0.25, 0.28), "turn": 30.0},
     {"type": "diffuse", "albedo": (0.6, 0.3, 0.75)}),
)
LIGHT = (0.45, 0.35, 0.82)          # direction towards the light (normalised below)
AMBIENT = 0.25
RADIUS, NEAR, FAR, FOV_DEGREES = 4.0, 2.5, 5.5, 40.0

# the public tiny-NeRF file (106 views, 100 x 100, focal 138.9). Its checksum is not published with it: the
# loader checks the arrays' names and shapes instead (see ``tiny_nerf_dataset``).
TINY_NERF_URL = "http://cseweb.ucsd.edu/~viscomp/projects/LF/papers/ECCV20/nerf/tiny_nerf_data.npz"


# ------------------------------------------------------------------------------------------------ cameras
def look_at(eye, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """The 4 x 4 camera-to-world matrix of a camera at ``eye`` looking at ``target`` (NeRF: it looks down -z)."""
    eye, target, up = (np.asarray(v, np.float64) for v in (eye, target, up))
    back = eye - target
    back /= np.linalg.norm(back)
    right = np.cross(up, back)
    if np.linalg.norm(right) < 1e-9:                    # looking straight down the up axis
        right = np.cross((0.0, 1.0, 0.0), back)
    right /= np.linalg.norm(right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, np.cross(back, right), back, eye
    return pose


def sphere_poses(n: int, *, radius: float = RADIUS, elevation=(10.0, 65.0), seed: int | None = None) -> np.ndarray:
    """(n, 4, 4) cameras on a sphere looking at the origin: elevations in ``elevation`` (degrees) and azimuths on a
    golden-angle spiral (``seed=None``, evenly spread) or drawn at random with ``seed`` (held-out views)."""
    if seed is None:
        azim = np.arange(n) * math.pi * (3.0 - math.sqrt(5.0))
        elev = np.radians(np.linspace(*elevation, n)) if n > 1 else np.radians([np.mean(elevation)])
    else:
        rng = np.random.default_rng(seed)
        azim = rng.uniform(0.0, 2.0 * math.pi, n)
        elev = np.radians(rng.uniform(*elevation, n))
    eyes = radius * np.stack([np.cos(elev) * np.cos(azim), np.cos(elev) * np.sin(azim), np.sin(elev)], -1)
    return np.stack([look_at(e) for e in eyes])


def camera_rays(pose, height: int, width: int, focal: float, xp=np):
    """Origins and unit directions (H, W, 3) each of the rays through the pixel centres of one camera
    (``xp`` = numpy or jax.numpy)."""
    j, i = xp.meshgrid(xp.arange(height, dtype=xp.float32), xp.arange(width, dtype=xp.float32), indexing="ij")
    cam = xp.stack([(i + 0.5 - width / 2) / focal, -(j + 0.5 - height / 2) / focal, -xp.ones_like(i)], -1)
    d = cam @ xp.asarray(pose)[:3, :3].T
    d = d / xp.linalg.norm(d, axis=-1, keepdims=True)
    o = xp.broadcast_to(xp.asarray(pose)[:3, 3], d.shape)
    return o, d


# ------------------------------------------------------------------------------------------- ray casting
def _hit_sphere(o, d, center, radius):
    oc = o - np.asarray(center)
    b = np.sum(d * oc, -1)
    disc = b * b - (np.sum(oc * oc, -1) - radius * radius)
    root = np.sqrt(np.maximum(disc, 0.0))
    t = np.where(-b - root > 1e-6, -b - root, -b + root)
    t = np.where((disc > 0) & (t > 1e-6), t, np.inf)
    n = o + np.where(np.isfinite(t), t, 0.0)[:, None] * d - np.asarray(center)
    return t, n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)


def _turn(degrees):
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _hit_box(o, d, center, half, turn):
    rot = _turn(turn)                                   # box frame -> world
    lo, hi = -np.asarray(half), np.asarray(half)
    ob, db = (o - np.asarray(center)) @ rot, d @ rot
    safe = np.where(np.abs(db) < 1e-12, 1e-12, db)
    t1, t2 = (lo - ob) / safe, (hi - ob) / safe
    tmin, tmax = np.minimum(t1, t2), np.maximum(t1, t2)
    t_in, t_out = tmin.max(-1), tmax.min(-1)
    t = np.where((t_out >= np.maximum(t_in, 0.0)) & (t_in > 1e-6), t_in, np.inf)
    axis = tmin.argmax(-1)
    n_box = np.zeros_like(ob)
    n_box[np.arange(len(ob)), axis] = -np.sign(db[np.arange(len(ob)), axis])
    return t, n_box @ rot.T


def _shade(material, points, normals, d):
    light = np.asarray(LIGHT) / np.linalg.norm(LIGHT)
    albedo = np.broadcast_to(np.asarray(material["albedo"]), points.shape).copy()
    if material["type"] == "checker":
        cell = np.floor(points * material["scale"] * 2.0).astype(np.int64).sum(-1) % 2
        albedo = np.where(cell[:, None] == 1, np.asarray(material["albedo2"]), albedo)
    lambert = np.maximum(np.sum(normals * light, -1), 0.0)
    color = albedo * (AMBIENT + (1.0 - AMBIENT) * lambert)[:, None]
    if material["type"] == "glossy":
        h = light - d
        h /= np.linalg.norm(h, axis=-1, keepdims=True)
        spec = material["specular"] * np.maximum(np.sum(normals * h, -1), 0.0) ** material["shininess"]
        color = color + spec[:, None]
    return np.clip(color, 0.0, 1.0)


def cast(o, d, scene=SCENE, background: float = 0.0):
    """Exact ray casting of (P, 3) rays: colours (P, 3), distances to the first surface (P,) (0 where the ray
    misses) and the hit mask (P,)."""
    o, d = np.asarray(o, np.float64).reshape(-1, 3), np.asarray(d, np.float64).reshape(-1, 3)
    best, normal = np.full(len(o), np.inf), np.zeros_like(o)
    which = np.full(len(o), -1)
    for k, (kind, geo, _) in enumerate(scene):
        if kind == "sphere":
            t, n = _hit_sphere(o, d, geo["center"], geo["radius"])
        elif kind == "box":
            t, n = _hit_box(o, d, geo["center"], geo["half"], geo["turn"])
        else:
            raise ValueError(f"synthetic_scene: unknown shape {kind!r}; use 'sphere' or 'box'")
        closer = t < best
        best, which = np.where(closer, t, best), np.where(closer, k, which)
        normal = np.where(closer[:, None], n, normal)
    color = np.full_like(o, float(background))
    for k, (_, _, material) in enumerate(scene):
        m = which == k
        if m.any():
            color[m] = _shade(material, o[m] + best[m, None] * d[m], normal[m], d[m])
    hit = which >= 0
    return color, np.where(hit, best, 0.0), hit


def render_view(pose, height, width, focal, scene=SCENE, background: float = 0.0):
    """Ground truth of one camera: image (H, W, 3), depth (H, W), hit mask (H, W)."""
    o, d = camera_rays(pose, height, width, focal)
    color, depth, hit = cast(o, d, scene, background)
    return color.reshape(height, width, 3), depth.reshape(height, width), hit.reshape(height, width)


# ------------------------------------------------------------------------------------------------ data sets
def _rays_split(poses, images, height, width, focal) -> dict:
    rays = [np.concatenate(camera_rays(p, height, width, focal), -1).reshape(-1, 6) for p in poses]
    return {"x": np.concatenate(rays).astype(np.float32),
            "y": np.asarray(images, np.float32).reshape(-1, images.shape[-1])[:, :3]}


def load_synthetic_scene(data_dir=None, val_fraction=None, *, size: int = 64, n_train: int = 100, n_val: int = 4,
                         n_test: int = 10, background: float = 0.0, **_) -> Dataset:
    """The analytic scene from ``n_train`` spiral poses (train) and ``n_val`` / ``n_test`` random poses (seeds 1
    and 2) on the same sphere, ``size`` x ``size`` pixels, rendered exactly. ``data_dir`` and ``val_fraction``
    are ignored (nothing is read; the held-out views are fixed poses)."""
    if size < 4 or n_train < 1 or n_test < 1 or n_val < 0:
        raise ValueError(f"synthetic_scene: need size >= 4, n_train >= 1, n_test >= 1, n_val >= 0; got size={size}, "
                         f"n_train={n_train}, n_val={n_val}, n_test={n_test}")
    focal = 0.5 * size / math.tan(math.radians(FOV_DEGREES) / 2)
    poses = {"train": sphere_poses(n_train), "test": sphere_poses(n_test, seed=2)}
    if n_val:
        poses["val"] = sphere_poses(n_val, seed=1)
    images, depths, hits, splits = {}, {}, {}, {}
    for split, ps in poses.items():
        views = [render_view(p, size, size, focal, background=background) for p in ps]
        images[split] = np.stack([v[0] for v in views]).astype(np.float32)
        depths[split] = np.stack([v[1] for v in views]).astype(np.float32)
        hits[split] = np.stack([v[2] for v in views])
        splits[split] = _rays_split(ps, images[split], size, size, focal)
    extras = {"height": size, "width": size, "focal": focal, "near": NEAR, "far": FAR, "background": background,
              "poses": {k: v.astype(np.float32) for k, v in poses.items()}, "images": images, "depths": depths,
              "hits": hits, "rays": True}
    return Dataset("synthetic_scene", splits, "regression", extras=extras)


def tiny_nerf_dataset(path, *, n_train: int = 100, n_val: int = 3) -> Dataset:
    """The ray data set of a tiny-NeRF file (``images`` (N, H, W, 3) floats in [0, 1], ``poses`` (N, 4, 4),
    ``focal`` a scalar): the first ``n_train`` views train, the next ``n_val`` validate, the rest test (the
    tiny-NeRF notebook holds out view 101, which lands in val with the defaults)."""
    with np.load(path) as f:
        missing = {"images", "poses", "focal"} - set(f.files)
        if missing:
            raise ValueError(f"tiny_nerf: {path} lacks the arrays {sorted(missing)}; expected images, poses, focal")
        images, poses, focal = (np.asarray(f[k]) for k in ("images", "poses", "focal"))
    if images.ndim != 4 or images.shape[-1] not in (3, 4) or poses.shape != (len(images), 4, 4):
        raise ValueError(f"tiny_nerf: {path} has images {images.shape} and poses {poses.shape}; expected (N, H, W, 3) "
                         "and (N, 4, 4)")
    if len(images) <= n_train + n_val:
        raise ValueError(f"tiny_nerf: {len(images)} views leave none to test after {n_train} train + {n_val} val")
    height, width, focal = images.shape[1], images.shape[2], float(focal)
    images = images[..., :3].astype(np.float32)
    cut = {"train": slice(0, n_train), "val": slice(n_train, n_train + n_val), "test": slice(n_train + n_val, None)}
    if n_val == 0:
        del cut["val"]
    splits = {k: _rays_split(poses[s], images[s], height, width, focal) for k, s in cut.items()}
    extras = {"height": height, "width": width, "focal": focal, "near": 2.0, "far": 6.0, "background": 0.0,
              "poses": {k: poses[s].astype(np.float32) for k, s in cut.items()},
              "images": {k: images[s] for k, s in cut.items()}, "rays": True}
    return Dataset("tiny_nerf", splits, "regression", extras=extras)


def load_tiny_nerf(data_dir=None, val_fraction=None, **_) -> Dataset:
    """tiny_nerf_data.npz from ``data_dir``, the cache, or its canonical address (see ``TINY_NERF_URL``)."""
    return tiny_nerf_dataset(fetch("tiny_nerf", "tiny_nerf_data.npz", TINY_NERF_URL, data_dir=data_dir))


def _register() -> None:
    from . import DATASETS, register_dataset

    if "synthetic_scene" not in DATASETS:
        register_dataset("synthetic_scene", load_synthetic_scene,
                         "an analytic scene (spheres and boxes, 3 materials) ray-cast from 114 poses, 64x64, as rays "
                         "(NeRF); held-out views by pose", kind="regression")
        register_dataset("tiny_nerf", load_tiny_nerf,
                         "the public tiny-NeRF file (106 views of the Lego bulldozer, 100x100) as rays (NeRF)",
                         kind="regression")


_register()
