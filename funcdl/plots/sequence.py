"""Vanishing and exploding gradients through time, made visible: ||dL/dh_t|| against t.

The loss reads only the last state, L = <r, h_T> (r a fixed random unit vector, averaged over a batch). BPTT
carries g_t = dL/dh_t backwards, multiplying at every step by the Jacobian dh_t/dh_{t-1}:

    tanh RNN:  g_{t-1} = W_hh (diag(1 - h_t^2) g_t)       -> shrinks (or grows) geometrically with t
    LSTM:      the cell state adds a path dc_{t-1} = f_t * dc_t, gated but not squashed -> decays far slower
    GRU:       g_{t-1} contains z_t * g_t, the same additive "leaky" path

To read g_t we add a zero perturbation e_t to every state, h_t <- cell(x_t, h_{t-1}) + e_t, and take dL/de_t
(the gradient at e = 0 is exactly dL/dh_t). The cells are funcdl's primitives, so the hand-derived rules run.

Gradient clipping rescales the *whole* gradient to a maximum norm: it caps the exploding case (a relu RNN
whose W_hh has spectral radius above one) but leaves the profile over t unchanged, so it cannot undo
vanishing — the right panel shows both. A forget-gate bias of +3 (f ~ 0.95 at init) opens the LSTM's
additive path; with torch's default init (f ~ 0.5) the LSTM starts out forgetting almost as fast as the RNN.
"""

from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..nn import recurrent

__all__ = ["state_gradient_norms", "clip_factor", "plot_vanishing_gradients"]

_GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}


def _init(key, cell, n_in, hidden, w_hh_scale=None, forget_bias=0.0):
    """torch's default init U(+-1/sqrt(H)); ``w_hh_scale`` replaces W_hh by scale x a random orthogonal matrix
    (for RNNs: its spectral radius is then exactly ``scale``)."""
    g = _GATES[cell]
    b = 1 / math.sqrt(hidden)
    k = jax.random.split(key, 4)
    u = lambda kk, shape: jax.random.uniform(kk, shape, minval=-b, maxval=b)
    w_hh = u(k[1], (hidden, g * hidden))
    if w_hh_scale is not None:
        q, _ = jnp.linalg.qr(jax.random.normal(k[1], (hidden, hidden)))
        w_hh = jnp.tile(w_hh_scale * q, (1, g))
    b_ih = u(k[2], (g * hidden,))
    if cell == "lstm" and forget_bias:
        b_ih = b_ih.at[hidden:2 * hidden].add(forget_bias)       # gate order i, f, g, o
    return [u(k[0], (n_in, g * hidden)), w_hh, b_ih, u(k[3], (g * hidden,))]


def state_gradient_norms(cell: str, steps: int = 100, hidden: int = 64, n_in: int = 8, batch: int = 16, seed: int = 0,
                         w_hh_scale: float | None = None, forget_bias: float = 0.0):
    """(norms (T,), weight-gradient norm): mean over the batch of ||dL/dh_t|| for t = 1..T, and ||dL/dW||.

    Computed in float64 (float32 would underflow to exactly zero for the tanh RNN's early steps)."""
    with jax.enable_x64(True):
        return _norms(cell, steps, hidden, n_in, batch, seed, w_hh_scale, forget_bias)


def _norms(cell, steps, hidden, n_in, batch, seed, w_hh_scale, forget_bias):
    key = jax.random.PRNGKey(seed)
    kw, kx, kr = jax.random.split(key, 3)
    w = [a.astype(jnp.float64) for a in _init(kw, cell, n_in, hidden, w_hh_scale, forget_bias)]
    x = jax.random.normal(kx, (steps, batch, n_in), jnp.float64)
    r = jax.random.normal(kr, (hidden,), jnp.float64)
    r = r / jnp.linalg.norm(r)

    def loss(eps, w):
        def step(carry, inp):
            h, c = carry
            x_t, e_t = inp
            if cell == "lstm":
                h, c = recurrent.lstm_cell(x_t, h, c, *w)
            elif cell == "gru":
                h = recurrent.gru_cell(x_t, h, *w)
            else:
                h = recurrent.rnn_cell(x_t, h, *w, nonlinearity=cell[4:])
            return (h + e_t, c), None

        zeros = jnp.zeros((batch, hidden), jnp.float64)
        (h, _), _ = jax.lax.scan(step, (zeros, zeros), (x, eps))
        return jnp.mean(h @ r)

    eps = jnp.zeros((steps, batch, hidden), jnp.float64)
    g_eps, g_w = jax.jit(jax.grad(loss, argnums=(0, 1)))(eps, w)
    norms = jnp.mean(jnp.linalg.norm(g_eps, axis=-1), axis=1)
    w_norm = jnp.sqrt(sum(jnp.sum(g * g) for g in g_w))
    return np.asarray(norms), float(w_norm)


def clip_factor(grad_norm: float, max_norm: float) -> float:
    """Global-norm clipping multiplies every gradient by min(1, max_norm / ||g||)."""
    return min(1.0, max_norm / max(grad_norm, 1e-12))


def plot_vanishing_gradients(path, steps: int = 100, hidden: int = 64, clip: float = 1.0, seed: int = 0) -> dict:
    """Write the two-panel PNG; return the curves (for tests and notebooks)."""
    from matplotlib.figure import Figure

    curves = {name: state_gradient_norms(name, steps, hidden, seed=seed) for name in ("rnn_tanh", "lstm", "gru")}
    curves["lstm_fb"] = state_gradient_norms("lstm", steps, hidden, seed=seed, forget_bias=3.0)
    exploding = state_gradient_norms("rnn_relu", steps, hidden, seed=seed, w_hh_scale=2.0)
    vanishing = curves["rnn_tanh"]
    t = np.arange(1, steps + 1)
    fig = Figure(figsize=(11, 4), dpi=100)
    ax1, ax2 = fig.subplots(1, 2)
    labels = {"rnn_tanh": "tanh RNN", "lstm": "LSTM", "gru": "GRU", "lstm_fb": "LSTM, forget-gate bias +3"}
    for name, (norms, _) in curves.items():
        ax1.semilogy(t, norms, label=labels[name])
    ax1.set_xlabel("time step t (the loss reads h_T only)")
    ax1.set_ylabel("mean ||dL/dh_t||")
    ax1.set_title(f"gradient reaching step t (torch init, H={hidden})")
    ax1.legend()
    for (norms, w_norm), label, style in ((exploding, "relu RNN, W_hh = 2 x orthogonal", "-"),
                                          (vanishing, "tanh RNN (torch init)", "-")):
        line, = ax2.semilogy(t, norms, style, label=f"{label}: raw (||dL/dW|| = {w_norm:.1e})")
        ax2.semilogy(t, norms * clip_factor(w_norm, clip), "--", color=line.get_color(),
                     label=f"{label}: clipped to ||dL/dW|| <= {clip:g}")
    ax2.set_xlabel("time step t")
    ax2.set_title("global-norm clipping caps explosion, not vanishing")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return {"curves": curves, "exploding": exploding, "path": path}
