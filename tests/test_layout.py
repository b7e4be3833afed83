"""The import rules of the layout, read from the source (no import is executed).

- ``funcdl/core`` (the mechanism) and ``funcdl/nn`` (the primitives) never import training, data, plots, the
  command line, ``optim`` or ``models``: a primitive never knows how it is trained;
- ``optim/`` imports nothing from funcdl (jax and numpy only), so it can be read and used on its own;
- nothing in ``funcdl/`` imports ``models`` except the command line, which sits on top of all three packages;
- ``optim`` is used only by training, its plots and the command line;
- every package folder is in ``pyproject.toml``'s package list, so an install carries it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# folder on disk -> its import name once installed
PACKAGES = {"funcdl": "funcdl", "optim": "funcdl.optim", "models": "funcdl.models"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    parts[0] = PACKAGES[parts[0]]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found |= {f"{mod}.{a.name}" for a in node.names}     # "from funcdl import optim" names a module
    return found


def _sources(folder: str):
    return sorted((ROOT / folder).rglob("*.py"))


def _violations(files, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in files:
        for mod in sorted(_imports(path)):
            if any(mod == f or mod.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.relative_to(ROOT)} imports {mod}")
    return bad


def test_the_rules_can_fail():
    """The reader sees relative and absolute imports alike (a rule that sees nothing cannot fail)."""
    imports = _imports(ROOT / "funcdl" / "training" / "step.py")
    assert "funcdl.optim" in imports and "funcdl.core.primitive" in imports


@pytest.mark.parametrize("layer", ["core", "nn"])
def test_mechanism_and_primitives_know_no_training(layer):
    forbidden = ("funcdl.training", "funcdl.data", "funcdl.plots", "funcdl.commands", "funcdl.optim",
                 "funcdl.models", "optim", "models")
    assert _violations(_sources(f"funcdl/{layer}"), forbidden) == []


def test_optim_imports_nothing_from_funcdl():
    files = _sources("optim")
    assert files
    bad = [f"{p.relative_to(ROOT)} imports {m}" for p in files for m in _imports(p)
           if m.split(".")[0] in ("funcdl", "models", "optim") and not m.startswith("funcdl.optim")]
    assert bad == []


def test_only_the_command_line_reaches_models():
    files = [p for p in _sources("funcdl") if "commands" not in p.relative_to(ROOT).parts]
    assert _violations(files, ("funcdl.models", "models")) == []


def test_optim_is_used_only_by_training_plots_compression_and_commands():
    # compress wraps optimizers (pruning masks held by the optimizer, quantization-aware training): training's layer
    allowed = ("training", "plots", "commands", "compress")
    files = [p for p in _sources("funcdl") if p.relative_to(ROOT).parts[1] not in allowed]
    assert _violations(files, ("funcdl.optim", "optim")) == []


def test_every_package_folder_is_installed():
    tomllib = pytest.importorskip("tomllib")          # Python 3.11+
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {_module_name(p) for folder in PACKAGES for p in _sources(folder) if p.name == "__init__.py"}
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
