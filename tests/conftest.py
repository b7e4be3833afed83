"""Shared test set-up: float64 available everywhere (DESIGN.md), the local data folder when it exists."""

import os
from pathlib import Path

import jax
import pytest

jax.config.update("jax_enable_x64", True)

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FUNCDL_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture
def shared_data():
    """``../shared/data`` (or $FUNCDL_SHARED_DATA); tests that need it skip cleanly without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"no local data folder at {SHARED_DATA}")
    return SHARED_DATA
