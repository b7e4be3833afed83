"""Spectral normalisation (Miyato et al. 2018), as torch's ``torch.nn.utils.spectral_norm``: the weight divided by
an estimate sigma of its largest singular value, kept current by one step of power iteration per call.

The matrix. A weight of any rank >= 2 whose LAST axis is the output (a dense weight (in, out), an HWIO kernel
(kh, kw, in, out)) is read as M = w.reshape(-1, out), of shape (rows, out); torch's matrix is
W = weight.reshape(out, -1) on its (out, in, ...) layout, which is M^T with its columns in torch's (in, kh, kw)
order instead of (kh, kw, in). The order of the columns changes neither the singular values nor the vector
u in R^out, so ``u`` here is exactly torch's ``weight_u`` buffer, and v in R^rows is torch's ``weight_v`` with
its entries permuted (for a dense weight, identical).

One call (``spectral_norm(w, u, n_iter=k)``), with normalize(a) = a / max(||a||, eps) as ``F.normalize``:

    repeat k times:  v = normalize(W^T u) = normalize(M u),   u = normalize(W v) = normalize(M^T v)
    sigma = u^T W v = v^T M u,      returns (w / sigma, u)

The power iteration runs on the weight's value without gradient, and u, v then enter sigma as constants, as in
torch: the gradient is that of w / (v^T M u) at fixed u, v (the registered primitive ``spectral_norm``, with
inputs w, u, v, holds that rule), not the derivative of the iteration itself. The new u is a state, like
``batch_norm_apply``'s running statistics: returned to be passed to the next call, and it carries no gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..core.examples import Example, keys, normal, rng
from ..core.primitive import primitive
from ._space import arr, integer

__all__ = ["spectral_norm", "spectral_divide", "power_iteration"]


def _check(w, u, v):
    name = "spectral_norm"
    if jnp.ndim(w) < 2:
        raise ValueError(f"{name}: w must have rank >= 2 with the output axis last (dense (in, out), HWIO kernel), "
                         f"got shape {tuple(jnp.shape(w))}")
    out, rows = w.shape[-1], int(np.prod(w.shape[:-1]))
    if tuple(jnp.shape(u)) != (out,):
        raise ValueError(f"{name}: u shape {tuple(jnp.shape(u))} must be ({out},), one entry per output of w "
                         f"{tuple(w.shape)}")
    if v is not None and tuple(jnp.shape(v)) != (rows,):
        raise ValueError(f"{name}: v shape {tuple(jnp.shape(v))} must be ({rows},) for w {tuple(w.shape)}")


def _matrix(w):
    return w.reshape(-1, w.shape[-1])


def _spectral_norm(w, u, v):
    """The weight divided by sigma = v^T M u, M = w.reshape(-1, out) (rows, out), with u (out,) and v (rows,)
    given (the power iteration's vectors; see the module docstring). y = w / sigma.
    u and v are constants here (torch's rule), so sigma is linear in w with d sigma / dw = v u^T (reshaped to
    w's shape), and for y = w / sigma:
        dw = dy / sigma - <dy, w> / sigma^2 v u^T = (dy - <dy, y> v u^T) / sigma,      du = dv = 0 (constants).
    Residuals: w, u and v (sigma is recomputed).
    """
    sigma = v @ _matrix(w) @ u
    return w / sigma


def _spectral_norm_fwd(w, u, v):
    return _spectral_norm(w, u, v), (w, u, v)


def _spectral_norm_bwd(res, dy):
    w, u, v = res
    sigma = v @ _matrix(w) @ u
    y = w / sigma
    dw = (dy - jnp.sum(dy * y) * jnp.outer(v, u).reshape(w.shape)) / sigma
    return dw.astype(w.dtype), None, None


def power_iteration(m, u, n_iter, eps):
    """torch's power iteration on W = m^T: v = normalize(m u), u = normalize(m^T v), ``n_iter`` times."""
    normalize = lambda a: a / jnp.maximum(jnp.linalg.norm(a), eps)
    v = None
    for _ in range(n_iter):
        v = normalize(m @ u)
        u = normalize(m.T @ v)
    return u, v


def _vectors(w, u0, n_iter=2):
    """u and v after ``n_iter`` power iterations from u0 (example inputs, drawn on the host)."""
    u, v = power_iteration(np.asarray(_matrix(w), np.float64), np.asarray(u0, np.float64), n_iter, 1e-12)
    return jnp.asarray(u, w.dtype), jnp.asarray(v, w.dtype)


def _spectral_norm_examples(key, dtype):
    k = keys(key, 6)
    out = []
    for j, shape in enumerate([(5, 3), (3, 3, 2, 4), (4, 1)]):
        w = normal(k[2 * j], shape, dtype)
        u, v = _vectors(w, rng(k[2 * j + 1]).standard_normal(shape[-1]), n_iter=1 + j)
        out.append(Example((w, u, v), {}, f"w {shape}"))
    return out


def _spectral_norm_space(rng_, dtype):
    """Weights of rank 2-4 (sides 1-4), u from a standard normal, 1-5 power iterations."""
    shape = tuple(integer(rng_, 1, 4) for _ in range(integer(rng_, 2, 4)))
    w = arr(rng_, shape, dtype)
    u, v = _vectors(w, rng_.standard_normal(shape[-1]), n_iter=integer(rng_, 1, 5))
    return Example((w, u, v), {})


spectral_divide = primitive("spectral_norm", _spectral_norm, _spectral_norm_fwd, _spectral_norm_bwd,
                            examples=_spectral_norm_examples, space=_spectral_norm_space, check=_check,
                            nondiff=("u", "v"))


def spectral_norm(w, u, *, n_iter: int = 1, eps: float = 1e-12):
    """``(w / sigma, u_new)``: torch's spectral normalisation of a weight whose last axis is the output (dense
    (in, out), HWIO kernel), with ``u`` (out,) the power iteration's state (torch's ``weight_u``; start from a
    normalised standard normal draw). ``n_iter`` steps of power iteration on the weight's value (no gradient),
    then w / (v^T M u) with u, v constant, whose hand-derived gradient is the registered primitive
    ``spectral_norm`` (``fd.get("spectral_norm")``, inputs w, u, v; the module docstring has the matrix
    convention). ``u_new`` carries no gradient: keep it in the model's state for the next call."""
    _check(w, u, None)
    if not isinstance(n_iter, int) or n_iter < 1:
        raise ValueError(f"spectral_norm: n_iter must be an int >= 1 (power iteration steps), got {n_iter!r}")
    if not eps > 0:
        raise ValueError(f"spectral_norm: eps must be > 0, got {eps}")
    m = jax.lax.stop_gradient(_matrix(w))
    u_new, v = power_iteration(m, jax.lax.stop_gradient(u).astype(m.dtype), n_iter, eps)
    u_new, v = jax.lax.stop_gradient(u_new), jax.lax.stop_gradient(v)
    return spectral_divide(w, u_new, v), u_new
