"""Every notebook in notebooks/ runs top to bottom (with FUNCDL_SMALL=1, which the notebooks read to use
small sizes)."""

from pathlib import Path

import pytest
from conftest import SHARED_DATA

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("FUNCDL_SMALL", "1")
    monkeypatch.setenv("FUNCDL_SHARED_DATA", str(SHARED_DATA))    # the notebooks read the local data copies here
    monkeypatch.setenv("TMPDIR", str(tmp_path))                    # tempfile's folders land in pytest's
    # the kernel inherits the suite's cheaper XLA code generation (tests/conftest.py) through XLA_FLAGS
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_a_valid_small_sized_lesson(path):
    """Valid nbformat, opens with a title, runs code, and reads FUNCDL_SMALL (so the suite can run it small)."""
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.lstrip().startswith("# "), "first cell: a # title"
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert code, "a notebook without code"
    assert any("FUNCDL_SMALL" in c for c in code), "the notebook never reads FUNCDL_SMALL"
