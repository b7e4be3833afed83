"""Denoising diffusion models on images (Ho et al. 2020): the UNet of ``models/unet.py`` trained with the simple
loss of ``funcdl.diffusion``, sampled with DDPM's ancestral sampler or DDIM, and with classifier-free guidance.

* ``ddpm``: unconditional. ``cddpm``: class-conditional; in training each label is replaced by the null class
  with probability ``p_uncond``, so the same network also models p(x) (sampled with the null class) and the
  sampler can guide: eps~ = (1 + w) eps(x, c) - w eps(x, null).
* ``ddpm`` regresses v by default, ``cddpm`` eps (``--set prediction=eps|v``): on MNIST, v-prediction brings the
  deterministic DDIM samples closer to DDPM's ancestral ones (README, diffusion). The noise schedule is
  ``--set noise_schedule=linear|cosine`` (``schedule`` is the learning rate's).
* Pixels live in [-1, 1] (the data's inputs mapped back to [0, 1] with ``extras["normalization"]``, then 2p - 1).
* Training: one player (``unet``) with an EMA of its weights (``ema``) kept in the optimizer state; samples
  are drawn from the EMA copy (``sampling_params``). Metric ``loss``: the simple loss (mean squared error of the
  noise, or of v); in evaluation (no key) t and eps come from a fixed key, so validation losses compare.
* ``sample_images(params, key, n, *, labels=None, sampler="ddim", steps=None, eta=0.0, guidance=None)``: what
  ``funcdl sample RUN --sampler ddim --steps 50 [--class 7 --guidance 3]`` calls.
* The end-of-run report (``report``) reads ``report_samples`` samples of each sampler in ``report_samplers``
  (``ddpm1000``, ``ddim25``, ``ddim50eta0.5`` for DDIM with eta 0.5, ...) with the judge of ``models/judge.py``:
  ``frechet_distance`` and ``classifier_score`` per sampler, next to ``frechet_distance_real`` (training vs test
  images at the same N), the class histogram of the first sampler; for ``cddpm`` also ``guided_class_accuracy``
  (the share of samples drawn for class c with guidance ``report_guidance`` that the judge reads as c). Pictures:
  ``forward.png`` (the noising of a few test images), ``reverse.png`` (x_t and the predicted x_0 along a DDIM run),
  ``samples_<sampler>.png`` and, conditional, ``classes.png`` (one class per row, guided).
"""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from funcdl import diffusion as dif
from funcdl import optim
from funcdl.training.task import DataInfo, Player

from .layers import image_shape
from .registry import as_task, register
from .unet import UNetConfig, check_shape, unet, unet_init

__all__ = ["Config", "KIND", "init", "apply", "loss", "players", "denoise", "sample_images", "report",
           "parse_sampler"]

KIND = "regression"
EVAL_KEY = 1234


@dataclasses.dataclass(frozen=True)
class Config:
    unet: UNetConfig = UNetConfig()
    schedule: str = "linear"
    timesteps: int = 1000
    prediction: str = "eps"
    p_uncond: float = 0.1               # conditional: share of labels replaced by the null class in training
    ema: float | None = 0.999
    mean: float = 0.0                   # the data's normalization: pixel = x * std + mean, in [0, 1]
    std: float = 1.0
    judge: bool = True                  # report: read the samples with models.judge (28x28x1 images)
    report_samples: int = 500
    report_samplers: tuple = ("ddpm1000", "ddim25", "ddim50", "ddim100")
    report_guidance: float = 3.0
    name: str = "ddpm"

    def __post_init__(self):
        if self.schedule not in dif.SCHEDULES:
            raise ValueError(f"{self.name}: schedule must be one of {', '.join(dif.SCHEDULES)}, got "
                             f"{self.schedule!r}")
        if self.prediction not in dif.PREDICTIONS:
            raise ValueError(f"{self.name}: prediction must be one of {', '.join(dif.PREDICTIONS)}, got "
                             f"{self.prediction!r}")
        if not (isinstance(self.timesteps, int) and self.timesteps >= 2):
            raise ValueError(f"{self.name}: timesteps must be an integer >= 2, got {self.timesteps!r}")
        if not 0.0 <= self.p_uncond < 1.0:
            raise ValueError(f"{self.name}: p_uncond must lie in [0, 1), got {self.p_uncond!r}")
        if self.ema is not None and not 0.0 < self.ema < 1.0:
            raise ValueError(f"{self.name}: ema must be a decay in (0, 1) or None, got {self.ema!r}")
        for s in self.report_samplers:
            parse_sampler(s, self.timesteps)
        check_shape(self.unet, self.name)

    @property
    def conditional(self) -> bool:
        return self.unet.num_classes > 0

    @property
    def num_classes(self) -> int:
        return self.unet.num_classes


