"""A fast CIFAR-10 recipe in the style of the current speed records (Page's ResNet-9 and Jordan's ``airbench``
line of work): a small residual network behind a patch-whitening layer, trained briefly with label smoothing,
flip and translate augmentation, an EMA of the weights, and flipped copies at test time.

The network (widths (64, 256, 256) by default, 32 x 32 inputs):

    whiten   2x2 convolution, stride 1, no padding, whose 2*12 filters are fixed: the eigenvectors v_i of the
             covariance of the training images' 2x2x3 patches scaled by 1/sqrt(lambda_i + eps), and their
             negatives (the GELU that follows then sees both signs); only its bias trains.   31 x 31 x 24
    3 groups h = GELU(BN(max_pool2(conv3x3(x))));  out = h + GELU(BN(conv3x3(h)))            15, 7, 3 pixels
             (the residual branch as in ResNet-9; ``residual=false`` drops the "h +", airbench's plain groups)
    head     global max pool -> dense (no bias) scaled by 1/9

The whitening filters are computed from the patches of the first training batch (1024 augmented training
images by default: about a million patches for a 12 x 12 covariance) and then held fixed, in ``state`` beside the
batch-norm statistics: ``state["whiten"]["ready"]`` turns 1 after that batch, so the computation runs once (a
``lax.cond``), the filters travel with checkpoints and ``--init-from``, and everything stays a pure function.
(The records compute them from 5000 training images before training; the model builders here see no data.)

Training: cross-entropy with label smoothing 0.2; ``augment=flip+translate=2`` (a default); SGD with Nesterov momentum
0.9 and weight decay on a warm-up + cosine schedule; the weights' EMA is kept by the optimizer (the model is one
player with ``ema``, ``optim.ema_params``). Evaluation averages the logits of each image and its mirror image.
The end-of-run report adds ``test_accuracy_ema`` (the EMA weights, with the flip) to ``summary.json``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

import funcdl as fd
from funcdl import optim
from funcdl.nn.losses import softmax_cross_entropy
from funcdl.training.task import DataInfo, Player

from .layers import bn, bn_init, classification_loss, conv, conv_init, image_shape, need_classes
from .registry import as_task, register

__all__ = ["Config", "KIND", "init", "apply", "loss", "whitening_filters", "extras"]

KIND = "classification"


@dataclasses.dataclass(frozen=True)
class Config:
    image: tuple = (32, 32, 3)
    num_classes: int = 10
    widths: tuple = (64, 256, 256)
    patch: int = 2                  # side of the whitened patches
    eps: float = 5e-4               # added to the patch covariance's eigenvalues
    label_smoothing: float = 0.2
    head_scale: float = 1 / 9
    ema: float | None = 0.99        # decay of the weights' EMA (None: no averaging)
    tta: bool = True                # evaluation averages the logits of x and of x mirrored left-right
    residual: bool = True           # each group adds its second convolution's branch to its input

    def __post_init__(self):
        if not self.widths:
            raise ValueError("cifar_fast: widths needs at least one group")
        if self.patch < 1 or self.patch > min(self.image[:2]):
            raise ValueError(f"cifar_fast: patch={self.patch} must lie in 1..{min(self.image[:2])} (the image side)")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"cifar_fast: label_smoothing={self.label_smoothing} must lie in [0, 1)")
        if self.ema is not None and not 0.0 < self.ema < 1.0:
            raise ValueError(f"cifar_fast: ema={self.ema} must lie in (0, 1), or be none")

    @property
    def whiten_width(self) -> int:
        return 2 * self.patch * self.patch * self.image[-1]


# -- the whitening layer -----------------------------------------------------------------------------------------


def whitening_filters(x, patch: int = 2, eps: float = 5e-4):
    """(patch, patch, C, 2 patch^2 C) filters that whiten the patches of the images x (N, H, W, C): with the
    patches' covariance Sigma = V diag(lambda) V^T, the filters are the columns of V diag(lambda + eps)^-1/2 and
    their negatives. Each filter's response to a patch p is v_i . p / sqrt(lambda_i + eps): over the training
    patches, unit variance and uncorrelated."""
    n, h, w, c = x.shape
    cols = [x[:, i:h - patch + 1 + i, j:w - patch + 1 + j, :] for i in range(patch) for j in range(patch)]
    p = jnp.stack(cols, axis=-2).reshape(-1, patch * patch * c)          # (M, kh*kw*C) in the kernel's HWI order
    p = p - jnp.mean(p, axis=0)
    cov = p.T @ p / p.shape[0]
    lam, v = jnp.linalg.eigh(cov)
    f = v / jnp.sqrt(jnp.maximum(lam, 0.0) + eps)
    f = f.reshape(patch, patch, c, patch * patch * c)
    return jnp.concatenate([f, -f], axis=-1)


def _whiten_weights(state: dict, x, config: Config):
    """The whitening filters: the stored ones once ``ready``, else those of this batch (computed only then)."""
    s = state["whiten"]
    return jax.lax.cond(s["ready"] > 0, lambda: s["w"].astype(x.dtype),
                        lambda: jax.lax.stop_gradient(whitening_filters(x, config.patch, config.eps)))


# -- the network -------------------------------------------------------------------------------------------------


def init(key, config: Config):
    keys = jax.random.split(key, 2 * len(config.widths) + 1)
    c, k = config.image[-1], config.patch
    params = {"whiten_b": jnp.zeros((config.whiten_width,)), "groups": []}
    state = {"whiten": {"w": jnp.zeros((k, k, c, config.whiten_width)), "ready": jnp.zeros(())}, "groups": []}
    cin = config.whiten_width
    for g, width in enumerate(config.widths):
        p, s = {}, {}
        p["conv1"] = conv_init(keys[2 * g], (3, 3), cin, width, bias=False, scheme="he")
        p["conv2"] = conv_init(keys[2 * g + 1], (3, 3), width, width, bias=False, scheme="he")
        p["bn1"], s["bn1"] = bn_init(width)
        p["bn2"], s["bn2"] = bn_init(width)
        params["groups"].append(p)
        state["groups"].append(s)
        cin = width
    bound = 1.0 / np.sqrt(cin)
    params["head"] = {"w": jax.random.uniform(keys[-1], (cin, config.num_classes), minval=-bound, maxval=bound)}
    return {"net": params}, state


def _logits(p, state, x, w_white, config: Config, train: bool):
    h = fd.gelu(fd.conv2d(x, w_white, p["whiten_b"], padding="VALID"))
    new = []
    for gp, gs in zip(p["groups"], state["groups"], strict=True):
        h = fd.max_pool2d(conv(gp["conv1"], h, padding=1), kernel=2)
        h, s1 = bn(gp["bn1"], gs["bn1"], h, train)
        h = fd.gelu(h)
        r, s2 = bn(gp["bn2"], gs["bn2"], conv(gp["conv2"], h, padding=1), train)
        h = h + fd.gelu(r) if config.residual else fd.gelu(r)
        new.append({"bn1": s1, "bn2": s2})
    h = fd.global_max_pool(h)
    return fd.dense(h, p["head"]["w"]) * config.head_scale, new


def apply(params, state, x, config: Config, *, key=None, train: bool = False):
    """Logits (N, classes) and the new state. In evaluation with ``tta``, the mean of the logits of x and of x
    mirrored left-right."""
    p = params["net"]
    x = x if x.ndim == 4 else x[..., None]
    w_white = _whiten_weights(state, x, config)
    logits, groups = _logits(p, state, x, w_white, config, train)
    if not train and config.tta:
        logits = 0.5 * (logits + _logits(p, state, x[:, :, ::-1, :], w_white, config, False)[0])
    if train:
        whiten = {"w": w_white.astype(state["whiten"]["w"].dtype), "ready": jnp.ones_like(state["whiten"]["ready"])}
    else:
        whiten = state["whiten"]
    return logits, {"whiten": whiten, "groups": groups}


def loss(params, state, batch, config: Config, *, key=None, train: bool = False):
    logits, state = apply(params, state, batch["x"], config, key=key, train=train)
    if "y_probs" in batch:              # a mixing augmentation's soft targets
        return classification_loss(logits, batch, state)
    value = softmax_cross_entropy(logits, batch["y"], label_smoothing=config.label_smoothing)
    acc = jnp.mean(jnp.argmax(logits, -1) == batch["y"])
    return value, (state, {"loss": value, "accuracy": acc})


def extras(config: Config) -> dict:
    """The end-of-run report: test accuracy of the EMA weights (with the flip when ``tta``)."""

    def report(params, state, opt_state, data, out_dir):
        if config.ema is None or "test" not in data.splits:
            return {}
        from funcdl.training.evaluate import evaluate

        ema = optim.ema_of(opt_state["net"])
        metrics = evaluate(as_task(config), {"net": ema}, state, data.splits["test"])
        return {f"test_{k}_ema": round(float(v), 6) for k, v in metrics.items()}

    return {"report": report}


def build(info: DataInfo, *, widths=(64, 256, 256), label_smoothing=0.2, ema=0.99, tta=True, patch=2, residual=True):
    """The fast CIFAR-10 network (see the module docstring), any option replaced; ``ema=none`` trains without
    weight averaging."""
    need_classes("cifar_fast", info)
    config = Config(image=image_shape(info), num_classes=info.num_classes, widths=tuple(widths),
                    label_smoothing=float(label_smoothing), ema=None if ema is None else float(ema), tta=bool(tta),
                    patch=int(patch), residual=bool(residual))
    task = as_task(config)
    return task._replace(players=(optim_player(task, config),))


def optim_player(task, config: Config) -> Player:
    """The model as one player whose optimizer keeps the EMA of its weights (``optim.ema_params``)."""
    return Player("net", task.loss, ema=config.ema)


register(
    "cifar_fast", build, data=("cifar10",),
    defaults={"data": "cifar10", "epochs": 10, "batch_size": 1024, "optimizer": "sgd", "lr": 0.2,
              "optimizer_options": {"momentum": 0.9, "nesterov": True}, "weight_decay": 5e-4, "schedule": "cosine",
              "warmup_steps": 50, "augment": "flip+translate=2", "val_fraction": 0.0},
    description="fast CIFAR-10 recipe: patch-whitening layer, conv groups (64, 256, 256), label smoothing, "
                "flip+translate, EMA weights, flip at test time",
    small={"widths": (4, 8)}, small_data=DataInfo("fake-images", (8, 8, 3), num_classes=10),
)
