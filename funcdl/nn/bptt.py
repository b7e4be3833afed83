"""Whole sequences: ``rnn``, ``lstm``, ``gru`` with backpropagation through time written out.

Shapes (batch-first): x (B, T, I), initial states h0 (B, H) [c0 (B, H)], weights as in ``funcdl.nn.recurrent``,
mask (B, T) boolean (True = a real step, False = padding; ``None`` = all real). Outputs: the per-step
outputs ys (B, T, H) and the final state(s) h_T [c_T].

Forward: a ``lax.scan`` over the cell. A padded step leaves the state unchanged and outputs zero (torch's
``pack_padded_sequence`` / ``pad_packed_sequence``):

    h~_t = cell(x_t, h_{t-1}),   h_t = m_t ? h~_t : h_{t-1},   y_t = m_t ? h_t : 0

``reverse=True`` runs from t = T-1 down to 0 (the backward half of a bidirectional layer). With right-padded
sequences the padded tail then comes first and leaves h0 untouched, so each sequence really starts at its
own last step, exactly as torch's packed bidirectional RNNs do.

Backward (BPTT). The loss reaches h_t two ways: through the output y_t and through the next state h_{t+1}.
Carry g_t = dL/dh_t backwards in time, starting from the cotangent of the final state:

    g_T = dL/dh_T (given);   for t = T..1:
        G   = g_t + m_t dy_t                         total gradient at h_t
        da_t = phi'(.) * (m_t G)                      (cell backward, from ``funcdl.nn.recurrent``)
        g_{t-1} = da_t W_hh^T + (1 - m_t) G           (a padded step passes the gradient straight through)
    dh0 = g_0

For the LSTM the carry is the pair (dL/dh_t, dL/dc_t); the cell state's gradient flows through the forget
gate, dc_{t-1} = dc~_t * f_t, which is why LSTM gradients vanish more slowly than the tanh RNN's
(whose carry is multiplied by diag(1 - h^2) W_hh^T at every step).

The weights are shared by every step, so their gradients are sums over steps; the reverse scan accumulates
them in its carry next to g_t and emits dx_t = da_t W_ih^T:

    dW_ih += x_t^T da_t,   dW_hh += h_{t-1}^T da_t,   db += sum_b da_t

(One could instead emit every da_t and take dW_ih = X^T dA as one big product after the loop: on CPU that
was slower and kept a (T, B, G H) buffer alive — see ``benchmarks/bench_lstm.py``; likewise the forward
computes x_t W_ih inside the loop rather than X W_ih up front.)

Residuals, by design the least the derivation needs: RNN the states h_t (B,T,H) — tanh' and relu' read off
h_t; LSTM h_t, c_t and the four gate activations (6H per step, P instead of H for a projected h); GRU h_t,
the gates r, z, n and u_n = h W_hn + b_hn (5H). Pre-activations are never kept.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from ..core.examples import Example, keys, normal
from ..core.primitive import primitive
from ._space import arr, integer, pick
from .recurrent import (
    affine,
    check_recurrent,
    gru_forward_step,
    gru_step_bwd,
    like,
    lstm_gates,
    lstm_step_bwd,
    phi,
    phi_grad,
)

__all__ = ["rnn", "lstm", "gru", "lengths_to_mask"]


def lengths_to_mask(lengths, max_len: int):
    """(B,) sequence lengths -> (B, max_len) boolean mask, True on the first ``lengths[b]`` steps."""
    return jnp.arange(max_len)[None, :] < jnp.asarray(lengths)[:, None]


def _tm(a):
    """batch-first (B, T, ...) <-> time-major (T, B, ...)."""
    return jnp.swapaxes(a, 0, 1)


def _time_mask(mask):
    return None if mask is None else _tm(jnp.asarray(mask).astype(bool))[..., None]   # (T, B, 1)


def _keep(m, new, old):
    return new if m is None else jnp.where(m, new, old)


def _out(m, h):
    return h if m is None else jnp.where(m, h, 0)


def _steps(states):
    return jnp.arange(states.shape[0])


def _prev_at(states, s0, t, reverse):
    """The state step t started from, read out of the saved states (no shifted copy is made)."""
    n = states.shape[0]
    edge = (t == n - 1) if reverse else (t == 0)
    j = jnp.clip(t + 1 if reverse else t - 1, 0, n - 1)
    return jnp.where(edge, s0.astype(states.dtype), lax.dynamic_index_in_dim(states, j, keepdims=False))


def _state(s0, x, w):
    """The scan carries the promoted dtype of input, state and weights."""
    return s0.astype(jnp.result_type(s0, x, w))


def _zeros_like_grads(g, w_ih, w_hh):
    """Zero accumulators (dW_ih, dW_hh, db) in the gradient's (promoted) dtype."""
    return (jnp.zeros(w_ih.shape, g.dtype), jnp.zeros(w_hh.shape, g.dtype), jnp.zeros(w_hh.shape[1:], g.dtype))


