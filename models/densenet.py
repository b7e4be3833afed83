"""DenseNet-BC (Huang et al. 2017), small: dense blocks where every layer sees all earlier feature maps.

A dense layer appends k (the growth rate) new channels to its input:

    new = conv3x3(relu(bn(conv1x1(relu(bn(h))))))      (bottleneck to 4k channels, then k)
    h   = concat_channels(h, new)                      (C -> C + k)

A transition between blocks halves the channels (compression 0.5) and the resolution:
bn -> relu -> conv1x1 -> avg_pool 2x2. The stem is a 3x3 convolution with 2k channels; the head is
bn -> relu -> global average pooling -> dense. ``concat_channels`` is a primitive whose backward splits the
gradient, so the gradient of every earlier map is the sum over all the layers that read it.
"""

from __future__ import annotations

import dataclasses

import jax

import funcdl as fd
from funcdl.nn.spatial import concat_channels
from funcdl.training.task import DataInfo

from .layers import bn, bn_init, classification_loss, conv, conv_init, dense_init, image_shape, need_classes
from .registry import as_task, register

__all__ = ["Config", "KIND", "init", "apply", "loss"]

KIND = "classification"


@dataclasses.dataclass(frozen=True)
class Config:
    image: tuple = (28, 28, 1)
    num_classes: int = 10
    growth: int = 12
    blocks: tuple = (4, 4, 4)
    compression: float = 0.5


def init(key, config: Config):
    k = config.growth
    keys = iter(jax.random.split(key, 4 + 2 * sum(config.blocks) + len(config.blocks)))
    c = 2 * k
    params = {"stem": conv_init(next(keys), (3, 3), config.image[-1], c, bias=False, scheme="he"),
              "blocks": [], "transitions": []}
    state = {"blocks": [], "transitions": []}
    for b, n_layers in enumerate(config.blocks):
        layers_p, layers_s = [], []
        for _ in range(n_layers):
            bn1, s1 = bn_init(c)
            bn2, s2 = bn_init(4 * k)
            layers_p.append({"bn1": bn1, "conv1": conv_init(next(keys), (1, 1), c, 4 * k, bias=False, scheme="he"),
                             "bn2": bn2, "conv2": conv_init(next(keys), (3, 3), 4 * k, k, bias=False, scheme="he")})
            layers_s.append({"bn1": s1, "bn2": s2})
            c += k
        params["blocks"].append(layers_p)
        state["blocks"].append(layers_s)
        if b < len(config.blocks) - 1:
            out = int(c * config.compression)
            tb, ts = bn_init(c)
            params["transitions"].append({"bn": tb, "conv": conv_init(next(keys), (1, 1), c, out, bias=False,
                                                                      scheme="he")})
            state["transitions"].append({"bn": ts})
            c = out
    params["head_bn"], state["head_bn"] = bn_init(c)
    params["head"] = dense_init(next(keys), c, config.num_classes)
    return params, state


def apply(params, state, x, config: Config, *, key=None, train: bool = False):
    h = conv(params["stem"], x if x.ndim == 4 else x[..., None], padding=1)
    new = {"blocks": [], "transitions": []}
    for b, (lps, lss) in enumerate(zip(params["blocks"], state["blocks"], strict=True)):
        block_states = []
        for lp, ls in zip(lps, lss, strict=True):
            t, s1 = bn(lp["bn1"], ls["bn1"], h, train)
            t = conv(lp["conv1"], fd.relu(t), padding="VALID")
            t, s2 = bn(lp["bn2"], ls["bn2"], t, train)
            t = conv(lp["conv2"], fd.relu(t), padding=1)
            h = concat_channels(h, t)
            block_states.append({"bn1": s1, "bn2": s2})
        new["blocks"].append(block_states)
        if b < len(params["transitions"]):
            tp, ts = params["transitions"][b], state["transitions"][b]
            t, s = bn(tp["bn"], ts["bn"], h, train)
            h = fd.avg_pool2d(conv(tp["conv"], fd.relu(t), padding="VALID"), kernel=2)
            new["transitions"].append({"bn": s})
    h, new["head_bn"] = bn(params["head_bn"], state["head_bn"], h, train)
    h = fd.global_avg_pool(fd.relu(h))
    return fd.dense(h, params["head"]["w"], params["head"]["b"]), new


def loss(params, state, batch, config: Config, *, key=None, train: bool = False):
    logits, state = apply(params, state, batch["x"], config, key=key, train=train)
    return classification_loss(logits, batch, state)


def build(info: DataInfo, *, growth=12, blocks=(4, 4, 4)):
    need_classes("densenet", info)
    return as_task(Config(image=image_shape(info), num_classes=info.num_classes, growth=growth,
                          blocks=tuple(blocks)))


register(
    "densenet", build, data=("mnist", "fashion_mnist", "cifar10", "digits"),
    defaults={"data": "mnist", "epochs": 3, "batch_size": 128, "optimizer": "adam", "lr": 2e-3, "schedule": "cosine",
              "growth": 12, "blocks": (4, 4, 4)},
    description="small DenseNet-BC: growth 12, dense blocks (4, 4, 4) with 1x1 bottlenecks and transitions",
    small={"growth": 3, "blocks": (2, 1)}, small_data=DataInfo("fake-images", (8, 8, 1), num_classes=10),
)
