"""Writes every generated page of the book into ``docs/generated/`` (called by ``docs/conf.py`` at each build).

``generate(out_dir, cache_dir)`` writes: one page per primitive, model and optimizer, the gradient-check table
(its rows computed by the build, cached under ``cache_dir`` by a hash of the sources), the chapters in
curriculum order with their notebooks (every ``notebooks/*.ipynb``, copied in), the API reference, the command
line reference (from ``funcdl.commands.cli.build_parser()``), the benchmark page and "getting started" (from the
README). A file is rewritten only when its text changes, so an unchanged page is not read again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import chapters as C
from . import pages as P

ROOT = P.ROOT


def write_if_changed(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode() if isinstance(text, str) else text
    if path.exists() and path.read_bytes() == data:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# -- what is registered ----------------------------------------------------------------------------------


def primitive_names() -> list[str]:
    import funcdl

    return list(funcdl.REGISTRY)


def model_entries() -> dict:
    from funcdl.models.registry import MODELS

    return dict(MODELS)


OPTIMIZER_MODULES = ("funcdl.optim.optimizers", "funcdl.optim.adaptive", "funcdl.optim.modern")


def optimizer_factories() -> dict:
    """Every public optimizer constructor of ``funcdl.optim``: the registry the command line reads
    (``optim.OPTIMIZERS``), then any function of ``optim.__all__`` defined in the optimizer modules
    (``OPTIMIZER_MODULES``) that the registry lacks, under its own name."""
    import funcdl.optim as optim

    out = dict(optim.OPTIMIZERS)
    known = set(out.values())
    for name in optim.__all__:
        fn = getattr(optim, name)
        if callable(fn) and getattr(fn, "__module__", "") in OPTIMIZER_MODULES and fn not in known:
            out[name] = fn
    return out


# -- the gradient-check rows -----------------------------------------------------------------------------


def source_hash() -> str:
    """A hash of what the gradient check depends on: the primitives (funcdl/nn), the checker (funcdl/core),
    funcdl/__init__.py and the jax version (edits elsewhere, e.g. in funcdl/training, keep the cache)."""
    h = hashlib.sha256()
    files = [ROOT / "funcdl" / "__init__.py"] + sorted((ROOT / "funcdl" / "nn").rglob("*.py")) \
        + sorted((ROOT / "funcdl" / "core").rglob("*.py"))
    for f in files:
        h.update(str(f.relative_to(ROOT)).encode())
        h.update(f.read_bytes())
    import jax

    h.update(jax.__version__.encode())
    return h.hexdigest()[:16]


# configurations drawn at random from each primitive's space, checked besides its hand-picked examples
FUZZ = 1
# "quick" (default): the test suite's depth (``funcdl gradcheck --quick``: float64 VJP and finite differences on
# every configuration; float32, jit, vmap and second order on the first), which keeps a clean build within its
# 10 minutes on two cores; FUNCDL_BOOK_CHECK=full runs every check on every configuration (about 3x the time)
CHECK = "quick"


def check_depth() -> str:
    depth = os.environ.get("FUNCDL_BOOK_CHECK", CHECK)
    if depth not in ("quick", "full"):
        raise ValueError(f"FUNCDL_BOOK_CHECK={depth!r}: use quick (default) or full")
    return depth


def gradcheck_rows(cache_dir: Path, log=print) -> tuple[list[dict], float | None, bool]:
    """All rows of ``funcdl gradcheck --json`` (every registered primitive), from the cache when the sources
    are unchanged; else computed in a subprocess and cached. Returns (rows, seconds, cached)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    fuzz = int(os.environ.get("FUNCDL_BOOK_FUZZ", str(FUZZ)))
    depth = check_depth()
    path = cache_dir / f"gradcheck-{source_hash()}-fuzz{fuzz}-{depth}.json"
    if path.exists():
        return json.loads(path.read_text()), None, True
    names = primitive_names()
    jobs = max(1, min(len(names), int(os.environ.get("FUNCDL_BOOK_JOBS") or os.cpu_count() or 1)))
    log(f"[funcdl book] running funcdl gradcheck --json --fuzz {fuzz} ({depth}) on every primitive in {jobs} processes "
        f"(cached in {path}) ...")
    t = time.perf_counter()
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    outs = [(cache_dir / f"gradcheck-part{j}.out", cache_dir / f"gradcheck-part{j}.err") for j in range(jobs)]
    procs = []
    for j, (o, e) in enumerate(outs):   # files, not pipes: a full pipe would stall a worker until it is read
        with open(o, "w") as fo, open(e, "w") as fe:
            quick = ["--quick"] if depth == "quick" else []
            procs.append(subprocess.Popen([sys.executable, "-m", "funcdl", "gradcheck", "--json", "--fuzz",
                                           str(fuzz), *quick, *names[j::jobs]], stdout=fo, stderr=fe, env=env,
                                          cwd=ROOT))
    rows: list[dict] = []
    for proc, (o, e) in zip(procs, outs, strict=True):
        proc.wait()
        out, err = o.read_text(), e.read_text()
        o.unlink()
        e.unlink()
        start = out.find("[")
        if start < 0:   # exit 1 with rows is a failing check (shown on the pages); no rows is a crash
            raise RuntimeError(f"funcdl gradcheck --json printed no rows (exit {proc.returncode}): "
                               f"{(err.strip().splitlines() or [out[-300:]])[-1]}")
        rows += json.loads(out[start:])
    order = {n: i for i, n in enumerate(names)}
    rows.sort(key=lambda r: order.get(r["name"], len(order)))   # stable: each primitive's rows keep their order
    seconds = time.perf_counter() - t
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows))
    os.replace(tmp, path)
    failed = sum(not r["passed"] for r in rows)
    log(f"[funcdl book] gradcheck: {len(rows)} rows ({failed} failed) in {seconds:.0f} s")
    return rows, seconds, False


