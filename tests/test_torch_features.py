"""PyTorch features against torch itself, values and gradients in float64: nearest resizing by a size or a
non-integer scale, bilinear by a scale factor, layer/RMS norm over several trailing axes, batch norm's
cumulative average (momentum=None), embedding max_norm and scale_grad_by_freq; and their one-line errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fd
from funcdl.core import gradcheck as gc
from funcdl.nn.embedding import renormalized_table

pytestmark = pytest.mark.slow          # compiles many configurations (CI runs it; the quick subset skips it)

torch = pytest.importorskip("torch")
F = torch.nn.functional


def close(a, b, tol=1e-10):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, float(np.abs(b).max(initial=0))))


def tt(a):
    return torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=True)


def nchw(t, n):
    """channels-last (N, *sp, C) -> (N, C, *sp)"""
    return t.permute(0, n + 1, *range(1, n + 1))


def nhwc(t, n):
    return t.permute(0, *range(2, n + 2), 1)


def value_and_grads(fn, args, seed=0):
    """fn's value and hand-derived VJP (one compiled program) for a random cotangent; returns (y, grads, ct)."""
    args = [jnp.asarray(a, jnp.float64) for a in args]
    ct = np.random.default_rng(seed).normal(size=jax.eval_shape(fn, *args).shape)

    def program(args, ct):
        y, pull = jax.vjp(fn, *args)
        return y, pull(ct)

    y, grads = jax.jit(program)(args, jnp.asarray(ct))
    return np.asarray(y), [np.asarray(g) for g in grads], ct


# -- nearest and bilinear resizing ---------------------------------------------------------------------------------

NEAREST = [
    ((2, 5, 4, 3), {"scale": 1.5}, {"scale_factor": 1.5}),
    ((1, 4, 6, 2), {"scale": (1.5, 0.75)}, {"scale_factor": (1.5, 0.75)}),
    ((1, 3, 4, 2), {"scale": 2}, {"scale_factor": 2}),                       # the block fast path
    ((1, 3, 2, 1), {"scale": (3, 1)}, {"scale_factor": (3.0, 1.0)}),
    ((2, 3, 5, 2), {"size": (7, 3)}, {"size": (7, 3)}),
    ((1, 3, 5, 2), {"size": (6, 5)}, {"size": (6, 5)}),                       # torch's P = 2L and P = L cases
    ((1, 7, 2), {"scale": 0.6}, {"scale_factor": 0.6}),                      # 1-D, shrinking
    ((1, 5, 2), {"scale": 2.7}, {"scale_factor": 2.7}),
    ((1, 2, 3, 5, 1), {"scale": (2.7, 2.0, 0.6)}, {"scale_factor": (2.7, 2.0, 0.6)}),   # 3-D
    ((1, 9, 2), {"size": 4}, {"size": 4}),
    ((1, 2, 5, 1), {"scale": (1.3, 2.1)}, {"scale_factor": (1.3, 2.1)}),     # 2-D, P = L and P = 2L: o and o // 2
]

# P = L from a scale just above 1 in 1-D and 3-D: torch's forward reads rows 0, 0 (the formula, no special
# case) but its backward sends dy[1] to row 1 (the special case): not the adjoint of its own forward. The
# forward is matched; the gradient here is the adjoint (the registry holds it to autodiff and finite differences).
TORCH_BACKWARD_DISAGREES = [
    ((1, 2, 2), {"scale": 1.3}, {"scale_factor": 1.3}),
    ((1, 2, 3, 2, 1), {"scale": (1.3, 2.0, 1.0)}, {"scale_factor": (1.3, 2.0, 1.0)}),
]


@pytest.mark.parametrize("shape, ours, theirs", NEAREST + TORCH_BACKWARD_DISAGREES,
                         ids=[str(c[1]) for c in NEAREST + TORCH_BACKWARD_DISAGREES])
def test_upsample_nearest_matches_torch(shape, ours, theirs):
    n = len(shape) - 2
    x = np.random.default_rng(len(shape)).normal(size=shape)
    y, (g,), ct = value_and_grads(lambda x: fd.upsample_nearest(x, **ours), [x])
    tx = tt(x)
    yt = nhwc(F.interpolate(nchw(tx, n), mode="nearest", **theirs), n)
    close(y, yt.detach().numpy())
    yt.backward(torch.tensor(ct))
    if (shape, ours, theirs) in TORCH_BACKWARD_DISAGREES:
        assert not np.allclose(g, tx.grad.numpy())         # if torch fixes its backward, move the case up
        g_ref = jax.vjp(lambda x: fd.upsample_nearest.ref(x, **ours), jnp.asarray(x))[1](jnp.asarray(ct))[0]
        close(g, g_ref)
        return
    close(g, tx.grad.numpy())


