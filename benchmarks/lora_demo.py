"""LoRA demo: fine-tune a char-GPT pretrained on tiny shakespeare on a different text, LoRA vs full fine-tuning.

    python benchmarks/lora_demo.py --checkpoint runs/gpt-tinyshakespeare-.../checkpoint.npz
    python benchmarks/lora_demo.py                 # no checkpoint: pretrain the baby GPT for --pretrain steps first

The "different text" is English licence prose (the LICENSE files installed in this Python environment),
mapped onto the Shakespeare character vocabulary (unknown characters become spaces) — a domain shift with
no download. Both fine-tunings run the same number of AdamW steps from the same pretrained weights:

* full: every parameter trains;
* LoRA: rank-r adapters on every attention and MLP weight (``funcdl.nn.lora.lora_weight``), the pretrained
  weights frozen with ``optim.freeze(opt, "^base/")``.

Prints the trainable parameter counts and the validation loss on the new text before and after, and checks
that merging the adapters into the weights gives the same loss.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def licence_text(vocab: str, limit: int = 400_000) -> str:
    files = sorted(glob.glob(str(Path(sys.prefix) / "lib" / "python3*" / "site-packages" / "**" / "LICENSE*"),
                   recursive=True))
    text = "".join(Path(f).read_text(errors="ignore") for f in files if Path(f).is_file())[:limit]
    allowed = set(vocab)
    return "".join(c if c in allowed else " " for c in text)


def common_parser(description: str) -> argparse.ArgumentParser:
    """The options the fine-tuning demos share (this one and qlora_demo.py)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--checkpoint", help="a baby-GPT checkpoint.npz from `funcdl train gpt`")
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "tinyshakespeare"))
    p.add_argument("--pretrain", type=int, default=1000, help="pretraining steps when no checkpoint is given")
    p.add_argument("--steps", type=int, default=300, help="fine-tuning steps")
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--alpha", type=float, default=8.0)
    p.add_argument("--lr-full", type=float, default=3e-4)
    p.add_argument("--lr-lora", type=float, default=3e-3)
    return p


def load_texts(data_dir: str):
    """(shakespeare, vocab, encode, new_train, new_val): tiny shakespeare (the pretraining text and the
    vocabulary) and the licence text encoded in that vocabulary, split 90/10."""
    import jax.numpy as jnp

    path = Path(data_dir) / "input.txt"
    if not path.is_file():
        raise SystemExit(f"no {path}; pass --data-dir pointing at the tinyshakespeare folder")
    shakespeare = path.read_text()
    vocab = "".join(sorted(set(shakespeare)))
    index = {c: i for i, c in enumerate(vocab)}
    encode = lambda s: jnp.asarray(np.fromiter((index[c] for c in s), np.int32, len(s)))  # noqa: E731
    new = encode(licence_text(vocab))
    n = int(0.9 * new.shape[0])
    return shakespeare, vocab, encode, new[:n], new[n:]