def _bias(db, b):
    return None if b is None else db


def _check_mask(name, mask):
    ok = (jnp.bool_, jnp.integer, jnp.floating)
    if mask is not None and not any(jnp.issubdtype(mask.dtype, t) for t in ok):
        raise TypeError(f"{name}: mask must be boolean (True = real step; 0/1 numbers are read as mask != 0), "
                        f"got dtype {mask.dtype}")


# -------------------------------------------------------------------------------------------------- rnn
def _rnn_check(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, mask=None, *, nonlinearity="tanh", reverse=False):
    phi(nonlinearity)
    _check_mask("rnn", mask)
    check_recurrent("rnn", "rnn", x, h0, w_ih, w_hh, b_ih, b_hh, mask=mask, sequence=True)


def _rnn(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, mask=None, *, nonlinearity="tanh", reverse=False):
    """A vanilla RNN over a sequence (torch ``nn.RNN``, one layer): a ``lax.scan`` over ``rnn_cell``.

    x (B, T, I), h0 (B, H), mask (B, T) or None; returns ys (B, T, H) and h_T. Backward through time (the
    module docstring derives it): carrying g_t = dL/dh_t from g_T = dh_T,
        G = g_t + m_t dy_t,  da_t = phi'(a_t) (m_t G),  g_{t-1} = da_t W_hh^T + (1 - m_t) G,  dh0 = g_0
        dx_t = da_t W_ih^T,  dw_ih = sum_t x_t^T da_t,  dw_hh = sum_t h_{t-1}^T da_t,
        db_ih = db_hh = sum_t sum_b da_t
    The mask gets no gradient. Residuals: the inputs and the states h_t.
    """
    act = phi(nonlinearity)

    def step(h, inp):
        x_t, m_t = inp
        h = _keep(m_t, act(affine(x_t, w_ih, b_ih) + affine(h, w_hh, b_hh)), h)
        return h, _out(m_t, h)

    h_last, ys = lax.scan(step, _state(h0, x, w_hh), (_tm(x), _time_mask(mask)), reverse=reverse)
    return _tm(ys), h_last


def _rnn_fwd(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, mask=None, *, nonlinearity="tanh", reverse=False):
    # keeps every state h_t as scan outputs, so the scan is written out (not the reference)
    act = phi(nonlinearity)
    m = _time_mask(mask)

    def step(h, inp):
        x_t, m_t = inp
        h = _keep(m_t, act(affine(x_t, w_ih, b_ih) + affine(h, w_hh, b_hh)), h)
        return h, h

    h_last, hs = lax.scan(step, _state(h0, x, w_hh), (_tm(x), m), reverse=reverse)   # hs (T, B, H)
    return (_tm(_out(m, hs)), h_last), (x, h0, w_ih, w_hh, b_ih, b_hh, hs, m)


