"""Recurrent cells: one time step of a vanilla RNN, an LSTM and a GRU, each with its backward worked out.

Layout (JAX, batch-first; torch stores every weight transposed): x (B, I), h (B, H), c (B, H),
``w_ih`` (I, G H), ``w_hh`` (H, G H), ``b_ih``, ``b_hh`` (G H,) with G gates stacked along the last axis in
torch's order. Biases are optional (``None``). Leading batch dimensions may be any shape (or none).

The whole-sequence versions, with backpropagation through time written out as a reverse scan, are in
``funcdl.nn.bptt``; they reuse the per-step backward formulas defined here (``*_step_bwd``), so the derivation
lives in one place.

rnn_cell (G = 1; torch ``nn.RNNCell``)
    a  = x W_ih + b_ih + h W_hh + b_hh,      h' = phi(a),  phi = tanh or relu
    da = dh' * phi'(a),   phi' = 1 - h'^2 (tanh) or 1[h' > 0] (relu): both read off the output h'
    dx = da W_ih^T, dh = da W_hh^T, dW_ih = x^T da, dW_hh = h^T da, db_ih = db_hh = sum_batch da

lstm_cell (G = 4, gate order i, f, g, o; torch ``nn.LSTMCell``/``nn.LSTM`` with optional ``proj_size``)
    z = x W_ih + b_ih + h W_hh + b_hh = [z_i, z_f, z_g, z_o]
    i = sigma(z_i), f = sigma(z_f), g = tanh(z_g), o = sigma(z_o)
    c' = f * c + i * g,    r = o * tanh(c'),    h' = r W_hr  (projection (H, P)) or h' = r
    Backward, given dh' and dc' (the cell state is an output too, so it has its own cotangent):
    dr  = dh' W_hr^T (or dh'),            dW_hr = r^T dh'
    do  = dr * tanh(c')
    dc~ = dc' + dr * o * (1 - tanh(c')^2)       (total gradient reaching c')
    di  = dc~ * g,  dg = dc~ * i,  df = dc~ * c,   dc = dc~ * f
    dz  = [di i(1-i), df f(1-f), dg (1-g^2), do o(1-o)]     (sigma' = sigma(1-sigma), tanh' = 1 - tanh^2)
    dx = dz W_ih^T, dh = dz W_hh^T, dW_ih = x^T dz, dW_hh = h^T dz, db_ih = db_hh = sum_batch dz
    With a projection, h has P entries and W_hh is (P, 4H).

gru_cell (G = 3, gate order r, z, n; torch ``nn.GRUCell`` — the reset gate multiplies W_hn h + b_hn)
    a = x W_ih + b_ih = [a_r, a_z, a_n],   u = h W_hh + b_hh = [u_r, u_z, u_n]
    r = sigma(a_r + u_r),  z = sigma(a_z + u_z),  n = tanh(a_n + r * u_n),  h' = (1 - z) * n + z * h
    Backward, given dh':
    dn = dh' (1 - z),    dz = dh' (h - n),    dh (direct) = dh' z
    da_n = dn (1 - n^2),   du_n = da_n * r,   dr = da_n * u_n
    da_r = du_r = dr r (1 - r),   da_z = du_z = dz z (1 - z)
    da = [da_r, da_z, da_n] -> dx = da W_ih^T, dW_ih = x^T da, db_ih = sum da
    du = [da_r, da_z, du_n] -> dh += du W_hh^T, dW_hh = h^T du, db_hh = sum du
    (the x- and h- paths differ only in the n block: that is where r sits between u_n and the tanh)

Residuals: the inputs (x, h, c and the weights are alive anyway) and the gate activations; pre-activations
are never kept because every derivative above reads off an activation (sigma' from sigma, tanh' from tanh).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..core.examples import Example, keys, normal
from ..core.primitive import primitive
from ._space import arr, integer, pick

__all__ = ["rnn_cell", "lstm_cell", "gru_cell", "NONLINEARITIES", "GATES", "check_recurrent"]

NONLINEARITIES = ("tanh", "relu")
GATES = {"rnn": 1, "lstm": 4, "gru": 3}


# ------------------------------------------------------------------------------------------ shared pieces
def affine(x, w, b):
    """``x W (+ b)`` over any leading dimensions."""
    y = jnp.matmul(x, w)
    return y if b is None else y + b


def phi(nonlinearity):
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"rnn: unknown nonlinearity {nonlinearity!r}; valid: {', '.join(NONLINEARITIES)}")
    return jnp.tanh if nonlinearity == "tanh" else (lambda a: jnp.maximum(a, 0))


def phi_grad(h, dh, nonlinearity):
    """dL/da for h = phi(a), from the output h."""
    return dh * (1 - h * h) if nonlinearity == "tanh" else jnp.where(h > 0, dh, 0)


def param_grads(x, h, da, du, b_ih, b_hh):
    """dW_ih = x^T da, dW_hh = h^T du and the bias sums (None for an absent bias), all leading dimensions summed
    over."""
    xi, hi = x.shape[-1], h.shape[-1]
    da2, du2 = da.reshape(-1, da.shape[-1]), du.reshape(-1, du.shape[-1])
    dw_ih = x.reshape(-1, xi).T @ da2
    dw_hh = h.reshape(-1, hi).T @ du2
    db_ih = None if b_ih is None else jnp.sum(da2, axis=0)
    db_hh = None if b_hh is None else jnp.sum(du2, axis=0)
    return dw_ih, dw_hh, db_ih, db_hh


def like(cts, primals):
    """Each cotangent in its input's dtype (custom_vjp requires it; mixed-precision inputs promote inside)."""
    return tuple(None if c is None else c.astype(p.dtype) for c, p in zip(cts, primals, strict=True))


