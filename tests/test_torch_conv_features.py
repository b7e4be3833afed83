"""torch's convolution features against torch itself: ``padding_mode`` (zeros, reflect, replicate, circular) of
conv1d/2d/3d and conv_transpose3d, values and the hand-derived gradients of input, kernel and bias (float64).

Layouts converted as in test_torch_cnn.py: funcdl is channels-last (N, *sp, C) with kernels (*k, C_in/G, C_out)
(conv) or (*k, C_in, C_out/G) (transposed); torch is (N, C, *sp) with (C_out, C_in/G, *k) or (C_in, C_out/G, *k).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fd
from funcdl.core import gradcheck as gc

pytestmark = pytest.mark.slow          # compiles many configurations (CI runs it; the quick subset skips it)

torch = pytest.importorskip("torch")
F = torch.nn.functional

TOL = 1e-10


def nchw(t, n):
    return t.permute(0, n + 1, *range(1, n + 1))


def nhwc(t, n):
    return t.permute(0, *range(2, n + 2), 1)


def close(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    np.testing.assert_allclose(a, b, rtol=TOL, atol=TOL * max(1.0, float(np.abs(b).max(initial=0))))


def ours(prim, x, w, b, settings, seed):
    """Output and hand-derived (dx, dw, db) for a random cotangent, in one compiled program."""
    args = [jnp.asarray(a, jnp.float64) for a in (x, w, b)]
    f = lambda x, w, b: prim(x, w, b, **settings)
    ct = np.random.default_rng(seed).normal(size=jax.eval_shape(f, *args).shape)

    def value_and_vjp(args, ct):
        y, pull = jax.vjp(f, *args)
        return y, pull(ct)

    y, grads = gc.jit_once(value_and_vjp)(args, jnp.asarray(ct))
    return np.asarray(y), [np.asarray(g) for g in grads], ct


def theirs(tfn, x, w, b, n, w_perm, ct):
    """torch's output (back in channels-last) and (dx, dw, db) for the same cotangent."""
    tx, tw, tb = (torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=True) for a in (x, w, b))
    y = nhwc(tfn(nchw(tx, n), tw.permute(*w_perm), tb), n)
    y.backward(torch.tensor(ct))
    return y.detach().numpy(), [t.grad.numpy() for t in (tx, tw, tb)]


def compare(prim, tfn, n, w_perm, x, w, b, settings, seed=0):
    y, grads, ct = ours(prim, x, w, b, settings, seed)
    yt, grads_t = theirs(tfn, x, w, b, n, w_perm, ct)
    close(y, yt)
    for g, gt in zip(grads, grads_t, strict=True):
        close(g, gt)


def rand(rng, *shape):
    return rng.normal(size=shape)


# -- padding_mode --------------------------------------------------------------------------------------------------

TORCH_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
MODES = ["zeros", "reflect", "replicate", "circular"]

# per dimension: (input spatial, kernel, stride, dilation, groups, padding as torch takes it); C_in 4, C_out 4;
# every pad below the input side, so that reflect is valid too
CASES = {
    1: [((7,), (3,), 1, 1, 1, 2), ((6,), (2,), 2, 2, 2, 3), ((5,), (3,), 3, 1, 4, 4)],
    2: [((5, 6), (3, 2), 1, 1, 1, (2, 1)), ((4, 5), (2, 3), (2, 1), (1, 2), 2, (1, 3)),
        ((5, 4), (3, 3), 2, 1, 4, 1)],
    3: [((3, 4, 3), (2, 2, 2), 1, 1, 1, (1, 2, 1)), ((4, 3, 3), (2, 2, 3), (2, 1, 1), (1, 2, 1), 2, (2, 1, 1))],
}