BILINEAR = [
    ((2, 4, 5, 3), {"scale": 1.5}, {"scale_factor": 1.5}),
    ((1, 5, 4, 2), {"scale": (0.6, 2.3)}, {"scale_factor": (0.6, 2.3)}),
    ((1, 3, 4, 2), {"scale": 1.7, "align_corners": True}, {"scale_factor": 1.7, "align_corners": True}),
    ((1, 3, 2, 1), {"scale": 3}, {"scale_factor": 3}),
    ((1, 4, 3, 2), {"size": (5, 7)}, {"size": (5, 7)}),
]


@pytest.mark.parametrize("shape, ours, theirs", BILINEAR, ids=[str(c[1]) for c in BILINEAR])
def test_upsample_bilinear_matches_torch(shape, ours, theirs):
    x = np.random.default_rng(1).normal(size=shape)
    y, (g,), ct = value_and_grads(lambda x: fd.upsample_bilinear(x, **ours), [x])
    tx = tt(x)
    theirs = {"align_corners": False, **theirs}
    yt = nhwc(F.interpolate(nchw(tx, 2), mode="bilinear", **theirs), 2)
    close(y, yt.detach().numpy())
    yt.backward(torch.tensor(ct))
    close(g, tx.grad.numpy())


def test_upsample_errors_are_one_line():
    x = jnp.ones((1, 3, 4, 2))
    bad = [
        (lambda: fd.upsample_nearest(x, scale=0), "upsample_nearest: scale must be a positive number"),
        (lambda: fd.upsample_nearest(x, scale=-1.5), "upsample_nearest: scale must be a positive number"),
        (lambda: fd.upsample_nearest(x, scale=(2.0, 2.0, 2.0)), "tuple of 2 positive numbers"),
        (lambda: fd.upsample_nearest(x, scale=0.2), "upsample_nearest: scale 0.2 makes spatial axis 1"),
        (lambda: fd.upsample_nearest(x, scale=2, size=(4, 4)), "upsample_nearest: give exactly one of"),
        (lambda: fd.upsample_nearest(x, size=(0, 3)), "upsample_nearest: size must be a positive int"),
        (lambda: fd.upsample_nearest(x, size=2.5), "upsample_nearest: size must be a positive int"),
        (lambda: fd.upsample_bilinear(x), "upsample_bilinear: give exactly one of"),
        (lambda: fd.upsample_bilinear(x, size=(5, 5), scale=1.5), "upsample_bilinear: give exactly one of"),
        (lambda: fd.upsample_bilinear(x, scale=float("nan")), "upsample_bilinear: scale must be a positive"),
    ]
    for call, message in bad:
        with pytest.raises(ValueError, match=message) as err:
            call()
        assert "\n" not in str(err.value)
    assert fd.upsample_nearest(x).shape == (1, 6, 8, 2)        # neither given: the old default, scale 2


# -- layer norm and RMS norm over trailing axes ----------------------------------------------------------------------


@pytest.mark.parametrize("axes", [2, 3])
def test_layer_norm_over_trailing_axes_matches_torch(axes):
    rng = np.random.default_rng(axes)
    shape = (2, 3, 4, 5)
    x = rng.normal(size=shape) * 2 + 1
    tail = shape[-axes:]
    w, b = rng.normal(size=tail) + 1, rng.normal(size=tail)
    y, g, ct = value_and_grads(lambda x, w, b: fd.layer_norm(x, w, b, axes=axes, eps=1e-5), [x, w, b])
    tx, tw, tb = tt(x), tt(w), tt(b)
    yt = F.layer_norm(tx, tail, tw, tb, eps=1e-5)
    close(y, yt.detach().numpy())
    yt.backward(torch.tensor(ct))
    for a, t in zip(g, (tx, tw, tb), strict=True):
        close(a, t.grad.numpy())
    # without the affine parameters
    y, (gx,), ct = value_and_grads(lambda x: fd.layer_norm(x, axes=axes), [x], 1)
    tx = tt(x)
    yt = F.layer_norm(tx, tail)
    close(y, yt.detach().numpy())
    yt.backward(torch.tensor(ct))
    close(gx, tx.grad.numpy())


