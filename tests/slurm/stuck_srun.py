"""An srun launch that does not answer SIGTERM, stopped by psmpi: run in a Slurm allocation
by tests/test_slurm.py (``salloc ... python stuck_srun.py DIR``).

``psmpi.run_mpi`` starts an application that ignores SIGTERM (``sleep 120`` under a
shell that ignores it) as a job step, in a thread as the ensemble backend does; the srun is
then SIGSTOPped (as a hung srun would be), so only SIGKILL ends it, and an srun killed so
leaves its step running. ``launches.stop_all()`` (what a drain that ran out or an error on
the driver calls) must still leave no step of the job behind. Prints the steps before and
after, and how long the stop took. Then a ``timeout=`` of run_mpi under srun: the step
ends with it.
"""

import os
import signal
import subprocess
import sys
import threading
import time

from psmpi.backends.allocation import expand_hostlist
from psmpi.backends.scheduling import Placement
from psmpi.study.mpirun import run_mpi
from psmpi.worker import launches


def steps() -> list[str]:
    said = subprocess.run(["squeue", "--steps", f"--jobs={os.environ['SLURM_JOB_ID']}",
                           "--noheader", "--format=%i %j"], capture_output=True, text=True,
                          timeout=30, check=True).stdout
    return [line.strip() for line in said.splitlines()
            if line.split() and not line.split()[0].endswith((".batch", ".extern"))]


def main():
    node = expand_hostlist(os.environ["SLURM_JOB_NODELIST"])[0]
    here = Placement(((node, 1, ()),), cores_per_rank=1, slurm=True)
    outcome = {}

    def launch():
        outcome["result"] = run_mpi(["sh", "-c", "trap '' TERM; sleep 120"], {},
                                    cwd=sys.argv[1], reservation=here, launcher="srun",
                                    check=False)

    thread = threading.Thread(target=launch, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not (steps() and launches._running):
        assert time.monotonic() < deadline, "the step did not start within 60 s"
        time.sleep(0.2)
    print(f"stuck_srun: steps before: {steps()}", flush=True)
    (proc,) = launches._running
    os.kill(proc.pid, signal.SIGSTOP)
    t0 = time.monotonic()
    launches.stop_all()
    print(f"stuck_srun: stopped in {time.monotonic() - t0:.1f} s; srun returncode "
          f"{proc.returncode}", flush=True)
    thread.join(30)
    print(f"stuck_srun: run_mpi returned {outcome['result']['returncode']}", flush=True)
    print(f"stuck_srun: steps after: {steps()}", flush=True)
    t0 = time.monotonic()
    timed = run_mpi(["sleep", "120"], {}, cwd=sys.argv[1], reservation=here, launcher="srun",
                    timeout=3, check=False)
    print(f"stuck_srun: timed out {timed['timed_out']} after {time.monotonic() - t0:.1f} s; "
          f"steps then: {steps()}", flush=True)


if __name__ == "__main__":
    main()
