"""A study killed at random instants by tests/test_resume_kill.py.

Every worker call appends "<run> <pset index>" to $KILL_CALLS, so the test can prove that
a pset committed before a kill is never computed again. Each call sleeps $KILL_SLEEP
seconds: long enough in the killed runs that no run of at most 1.5 s can finish the survey
on a fast machine, zero in the final run so that it finishes quickly. (The sleep is not in
the psets: a pset's hash must not change between runs.) The results hold values of every
kind the store keeps (psets with dicts, lists and tuples; ragged arrays, nested containers,
None beside numbers, a key whose type changes mid-survey), so kills also land while columns
widen.
"""

import os
import sys
import time

import numpy as np

import psmpi

N_PSETS = 10000


def expected(a: int) -> dict:
    """The result of pset ``a``; tests/test_resume_kill.py checks every row against it."""
    return {"y": a * 3 + 1, "label": f"a={a}",
            "traj": np.arange(a % 37, dtype=np.float32) * a,           # ragged
            "info": {"a": a, "tags": ["t"] * (a % 3), "pair": (a, str(a))},  # nested
            "maybe": None if a % 7 == 0 else a / 2,                    # None beside floats
            "mixed": a if a < N_PSETS // 2 else f"s{a}"}               # int, later str


def worker(pset, system_kwargs, user_kwargs):
    time.sleep(float(os.environ["KILL_SLEEP"]))
    with open(os.environ["KILL_CALLS"], "a") as f:
        f.write(f"{os.environ['KILL_RUN']} {system_kwargs['pset_index']}\n")
    a = pset["a"]
    assert pset["opts"] == {"n": a % 5, "tags": ["x"] * (a % 3)} and pset["corner"] == (a % 2, a)
    return expected(a)


if __name__ == "__main__":  # the test imports expected() from here
    psmpi.init(backend=sys.argv[2], ncores=2, verbose=0)  # under mpiexec: rank 0 goes on
    psets = [{"a": a, "opts": {"n": a % 5, "tags": ["x"] * (a % 3)},
              "corner": (a % 2, float(a))} for a in range(N_PSETS)]  # rich psets too
    res = psmpi.map(worker, psets, out=sys.argv[1], name="kill", commit_seconds=0.05)
    assert len(res) == N_PSETS, len(res)