def lstm_gates(z):
    zi, zf, zg, zo = jnp.split(z, 4, axis=-1)
    return jax.nn.sigmoid(zi), jax.nn.sigmoid(zf), jnp.tanh(zg), jax.nn.sigmoid(zo)


def lstm_step_bwd(dr, dc_new, acts, c_prev, c_new):
    """One LSTM step backward from dL/dr (r = o tanh c') and dL/dc' to (dz, dc).

    ``acts`` are the gate activations [i, f, g, o] concatenated (..., 4H).
    """
    i, f, g, o = jnp.split(acts, 4, axis=-1)
    tc = jnp.tanh(c_new)
    do = dr * tc
    dc = dc_new + dr * o * (1 - tc * tc)
    dz = jnp.concatenate([dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g * g),
                          do * o * (1 - o)], axis=-1)
    return dz, dc * f


def gru_step_bwd(dh_new, rzn, u_n, h_prev):
    """One GRU step backward from dL/dh' to (da for the x-path, du for the h-path, direct dL/dh).

    ``rzn`` are the activations [r, z, n] concatenated (..., 3H); ``u_n = h W_hn + b_hn``.
    """
    r, z, n = jnp.split(rzn, 3, axis=-1)
    dn = dh_new * (1 - z)
    dz = dh_new * (h_prev - n)
    dan = dn * (1 - n * n)
    dar = dan * u_n * r * (1 - r)
    daz = dz * z * (1 - z)
    da = jnp.concatenate([dar, daz, dan], axis=-1)
    du = jnp.concatenate([dar, daz, dan * r], axis=-1)
    return da, du, dh_new * z


