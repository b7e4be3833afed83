"""``funcdl gradcheck``: check every registered primitive's hand-derived gradient and print the table."""

from __future__ import annotations

import json
import sys


def register(sub) -> None:
    p = sub.add_parser(
        "gradcheck",
        help="check every primitive's hand-derived VJP against autodiff and finite differences",
        description="For every registered primitive: hand VJP vs jax.vjp of the reference (float64 <= 1e-10, "
        "float32 <= 1e-5), the reference vs central finite differences (float64), jit/vmap invariance, and "
        "second order: Hessian-vector products through the hand rules vs the reference's (float64 <= 1e-8). "
        "Exits non-zero on any failure.",
    )
    p.add_argument("names", nargs="*", help="primitives to check (default: all registered)")
    p.add_argument("--json", action="store_true", help="print the rows as a JSON list of objects")
    p.add_argument("--markdown", action="store_true", help="print one summary line per primitive (Markdown)")
    p.add_argument("--failures", action="store_true", help="print only the failing rows")
    p.add_argument("--list", action="store_true", help="list the registered primitives and exit")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fuzz", type=int, default=0, metavar="N",
                   help="also check N configurations per primitive drawn at random (seed --seed) from its space "
                   "of settings and shapes (default 0: only the hand-picked examples)")
    p.add_argument("--quick", action="store_true",
                   help="the test suite's depth: the float64 VJP and finite differences on every configuration, the "
                   "float32 VJP, jit, vmap and second order on the first one only (about a third of the time)")
    p.set_defaults(func=run)


def run(args) -> int:
    import funcdl
    from funcdl.core import gradcheck as gc

    if args.list:
        for name in funcdl.registered():
            print(name)
        return 0
    names = args.names or funcdl.registered()
    for n in names:
        funcdl.get(n)  # unknown names fail here with the list of valid ones
    depth = {"second_order": 1, "extras": 1} if args.quick else {}
    rows = gc.check_all(names, seed=args.seed, fuzz=args.fuzz, **depth)
    if args.failures:
        rows_out = [r for r in rows if not r.passed]
    else:
        rows_out = rows
    if args.markdown:
        print(gc.markdown_table(rows))
        print()
        print(gc.summary(rows))
    elif args.json:
        json.dump([r.asdict() for r in rows_out], sys.stdout, indent=1)
        print()
    else:
        print(gc.format_table(rows_out))
        print()
        print(gc.summary(rows))
    return 0 if all(r.passed for r in rows) else 1