def _rnn_bwd(res, cts, *, nonlinearity="tanh", reverse=False):
    x, h0, w_ih, w_hh, b_ih, b_hh, hs, m = res
    dys, dh_last = cts
    w_ih_t, w_hh_t = w_ih.T, w_hh.T

    def step(carry, inp):
        g, dw_ih, dw_hh, db = carry
        dy_t, x_t, h_t, t, m_t = inp
        hp_t = _prev_at(hs, h0, t, reverse)
        total = g + _out(m_t, dy_t)                       # dL/dh_t: from the output and from step t+1
        da = phi_grad(h_t, _out(m_t, total), nonlinearity)
        g_prev = da @ w_hh_t
        if m_t is not None:
            g_prev = g_prev + jnp.where(m_t, 0, total)    # a padded step hands the gradient straight on
        carry = (g_prev, dw_ih + x_t.T @ da, dw_hh + hp_t.T @ da, db + jnp.sum(da, axis=0))
        return carry, da @ w_ih_t

    zeros = _zeros_like_grads(dh_last, w_ih, w_hh)
    (dh0, dw_ih, dw_hh, db), dx = lax.scan(step, (dh_last, *zeros),
                                           (_tm(dys), _tm(x), hs, _steps(hs), m), reverse=not reverse)
    cts = (_tm(dx), dh0, dw_ih, dw_hh, _bias(db, b_ih), _bias(db, b_hh))
    return like(cts, (x, h0, w_ih, w_hh, b_ih, b_hh)) + (None,)


# ------------------------------------------------------------------------------------------------- lstm
def _lstm_check(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None, mask=None, *, reverse=False):
    _check_mask("lstm", mask)
    check_recurrent("lstm", "lstm", x, h0, w_ih, w_hh, b_ih, b_hh, c=c0, w_hr=w_hr, mask=mask, sequence=True)


def _lstm(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None, mask=None, *, reverse=False):
    """An LSTM over a sequence (torch ``nn.LSTM``, one layer, optional ``proj_size``): a scan over ``lstm_cell``.

    x (B, T, I), h0 (B, P or H), c0 (B, H); returns ys, h_T, c_T. Backward through time: the carry is the pair
    (dL/dh_t, dL/dc_t), each step applies ``lstm_cell``'s rule (dz from dr and dc~), and the cell-state
    gradient flows through the forget gate, dc_{t-1} = dc~_t f_t; padded steps hand both straight on:
        dx_t = dz_t W_ih^T,  dh0 and dc0 = the carry after step 0,  dw_ih = sum_t x_t^T dz_t,
        dw_hh = sum_t h_{t-1}^T dz_t,  db_ih = db_hh = sum_t sum_b dz_t,  dw_hr = sum_t r_t^T dh_t
    The mask gets no gradient. Residuals: the inputs, h_t, c_t and the gate activations.
    """

    def step(carry, inp):
        h, c = carry
        x_t, m_t = inp
        i, f, g, o = lstm_gates(affine(x_t, w_ih, b_ih) + affine(h, w_hh, b_hh))
        c_new = f * c + i * g
        r = o * jnp.tanh(c_new)
        h_new = r if w_hr is None else r @ w_hr
        h, c = _keep(m_t, h_new, h), _keep(m_t, c_new, c)
        return (h, c), _out(m_t, h)

    carry = (_state(h0, x, w_hh), _state(c0, x, w_hh))
    (h_last, c_last), ys = lax.scan(step, carry, (_tm(x), _time_mask(mask)), reverse=reverse)
    return _tm(ys), h_last, c_last


def _lstm_fwd(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None, mask=None, *, reverse=False):
    # keeps the states and gate activations as scan outputs, so the scan is written out (not the reference)
    m = _time_mask(mask)

    def step(carry, inp):
        h, c = carry
        x_t, m_t = inp
        acts = jnp.concatenate(lstm_gates(affine(x_t, w_ih, b_ih) + affine(h, w_hh, b_hh)), axis=-1)
        i, f, g, o = jnp.split(acts, 4, axis=-1)
        c_new = f * c + i * g
        h_new = o * jnp.tanh(c_new)
        if w_hr is not None:
            h_new = h_new @ w_hr
        h, c = _keep(m_t, h_new, h), _keep(m_t, c_new, c)
        return (h, c), (h, c, acts)

    carry = (_state(h0, x, w_hh), _state(c0, x, w_hh))
    (h_last, c_last), (hs, cs, acts) = lax.scan(step, carry, (_tm(x), m), reverse=reverse)
    res = (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, hs, cs, acts, m)
    return (_tm(_out(m, hs)), h_last, c_last), res