def check_recurrent(name, kind, x, h, w_ih, w_hh, b_ih=None, b_hh=None, *, c=None, w_hr=None, mask=None,
                    sequence=False):
    """Shape checks shared by cells and sequence primitives; messages name the hidden size that disagrees."""
    gates = GATES[kind]
    if w_ih.ndim != 2 or w_hh.ndim != 2:
        raise ValueError(f"{name}: weights must be 2-D (w_ih (input, {gates}*hidden), w_hh (hidden, {gates}*hidden)),"
                         f" got w_ih {w_ih.shape}, w_hh {w_hh.shape}")
    if w_hh.shape[1] % gates:
        raise ValueError(f"{name}: w_hh has {w_hh.shape[1]} columns, not a multiple of the {gates} gates")
    hidden = w_hh.shape[1] // gates
    out = hidden if w_hr is None else w_hr.shape[1]
    if w_hr is not None and (w_hr.ndim != 2 or w_hr.shape[0] != hidden):
        raise ValueError(f"{name}: projection w_hr must be (hidden={hidden}, proj_size), got {w_hr.shape}")
    if w_hh.shape[0] != out:
        raise ValueError(
            f"{name}: w_hh shape {w_hh.shape} must be ({out}, {gates * hidden}): rows = hidden size"
            + (" (the projection size)" if w_hr is not None else "") + f", columns = {gates} gates x hidden {hidden}"
        )
    if w_ih.shape[1] != gates * hidden:
        raise ValueError(f"{name}: w_ih shape {w_ih.shape} does not match hidden size {hidden}: it must be "
                         f"(input_size, {gates * hidden}) for {gates} gate(s) of {hidden} units (w_hh {w_hh.shape})")
    for bname, b in (("b_ih", b_ih), ("b_hh", b_hh)):
        if b is not None and b.shape != (gates * hidden,):
            raise ValueError(f"{name}: {bname} shape {b.shape} must be ({gates * hidden},) for hidden size {hidden}")
    if sequence:
        if x.ndim != 3:
            raise ValueError(f"{name}: input must be batch-first (batch, time, features), got shape {x.shape}")
        batch = x.shape[:1]
    else:
        batch = x.shape[:-1]
    if x.ndim < 1 or x.shape[-1] != w_ih.shape[0]:
        raise ValueError(f"{name}: input shape {x.shape} does not match w_ih {w_ih.shape}: last dimension must be "
                         f"input_size = {w_ih.shape[0]}")
    if h.shape != (*batch, out):
        raise ValueError(f"{name}: hidden state shape {h.shape} must be {(*batch, out)} (batch {batch}, hidden size "
                         f"{out}) to match input {x.shape} and w_hh {w_hh.shape}")
    if c is not None and c.shape != (*batch, hidden):
        raise ValueError(f"{name}: cell state shape {c.shape} must be {(*batch, hidden)} (hidden size {hidden})")
    if mask is not None and mask.shape != x.shape[:2]:
        raise ValueError(f"{name}: mask shape {mask.shape} must be (batch, time) = {x.shape[:2]} to match the "
                         f"input {x.shape}; True marks real steps, False padding")
    return hidden


# -------------------------------------------------------------------------------------------------- rnn
def _rnn_cell_check(x, h, w_ih, w_hh, b_ih=None, b_hh=None, *, nonlinearity="tanh"):
    phi(nonlinearity)
    check_recurrent("rnn_cell", "rnn", x, h, w_ih, w_hh, b_ih, b_hh)


def _rnn_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None, *, nonlinearity="tanh"):
    """One step of a vanilla RNN (torch ``nn.RNNCell``): h' = phi(x W_ih + b_ih + h W_hh + b_hh).

    x (..., I), h (..., H), W_ih (I, H), W_hh (H, H), biases (H,) or None; phi = tanh or relu. With a the
    pre-activation, da = dh' * phi'(a), phi' = 1 - h'^2 (tanh) or 1[h' > 0] (relu), read off the output h':
        dx = da W_ih^T,  dh = da W_hh^T,  dw_ih = x^T da,  dw_hh = h^T da,  db_ih = db_hh = sum_batch da
    Residuals: the inputs and h'.
    """
    return phi(nonlinearity)(affine(x, w_ih, b_ih) + affine(h, w_hh, b_hh))


def _rnn_cell_fwd(x, h, w_ih, w_hh, b_ih=None, b_hh=None, *, nonlinearity="tanh"):
    hn = _rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity=nonlinearity)
    return hn, (x, h, w_ih, w_hh, hn, b_ih, b_hh)


