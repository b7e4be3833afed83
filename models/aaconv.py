"""Attention-augmented convolution (Bello et al. 2019) and the small ResNet built with it (``aa_resnet``).

An attention-augmented convolution with F output channels concatenates a 3x3 convolution with F - dv channels
and dv channels of multi-head self-attention over the whole feature map:

    AA(x) = concat[ conv3x3(x),  MHSA(x) W_O ]                          (channels: F - dv, dv)
    MHSA: q, k, v = x W_qkv (a 1x1 convolution to 2 dk + dv channels), split into Nh heads of dk/Nh, dv/Nh
          O_h = softmax( q_h k_h^T + S^rel_h ) v_h      with q_h scaled by (dk/Nh)^-1/2 first
          S^rel_h[(y,x),(y',x')] = q_h(y,x) . rW[x'-x] + q_h(y,x) . rH[y'-y]     (funcdl.nn.relpos)

Every piece is a funcdl primitive with a hand-derived backward: ``conv2d``, ``dense`` (the 1x1 projections),
``relative_logits_2d`` and ``dot_product_attention`` (the relative logits enter as its additive bias). The
relative embeddings rW (2W-1, dkh) and rH (2H-1, dkh) are shared by the heads, as in the paper, so the block is
built for one feature-map size.

``aa_resnet`` is ``resnet``'s small network (models/resnet.py, its blocks reused) with the second 3x3 convolution
of every basic block in the last ``aa_last`` stages replaced by an AA convolution (the first stage, at full
resolution, keeps plain convolutions: attention over 28 x 28 = 784 positions is what costs on a CPU).

Parameters matched to the plain ``resnet``: dv = round(v F) (a multiple of Nh), and the key depth dk (a multiple
of Nh) is chosen per block so that the AA convolution has as close as possible the parameter count of the 3x3
convolution it replaces (9 cin F): 9 cin (F - dv) + cin (2 dk + dv) + dv^2 + (2W-1 + 2H-1) dk/Nh. The whole
network's count then differs from ``resnet``'s by a few parameters (``param_counts`` gives both).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

import funcdl as fd
from funcdl.nn.relpos import relative_logits_2d, relpos_init
from funcdl.training.task import DataInfo

from . import resnet
from .layers import bn, classification_loss, conv, conv_init, image_shape, need_classes
from .registry import as_task, register

__all__ = ["Config", "KIND", "init", "apply", "loss", "aa_conv_init", "aa_conv", "aa_dims", "param_counts"]

KIND = "classification"


@dataclasses.dataclass(frozen=True)
class Config:
    image: tuple = (28, 28, 1)
    num_classes: int = 10
    widths: tuple = (16, 32, 64)
    blocks: tuple = (1, 1, 1)
    heads: int = 4
    v: float = 0.25             # dv / F: the share of each AA convolution's output channels that attention makes
    aa_last: int = 2            # the last this many stages get attention-augmented blocks

    def __post_init__(self):
        if len(self.widths) != len(self.blocks):
            raise ValueError(f"aa_resnet.Config: widths {self.widths} and blocks {self.blocks} need the same length")
        if not 0 <= self.aa_last <= len(self.widths):
            raise ValueError(f"aa_resnet: aa_last={self.aa_last} must lie in 0..{len(self.widths)} (the stages)")
        if not 0.0 < self.v < 1.0:
            raise ValueError(f"aa_resnet: v={self.v} (the attention share of the channels) must lie in (0, 1)")
        if self.heads < 1:
            raise ValueError(f"aa_resnet: heads must be >= 1, got {self.heads}")

    def plain(self) -> resnet.Config:
        """The ``resnet`` config whose blocks this network reuses."""
        return resnet.Config(image=self.image, num_classes=self.num_classes, widths=self.widths,
                             blocks=self.blocks, block="basic", small_stem=True)


# -- the attention-augmented convolution ----------------------------------------------------------------------------


def aa_dims(cin: int, cout: int, height: int, width: int, heads: int, v: float) -> tuple[int, int]:
    """``(dk, dv)`` for an AA convolution cin -> cout on an H x W map: dv = round(v cout) to a multiple of
    ``heads``; dk the multiple of ``heads`` that brings its parameter count closest to a 3x3 conv's (9 cin cout)."""
    dv = max(heads, heads * round(v * cout / heads))
    if dv >= cout:
        raise ValueError(f"aa_conv: {dv} attention channels leave no convolution channels of {cout}; lower v or heads")
    target = 9 * cin * cout
    rel = (2 * width - 1) + (2 * height - 1)

    def count(dk):
        return 9 * cin * (cout - dv) + cin * (2 * dk + dv) + dv * dv + rel * dk // heads

    dk = min(range(heads, 8 * cout + heads, heads), key=lambda d: abs(count(d) - target))
    return dk, dv