def _lstm_bwd(res, cts, *, reverse=False):
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, hs, cs, acts, m = res
    dys, dh_last, dc_last = cts
    w_ih_t, w_hh_t = w_ih.T, w_hh.T
    hidden = cs.shape[-1]

    def step(carry, inp):
        gh, gc, dw_ih, dw_hh, db, dw_hr = carry
        dy_t, x_t, acts_t, c_t, t, m_t = inp
        cp_t, hp_t = _prev_at(cs, c0, t, reverse), _prev_at(hs, h0, t, reverse)
        total = gh + _out(m_t, dy_t)                      # dL/dh_t
        dh_new, dc_new = _out(m_t, total), _out(m_t, gc)  # what reaches this step's cell (zero if padded)
        if w_hr is None:
            dr = dh_new
        else:
            dr = dh_new @ w_hr.T
            dw_hr = dw_hr + (acts_t[..., 3 * hidden:] * jnp.tanh(c_t)).T @ dh_new     # r = o tanh(c), recomputed
        dz, dc = lstm_step_bwd(dr, dc_new, acts_t, cp_t, c_t)
        gh_prev = dz @ w_hh_t
        if m_t is not None:
            gh_prev = gh_prev + jnp.where(m_t, 0, total)
            dc = dc + jnp.where(m_t, 0, gc)
        carry = (gh_prev, dc, dw_ih + x_t.T @ dz, dw_hh + hp_t.T @ dz, db + jnp.sum(dz, axis=0), dw_hr)
        return carry, dz @ w_ih_t

    zeros = _zeros_like_grads(dh_last, w_ih, w_hh) + (None if w_hr is None else jnp.zeros(w_hr.shape, dh_last.dtype),)
    inputs = (_tm(dys), _tm(x), acts, cs, _steps(cs), m)
    (dh0, dc0, dw_ih, dw_hh, db, dw_hr), dx = lax.scan(step, (dh_last, dc_last, *zeros), inputs, reverse=not reverse)
    cts = (_tm(dx), dh0, dc0, dw_ih, dw_hh, _bias(db, b_ih), _bias(db, b_hh), dw_hr)
    return like(cts, (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)) + (None,)


# -------------------------------------------------------------------------------------------------- gru
def _gru_check(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, mask=None, *, reverse=False):
    _check_mask("gru", mask)
    check_recurrent("gru", "gru", x, h0, w_ih, w_hh, b_ih, b_hh, mask=mask, sequence=True)


def _gru(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, mask=None, *, reverse=False):
    """A GRU over a sequence (torch ``nn.GRU``, one layer): a ``lax.scan`` over ``gru_cell``.

    x (B, T, I), h0 (B, H); returns ys and h_T. Backward through time with ``gru_cell``'s rule at every step
    (da for the x-path, du for the h-path), carrying g_t = dL/dh_t:
        g_{t-1} = dh_direct + du_t W_hh^T (+ (1 - m_t) G),  dh0 = g_0,  dx_t = da_t W_ih^T
        dw_ih = sum_t x_t^T da_t,  dw_hh = sum_t h_{t-1}^T du_t,  db_ih = sum da_t,  db_hh = sum du_t
    The mask gets no gradient. Residuals: the inputs, h_t, the gates r, z, n and u_n.
    """

    def step(h, inp):
        x_t, m_t = inp
        h = _keep(m_t, gru_forward_step(affine(x_t, w_ih, b_ih), h, w_hh, b_hh)[0], h)
        return h, _out(m_t, h)

    h_last, ys = lax.scan(step, _state(h0, x, w_hh), (_tm(x), _time_mask(mask)), reverse=reverse)
    return _tm(ys), h_last


