"""funcdl's recurrent stacks against torch's nn.RNN / nn.LSTM / nn.GRU with copied weights (float64):
outputs, final states and the gradient of every input and every weight."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from funcdl.models import rnn as R

pytestmark = pytest.mark.slow          # compiles every configuration (CI runs it; the quick subset skips it)

torch = pytest.importorskip("torch")

TOL = dict(rtol=1e-9, atol=1e-11)


def _torch_module(cfg: R.StackConfig):
    kw = dict(input_size=cfg.input_size, hidden_size=cfg.hidden_size, num_layers=cfg.num_layers, bias=cfg.bias,
              batch_first=True, bidirectional=cfg.bidirectional, dtype=torch.float64)
    if cfg.cell == "lstm":
        return torch.nn.LSTM(proj_size=cfg.proj_size, **kw)
    if cfg.cell == "gru":
        return torch.nn.GRU(**kw)
    return torch.nn.RNN(nonlinearity=cfg.cell[4:], **kw)


def _params_from_torch(module, cfg: R.StackConfig):
    """torch stores (out, in); funcdl (in, out): transpose every weight."""
    layers = []
    for layer in range(cfg.num_layers):
        dirs = {}
        for d, name in enumerate(("fwd", "bwd")[: cfg.directions]):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            p = {"w_ih": getattr(module, "weight_ih" + sfx).detach().numpy().T,
                 "w_hh": getattr(module, "weight_hh" + sfx).detach().numpy().T}
            if cfg.bias:
                p["b_ih"] = getattr(module, "bias_ih" + sfx).detach().numpy()
                p["b_hh"] = getattr(module, "bias_hh" + sfx).detach().numpy()
            if cfg.proj_size:
                p["w_hr"] = getattr(module, "weight_hr" + sfx).detach().numpy().T
            dirs[name] = jax.tree.map(jnp.asarray, p)
        layers.append(dirs)
    return {"layers": layers}


def _torch_grads(module, cfg: R.StackConfig):
    layers = []
    for layer in range(cfg.num_layers):
        dirs = {}
        for d, name in enumerate(("fwd", "bwd")[: cfg.directions]):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            p = {"w_ih": getattr(module, "weight_ih" + sfx).grad.numpy().T,
                 "w_hh": getattr(module, "weight_hh" + sfx).grad.numpy().T}
            if cfg.bias:
                p["b_ih"] = getattr(module, "bias_ih" + sfx).grad.numpy()
                p["b_hh"] = getattr(module, "bias_hh" + sfx).grad.numpy()
            if cfg.proj_size:
                p["w_hr"] = getattr(module, "weight_hr" + sfx).grad.numpy().T
            dirs[name] = p
        layers.append(dirs)
    return {"layers": layers}


CASES = [
    R.StackConfig("rnn_tanh", 3, 5, num_layers=2, bidirectional=True),
    R.StackConfig("rnn_relu", 3, 4, num_layers=1, bidirectional=False, bias=False),
    R.StackConfig("lstm", 3, 5, num_layers=2, bidirectional=True),
    R.StackConfig("lstm", 4, 5, num_layers=2, bidirectional=True, proj_size=3),
    R.StackConfig("gru", 3, 5, num_layers=2, bidirectional=True),
    R.StackConfig("gru", 2, 6, num_layers=3, bidirectional=False),
]


@pytest.mark.parametrize("cfg", CASES, ids=lambda c: f"{c.cell}-L{c.num_layers}-D{c.directions}-P{c.proj_size}")
@pytest.mark.parametrize("lengths", [None, (6, 3, 1)], ids=["full", "packed"])
def test_stack_matches_torch(cfg, lengths):
    torch.manual_seed(0)
    module = _torch_module(cfg)
    rng = np.random.default_rng(1)
    B, T = 3, 6
    x = rng.normal(size=(B, T, cfg.input_size))
    n = cfg.num_layers * cfg.directions
    h0 = rng.normal(size=(n, B, cfg.out_size)) * 0.5
    c0 = rng.normal(size=(n, B, cfg.hidden_size)) * 0.5
    g_y = rng.normal(size=(B, T, cfg.out_size * cfg.directions))
    g_h = rng.normal(size=h0.shape)
    g_c = rng.normal(size=c0.shape)

    tx, th0, tc0 = (torch.tensor(a, requires_grad=True) for a in (x, h0, c0))
    inp = tx
    if lengths is not None:
        inp = torch.nn.utils.rnn.pack_padded_sequence(tx, torch.tensor(lengths), batch_first=True,
                                                      enforce_sorted=False)
    if cfg.cell == "lstm":
        ty, (th, tc) = module(inp, (th0, tc0))
    else:
        ty, th = module(inp, th0)
        tc = None
    if lengths is not None:
        ty, _ = torch.nn.utils.rnn.pad_packed_sequence(ty, batch_first=True, total_length=T)
    tloss = (ty * torch.tensor(g_y)).sum() + (th * torch.tensor(g_h)).sum()
    if tc is not None:
        tloss = tloss + (tc * torch.tensor(g_c)).sum()
    tloss.backward()

    params = _params_from_torch(module, cfg)
    mask = None if lengths is None else R.fd.lengths_to_mask(jnp.array(lengths), T)

    def loss(params, x, h0, c0):
        ys, h, c = R.stack(params, x, cfg, h0=h0, c0=c0 if cfg.cell == "lstm" else None, mask=mask)
        value = jnp.sum(ys * g_y) + jnp.sum(h * g_h)
        return value + (jnp.sum(c * g_c) if c is not None else 0.0), (ys, h, c)

    (value, (ys, h, c)), grads = jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True)(
        params, jnp.asarray(x), jnp.asarray(h0), jnp.asarray(c0))
    np.testing.assert_allclose(ys, ty.detach().numpy(), **TOL)
    np.testing.assert_allclose(h, th.detach().numpy(), **TOL)
    if tc is not None:
        np.testing.assert_allclose(c, tc.detach().numpy(), **TOL)
    g_params, g_x, g_h0, g_c0 = grads
    np.testing.assert_allclose(g_x, tx.grad.numpy(), **TOL)
    np.testing.assert_allclose(g_h0, th0.grad.numpy(), **TOL)
    if cfg.cell == "lstm":
        np.testing.assert_allclose(g_c0, tc0.grad.numpy(), **TOL)
    expected = _torch_grads(module, cfg)
    flat_e = jax.tree_util.tree_flatten_with_path(expected)[0]
    flat_g = dict((jax.tree_util.keystr(p), v) for p, v in jax.tree_util.tree_flatten_with_path(g_params)[0])
    assert len(flat_e) == len(flat_g)
    for path, want in flat_e:
        np.testing.assert_allclose(flat_g[jax.tree_util.keystr(path)], want, err_msg=jax.tree_util.keystr(path),
                                   **TOL)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_cells_match_torch(kind):
    rng = np.random.default_rng(3)
    B, I, H = 4, 3, 5
    module = {"rnn": torch.nn.RNNCell, "lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}[kind](
        I, H, dtype=torch.float64)
    x, h, c = rng.normal(size=(B, I)), rng.normal(size=(B, H)), rng.normal(size=(B, H))
    tx, th, tc = (torch.tensor(a, requires_grad=True) for a in (x, h, c))
    g1, g2 = rng.normal(size=(B, H)), rng.normal(size=(B, H))
    w = [jnp.asarray(module.weight_ih.detach().numpy().T), jnp.asarray(module.weight_hh.detach().numpy().T),
         jnp.asarray(module.bias_ih.detach().numpy()), jnp.asarray(module.bias_hh.detach().numpy())]
    if kind == "lstm":
        th1, tc1 = module(tx, (th, tc))
        ((th1 * torch.tensor(g1)).sum() + (tc1 * torch.tensor(g2)).sum()).backward()
        f = lambda x, h, c, *w: R.fd.lstm_cell(x, h, c, *w)
        (h1, c1), vjp = jax.vjp(f, jnp.asarray(x), jnp.asarray(h), jnp.asarray(c), *w)
        np.testing.assert_allclose(c1, tc1.detach().numpy(), **TOL)
        dx, dh, dc, *dw = vjp((jnp.asarray(g1), jnp.asarray(g2)))
        np.testing.assert_allclose(dc, tc.grad.numpy(), **TOL)
    else:
        th1 = module(tx, th)
        (th1 * torch.tensor(g1)).sum().backward()
        cell = R.fd.rnn_cell if kind == "rnn" else R.fd.gru_cell
        h1, vjp = jax.vjp(lambda x, h, *w: cell(x, h, *w), jnp.asarray(x), jnp.asarray(h), *w)
        dx, dh, *dw = vjp(jnp.asarray(g1))
    np.testing.assert_allclose(h1, th1.detach().numpy(), **TOL)
    np.testing.assert_allclose(dx, tx.grad.numpy(), **TOL)
    np.testing.assert_allclose(dh, th.grad.numpy(), **TOL)
    for got, want in zip(dw, [module.weight_ih.grad.numpy().T, module.weight_hh.grad.numpy().T,
                              module.bias_ih.grad.numpy(), module.bias_hh.grad.numpy()], strict=True):
        np.testing.assert_allclose(got, want, **TOL)
