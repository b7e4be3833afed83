"""LSTM over a whole sequence, forward + backward: hand-written BPTT vs jax.grad through lax.scan vs torch.

    python benchmarks/bench_lstm.py                       # B=32, T=128, I=H=256, float32
    python benchmarks/bench_lstm.py --batch 8 --steps 32  # smaller

Four ways to get every gradient of ``sum(ys * r) + sum(h_T * s)`` (r, s fixed random cotangents):

* ``hand BPTT``       ``funcdl.lstm``: forward scan keeping h_t, c_t and the gate activations; backward is the
                      reverse scan written out in ``funcdl/bptt.py``; weight gradients as one GEMM each;
* ``autodiff (ref)``  ``jax.grad`` of ``funcdl.autodiff(loss)``: the reference, a scan over the plain cell
                      (x_t W_ih inside the loop, as a straightforward implementation writes it);
* ``autodiff (hoisted)`` ``jax.grad`` through a scan with the input projection X W_ih hoisted out of the loop
                      (the same forward as the hand version; only the backward differs);
* ``torch nn.LSTM``   forward + backward on CPU (when torch is installed).

Time: median and minimum over ``--repeat`` runs of the compiled function (after a warm-up); on a shared,
busy machine the minimum is the steadier figure. Memory (JAX): XLA's memory
analysis of the compiled executable, ``temp_size_in_bytes`` (the peak of buffers it allocates besides
arguments and outputs: residuals kept for the backward, workspace). torch's CPU peak is not measured.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import funcdl as fd
from funcdl.nn.recurrent import lstm_gates


def _timeit(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times)


def _hoisted_lstm(x, h0, c0, w_ih, w_hh, b_ih, b_hh):
    a = jnp.swapaxes(x @ w_ih + b_ih, 0, 1)

    def step(carry, a_t):
        h, c = carry
        i, f, g, o = lstm_gates(a_t + h @ w_hh + b_hh)
        c = f * c + i * g
        h = o * jnp.tanh(c)
        return (h, c), h

    (h, c), ys = jax.lax.scan(step, (h0, c0), a)
    return jnp.swapaxes(ys, 0, 1), h, c


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--input", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args(argv)
    B, T, H, I = args.batch, args.steps, args.hidden, args.input
    k = jax.random.split(jax.random.PRNGKey(0), 8)
    s = 1 / np.sqrt(H)
    x = jax.random.normal(k[0], (B, T, I))
    h0, c0 = jnp.zeros((B, H)), jnp.zeros((B, H))
    w = [jax.random.uniform(k[1], (I, 4 * H), minval=-s, maxval=s), jax.random.uniform(k[2], (H, 4 * H), minval=-s,
                                                                                         maxval=s),
         jax.random.uniform(k[3], (4 * H,), minval=-s, maxval=s), jax.random.uniform(k[4], (4 * H,), minval=-s,
                                                                                      maxval=s)]
    r = jax.random.normal(k[5], (B, T, H))
    q = jax.random.normal(k[6], (B, H))

    def loss(x, *w):
        ys, h, _ = fd.lstm(x, h0, c0, *w)
        return jnp.sum(ys * r) + jnp.sum(h * q)

    def loss_hoisted(x, *w):
        ys, h, _ = _hoisted_lstm(x, h0, c0, *w)
        return jnp.sum(ys * r) + jnp.sum(h * q)

    argnums = tuple(range(5))
    variants = {
        "hand BPTT": jax.grad(loss, argnums),
        "autodiff (ref)": jax.grad(fd.autodiff(loss), argnums),
        "autodiff (hoisted)": jax.grad(loss_hoisted, argnums),
    }
    print(f"LSTM fwd+bwd, B={B} T={T} I={I} H={H} float32, {jax.devices()[0].platform}, "
          f"{args.repeat} repeats")
    print(f"{'method':<22}{'median ms':>11}{'min ms':>9}{'temp memory (MB)':>18}{'speed vs autodiff (ref, min)':>30}")
    results = {}
    grads = {}
    for name, fn in variants.items():
        compiled = jax.jit(fn).lower(x, *w).compile()
        mem = compiled.memory_analysis()
        temp = getattr(mem, "temp_size_in_bytes", float("nan")) / 2**20 if mem is not None else float("nan")
        t = _timeit(lambda c=compiled: jax.block_until_ready(c(x, *w)), args.repeat)
        results[name] = (t, temp)
        grads[name] = compiled(x, *w)
    ref_t = results["autodiff (ref)"][0][1]
    for name, ((t, t_min), temp) in results.items():
        print(f"{name:<22}{1e3 * t:>11.1f}{1e3 * t_min:>9.1f}{temp:>18.1f}{ref_t / t_min:>29.2f}x")
    err = max(float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-12))
              for a, b in zip(grads["hand BPTT"], grads["autodiff (ref)"], strict=True))
    print(f"max relative difference of the gradients, hand vs autodiff: {err:.1e}")
    # what the derivation needs to keep: h_t, c_t (H each) and the 4 gate activations per step
    print(f"residuals the hand BPTT keeps: 6 x B x T x H x 4 bytes = {6 * B * T * H * 4 / 2**20:.1f} MB")
    try:
        import torch
    except ImportError:
        print("torch nn.LSTM: torch not installed")
        return
    torch.set_num_threads(max(1, torch.get_num_threads()))
    m = torch.nn.LSTM(I, H, batch_first=True)
    tx = torch.tensor(np.asarray(x), requires_grad=True)
    tr, tq = torch.tensor(np.asarray(r)), torch.tensor(np.asarray(q))

    def torch_step():
        m.zero_grad()
        tx.grad = None
        ys, (h, _) = m(tx)
        ((ys * tr).sum() + (h[0] * tq).sum()).backward()

    t, t_min = _timeit(torch_step, args.repeat)
    print(f"{'torch nn.LSTM':<22}{1e3 * t:>11.1f}{1e3 * t_min:>9.1f}{'n/a':>18}{ref_t / t_min:>29.2f}x   "
          f"(torch {torch.__version__}, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