def _gru_fwd(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, mask=None, *, reverse=False):
    # keeps the states, the gates and u_n as scan outputs, so the scan is written out (not the reference)
    m = _time_mask(mask)

    def step(h, inp):
        x_t, m_t = inp
        h_new, rzn, un = gru_forward_step(affine(x_t, w_ih, b_ih), h, w_hh, b_hh)
        h = _keep(m_t, h_new, h)
        return h, (h, jnp.concatenate(rzn, axis=-1), un)

    h_last, (hs, rzn, un) = lax.scan(step, _state(h0, x, w_hh), (_tm(x), m), reverse=reverse)
    return (_tm(_out(m, hs)), h_last), (x, h0, w_ih, w_hh, b_ih, b_hh, hs, rzn, un, m)


def _gru_bwd(res, cts, *, reverse=False):
    x, h0, w_ih, w_hh, b_ih, b_hh, hs, rzn, un, m = res
    dys, dh_last = cts
    w_ih_t, w_hh_t = w_ih.T, w_hh.T

    def step(carry, inp):
        g, dw_ih, dw_hh, db_ih, db_hh = carry
        dy_t, x_t, rzn_t, un_t, t, m_t = inp
        hp_t = _prev_at(hs, h0, t, reverse)
        total = g + _out(m_t, dy_t)
        da, du, dh_direct = gru_step_bwd(_out(m_t, total), rzn_t, un_t, hp_t)
        g_prev = dh_direct + du @ w_hh_t
        if m_t is not None:
            g_prev = g_prev + jnp.where(m_t, 0, total)
        carry = (g_prev, dw_ih + x_t.T @ da, dw_hh + hp_t.T @ du, db_ih + jnp.sum(da, axis=0),
                 db_hh + jnp.sum(du, axis=0))
        return carry, da @ w_ih_t

    zeros = _zeros_like_grads(dh_last, w_ih, w_hh)
    inputs = (_tm(dys), _tm(x), rzn, un, _steps(hs), m)
    (dh0, dw_ih, dw_hh, db_ih, db_hh), dx = lax.scan(step, (dh_last, *zeros, zeros[-1]), inputs, reverse=not reverse)
    cts = (_tm(dx), dh0, dw_ih, dw_hh, _bias(db_ih, b_ih), _bias(db_hh, b_hh))
    return like(cts, (x, h0, w_ih, w_hh, b_ih, b_hh)) + (None,)


# --------------------------------------------------------------------------------------------- examples
def _seq_inputs(k, dtype, gates, batch=2, steps=4, n_in=3, hidden=3, out=None, bias=True):
    out = hidden if out is None else out
    return [normal(k[0], (batch, steps, n_in), dtype), normal(k[1], (batch, out), dtype, 0.5),
            normal(k[2], (n_in, gates * hidden), dtype, 0.6), normal(k[3], (out, gates * hidden), dtype, 0.6),
            normal(k[4], (gates * hidden,), dtype, 0.3) if bias else None,
            normal(k[5], (gates * hidden,), dtype, 0.3) if bias else None]


def _mask(lengths, steps):
    return lengths_to_mask(jnp.array(lengths), steps)


def _rnn_examples(key, dtype):
    k = keys(key, 18)
    x, h0, w_ih, w_hh, b_ih, b_hh = _seq_inputs(k[:6], dtype, 1)
    x2, h02, w_ih2, w_hh2, _, _ = _seq_inputs(k[6:12], dtype, 1, bias=False)
    gap = jnp.array([[True, True, False, True], [True, True, True, False]])
    return [
        Example((x, h0, w_ih, w_hh, b_ih, b_hh, None), {"nonlinearity": "tanh"}, "tanh T=4 h0"),
        Example((x2, h02, w_ih2, w_hh2, None, None, gap), {"nonlinearity": "relu", "reverse": True},
                "relu reverse, mask with a gap, no bias"),
    ]


