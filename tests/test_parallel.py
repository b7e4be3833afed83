"""Data-parallel and ZeRO-sharded training equal single-device training (tests/parallel_worker.py runs in its
own process with 8 forced CPU devices)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow          # trains or compiles for tens of seconds (CI runs it)

WORKER = Path(__file__).with_name("parallel_worker.py")


def _runs():
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "FUNCDL_OFFLINE": "1"}
    out = subprocess.run([sys.executable, str(WORKER)], capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def test_data_parallel_and_zero_equal_the_single_device_step():
    """One test (one worker run: pytest-xdist would start a module fixture once per worker). Every (model,
    devices, shard) ran its steps; after 50-60 steps the parameters and batch-norm running statistics (synchronised)
    agree with one device to float32 rounding for the MLP, the ResNet and the GPT; under ZeRO each split
    optimizer leaf holds 1/N per device."""
    from parallel_worker import RUNS, STEPS

    runs = _runs()
    assert [(r["task"], r["devices"], r["shard"]) for r in runs] == [(t, n, s) for t in RUNS for n, s in RUNS[t]]
    assert {r["devices"] for r in runs} == {2, 4, 8} and {r["shard"] for r in runs} == {"none", "optimizer", "params"}
    assert all(r["steps"] == STEPS[r["task"]] for r in runs)
    for r in runs:
        assert r["params_diff"] < 2e-6, r
        assert r["state_diff"] < 2e-6, r
        if r["shard"] == "none":
            assert r["opt_bytes_device"] == r["opt_bytes_total"]
        else:
            assert r["split_leaves_are_1_over_n"], r
            assert r["opt_bytes_device"] == r["opt_bytes_layout"] < r["opt_bytes_total"], r
        print(r)
