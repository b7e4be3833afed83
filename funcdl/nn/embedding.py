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

Out-of-vocabulary ids (outside ``0 <= id < V``; negative ids are *not* counted from the end):
* outside ``jit`` the ids are concrete and the call raises ``ValueError`` naming the first bad id;
* inside ``jit`` shapes are all we see, so a bad id yields a row of NaN in the output (the loss turns NaN and
  the training loop reports the step) and contributes nothing to ``dE``.
Residuals: the ids and the table's shape (the backward never needs the table's values).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..core.examples import Example, keys, normal
from ..core.primitive import is_concrete, primitive
from ._space import arr, integer, pick

__all__ = ["embedding"]


def _check(table, ids, *, padding_idx=None):
    name = "embedding"
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


def _embedding(table, ids, *, padding_idx=None):
    """out[s, :] = E[ids[s], :] for a table E (V, D) and integer ids of any shape S; out (*S, D).

    Each output row is a copy of one table row, so summing over every position that used row v:
        dtable[v, :] = sum_{s : ids[s] = v} dout[s, :]       (a scatter-add; rows never used get 0)
    The ``padding_idx`` row maps to zeros (a constant) and gets zero gradient; ids get no gradient.
    Residuals: the ids and the table's shape.
    """
    safe, valid = _lookup(table, ids)
    rows = table[safe]
    if padding_idx is not None:
        rows = jnp.where((ids == padding_idx)[..., None], 0, rows)
    return jnp.where(valid[..., None], rows, jnp.nan)


def _embedding_fwd(table, ids, *, padding_idx=None):
    return _embedding(table, ids, padding_idx=padding_idx), (ids, table.shape)


def _embedding_bwd(res, dout, *, padding_idx=None):
    ids, shape = res
    safe, valid = _lookup(jnp.zeros((shape[0], 0)), ids)
    keep = valid if padding_idx is None else valid & (ids != padding_idx)
    d = jnp.where(keep[..., None], dout, 0)
    dtable = jnp.zeros(shape, dout.dtype).at[safe.reshape(-1)].add(d.reshape(-1, shape[1]))   # scatter-add
    return dtable, None


def _embedding_examples(key, dtype):
    k = keys(key, 6)
    # small vocabularies so that ids repeat (the accumulation is what we check)
    ids1 = jax.random.randint(k[1], (3, 5), 0, 6)
    ids2 = jax.random.randint(k[3], (2, 4, 3), 0, 5).at[0, 0].set(2)
    ids3 = jax.random.randint(k[5], (8,), 0, 4)
    return [
        Example((normal(k[0], (6, 4), dtype), ids1), label="(3,5) ids, V=6"),
        Example((normal(k[2], (5, 3), dtype), ids2), {"padding_idx": 2}, label="3-D ids, padding_idx=2"),
        Example((normal(k[4], (4, 2), dtype), ids3), label="1-D ids, V=4"),
    ]


def _embedding_space(rng, dtype):
    """Vocabularies of 1-8 (ids repeat), ids of rank 0-3, padding_idx None or any row (taken by some ids)."""
    vocab = integer(rng, 1, 8)
    ids = rng.integers(0, vocab, tuple(integer(rng, 1, 5) for _ in range(integer(rng, 0, 3))))
    padding_idx = pick(rng, [None, integer(rng, 0, vocab - 1)])
    table = arr(rng, (vocab, integer(rng, 1, 5)), dtype)
    return Example((table, jnp.asarray(ids, jnp.int32)), {"padding_idx": padding_idx})


embedding = primitive("embedding", _embedding, _embedding_fwd, _embedding_bwd, examples=_embedding_examples,
                      space=_embedding_space, check=_check)