def _lstm_examples(key, dtype):
    k = keys(key, 20)
    x, h0, w_ih, w_hh, b_ih, b_hh = _seq_inputs(k[:6], dtype, 4)
    x2, h02, w_ih2, w_hh2, b_ih2, b_hh2 = _seq_inputs(k[6:12], dtype, 4, hidden=3, out=2)
    c0 = normal(k[12], (2, 3), dtype, 0.5)
    c02 = normal(k[13], (2, 3), dtype, 0.5)
    w_hr = normal(k[14], (3, 2), dtype, 0.6)
    return [
        Example((x, h0, c0, w_ih, w_hh, b_ih, b_hh, None, None), {}, "T=4 h0 c0"),
        Example((x2, h02, c02, w_ih2, w_hh2, b_ih2, b_hh2, w_hr, _mask([2, 4], 4)), {"reverse": True},
                "projection P=2, reverse, lengths 2,4"),
    ]


def _gru_examples(key, dtype):
    k = keys(key, 12)
    x, h0, w_ih, w_hh, b_ih, b_hh = _seq_inputs(k[:6], dtype, 3)
    x2, h02, w_ih2, w_hh2, b_ih2, b_hh2 = _seq_inputs(k[6:], dtype, 3, batch=3, steps=5)
    return [
        Example((x, h0, w_ih, w_hh, b_ih, b_hh, None), {}, "T=4 h0"),
        Example((x2, h02, w_ih2, w_hh2, None, b_hh2, _mask([5, 1, 3], 5)), {"reverse": True},
                "reverse, lengths 5,1,3, no b_ih"),
    ]


def _sequence_space(kind):
    """Batch 1-3, steps 1-5, input and hidden sizes 1-4, each bias present or absent, no mask, lengths (a
    prefix mask) or a mask with gaps, forward or reversed; the RNN also draws its nonlinearity and the LSTM a
    projection (proj_size 1-3) or none."""
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[kind]

    def space(rng, dtype):
        b, t, n_in, hidden = integer(rng, 1, 3), integer(rng, 1, 5), integer(rng, 1, 4), integer(rng, 1, 4)
        proj = kind == "lstm" and rng.random() < 0.4
        out = integer(rng, 1, 3) if proj else hidden
        x = arr(rng, (b, t, n_in), dtype)
        h0 = arr(rng, (b, out), dtype, 0.5)
        w_ih, w_hh = arr(rng, (n_in, gates * hidden), dtype, 0.6), arr(rng, (out, gates * hidden), dtype, 0.6)
        b_ih, b_hh = (arr(rng, (gates * hidden,), dtype, 0.3) if rng.random() < 0.7 else None for _ in range(2))
        form = pick(rng, ["none", "lengths", "gaps"])
        mask = None if form == "none" else (
            _mask([integer(rng, 1, t) for _ in range(b)], t) if form == "lengths"
            else jnp.asarray(rng.random((b, t)) < 0.7))
        settings = {"reverse": bool(rng.random() < 0.5)}
        if kind == "rnn":
            settings["nonlinearity"] = pick(rng, ["tanh", "relu"])
            return Example((x, h0, w_ih, w_hh, b_ih, b_hh, mask), settings)
        if kind == "gru":
            return Example((x, h0, w_ih, w_hh, b_ih, b_hh, mask), settings)
        c0 = arr(rng, (b, hidden), dtype, 0.5)
        w_hr = arr(rng, (hidden, out), dtype, 0.6) if proj else None
        return Example((x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, mask), settings)

    return space


rnn = primitive("rnn", _rnn, _rnn_fwd, _rnn_bwd, examples=_rnn_examples, space=_sequence_space("rnn"),
                check=_rnn_check, nondiff=("mask",))
lstm = primitive("lstm", _lstm, _lstm_fwd, _lstm_bwd, examples=_lstm_examples, space=_sequence_space("lstm"),
                 check=_lstm_check, nondiff=("mask",))
gru = primitive("gru", _gru, _gru_fwd, _gru_bwd, examples=_gru_examples, space=_sequence_space("gru"),
                check=_gru_check, nondiff=("mask",))
