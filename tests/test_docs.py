"""The book (docs/): every registered primitive, model and optimizer gets its page (quick, no Sphinx), and the
site builds with warnings as errors and works in a real browser (slow; skipped without the docs extra, Chromium
and chromedriver: Debian's ``chromium`` and ``chromium-driver``)."""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS))

from bookgen import site, texmath  # noqa: E402

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("book") / "generated"
    summary = site.generate(out, out.parent / "cache", rows=[], log=lambda *a: None)
    return out, summary


def test_every_registered_thing_has_its_page(generated):
    import funcdl.optim as optim
    from funcdl.models.registry import MODELS

    import funcdl

    out, summary = generated
    assert site.missing_pages(out) == []
    for name, prim in funcdl.REGISTRY.items():
        text = (out / "primitives" / f"{name}.md").read_text()
        assert f"# `{name}`" in text and "## The code" in text and "## Its gradient check" in text
        assert prim.bwd.__name__ in text, f"{name}: the page does not show the backward's source"
        assert f"<{name}>`" in (out / "primitives" / "index.md").read_text(), f"{name} not in the check table"
    assert summary["primitives"] == len(funcdl.REGISTRY) and summary["models"] == len(MODELS)
    for name in MODELS:
        assert f"funcdl train {name}" in (out / "models" / f"{name}.md").read_text()
    # every optimizer constructor optim exports (not only the registry) has a page
    ctors = [n for n in optim.__all__ if getattr(getattr(optim, n), "__module__", "") in site.OPTIMIZER_MODULES]
    assert ctors and set(ctors) <= set(site.optimizer_factories())
    for name in ctors:
        assert "## The update rule" in (out / "optimizers" / f"{name}.md").read_text()
    chapters = "".join(p.read_text() for p in (out / "chapters").glob("*.md"))
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):       # new notebooks join a chapter by themselves
        assert f"../notebooks/{nb.stem}\n" in chapters, f"{nb.name} is in no chapter's table of contents"


def test_a_page_that_goes_missing_is_reported(generated):
    out, _ = generated
    page = out / "primitives" / "relu.md"
    text = page.read_text()
    page.unlink()
    try:
        assert site.missing_pages(out) == ["primitives/relu.md"]
    finally:
        page.write_text(text)


def test_plain_text_math_becomes_latex():
    assert texmath.to_latex("dx = dY W^T") == r"dx=dY\ W^{\top}"
    assert texmath.to_latex("y_i = e^(x_i - m) / sum_j e^(x_j - m)") == r"y_{i}=e^{x_{i}-m}/\sum_{j}\ e^{x_{j}-m}"
    assert texmath.to_latex("sqrt(var(x) + eps)") == r"\sqrt{\operatorname{var}(x)+\epsilon}"
    assert texmath.is_formula("db = column sums of dY") and not texmath.is_formula("Residuals: x and W.")
    md = texmath.docstring_to_myst("y = max(x, 0).\n\n    Keep y; the mask is recomputed.\n")
    assert md.startswith("{math}`y=\\operatorname{max}(x,\\,0).`") and "Keep y\\; the mask" in md


# -- the built site in a browser -------------------------------------------------------------------------


def _have_browser_stack() -> str | None:
    for mod in ("sphinx", "myst_nb", "sphinx_book_theme", "selenium"):
        try:
            __import__(mod)
        except ImportError:
            return f"{mod} is not installed (pip install -e '.[docs]')"
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        return "no /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium chromium-driver)"
    return None


def _build(tmp_path: Path) -> tuple[Path, float]:
    """Build a copy of docs/ (so nothing is written into the repository) with -W, reusing the execution and
    gradient-check caches of a previous `make -C docs html` where there are some."""
    src = tmp_path / "docs"
    shutil.copytree(DOCS, src, ignore=shutil.ignore_patterns("_build", "generated"))
    for cache in (DOCS / "_build").glob(".*cache*"):
        shutil.copytree(cache, src / "_build" / cache.name)
    env = dict(os.environ, FUNCDL_BOOK_ROOT=str(ROOT), TMPDIR=str(tmp_path))
    if not (src / "_build" / ".jupyter_cache").exists():
        env["FUNCDL_SMALL"] = "1"      # nothing cached at full size: execute what needs it at test size
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-q", str(src),
                           str(tmp_path / "html")], capture_output=True, text=True, env=env, cwd=tmp_path)
    seconds = time.perf_counter() - t
    assert proc.returncode == 0 and "WARNING" not in proc.stderr, proc.stderr[-3000:]
    return tmp_path / "html", seconds


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _serve(root: Path):
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _browser(tmp_path: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1600", f"--user-data-dir={tmp_path / 'chrome'}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)


