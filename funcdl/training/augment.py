"""Data augmentation for image batches (N, H, W, C) as pure functions of a PRNG key.

Each function draws its randomness from ``key`` only (one independent draw per example), so the same key
gives the same batch, and everything runs under ``jit`` and ``vmap``. None of them is differentiated (they act
on data), so they are plain functions, not primitives.

* ``random_crop(key, x, padding)``: zero-pad by ``padding`` on each side, cut a random H x W window
  (the CIFAR recipe: padding 4);
* ``hflip(key, x, p)``: mirror left-right with probability p;
* ``translate(key, x, max_shift)``: shift by up to ``max_shift`` pixels in each direction, zero fill (the same
  as a crop of the padded image, written as one); both take ``fill="edge"`` to repeat the border pixels
  instead (the ``crop_edge`` and ``translate_edge`` steps of ``make_augment``);
* ``cutout(key, x, size)``: zero a size x size square at a random centre (DeVries and Taylor 2017), clipped at
  the border;
* ``mixup(key, x, y, num_classes, alpha)``: lam ~ Beta(alpha, alpha); x' = lam x + (1 - lam) x[perm],
  targets lam onehot(y) + (1 - lam) onehot(y[perm]) (Zhang et al. 2018);
* ``cutmix(key, x, y, num_classes, alpha)``: paste a box of another example whose area is (1 - lam) of the
  image; the targets mix by the box's actual area (Yun et al. 2019).

The mixed targets are probabilities; ``mixed_cross_entropy(logits, y_probs)`` is the loss that takes them
(the cross-entropy with soft targets, ``funcdl.nn.losses.softmax_cross_entropy_with_probs``). Every classification
model's loss (``models.layers.classification_loss``) uses it when a batch carries ``y_probs``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

__all__ = ["random_crop", "hflip", "translate", "cutout", "mixup", "cutmix", "mixed_cross_entropy", "make_augment",
           "AUGMENTATIONS"]


def _check_images(name, x):
    if x.ndim != 4:
        raise ValueError(f"{name}: expected a batch of images (N, H, W, C), got shape {x.shape}")


_FILLS = {"zero": "constant", "edge": "edge"}


def random_crop(key, x, padding: int = 4, fill: str = "zero"):
    """``fill="zero"`` pads with zeros (on standardised data: the mean, a grey border); ``fill="edge"`` repeats
    the border pixels (on MNIST: the background)."""
    _check_images("random_crop", x)
    if fill not in _FILLS:
        raise ValueError(f"random_crop: fill must be one of {', '.join(_FILLS)}, got {fill!r}")
    n, h, w, _ = x.shape
    xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)), mode=_FILLS[fill])
    offsets = jax.random.randint(key, (n, 2), 0, 2 * padding + 1)

    def crop(img, off):
        return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, x.shape[-1]))

    return jax.vmap(crop)(xp, offsets)


def hflip(key, x, p: float = 0.5):
    _check_images("hflip", x)
    flip = jax.random.bernoulli(key, p, (x.shape[0], 1, 1, 1))
    return jnp.where(flip, x[:, :, ::-1, :], x)


def translate(key, x, max_shift: int = 2, fill: str = "zero"):
    """A shift of (dy, dx) in [-max_shift, max_shift]^2 per example; vacated pixels are zero (``fill="edge"``:
    copies of the nearest border pixel)."""
    return random_crop(key, x, padding=max_shift, fill=fill)


def cutout(key, x, size: int = 8):
    _check_images("cutout", x)
    n, h, w, _ = x.shape
    ky, kx = jax.random.split(key)
    cy = jax.random.randint(ky, (n, 1, 1, 1), 0, h)
    cx = jax.random.randint(kx, (n, 1, 1, 1), 0, w)
    rows = jnp.arange(h).reshape(1, h, 1, 1)
    cols = jnp.arange(w).reshape(1, 1, w, 1)
    ry, rx = cy - size // 2, cx - size // 2          # top-left corner; the square is size x size
    inside = (rows >= ry) & (rows < ry + size) & (cols >= rx) & (cols < rx + size)
    return jnp.where(inside, jnp.zeros((), x.dtype), x)


def _onehot(y, num_classes, dtype):
    return jax.nn.one_hot(y, num_classes, dtype=dtype)


def mixup(key, x, y, num_classes: int, alpha: float = 0.2):
    """``(x_mixed, y_probs, lam)``: one lam per batch, a random pairing by permutation."""
    k1, k2 = jax.random.split(key)
    lam = jax.random.beta(k1, alpha, alpha).astype(x.dtype)
    perm = jax.random.permutation(k2, x.shape[0])
    xm = lam * x + (1 - lam) * x[perm]
    oh = _onehot(y, num_classes, x.dtype)
    return xm, lam * oh + (1 - lam) * oh[perm], lam


def cutmix(key, x, y, num_classes: int, alpha: float = 1.0):
    """``(x_mixed, y_probs, lam)``: a box of side ratios sqrt(1 - lam) at a uniform centre, clipped at the
    border; lam is then recomputed from the box's actual area."""
    _check_images("cutmix", x)
    k1, k2, k3, k4 = jax.random.split(key, 4)
    n, h, w, _ = x.shape
    lam = jax.random.beta(k1, alpha, alpha)
    perm = jax.random.permutation(k2, n)
    cut = jnp.sqrt(1.0 - lam)
    bh, bw = (cut * h).astype(jnp.int32), (cut * w).astype(jnp.int32)
    cy, cx = jax.random.randint(k3, (), 0, h), jax.random.randint(k4, (), 0, w)
    y0, y1 = jnp.clip(cy - bh // 2, 0, h), jnp.clip(cy + bh // 2, 0, h)
    x0, x1 = jnp.clip(cx - bw // 2, 0, w), jnp.clip(cx + bw // 2, 0, w)
    rows = jnp.arange(h).reshape(1, h, 1, 1)
    cols = jnp.arange(w).reshape(1, 1, w, 1)
    box = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
    xm = jnp.where(box, x[perm], x)
    lam_area = (1.0 - (y1 - y0) * (x1 - x0) / (h * w)).astype(x.dtype)
    oh = _onehot(y, num_classes, x.dtype)
    return xm, lam_area * oh + (1 - lam_area) * oh[perm], lam_area


def mixed_cross_entropy(logits, y_probs):
    """Cross-entropy with mixed (soft) targets: -sum_k q_k log softmax(z)_k, averaged over the batch."""
    from ..nn.losses import softmax_cross_entropy_with_probs

    return softmax_cross_entropy_with_probs(logits, y_probs)


# -- the training loop's augmentation (``funcdl train ... --set augment=crop=4+flip+cutmix=1``) ----------------

# name -> (function, default argument, takes labels)
AUGMENTATIONS = {
    "crop": (random_crop, 4, False),
    "flip": (hflip, 0.5, False),
    "translate": (translate, 2, False),
    "crop_edge": (functools.partial(random_crop, fill="edge"), 4, False),
    "translate_edge": (functools.partial(translate, fill="edge"), 2, False),
    "cutout": (cutout, 8, False),
    "mixup": (mixup, 0.2, True),
    "cutmix": (cutmix, 1.0, True),
}


def make_augment(spec: str, num_classes: int | None):
    """``fn(key, batch) -> batch`` from a spec such as ``"translate=2"`` or ``"crop=4+flip+cutmix=1.0"``: the
    steps run left to right on ``batch["x"]``, each with its own key; a mixing step (mixup, cutmix; at most
    one, and last) adds ``batch["y_probs"]``, which the classification loss then uses (``batch["y"]`` keeps
    the hard labels for accuracy). Each step's number is its argument (crop/translate: pixels, flip: the
    probability, cutout: the square's side, mixup/cutmix: the Beta parameter alpha)."""
    steps = []
    for part in str(spec).split("+"):
        name, eq, arg = part.strip().partition("=")
        if name not in AUGMENTATIONS:
            raise ValueError(f"augment {spec!r}: unknown step {name!r}; steps: {', '.join(AUGMENTATIONS)} "
                             "(joined by '+', e.g. crop=4+flip+cutmix=1.0)")
        fn, default, mixes = AUGMENTATIONS[name]
        try:
            value = type(default)(float(arg)) if eq else default
        except ValueError:
            raise ValueError(f"augment {spec!r}: {name} takes a number, got {arg!r}") from None
        if steps and steps[-1][2]:
            raise ValueError(f"augment {spec!r}: a mixing step ({steps[-1][0]}) must come last")
        if mixes and num_classes is None:
            raise ValueError(f"augment {spec!r}: {name} mixes labels and needs a classification data set")
        steps.append((name, (fn, value), mixes))

    def augment(key, batch):
        x = batch["x"]
        _check_images(f"augment {spec!r}", x)
        batch = dict(batch)
        for i, (_, (fn, value), mixes) in enumerate(steps):
            k = jax.random.fold_in(key, i)
            if mixes:
                x, batch["y_probs"], _ = fn(k, x, batch["y"], num_classes, value)
            else:
                x = fn(k, x, value)
        batch["x"] = x
        return batch

    return augment
