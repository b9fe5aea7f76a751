"""Run every check of tests/contract.py with one backend, as a script.

    mpiexec -n 4 python tests/run_contract.py mpi [check ...]
    python tests/run_contract.py multiprocessing

This is how the contract runs under MPI: every rank runs this script, ``psmpi.init()`` keeps
the worker ranks serving, and the checks run on rank 0 only. Prints one line per check and a
summary; exits 1 if any check failed. (psmpi must be importable: installed, or PYTHONPATH.)
"""

import sys
import tempfile
import time
import traceback

import contract

import psmpi


def main(argv: list[str]) -> int:
    backend = argv[1] if len(argv) > 1 else "mpi"
    names = argv[2:] or sorted(contract.CHECKS)
    psmpi.init(backend=backend)
    # From here on only rank 0 runs (worker ranks stay in init() until rank 0 exits).
    failed = []
    started = time.monotonic()
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"contract-{name}-") as tmp:
            t0 = time.monotonic()
            try:
                contract.CHECKS[name](backend, tmp)
            except Exception:
                failed.append(name)
                print(f"FAIL {name}\n{traceback.format_exc()}", flush=True)
            else:
                print(f"ok   {name} ({time.monotonic() - t0:.2f} s)", flush=True)
    ranks = psmpi.config.launched_by_mpi() or 1  # PMI_SIZE (MPICH), OMPI_COMM_WORLD_SIZE, ...
    print(f"contract on backend {backend!r} ({ranks} rank(s)): {len(names) - len(failed)} passed, "
          f"{len(failed)} failed{': ' + ', '.join(failed) if failed else ''} "
          f"in {time.monotonic() - started:.1f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