# -- notebooks -------------------------------------------------------------------------------------------


def notebooks() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("*.ipynb"))


def notebook_title(path: Path) -> str:
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            for line in src.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return path.stem


# -- pages -----------------------------------------------------------------------------------------------


def chapter_page(ch: dict, prims_by_module: dict, models: dict, optimizers: dict, nbs: list[Path],
                 commands: set[str], number: int) -> str:
    lines = [f"# {number}. {ch['title']}", "", ch["intro"], ""]
    mine_nbs = [p for p in nbs if C.chapter_of_notebook(p.stem)["slug"] == ch["slug"]]
    if mine_nbs:
        lines += ["## Notebooks", "", "Executed by the build, with their figures:", ""]
        lines += [f"- {{doc}}`{notebook_title(p)} <../notebooks/{p.stem}>`" for p in mine_nbs]
        lines += ["", "```{toctree}", ":hidden:", ""] + [f"../notebooks/{p.stem}" for p in mine_nbs] + ["```", ""]
    prims = [n for m, names in prims_by_module.items() if C.chapter_of_module(m)["slug"] == ch["slug"]
             for n in names]
    if prims:
        lines += ["## Primitives", "", "Each page: the derivation, the forward and backward code, the settings "
                  "and that primitive's rows of the gradient-check table.", "",
                  ", ".join(f"{{doc}}`{n} <../primitives/{P.page_name(n)}>`" for n in prims), ""]
    mods = [n for n in models if C.chapter_of_model(n)["slug"] == ch["slug"]]
    if mods:
        lines += ["## Models", "", "\n".join(f"- {{doc}}`{n} <../models/{P.page_name(n)}>`: "
                                            f"{P.md_cell(models[n].description)}" for n in mods), ""]
    if ch["optimizers"]:
        lines += ["## Optimizers", "", ", ".join(f"{{doc}}`{n} <../optimizers/{P.page_name(n)}>`"
                                                for n in optimizers), ""]
    cmds = [c for c in ch["commands"] if c in commands]
    if cmds:
        lines += ["## Commands", "", ", ".join(f"{{ref}}`funcdl {c} <funcdl-{c}>`" for c in cmds), ""]
    return "\n".join(lines) + "\n"


def cli_page() -> tuple[str, set[str]]:
    import argparse

    from funcdl.commands.cli import build_parser

    os.environ["COLUMNS"] = "100"   # argparse wraps to the terminal width: fix it so the page is stable
    parser = build_parser()
    subs = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    commands = dict(subs.choices) if subs else {}
    lines = ["# The command line", "", "Generated from `funcdl.commands.cli.build_parser()`: the help of "
             "`funcdl` and of each command, as `funcdl COMMAND --help` prints it.", "",
             P.code_block(parser.format_help(), "text")]
    for name, sub in commands.items():
        lines += [f"(funcdl-{name})=", f"## `funcdl {name}`", "", P.code_block(sub.format_help(), "text")]
    return "\n".join(lines) + "\n", set(commands)