def test_rms_norm_over_trailing_axes_matches_torch():
    if not hasattr(F, "rms_norm"):
        pytest.skip("this torch has no F.rms_norm")
    rng = np.random.default_rng(3)
    x, w = rng.normal(size=(3, 4, 5)), rng.normal(size=(4, 5)) + 1
    y, g, ct = value_and_grads(lambda x, w: fd.rms_norm(x, w, axes=2, eps=1e-6), [x, w])
    tx, tw = tt(x), tt(w)
    yt = F.rms_norm(tx, (4, 5), tw, eps=1e-6)
    close(y, yt.detach().numpy())
    yt.backward(torch.tensor(ct))
    close(g[0], tx.grad.numpy())
    close(g[1], tw.grad.numpy())


def test_norm_axes_errors_are_one_line():
    x = jnp.ones((2, 3, 4))
    bad = [
        (lambda: fd.layer_norm(x, jnp.ones(4), axes=2), r"layer_norm: scale shape \(4,\) must be \(3, 4\)"),
        (lambda: fd.layer_norm(x, jnp.ones((3, 4)), jnp.ones(4), axes=2), r"layer_norm: bias shape \(4,\)"),
        (lambda: fd.layer_norm(x, jnp.ones((3, 4))), r"layer_norm: scale shape \(3, 4\) must be \(4,\)"),
        (lambda: fd.layer_norm(x, axes=0), "layer_norm: axes"),
        (lambda: fd.layer_norm(x, axes=4), "layer_norm: axes"),
        (lambda: fd.rms_norm(x, jnp.ones((2, 4)), axes=2), r"rms_norm: scale shape \(2, 4\) must be \(3, 4\)"),
    ]
    for call, message in bad:
        with pytest.raises(ValueError, match=message) as err:
            call()
        assert "\n" not in str(err.value)


# -- batch norm: the cumulative moving average ------------------------------------------------------------------------


@pytest.mark.parametrize("momentum", [None, 0.3])
def test_batch_norm_running_statistics_match_torch(momentum):
    rng = np.random.default_rng(4)
    c = 3
    params, state = fd.batch_norm_init(c, jnp.float64, momentum=None)      # with the count, whatever the momentum
    assert int(state["count"]) == 0
    bn = torch.nn.BatchNorm2d(c, momentum=momentum).double()
    for step in range(4):
        x = rng.normal(size=(3, 4, 2, c)) * (1 + step) + step
        y, state = fd.batch_norm_apply(params, state, jnp.asarray(x), train=True, momentum=momentum)
        yt = bn(nchw(torch.tensor(x), 2))
        close(y, nhwc(yt, 2).detach().numpy())
        close(state["mean"], bn.running_mean.numpy())
        close(state["var"], bn.running_var.numpy())
        assert int(state["count"]) == int(bn.num_batches_tracked) == step + 1
    _, state2 = fd.batch_norm_apply(params, state, jnp.asarray(x), train=False, momentum=momentum)
    assert state2 is state
    # the state without a count (every existing checkpoint) keeps its two entries under a momentum
    _, plain = fd.batch_norm_init(c, jnp.float64)
    assert set(fd.batch_norm_apply(params, plain, jnp.asarray(x), train=True)[1]) == {"mean", "var"}
    with pytest.raises(ValueError, match="batch_norm_apply: momentum=None .* batch_norm_init") as err:
        fd.batch_norm_apply(params, plain, jnp.asarray(x), train=True, momentum=None)
    assert "\n" not in str(err.value)


# -- embedding: max_norm and scale_grad_by_freq ----------------------------------------------------------------------


IDS = np.array([[0, 3, 3, 1], [5, 3, 0, 2]])


