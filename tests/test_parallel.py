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


@pytest.fixture(scope="module")
def runs():
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "FUNCDL_OFFLINE": "1"}
    out = subprocess.run([sys.executable, str(WORKER)], capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def test_every_device_count_and_shard_choice_ran(runs):
    from parallel_worker import RUNS

    assert [(r["task"], r["devices"], r["shard"]) for r in runs] == [(t, n, s) for t in RUNS for n, s in RUNS[t]]
    assert {r["devices"] for r in runs} == {2, 4, 8} and {r["shard"] for r in runs} == {"none", "optimizer", "params"}
    from parallel_worker import STEPS

    assert all(r["steps"] == STEPS[r["task"]] for r in runs)


def test_data_parallel_equals_the_single_device_step(runs):
    """After 50-60 steps the parameters (and batch-norm running statistics: synchronised) agree to float32
    rounding, for the MLP, a batch-norm net, the ResNet and the GPT."""
    for r in runs:
        assert r["params_diff"] < 2e-6, r
        assert r["state_diff"] < 2e-6, r


def test_sharded_optimizer_state_is_one_nth_per_device(runs):
    for r in runs:
        if r["shard"] == "none":
            assert r["opt_bytes_device"] == r["opt_bytes_total"]
        else:
            assert r["split_leaves_are_1_over_n"], r
            assert r["opt_bytes_device"] == r["opt_bytes_layout"] < r["opt_bytes_total"], r
