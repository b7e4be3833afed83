"""The README's Python tour runs as written (in a fresh interpreter: it registers a primitive)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_readme_python_blocks_run():
    code = "\n".join(re.findall(r"```python\n(.*?)```", README.read_text(), re.S))
    assert "fd.primitive(" in code and "jax.grad" in code
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]


def test_readme_commands_match_ci():
    text = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    assert "funcdl train mlp --data mnist1d" in text
    for piece in ('pip install --quiet "torch==2.13.0"', 'pip install --quiet -e ".[dev,torch]"',
                  "python -m pytest -q -n 2"):
        assert piece in ci
    assert 'pip install "torch==2.13.0" && pip install -e ".[dev,torch]" && python -m pytest -q -n 2' in text
