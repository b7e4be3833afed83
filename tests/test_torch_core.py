"""funcdl's core primitives agree with torch.nn.functional in values and gradients (float64).

Every activation, ``dense`` (torch keeps the weight transposed, (out, in)), dropout (eval mode, and with the
same mask), and every loss with its options. Gradients are compared as VJPs with a random cotangent.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fd
from funcdl.core.gradcheck import rel_error

torch = pytest.importorskip("torch")
F = torch.nn.functional

TOL = 1e-10
RNG = np.random.default_rng(0)


def _normal(*shape, scale=1.0):
    return RNG.normal(size=shape) * scale


def _probs(*shape):
    e = np.exp(RNG.normal(size=shape))
    return e / e.sum(-1, keepdims=True)


def compare(jax_fn, torch_fn, inputs, diff=(0,), tol=TOL):
    """Value and VJP (random cotangent) of ``jax_fn`` and ``torch_fn`` on the same numpy inputs.

    ``inputs`` may hold None (an absent optional input) and integer arrays (labels); ``diff`` lists the
    positions of the inputs to differentiate.
    """
    j_in = [None if a is None else jnp.asarray(a) for a in inputs]

    def f(*d):
        full = list(j_in)
        for i, v in zip(diff, d, strict=True):
            full[i] = v
        return jax_fn(*full)

    out, pullback = jax.vjp(f, *[j_in[i] for i in diff])
    ct = RNG.normal(size=np.shape(out))
    j_grads = pullback(jnp.asarray(ct, out.dtype))

    t_in = [None if a is None else torch.tensor(np.asarray(a), requires_grad=i in diff) for i, a in enumerate(inputs)]
    t_out = torch_fn(*t_in)
    t_out.backward(torch.tensor(ct, dtype=t_out.dtype))
    err = rel_error(np.asarray(out), t_out.detach().numpy())
    assert err <= tol, f"values differ: rel error {err:.2e}"
    for i, g in zip(diff, j_grads, strict=True):
        err = rel_error(np.asarray(g), t_in[i].grad.numpy())
        assert err <= tol, f"gradient of input {i} differs: rel error {err:.2e}"


# ----------------------------------------------------------------------------------------------- activations
def _act_input():
    # random values plus the kinks of every piecewise activation, to compare the conventions there too
    x = _normal(6, 7, scale=3.0)
    x[0, :7] = [0.0, -1.0, 1.0, -3.0, 3.0, 20.0, 2.5]
    return x


ACTIVATIONS = [
    ("identity", fd.identity, lambda x: x * 1.0),
    ("relu", fd.relu, F.relu),
    ("leaky_relu", fd.leaky_relu, F.leaky_relu),
    ("leaky_relu 0.2", lambda x: fd.leaky_relu(x, negative_slope=0.2), lambda x: F.leaky_relu(x, 0.2)),
    ("elu", fd.elu, F.elu),
    ("elu alpha=0.5", lambda x: fd.elu(x, alpha=0.5), lambda x: F.elu(x, alpha=0.5)),
    ("selu", fd.selu, F.selu),
    ("gelu", fd.gelu, F.gelu),
    ("gelu tanh", lambda x: fd.gelu(x, approximate=True), lambda x: F.gelu(x, approximate="tanh")),
    ("silu", fd.silu, F.silu),
    ("sigmoid", fd.sigmoid, torch.sigmoid),
    ("tanh", fd.tanh, torch.tanh),
    ("softplus", fd.softplus, F.softplus),
    ("softplus beta=2 threshold=5", lambda x: fd.softplus(x, beta=2.0, threshold=5.0),
     lambda x: F.softplus(x, beta=2.0, threshold=5.0)),
    ("mish", fd.mish, F.mish),
    ("hard_tanh", fd.hard_tanh, F.hardtanh),
    ("hard_tanh -0.5..2", lambda x: fd.hard_tanh(x, min_val=-0.5, max_val=2.0),
     lambda x: F.hardtanh(x, -0.5, 2.0)),
    ("hard_sigmoid", fd.hard_sigmoid, F.hardsigmoid),
    ("softmax axis -1", fd.softmax, lambda x: F.softmax(x, dim=-1)),
    ("softmax axis 0", lambda x: fd.softmax(x, axis=0), lambda x: F.softmax(x, dim=0)),
    ("log_softmax axis -1", fd.log_softmax, lambda x: F.log_softmax(x, dim=-1)),
    ("log_softmax axis 0", lambda x: fd.log_softmax(x, axis=0), lambda x: F.log_softmax(x, dim=0)),
]


@pytest.mark.parametrize("name,ours,theirs", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
def test_activation(name, ours, theirs):
    # torch's hardsigmoid backward multiplies by the float32 constant 1/6 even in float64 (0.1666666716...),
    # a relative difference of 3e-8 from the exact slope that we use
    compare(ours, theirs, [_act_input()], tol=1e-7 if name == "hard_sigmoid" else TOL)


def test_softmax_on_3d_middle_axis():
    x = _normal(2, 3, 4)
    compare(lambda a: fd.softmax(a, axis=1), lambda a: F.softmax(a, dim=1), [x])
    compare(lambda a: fd.log_softmax(a, axis=1), lambda a: F.log_softmax(a, dim=1), [x])


def test_every_activation_is_compared():
    covered = {a[0].split()[0] for a in ACTIVATIONS}
    assert set(fd.activations.ACTIVATIONS) - {"swish", "gelu_tanh"} <= covered


# --------------------------------------------------------------------------------------------------- dense
@pytest.mark.parametrize("lead", [(5,), (2, 3), ()])
@pytest.mark.parametrize("bias", [True, False])
def test_dense(lead, bias):
    x, w, b = _normal(*lead, 6), _normal(6, 4), _normal(4) if bias else None
    # torch's F.linear takes the weight as (out, in) = our W transposed
    compare(fd.dense, lambda x, w, b: F.linear(x, w.T, b), [x, w, b], diff=(0, 1, 2) if bias else (0, 1))


# ------------------------------------------------------------------------------------------------- dropout
def test_dropout_eval_mode_is_identity():
    x = _normal(5, 6)
    compare(lambda a: fd.dropout(a, jax.random.PRNGKey(0), rate=0.4, train=False),
            lambda a: F.dropout(a, 0.4, training=False), [x])
    compare(lambda a: fd.dropout(a, None, rate=0.0), lambda a: F.dropout(a, 0.0, training=True), [x])


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.9])
def test_dropout_with_torchs_mask(rate, monkeypatch):
    """Draw torch's dropout, read its mask off the output, hand the same mask to our primitive (both its
    forward and its backward regenerate the mask through ``funcdl.nn._dropout.dropout_mask``): values and
    gradients agree."""
    x = _normal(40, 30) + 0.1                     # no exact zeros, so the mask can be read off the output
    torch.manual_seed(0)
    holder = {}

    def theirs(a):
        y = F.dropout(a, rate, training=True)
        holder["mask"] = (y != 0).detach().numpy()
        return y

    module = sys.modules["funcdl.nn._dropout"]
    t_in = torch.tensor(x, requires_grad=True)
    theirs(t_in)                                  # draw once to learn torch's mask for seed 0
    mask = holder["mask"]
    assert abs(mask.mean() - (1 - rate)) < 0.05
    monkeypatch.setattr(module, "dropout_mask", lambda key, shape, r: jnp.asarray(mask))
    torch.manual_seed(0)                          # the same mask again inside compare
    compare(lambda a: fd.dropout(a, jax.random.PRNGKey(0), rate=rate), theirs, [x])


def test_dropout_rate_one_drops_everything():
    x = _normal(4, 3)
    compare(lambda a: fd.dropout(a, jax.random.PRNGKey(0), rate=1.0), lambda a: F.dropout(a, 1.0, training=True),
            [x])


# --------------------------------------------------------------------------------------------------- losses
def _labels(n, c, *shape):
    return RNG.integers(0, c, size=(n, *shape))


def _ce_torch(logits, target, weight=None, **kw):
    # torch's class axis is 1; ours is last
    if logits.ndim > 2:
        logits = logits.movedim(-1, 1)
        if target.is_floating_point():
            target = target.movedim(-1, 1)
    return F.cross_entropy(logits, target, weight, **kw)


CE_CASES = [
    ({}, False), ({"reduction": "sum"}, False), ({"reduction": "none"}, False), ({"label_smoothing": 0.15}, False),
    ({}, True), ({"label_smoothing": 0.2, "reduction": "sum"}, True), ({"reduction": "none"}, True),
]


@pytest.mark.parametrize("opts,weighted", CE_CASES)
def test_cross_entropy_labels(opts, weighted):
    x, y = _normal(8, 5, scale=2.0), _labels(8, 5)
    y[[1, 5]] = -100                                        # ignored
    w = RNG.uniform(0.5, 2.0, size=5) if weighted else None
    compare(lambda a, b, c: fd.softmax_cross_entropy(a, b, c, **opts),
            lambda a, b, c: _ce_torch(a, b, c, **opts), [x, y, w])


def test_cross_entropy_labels_3d_and_ignore_index():
    x, y = _normal(2, 3, 4), _labels(2, 4, 3)
    y[0, 1] = 2
    compare(lambda a, b: fd.softmax_cross_entropy(a, b, ignore_index=2, label_smoothing=0.1),
            lambda a, b: _ce_torch(a, b, ignore_index=2, label_smoothing=0.1), [x, y])


@pytest.mark.parametrize("opts,weighted", CE_CASES)
def test_cross_entropy_probabilities(opts, weighted):
    x, t = _normal(6, 4, scale=2.0), _probs(6, 4)
    w = RNG.uniform(0.5, 2.0, size=4) if weighted else None
    compare(lambda a, b, c: fd.softmax_cross_entropy_with_probs(a, b, c, **opts),
            lambda a, b, c: _ce_torch(a, b, c, **opts), [x, t, w], diff=(0, 1))


def test_cross_entropy_probabilities_3d():
    x, t = _normal(2, 3, 5), _probs(2, 3, 5)
    compare(fd.softmax_cross_entropy_with_probs, _ce_torch, [x, t], diff=(0, 1))


@pytest.mark.parametrize("opts", [{}, {"reduction": "sum"}, {"reduction": "none"}, {"ignore_index": 1}])
@pytest.mark.parametrize("weighted", [False, True])
def test_nll_loss(opts, weighted):
    logp = np.log(_probs(7, 4))
    y = _labels(7, 4)
    y[3] = opts.get("ignore_index", -100)
    w = RNG.uniform(0.5, 2.0, size=4) if weighted else None
    compare(lambda a, b, c: fd.nll_loss(a, b, c, **opts), lambda a, b, c: F.nll_loss(a, b, c, **opts), [logp, y, w])


REDUCTIONS = ["mean", "sum", "none"]


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_and_l1(reduction):
    x, t = _normal(5, 3), _normal(5, 3)
    compare(lambda a, b: fd.mse_loss(a, b, reduction=reduction), lambda a, b: F.mse_loss(a, b, reduction=reduction),
            [x, t], diff=(0, 1))
    compare(lambda a, b: fd.l1_loss(a, b, reduction=reduction), lambda a, b: F.l1_loss(a, b, reduction=reduction),
            [x, t], diff=(0, 1))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("delta", [1.0, 0.3, 2.5])
def test_huber_and_smooth_l1(reduction, delta):
    x, t = _normal(6, 4, scale=2.0), _normal(6, 4)
    compare(lambda a, b: fd.huber_loss(a, b, reduction=reduction, delta=delta),
            lambda a, b: F.huber_loss(a, b, reduction=reduction, delta=delta), [x, t], diff=(0, 1))
    compare(lambda a, b: fd.smooth_l1_loss(a, b, reduction=reduction, beta=delta),
            lambda a, b: F.smooth_l1_loss(a, b, reduction=reduction, beta=delta), [x, t], diff=(0, 1))


def test_smooth_l1_beta_zero_is_l1():
    x, t = _normal(6, 4), _normal(6, 4)
    compare(lambda a, b: fd.smooth_l1_loss(a, b, beta=0.0), lambda a, b: F.smooth_l1_loss(a, b, beta=0.0),
            [x, t], diff=(0, 1))


BCE_CASES = [({}, False, False), ({"reduction": "sum"}, True, False), ({"reduction": "none"}, False, True),
             ({}, True, True)]


@pytest.mark.parametrize("opts,weighted,pos_weighted", BCE_CASES)
def test_binary_cross_entropy_with_logits(opts, weighted, pos_weighted):
    x, t = _normal(6, 3, scale=3.0), RNG.uniform(size=(6, 3))
    t[0] = [0.0, 1.0, 1.0]
    w = RNG.uniform(0.5, 2.0, size=(6, 1)) if weighted else None
    pw = RNG.uniform(0.5, 3.0, size=3) if pos_weighted else None
    compare(lambda a, b, c, d: fd.binary_cross_entropy_with_logits(a, b, c, d, **opts),
            lambda a, b, c, d: F.binary_cross_entropy_with_logits(a, b, c, pos_weight=d, **opts),
            [x, t, w, pw], diff=(0, 1))


@pytest.mark.parametrize("opts,weighted", [({}, False), ({"reduction": "sum"}, True), ({"reduction": "none"}, True)])
def test_binary_cross_entropy(opts, weighted):
    p, t = RNG.uniform(0.02, 0.98, size=(5, 3)), RNG.uniform(size=(5, 3))
    w = RNG.uniform(0.5, 2.0, size=3) if weighted else None
    compare(lambda a, b, c: fd.binary_cross_entropy(a, b, c, **opts),
            lambda a, b, c: F.binary_cross_entropy(a, b, c, **opts), [p, t, w], diff=(0, 1))


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")   # torch's notice about its "mean"
@pytest.mark.parametrize("reduction", ["mean", "sum", "none", "batchmean"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div(reduction, log_target):
    logq = np.log(_probs(4, 6))
    p = _probs(4, 6)
    target = np.log(p) if log_target else p
    compare(lambda a, b: fd.kl_div(a, b, reduction=reduction, log_target=log_target),
            lambda a, b: F.kl_div(a, b, reduction=reduction, log_target=log_target), [logq, target], diff=(0, 1))


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("opts,weighted", [({}, False), ({"margin": 0.5, "reduction": "sum"}, True),
                                           ({"margin": 2.0, "reduction": "none"}, True)])
def test_multi_margin_loss(p, opts, weighted):
    x, y = _normal(8, 5), _labels(8, 5)
    w = RNG.uniform(0.5, 2.0, size=5) if weighted else None
    compare(lambda a, b, c: fd.multi_margin_loss(a, b, c, p=p, **opts),
            lambda a, b, c: F.multi_margin_loss(a, b, p=p, weight=c, **opts), [x, y, w])


def test_every_loss_is_compared():
    """A new loss primitive must get a torch comparison here."""
    compared = {"softmax_cross_entropy", "softmax_cross_entropy_with_probs", "nll_loss", "mse_loss", "l1_loss",
                "huber_loss", "smooth_l1_loss", "binary_cross_entropy_with_logits", "binary_cross_entropy",
                "kl_div", "multi_margin_loss",
                "gan_d_loss", "gan_g_loss", "gradient_penalty"}           # in tests/test_torch_generative.py
    losses = {n for n, p in fd.REGISTRY.items() if p.reference.__module__.startswith("funcdl.nn.losses")}
    assert losses <= compared, f"losses without a torch comparison: {losses - compared}"
