"""Convolution, pooling and normalisation against torch.nn.functional: values and gradients, every configuration
of each primitive's example factory (layouts converted: NHWC <-> NCHW, HWIO <-> OIHW)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fd
from funcdl.core import gradcheck as gc
from funcdl.nn.conv import normalize_padding

pytestmark = pytest.mark.slow          # compiles many configurations (CI runs it; the quick subset skips it)

torch = pytest.importorskip("torch")
F = torch.nn.functional


def to_torch(a):
    return torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=True)


def nchw(t, n):
    """channels-last (N, *sp, C) -> (N, C, *sp)"""
    return t.permute(0, n + 1, *range(1, n + 1))


def nhwc(t, n):
    return t.permute(0, *range(2, n + 2), 1)


def torch_pad(t, pads, value=0.0):
    """(lo, hi) per spatial axis of an NC* tensor; F.pad takes the last axis first."""
    flat = []
    for lo, hi in reversed(pads):
        flat += [lo, hi]
    return F.pad(t, flat, value=value)


def hand_and_grads(fn, args, seed):
    """Value and hand-derived VJP of ``fn`` with a random cotangent; returns (y, {input index: grad}, ct)."""
    args = [None if a is None else jnp.asarray(a, jnp.float64) for a in args]
    diff = [i for i, a in enumerate(args) if a is not None]

    def f(*d):
        full = list(args)
        for i, v in zip(diff, d, strict=True):
            full[i] = v
        return fn(*full)

    primals = [args[i] for i in diff]
    ct = np.random.default_rng(seed).normal(size=jax.eval_shape(f, *primals).shape)

    def value_and_vjp(primals, ct):      # one compiled program (op by op, every operation compiles on its own)
        y, pull = jax.vjp(f, *primals)
        return y, pull(ct)

    y, grads = gc.jit_once(value_and_vjp)(primals, jnp.asarray(ct))
    return np.asarray(y), dict(zip(diff, grads, strict=True)), ct


def torch_grads(y, tensors, ct):
    y.backward(torch.tensor(np.asarray(ct)))
    return [None if t is None else t.grad.numpy() for t in tensors]


def close(a, b, tol=1e-10):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, float(np.abs(b).max(initial=0))))


def examples(name):
    return fd.get(name).examples(jax.random.PRNGKey(7), jnp.float64)


# -- convolutions -------------------------------------------------------------------------------------------------

CONV = {"conv1d": (1, F.conv1d), "conv2d": (2, F.conv2d), "conv3d": (3, F.conv3d)}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CONV))
def test_conv_matches_torch(name):
    n, tconv = CONV[name]
    prim = fd.get(name)
    for ex in examples(name):
        x, w, b = ex.args
        s = ex.settings
        y, g, ct = hand_and_grads(lambda x, w, b, s=s: prim(x, w, b, **s), (x, w, b), 0)
        stride = s["stride"] if isinstance(s["stride"], int) else tuple(s["stride"])
        dil = s["dilation"] if isinstance(s["dilation"], int) else tuple(s["dilation"])
        st = (stride,) * n if isinstance(stride, int) else stride
        dl = (dil,) * n if isinstance(dil, int) else dil
        pads = normalize_padding(name, s["padding"], n, x.shape[1:1 + n], w.shape[:n], st, dl)
        tx, tw = to_torch(x), to_torch(w)
        tb = None if b is None else to_torch(b)
        w_oihw = tw.permute(n + 1, n, *range(n))
        mode = s.get("padding_mode", "zeros")           # torch.nn.Conv*d: F.pad with the mode, then VALID
        xp = torch_pad(nchw(tx, n), pads) if mode == "zeros" else F.pad(nchw(tx, n), [p for pair in reversed(pads)
                                                                                      for p in pair], mode=mode)
        yt = nhwc(tconv(xp, w_oihw, tb, stride=st, dilation=dl, groups=s["groups"]), n)
        close_conv(y, g, yt, (tx, tw, tb), ct)


def close_conv(y, g, yt, torch_inputs, ct):
    """Our output and gradients ({input index: grad}) against torch's output and its (x, w[, b]) gradients."""
    close(y, yt.detach().numpy())
    gt = torch_grads(yt, list(torch_inputs), ct)
    for i, t in enumerate(torch_inputs):
        if t is not None:
            close(g[i], gt[i])