# visible text of the page's article without code, already typeset math and scripts: raw TeX must not remain
_VISIBLE_TEXT = """
const main = document.querySelector('main') || document.body;
const c = main.cloneNode(true);
c.querySelectorAll('pre, code, script, style, .katex, .highlight, textarea').forEach(e => e.remove());
return c.innerText;
"""
_IMAGES = """
return Array.from(document.querySelectorAll('main img'))
    .map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0]);
"""


def _wait_loaded(driver, timeout=30.0):
    end = time.time() + timeout
    while time.time() < end:
        if driver.execute_script("return document.readyState") == "complete":
            return
        time.sleep(0.05)


def _check_links(html: Path, page: Path, hrefs: list[str], base: str, ids_cache: dict) -> list[str]:
    bad = []
    for href in hrefs:
        u = urlparse(href)
        if not href.startswith(base):
            continue
        target = html / unquote(u.path[len(urlparse(base).path):]).lstrip("/")
        if target.is_dir():
            target = target / "index.html"
        if not target.exists():
            bad.append(f"{page.name}: {href} (no such file)")
            continue
        if u.fragment and target.suffix == ".html":
            if target not in ids_cache:
                ids_cache[target] = set(re.findall(r'\bid="([^"]+)"', target.read_text(errors="replace")))
            if unquote(u.fragment) not in ids_cache[target]:
                bad.append(f"{page.name}: {href} (no anchor)")
    return bad


@pytest.mark.slow
def test_the_site_builds_and_works_in_a_browser(tmp_path):
    if why := _have_browser_stack():
        pytest.skip(why)
    html, build_s = _build(tmp_path)
    pages = sorted(p for p in html.rglob("*.html") if "_static" not in p.parts and "_sources" not in p.parts)
    server = _serve(html)
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    driver = _browser(tmp_path)
    problems: list[str] = []
    ids_cache: dict = {}
    nb_with_figures = []
    try:
        for page in pages:
            rel = page.relative_to(html).as_posix()
            driver.get(urljoin(base, rel))
            _wait_loaded(driver)
            errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
            problems += [f"{rel}: console: {m}" for m in errors]
            if driver.find_elements("css selector", ".katex-error"):
                problems.append(f"{rel}: KaTeX could not typeset a formula")
            text = driver.execute_script(_VISIBLE_TEXT)
            if raw := re.findall(r"\\\(|\\\[|\$[^$\s][^$\n]{0,80}\$", text):
                problems.append(f"{rel}: raw math left in the text: {raw[:3]}")
            hrefs = driver.execute_script("return Array.from(document.links).map(a => a.href)")
            problems += _check_links(html, page, hrefs, base, ids_cache)
            if rel.startswith("generated/notebooks/"):
                imgs = driver.execute_script(_IMAGES)
                problems += [f"{rel}: image {src} did not load" for src, ok in imgs if not ok]
                nb = ROOT / "notebooks" / (page.stem + ".ipynb")
                stored = json.loads(nb.read_text()) if nb.exists() else {"cells": []}
                wants = any("image/png" in o.get("data", {}) for c in stored["cells"] for o in c.get("outputs", []))
                if wants and not imgs:
                    problems.append(f"{rel}: the notebook has figures but the page shows none")
                if imgs:
                    nb_with_figures.append((len(imgs), rel))
        assert not problems, "\n".join(problems[:40])
        # the search: a primitive's name finds its page
        driver.get(urljoin(base, "search.html?q=layer_norm"))
        end, found = time.time() + 30, []
        while time.time() < end and not found:
            found = driver.execute_script(
                "return Array.from(document.querySelectorAll('#search-results a')).map(a => a.href)")
            time.sleep(0.2)
        assert any("primitives/layer_norm" in h for h in found), f"search for layer_norm found {found[:5]}"
        shots = tmp_path / "screenshots"
        shots.mkdir()
        assert nb_with_figures, "no notebook page shows a figure"
        notebook = max(nb_with_figures)[1]            # the notebook with the most figures, shown at its first
        for name, rel in [("primitive_layer_norm", "generated/primitives/layer_norm.html"),
                          ("notebook", notebook), ("check_table", "generated/primitives/index.html")]:
            driver.get(urljoin(base, rel))
            _wait_loaded(driver)
            if name == "notebook":
                driver.execute_script("document.querySelector('main img').scrollIntoView({block: 'center'})")
            time.sleep(0.5)
            driver.save_screenshot(str(shots / f"{name}.png"))
        print(f"\nbook: {len(pages)} pages built in {build_s:.0f} s, all checked in a browser; screenshots in "
              f"{shots} (primitive_layer_norm.png, notebook.png = {notebook}, check_table.png)")
    finally:
        driver.quit()
        server.shutdown()
