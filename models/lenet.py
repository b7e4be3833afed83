"""LeNet-5 (LeCun et al. 1998) with ReLU and max pooling by default.

    conv5x5(6, padding 2) -> act -> pool 2 -> conv5x5(16, valid) -> act -> pool 2 -> dense 120 -> dense 84 -> classes

On 28x28 MNIST the padded first convolution keeps 28x28 (LeNet's 32x32 input): 28 -> 14 -> 10 -> 5.
"""

from __future__ import annotations

import dataclasses

import jax

import funcdl as fd
from funcdl.training.task import DataInfo

from .layers import as_channels_last, classification_loss, conv, conv_init, dense_init, image_shape, need_classes
from .registry import as_task, register

__all__ = ["Config", "KIND", "init", "apply", "loss"]

KIND = "classification"


@dataclasses.dataclass(frozen=True)
class Config:
    image: tuple = (28, 28, 1)
    num_classes: int = 10
    activation: str = "relu"        # LeCun used a scaled tanh; ReLU trains faster
    pool: str = "max"               # "avg" for the 1998 subsampling layers


def init(key, config: Config):
    h, w, c = config.image
    k = jax.random.split(key, 5)
    fh, fw = ((h // 2) - 4) // 2, ((w // 2) - 4) // 2
    params = {
        "conv1": conv_init(k[0], (5, 5), c, 6),
        "conv2": conv_init(k[1], (5, 5), 6, 16),
        "fc1": dense_init(k[2], fh * fw * 16, 120),
        "fc2": dense_init(k[3], 120, 84),
        "out": dense_init(k[4], 84, config.num_classes),
    }
    return params, {}


def apply(params, state, x, config: Config, *, key=None, train: bool = False):
    act = fd.get_activation(config.activation)
    pool = fd.max_pool2d if config.pool == "max" else fd.avg_pool2d
    h = as_channels_last(x, 2)
    h = pool(act(conv(params["conv1"], h, padding=2)), kernel=2)
    h = pool(act(conv(params["conv2"], h, padding="VALID")), kernel=2)
    h = h.reshape(h.shape[0], -1)
    h = act(fd.dense(h, params["fc1"]["w"], params["fc1"]["b"]))
    h = act(fd.dense(h, params["fc2"]["w"], params["fc2"]["b"]))
    return fd.dense(h, params["out"]["w"], params["out"]["b"]), state


def loss(params, state, batch, config: Config, *, key=None, train: bool = False):
    logits, state = apply(params, state, batch["x"], config, key=key, train=train)
    return classification_loss(logits, batch, state)


def build(info: DataInfo, *, activation="relu", pool="max"):
    need_classes("lenet", info)
    return as_task(Config(image=image_shape(info), num_classes=info.num_classes, activation=activation, pool=pool))


register(
    "lenet", build, data=("mnist", "fashion_mnist", "digits"),
    defaults={"data": "mnist", "epochs": 5, "batch_size": 128, "optimizer": "adam", "lr": 1e-3},
    description="LeNet-5: conv5x5(6) pool conv5x5(16) pool, dense 120-84-classes",
    small={}, small_data=DataInfo("fake-images", (12, 12, 1), num_classes=10),
)