@pytest.mark.slow
def test_conv2d_same_padding_matches_torch_same():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 8, 3), jnp.float64)
    for k, d in [((3, 3), 1), ((4, 2), 1), ((3, 2), 2)]:
        w = jax.random.normal(jax.random.PRNGKey(1), (*k, 3, 5), jnp.float64)
        y = fd.conv2d(x, w, padding="SAME", dilation=d)
        yt = F.conv2d(nchw(to_torch(x), 2), to_torch(w).permute(3, 2, 0, 1), padding="same", dilation=d)
        close(y, nhwc(yt, 2).detach().numpy())


def test_causal_conv1d_sees_only_the_past():
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 12, 2), jnp.float64)
    w = jax.random.normal(jax.random.PRNGKey(1), (3, 2, 4), jnp.float64)
    y = fd.conv1d(x, w, padding="CAUSAL", dilation=2)
    assert y.shape == (1, 12, 4)
    x2 = x.at[:, 7:].set(100.0)                               # change the future of t = 6
    y2 = fd.conv1d(x2, w, padding="CAUSAL", dilation=2)
    np.testing.assert_allclose(y[:, :7], y2[:, :7])
    assert not np.allclose(y[:, 7:], y2[:, 7:])


CONVT = {"conv_transpose1d": (1, F.conv_transpose1d), "conv_transpose2d": (2, F.conv_transpose2d)}


@pytest.mark.parametrize("name", list(CONVT))
def test_conv_transpose_matches_torch(name):
    n, tconv = CONVT[name]
    prim = fd.get(name)
    for ex in examples(name):
        x, w, b = ex.args
        s = ex.settings
        y, g, ct = hand_and_grads(lambda x, w, b, s=s: prim(x, w, b, **s), (x, w, b), 0)
        tup = lambda v: (v,) * n if isinstance(v, int) else tuple(v)
        st, dl, op = tup(s["stride"]), tup(s["dilation"]), tup(s["output_padding"])
        pads = normalize_padding(name, s["padding"], n, (0,) * n, w.shape[:n], st, dl)
        tx, tw = to_torch(x), to_torch(w)
        tb = None if b is None else to_torch(b)
        yt = tconv(nchw(tx, n), tw.permute(n, n + 1, *range(n)), tb, stride=st, padding=0, output_padding=op,
                   groups=s["groups"], dilation=dl)
        index = (slice(None), slice(None), *(slice(lo, yt.shape[2 + i] - hi) for i, (lo, hi) in enumerate(pads)))
        yt = nhwc(yt[index], n)
        close_conv(y, g, yt, (tx, tw, tb), ct)


def test_conv_transpose_symmetric_padding_is_torch_padding():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 4, 3), jnp.float64)
    w = jax.random.normal(jax.random.PRNGKey(1), (4, 4, 3, 2), jnp.float64)
    y = fd.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1)
    yt = F.conv_transpose2d(nchw(to_torch(x), 2), to_torch(w).permute(2, 3, 0, 1), stride=2, padding=1,
                            output_padding=1)
    close(y, nhwc(yt, 2).detach().numpy())


# -- pooling ----------------------------------------------------------------------------------------------------

def _pool_settings(name, n, x, s):
    k = s["kernel"] if not isinstance(s["kernel"], int) else (s["kernel"],) * n
    st = k if s.get("stride") is None else (s["stride"] if not isinstance(s["stride"], int) else (s["stride"],) * n)
    d = s.get("dilation", 1)
    d = (d,) * n if isinstance(d, int) else d
    pads = normalize_padding(name, s["padding"], n, x.shape[1:1 + n], k, st, d)
    return tuple(k), tuple(st), pads, tuple(d)


