"""Meta-learning the learning rate: differentiate the validation loss after k unrolled training steps with
respect to the learning rate, and tune it by gradient descent (MNIST-1D, a small MLP from ``models.mlp``).

    python benchmarks/meta_lr.py                         # k = 40 inner SGD-momentum steps, 25 meta-steps
    python benchmarks/meta_lr.py --small                 # a few seconds
    python benchmarks/meta_lr.py --inner adam --start-lr 1e-4

Because an optimizer here is a pure function ``(grads, state, params) -> (updates, state)`` and its learning
rate may be a traced value, the whole inner training run is an ordinary differentiable function of the rate:

    L_val(eta) = loss_val(theta_k(eta)),     theta_{t+1} = theta_t + update(grad L_train(theta_t; batch_t), eta)

``jax.grad(L_val)`` differentiates through every inner step (reverse mode through ``lax.scan``: second
derivatives of the training loss, here through the MLP's hand-derived backward rules). We tune
``log eta`` (a positive rate, a scale-free step) with Adam from ``optim``; every meta-step draws a fresh
initialisation and fresh mini-batches, so the rate is tuned for the task, not for one trajectory. At the
end a grid of rates (one ``vmap``) shows where the meta-learned rate sits on the k-step validation curve.
Beware the short-horizon bias (Wu et al. 2018): the rate that is best after k steps is smaller than the
one that is best for a long run.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from funcdl.models import mlp  # noqa: E402

from funcdl import optim  # noqa: E402


def load_data():
    """MNIST-1D train / validation arrays from funcdl's loader (generated offline, cached)."""
    from funcdl import data as fdata

    ds = fdata.load("mnist1d")
    tr, va = ds.splits["train"], ds.splits["val"]
    return (jnp.asarray(tr["x"]), jnp.asarray(tr["y"])), (jnp.asarray(va["x"]), jnp.asarray(va["y"]))


def make_meta_objective(config, k: int, batch: int, inner: str):
    """``val_loss(log_lr, key, data)``: init an MLP, train k steps with the inner optimizer at rate exp(log_lr)
    on random mini-batches of ``data = ((x_train, y_train), (x_val, y_val))``, return the validation loss.
    (The data are an argument, not a closure, so jit does not bake them into the program as constants.)"""

    def val_loss(log_lr, key, data):
        (x_tr, y_tr), (x_va, y_va) = data
        k_init, k_batches = jax.random.split(key)
        # float32 throughout (mlp.init's biases follow jax's default float, float64 when x64 is on)
        params = jax.tree.map(lambda a: a.astype(jnp.float32), mlp.init(k_init, config)[0])
        lr = jnp.exp(log_lr)
        opt = optim.sgd(lr, momentum=0.9) if inner == "sgd" else optim.create(inner, lr)
        idx = jax.random.randint(k_batches, (k, batch), 0, x_tr.shape[0])

        def step(carry, ids):
            p, s = carry
            g, _ = jax.grad(mlp.loss, has_aux=True)(p, {}, {"x": x_tr[ids], "y": y_tr[ids]}, config)
            u, s = opt.update(g, s, p)
            return (optim.apply_updates(p, u), s), None

        (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), idx)
        return mlp.loss(params, {}, {"x": x_va, "y": y_va}, config)[0]

    return val_loss


def meta_learn(val_loss, data, start_lr: float, meta_steps: int, meta_lr: float, key, log=print):
    """Adam on log(lr); returns the history of (lr, val loss)."""
    meta_opt = optim.adam(meta_lr)
    log_lr = jnp.asarray(math.log(start_lr), jnp.float32)
    state = meta_opt.init(log_lr)
    value_and_grad = jax.jit(jax.value_and_grad(val_loss))
    history = []
    for i, k in enumerate(jax.random.split(key, meta_steps)):
        value, g = value_and_grad(log_lr, k, data)
        history.append((float(jnp.exp(log_lr)), float(value), float(g)))
        log(f"meta-step {i:3d}   lr {float(jnp.exp(log_lr)):.4g}   val loss after k steps {float(value):.4f}   "
            f"d val / d log lr {float(g):+.4f}")
        u, state = meta_opt.update(g, state, log_lr)
        log_lr = optim.apply_updates(log_lr, u)
    history.append((float(jnp.exp(log_lr)), float("nan"), float("nan")))
    return history


def lr_grid(val_loss, data, key, lo=1e-4, hi=3.0, n=15, seeds=4):
    """Validation loss after k steps for a log grid of rates, averaged over a few seeds (one vmap)."""
    lrs = np.logspace(math.log10(lo), math.log10(hi), n).astype(np.float32)
    keys = jax.random.split(key, seeds)
    per_seed = jax.vmap(val_loss, in_axes=(None, 0, None))
    grid = jax.jit(jax.vmap(per_seed, in_axes=(0, None, None)))(jnp.log(lrs), keys, data)
    return lrs, np.nanmean(np.where(np.isfinite(grid), grid, np.nan), axis=1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--k", type=int, default=40, help="unrolled inner steps (default 40)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--inner", default="sgd", help="inner optimizer: sgd (momentum 0.9) or any optim name")
    ap.add_argument("--start-lr", type=float, default=1e-3)
    ap.add_argument("--meta-steps", type=int, default=25)
    ap.add_argument("--meta-lr", type=float, default=0.3, help="Adam step on log(lr) (default 0.3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--small", action="store_true", help="k=10, 5 meta-steps, small grid (a smoke run)")
    args = ap.parse_args(argv)
    if args.small:
        args.k, args.meta_steps = 10, 5
    t0 = time.perf_counter()
    data = load_data()
    config = mlp.Config(sizes=(40, args.hidden, args.hidden, 10))
    val_loss = make_meta_objective(config, args.k, args.batch, args.inner)
    key_meta, key_grid = jax.random.split(jax.random.PRNGKey(args.seed))
    print(f"# MNIST-1D, MLP {config.sizes}, inner {args.inner}, k = {args.k} steps of batch {args.batch}; "
          f"meta: Adam({args.meta_lr}) on log lr from {args.start_lr}")
    history = meta_learn(val_loss, data, args.start_lr, args.meta_steps, args.meta_lr, key_meta)
    lrs, losses = lr_grid(val_loss, data, key_grid, n=7 if args.small else 15, seeds=2 if args.small else 4)
    best = int(np.nanargmin(losses))
    print("# grid of learning rates (val loss after k steps, mean over seeds):")
    for lr, loss in zip(lrs, losses, strict=True):
        print(f"  lr {lr:9.4g}   val loss {loss:.4f}" + ("   <- grid best" if lr == lrs[best] else ""))
    final_lr = history[-1][0]
    print(f"meta-learned lr {final_lr:.4g} (from {args.start_lr}); grid best lr {lrs[best]:.4g} "
          f"(val loss {losses[best]:.4f}); {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
