"""Pages generated from the registries: one per primitive, model and optimizer, and the gradient-check table.

Every function returns ``{relative path: MyST Markdown text}``; :mod:`bookgen.site` writes them.
"""

from __future__ import annotations

import inspect
import os
import re
import textwrap
from pathlib import Path

from .texmath import docstring_to_myst

# the repository the book describes (a copy of docs/ elsewhere, as the browser test builds, names it)
ROOT = Path(os.environ.get("FUNCDL_BOOK_ROOT") or Path(__file__).resolve().parents[2]).resolve()


def md_cell(s) -> str:
    """A value for one cell of a Markdown table (pipes escaped, no line breaks)."""
    return str(s).replace("|", "\\|").replace("\n", " ")


def code_block(src: str, lang: str = "python") -> str:
    fence = "````" if "```" in src else "```"
    return f"{fence}{lang}\n{textwrap.dedent(src).rstrip()}\n{fence}\n"


def source_of(fn) -> str:
    try:
        return textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        return f"# source not available for {getattr(fn, '__name__', fn)!r}\n"


def where(fn) -> str:
    """``path:line`` of a function in the repository."""
    try:
        path = Path(inspect.getsourcefile(fn)).resolve()
        line = inspect.getsourcelines(fn)[1]
        return f"{path.relative_to(ROOT)}:{line}"
    except (OSError, TypeError, ValueError):
        return "?"


