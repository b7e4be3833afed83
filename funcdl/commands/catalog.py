"""``funcdl models`` and ``funcdl data``: what can be trained, on what."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("models", help="list the registered models and their defaults",
                       description="List the models `funcdl train` knows, with their default data and options.")
    p.add_argument("names", nargs="*", help="show only these models (unknown names list the valid ones)")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=run_models)

    p = sub.add_parser("data", help="list the registered data sets",
                       description="List the data sets `funcdl train --data` accepts. With --load NAME, load "
                       "it and print its split sizes (uses --data-dir or the cache; may download).")
    p.add_argument("names", nargs="*", help="show only these data sets")
    p.add_argument("--load", action="store_true", help="load the named data sets and print their split sizes")
    p.add_argument("--data-dir", help="folder with the data set's files")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=run_data)


def _fmt(v):
    return ",".join(map(str, v)) if isinstance(v, tuple | list) else str(v)


def run_models(args) -> int:
    from funcdl import models
    from funcdl.models.registry import split_options

    names = args.names or sorted(models.MODELS)
    entries = [models.get_model(n) for n in names]
    if args.json:
        print(json.dumps({e.name: {"description": e.description, "data": list(e.data),
                                   "defaults": {k: _fmt(v) for k, v in e.defaults.items()}} for e in entries},
                         indent=1))
        return 0
    for e in entries:
        train, model = split_options(e.defaults)
        print(f"{e.name}: {e.description}")
        if e.data:
            print(f"  data:     {', '.join(e.data)}")
        if model:
            print(f"  model:    {' '.join(f'{k}={_fmt(v)}' for k, v in model.items())}")
        if train:
            print(f"  training: {' '.join(f'{k}={_fmt(v)}' for k, v in train.items())}")
    return 0


def run_data(args) -> int:
    import funcdl.data as data

    names = args.names or data.names()
    entries = [data.get_dataset(n) for n in names]
    rows = {}
    for e in entries:
        row = {"kind": e.kind, "description": e.description}
        if args.load:
            ds = data.load(e.name, data_dir=args.data_dir)
            row["splits"] = {k: ds.size(k) for k in ds.splits}
            row["info"] = {"input_shape": list(ds.info(seq_len=1).input_shape) if not ds.windowed else None,
                           "num_classes": ds.num_classes, "vocab_size": ds.vocab_size}
        rows[e.name] = row
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for name, row in rows.items():
        print(f"{name:<18} {row['kind']:<15} {row['description']}")
        if "splits" in row:
            sizes = ", ".join(f"{k} {v}" for k, v in row["splits"].items())
            print(f"{'':<18} splits: {sizes}; {row['info']}")
    if not args.names:
        print(f"{'text:PATH':<18} {'language':<15} any local UTF-8 text file, character level")
    return 0