def main(argv=None):
    import jax
    import jax.numpy as jnp
    from funcdl.models import gpt

    import funcdl as fd
    from funcdl import optim
    from funcdl.nn import lora
    from funcdl.training import checkpoint

    args = common_parser(__doc__.split("\n")[0]).parse_args(argv)
    shakespeare, vocab, encode, new_train, new_val = load_texts(args.data_dir)
    config = gpt.Config(vocab_size=len(vocab), compute_dtype=None, grad_chunks=1)
    b, t = 12, config.block_size

    def gpt_loss(params, x, y, config):
        return gpt.loss(params, {}, {"x": x, "y": y}, config)[0]

    def windows(tokens, key, batch):
        s = jax.random.randint(key, (batch,), 0, tokens.shape[0] - t - 1)
        ix = s[:, None] + jnp.arange(t)[None]
        return tokens[ix], tokens[ix + 1]

    @jax.jit
    def val_loss(params):
        x, y = windows(new_val, jax.random.PRNGKey(123), 2000)
        return gpt_loss(params, x, y, dataclasses.replace(config, grad_chunks=1))

    def train(loss_fn, trainable, opt, tokens, steps, seed):
        state = opt.init(trainable)

        def step(carry, key):
            tr, st = carry
            x, y = windows(tokens, key, b)
            v, g = jax.value_and_grad(loss_fn)(tr, x, y)
            u, st = opt.update(g, st, tr)
            return (optim.apply_updates(tr, u), st), v

        run = jax.jit(lambda c, k: jax.lax.scan(step, c, k))
        carry = (trainable, state)
        for i in range(0, steps, 50):
            carry, _ = run(carry, jax.random.split(jax.random.PRNGKey(seed + i), min(50, steps - i)))
        return carry[0]

    params, _ = gpt.init(jax.random.PRNGKey(0), config)
    if args.checkpoint:
        params = checkpoint.restore(args.checkpoint, {"params": params})[0]["params"]
        print(f"pretrained weights from {args.checkpoint}")
    else:
        t0 = time.time()
        shk = encode(shakespeare[: int(0.9 * len(shakespeare))])
        opt = optim.chain(optim.clip_by_global_norm(1.0),
                          optim.adamw(optim.warmup_cosine(1e-3, 100, args.pretrain, 1e-4), b1=0.9, b2=0.99,
                                      weight_decay=0.1, mask=optim.decay_mask))
        params = train(lambda p, x, y: gpt_loss(p, x, y, config), params, opt, shk, args.pretrain, 0)
        print(f"pretrained the baby GPT on tiny shakespeare for {args.pretrain} steps ({time.time() - t0:.0f} s)")
    before = float(val_loss(params))

    # full fine-tuning
    t0 = time.time()
    opt = optim.chain(optim.clip_by_global_norm(1.0), optim.adamw(args.lr_full, b1=0.9, b2=0.99, weight_decay=0.0))
    full = train(lambda p, x, y: gpt_loss(p, x, y, config), params, opt, new_train, args.steps, 1000)
    full_loss, full_time = float(val_loss(full)), time.time() - t0

    # LoRA: adapters on every attention / MLP weight, base frozen by the optimizer
    t0 = time.time()
    adapters = lora.add_adapters(jax.random.PRNGKey(1), params, r"/(qkv|proj|fc)/w$", args.rank)
    both = {"base": params, "lora": adapters}
    opt = optim.freeze(optim.chain(optim.clip_by_global_norm(1.0), optim.adamw(args.lr_lora, b1=0.9, b2=0.99,
                                                                              weight_decay=0.0)), r"^base/")

    def lora_loss(tr, x, y):
        return gpt_loss(lora.apply_adapters(tr["base"], tr["lora"], args.alpha), x, y, config)

    tuned = train(lora_loss, both, opt, new_train, args.steps, 1000)
    lora_time = time.time() - t0
    unchanged = all(bool(jnp.array_equal(a, c)) for a, c in zip(jax.tree.leaves(tuned["base"]),
                                                                  jax.tree.leaves(params), strict=True))
    merged = lora.apply_adapters(tuned["base"], tuned["lora"], args.alpha, merged=True)
    lora_loss_val = float(val_loss(lora.apply_adapters(tuned["base"], tuned["lora"], args.alpha)))
    merged_loss = float(val_loss(merged))

    n_full = lora.count_trainable(params)
    n_lora = lora.count_trainable(tuned["lora"])
    print(f"\nfine-tuning on licence text ({new_train.shape[0]} train / {new_val.shape[0]} val characters), "
          f"{args.steps} steps, batch {b} x {t}")
    print(f"  val loss before fine-tuning:            {before:.4f}")
    print(f"  full fine-tune:  {n_full:8d} trainable params  val loss {full_loss:.4f}  ({full_time:.0f} s)")
    print(f"  LoRA r={args.rank} a={args.alpha:g}: {n_lora:8d} trainable params  val loss {lora_loss_val:.4f}  "
          f"({lora_time:.0f} s)  = {100 * n_lora / n_full:.2f}% of the parameters")
    print(f"  merged adapters: val loss {merged_loss:.4f} (|diff| {abs(merged_loss - lora_loss_val):.1e}); "
          f"base weights unchanged by training: {unchanged}")
    del fd
    return dict(before=before, full=full_loss, lora=lora_loss_val, merged=merged_loss, n_full=n_full, n_lora=n_lora)


if __name__ == "__main__":
    main()