def _rnn_cell_bwd(res, dh_new, *, nonlinearity="tanh"):
    x, h, w_ih, w_hh, hn, b_ih, b_hh = res
    da = phi_grad(hn, dh_new, nonlinearity)
    dw_ih, dw_hh, db_ih, db_hh = param_grads(x, h, da, da, b_ih, b_hh)
    return like((da @ w_ih.T, da @ w_hh.T, dw_ih, dw_hh, db_ih, db_hh), (x, h, w_ih, w_hh, b_ih, b_hh))


def _cell_inputs(k, dtype, batch, n_in, hidden, gates, out=None, bias=True, scale=0.5):
    out = hidden if out is None else out
    return (normal(k[0], (*batch, n_in), dtype), normal(k[1], (*batch, out), dtype, 0.5),
            normal(k[2], (n_in, gates * hidden), dtype, scale), normal(k[3], (out, gates * hidden), dtype, scale),
            normal(k[4], (gates * hidden,), dtype, 0.3) if bias else None,
            normal(k[5], (gates * hidden,), dtype, 0.3) if bias else None)


def _rnn_cell_examples(key, dtype):
    k = keys(key, 12)
    return [
        Example(_cell_inputs(k[:6], dtype, (3,), 4, 5, 1), {"nonlinearity": "tanh"}, "tanh B=3 I=4 H=5"),
        Example(_cell_inputs(k[6:], dtype, (2, 3), 3, 4, 1, bias=False), {"nonlinearity": "relu"},
                "relu 2x3 batch, no bias"),
    ]


def _cell_draw(rng, dtype, gates, hidden, out, batch):
    """x, h, W_ih, W_hh and the biases, each bias present or None on its own."""
    n_in = integer(rng, 1, 5)
    return (arr(rng, (*batch, n_in), dtype), arr(rng, (*batch, out), dtype, 0.5),
            arr(rng, (n_in, gates * hidden), dtype, 0.6), arr(rng, (out, gates * hidden), dtype, 0.6),
            arr(rng, (gates * hidden,), dtype, 0.3) if rng.random() < 0.7 else None,
            arr(rng, (gates * hidden,), dtype, 0.3) if rng.random() < 0.7 else None)


def _batch(rng):
    return tuple(integer(rng, 1, 3) for _ in range(integer(rng, 0, 2)))


def _rnn_cell_space(rng, dtype):
    """Batch axes 0-2, I and H 1-5, biases each or none, tanh or relu; for relu redrawn until every
    pre-activation is 0.05 clear of relu's kink."""
    nonlinearity = pick(rng, ["tanh", "relu"])
    hidden, batch = integer(rng, 1, 5), _batch(rng)
    for _ in range(50):
        x, h, w_ih, w_hh, b_ih, b_hh = args = _cell_draw(rng, dtype, 1, hidden, hidden, batch)
        a = np.asarray(x @ w_ih + h @ w_hh) + sum(np.asarray(b) for b in (b_ih, b_hh) if b is not None)
        if nonlinearity == "tanh" or np.all(np.abs(a) > 0.05):
            break
    return Example(args, {"nonlinearity": nonlinearity})


def _lstm_cell_space(rng, dtype):
    """Batch axes 0-2, I and H 1-5, biases each or none, projection W_hr (H, P) or none."""
    hidden, batch = integer(rng, 1, 5), _batch(rng)
    proj = integer(rng, 1, hidden) if rng.random() < 0.4 else None
    x, h, w_ih, w_hh, b_ih, b_hh = _cell_draw(rng, dtype, 4, hidden, proj or hidden, batch)
    w_hr = arr(rng, (hidden, proj), dtype, 0.6) if proj else None
    return Example((x, h, arr(rng, (*batch, hidden), dtype, 0.5), w_ih, w_hh, b_ih, b_hh, w_hr), {})


