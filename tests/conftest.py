"""Shared test set-up: float64 available everywhere (DESIGN.md), the local data folder when it exists, and no
side effects: every test runs offline (``FUNCDL_OFFLINE``: a loader without its files raises instead of
downloading) with the data cache inside pytest's temporary folder, never ``~/.cache``."""

import os
from pathlib import Path

# XLA's cheaper CPU code generation for the whole run (every test process, and through the environment the
# subprocesses and notebook kernels): the test programs are tiny and compiling them is what the suite spends its
# time on. No backend optimisation and no expensive LLVM passes (tests/test_models.py, test_players, test_train,
# test_seq_models: 107 -> 91 s), and the older CPU emitters, which compile about twice as fast (the whole suite on
# 2 cores: 858 -> 613 s). The values agree with the defaults to rounding; the one claim that needs the default
# code generation bit for bit (a resumed several-players run, test_players.py) runs in a child process with
# them. Read when JAX first creates its CPU backend, so it is set before any test runs.
FAST_XLA = ("--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true "
            "--xla_cpu_use_fusion_emitters=false")
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_XLA}".strip()

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FUNCDL_SHARED_DATA", ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(autouse=True, scope="session")
def _offline_with_a_private_cache(tmp_path_factory):
    patch = pytest.MonkeyPatch()
    patch.setenv("FUNCDL_OFFLINE", "1")
    patch.setenv("FUNCDL_DATA", str(tmp_path_factory.mktemp("funcdl-cache")))
    patch.setenv("MPLBACKEND", "Agg")
    # one persistent compilation cache for the whole run (all xdist workers, the subprocesses and notebook
    # kernels through the environment): a training test that calls train() three times compiles its step once
    base = tmp_path_factory.getbasetemp()
    jax_cache = (base.parent if base.name.startswith("popen-gw") else base) / "jax-compile-cache"
    jax_cache.mkdir(exist_ok=True)
    settings = {"jax_compilation_cache_dir": str(jax_cache), "jax_persistent_cache_min_compile_time_secs": 0.3,
                "jax_persistent_cache_min_entry_size_bytes": 0}
    for name, value in settings.items():
        patch.setenv(name.upper(), str(value))
        jax.config.update(name, value)
    yield
    patch.undo()


@pytest.fixture
def shared_data():
    """``../shared/data`` (or $FUNCDL_SHARED_DATA); tests that need it skip cleanly without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"no local data folder at {SHARED_DATA}")
    return SHARED_DATA


# The longest tests first: pytest-xdist hands tests out in collection order, so a long test collected last would
# run alone at the end while the other worker idles. Within each group the order is unchanged.
FIRST = ("test_parallel.py", "test_multiprocess.py", "test_notebooks.py::test_notebook_runs")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        return next((i for i, prefix in enumerate(FIRST) if item.nodeid.split("/")[-1].startswith(prefix)),
                    len(FIRST) + (0 if item.get_closest_marker("slow") else 1))
    items.sort(key=rank)