@pytest.mark.parametrize("n", [1, 2])
def test_max_pool_matches_torch(n):
    name = f"max_pool{n}d"
    tpool = F.max_pool1d if n == 1 else F.max_pool2d
    for ex in examples(name):
        (x,) = ex.args
        s = ex.settings
        y, g, ct = hand_and_grads(lambda x, s=s: fd.get(name)(x, **s), (x,), 0)
        k, st, pads, d = _pool_settings(name, n, x, s)
        tx = to_torch(x)
        yt = nhwc(tpool(torch_pad(nchw(tx, n), pads, -np.inf), k, st, 0, d), n)
        close(y, yt.detach().numpy())
        close(g[0], torch_grads(yt, [tx], ct)[0])


def test_max_pool_tie_rule_matches_torch():
    """Ties: the whole gradient goes to the first maximal element of the window (row-major), as torch on CPU."""
    x = jnp.asarray(np.random.default_rng(0).integers(0, 3, size=(2, 6, 6, 3)), jnp.float64)
    for kw in [{"kernel": 2}, {"kernel": 3, "stride": 2, "padding": 1}]:
        y, g, ct = hand_and_grads(lambda x, kw=kw: fd.max_pool2d(x, **kw), (x,), 0)
        tx = to_torch(x)
        yt = nhwc(F.max_pool2d(nchw(tx, 2), kw["kernel"], kw.get("stride"), kw.get("padding", 0)), 2)
        close(y, yt.detach().numpy())
        close(g[0], torch_grads(yt, [tx], ct)[0])
        assert float(jnp.sum(g[0] != 0)) <= y.size        # one receiver per window


@pytest.mark.parametrize("n", [1, 2])
def test_avg_pool_matches_torch(n):
    name = f"avg_pool{n}d"
    tpool = F.avg_pool1d if n == 1 else F.avg_pool2d
    compared = 0
    for ex in examples(name):
        (x,) = ex.args
        s = ex.settings
        k, st, pads, _ = _pool_settings(name, n, x, s)
        symmetric = all(lo == hi for lo, hi in pads)
        if not symmetric and not s["count_include_pad"]:
            continue                                # torch has no asymmetric padding that excludes the pad
        y, g, ct = hand_and_grads(lambda x, s=s: fd.get(name)(x, **s), (x,), 0)
        tx = to_torch(x)
        if symmetric:
            yt = tpool(nchw(tx, n), k, st, tuple(lo for lo, _ in pads), count_include_pad=s["count_include_pad"])
        else:
            yt = tpool(torch_pad(nchw(tx, n), pads), k, st, 0)
        yt = nhwc(yt, n)
        close(y, yt.detach().numpy())
        close(g[0], torch_grads(yt, [tx], ct)[0])
        compared += 1
    assert compared >= 3


def test_global_and_adaptive_pools_match_torch():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 7, 6, 3))
    for fn, tfn in [(fd.global_avg_pool, lambda t: t.mean(dim=(2, 3))),
                    (fd.global_max_pool, lambda t: t.amax(dim=(2, 3)))]:
        y, g, ct = hand_and_grads(fn, (x,), 0)
        tx = to_torch(x)
        yt = tfn(nchw(tx, 2))
        close(y, yt.detach().numpy())
        close(g[0], torch_grads(yt, [tx], ct)[0])
    for ex in examples("adaptive_avg_pool2d") + examples("adaptive_avg_pool1d"):
        (x,) = ex.args
        n = x.ndim - 2
        prim = fd.adaptive_avg_pool2d if n == 2 else fd.adaptive_avg_pool1d
        tfn = F.adaptive_avg_pool2d if n == 2 else F.adaptive_avg_pool1d
        y, g, ct = hand_and_grads(lambda x, prim=prim, s=ex.settings: prim(x, **s), (x,), 0)
        tx = to_torch(x)
        yt = nhwc(tfn(nchw(tx, n), ex.settings["output_size"]), n)
        close(y, yt.detach().numpy())
        close(g[0], torch_grads(yt, [tx], ct)[0])


# -- normalisation ----------------------------------------------------------------------------------------------