def _gru_cell_space(rng, dtype):
    hidden = integer(rng, 1, 5)
    return Example(_cell_draw(rng, dtype, 3, hidden, hidden, _batch(rng)), {})


rnn_cell = primitive("rnn_cell", _rnn_cell, _rnn_cell_fwd, _rnn_cell_bwd, examples=_rnn_cell_examples,
                     space=_rnn_cell_space, check=_rnn_cell_check)


# ------------------------------------------------------------------------------------------------- lstm
def _lstm_cell_check(x, h, c, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None):
    check_recurrent("lstm_cell", "lstm", x, h, w_ih, w_hh, b_ih, b_hh, c=c, w_hr=w_hr)


def _lstm_cell(x, h, c, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None):
    """One LSTM step (torch ``nn.LSTMCell``, gates i, f, g, o, optional projection W_hr (H, P)): (h', c').

    z = x W_ih + b_ih + h W_hh + b_hh = [z_i, z_f, z_g, z_o];  i, f, o = sigma(z_.), g = tanh(z_g)
    c' = f c + i g,   r = o tanh(c'),   h' = r W_hr (or r). Given dh' and dc' (c' is an output too):
        dr = dh' W_hr^T (or dh'),  dw_hr = r^T dh',  do = dr tanh(c'),  dc~ = dc' + dr o (1 - tanh(c')^2)
        di = dc~ g,  dg = dc~ i,  df = dc~ c,  dc = dc~ f
        dz = [di i(1-i), df f(1-f), dg (1-g^2), do o(1-o)]
        dx = dz W_ih^T,  dh = dz W_hh^T,  dw_ih = x^T dz,  dw_hh = h^T dz,  db_ih = db_hh = sum_batch dz
    Residuals: the inputs, the gate activations and c'.
    """
    i, f, g, o = lstm_gates(affine(x, w_ih, b_ih) + affine(h, w_hh, b_hh))
    c_new = f * c + i * g
    r = o * jnp.tanh(c_new)
    return (r if w_hr is None else r @ w_hr), c_new


def _lstm_cell_fwd(x, h, c, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None):
    # keeps the gate activations, so the step is written out rather than calling the reference
    acts = jnp.concatenate(lstm_gates(affine(x, w_ih, b_ih) + affine(h, w_hh, b_hh)), axis=-1)
    i, f, g, o = jnp.split(acts, 4, axis=-1)
    c_new = f * c + i * g
    r = o * jnp.tanh(c_new)
    h_new = r if w_hr is None else r @ w_hr
    return (h_new, c_new), (x, h, c, w_ih, w_hh, w_hr, acts, c_new, b_ih, b_hh)


def _lstm_cell_bwd(res, cts):
    x, h, c, w_ih, w_hh, w_hr, acts, c_new, b_ih, b_hh = res
    dh_new, dc_new = cts
    if w_hr is None:
        dr, dw_hr = dh_new, None
    else:
        r = acts[..., 3 * c.shape[-1]:] * jnp.tanh(c_new)
        dr = dh_new @ w_hr.T
        dw_hr = r.reshape(-1, r.shape[-1]).T @ dh_new.reshape(-1, dh_new.shape[-1])
    dz, dc = lstm_step_bwd(dr, dc_new, acts, c, c_new)
    dw_ih, dw_hh, db_ih, db_hh = param_grads(x, h, dz, dz, b_ih, b_hh)
    return like((dz @ w_ih.T, dz @ w_hh.T, dc, dw_ih, dw_hh, db_ih, db_hh, dw_hr),
                (x, h, c, w_ih, w_hh, b_ih, b_hh, w_hr))


