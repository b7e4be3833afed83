"""Curvature of a loss through the hand-derived rules: Hessian-vector products, the top Hessian eigenvalues by
Lanczos, the spectral density by stochastic Lanczos quadrature, and the sharpness of a minimum.

**Hessian-vector products.** For a scalar loss L(w) and a direction v (a pytree shaped as w),

    H v = d/dw <grad L(w), v>

is the gradient of a scalar, so two reverse passes compute it (reverse over reverse) without ever forming H.
The primitives are ``jax.custom_vjp`` functions, which have no forward mode (no ``jvp``, so no forward over
reverse); reverse over reverse works because each hand-derived ``bwd`` is itself plain ``jax.numpy``, which
JAX differentiates. ``hvp(loss, w, v)`` runs the hand rules; ``hvp(funcdl.autodiff(loss), w, v)`` the references
(tests/test_curvature.py checks that the two agree in float64 for the MLP, the CNN and the GPT).

**Lanczos** (with full reorthogonalisation). From a unit vector q_1, the three-term recurrence

    w = H q_j - beta_{j-1} q_{j-1},   alpha_j = <q_j, w>,   w <- w - alpha_j q_j,
    w <- w - Q Q^T w   (twice: keeps the q's orthogonal in floating point),   beta_j = |w|,   q_{j+1} = w / beta_j

builds an orthonormal basis Q of the Krylov space span{q_1, H q_1, ..., H^{m-1} q_1} in which H is the symmetric
tridiagonal T (alphas on the diagonal, betas beside it): T = Q^T H Q. The eigenvalues of T (Ritz values)
converge to the extreme eigenvalues of H first, so m = 20-50 products find the top few of a network with
millions of parameters. Without reorthogonalisation the q's lose orthogonality as soon as a Ritz value
converges and T grows spurious copies of it ("ghost" eigenvalues).

**Stochastic Lanczos quadrature** (Ghorbani, Krishnan & Xiao 2019; Golub & Meurant). The spectral density
phi(t) = (1/n) sum_i delta(t - lambda_i) of H (n parameters) is estimated from a few random unit vectors v:

    v^T f(H) v = sum_i f(lambda_i) <v, u_i>^2 ~= sum_k tau_k f(theta_k)

where theta_k are the eigenvalues of the m x m T that Lanczos builds from q_1 = v, and tau_k = (e_1^T s_k)^2 the
squared first components of its eigenvectors (Gauss quadrature: exact for every polynomial f of degree < 2m).
Since E_v <v, u_i>^2 = 1/n, the average over probes of sum_k tau_k delta(t - theta_k) estimates phi; each delta
is drawn as a Gaussian of width ``sigma``. The trace is n E_v[v^T H v] = n * mean(sum_k tau_k theta_k).

**Sharpness.** The largest Hessian eigenvalue at a minimum (how fast the loss rises along the worst direction;
gradient descent with step lr is stable only while it stays below 2 / lr), together with the trace (the total
curvature). SAM (``optim.sam``) is built to find minima where it is small.

Everything below takes a loss of the parameters alone, ``loss(params) -> scalar`` (close over the batch), and
works on flat vectors in float64 NumPy for the linear algebra: the Lanczos basis (m x n) lives there, the HVP
runs in the parameters' own dtype.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

__all__ = ["hvp", "flat_hvp", "dense_hessian", "lanczos", "LanczosResult", "top_eigenvalues",
           "slq", "SpectralDensity", "spectral_density", "sharpness", "relative_error"]


def _vdot(a, b):
    """<a, b> summed over every leaf of two pytrees of the same structure."""
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def hvp(loss: Callable, params, v):
    """The Hessian of ``loss`` at ``params`` times ``v`` (a pytree shaped as params): reverse over reverse,
    ``grad_w <grad L(w), v>``. Runs whatever rules ``loss`` runs (the hand-derived ones by default)."""
    return jax.grad(lambda p: _vdot(jax.grad(loss)(p), v))(params)


def flat_hvp(loss: Callable, params) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
    """``(matvec, n)``: ``matvec(x)`` is H x for a flat float64 NumPy vector x of the n parameters (in the order of
    ``ravel_pytree(params)``), computed by one jitted HVP in the parameters' dtype and returned in float64."""
    flat, _ = ravel_pytree(params)
    if flat.size == 0:
        raise ValueError("curvature: the parameters hold no floating-point numbers")
    dtype = flat.dtype

    def matvec(x):
        return np.asarray(_flat_product(loss, params, jnp.asarray(x, dtype)), np.float64)

    return matvec, int(flat.size)