def parse_sampler(text: str, timesteps: int) -> tuple[str, int, float]:
    """``"ddim50"`` -> ("ddim", 50, 0.0); ``"ddim50eta0.5"`` -> ("ddim", 50, 0.5); ``"ddpm1000"`` -> ("ddpm", T,
    1.0) (ddpm runs all T steps)."""
    m = re.fullmatch(r"(ddpm|ddim)(\d+)(?:eta(\d+(?:\.\d*)?))?", str(text))
    if not m or (m[1] == "ddpm" and m[3] is not None) or (m[3] is not None and float(m[3]) > 1):
        raise ValueError(f"report sampler {text!r}: write ddpm{timesteps}, ddimK (K steps) or ddimKetaE (E in "
                         f"[0, 1]), e.g. ddim50 or ddim50eta0.5")
    kind, steps = m[1], int(m[2])
    if kind == "ddpm" and steps != timesteps:
        raise ValueError(f"report sampler {text!r}: ddpm runs all {timesteps} steps; write ddpm{timesteps}")
    dif.step_sequence(timesteps, steps)           # 1 <= steps <= T
    return kind, steps, (1.0 if kind == "ddpm" else float(m[3] or 0.0))


def schedule_of(config: Config) -> dif.Schedule:
    return dif.make_schedule(config.schedule, config.timesteps)


def init(key, config: Config):
    return {"unet": unet_init(key, config.unet)}, {}


def to_signed(x, config):
    x = x if x.ndim == 4 else x[..., None]
    return 2.0 * (x * config.std + config.mean) - 1.0


def _labels(batch, key, config, train):
    """Labels for the network: the batch's, each dropped to the null class with probability p_uncond in
    training (None when unconditional)."""
    if not config.conditional:
        return None
    y = batch["y"].astype(jnp.int32)
    if train and config.p_uncond > 0:
        drop = jax.random.bernoulli(key, config.p_uncond, y.shape)
        y = jnp.where(drop, config.num_classes, y)
    return y


def loss(params, state, batch, config: Config, *, key=None, train: bool = False):
    key = jax.random.PRNGKey(EVAL_KEY) if key is None else key
    kl, kd = jax.random.split(key)
    labels = _labels(batch, kl, config, train)
    x0 = to_signed(batch["x"], config)
    value, _ = dif.diffusion_loss(lambda xt, t: unet(params["unet"], xt, t, labels, config.unet), schedule_of(config),
                                  x0, kd, prediction=config.prediction)
    return value, (state, {"loss": value})


