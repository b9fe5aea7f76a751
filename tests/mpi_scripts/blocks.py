"""Outcomes sent to rank 0 in blocks, as those over 2 GiB are: mpiexec -n K python blocks.py OUT

The limit of one plain message is lowered to 64 bytes on every rank (this script runs on
all of them before init()), so every outcome travels as zero-padded 1-MiB blocks, some of
several blocks. Results, failures and their tracebacks must equal the serial backend's.
Prints "blocks ok".
"""

import sys

import numpy as np

import psmpi
from psmpi.backends import mpi

mpi.INT_MAX = 64


def sized(pset):
    if pset["i"] % 7 == 3:
        raise ValueError(f"i={pset['i']} fails on purpose")
    return {"y": np.full(pset["i"] * 200_000, pset["i"], dtype=np.uint8), "i2": pset["i"] ** 2}


def main(out: str) -> None:
    psets = [{"i": i} for i in range(20)]  # up to 3.8 MB a result: outcomes of 1-4+ blocks
    run = psmpi.map(sized, psets, out=out, backend="mpi", group_size=2)
    serial = psmpi.map(sized, psets, backend="serial", out=None)
    assert run.stats.backend == "mpi", run.stats
    assert list(run.results["i2"]) == list(serial.results["i2"])
    for got, want in zip(run.results["y"], serial.results["y"]):
        assert np.array_equal(got, want)
    assert run.missing.to_psets() == serial.missing.to_psets() == [{"i": 3}, {"i": 10},
                                                                   {"i": 17}]
    assert "fails on purpose" in run.missing.df["_exception"].iloc[0]
    print("blocks ok")


if __name__ == "__main__":
    main(sys.argv[1])
