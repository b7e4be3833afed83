"""One process of a two-process data-parallel run on 127.0.0.1 (tests/test_multiprocess.py starts two of these,
or one with --single for the reference): ``python multiprocess_worker.py PORT PROCESS_ID OUT_DIR [STOP_AFTER]``,
``--resume`` to continue the run in OUT_DIR, ``--stream DIR`` to read the blobs from the memory maps that
``funcdl.data.stream.prepare`` wrote in DIR (each process then reads only its devices' rows of every batch).
Trains the MLP of tests/test_train.py on the blobs data."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))


def main(argv):
    port, pid, out = argv[0], int(argv[1]), argv[2]
    stop_after = int(argv[3]) if len(argv) > 3 and argv[3] != "-" else None
    resume = "--resume" in argv
    from funcdl.training.parallel import initialize_distributed

    if pid >= 0:
        initialize_distributed(f"127.0.0.1:{port}", 2, pid)
    from test_train import blobs, mlp_task

    from funcdl.training.loop import TrainConfig, train

    config = TrainConfig(steps=24, batch_size=32, optimizer="adam", lr=1e-2, progress=False, plots=False,
                         stop_after=stop_after, shard="optimizer" if pid >= 0 else "none")
    data = blobs(n=400)
    if "--stream" in argv:
        from funcdl.data.stream import load_prepared
        from funcdl.training.parallel import make_parallel

        data = load_prepared(argv[argv.index("--stream") + 1])
        rows = make_parallel(None, config.shard).local_rows(config.batch_size)
        print("rows", rows.start, rows.stop, flush=True)
    r = train(mlp_task(hidden=(16,)), data, config, out, resume=resume)
    print("steps", r.summary["steps"], flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