def _torch_padded_conv(n, mode, stride, dilation, groups, padding):
    """torch.nn.Conv*d's forward: F.pad with the mode (F.pad takes the last axis first, (lo, hi) each), then a
    VALID convolution; zeros is the convolution's own padding."""
    pads = (padding,) * n if isinstance(padding, int) else padding

    def fn(x, w, b):
        if mode == "zeros":
            return TORCH_CONV[n](x, w, b, stride=stride, dilation=dilation, groups=groups, padding=pads)
        flat = [p for p in reversed(pads) for _ in (0, 1)]
        return TORCH_CONV[n](F.pad(x, flat, mode=mode), w, b, stride=stride, dilation=dilation, groups=groups)

    return fn


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("mode", MODES)
def test_padding_mode_matches_torch(n, mode):
    prim = {1: fd.conv1d, 2: fd.conv2d, 3: fd.conv3d}[n]
    rng = np.random.default_rng(n * 10 + MODES.index(mode))
    for spatial, kernel, stride, dilation, groups, padding in CASES[n]:
        x, w, b = rand(rng, 2, *spatial, 4), rand(rng, *kernel, 4 // groups, 4), rand(rng, 4)
        settings = {"stride": stride, "dilation": dilation, "groups": groups, "padding": padding,
                    "padding_mode": mode}
        w_perm = (n + 1, n, *range(n))
        compare(prim, _torch_padded_conv(n, mode, stride, dilation, groups, padding), n, w_perm, x, w, b, settings)


def test_circular_padding_of_a_whole_period_and_reflect_up_to_the_edge():
    """The widest pads torch allows: circular pad = L (a whole period on each side), reflect pad = L - 1."""
    rng = np.random.default_rng(3)
    x, w, b = rand(rng, 2, 4, 3), rand(rng, 3, 3, 2), rand(rng, 2)
    for mode, pad in [("circular", 4), ("reflect", 3)]:
        settings = {"padding": pad, "padding_mode": mode}
        compare(fd.conv1d, _torch_padded_conv(1, mode, 1, 1, 1, pad), 1, (2, 1, 0), x, w, b, settings)


def test_same_padding_with_a_mode_is_the_explicit_pad_it_resolves_to():
    rng = np.random.default_rng(4)
    x, w = jnp.asarray(rand(rng, 1, 6, 7, 2)), jnp.asarray(rand(rng, 4, 3, 2, 3))
    for mode in MODES[1:]:
        y = fd.conv2d(x, w, padding="SAME", padding_mode=mode)
        # SAME for kernel (4, 3) at stride 1: (1, 2) rows, (1, 1) columns (the extra one after, as JAX)
        np.testing.assert_allclose(y, fd.conv2d(x, w, padding=((1, 2), (1, 1)), padding_mode=mode), rtol=1e-12)
        assert y.shape == (1, 6, 7, 3)


def test_a_mode_without_padding_is_a_no_op():
    rng = np.random.default_rng(5)
    x, w = jnp.asarray(rand(rng, 2, 5, 5, 2)), jnp.asarray(rand(rng, 3, 3, 2, 2))
    for mode in MODES[1:]:
        for padding in ("VALID", 0):
            np.testing.assert_array_equal(fd.conv2d(x, w, padding=padding, padding_mode=mode), fd.conv2d(x, w))


@pytest.mark.parametrize("call, message", [
    (lambda: fd.conv1d(jnp.ones((1, 5, 2)), jnp.ones((3, 2, 2)), padding=1, padding_mode="mirror"),
     r"^conv1d: unknown padding_mode 'mirror'; use 'zeros', 'reflect', 'replicate' or 'circular'"),
    (lambda: fd.conv2d(jnp.ones((1, 3, 5, 2)), jnp.ones((3, 3, 2, 2)), padding=3, padding_mode="reflect"),
     r"^conv2d: padding_mode='reflect' needs padding < the input side .* axis 0 of length 3 is padded by \(3, 3\)"),
    (lambda: fd.conv3d(jnp.ones((1, 4, 2, 4, 1)), jnp.ones((1, 1, 1, 1, 1)), padding=(0, 3, 0),
                       padding_mode="circular"),
     r"^conv3d: padding_mode='circular' needs padding <= the input side .* axis 1 of length 2"),
    (lambda: fd.conv1d(jnp.ones((1, 5, 2)), jnp.ones((3, 2, 2)), padding=((-1, 2),), padding_mode="replicate"),
     r"^conv1d: padding_mode='replicate' needs non-negative padding"),
], ids=["unknown-mode", "reflect-too-wide", "circular-too-wide", "negative-pad"])
def test_bad_padding_modes_are_refused_in_one_line(call, message):
    with pytest.raises(ValueError, match=message) as err:
        call()
    assert "\n" not in str(err.value)


# -- conv_transpose3d ----------------------------------------------------------------------------------------------

# (input spatial, kernel, stride, padding, output_padding, dilation, groups, C_in, C_out, bias)
CONVT3D = [
    ((3, 2, 3), (2, 3, 2), 1, 0, 0, 1, 1, 2, 3, True),
    ((2, 3, 2), (3, 2, 2), 2, 1, 1, 1, 2, 4, 2, True),
    ((3, 3, 2), (2, 2, 3), (1, 2, 3), (1, 0, 1), (0, 1, 2), 1, 1, 2, 2, False),
    ((2, 2, 3), (3, 2, 2), 2, (0, 1, 1), 1, (2, 1, 3), 2, 2, 4, True),
    ((2, 3, 2), (2, 2, 2), (3, 1, 2), 1, (2, 0, 0), (1, 2, 1), 1, 3, 2, True),
]


def test_conv_transpose3d_matches_torch():
    rng = np.random.default_rng(6)
    for spatial, kernel, s, p, op, d, g, cin, cout, bias in CONVT3D:
        x, w = rand(rng, 2, *spatial, cin), rand(rng, *kernel, cin, cout // g)
        b = rand(rng, cout) if bias else np.zeros(cout)
        settings = {"stride": s, "padding": p, "output_padding": op, "dilation": d, "groups": g}

        def tfn(x, w, b, s=s, p=p, op=op, d=d, g=g):
            return F.conv_transpose3d(x, w, b, stride=s, padding=p, output_padding=op, groups=g, dilation=d)

        compare(fd.conv_transpose3d, tfn, 3, (3, 4, 0, 1, 2), x, w, b, settings)


def test_conv_transpose3d_is_exported_and_registered():
    assert fd.get("conv_transpose3d") is fd.conv_transpose3d
    y = fd.conv_transpose3d(jnp.ones((1, 2, 2, 2, 1)), jnp.ones((2, 2, 2, 1, 3)), stride=2)
    assert y.shape == (1, 4, 4, 4, 3)
