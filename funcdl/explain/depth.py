"""Initialisation, normalisation and depth: signal propagation through a deep MLP at initialisation, measured
and predicted.

The network (``DeepMLP``): an input layer n_in -> width, ``depth - 1`` hidden layers width -> width, a readout.
Hidden layer l (pre-activation u_l, the activation's input z_l, biases zero at initialisation):

    plain:     u_l = h_{l-1} W_l + b_l,   z_l = norm(u_l),   h_l = phi(z_l)
    residual:  the same, then h_l = h_{l-1} + phi(z_l)       (layers 2..depth; layer 1 maps n_in -> width)

with norm = identity, batch norm (batch statistics) or layer norm.

Mean-field theory (Poole et al. 2016, Schoenholz et al. 2017) for wide layers. With q_l = E[z_l^2], g_l = E[(dL/du_l)^2]
(means over units and examples), sigma^2 = fan_in E[W^2] forward and sigma'^2 = fan_out E[W^2] backward
(equal for square layers), and z ~ N(0, q):

    plain forward     q_l     = sigma^2 E[phi(z)^2],         z ~ N(0, q_{l-1})
    plain backward    g_{l-1} = sigma'^2 E[phi'(z)^2] g_l,   z ~ N(0, q_{l-1})
    residual forward  s_{l-1} = s_{l-2} + 2 m_{l-2} E[phi(z)] + E[phi(z)^2],  z ~ N(0, q_{l-1});  q_l = sigma^2 s_{l-1}
                      (s, m: mean square and mean of the residual stream h; the cross term is the product of
                      the means because z_l is nearly independent of any one unit of h_{l-1})
    residual backward r_{l-1} = r_l + sigma'^2 g_l,   g_{l-1} = E[phi'(z)^2] r_{l-1}    (r = E[(dL/dh)^2])

So He (sigma^2 = 2) keeps q and g constant through ReLU (E[relu(z)^2] = q/2, E[relu'^2] = 1/2); Glorot
(sigma^2 = 1) keeps them near constant through tanh while z is small (tanh(z) ~ z) and slowly shrinking beyond;
sigmoid' <= 1/4 so a sigmoid layer multiplies g by at most sigma'^2 / 16 (the gradient's scale by sigma'/4); a
ReLU residual stream with He doubles q and g every layer. The predictions are made one layer at a time from the
measured statistics of the layer below (a per-layer ratio, so errors do not compound over depth); the
expectations are Gauss-Hermite quadratures of the registered activation and of its hand-derived derivative
(``jax.grad`` of the primitive). With a normalisation layer, z has unit variance by construction (checked);
no gradient theory is claimed for those rows.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from ..nn import init as initializers
from ..nn.activations import get_activation
from ..nn.layernorm import layer_norm
from ..nn.linear import dense
from ..nn.losses import softmax_cross_entropy
from ..nn.norm import batch_norm_apply, batch_norm_init
from ..training.task import Task

__all__ = ["DeepMLP", "INITS", "init", "forward", "task", "variance_profile", "theory_ratios", "theory_profile",
           "gauss_moments", "summarize_profile"]

INITS = ("he", "glorot", "lecun", "normal", "orthogonal")
NORMS = ("none", "batch", "layer")


@dataclasses.dataclass(frozen=True)
class DeepMLP:
    width: int = 256
    depth: int = 20                 # hidden layers (the readout not counted)
    n_in: int = 40
    n_out: int = 10
    init: str = "he"                # he (kaiming normal, relu gain), glorot (uniform, as Glorot & Bengio), lecun
                                    # (normal), normal (std init_std), orthogonal
    activation: str = "relu"
    norm: str = "none"              # none, batch, layer (before the activation)
    residual: bool = False
    init_std: float = 0.01          # init="normal": N(0, init_std^2)

    def __post_init__(self):
        if self.init not in INITS:
            raise ValueError(f"DeepMLP init must be one of {', '.join(INITS)}, got {self.init!r}")
        if self.norm not in NORMS:
            raise ValueError(f"DeepMLP norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.depth < 1 or self.width < 1:
            raise ValueError(f"DeepMLP needs depth >= 1 and width >= 1, got depth={self.depth} width={self.width}")
        get_activation(self.activation)

    @property
    def label(self) -> str:
        extra = ("+bn" if self.norm == "batch" else "+ln" if self.norm == "layer" else "") + \
            ("+res" if self.residual else "")
        return f"{self.init}/{self.activation}{extra}"


def _weight(key, shape, config: DeepMLP, dtype):
    if config.init == "he":
        return initializers.kaiming_normal(key, shape, dtype, nonlinearity="relu")
    if config.init == "glorot":
        return initializers.glorot_uniform(key, shape, dtype)
    if config.init == "lecun":
        return initializers.lecun_normal(key, shape, dtype)
    if config.init == "orthogonal":
        return initializers.orthogonal(key, shape, dtype)
    return initializers.normal(key, shape, dtype, std=config.init_std)


def init(key, config: DeepMLP, dtype=jnp.float32):
    """``(params, state)``: ``{"layers": [{"w", "b"[, "norm"]}], "out": {"w", "b"}}`` and the batch-norm running
    statistics (``{"layers": [{...}]}``, empty dicts without batch norm). Biases start at zero."""
    sizes = [config.n_in] + [config.width] * config.depth
    layers, states = [], []
    keys = jax.random.split(key, config.depth + 1)
    for k, (a, b) in zip(keys[:-1], zip(sizes[:-1], sizes[1:], strict=True), strict=True):
        layer = {"w": _weight(k, (a, b), config, dtype), "b": jnp.zeros((b,), dtype)}
        st = {}
        if config.norm == "batch":
            layer["norm"], st = batch_norm_init(b, dtype)
        elif config.norm == "layer":
            layer["norm"] = {"scale": jnp.ones((b,), dtype), "bias": jnp.zeros((b,), dtype)}
        layers.append(layer)
        states.append(st)
    out = {"w": initializers.glorot_normal(keys[-1], (config.width, config.n_out), dtype),
           "b": jnp.zeros((config.n_out,), dtype)}
    return {"layers": layers, "out": out}, {"layers": states}


def forward(params, state, x, config: DeepMLP, *, train: bool = True, probes=None):
    """``(logits, new_state, trace)``; ``trace`` holds per hidden layer ``z`` (the activation's input) and ``h``
    (the layer's output). ``probes`` (a list of ``(du, dh)`` zero arrays, one per layer) are added to u_l and
    h_l, so that the gradient with respect to them is dL/du_l and dL/dh_l."""
    act = get_activation(config.activation)
    h, zs, hs, new_states = x, [], [], []
    for i, (layer, st) in enumerate(zip(params["layers"], state["layers"], strict=True)):
        u = dense(h, layer["w"], layer["b"])
        if probes is not None:
            u = u + probes[i][0]
        if config.norm == "batch":
            z, st = batch_norm_apply(layer["norm"], st, u, train=train)
        elif config.norm == "layer":
            z = layer_norm(u, layer["norm"]["scale"], layer["norm"]["bias"])
        else:
            z = u
        a = act(z)
        h = h + a if (config.residual and i > 0) else a
        if probes is not None:
            h = h + probes[i][1]
        zs.append(z)
        hs.append(h)
        new_states.append(st)
    logits = dense(h, params["out"]["w"], params["out"]["b"])
    return logits, {"layers": new_states}, {"z": zs, "h": hs}


def task(config: DeepMLP) -> Task:
    """The training ``Task`` of a ``DeepMLP`` (softmax cross-entropy on ``batch["y"]``), for
    ``funcdl.training.train``."""
    def loss(params, state, batch, key, train):
        logits, new_state, _ = forward(params, state, batch["x"], config, train=train)
        value = softmax_cross_entropy(logits, batch["y"])
        acc = jnp.mean(jnp.argmax(logits, -1) == batch["y"])
        return value, (new_state, {"loss": value, "accuracy": acc})

    def apply(params, state, x):
        return forward(params, state, x, config, train=False)[0]

    return Task(lambda key: init(key, config), loss, "classification", apply=apply, extras={"config": config})


def variance_profile(config: DeepMLP, key, batch: int = 512, dtype=jnp.float32) -> dict:
    """Statistics per hidden layer at initialisation, on x ~ N(0, 1) with a random N(0, 1) cotangent on the
    last hidden output: ``act_var`` q_l = E[z_l^2], ``grad_var`` g_l = E[(dL/du_l)^2], ``stream_sq`` s_l =
    E[h_l^2], ``stream_mean`` m_l = E[h_l], ``stream_grad`` r_l = E[(dL/dh_l)^2], ``sigma2`` fan_in E[W_l^2],
    ``sigma2_back`` fan_out E[W_l^2] (all NumPy (depth,)). The gradient runs the hand-derived rules."""
    k_init, k_x, k_c = jax.random.split(key, 3)
    params, state = init(k_init, config, dtype)
    x = jax.random.normal(k_x, (batch, config.n_in), dtype)
    cot = jax.random.normal(k_c, (batch, config.width), dtype)
    zeros = [(jnp.zeros((batch, config.width), dtype), jnp.zeros((batch, config.width), dtype))
             for _ in range(config.depth)]

    @jax.jit
    def measure(params, state, x, cot, probes):
        def top(p):
            _, _, trace = forward(params, state, x, config, probes=p)
            return jnp.sum(trace["h"][-1] * cot), trace
        grads, trace = jax.grad(top, has_aux=True)(probes)
        ms = lambda a: jnp.mean(jnp.square(a))  # noqa: E731
        return {"act_var": jnp.stack([ms(z) for z in trace["z"]]),
                "stream_sq": jnp.stack([ms(h) for h in trace["h"]]),
                "stream_mean": jnp.stack([jnp.mean(h) for h in trace["h"]]),
                "grad_var": jnp.stack([ms(du) for du, _ in grads]),
                "stream_grad": jnp.stack([ms(dh) for _, dh in grads])}

    out = {k: np.asarray(v, np.float64) for k, v in measure(params, state, x, cot, zeros).items()}
    w2 = np.array([float(jnp.mean(jnp.square(layer["w"].astype(jnp.float64 if dtype == jnp.float64 else
                                                                    jnp.float32)))) for layer in params["layers"]])
    fan_in = np.array([layer["w"].shape[0] for layer in params["layers"]])
    fan_out = np.array([layer["w"].shape[1] for layer in params["layers"]])
    return out | {"sigma2": fan_in * w2, "sigma2_back": fan_out * w2}


_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(161)      # E[f(z)], z ~ N(0, 1): sum w f(node) / sqrt(2 pi)


def gauss_moments(activation: str, q) -> tuple:
    """``(E[phi(z)], E[phi(z)^2], E[phi'(z)^2])`` for z ~ N(0, q) by 161-point Gauss-Hermite quadrature, phi
    the registered activation and phi' its hand-derived derivative. ReLU is exact (0-kink: sqrt(q / 2 pi),
    q/2, 1/2). ``q`` may be an array."""
    q = np.asarray(q, np.float64)
    if activation == "relu":
        return np.sqrt(q / (2 * math.pi)), q / 2, np.full_like(q, 0.5)
    fn = get_activation(activation)
    z = np.sqrt(q)[..., None] * _NODES
    with jax.enable_x64(True):
        zj = jnp.asarray(z, jnp.float64)
        phi = np.asarray(fn(zj))
        dphi = np.asarray(jax.vmap(jax.grad(lambda t: fn(t[None])[0]))(zj.reshape(-1))).reshape(z.shape)
    w = _WEIGHTS / math.sqrt(2 * math.pi)
    return phi @ w, (phi ** 2) @ w, (dphi ** 2) @ w


def theory_ratios(config: DeepMLP, prof: dict) -> dict:
    """Measured and predicted per-layer ratios ``fwd`` q_l / q_{l-1} and ``bwd`` g_{l-1} / g_l, each as arrays
    ``(measured, predicted)`` over the layers where the prediction is defined (NaN predictions for normalised
    networks). Predictions come from the measured statistics of the neighbouring layer (module docstring)."""
    with np.errstate(divide="ignore", invalid="ignore"):      # statistics that underflowed give NaN ratios
        return _theory_ratios(config, prof)


def _theory_ratios(config, prof):
    q, g, s, m, r = (prof[k] for k in ("act_var", "grad_var", "stream_sq", "stream_mean", "stream_grad"))
    s2, s2b = prof["sigma2"], prof["sigma2_back"]
    L = len(q)
    mean_phi, sq_phi, sq_dphi = gauss_moments(config.activation, q)
    fwd_meas = q[1:] / q[:-1]
    bwd_meas = g[:-1] / g[1:]
    if config.norm != "none":
        nan = np.full(L - 1, np.nan)
        return {"fwd": (fwd_meas, nan), "bwd": (bwd_meas, nan)}
    if not config.residual:
        fwd_pred = s2[1:] * sq_phi[:-1] / q[:-1]                       # l = 2..L from z_{l-1}
        bwd_pred = s2b[1:] * sq_dphi[:-1]                              # g_{l-1}/g_l, l = 2..L
    else:
        fwd_pred = np.full(L - 1, np.nan)
        bwd_pred = np.full(L - 1, np.nan)
        for l in range(2, L):       # 0-based l: q_l from s_{l-2}, m_{l-2}, q_{l-1} (layers 1.. are residual)
            s_prev = s[l - 2] + 2 * m[l - 2] * mean_phi[l - 1] + sq_phi[l - 1]
            fwd_pred[l - 1] = s2[l] * s_prev / q[l - 1]
        for l in range(2, L):       # g_{l-1} = E[phi'^2](q_{l-1}) (r_l + sigma'^2_l g_l), both layers residual
            bwd_pred[l - 1] = sq_dphi[l - 1] * (r[l] + s2b[l] * g[l]) / g[l]
    return {"fwd": (fwd_meas, fwd_pred), "bwd": (bwd_meas, bwd_pred)}


def theory_profile(config: DeepMLP, prof: dict) -> dict:
    """The mean-field recursions run through the whole depth from x ~ N(0, 1) and the N(0, 1) cotangent on the
    last hidden output, with the drawn weights' sigma^2: ``{"act": q_l, "grad": g_l}`` (NumPy (depth,); NaN
    with normalisation). Unlike :func:`theory_ratios` nothing measured enters but the weights' second moments,
    so small per-layer deviations compound over depth."""
    L = len(prof["act_var"])
    if config.norm != "none":
        return {"act": np.full(L, np.nan), "grad": np.full(L, np.nan)}
    s2, s2b = prof["sigma2"], prof["sigma2_back"]
    q = np.zeros(L)
    q[0] = s2[0]                                        # E[x^2] = 1
    mean, sq, _ = gauss_moments(config.activation, q[0])
    s, m = float(sq), float(mean)
    for l in range(1, L):
        q[l] = s2[l] * s
        mean, sq, _ = gauss_moments(config.activation, q[l])
        if config.residual:
            s, m = s + 2 * m * float(mean) + float(sq), m + float(mean)
        else:
            s, m = float(sq), float(mean)
    dsq = gauss_moments(config.activation, q)[2]
    g = np.zeros(L)
    r = 1.0                                             # E[(dL/dh_L)^2] of the N(0, 1) cotangent
    g[-1] = dsq[-1] * r
    for l in range(L - 1, 0, -1):
        r = (r if config.residual else 0.0) + s2b[l] * g[l]
        g[l - 1] = dsq[l - 1] * r
    return {"act": q, "grad": g}


def summarize_profile(config: DeepMLP, profiles, tiny: float = 1e-280) -> dict:
    """One table row from one profile or a list of profiles of independent networks (seeds): per layer, the
    measured and predicted ratios are averaged over the networks, then ``fwd_err`` / ``bwd_err`` is the largest
    |measured / predicted - 1| over the layers whose statistics are above ``tiny``; ``*_ratio`` and
    ``*_theory`` their geometric means over the layers; ``*_spread`` the per-layer standard deviation of one
    network's ratio around the mean over networks (the measurement noise of a single network); q and g at the
    first and last layer (means over networks)."""
    profiles = [profiles] if isinstance(profiles, dict) else list(profiles)
    ts = [theory_ratios(config, p) for p in profiles]
    mean = lambda key: np.mean([p[key] for p in profiles], axis=0)  # noqa: E731
    q, g = mean("act_var"), mean("grad_var")
    row = {"config": config.label, "networks": len(profiles), "q_first": q[0], "q_last": q[-1],
           "g_first": g[0], "g_last": g[-1]}
    for name in ("fwd", "bwd"):
        meas = np.mean([t[name][0] for t in ts], axis=0)
        pred = np.mean([t[name][1] for t in ts], axis=0)
        ok = np.isfinite(meas) & np.isfinite(pred) & (meas > 0)
        ok &= (q[1:] > tiny) & (q[:-1] > tiny) & (g[1:] > tiny) & (g[:-1] > tiny)
        pos = np.isfinite(meas) & (meas > 0)
        row[f"{name}_ratio"] = float(np.exp(np.mean(np.log(meas[pos])))) if pos.any() else float("nan")
        row[f"{name}_theory"] = float(np.exp(np.mean(np.log(pred[ok])))) if ok.any() else float("nan")
        row[f"{name}_err"] = float(np.max(np.abs(meas[ok] / pred[ok] - 1))) if ok.any() else float("nan")
        with np.errstate(divide="ignore", invalid="ignore"):
            single = np.array([t[name][0] / meas - 1 for t in ts])
            spread = np.nanstd(single[:, ok], axis=0) if ok.any() else np.array([np.nan])
        row[f"{name}_spread"] = float(np.mean(spread)) if len(ts) > 1 else float("nan")
    return row
