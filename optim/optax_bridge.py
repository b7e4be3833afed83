"""A bridge to optax, both ways (optax is optional: it is imported only when a bridge is used).

The two libraries share one interface -- ``init(params) -> state``, ``update(grads, state, params) -> (updates,
state)`` -- so the bridge only re-wraps the pair:

    optax.chain(optax.clip_by_global_norm(1.0), optim.to_optax(optim.scale_by_adam()), optax.scale(-1e-3))
    optim.chain(optim.from_optax(optax.adamw(1e-3)), ...);     optim.create("optax:adamw", 1e-3)

Step counts are each library's own business: a funcdl transform that needs the step (bias correction) and sits
inside an optax chain takes it from its ``count=`` keyword, which optax does not pass; use funcdl's named
optimizers (they carry their own count) or optax's own transforms there.
"""

from __future__ import annotations

from .base import GradientTransformation

__all__ = ["to_optax", "from_optax", "optax_optimizer"]


def _optax():
    try:
        import optax
    except ImportError:
        raise ImportError("the optax bridge needs optax: pip install optax") from None
    return optax


def to_optax(transform: GradientTransformation):
    """A funcdl transform as an ``optax.GradientTransformation``."""
    optax = _optax()
    return optax.GradientTransformation(transform.init, lambda g, s, p=None: transform.update(g, s, p))


def from_optax(tx) -> GradientTransformation:
    """An optax transform as a funcdl ``GradientTransformation`` (usable in ``optim.chain``, wrappers, training)."""
    return GradientTransformation(tx.init, lambda g, s, p=None, **_: tx.update(g, s, p))


def optax_optimizer(name: str, learning_rate, **hyper) -> GradientTransformation:
    """``optax.NAME(learning_rate, **hyper)`` as a funcdl optimizer (``funcdl train --optimizer optax:NAME``)."""
    optax = _optax()
    factory = getattr(optax, name, None)
    if not callable(factory):
        raise ValueError(f"optax has no optimizer {name!r} (e.g. optax:adamw, optax:sgd, optax:lion)")
    try:
        return from_optax(factory(learning_rate, **hyper))
    except TypeError as err:
        raise ValueError(f"optax.{name} does not take {sorted(hyper)}: {err}") from None
