"""Many scenarios in one MPI launch: mpiexec -n K python study.py OUTDIR

No backend is named: under mpiexec with K > 1 psmpi must pick "mpi" by itself. Every rank
appends its rank to OUTDIR/ranks.txt after init(): only "0" may appear. Prints "study ok".
"""

import os
import sys
import time

import pandas as pd

import psmpi

SIZE = psmpi.config.launched_by_mpi() or 1  # the launcher's, read without importing mpi4py
# This rank, as MPICH's Hydra and Open MPI's mpirun tell it.
RANK = os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "?"))


def square_or_fail(pset):
    if pset["a"] % 97 == 3:
        raise ValueError(f"a={pset['a']} is unlucky")
    return {"y": pset["a"] ** 2, "pid": os.getpid()}


def check_matches_serial(out):
    psets = [{"a": a} for a in range(1000)]
    mpi = psmpi.map(square_or_fail, psets, out=out, name="big")
    serial = psmpi.map(square_or_fail, psets, backend="serial", out=None)
    assert mpi.stats.backend == "mpi" and mpi.stats.workers == SIZE - 1, mpi.stats
    keep = ["a", "y"]
    pd.testing.assert_frame_equal(mpi.results[keep], serial.results[keep])
    unlucky = [{"a": a} for a in range(3, 1000, 97)]
    assert mpi.missing.to_psets() == serial.missing.to_psets() == unlucky
    ranks = set(mpi.missing.df["_rank"]) | set(psmpi.read(out, name="big")["_rank"])
    assert ranks <= set(range(1, SIZE)) and ranks, ranks  # computed on worker ranks only
    assert os.getpid() not in set(mpi.results["pid"])
    assert "unlucky" in mpi.missing.df["_exception"].iloc[0]


def check_greedy_loop():
    """50 small maps, each depending on the last: a task per map, no stale state."""
    x = 1.0
    started = time.monotonic()
    for step in range(50):
        shift = step  # a closure over a loop variable, defined after init()
        res = psmpi.map(lambda p: {"x_next": p["x"] / 2 + p["k"] + shift},  # noqa: B023
                        [{"x": x, "k": k} for k in range(3)], out=None, verbose=0,
                        name=f"step{step}")
        assert res.results["x_next"].tolist() == [x / 2 + k + step for k in range(3)], (step, x)
        x = float(res.results["x_next"].max())
    print(f"greedy loop of 50 maps: {time.monotonic() - started:.2f} s", flush=True)


def check_small_maps():
    res = psmpi.map(lambda p: {"y": -p["a"]}, [{"a": 1}, {"a": 2}], out=None)  # fewer than ranks
    assert res.results["y"].tolist() == [-1, -2]
    res = psmpi.map(lambda p: {"y": 1}, [], out=None)
    assert len(res) == 0 and res.progress.total == 0
    res = psmpi.map(lambda p: {"y": p["a"]}, [{"a": a} for a in range(40)], out=None,
                    group_size=1, mpi={"in_flight": 2})
    assert res.results["y"].tolist() == list(range(40))


def main(outdir):
    psmpi.init(verbose=0)
    with open(os.path.join(outdir, "ranks.txt"), "a") as f:  # rank 0 only, or init() leaked
        f.write(RANK + "\n")
    check_matches_serial(os.path.join(outdir, "study.h5"))
    check_greedy_loop()
    check_small_maps()
    print("study ok", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