def _json_table(data) -> str:
    """A list of flat dicts (or a dict of them, or {"rows": [...]}) as a Markdown table."""
    if isinstance(data, dict) and isinstance(data.get("rows"), list):
        data = data["rows"]
    if isinstance(data, dict):
        if all(isinstance(v, dict) for v in data.values()):
            data = [{"": k, **v} for k, v in data.items()]
        else:
            data = [{"key": k, "value": v} for k, v in data.items()]
    if not isinstance(data, list) or not data or not all(isinstance(r, dict) for r in data):
        return P.code_block(json.dumps(data, indent=1), "json")
    cols = list(dict.fromkeys(k for r in data for k in r))
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else json.dumps(v) if isinstance(v, list | dict) else v
    out = ["| " + " | ".join(P.md_cell(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(P.md_cell(fmt(r.get(c, ""))) for c in cols) + " |" for r in data]
    return "\n".join(out) + "\n"


def benchmarks_page(results_dir: Path) -> str:
    import ast

    lines = ["# Benchmarks", "", "Every script in `benchmarks/`, its docstring (what it measures and how to "
             "run it) and, where the script writes JSON, the tables of the result files kept in "
             f"`docs/{results_dir.name}/` (name a result `SCRIPT.json` or `SCRIPT-anything.json`). The build "
             "does not run the benchmarks: they take minutes to hours and want a quiet machine.", ""]
    for script in sorted((ROOT / "benchmarks").glob("*.py")):
        src = script.read_text()
        doc = ast.get_docstring(ast.parse(src)) or "(no docstring)"
        writes_json = "--json" in src
        lines += [f"## `{script.name}`", "", P.code_block(doc, "text"),
                  f"Command: `python benchmarks/{script.name}`" + (" (`--json` writes its figures as JSON)"
                                                                  if writes_json else "") + ".", ""]
        for res in sorted(results_dir.glob(f"{script.stem}*.json")):
            if res.stem != script.stem and not res.stem.startswith(script.stem + "-"):
                continue
            lines += [f"Result `{res.name}`:", "", _json_table(json.loads(res.read_text())), ""]
    return "\n".join(lines) + "\n"


def getting_started_page() -> str:
    text = (ROOT / "README.md").read_text()
    parts = []
    for title in ("## Two commands", "## A short tour"):
        m = re.search(rf"^{re.escape(title)}\n(.*?)(?=^## )", text, re.S | re.M)
        if m:
            parts.append(title + "\n" + m.group(1))
    return ("# Getting started\n\nFrom the README: install, train the main job, run the tests; then a tour of "
            "the API.\n\n" + "\n".join(parts))


def api_pages() -> dict[str, str]:
    import inspect
    import pkgutil

    import funcdl.models as models
    import funcdl.optim as optim

    import funcdl

    out = {}
    names = sorted(n for n in dir(funcdl) if not n.startswith("_"))
    prims = [n for n in names if isinstance(getattr(funcdl, n), funcdl.Primitive)]
    fns = [n for n in names if n not in prims and (inspect.isfunction(getattr(funcdl, n))
                                                   or inspect.isclass(getattr(funcdl, n)))]
    lines = ["# `funcdl`", "", "`import funcdl as fd`: the primitives (each has its own page, with the math, the "
             "code and the check) and the functions around them.", "", "## Primitives", "",
             ", ".join(f"{{doc}}`{n} <../primitives/{P.page_name(getattr(funcdl, n).name)}>`" for n in prims),
             "", "## Functions and classes", "", "```{eval-rst}"]
    for n in fns:
        kind = "autoclass" if inspect.isclass(getattr(funcdl, n)) else "autofunction"
        lines.append(f".. {kind}:: funcdl.{n}")
    lines += ["```", ""]
    out["api/funcdl.md"] = "\n".join(lines)
    lines = ["# `funcdl.optim`", "", "Optimizers, schedules and gradient transformations (each optimizer also has "
             "its own page).", "", "```{eval-rst}"]
    for n in optim.__all__:
        obj = getattr(optim, n)
        if inspect.isclass(obj):
            lines.append(f".. autoclass:: funcdl.optim.{n}")
        elif inspect.isfunction(obj):
            lines.append(f".. autofunction:: funcdl.optim.{n}")
    lines += ["```", ""]
    out["api/optim.md"] = "\n".join(lines)
    lines = ["# `funcdl.models`", "", "One module per architecture (each registered model also has its own page).",
             "", "```{eval-rst}", ".. automodule:: funcdl.models", ""]
    for mod in sorted(m.name for m in pkgutil.iter_modules(models.__path__)):
        lines += [f".. automodule:: funcdl.models.{mod}", "   :members:", ""]
    lines += ["```", ""]
    out["api/models.md"] = "\n".join(lines)
    out["api/index.md"] = "# API reference\n\n```{toctree}\n\nfuncdl\noptim\nmodels\n```\n"
    return out


def missing_pages(out_dir: Path) -> list[str]:
    """The registered primitives, models and optimizers and the notebooks that have no page under ``out_dir``
    (empty after :func:`generate`; the quick test holds every registry to it)."""
    want = [f"primitives/{P.page_name(n)}.md" for n in primitive_names()]
    want += [f"models/{P.page_name(n)}.md" for n in model_entries()]
    want += [f"optimizers/{P.page_name(n)}.md" for n in optimizer_factories()]
    want += [f"notebooks/{p.name}" for p in notebooks()]
    return [w for w in want if not (out_dir / w).is_file()]


def generate(out_dir: Path, cache_dir: Path, log=print, rows: list[dict] | None = None) -> dict:
    """Write every generated page under ``out_dir``; returns a summary (counts, gradcheck seconds).
    ``rows`` given (e.g. ``[]`` in a quick test) replaces the gradient check the build runs."""
    import funcdl

    t0 = time.perf_counter()
    pages: dict[str, str] = {}
    if rows is None:
        rows, seconds, cached = gradcheck_rows(cache_dir, log)
    else:
        seconds, cached = None, False
    by_name: dict[str, list[dict]] = {}
    for r in rows:
        by_name.setdefault(r["name"], []).append(r)
    names = primitive_names()
    prims_by_module: dict[str, list[str]] = {}
    for n in names:
        prims_by_module.setdefault(funcdl.REGISTRY[n].reference.__module__, []).append(n)
    chapter_title = {ch["slug"]: f"{i}. {ch['title']}" for i, ch in enumerate(C.CHAPTERS, 1)}
    for n in names:
        prim = funcdl.REGISTRY[n]
        ch = C.chapter_of_module(prim.reference.__module__)
        pages[f"primitives/{P.page_name(n)}.md"] = P.primitive_page(prim, by_name.get(n, []),
                                                                   (ch["slug"], chapter_title[ch["slug"]]))
    pages["primitives/index.md"] = P.check_table_page(by_name, names, seconds, cached)
    models = model_entries()
    for n, entry in models.items():
        ch = C.chapter_of_model(n)
        pages[f"models/{P.page_name(n)}.md"] = P.model_page(entry, (ch["slug"], chapter_title[ch["slug"]]))
    pages["models/index.md"] = ("# Models\n\nEvery registered model (`funcdl train NAME`), by chapter.\n\n"
                                + "\n".join(f"- {{doc}}`{n} <{P.page_name(n)}>`: {P.md_cell(e.description)}"
                                            for n, e in models.items())
                                + "\n\n```{toctree}\n:hidden:\n\n"
                                + "\n".join(P.page_name(n) for n in models) + "\n```\n")
    opts = optimizer_factories()
    cases = P.torch_cases()
    for n, f in opts.items():
        pages[f"optimizers/{P.page_name(n)}.md"] = P.optimizer_page(n, f, cases.get(f.__name__, []),
                                                                    P.chain_parts(f))
    pages["optimizers/index.md"] = ("# Optimizers\n\nEvery optimizer `funcdl.optim` constructs by name "
                                    "(`optim.create(NAME, ...)`, `funcdl train --optimizer NAME`).\n\n"
                                    + "\n".join(f"- {{doc}}`{n} <{P.page_name(n)}>`" for n in opts)
                                    + "\n\n```{toctree}\n:hidden:\n\n"
                                    + "\n".join(P.page_name(n) for n in opts) + "\n```\n")
    cli, commands = cli_page()
    pages["cli.md"] = cli
    pages["benchmarks.md"] = benchmarks_page(out_dir.parent / "benchmark_results")
    pages["getting_started.md"] = getting_started_page()
    pages.update(api_pages())
    nbs = notebooks()
    for i, ch in enumerate(C.CHAPTERS, 1):
        pages[f"chapters/{ch['slug']}.md"] = chapter_page(ch, prims_by_module, models, opts, nbs, commands, i)
    for path, text in pages.items():
        write_if_changed(out_dir / path, text)
    for nb in nbs:
        write_if_changed(out_dir / "notebooks" / nb.name, nb.read_bytes())
    # pages of things that no longer exist would otherwise linger and be built
    keep = {out_dir / p for p in pages} | {out_dir / "notebooks" / nb.name for nb in nbs}
    for f in list(out_dir.rglob("*.md")) + list(out_dir.rglob("*.ipynb")):
        if f not in keep:
            f.unlink()
    for d in sorted(out_dir.rglob("*"), reverse=True):
        if d.is_dir() and not any(d.iterdir()):
            shutil.rmtree(d)
    summary = dict(primitives=len(names), models=len(models), optimizers=len(opts), notebooks=len(nbs),
                   pages=len(pages) + len(nbs), gradcheck_seconds=seconds, gradcheck_cached=cached,
                   seconds=time.perf_counter() - t0)
    log(f"[funcdl book] generated {summary}")
    return summary