def _lstm_cell_examples(key, dtype):
    k = keys(key, 16)
    x, h, w_ih, w_hh, b_ih, b_hh = _cell_inputs(k[:6], dtype, (3,), 4, 5, 4)
    x2, h2, w_ih2, w_hh2, b_ih2, b_hh2 = _cell_inputs(k[6:12], dtype, (2,), 3, 4, 4, out=2)
    return [
        Example((x, h, normal(k[12], (3, 5), dtype), w_ih, w_hh, b_ih, b_hh, None), label="B=3 I=4 H=5"),
        Example((x2, h2, normal(k[13], (2, 4), dtype), w_ih2, w_hh2, b_ih2, b_hh2, normal(k[14], (4, 2), dtype, 0.5)),
                label="projection H=4 -> P=2"),
    ]


lstm_cell = primitive("lstm_cell", _lstm_cell, _lstm_cell_fwd, _lstm_cell_bwd, examples=_lstm_cell_examples,
                      space=_lstm_cell_space, check=_lstm_cell_check)


# -------------------------------------------------------------------------------------------------- gru
def _gru_cell_check(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    check_recurrent("gru_cell", "gru", x, h, w_ih, w_hh, b_ih, b_hh)


def gru_forward_step(a, h, w_hh, b_hh):
    """From the input part ``a = x W_ih + b_ih`` and the state: (h', [r, z, n], u_n)."""
    ar, az, an = jnp.split(a, 3, axis=-1)
    ur, uz, un = jnp.split(affine(h, w_hh, b_hh), 3, axis=-1)
    r = jax.nn.sigmoid(ar + ur)
    z = jax.nn.sigmoid(az + uz)
    n = jnp.tanh(an + r * un)
    return (1 - z) * n + z * h, (r, z, n), un


def _gru_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    """One GRU step (torch ``nn.GRUCell``, gates r, z, n; the reset gate multiplies W_hn h + b_hn).

    a = x W_ih + b_ih = [a_r, a_z, a_n],  u = h W_hh + b_hh = [u_r, u_z, u_n]
    r = sigma(a_r + u_r),  z = sigma(a_z + u_z),  n = tanh(a_n + r u_n),  h' = (1 - z) n + z h. Given dh':
        dn = dh' (1 - z),  dz = dh' (h - n),  da_n = dn (1 - n^2),  du_n = da_n r,  dr = da_n u_n
        da_r = du_r = dr r (1 - r),  da_z = du_z = dz z (1 - z)
        dx = da W_ih^T,  dw_ih = x^T da,  db_ih = sum da;   dh = dh' z + du W_hh^T,  dw_hh = h^T du,
        db_hh = sum du   (the x- and h-paths differ only in the n block, where r sits between u_n and tanh)
    Residuals: the inputs, the gates [r, z, n] and u_n.
    """
    return gru_forward_step(affine(x, w_ih, b_ih), h, w_hh, b_hh)[0]


def _gru_cell_fwd(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    # keeps the gates and u_n that the reference's step discards
    h_new, rzn, un = gru_forward_step(affine(x, w_ih, b_ih), h, w_hh, b_hh)
    return h_new, (x, h, w_ih, w_hh, jnp.concatenate(rzn, axis=-1), un, b_ih, b_hh)


def _gru_cell_bwd(res, dh_new):
    x, h, w_ih, w_hh, rzn, un, b_ih, b_hh = res
    da, du, dh = gru_step_bwd(dh_new, rzn, un, h)
    dw_ih, dw_hh, db_ih, db_hh = param_grads(x, h, da, du, b_ih, b_hh)
    return like((da @ w_ih.T, dh + du @ w_hh.T, dw_ih, dw_hh, db_ih, db_hh), (x, h, w_ih, w_hh, b_ih, b_hh))


def _gru_cell_examples(key, dtype):
    k = keys(key, 12)
    return [
        Example(_cell_inputs(k[:6], dtype, (3,), 4, 5, 3), label="B=3 I=4 H=5"),
        Example(_cell_inputs(k[6:], dtype, (), 3, 4, 3, bias=False), label="unbatched, no bias"),
    ]


gru_cell = primitive("gru_cell", _gru_cell, _gru_cell_fwd, _gru_cell_bwd, examples=_gru_cell_examples,
                     space=_gru_cell_space, check=_gru_cell_check)