@functools.partial(jax.jit, static_argnums=0)
def _flat_product(loss, params, x):
    """H x for a flat x; compiled once per loss function (the parameters are an argument, not a constant)."""
    _, unravel = ravel_pytree(params)
    return ravel_pytree(hvp(loss, params, unravel(x)))[0]


def dense_hessian(loss: Callable, params) -> np.ndarray:
    """The whole n x n Hessian of ``loss`` in the order of ``ravel_pytree(params)`` (reverse over reverse,
    ``jacrev(jacrev)``, so the hand rules work too): a reference for small models only (n^2 numbers)."""
    flat, unravel = ravel_pytree(params)
    if flat.size > 20_000:
        raise ValueError(f"dense_hessian: {flat.size} parameters make a {flat.size}^2 matrix; use lanczos instead")
    return np.asarray(jax.jit(jax.jacrev(jax.jacrev(lambda x: loss(unravel(x)))))(flat), np.float64)


class LanczosResult(NamedTuple):
    alphas: np.ndarray          # (m,) diagonal of T
    betas: np.ndarray           # (m - 1,) off-diagonal of T
    basis: np.ndarray | None    # (m, n) orthonormal rows q_1..q_m (None unless kept)

    @property
    def tridiagonal(self) -> np.ndarray:
        return np.diag(self.alphas) + np.diag(self.betas, 1) + np.diag(self.betas, -1)

    def ritz(self) -> tuple[np.ndarray, np.ndarray]:
        """Eigenvalues (ascending) and eigenvectors (columns) of T."""
        return np.linalg.eigh(self.tridiagonal)


def _start(n: int, seed: int, v0) -> np.ndarray:
    q = np.random.default_rng(seed).standard_normal(n) if v0 is None else np.asarray(v0, np.float64).ravel()
    if q.shape != (n,):
        raise ValueError(f"lanczos: the start vector has {q.size} entries, the operator acts on {n}")
    norm = np.linalg.norm(q)
    if not np.isfinite(norm) or norm == 0:
        raise ValueError("lanczos: the start vector is zero or not finite")
    return q / norm


def lanczos(matvec: Callable[[np.ndarray], np.ndarray], n: int, iters: int, *, seed: int = 0, v0=None,
            reorthogonalize: bool = True, keep_basis: bool = False) -> LanczosResult:
    """``iters`` steps of Lanczos on the symmetric operator ``matvec`` (flat float64 vectors of length n), from
    ``v0`` or a Gaussian vector drawn with ``seed``. Stops early when the Krylov space is exhausted (beta ~ 0:
    T's eigenvalues are then exact eigenvalues of the operator). Full reorthogonalisation by default."""
    if not (isinstance(iters, int | np.integer) and iters >= 1):
        raise ValueError(f"lanczos: iters must be a positive integer, got {iters!r}")
    iters = min(int(iters), n)
    basis = np.zeros((iters, n))
    basis[0] = _start(n, seed, v0)
    alphas, betas = [], []
    for j in range(iters):
        w = matvec(basis[j])
        if not np.all(np.isfinite(w)):
            raise ValueError("lanczos: the Hessian-vector product is not finite (a loss that is nan or inf?)")
        if j > 0:
            w = w - betas[-1] * basis[j - 1]
        alpha = float(basis[j] @ w)
        alphas.append(alpha)
        w = w - alpha * basis[j]
        if reorthogonalize:
            for _ in range(2):          # classical Gram-Schmidt twice ("twice is enough")
                w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
        beta = float(np.linalg.norm(w))
        scale = max(abs(a) for a in alphas) + (max(betas) if betas else 0.0)
        if j == iters - 1 or beta <= 1e-10 * max(scale, 1e-300):
            break
        betas.append(beta)
        basis[j + 1] = w / beta
    m = len(alphas)
    return LanczosResult(np.asarray(alphas), np.asarray(betas[: m - 1]), basis[:m] if keep_basis else None)


