"""QLoRA demo: fine-tune the baby char-GPT on new text three ways: full, LoRA on the float base, QLoRA on an NF4 base.

    nice -n 10 python benchmarks/qlora_demo.py --seeds 0 1 2
    python benchmarks/qlora_demo.py --checkpoint runs/gpt-tinyshakespeare-.../checkpoint.npz

Without a checkpoint the baby GPT is pretrained on tiny shakespeare for --pretrain steps first (seed 0). The new
text is the licence prose of ``benchmarks/lora_demo.py`` (``licence_text``, reused). From the same pretrained
weights, for each seed, the same number of AdamW steps:

* full: every parameter trains (32 bits per stored parameter);
* LoRA: rank-r adapters on every attention and MLP weight, the float base frozen;
* QLoRA: the same adapters, those base weights stored in NF4 with double-quantized block maxima
  (``funcdl.nn.nf4.quantize_tree``), dequantized on the fly every step (``nf4.apply_qlora``).

LoRA and QLoRA differentiate the adapters only (the base is an argument of the step, not a trainable leaf).
Prints the stored bits per parameter of the base, the validation loss on the new text before and after, and
the step time (the fastest chunk of 50 compiled steps after the first).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from lora_demo import common_parser, load_texts  # noqa: E402

PATTERN = r"/(qkv|proj|fc)/w$"


def make_trainer(loss_fn, tokens, batch, t):
    """train(trainable, frozen, opt, steps, seed) -> (trainable, ms per step): the fastest chunk of 50 steps after
    the first (which compiles), the one least disturbed by other work on a shared machine."""
    import jax
    import jax.numpy as jnp

    from funcdl import optim

    def windows(key):
        s = jax.random.randint(key, (batch,), 0, tokens.shape[0] - t - 1)
        ix = s[:, None] + jnp.arange(t)[None]
        return tokens[ix], tokens[ix + 1]

    def train(trainable, frozen, opt, steps, seed):
        def chunk(carry, fr, ks):
            def step(carry, key):
                tr, st = carry
                x, y = windows(key)
                v, g = jax.value_and_grad(loss_fn)(tr, fr, x, y)
                u, st = opt.update(g, st, tr)
                return (optim.apply_updates(tr, u), st), v

            return jax.lax.scan(step, carry, ks)

        run = jax.jit(chunk)
        carry, per_step = (trainable, opt.init(trainable)), []
        for i in range(0, steps, 50):
            n = min(50, steps - i)
            t0 = time.perf_counter()
            carry, losses = run(carry, frozen, jax.random.split(jax.random.PRNGKey(seed * 100_003 + i), n))
            losses.block_until_ready()
            if i > 0:
                per_step.append(1000 * (time.perf_counter() - t0) / n)
        return carry[0], min(per_step, default=float("nan"))

    return train


def report(out, runs, args, *, n_params, n_adapter, float_bits, sizes):
    """Print the table and fill ``out`` with the per-seed figures."""
    bits, (n_train, n_val, b, t) = out["bits"], sizes
    base_bits = {"full": float_bits / n_params, "lora": float_bits / n_params, "qlora": bits["bits_per_param"]}
    print(f"\nfine-tuning on licence text ({n_train} train / {n_val} val characters), "
          f"{args.steps} steps, batch {b} x {t}, seeds {args.seeds}")
    print(f"  NF4 base: {bits['nf4_params']} of {n_params} parameters in NF4 at {bits['nf4_bits_per_param']:.4f} "
          f"bits each (block {args.block}, double-quantized); whole stored base {bits['bits_per_param']:.3f} "
          f"bits/param, {bits['total_bits'] / 8 / 1024:.0f} KiB vs {float_bits / 8 / 1024:.0f} KiB in float32")
    print(f"  val loss before fine-tuning: float base {out['before']:.4f}, NF4 base {out['before_nf4']:.4f}")
    print(f"  {'method':8s} {'trainable':>10s} {'base bits/param':>16s} {'val loss (mean ± sd)':>22s} {'ms/step':>8s}")
    for k, v in runs.items():
        losses, ms = np.array([r[0] for r in v]), np.array([r[1] for r in v])
        trainable = n_params if k == "full" else n_adapter
        print(f"  {k:8s} {trainable:10d} {base_bits[k]:16.3f} {losses.mean():14.4f} ± {losses.std():.4f} "
              f"{ms.mean():8.1f}   per seed {' '.join(f'{x:.4f}' for x in losses)}")
        out[k] = {"val_loss": losses.tolist(), "ms_per_step": ms.tolist(), "base_bits_per_param": base_bits[k],
                  "trainable": trainable}
    gap = np.array(out["qlora"]["val_loss"]) - np.array(out["lora"]["val_loss"])
    print(f"  QLoRA - LoRA val loss: {' '.join(f'{g:+.4f}' for g in gap)} (max |gap| {np.abs(gap).max():.4f})")


def main(argv=None):
    import jax
    import jax.numpy as jnp
    from funcdl.models import gpt

    from funcdl import optim
    from funcdl.nn import lora, nf4
    from funcdl.training import checkpoint

    p = common_parser(__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="fine-tuning seeds (adapter init, batches)")
    p.add_argument("--block", type=int, default=64, help="NF4 block size")
    p.add_argument("--json", help="also write the results to this new JSON file")
    args = p.parse_args(argv)
    if args.json and Path(args.json).exists():
        raise SystemExit(f"qlora_demo: {args.json} exists; give a new file name")
    shakespeare, vocab, encode, new_train, new_val = load_texts(args.data_dir)
    config = gpt.Config(vocab_size=len(vocab), compute_dtype=None, grad_chunks=1)
    b, t = 12, config.block_size

    def gpt_loss(params, x, y):
        return gpt.loss(params, {}, {"x": x, "y": y}, config)[0]

    @jax.jit
    def val_loss(params):
        s = jax.random.randint(jax.random.PRNGKey(123), (2000,), 0, new_val.shape[0] - t - 1)
        ix = s[:, None] + jnp.arange(t)[None]
        return gpt_loss(params, new_val[ix], new_val[ix + 1])

    params, _ = gpt.init(jax.random.PRNGKey(0), config)
    if args.checkpoint:
        params = checkpoint.restore(args.checkpoint, {"params": params})[0]["params"]
        print(f"pretrained weights from {args.checkpoint}")
    else:
        t0 = time.time()
        shk = encode(shakespeare[: int(0.9 * len(shakespeare))])
        schedule = optim.warmup_cosine(1e-3, min(100, args.pretrain // 2), args.pretrain, 1e-4)
        opt = optim.chain(optim.clip_by_global_norm(1.0),
                          optim.adamw(schedule, b1=0.9, b2=0.99, weight_decay=0.1, mask=optim.decay_mask))
        pre = make_trainer(lambda p, _, x, y: gpt_loss(p, x, y), shk, b, t)
        params = pre(params, None, opt, args.pretrain, 0)[0]
        print(f"pretrained the baby GPT on tiny shakespeare for {args.pretrain} steps ({time.time() - t0:.0f} s)")

    qbase = nf4.quantize_tree(params, PATTERN, block=args.block)
    bits = nf4.tree_bits(qbase)
    float_bits = sum(32 * x.size for x in jax.tree.leaves(params))
    n_params = sum(x.size for x in jax.tree.leaves(params))
    before = float(val_loss(params))
    before_q = float(val_loss(nf4.dequantize_tree(qbase)))

    adam = lambda lr: optim.chain(optim.clip_by_global_norm(1.0),  # noqa: E731
                                  optim.adamw(lr, b1=0.9, b2=0.99, weight_decay=0.0))
    runs = {"full": [], "lora": [], "qlora": []}
    for seed in args.seeds:
        train = make_trainer(lambda p, _, x, y: gpt_loss(p, x, y), new_train, b, t)
        full, ms = train(params, None, adam(args.lr_full), args.steps, 1000 + seed)
        runs["full"].append((float(val_loss(full)), ms))

        adapters = lora.add_adapters(jax.random.PRNGKey(1 + seed), params, PATTERN, args.rank)
        train = make_trainer(lambda ad, base, x, y: gpt_loss(lora.apply_adapters(base, ad, args.alpha), x, y),
                             new_train, b, t)
        tuned, ms = train(adapters, params, adam(args.lr_lora), args.steps, 1000 + seed)
        runs["lora"].append((float(val_loss(lora.apply_adapters(params, tuned, args.alpha))), ms))

        train = make_trainer(lambda ad, q, x, y: gpt_loss(nf4.apply_qlora(q, ad, args.alpha), x, y),
                             new_train, b, t)
        tuned_q, ms = train(adapters, qbase, adam(args.lr_lora), args.steps, 1000 + seed)
        runs["qlora"].append((float(val_loss(nf4.apply_qlora(qbase, tuned_q, args.alpha))), ms))
        print(f"seed {seed}: " + "  ".join(f"{k} {v[-1][0]:.4f} ({v[-1][1]:.1f} ms/step)" for k, v in runs.items()),
              flush=True)

    out = {"before": before, "before_nf4": before_q, "bits": bits, "seeds": args.seeds, "steps": args.steps}
    report(out, runs, args, n_params=n_params, n_adapter=lora.count_trainable(adapters), float_bits=float_bits,
           sizes=(new_train.shape[0], new_val.shape[0], b, t))
    if args.json:
        tmp = Path(args.json).with_suffix(".tmp")
        tmp.write_text(json.dumps(out, indent=1))
        os.replace(tmp, args.json)
    return out


if __name__ == "__main__":
    main()
