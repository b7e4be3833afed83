"""Two processes on 127.0.0.1 (jax.distributed, gloo collectives on the CPU) train one data-parallel run with a
ZeRO-sharded optimizer: the same parameters as one process, only process 0 writes, and a run stopped at step 10
resumes from its checkpoint to the same bits as the uninterrupted two-process run, while streaming the data from
memory maps (each process reads only its own rows of every batch)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from funcdl.training import checkpoint as ckpt

WORKER = Path(__file__).with_name("multiprocess_worker.py")
# not the suite's cheapest XLA settings (tests/conftest.py), only the older CPU emitters: the bit-exact resume holds
# under them as under the defaults, and the seven processes compile faster (32 -> 23 s)
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "FUNCDL_OFFLINE": "1", "XLA_FLAGS": "--xla_cpu_use_fusion_emitters=false"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(out, *extra):
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(port), str(i), str(out), *extra], env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, e) in zip(procs, outs, strict=True):
        assert p.returncode == 0, e[-3000:]
    return [o for o, _ in outs]


def _params(run_dir):
    arrays, meta = ckpt.load_arrays(run_dir / "checkpoint.npz")
    return {k: v for k, v in arrays.items() if k.startswith(("params/", "opt_state/"))}, meta


@pytest.mark.slow
def test_two_processes_equal_one_and_resume_bit_exactly(tmp_path):
    one = subprocess.run([sys.executable, str(WORKER), "0", "-1", str(tmp_path / "one")], env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    _two_processes(tmp_path / "two")
    # the stopped-and-resumed run reads the blobs from memory maps: each process only its own rows
    from test_train import blobs

    from funcdl.data.stream import prepare

    stream = ("--stream", str(prepare(blobs(n=400), tmp_path / "prepared")))
    streamed = _two_processes(tmp_path / "resumed", "10", *stream)
    assert [o.split("rows ")[1].split()[:2] for o in streamed] == [["0", "16"], ["16", "32"]]
    assert _params(tmp_path / "resumed")[1]["step"] == 10
    _two_processes(tmp_path / "resumed", "-", "--resume", *stream)

    single, _ = _params(tmp_path / "one")
    two, meta = _params(tmp_path / "two")
    resumed, meta_r = _params(tmp_path / "resumed")
    assert meta["step"] == meta_r["step"] == 24
    for k, v in single.items():
        if k.startswith("params/"):
            np.testing.assert_allclose(two[k], v, rtol=0, atol=2e-6)         # float32 sums in another order
    assert two.keys() == resumed.keys()
    for k in two:
        np.testing.assert_array_equal(resumed[k], two[k])        # bit-exact resume, streamed half the rows each
    assert sorted(p.name for p in (tmp_path / "two").iterdir() if not p.name.startswith(".")) == [
        "checkpoint.npz", "config.json", "metrics.jsonl", "summary.json"]
