"""Recurrent cells and whole-sequence BPTT primitives: semantics, masks, bad input, hand vs autodiff."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fd
from funcdl.core.gradcheck import rel_error


def _weights(key, n_in, hidden, gates, out=None):
    out = hidden if out is None else out
    k = jax.random.split(key, 4)
    return (0.5 * jax.random.normal(k[0], (n_in, gates * hidden)), 0.5 * jax.random.normal(k[1], (out, gates * hidden)),
            0.1 * jax.random.normal(k[2], (gates * hidden,)), 0.1 * jax.random.normal(k[3], (gates * hidden,)))


def _run_cells(kind, x, h, c, w, reverse=False, mask=None):
    """The sequence written as a Python loop over the cell primitive (with the mask semantics)."""
    T = x.shape[1]
    ys = [None] * T
    order = range(T - 1, -1, -1) if reverse else range(T)
    for t in order:
        m = None if mask is None else mask[:, t, None]
        if kind == "lstm":
            hn, cn = fd.lstm_cell(x[:, t], h, c, *w)
            c = cn if m is None else jnp.where(m, cn, c)
        elif kind == "gru":
            hn = fd.gru_cell(x[:, t], h, *w)
        else:
            hn = fd.rnn_cell(x[:, t], h, *w)
        h = hn if m is None else jnp.where(m, hn, h)
        ys[t] = h if m is None else jnp.where(m, h, 0)
    return jnp.stack(ys, 1), h, c


def _seq(kind, x, h, c, w, mask=None, reverse=False):
    if kind == "lstm":
        return fd.lstm(x, h, c, *w, None, mask, reverse=reverse)
    f = fd.gru if kind == "gru" else fd.rnn
    ys, hT = f(x, h, *w, mask, reverse=reverse)
    return ys, hT, None


@pytest.mark.parametrize("kind,gates", [("rnn", 1), ("lstm", 4), ("gru", 3)])
@pytest.mark.parametrize("reverse", [False, True])
def test_sequence_equals_loop_of_cells(kind, gates, reverse):
    key = jax.random.PRNGKey(0)
    B, T, I, H = 3, 5, 2, 4
    x = jax.random.normal(key, (B, T, I), jnp.float64)
    h0 = 0.3 * jax.random.normal(jax.random.PRNGKey(1), (B, H), jnp.float64)
    c0 = 0.3 * jax.random.normal(jax.random.PRNGKey(2), (B, H), jnp.float64)
    w = _weights(jax.random.PRNGKey(3), I, H, gates)
    mask = fd.lengths_to_mask(jnp.array([5, 2, 3]), T)
    for m in (None, mask):
        ys, hT, cT = _seq(kind, x, h0, c0, w, m, reverse)
        ys2, hT2, cT2 = _run_cells(kind, x, h0, c0, w, reverse, m)
        np.testing.assert_allclose(ys, ys2, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(hT, hT2, rtol=1e-12, atol=1e-14)
        if kind == "lstm":
            np.testing.assert_allclose(cT, cT2, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kind,gates", [("rnn", 1), ("lstm", 4), ("gru", 3)])
def test_padding_leaves_state_unchanged(kind, gates):
    """A right-padded sequence gives the same final state as the unpadded one; padded outputs are zero,
    and whatever sits in the padding has no effect on anything (values or gradients)."""
    B, T, I, H = 2, 6, 3, 4
    x = jax.random.normal(jax.random.PRNGKey(0), (B, T, I), jnp.float64)
    h0 = jnp.zeros((B, H), jnp.float64)
    w = _weights(jax.random.PRNGKey(1), I, H, gates)
    mask = fd.lengths_to_mask(jnp.array([4, 6]), T)
    ys, hT, cT = _seq(kind, x, h0, h0, w, mask)
    ys_short, hT_short, _ = _seq(kind, x[:1, :4], h0[:1], h0[:1], w)
    np.testing.assert_allclose(hT[0], hT_short[0], rtol=1e-12)
    np.testing.assert_allclose(ys[0, :4], ys_short[0], rtol=1e-12)
    np.testing.assert_array_equal(ys[0, 4:], 0.0)
    # garbage in the padding changes nothing, and gets zero gradient
    x_garbage = x.at[0, 4:].set(1e3)
    f = lambda x: sum(jnp.sum(jnp.sin(a)) for a in _seq(kind, x, h0, h0, w, mask) if a is not None)
    assert float(f(x)) == pytest.approx(float(f(x_garbage)), rel=1e-12)
    g = jax.grad(f)(x_garbage)
    np.testing.assert_array_equal(g[0, 4:], 0.0)
    assert float(jnp.abs(g[0, :4]).min()) > 0


def test_reverse_with_lengths_reads_each_sequence_backwards():
    """reverse=True with a right-padding mask equals flipping each sequence within its own length."""
    B, T, I, H = 2, 5, 2, 3
    x = jax.random.normal(jax.random.PRNGKey(0), (B, T, I), jnp.float64)
    h0 = jnp.zeros((B, H), jnp.float64)
    w = _weights(jax.random.PRNGKey(1), I, H, 3)
    lengths = [3, 5]
    ys, hT = fd.gru(x, h0, *w, fd.lengths_to_mask(jnp.array(lengths), T), reverse=True)
    for b, n in enumerate(lengths):
        flipped = x[b:b + 1, :n][:, ::-1]
        ys_b, h_b = fd.gru(flipped, h0[b:b + 1], *w)
        np.testing.assert_allclose(hT[b], h_b[0], rtol=1e-12)
        np.testing.assert_allclose(ys[b, :n], ys_b[0, ::-1], rtol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("kind,gates", [("rnn", 1), ("lstm", 4), ("gru", 3)])
def test_hand_bptt_equals_autodiff_through_scan(kind, gates):
    B, T, I, H = 3, 7, 2, 5
    x = jax.random.normal(jax.random.PRNGKey(0), (B, T, I), jnp.float64)
    h0 = 0.5 * jax.random.normal(jax.random.PRNGKey(1), (B, H), jnp.float64)
    c0 = 0.5 * jax.random.normal(jax.random.PRNGKey(2), (B, H), jnp.float64)
    w = _weights(jax.random.PRNGKey(3), I, H, gates)
    mask = fd.lengths_to_mask(jnp.array([7, 1, 4]), T)

    def loss(x, h0, c0, w):
        ys, hT, cT = _seq(kind, x, h0, c0, w, mask)
        value = jnp.sum(jnp.cos(ys)) + jnp.sum(hT ** 2)
        return value + (jnp.sum(cT) if cT is not None else 0.0)

    g_hand = jax.grad(loss, argnums=(0, 1, 2, 3))(x, h0, c0, w)
    g_auto = jax.grad(fd.autodiff(loss), argnums=(0, 1, 2, 3))(x, h0, c0, w)
    assert rel_error(g_hand, g_auto) <= 1e-12


def test_bad_input_messages():
    x = jnp.ones((2, 5, 3))
    h0 = jnp.zeros((2, 4))
    w_ih, w_hh, b_ih, b_hh = _weights(jax.random.PRNGKey(0), 3, 4, 4)
    with pytest.raises(ValueError, match=r"hidden state shape \(2, 6\) must be \(2, 4\)"):
        fd.lstm(x, jnp.zeros((2, 6)), h0, w_ih, w_hh, b_ih, b_hh)
    with pytest.raises(ValueError, match="cell state shape"):
        fd.lstm(x, h0, jnp.zeros((2, 3)), w_ih, w_hh, b_ih, b_hh)
    with pytest.raises(ValueError, match="mask shape \\(2, 4\\) must be \\(batch, time\\) = \\(2, 5\\)"):
        fd.lstm(x, h0, h0, w_ih, w_hh, b_ih, b_hh, None, jnp.ones((2, 4), bool))
    with pytest.raises(ValueError, match="input_size = 3"):
        fd.lstm(jnp.ones((2, 5, 7)), h0, h0, w_ih, w_hh, b_ih, b_hh)
    with pytest.raises(ValueError, match="does not match hidden size"):
        fd.lstm(x, h0, h0, w_ih[:, :12], w_hh, b_ih, b_hh)
    with pytest.raises(ValueError, match="batch-first"):
        fd.gru(jnp.ones((5, 3)), h0, *_weights(jax.random.PRNGKey(0), 3, 4, 3))
    with pytest.raises(ValueError, match="b_ih shape"):
        fd.gru(x, h0, *_weights(jax.random.PRNGKey(0), 3, 4, 3)[:2], jnp.ones(5))
    with pytest.raises(ValueError, match="unknown nonlinearity"):
        fd.rnn(x, h0, *_weights(jax.random.PRNGKey(0), 3, 4, 1), nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="hidden state shape"):
        fd.gru_cell(jnp.ones((2, 3)), jnp.ones((2, 5)), *_weights(jax.random.PRNGKey(0), 3, 4, 3))
    with pytest.raises(TypeError, match="mask must be boolean"):
        fd.rnn(x, h0, *_weights(jax.random.PRNGKey(0), 3, 4, 1), jnp.ones((2, 5), jnp.complex64))
    # errors also come under jit (shapes are static)
    with pytest.raises(ValueError, match="mask shape"):
        jax.jit(lambda m: fd.rnn(x, h0, *_weights(jax.random.PRNGKey(0), 3, 4, 1), m))(jnp.ones((3, 5), bool))


def test_lstm_projection_shapes():
    B, T, I, H, P = 2, 4, 3, 6, 2
    w_ih, w_hh, b_ih, b_hh = _weights(jax.random.PRNGKey(0), I, H, 4, out=P)
    w_hr = jax.random.normal(jax.random.PRNGKey(1), (H, P))
    ys, hT, cT = fd.lstm(jnp.ones((B, T, I)), jnp.zeros((B, P)), jnp.zeros((B, H)), w_ih, w_hh, b_ih, b_hh, w_hr)
    assert ys.shape == (B, T, P) and hT.shape == (B, P) and cT.shape == (B, H)
    with pytest.raises(ValueError, match="projection"):
        fd.lstm(jnp.ones((B, T, I)), jnp.zeros((B, P)), jnp.zeros((B, H)), w_ih, w_hh, b_ih, b_hh, w_hr.T)