def test_batch_norm_training_and_running_stats_match_torch():
    rng = np.random.default_rng(5)
    c = 4
    params, state = fd.batch_norm_init(c, jnp.float64)
    params = {"scale": jnp.asarray(rng.normal(size=c)), "bias": jnp.asarray(rng.normal(size=c))}
    bn = torch.nn.BatchNorm2d(c, momentum=0.1, eps=1e-5).double()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(np.asarray(params["scale"])))
        bn.bias.copy_(torch.tensor(np.asarray(params["bias"])))
    for step in range(5):
        x = rng.normal(size=(3, 5, 4, c)) * (1 + step) + step

        def f(x, scale, bias, state=state):
            return fd.batch_norm_apply({"scale": scale, "bias": bias}, state, x, train=True)[0]

        y, g, ct = hand_and_grads(f, (x, params["scale"], params["bias"]), 0)
        _, state = fd.batch_norm_apply(params, state, jnp.asarray(x), train=True)
        tx = to_torch(x)
        bn.zero_grad()
        yt = nhwc(bn(nchw(tx, 2)), 2)
        close(y, yt.detach().numpy())
        yt.backward(torch.tensor(ct))
        close(g[0], tx.grad.numpy())
        close(g[1], bn.weight.grad.numpy())
        close(g[2], bn.bias.grad.numpy())
        close(state["mean"], bn.running_mean.numpy())
        close(state["var"], bn.running_var.numpy())
    # evaluation with the running statistics
    bn.eval()
    x = rng.normal(size=(2, 3, 3, c))
    y, g, ct = hand_and_grads(lambda x, s, b: fd.batch_norm_apply({"scale": s, "bias": b}, state, x, train=False)[0],
                              (x, params["scale"], params["bias"]), 1)
    tx = to_torch(x)
    bn.zero_grad()
    yt = nhwc(bn(nchw(tx, 2)), 2)
    close(y, yt.detach().numpy())
    yt.backward(torch.tensor(ct))
    close(g[0], tx.grad.numpy())
    close(g[1], bn.weight.grad.numpy())


def test_batch_norm_dense_matches_torch():
    rng = np.random.default_rng(6)
    x, gamma, beta = rng.normal(size=(8, 5)), rng.normal(size=5), rng.normal(size=5)
    y, g, ct = hand_and_grads(lambda x, a, b: fd.batch_norm(x, a, b), (x, gamma, beta), 0)
    tx, ta, tb = to_torch(x), to_torch(gamma), to_torch(beta)
    yt = F.batch_norm(tx, None, None, ta, tb, training=True)
    close(y, yt.detach().numpy())
    for a, b in zip(g.values(), torch_grads(yt, [tx, ta, tb], ct), strict=True):
        close(a, b)


def test_group_and_instance_norm_match_torch():
    for ex in examples("group_norm") + examples("instance_norm"):
        x, gamma, beta = ex.args
        n = x.ndim - 2
        s = dict(ex.settings)
        groups = s.get("groups", x.shape[-1])
        prim = fd.group_norm if "groups" in s else fd.instance_norm
        y, g, ct = hand_and_grads(lambda x, a, b, prim=prim, s=s: prim(x, a, b, **s), (x, gamma, beta), 0)
        tx = to_torch(x)
        ta = None if gamma is None else to_torch(gamma)
        tb = None if beta is None else to_torch(beta)
        yt = nhwc(F.group_norm(nchw(tx, n), groups, ta, tb, eps=s.get("eps", 1e-5)), n)
        if prim is fd.instance_norm:
            yi = nhwc(F.instance_norm(nchw(tx, n).detach(), weight=ta, bias=tb, eps=s.get("eps", 1e-5)), n)
            close(yt.detach().numpy(), yi.detach().numpy())
        close(y, yt.detach().numpy())
        gt = torch_grads(yt, [tx, ta, tb], ct)
        for i, t in enumerate(gt):
            if t is not None:
                close(g[i], t)


def test_channel_layer_norm_matches_torch():
    rng = np.random.default_rng(8)
    x, w, b = rng.normal(size=(2, 3, 4, 6)), rng.normal(size=6), rng.normal(size=6)
    y = fd.nn.norm.channel_layer_norm(jnp.asarray(x), jnp.asarray(w), jnp.asarray(b))
    yt = F.layer_norm(torch.tensor(x), (6,), torch.tensor(w), torch.tensor(b))
    close(y, yt.numpy())