def apply(params, state, x, config: Config, *, key=None, train: bool = False):
    """The network's output for images ``x`` taken as x_t at the middle step T/2 (unconditional: the null class
    when the model is conditional)."""
    x = to_signed(x, config)
    t = jnp.full((x.shape[0],), config.timesteps // 2, jnp.int32)
    labels = jnp.full((x.shape[0],), config.num_classes, jnp.int32) if config.conditional else None
    return unet(params["unet"], x, t, labels, config.unet), state


def players(config: Config) -> tuple:
    return (Player("unet", lambda p, s, b, k, t: loss(p, s, b, config, key=k, train=t), ema=config.ema),)


# -- sampling ---------------------------------------------------------------------------------------------------


def denoise(config: Config):
    """``fn(params, x_t, t, cond) -> output`` for ``funcdl.diffusion.sample``. ``cond``: ``{}`` unconditional;
    ``{"labels": (N,)}`` one call of N on the labels (the null class: unconditional samples of a conditional
    model); ``{"labels": (N,), "guidance": ()}`` guidance w, eps~ = (1 + w) eps(c) - w eps(null), as one batched
    call of 2N. Cached per config (a frozen dataclass), so sampling compiles once."""
    return _denoise(config)


@dataclasses.dataclass(frozen=True)
class _Denoise:
    config: Config

    def __call__(self, unet_params, x, t, cond):
        c = self.config
        if not c.conditional:
            return unet(unet_params, x, t, None, c.unet)
        if "guidance" not in cond:              # no guidance: one call of N (the null class: unconditional)
            return unet(unet_params, x, t, cond["labels"], c.unet)
        null = jnp.full_like(cond["labels"], c.num_classes)
        both = unet(unet_params, jnp.concatenate([x, x]), jnp.concatenate([t, t]),
                    jnp.concatenate([cond["labels"], null]), c.unet)
        cond_out, uncond_out = jnp.split(both, 2)
        w = cond["guidance"]
        return (1.0 + w) * cond_out - w * uncond_out


def _denoise(config):
    return _Denoise(config)


def sample_images(params, key, n, config: Config, *, labels=None, sampler: str = "ddim", steps=None,
                  eta: float = 0.0, guidance=None, progress=False):
    """n images in [0, 1] from the weights ``params`` (``{"unet": ...}``; the EMA copy when sampling a trained
    run). Conditional models need ``labels`` (n,) in 0..num_classes-1, or ``"null"`` for unconditional samples;
    ``guidance`` w (default 0 with labels, meaningless without)."""
    c = config
    if c.conditional:
        if labels is None:
            raise ValueError(f"{c.name} is class-conditional; pass --class K / labels (an int array of n classes "
                             f"in 0..{c.num_classes - 1}), or labels='null' for unconditional samples")
        if isinstance(labels, str):
            if labels != "null":
                raise ValueError(f"{c.name}: labels must be class ids or 'null', got {labels!r}")
            labels, guidance = jnp.full((n,), c.num_classes, jnp.int32), 0.0
        labels = jnp.asarray(labels, jnp.int32).reshape(-1)
        if labels.shape[0] != n:
            raise ValueError(f"{c.name}: {labels.shape[0]} labels for {n} samples; give one class per sample")
        if not bool(jnp.all((labels >= 0) & (labels <= c.num_classes))):
            raise ValueError(f"{c.name}: labels must lie in 0..{c.num_classes - 1}")
        guidance = 0.0 if guidance is None else float(guidance)
        if guidance < 0:
            raise ValueError(f"{c.name}: guidance must be >= 0 (0 is the plain conditional model), got {guidance}")
        cond = {"labels": labels, "guidance": jnp.float32(guidance)} if guidance > 0 else {"labels": labels}
    else:
        if labels is not None:
            raise ValueError(f"{c.name} is unconditional (it draws every class); drop --class / labels")
        if guidance is not None:
            raise ValueError(f"{c.name} is unconditional: --guidance needs a class-conditional model (cddpm)")
        cond = {}
    x = dif.sample(_denoise(c), params["unet"], schedule_of(c), (n, *c.unet.image), key, cond=cond, steps=steps,
                   sampler=sampler, eta=eta, prediction=c.prediction, progress=progress)
    return jnp.clip((x + 1.0) / 2.0, 0.0, 1.0)


def extras(config: Config) -> dict:
    """``sample_images``, ``sampling_params`` (the EMA copy), ``sample_options`` (what ``funcdl sample``
    passes through) and ``report``."""
    def sampler(params, key, n, *, labels=None, **options):
        return sample_images(params, key, n, config, labels=labels, **options)

    def sampling_params(params, opt_state):
        return params if config.ema is None else {"unet": optim.ema_of(opt_state["unet"])}

    def _report(params, state, opt_state, data, out_dir):
        return report(sampling_params(params, opt_state), data, out_dir, config)

    return {"sample_images": sampler, "sampling_params": sampling_params, "report": _report,
            "sample_options": ("sampler", "steps", "eta", "guidance")}


# -- the report -------------------------------------------------------------------------------------------------


def _draw(params, config, n, key, labels, name, **options):
    t0 = time.perf_counter()
    x = sample_images(params, key, n, config, labels=labels, progress=f"{config.name} {name}", **options)
    x = np.asarray(x)
    return x, time.perf_counter() - t0


def report(params, data, out_dir, config: Config, *, first_key: int = 100) -> dict:
    """The judge's figures for each sampler of ``report_samplers`` (see the module docstring); sampler i starts
    from the noise of ``PRNGKey(first_key + i)``."""
    n, out = config.report_samples, {"report_samples": config.report_samples}
    judged = config.judge and tuple(config.unet.image) == (28, 28, 1)
    fds, scores, seconds, grids = {}, {}, {}, {}
    uncond = "null" if config.conditional else None
    for i, name in enumerate(config.report_samplers):
        kind, steps, eta = parse_sampler(name, config.timesteps)
        options = {"sampler": kind, "steps": steps} | ({"eta": eta} if kind == "ddim" else {})
        x, secs = _draw(params, config, n, jax.random.PRNGKey(first_key + i), uncond, name, **options)
        seconds[name], grids[name] = round(secs, 2), x[:64]
        if judged:
            r = _judge(x, data, config)
            if r is None:
                judged = False
                continue
            fds[name], scores[name] = r["frechet_distance"], r["classifier_score"]
            out["frechet_distance_real"] = r["frechet_distance_real"]
            out["classifier_score_real"] = r["classifier_score_real"]
            if i == 0:
                out["class_histogram"], out["classes_present"] = r["class_histogram"], r["classes_present"]
                out["nearest_neighbour"], out["nearest_neighbour_real"] = (r["nearest_neighbour"],
                                                                         r["nearest_neighbour_real"])
    out["sampling_seconds"] = seconds
    if fds:
        out["frechet_distance"], out["classifier_score"] = fds, scores
    if config.conditional:
        from .judge import sample_classes

        labels = sample_classes(data, n, config.num_classes, "turn")   # its README figures were read so
        steps = min(50, config.timesteps)
        x, secs = _draw(params, config, n, jax.random.PRNGKey(99), labels, f"guided ddim{steps}", steps=steps,
                        guidance=config.report_guidance)
        out["guidance"], out["guided_sampling_seconds"] = config.report_guidance, round(secs, 2)
        if judged:
            r = _judge(x, data, config, labels=labels)
            if r is not None:
                out["guided_class_accuracy"] = r["conditional_accuracy"]
                out["guided_frechet_distance"] = r["frechet_distance"]
    if out_dir is not None:
        _pictures(params, data, Path(out_dir), config, grids)
    _print(out, config)
    return out


def _judge(x, data, config, labels=None):
    from .judge import judge_report

    try:
        return judge_report(x, data, labels=labels)
    except (OSError, ValueError) as err:    # a judge it cannot load or train must not lose the run's summary
        print(f"{config.name}: the judge could not score the samples: {err}", flush=True)
        return None


def _print(out, config):
    for name, value in out.get("frechet_distance", {}).items():
        print(f"{config.name}: {name}: Frechet distance {value:.2f} (real data {out['frechet_distance_real']:.2f}), "
              f"classifier score {out['classifier_score'][name]:.2f} at N={out['report_samples']}")
    if "guided_class_accuracy" in out:
        print(f"{config.name}: guided (w={out['guidance']}) class accuracy {out['guided_class_accuracy']:.4f}")


def _pictures(params, data, out_dir: Path, config: Config, grids: dict):
    from funcdl.plots.generative import image_grid

    for name, x in grids.items():
        image_grid(x, 8, 8, out_dir / f"samples_{name}.png", title=f"{config.name}: {name}")
    sched = schedule_of(config)
    split = data.splits.get("test") or data.splits.get("val") or data.splits["train"]
    x0 = to_signed(jnp.asarray(split["x"][:6]), config)
    ts = np.linspace(0, config.timesteps - 1, 10).round().astype(np.int32)
    noise = jax.random.normal(jax.random.PRNGKey(3), x0.shape)
    rows = [dif.q_sample(sched, x0, jnp.full((x0.shape[0],), t), noise) for t in ts]
    strip = np.stack([np.asarray(r) for r in rows], axis=1).reshape(-1, *x0.shape[1:])
    image_grid(np.clip((strip + 1) / 2, 0, 1), x0.shape[0], len(ts), out_dir / "forward.png",
               title="q(x_t | x_0) at t = 0 ... T (columns)")
    strip, n_steps = _reverse_strip(params, config, sched)
    image_grid(strip, 4, n_steps, out_dir / "reverse.png",
               title=f"DDIM, {n_steps} steps: x_t (rows 1, 3) and the predicted x_0 (rows 2, 4)")
    if config.conditional:
        labels = np.repeat(np.arange(config.num_classes), 10)
        x = sample_images(params, jax.random.PRNGKey(5), len(labels), config, labels=labels,
                          steps=min(50, config.timesteps),
                          guidance=config.report_guidance)
        image_grid(np.asarray(x), config.num_classes, 10, out_dir / "classes.png",
                   title=f"{config.name}: one class per row, DDIM 50, guidance {config.report_guidance}")


def _reverse_strip(params, config, sched):
    """Two samples followed along a 10-step DDIM run: x_t and the predicted x_0 after each step."""
    fn = _denoise(config)
    labels = jnp.array([3, 7]) % max(config.num_classes, 1)
    cond = {"labels": labels, "guidance": jnp.float32(config.report_guidance)} if config.conditional else {}

    @jax.jit
    def step(x, t, s):
        tb = jnp.full((2,), t, jnp.int32)
        x0, eps = dif.split_prediction(sched, x, tb, fn(params["unet"], x, tb, cond), config.prediction)
        return dif.ddim_step(sched, x, t, s, eps, eta=0.0, noise=jnp.zeros_like(x), x0=x0), x0

    x = jax.random.normal(jax.random.PRNGKey(11), (2, *config.unet.image))
    seq = dif.step_sequence(config.timesteps, min(10, config.timesteps))
    xs, x0s = [], []
    for t, s in zip(seq, [*seq[1:], -1], strict=True):
        x, x0 = step(x, t, s)
        xs.append(np.asarray(x))
        x0s.append(np.asarray(x0))
    strip = np.concatenate([np.stack([a[i] for a in rows]) for i in range(2) for rows in (xs, x0s)])
    return np.clip((strip + 1) / 2, 0, 1), len(seq)


# -- building and registering -----------------------------------------------------------------------------------


def config_from(info: DataInfo, name: str, *, conditional: bool, channels, blocks, attention, heads, groups,
                **options) -> Config:
    shape = image_shape(info)
    stats = (info.extras or {}).get("normalization") or {"mean": 0.0, "std": 1.0}
    classes = 0
    if conditional:
        if not info.num_classes:
            raise ValueError(f"{name}: a class-conditional model needs a classification data set; {info.name!r} "
                             "has no classes")
        classes = int(info.num_classes)
    as_tuple = lambda v: tuple(v) if isinstance(v, tuple | list) else (v,)     # noqa: E731  (`--set attention=2`)
    net = UNetConfig(image=tuple(shape), channels=as_tuple(channels), blocks=blocks, attention=as_tuple(attention),
                     heads=heads, groups=groups, num_classes=classes)
    samplers = options.pop("report_samplers")
    samplers = tuple(samplers.split(",")) if isinstance(samplers, str) else tuple(samplers)
    return Config(unet=net, mean=float(stats["mean"]), std=float(stats["std"]), name=name,
                  report_samplers=samplers, **options)


def _build(name, conditional, prediction_default):
    def build(info: DataInfo, *, channels=(16, 32, 64), blocks=1, attention=(2,), heads=4, groups=8,
              noise_schedule="linear", timesteps=1000, prediction=prediction_default, p_uncond=0.2, ema=0.999,
              judge=True, report_samples=500, report_samplers=("ddpm1000", "ddim25", "ddim50", "ddim100"),
              report_guidance=3.0):
        config = config_from(info, name, conditional=conditional, channels=channels, blocks=blocks,
                             attention=attention, heads=heads, groups=groups, schedule=noise_schedule,
                             timesteps=timesteps, prediction=prediction, p_uncond=p_uncond, ema=ema, judge=judge,
                             report_samples=report_samples, report_samplers=report_samplers,
                             report_guidance=report_guidance)
        return as_task(config)._replace(players=players(config))
    return build


_SMALL = {"channels": (8, 8), "attention": (1,), "heads": 2, "groups": 4, "timesteps": 8, "judge": False,
          "report_samples": 4, "report_samplers": ("ddpm8", "ddim2")}
_SMALL_DATA = DataInfo("fake-images", (8, 8, 1), num_classes=10, extras={"normalization": {"mean": 0.5, "std": 0.5}})
_DEFAULTS = {"data": "mnist", "steps": 5000, "batch_size": 64, "optimizer": "adam", "lr": 1e-3, "warmup_steps": 200,
             "schedule": "cosine", "min_lr": 1e-5, "eval_every": 1000}

register("ddpm", _build("ddpm", False, "v"), data=("mnist", "fashion_mnist"), defaults=_DEFAULTS,
         description="denoising diffusion (DDPM): UNet with group norm, FiLM timestep embedding and 7x7 "
                     "self-attention; DDPM / DDIM samplers; EMA weights",
         small=_SMALL, small_data=_SMALL_DATA)
register("cddpm", _build("cddpm", True, "eps"), data=("mnist", "fashion_mnist"), defaults=_DEFAULTS,
         description="class-conditional DDPM with classifier-free guidance (null class with probability p_uncond)",
         small=_SMALL, small_data=_SMALL_DATA)