def aa_conv_init(key, cin: int, cout: int, *, height: int, width: int, dk: int, dv: int, heads: int) -> dict:
    """Parameters of an AA convolution: ``conv`` (3x3, cout - dv channels, He init, no bias: batch norm
    follows), ``qkv`` (cin, 2 dk + dv), ``out`` (dv, dv) and the relative embeddings ``rel`` {w, h}."""
    if dk % heads or dv % heads:
        raise ValueError(f"aa_conv: dk={dk} and dv={dv} must be multiples of heads={heads}")
    k = jax.random.split(key, 4)
    return {"conv": conv_init(k[0], (3, 3), cin, cout - dv, bias=False, scheme="he"),
            "qkv": {"w": jax.random.normal(k[1], (cin, 2 * dk + dv)) / math.sqrt(cin)},
            "out": {"w": jax.random.normal(k[2], (dv, dv)) / math.sqrt(dv)},
            "rel": relpos_init(k[3], height, width, dk // heads)}


def aa_conv(p: dict, x, *, heads: int):
    """concat[conv3x3(x), MHSA(x) W_O] for x (N, H, W, cin) at stride 1; (N, H, W, cout)."""
    n, h, w, _ = x.shape
    dv = p["out"]["w"].shape[0]
    dk = (p["qkv"]["w"].shape[1] - dv) // 2
    conv_out = conv(p["conv"], x, padding=1)
    qkv = fd.dense(x, p["qkv"]["w"]).reshape(n, h * w, 2 * dk + dv)

    def heads_of(t):        # (N, HW, c) -> (N, heads, HW, c / heads)
        return t.reshape(n, h * w, heads, -1).transpose(0, 2, 1, 3)

    q, k, v = heads_of(qkv[..., :dk]), heads_of(qkv[..., dk:2 * dk]), heads_of(qkv[..., 2 * dk:])
    q = q * (dk // heads) ** -0.5
    rel = relative_logits_2d(q, p["rel"]["w"], p["rel"]["h"], height=h, width=w)
    o = fd.dot_product_attention(q, k, v, rel, scale=1.0)                  # (N, heads, HW, dv / heads)
    o = o.transpose(0, 2, 1, 3).reshape(n, h, w, dv)
    return jnp.concatenate([conv_out, fd.dense(o, p["out"]["w"])], axis=-1)


# -- the network ---------------------------------------------------------------------------------------------------


def _sizes(config: Config) -> list[tuple[int, int]]:
    """(H, W) of each stage's output: the small stem keeps the size, each later stage halves it (ceil)."""
    h, w = config.image[:2]
    out = []
    for stage in range(len(config.widths)):
        if stage > 0:
            h, w = (h + 1) // 2, (w + 1) // 2
        out.append((h, w))
    return out


def _is_aa(config: Config, stage: int) -> bool:
    return stage >= len(config.widths) - config.aa_last


def init(key, config: Config):
    plain = config.plain()
    params, state = resnet.init(key, plain)
    keys = jax.random.split(jax.random.fold_in(key, 1), sum(config.blocks))
    sizes, j = _sizes(config), 0
    for stage, width in enumerate(config.widths):
        for b in range(config.blocks[stage]):
            if _is_aa(config, stage):
                h, w = sizes[stage]
                dk, dv = aa_dims(width, width, h, w, config.heads, config.v)
                params["stages"][stage][b]["convs"][1] = aa_conv_init(keys[j], width, width, height=h, width=w,
                                                                      dk=dk, dv=dv, heads=config.heads)
            j += 1
    return params, state


def _aa_block_apply(p, s, x, stride, config: Config, train):
    """resnet's basic block with its second 3x3 convolution attention-augmented."""
    h, st0 = bn(p["bns"][0], s["bns"][0], conv(p["convs"][0], x, stride=stride, padding=1), train)
    h, st1 = bn(p["bns"][1], s["bns"][1], aa_conv(p["convs"][1], fd.relu(h), heads=config.heads), train)
    new = {"bns": [st0, st1]}
    short = x
    if "down" in p:
        short, new["down_bn"] = bn(p["down_bn"], s["down_bn"], conv(p["down"], x, stride=stride, padding="VALID"),
                                   train)
    return fd.relu(h + short), new


def apply(params, state, x, config: Config, *, key=None, train: bool = False):
    """Logits (N, classes) and the new batch-norm state for images (N, H, W, C)."""
    plain = config.plain()
    h = x if x.ndim == 4 else x[..., None]
    h, stem_state = bn(params["stem_bn"], state["stem_bn"], conv(params["stem"], h, padding=1), train)
    h = fd.relu(h)
    new_stages = []
    for stage, (bps, bss) in enumerate(zip(params["stages"], state["stages"], strict=True)):
        new = []
        for b, (bp, bs) in enumerate(zip(bps, bss, strict=True)):
            stride = 2 if (b == 0 and stage > 0) else 1
            if _is_aa(config, stage):
                h, s = _aa_block_apply(bp, bs, h, stride, config, train)
            else:
                h, s = resnet._block_apply(bp, bs, h, stride, plain, train)
            new.append(s)
        new_stages.append(new)
    logits = fd.dense(fd.global_avg_pool(h), params["head"]["w"], params["head"]["b"])
    return logits, {"stem_bn": stem_state, "stages": new_stages}


def loss(params, state, batch, config: Config, *, key=None, train: bool = False):
    logits, state = apply(params, state, batch["x"], config, key=key, train=train)
    return classification_loss(logits, batch, state)


def param_counts(config: Config) -> dict:
    """``{"aa_resnet": n, "resnet": n}``: parameter counts of this network and of the plain one it matches."""
    count = lambda tree: int(sum(a.size for a in jax.tree.leaves(tree)))  # noqa: E731
    shapes = jax.eval_shape(lambda k: init(k, config)[0], jax.random.PRNGKey(0))
    plain = jax.eval_shape(lambda k: resnet.init(k, config.plain())[0], jax.random.PRNGKey(0))
    return {"aa_resnet": count(shapes), "resnet": count(plain)}


def build(info: DataInfo, *, widths=(16, 32, 64), blocks=(1, 1, 1), heads=4, v=0.25, aa_last=2):
    """The small ResNet of ``resnet`` with attention-augmented convolutions in its last ``aa_last`` stages
    (``heads`` heads, a share ``v`` of each AA convolution's channels from attention), parameters matched."""
    need_classes("aa_resnet", info)
    shape = image_shape(info)
    if max(shape[:2]) > 64:
        raise ValueError(f"aa_resnet is for small images (<= 64 pixels a side: attention over every position), got "
                         f"{shape[:2]}; resize them (folder:PATH takes image_size)")
    return as_task(Config(image=shape, num_classes=info.num_classes, widths=tuple(widths), blocks=tuple(blocks),
                          heads=int(heads), v=float(v), aa_last=int(aa_last)))


register(
    "aa_resnet", build, data=("mnist", "fashion_mnist", "cifar10", "digits"),
    defaults={"data": "mnist", "epochs": 3, "batch_size": 128, "optimizer": "adam", "lr": 2e-3,
              "schedule": "cosine", "widths": (16, 32, 64), "blocks": (1, 1, 1)},
    # the plain resnet's MNIST recipe, so that the two compare on the same training
    data_defaults={"mnist": {"epochs": 8, "optimizer": "sgd", "lr": 0.05, "optimizer_options": {"momentum": 0.9},
                             "weight_decay": 5e-4, "warmup_steps": 100, "augment": "translate=2"}},
    description="small ResNet with attention-augmented convolutions (Bello et al. 2019) in its last stages, "
                "parameters matched to resnet",
    small={"widths": (4, 8), "blocks": (1, 1), "heads": 2, "aa_last": 1}, small_data=resnet._SMALL_DATA,
)