def top_eigenvalues(loss: Callable, params, k: int = 1, *, iters: int | None = None, seed: int = 0,
                    vectors: bool = False):
    """The ``k`` largest Hessian eigenvalues of ``loss`` at ``params`` (descending) by Lanczos with ``iters``
    products (default ``max(20, 3k)``); with ``vectors`` also the Ritz vectors as flat float64 rows (k, n)."""
    if k < 1:
        raise ValueError(f"top_eigenvalues: k must be >= 1, got {k}")
    matvec, n = flat_hvp(loss, params)
    res = lanczos(matvec, n, iters or max(20, 3 * k), seed=seed, keep_basis=vectors)
    theta, s = res.ritz()
    order = np.argsort(theta)[::-1][:k]
    if not vectors:
        return theta[order]
    return theta[order], (res.basis.T @ s[:, order]).T


def slq(matvec: Callable[[np.ndarray], np.ndarray], n: int, *, probes: int = 4, iters: int = 30,
        seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stochastic Lanczos quadrature: ``(nodes, weights)``, each (probes, m): per Gaussian probe, the Ritz values
    theta_k of its Lanczos run and the weights tau_k = (first component of T's k-th eigenvector)^2 (they sum to 1).
    """
    if probes < 1:
        raise ValueError(f"slq: probes must be >= 1, got {probes}")
    m = min(iters, n)
    nodes, weights = np.zeros((probes, m)), np.zeros((probes, m))
    for p in range(probes):
        res = lanczos(matvec, n, m, seed=seed + p)
        theta, s = res.ritz()
        k = len(theta)                  # fewer than m when the Krylov space closed early
        nodes[p, :k], weights[p, :k] = theta, s[0] ** 2
    return nodes, weights


class SpectralDensity(NamedTuple):
    nodes: np.ndarray           # (probes, m) Ritz values
    weights: np.ndarray         # (probes, m) quadrature weights, each row summing to 1
    n: int                      # the number of parameters (the Hessian's size)

    def density(self, grid, sigma: float | None = None) -> np.ndarray:
        """phi(t) on ``grid``: the quadrature's deltas drawn as Gaussians of width ``sigma`` (default: 1% of the
        spread of the nodes); integrates to 1 over a grid that covers them."""
        grid = np.asarray(grid, np.float64)
        if sigma is None:
            sigma = 0.01 * max(float(np.ptp(self.nodes)), 1e-12)
        d = grid[:, None, None] - self.nodes[None]
        g = np.exp(-0.5 * (d / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
        return np.einsum("tpk,pk->t", g, self.weights) / len(self.nodes)

    @property
    def trace(self) -> float:
        """Hutchinson's estimate of tr H: n * mean over probes of v^T H v (unit v) = n * mean(sum tau theta)."""
        return float(self.n * np.mean(np.sum(self.weights * self.nodes, axis=1)))


def spectral_density(loss: Callable, params, *, probes: int = 4, iters: int = 30, seed: int = 0) -> SpectralDensity:
    """The Hessian's spectral density at ``params`` by stochastic Lanczos quadrature (``probes`` Gaussian probes,
    ``iters`` Lanczos steps each)."""
    matvec, n = flat_hvp(loss, params)
    nodes, weights = slq(matvec, n, probes=probes, iters=iters, seed=seed)
    return SpectralDensity(nodes, weights, n)


def sharpness(loss: Callable, params, *, k: int = 1, iters: int = 20, probes: int = 0, seed: int = 0) -> dict:
    """``{"top_eigenvalues": (k,), "lambda_max", "trace"}`` of the Hessian of ``loss`` at ``params`` (the trace by
    SLQ with ``probes`` probes, None when ``probes`` is 0)."""
    top = top_eigenvalues(loss, params, k, iters=iters, seed=seed)
    trace = spectral_density(loss, params, probes=probes, iters=iters, seed=seed + 1).trace if probes else None
    return {"top_eigenvalues": top, "lambda_max": float(top[0]), "trace": trace}


def relative_error(a, b) -> float:
    """``max|a - b| / max(1e-300, max|a| + max|b|)`` over all leaves (DESIGN.md's measure)."""
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    diff = max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(la, lb, strict=True))
    scale = max(float(jnp.max(jnp.abs(x))) for x in la) + max(float(jnp.max(jnp.abs(y))) for y in lb)
    return diff / max(scale, 1e-300)