def page_name(name: str) -> str:
    """A file name for a registry name (model names carry dashes, which are fine; keep it stable)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)


# -- primitives ------------------------------------------------------------------------------------------


def primitive_rows_table(name: str, rows: list[dict]) -> str:
    if not rows:
        return "No gradient-check rows were produced for this primitive (see the build log).\n"
    out = ["| config | check | input | dtype | shapes | rel. error | tolerance | result |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        result = "pass" if r["passed"] else "**FAIL**"
        if r.get("message"):
            result += f" ({md_cell(r['message'][:80])})"
        out.append(f"| {md_cell(r['config'] or '-')} | {r['check']} | {md_cell(r['input'])} | {r['dtype']} "
                   f"| {md_cell(r['shapes'])} | {r['rel_error']:.1e} | {r['tol']:.0e} | {result} |")
    return "\n".join(out) + "\n"


def primitive_page(prim, rows: list[dict], chapter: tuple[str, str] | None) -> str:
    name = prim.name
    settings = prim._settings_defaults
    lines = [f"({'prim-' + name})=", f"# `{name}`", ""]
    if chapter:
        lines += [f"Chapter: {{doc}}`{chapter[1]} <../chapters/{chapter[0]}>` · "
                  f"defined in `{where(prim.reference)}` · call it as `funcdl.{name}` "
                  f"(or `funcdl.get({name!r})`)", ""]
    lines += ["## The math", "", docstring_to_myst(prim.__doc__), "",
              "`````{admonition} The docstring as written\n:class: dropdown\n"]
    lines += ["````text", (prim.__doc__ or "").strip("\n"), "````", "`````", ""]
    lines += ["## Inputs and settings", "",
              "| | name | default |", "|---|---|---|"]
    for inp in prim.inputs:
        kind = "input (no gradient)" if inp in prim.nondiff else "input"
        default = prim._input_defaults.get(inp, "required")
        lines.append(f"| {kind} | `{inp}` | {md_cell(default)} |")
    for k, v in settings.items():
        default = "required" if v is inspect.Parameter.empty else repr(v)
        lines.append(f"| setting (static) | `{k}` | {md_cell(default)} |")
    lines.append("")
    if prim.surrogate:
        lines += [f"Surrogate gradient by design: {md_cell(prim.surrogate)}", ""]
    fuzzed = list(dict.fromkeys(r["config"] for r in rows if r["config"].startswith("fuzz#")))
    if fuzzed:
        drawn = "; ".join(f"`{c.split(' ', 1)[-1] if ' ' in c else '(defaults)'}`" for c in fuzzed)
        lines += [f"Configurations this build drew from its space and checked (`funcdl gradcheck {name} "
                  f"--fuzz N` draws N): {drawn}", ""]
    lines += ["## The code", "", f"The reference forward (`{where(prim.reference)}`), which `jax.grad` "
              "differentiates when the hand rule is checked:", "", code_block(source_of(prim.reference)),
              f"The forward with its residuals (`{where(prim.fwd)}`):", "", code_block(source_of(prim.fwd)),
              f"The hand-derived backward (`{where(prim.bwd)}`):", "", code_block(source_of(prim.bwd))]
    if prim.space is not None:
        lines += [f"The space of settings and shapes (`{where(prim.space)}`):", "",
                  code_block(source_of(prim.space))]
    lines += ["## Its gradient check", "",
              f"These rows were computed by this build (`funcdl gradcheck {name} --json --fuzz 1 --quick` gives "
              "the same; without `--quick` every check runs on every configuration): hand VJP against `jax.vjp` "
              "of the reference in float64 on every configuration and in float32 on the first, the reference "
              "against central finite differences on every configuration, `jit`/`vmap` invariance and "
              "Hessian-vector products (second order) on the first.", "",
              primitive_rows_table(name, rows)]
    return "\n".join(lines) + "\n"


def check_table_page(rows_by_name: dict[str, list[dict]], names: list[str], seconds: float | None,
                     cached: bool) -> str:
    total = sum(len(v) for v in rows_by_name.values())
    failed = sum(not r["passed"] for v in rows_by_name.values() for r in v)
    when = ("taken from the build's cache (the sources it was computed from are unchanged)" if cached
            else f"computed by this build in {seconds:.0f} s" if seconds is not None else "computed by this build")
    lines = ["(check-table)=", "# The gradient-check table", "",
             f"Every registered primitive ({len(names)}), checked by `funcdl.core.gradcheck.check_all` "
             f"({total} checks, {failed} failed; {when}). One line per primitive: the worst relative error of "
             "each check over its configurations; a primitive's page has every row.", "",
             "| primitive | configs | vjp float64 | vjp float32 | finite diff. | jit / vmap | hvp (2nd order) | ok |",
             "|---|---|---|---|---|---|---|---|"]
    for name in names:
        mine = rows_by_name.get(name, [])

        def worst(pred, mine=mine):
            return max((r["rel_error"] for r in mine if pred(r)), default=0.0)

        fd = ("surrogate (skipped)" if any(r["check"] == "fd" and r["message"].startswith("skipped: surrogate")
                                           for r in mine) else f"{worst(lambda r: r['check'] == 'fd'):.0e}")
        hvp = [r for r in mine if r["check"] == "hvp"]
        hvp_cell = ("first order only" if hvp and all(r["message"].startswith("skipped") for r in hvp)
                    else f"{max((r['rel_error'] for r in hvp), default=0.0):.0e}")
        ok = "no rows" if not mine else "pass" if all(r["passed"] for r in mine) else "**FAIL**"
        lines.append(
            f"| {{doc}}`{name} <{page_name(name)}>` | {len({r['config'] for r in mine})} "
            f"| {worst(lambda r: r['check'] == 'vjp' and r['dtype'] == 'float64'):.0e} "
            f"| {worst(lambda r: r['check'] == 'vjp' and r['dtype'] == 'float32'):.0e} | {fd} "
            f"| {worst(lambda r: r['check'] in ('jit', 'vmap')):.0e} | {hvp_cell} | {ok} |")
    lines += ["", "```{toctree}", ":hidden:", ""] + [page_name(n) for n in names] + ["```", ""]
    return "\n".join(lines)


# -- models ----------------------------------------------------------------------------------------------


def _tests_mentioning(patterns: list[str], files_glob: str = "test_torch_*.py") -> list[str]:
    hits = []
    for f in sorted((ROOT / "tests").glob(files_glob)):
        text = f.read_text()
        if any(re.search(p, text) for p in patterns):
            hits.append(f"tests/{f.name}")
    return hits


def model_page(entry, chapter: tuple[str, str] | None) -> str:
    import sys

    module = sys.modules[entry.build.__module__]
    short = module.__name__.rsplit(".", 1)[-1]
    lines = [f"# Model `{entry.name}`", "", md_cell(entry.description), ""]
    if chapter:
        lines += [f"Chapter: {{doc}}`{chapter[1]} <../chapters/{chapter[0]}>` · module `funcdl.models.{short}` "
                  f"(`models/{short}.py`)", ""]
    lines += ["## Train it", "", code_block(f"funcdl train {entry.name}" +
                                            (f" --data {entry.data[0]}" if entry.data else ""), "bash"),
              f"Data sets: {', '.join(f'`{d}`' for d in entry.data) or '(none listed)'}.", "",
              "| option | default |", "|---|---|"]
    sig = inspect.signature(entry.build)
    defaults = entry.defaults
    for k, p in sig.parameters.items():
        if p.kind == p.KEYWORD_ONLY:
            val = defaults.get(k, p.default)
            lines.append(f"| `{k}` (model, `--set {k}=...`) | {md_cell(repr(val))} |")
    for k, v in entry.train_defaults.items():
        lines.append(f"| `{k}` (training) | {md_cell(repr(v))} |")
    lines.append("")
    if entry.data_defaults:
        lines += ["Per data set, these replace the defaults: " + "; ".join(
            f"`{d}`: {md_cell(v)}" for d, v in entry.data_defaults.items()), ""]
    torch_tests = _tests_mentioning([rf"models import [^\n]*\b{short}\b", rf"models\.{short}\b"])
    lines += ["## How it is checked", "",
              "`tests/test_models.py` builds every registered model at its small size "
              f"({md_cell(entry.small) if entry.small else 'its defaults'}), compares the loss's hand-derived "
              "gradient with pure autodiff leaf by leaf (`funcdl.core.gradcheck.compare_model_grads`) and takes a "
              "few optimizer steps."]
    if torch_tests:
        lines += ["Against PyTorch (skipped without torch): " + ", ".join(f"`{t}`" for t in torch_tests) + "."]
    else:
        lines += ["No whole-model comparison with PyTorch exists for it; its layers are compared one by one "
                  "(the `tests/test_torch_*.py` files)."]
    lines += ["", "## The module's description", "", docstring_to_myst(module.__doc__)]
    return "\n".join(lines) + "\n"


# -- optimizers ------------------------------------------------------------------------------------------


def torch_cases() -> dict[str, list[tuple[str, str]]]:
    """Optimizer factory name -> [(case id, torch class)] from tests/test_torch_optim.py's CASES."""
    path = ROOT / "tests" / "test_torch_optim.py"
    text = path.read_text() if path.exists() else ""
    out: dict[str, list[tuple[str, str]]] = {}
    for m in re.finditer(r'\(\s*"([\w-]+)",\s*optim\.(\w+),\s*dict\((?:[^()]|\([^()]*\))*\),\s*"(\w+)"', text):
        out.setdefault(m.group(2), []).append((m.group(1), m.group(3)))
    return out