def _torch_embedding(table, ids, **kw):
    """torch's lookup with its own copy of the table; returns (output, the table afterwards, the leaf)."""
    w = tt(table)
    out = F.embedding(torch.tensor(ids), w, **kw)
    return out, w.detach().numpy().copy(), w


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
def test_embedding_max_norm_matches_torch(norm_type):
    rng = np.random.default_rng(5)
    table = rng.normal(size=(6, 4)) * 1.5
    max_norm = 1.7 if norm_type != math.inf else 1.2
    kw = {"max_norm": max_norm, "norm_type": norm_type}
    out, (g,), ct = value_and_grads(lambda t: fd.embedding(t, jnp.asarray(IDS), **kw), [table])
    tout, t_after, w = _torch_embedding(table, IDS, **kw)
    close(out, tout.detach().numpy())
    # the table is not mutated here; renormalized_table is what torch holds afterwards
    close(renormalized_table(jnp.asarray(table), jnp.asarray(IDS), **kw), t_after)
    assert np.any(np.abs(t_after - table) > 1e-3), "no row was renormalised: the test checks nothing"
    # torch differentiates the gather of its renormalised table: our gradient at that table is the same
    tout.backward(torch.tensor(ct))
    _, (g_after,), _ = value_and_grads(lambda t: fd.embedding(t, jnp.asarray(IDS), **kw), [t_after])
    close(g_after, w.grad.numpy())
    # at the table given here (rows longer than max_norm) the gradient is the true derivative (hand = autodiff)
    g_ref = jax.vjp(lambda t: fd.embedding.ref(t, jnp.asarray(IDS), **kw), jnp.asarray(table))[1](jnp.asarray(ct))
    close(g, g_ref[0])


def test_embedding_scale_grad_by_freq_matches_torch():
    rng = np.random.default_rng(6)
    table = rng.normal(size=(6, 3))
    table[3] = 0.0      # torch returns the stored padding row (zeros at its init); here it is the constant 0
    for kw in [{}, {"padding_idx": 3}, {"max_norm": 1.1}]:
        def lookup(t, kw=kw):
            return fd.embedding(t, jnp.asarray(IDS), scale_grad_by_freq=True, **kw)

        out, (g,), ct = value_and_grads(lookup, [table])
        tout, t_after, w = _torch_embedding(table, IDS, scale_grad_by_freq=True, **kw)
        close(out, tout.detach().numpy())
        tout.backward(torch.tensor(ct))
        if "max_norm" in kw:     # compared where torch takes its gradient, the renormalised table
            g = value_and_grads(lookup, [t_after])[1][0]
        close(g, w.grad.numpy())
    # row 3 occurs three times: its gradient is the mean, not the sum, of its three cotangents
    plain = value_and_grads(lambda t: fd.embedding(t, jnp.asarray(IDS)), [table])[1][0]
    scaled = value_and_grads(lambda t: fd.embedding(t, jnp.asarray(IDS), scale_grad_by_freq=True), [table])[1][0]
    close(scaled[3], plain[3] / 3)


def test_embedding_scale_grad_by_freq_hand_rule_with_repeats():
    """The registry draws scale_grad_by_freq with distinct ids (with repeats it is no derivative, so finite
    differences cannot agree); with repeats, every other check of the checker: hand vs the reference's autodiff
    (float64 and float32), jit, vmap and second order."""
    rng = np.random.default_rng(7)
    prim = fd.get("embedding")
    ex = fd.Example((jnp.asarray(rng.normal(size=(5, 3))), jnp.asarray(IDS % 5)),
                    {"scale_grad_by_freq": True, "max_norm": 1.2, "padding_idx": 1}, "repeats")
    with jax.enable_x64(True):
        rows = gc.check_example(prim, ex, jax.random.PRNGKey(0), checks=("vjp", "jit", "vmap", "hvp"), ex2=ex)
    assert {r.check for r in rows} >= {"vjp", "jit", "vmap", "hvp"}
    assert all(r.passed for r in rows), "\n" + gc.format_table([r for r in rows if not r.passed])


def test_embedding_option_errors_are_one_line():
    table, ids = jnp.ones((4, 2)), jnp.array([0, 1])
    bad = [
        (lambda: fd.embedding(table, ids, max_norm=0.0), "embedding: max_norm must be None or a positive"),
        (lambda: fd.embedding(table, ids, max_norm=-1.0), "embedding: max_norm must be None or a positive"),
        (lambda: fd.embedding(table, ids, max_norm=1.0, norm_type=0.5), "embedding: norm_type"),
        (lambda: fd.embedding(table, ids, scale_grad_by_freq=1), "embedding: scale_grad_by_freq"),
    ]
    for call, message in bad:
        with pytest.raises(ValueError, match=message) as err:
            call()
        assert "\n" not in str(err.value)
