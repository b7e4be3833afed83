"""Dropout (Srivastava et al. 2014) with inverted scaling; the rule itself is shared in ``funcdl.nn._dropout``.

``rate`` is the probability of *dropping* a unit (as torch) and lies in [0, 1]. Outside training, or with
rate 0, y = x; with rate 1 every unit is dropped and y = 0 (as torch).
"""

from __future__ import annotations

import jax

from ..core.examples import Example, keys, normal
from ..core.primitive import primitive
from ._dropout import check_rate, drop, dropout_mask
from ._space import arr, integer, key, num, pick

__all__ = ["dropout", "dropout_mask"]


def _check(x, key, *, rate, train=True):
    check_rate("dropout", rate, key, active=train)


def _dropout(x, key=None, *, rate, train=True):
    """y = m * x / (1 - rate) in training, m ~ Bernoulli(1 - rate) elementwise from ``key``; y = x otherwise.

    y is linear in x with the diagonal Jacobian m / (1 - rate), so dx = m * dy / (1 - rate) (0 for rate 1).
    Residual: only the key. The mask is regenerated from it in the backward (one cheap random draw) instead
    of keeping an array the size of x, the trade the flash-attention paper makes for its dropout mask. The
    key gets no gradient.
    """
    return drop(x, key, rate) if train else x


def _dropout_fwd(x, key=None, *, rate, train=True):
    return _dropout(x, key, rate=rate, train=train), (key,)


def _dropout_bwd(res, dy, *, rate, train=True):
    (key,) = res
    return (drop(dy, key, rate) if train else dy), None


def _dropout_examples(key, dtype):
    k = keys(key, 4)
    x = normal(k[0], (8, 6), dtype)
    return [
        Example((x, jax.random.PRNGKey(1)), {"rate": 0.3}, "rate=0.3 train"),
        Example((normal(k[1], (2, 3, 4), dtype), jax.random.PRNGKey(2)), {"rate": 0.5}, "rate=0.5 train"),
        Example((x, jax.random.PRNGKey(3)), {"rate": 0.3, "train": False}, "eval (identity)"),
    ]


def _dropout_space(rng, dtype):
    """rate 0, 1 or in (0, 1), train or not, x of rank 0-3; the key None where nothing is drawn at random."""
    rate, train = pick(rng, [0.0, 1.0, num(rng, 0.01, 0.99), num(rng, 0.01, 0.99)]), pick(rng, [True, False])
    random = train and 0 < rate < 1
    x = arr(rng, tuple(integer(rng, 1, 6) for _ in range(integer(rng, 0, 3))), dtype)
    return Example((x, key(rng) if random or rng.random() < 0.5 else None), {"rate": rate, "train": train})


dropout = primitive("dropout", _dropout, _dropout_fwd, _dropout_bwd, examples=_dropout_examples, space=_dropout_space,
                    check=_check)
