"""Embedding lookup: row ``ids`` of a table, the first layer of every sequence model.

Shapes: table E (V, D) (V = vocabulary size, D = embedding width), ids any integer shape S; out (*S, D).

Forward (a gather):
    out[s, :] = E[ids[s], :]

Backward. Each output row is a copy of one table row, so the Jacobian of out[s, :] w.r.t. E[v, :] is the
identity when ids[s] = v and zero otherwise. Summing over every position that used row v:
    dE[v, :] = sum_{s : ids[s] = v} dout[s, :]
a *scatter-add*: a token that occurs k times in the batch gets the sum of its k incoming gradients (not the
mean, not the last one), and rows that never occur get exactly zero. This is what ``E.at[ids].add(dout)``
does; the sum runs in an unspecified order (floating point addition, so repeated ids can differ from a
sequential sum in the last bits). ``ids`` are integers: their cotangent is ``None``.

Options, as torch's ``nn.Embedding``:
* ``padding_idx``: this id maps to the zero vector (a constant), so its row gets zero gradient and never
  learns. torch returns the stored row instead but initialises it to zeros and never updates it, so the
  two agree; here the rule is also the true derivative (finite differences agree with it).

* ``max_norm`` (with ``norm_type`` p, default 2): every looked-up row whose p-norm n exceeds max_norm is scaled
  by max_norm / (n + 1e-7) (torch's factor, 1e-7 included). torch does this *in place* on the weight under
  ``no_grad`` and then gathers; here nothing is mutated: the output is the renormalised lookup and the table
  comes back unchanged (``renormalized_table`` gives the table torch would hold afterwards). The gradient is
  the true derivative of this forward: for a row r with n > max_norm and out = m r / (n + 1e-7),
      dr = m/(n + 1e-7) g - m (r . g) / (n + 1e-7)^2  grad n,     grad n = sign(r) |r|^(p-1) / n^(p-1)
  (r/n for p = 2; the one-hot of the largest |r_i| for p = inf), and dr = g for rows within the limit. torch
  differentiates the plain gather of its already renormalised weight, every row of which is within the limit,
  so it gets dr = g: the two agree on a renormalised table (where torch takes its gradient), and differ only
  where a row of the table given here is longer than max_norm, which torch would have shrunk first.
* ``scale_grad_by_freq``: torch's heuristic, not a derivative: the gradient of row v is divided by the number
  of times v occurs in ``ids`` (dE[v] = sum_{s: ids[s] = v} dout[s] / count(v)); the output is unchanged. With
  repeated ids its gradient is therefore *not* what finite differences of the output give, so the registry's
  examples and space draw it with distinct ids; ``tests/test_torch_features.py`` checks repeats against torch.

Out-of-vocabulary ids (outside ``0 <= id < V``; negative ids are *not* counted from the end):
* outside ``jit`` the ids are concrete and the call raises ``ValueError`` naming the first bad id;
* inside ``jit`` shapes are all we see, so a bad id yields a row of NaN in the output (the loss turns NaN and
  the training loop reports the step) and contributes nothing to ``dE``.
Residuals: the ids and the table's shape (the backward never needs the table's values), or the table itself
with ``max_norm`` (the derivative of the renormalisation reads the rows).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ..core.examples import Example, keys, normal
from ..core.primitive import is_concrete, primitive
from ._space import arr, integer, num, pick

__all__ = ["embedding", "renormalized_table"]


_EPS_RENORM = 1e-7      # torch's embedding_renorm_: scale = max_norm / (norm + 1e-7)


def _check(table, ids, *, padding_idx=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False):
    name = "embedding"
    if max_norm is not None and (isinstance(max_norm, bool) or not isinstance(max_norm, (int, float))
                                 or not 0 < max_norm < math.inf):
        raise ValueError(f"{name}: max_norm must be None or a positive finite number, got {max_norm!r}")
    if isinstance(norm_type, bool) or not isinstance(norm_type, (int, float)) or not norm_type >= 1:
        raise ValueError(f"{name}: norm_type (the p of the p-norm) must be a number >= 1 or inf, got {norm_type!r}")
    if not isinstance(scale_grad_by_freq, bool):
        raise ValueError(f"{name}: scale_grad_by_freq must be True or False, got {scale_grad_by_freq!r}")
    if table.ndim != 2:
        raise ValueError(f"{name}: table must be 2-D (vocab_size, dim), got shape {table.shape}")
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise TypeError(f"{name}: ids must be integer token indices, got dtype {ids.dtype} (shape {ids.shape})")
    vocab = table.shape[0]
    if padding_idx is not None and not 0 <= padding_idx < vocab:
        raise ValueError(f"{name}: padding_idx {padding_idx} is outside the vocabulary 0..{vocab - 1}")
    if is_concrete(ids) and ids.size:
        # NumPy, not jnp: a concrete array closed over inside a jit trace would turn jnp results into tracers
        values = np.asarray(ids)
        bad = (values < 0) | (values >= vocab)
        if bad.any():
            first = int(values[bad][0])
            raise ValueError(
                f"{name}: token id {first} is outside the vocabulary 0..{vocab - 1} (table shape {table.shape}); "
                "check the tokenizer's vocabulary size against the model's vocab_size"
            )


def _lookup(table, ids):
    vocab = table.shape[0]
    valid = (ids >= 0) & (ids < vocab)
    safe = jnp.where(valid, ids, 0)
    return safe, valid


def _pnorm(r, p):
    """The p-norm of each row (last axis), kept as (..., 1)."""
    a = jnp.abs(r)
    if p == math.inf:
        return jnp.max(a, axis=-1, keepdims=True)
    if p == 1:
        return jnp.sum(a, axis=-1, keepdims=True)
    if p == 2:
        return jnp.sqrt(jnp.sum(a * a, axis=-1, keepdims=True))
    return jnp.sum(a ** p, axis=-1, keepdims=True) ** (1.0 / p)


def _renorm_parts(rows, max_norm, p):
    """The rows that exceed max_norm (a mask, no gradient), the rows with the others replaced by ones (so the
    norm's derivative is never taken at a zero row), and their norm n."""
    big = jax.lax.stop_gradient(_pnorm(rows, p)) > max_norm
    r = jnp.where(big, rows, 1)
    return big, r, _pnorm(r, p)


def _renorm(rows, max_norm, p):
    """out = rows * max_norm / (n + 1e-7) where n = ||row||_p > max_norm, rows unchanged elsewhere."""
    big, _, n = _renorm_parts(rows, max_norm, p)
    return jnp.where(big, rows * (max_norm / (n + _EPS_RENORM)), rows)


def _counts(ids, vocab, dtype):
    """How many times each row is looked up (at least 1, so rows never looked up divide by 1)."""
    safe, valid = _lookup(jnp.zeros((vocab, 0)), ids)
    c = jnp.zeros((vocab,), dtype).at[safe.reshape(-1)].add(valid.reshape(-1).astype(dtype))
    return jnp.maximum(c, 1)


def renormalized_table(table, ids, *, max_norm, norm_type=2.0):
    """The table torch's ``nn.Embedding(max_norm=...)`` holds after looking up ``ids``: every looked-up row of
    p-norm n > max_norm scaled by max_norm / (n + 1e-7), the other rows as they were. A new array (nothing is
    mutated); ``embedding(..., max_norm=...)`` returns the lookup of exactly these rows."""
    safe, valid = _lookup(table, ids)
    used = jnp.zeros((table.shape[0],), bool).at[safe.reshape(-1)].max(valid.reshape(-1))
    return jnp.where(used[:, None], _renorm(table, max_norm, norm_type), table)


def _embedding(table, ids, *, padding_idx=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False):
    """out[s, :] = E[ids[s], :] for a table E (V, D) and integer ids of any shape S; out (*S, D).

    Each output row is a copy of one table row, so summing over every position that used row v:
        dtable[v, :] = sum_{s : ids[s] = v} dout[s, :]       (a scatter-add; rows never used get 0)
    The ``padding_idx`` row maps to zeros (a constant) and gets zero gradient; ids get no gradient.

    ``max_norm`` m (p = ``norm_type``): a looked-up row r with n = ||r||_p > m is returned as m r / (n + 1e-7)
    (the table is not mutated). Its cotangent g pulls back to
        dr = m/(n + 1e-7) g - m (r . g)/(n + 1e-7)^2 grad n,   grad n = sign(r) |r|^(p-1) / n^(p-1)
    and dr = g for rows within the limit; then dtable is the scatter-add of dr.
    ``scale_grad_by_freq`` (torch's heuristic, not a derivative): dtable[v] is divided by the count of v in ids.
    Written here so that autodiff gives it: the table enters as E_sg + (E - E_sg) / count (E_sg = E without
    gradient), equal to E in value, 1/count in derivative.
    Residuals: the ids and the table's shape (the table itself with ``max_norm``).
    """
    safe, valid = _lookup(table, ids)
    if scale_grad_by_freq:
        e_sg = jax.lax.stop_gradient(table)
        table = e_sg + (table - e_sg) / _counts(ids, table.shape[0], table.dtype)[:, None]
    rows = table[safe]
    if max_norm is not None:
        rows = _renorm(rows, max_norm, norm_type)
    if padding_idx is not None:
        rows = jnp.where((ids == padding_idx)[..., None], 0, rows)
    return jnp.where(valid[..., None], rows, jnp.nan)


def _embedding_fwd(table, ids, *, padding_idx=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False):
    # the reference without the scale_grad_by_freq construction (it only shapes the reference's autodiff)
    out = _embedding(table, ids, padding_idx=padding_idx, max_norm=max_norm, norm_type=norm_type)
    return out, (ids, table if max_norm is not None else table.shape)


def _renorm_vjp(rows, g, max_norm, p):
    """dr = m/(n + 1e-7) g - m (r . g)/(n + 1e-7)^2 grad n for rows with n > m, dr = g for the others."""
    big, r, n = _renorm_parts(rows, max_norm, p)
    a = jnp.abs(r)
    if p == math.inf:
        grad_n = jnp.sign(r) * jax.nn.one_hot(jnp.argmax(a, axis=-1), r.shape[-1], dtype=r.dtype)
    elif p == 1:
        grad_n = jnp.sign(r)
    elif p == 2:
        grad_n = r / n
    else:
        grad_n = jnp.sign(r) * a ** (p - 1) / n ** (p - 1)
    d = n + _EPS_RENORM
    dr = (max_norm / d) * g - (max_norm / (d * d)) * jnp.sum(r * g, axis=-1, keepdims=True) * grad_n
    return jnp.where(big, dr, g)


def _embedding_bwd(res, dout, *, padding_idx=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False):
    ids, saved = res
    shape = saved.shape if max_norm is not None else saved
    safe, valid = _lookup(jnp.zeros((shape[0], 0)), ids)
    keep = valid if padding_idx is None else valid & (ids != padding_idx)
    d = jnp.where(keep[..., None], dout, 0)
    if max_norm is not None:                                  # through the renormalisation of each looked-up row
        d = _renorm_vjp(saved[safe], d, max_norm, norm_type)
    dtable = jnp.zeros(shape, dout.dtype).at[safe.reshape(-1)].add(d.reshape(-1, shape[1]))   # scatter-add
    if scale_grad_by_freq:
        dtable = dtable / _counts(ids, shape[0], dtable.dtype)[:, None]
    return dtable, None


def _embedding_examples(key, dtype):
    k = keys(key, 8)
    # small vocabularies so that ids repeat (the accumulation is what we check)
    ids1 = jax.random.randint(k[1], (3, 5), 0, 6)
    ids2 = jax.random.randint(k[3], (2, 4, 3), 0, 5).at[0, 0].set(2)
    return [
        Example((normal(k[0], (6, 4), dtype), ids1), label="(3,5) ids, V=6"),
        Example((normal(k[2], (5, 3), dtype), ids2), {"padding_idx": 2}, label="3-D ids, padding_idx=2"),
        # rows of norm about 2 against a limit of 1.3 (some above, some below); distinct ids for the frequency
        # scaling (with repeats it is not a derivative: see the module docstring)
        Example((normal(k[6], (6, 3), dtype, 1.2), jnp.array([[4, 1, 0], [2, 5, 3]])),
                {"max_norm": 1.3, "norm_type": 3.0, "scale_grad_by_freq": True}, label="max_norm p=3, by freq"),
    ]


def _embedding_space(rng, dtype):
    """Vocabularies of 1-8 (ids repeat), ids of rank 0-3 (1-D ids only here), padding_idx None or any row;
    max_norm None or 0.5-2.5 (kept 0.05 away from every row's norm: the renormalisation has a kink there) with
    p in {1, 1.5, 2, 3, inf}; scale_grad_by_freq with distinct ids only (see the module docstring)."""
    vocab = integer(rng, 1, 8)
    by_freq = pick(rng, [False, True])
    shape = tuple(integer(rng, 1, 5) for _ in range(integer(rng, 0, 3)))
    if by_freq:
        shape = shape if math.prod(shape) <= vocab else (integer(rng, 1, vocab),)
        ids = rng.permutation(vocab)[:math.prod(shape)].reshape(shape)
    else:
        ids = rng.integers(0, vocab, shape)
    padding_idx = pick(rng, [None, integer(rng, 0, vocab - 1)])
    table = arr(rng, (vocab, integer(rng, 1, 5)), dtype)
    settings = {"padding_idx": padding_idx, "scale_grad_by_freq": by_freq}
    if rng.random() < 0.5:
        p = pick(rng, [1.0, 1.5, 2.0, 3.0, math.inf])
        norms = np.linalg.norm(np.asarray(table, np.float64), ord=p, axis=-1)
        m = num(rng, 0.5, 2.5)
        while np.any(np.abs(norms - m) < 0.05):
            m = round(m + 0.05, 3)
        settings.update(max_norm=m, norm_type=p)
    return Example((table, jnp.asarray(ids, jnp.int32)), settings)


embedding = primitive("embedding", _embedding, _embedding_fwd, _embedding_bwd, examples=_embedding_examples,
                      space=_embedding_space, check=_check)