def optimizer_page(name: str, factory, cases: list[tuple[str, str]], chain_parts: list) -> str:
    lines = [f"# Optimizer `{name}`", "",
             f"`funcdl.optim.{factory.__name__}{inspect.signature(factory)}` (`{where(factory)}`); on the command "
             f"line `funcdl train MODEL --optimizer {name}`.", "",
             "## The update rule", "", docstring_to_myst(factory.__doc__), ""]
    if chain_parts:
        lines += ["It is a chain of these transforms (each one's docstring gives its equations):", ""]
        for part in chain_parts:
            lines += [f"- `{part.__name__}`: " + md_cell((part.__doc__ or "").strip().splitlines()[0]
                                                        if part.__doc__ else "")]
        lines.append("")
    lines += ["## Agreement with PyTorch", ""]
    if cases:
        lines += ["`tests/test_torch_optim.py` runs 50 steps of this optimizer and of `torch.optim` on the same "
                  "random problem and holds the trajectories to a relative error of 1e-5 (float32), for:", "",
                  "| test case | torch class |", "|---|---|"]
        lines += [f"| `{cid}` | `torch.optim.{cls}` |" for cid, cls in cases]
    else:
        lines += [f"torch has no `{name}`; `tests/test_optim.py` checks it against the paper's update written "
                  "out step by step and by convergence on a convex quadratic and on Rosenbrock."]
    lines += ["", "## The code", "", code_block(source_of(factory))]
    return "\n".join(lines) + "\n"


def chain_parts(factory) -> list:
    """The ``scale_by_*`` / transform functions a named optimizer's source calls (for the page's list)."""
    import funcdl.optim as optim

    src = source_of(factory)
    names = dict.fromkeys(re.findall(r"\b((?:scale_by_|add_)\w+)\(", src))
    return [getattr(optim, n) for n in names if hasattr(optim, n)]
