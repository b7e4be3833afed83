"""Sphinx configuration of the funcdl book (``make -C docs html``; docs/Makefile says the options).

The pages about registered things (primitives, models, optimizers, the gradient-check table, the command line,
the chapters and their notebooks) are generated into ``docs/generated/`` by ``docs/bookgen`` when the build
starts; the notebooks are executed by myst-nb and cached (jupyter-cache) under ``docs/_build/``. Math is typeset
by a copy of KaTeX kept in ``docs/_static/katex`` (MIT licence, its LICENSE beside it), so the site needs no
network.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = Path(os.environ.get("FUNCDL_BOOK_ROOT") or DOCS.parent).resolve()   # the browser test builds a copy
sys.path[:0] = [str(ROOT), str(DOCS)]

# the notebooks read the local data copies here (as the tests do); FUNCDL_SMALL=1 runs them at test size
_shared = ROOT.parent / "shared" / "data"
if "FUNCDL_SHARED_DATA" not in os.environ and _shared.is_dir():
    os.environ["FUNCDL_SHARED_DATA"] = str(_shared)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
SMALL = bool(os.environ.get("FUNCDL_SMALL"))

project = "funcdl"
author = "the funcdl authors"
copyright = "the funcdl authors, MIT licence"
html_title = "funcdl: deep learning written as mathematics"

extensions = ["myst_nb", "sphinx.ext.autodoc"]
exclude_patterns = ["_build", "bookgen", "benchmark_results", "README.md", "**.ipynb_checkpoints", "jupyter_execute"]
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_dmath_double_inline = True   # the notebooks write $$...$$ inside paragraphs, as Jupyter allows
suppress_warnings = ["mystnb.unknown_mime_type"]

# notebooks (FUNCDL_BOOK_EXECUTE): "stored" (default) shows a notebook that carries its outputs as stored and
# executes the others; "all" executes every notebook; "off" none. Execution is at full size unless FUNCDL_SMALL=1,
# cached by the hash of the code cells (jupyter-cache), so a rebuild does not rerun an unchanged notebook; a
# small-size build keeps its own cache so it never passes for the full-size one.
_execute = os.environ.get("FUNCDL_BOOK_EXECUTE", "stored")
if _execute not in ("stored", "all", "off"):
    raise ValueError(f"FUNCDL_BOOK_EXECUTE={_execute!r}: use stored (default), all or off")


def _has_outputs(path: Path) -> bool:
    import json

    cells = json.loads(path.read_text())["cells"]
    return any(c.get("outputs") for c in cells if c["cell_type"] == "code")


nb_execution_mode = "off" if _execute == "off" else "cache"
nb_execution_excludepatterns = ([f"generated/notebooks/{p.name}" for p in sorted((ROOT / "notebooks").glob("*.ipynb"))
                                 if _has_outputs(p)] if _execute == "stored" else [])
nb_execution_cache_path = str(DOCS / "_build" / (".jupyter_cache-small" if SMALL else ".jupyter_cache"))
nb_execution_timeout = 3600
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"

html_theme = "sphinx_book_theme"
html_theme_options = {"show_toc_level": 2, "use_download_button": False, "home_page_in_toc": True}
html_static_path = ["_static"]
html_favicon = "_static/favicon.svg"
html_context = {"default_mode": "light"}
html_css_files = ["katex/katex.min.css", "book.css"]
html_js_files = ["katex/katex.min.js", "katex/contrib/auto-render.min.js", "katex-init.js"]
html_math_renderer = "katex_local"
html_last_updated_fmt = None


def _docstring_as_text(app, what, name, obj, options, lines):
    """funcdl's docstrings are plain text written for help() (math as ``dX = dY W^T``), not reStructuredText:
    show them as preformatted text instead of letting RST guess (and warn)."""
    if lines:
        body = [("    " + ln) if ln.strip() else "" for ln in lines]
        lines[:] = ["::", ""] + body + [""]


def _visit_math(self, node):
    from docutils import nodes

    self.body.append(self.starttag(node, "span", "", CLASS="math notranslate nohighlight"))
    self.body.append(self.encode(r"\(" + node.astext() + r"\)") + "</span>")
    raise nodes.SkipNode


def _visit_displaymath(self, node):
    """A display formula (several, separated by blank lines, become one aligned block, as Sphinx's mathjax)."""
    from docutils import nodes

    self.body.append(self.starttag(node, "div", CLASS="math notranslate nohighlight"))
    if node.get("number"):
        self.body.append(f'<span class="eqno">({node["number"]})</span>')
    if node.get("nowrap"):
        latex = node.astext()
    else:
        parts = [p for p in node.astext().split("\n\n") if p.strip()]
        parts = [rf"\begin{{split}}{p}\end{{split}}" if r"\\" in p else p for p in parts]
        latex = (r"\begin{aligned}" + r"\\".join(parts) + r"\end{aligned}") if len(parts) > 1 else "".join(parts)
    self.body.append(self.encode(r"\[" + latex.strip() + r"\]") + "</div>\n")
    raise nodes.SkipNode


def _generate(app):
    from bookgen.site import generate
    from sphinx.util import logging

    log = logging.getLogger("funcdl-book")
    generate(DOCS / "generated", DOCS / "_build" / ".funcdl_cache", log=log.info)


def setup(app):
    app.add_html_math_renderer("katex_local", (_visit_math, None), (_visit_displaymath, None))
    app.connect("builder-inited", _generate)
    app.connect("autodoc-process-docstring", _docstring_as_text)
