"""The job scripts in jobscripts/ on a real Slurm cluster.

Needs ``sbatch`` on PATH and ``SLURM_CONF`` naming the cluster's slurm.conf (so that a
plain ``pytest`` never submits to a site's production cluster by accident). Without them
every test here skips with the reason, unless ``PSMPI_REQUIRE_SLURM=1`` (CI sets it): then
a missing Slurm fails. ``PSMPI_START_SLURM=1`` starts a private single-node cluster with
.ci/slurm-up.sh for the session and stops it at the end (root only).

The scripts are submitted unmodified: test-sized resources go on the sbatch command line,
which overrides their #SBATCH lines, and the study, the venv (``PSMPI_SLURM_VENV``,
default: the venv running pytest) and the launcher through ``--export=ALL,...``. The study
is tests/slurm/survey.py. Every job is submitted at the start, so they run side by side:

* mpi.sbatch (srun --mpi=pmi2), mpi-mpiexec.sbatch and multiprocessing.sbatch complete:
  every row exactly once, MPI psets computed on worker ranks 1 and 2.
* requeue.sbatch with --time=1 --signal=B:USR1@10, launched by srun (its default), by
  mpiexec and as plain python. Slurm checks time limits every ~30 s and warns at the first
  check that finds less than N+30 s left, so with a 60-s limit and N=10 the warning comes
  20-50 s after the start, and the kill (the first check after the limit) 30 s or more
  after the warning. The first
  run naps 1 s per pset, too slow to finish before the warning: it drains, exits 75 and
  requeues itself. The requeued run (SLURM_RESTART_COUNT=1) does not nap and completes
  in a few seconds, long before its own warning could come. Every row is then in the file
  exactly once, the rows of the first run are those the file held when psmpi had stopped,
  and the second run resumed exactly those.

* array.sbatch as an array of 4 tasks over one survey (a shard each): task 2's first run
  is SIGKILLed mid-way; ``psmpi status`` prints the sbatch line that resubmits it alone;
  run so, it resumes its shard file; ``psmpi merge`` then holds every pset once.

* mpi-apps.sbatch, an ensemble of MPI applications (tests/slurm/apps.py: mpi4py programs
  of 1, 2 and 3 ranks, each an ``srun --exact`` step of its own) on 4 CPUs of one node:
  a pset asks Slurm for the warning signal mid-way (``scancel --batch --signal=USR1``;
  MPICH without shared memory, see tests/slurm/apps.py);
  the drain stops the steps still running (``squeue --steps`` shows none left), the job
  requeues itself and completes. Every application ran with its ranks, never more at once
  than the 4 CPUs, and every pset is in the file exactly once.
* mpi-apps.sbatch on 2 nodes of 2 CPUs (needs a cluster of 2 nodes or more, e.g.
  ``PSMPI_SLURM_NODES=2 .ci/slurm-up.sh``, which CI runs: several slurmd on this machine):
  psets of 3 ranks (so over both nodes), of 2 ranks on 2 whole nodes, of 1 and 2 ranks.
  Each rank ran on the node psmpi reserved for it, and no node ever had more ranks at once
  than its 2 CPUs (a whole-node pset counting as both). Small, so that it starts early
  and is over before the requeue jobs' second runs, which must finish within 20-50 s.
* an srun that hangs (SIGSTOPped) when psmpi stops it, and one that times out: their
  steps do not outlive them.

With .ci/slurm-up.sh's settings (cred_expire=10, bf_interval=1) a requeued job restarts
12-13 s after `scontrol requeue`; the whole file takes about a minute and a half: 68-108 s
on 2 nodes of 8 CPUs (PSMPI_SLURM_NODES=2, as CI), 113 s on one node, where the ensemble
jobs wait for CPUs; without them 87-96 s and 102 s (2026-12-05, the shared 2-core machine;
at a load of 100 from other work, the requeue jobs' second runs did not finish before
their own warning; seen twice with the ensembles, the file without them not run then).
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import psmpi

ROOT = Path(__file__).resolve().parent.parent
JOBSCRIPTS = ROOT / "jobscripts"
STUDY = ROOT / "tests" / "slurm" / "survey.py"
APPS_STUDY = ROOT / "tests" / "slurm" / "apps.py"
VENV = Path(os.environ.get("PSMPI_SLURM_VENV") or sys.prefix)
REQUIRED = os.environ.get("PSMPI_REQUIRE_SLURM") == "1"
START = os.environ.get("PSMPI_START_SLURM") == "1"

COMPLETE_PSETS = 60      # psets of the surveys that complete in one run
REQUEUE_PSETS = 200      # psets of the requeue surveys: 100+ s of naps on two workers
# Deadlines from submission; the jobs share the node, so they include some queueing.
COMPLETE_DEADLINE = 120
REQUEUE_DEADLINE = 210

# Variables of an enclosing job or MPI launch, or a user's psmpi settings, must not leak
# into the jobs (SLURM_CONF is put back).
_LEAKY_PREFIXES = ("SLURM_", "SBATCH_", "SRUN_", "SALLOC_", "PMI_", "PMIX_", "OMPI_",
                   "HYDRA_", "MPI_LOCALNRANKS", "PSMPI_", "LAUNCH", "MAX_RESTARTS")


def slurm_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_LEAKY_PREFIXES)}
    env["SLURM_CONF"] = os.environ["SLURM_CONF"]
    return env


def run(*cmd: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                            env=slurm_env())
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n"
                             f"{result.stdout}{result.stderr}")
    return result


def unavailable() -> str | None:
    """Why Slurm cannot be used here, or None."""
    if shutil.which("sbatch") is None:
        return "sbatch is not on PATH (install Slurm, e.g. run .ci/slurm-up.sh as root)"
    conf = os.environ.get("SLURM_CONF")
    if not conf:
        return ("SLURM_CONF is not set: export SLURM_CONF=<cluster's slurm.conf> to run the "
                "job scripts on that cluster (.ci/slurm-up.sh prints it)")
    if not os.path.isfile(conf):
        return f"SLURM_CONF={conf} does not exist"
    if not (VENV / "bin" / "activate").is_file():
        return f"no virtual environment at {VENV} for the jobs: set PSMPI_SLURM_VENV"
    deadline = time.monotonic() + 15
    while True:
        try:
            states = run("sinfo", "-h", "-o", "%T", timeout=10, check=False)
        except subprocess.TimeoutExpired:
            states = None
        if states and states.returncode == 0 and re.search(r"\b(idle|mixed|allocated)\b",
                                                           states.stdout):
            return None
        if time.monotonic() > deadline:
            answer = "no answer" if states is None else (states.stdout + states.stderr).strip()
            return f"the Slurm cluster of SLURM_CONF={conf} has no usable node: {answer!r}"
        time.sleep(0.5)


@pytest.fixture(scope="session")
def slurm():
    """None if a Slurm cluster is usable, else why not. With PSMPI_START_SLURM=1 (and no
    SLURM_CONF yet) .ci/slurm-up.sh starts one for the session; it is stopped at the end."""
    started = False
    reason = None
    if START and not os.environ.get("SLURM_CONF"):
        base = os.environ.get("PSMPI_SLURM_BASE", "/tmp/psmpi-slurm")
        nodes = os.environ.get("PSMPI_SLURM_NODES", "2")  # as CI: the 2-node tests run
        up = subprocess.run(["bash", str(ROOT / ".ci" / "slurm-up.sh")], capture_output=True,
                            text=True, timeout=300, env={**os.environ, "PSMPI_SLURM_NODES": nodes})
        if up.returncode == 0:
            os.environ["SLURM_CONF"] = f"{base}/etc/slurm.conf"
            started = True
        else:
            reason = f".ci/slurm-up.sh failed ({up.returncode}):\n{up.stdout}{up.stderr}"
    yield reason or unavailable()
    if started:
        subprocess.run(["bash", str(ROOT / ".ci" / "slurm-down.sh")], timeout=120)
        del os.environ["SLURM_CONF"]


def require(reason: str | None) -> None:
    """Skip without Slurm; fail instead if it was asked for (PSMPI_REQUIRE_SLURM=1, or
    PSMPI_START_SLURM=1), so that CI can never silently not run these tests."""
    if reason:
        if REQUIRED or START:
            pytest.fail(f"Slurm was required (PSMPI_REQUIRE_SLURM=1 or PSMPI_START_SLURM=1) "
                        f"but is not usable: {reason}")
        pytest.skip(reason)


@dataclass
class Job:
    name: str
    script: str
    directory: Path
    options: list[str]
    variables: dict[str, str]
    id: str = ""
    submitted: float = 0.0
    info: dict[str, str] = field(default_factory=dict)
    wrap: str = ""  # a command to submit instead of the script (sbatch --wrap)

    @property
    def log(self) -> Path:
        return self.directory / f"job-{self.id}.out"

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else "(no log yet)"

    def submit(self) -> None:
        self.directory.mkdir(parents=True)
        variables = ",".join(f"{k}={v}" for k, v in self.variables.items())
        result = run("sbatch", "--parsable", f"--chdir={self.directory}",
                     f"--output={self.directory}/job-%j.out", f"--job-name=psmpi-{self.name}",
                     *self.options, f"--export=ALL,{variables}",
                     *(["--wrap", self.wrap] if self.wrap else [str(JOBSCRIPTS / self.script)]))
        self.id = result.stdout.strip().split(";")[0]
        self.submitted = time.monotonic()

    def show(self) -> dict[str, str]:
        """``scontrol show job`` as a dict (empty once Slurm has forgotten the job)."""
        result = run("scontrol", "show", "job", "-o", self.id, check=False)
        if result.returncode != 0:
            return {}
        return dict(re.findall(r"(\w+)=(\S*)", result.stdout))

    def wait(self, deadline: float) -> dict[str, str]:
        """Poll until the job has ended for good (not requeued); fail after ``deadline`` s."""
        while True:
            info = self.show()
            state = info.get("JobState", "GONE")
            if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL",
                         "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED", "GONE"):
                self.info = info
                return info
            if time.monotonic() - self.submitted > deadline:
                run("scancel", self.id, check=False)
                pytest.fail(f"job {self.id} ({self.name}) not done after {deadline} s "
                            f"(state {state}, Restarts={info.get('Restarts')}):\n"
                            f"{self.log_text()[-4000:]}")
            time.sleep(0.5)

    def explain(self) -> str:
        return (f"job {self.id} ({self.name}): {self.info}\n--- log ---\n"
                f"{self.log_text()[-6000:]}")


def survey_variables(**extra: object) -> dict[str, str]:
    return {"VENV": str(VENV), "STUDY": str(STUDY), "PYTHONPATH": str(ROOT),
            **{k: str(v) for k, v in extra.items()}}


REQUEUE_OPTIONS = ["--time=1", "--signal=B:USR1@10"]
# The array: 4 tasks over one survey of 60 psets (15 each, 0.3 s per pset on 2 workers);
# task 2's first run is SIGKILLed at pset 38, its 10th.
ARRAY_TASKS, ARRAY_PSETS, ARRAY_KILLED, ARRAY_KILL_AT = 4, 60, 2, 38
MPI_TASKS = ["--nodes=1", "--ntasks-per-node=3"]          # rank 0 + two workers
ONE_PROCESS = ["--nodes=1", "--ntasks-per-node=1", "--cpus-per-task=2"]
# The ensembles: 4 CPUs a node; a warning never comes by itself (USR1@10 of 5 minutes).
APPS_CPUS, APPS_NODE_CPUS = 4, 2  # of the one-node and of each node of the 2-node job
APPS_OPTIONS = ["--time=5", "--signal=B:USR1@10"]
APPS_DRAINED, APPS_TWO_NODES = 9, 8  # psets of the two ensembles


def cluster_nodes() -> int:
    return len([line for line in run("sinfo", "-h", "-N", "-o", "%N").stdout.split()
                if line.strip()])


@pytest.fixture(scope="module")
def jobs(slurm, tmp_path_factory):
    """Submit every job at once (short ones first); cancel what is left at the end."""
    if slurm:  # the tests fail or skip through require()
        yield None
        return
    base = tmp_path_factory.mktemp("slurm-jobs")
    complete = survey_variables(SURVEY_PSETS=COMPLETE_PSETS, SURVEY_NAP_FIRST_RUN=0.05)
    requeue = survey_variables(SURVEY_PSETS=REQUEUE_PSETS, SURVEY_NAP_FIRST_RUN=1.0,
                               SURVEY_NAP=0)
    apps = survey_variables(STUDY=APPS_STUDY)
    all_jobs = [
        Job("stuck-srun", "", base / "stuck-srun", ["--nodes=1", "--ntasks=2", "--time=5"],
            survey_variables(), wrap=f"{VENV}/bin/python {ROOT}/tests/slurm/stuck_srun.py ."),
        Job("apps", "mpi-apps.sbatch", base / "apps",
            ["--nodes=1", f"--ntasks-per-node={APPS_CPUS}", *APPS_OPTIONS],
            dict(apps, APPS_MIX="sizes", APPS_PER_SIZE=APPS_DRAINED // 3, APPS_NOLOCAL=1,
                 APPS_SECONDS_FIRST_RUN=2, APPS_DRAIN_AT=4, PSMPI_DRAIN_SECONDS=1)),
        Job("srun", "mpi.sbatch", base / "srun", [*MPI_TASKS, "--time=5"], complete),
        Job("mpiexec", "mpi-mpiexec.sbatch", base / "mpiexec", [*MPI_TASKS, "--time=5"],
            complete),
        Job("multiprocessing", "multiprocessing.sbatch", base / "multiprocessing",
            [*ONE_PROCESS, "--time=5"], complete),
        Job("array", "array.sbatch", base / "array",
            [f"--array=0-{ARRAY_TASKS - 1}", *ONE_PROCESS, "--time=5"],
            survey_variables(SURVEY_PSETS=ARRAY_PSETS, SURVEY_NAP_FIRST_RUN=0.3,
                             SURVEY_KILL_AT=ARRAY_KILL_AT)),
        Job("requeue-srun", "requeue.sbatch", base / "requeue-srun",
            [*MPI_TASKS, *REQUEUE_OPTIONS], requeue),
        Job("requeue-mpiexec", "requeue.sbatch", base / "requeue-mpiexec",
            [*MPI_TASKS, *REQUEUE_OPTIONS], dict(requeue, LAUNCH="mpiexec -n 3")),
        Job("requeue-python", "requeue.sbatch", base / "requeue-python",
            [*ONE_PROCESS, *REQUEUE_OPTIONS], dict(requeue, LAUNCH="")),
    ]
    if cluster_nodes() >= 2:  # else test_ensemble_over_two_nodes says why it cannot run
        all_jobs.insert(2, Job("apps-nodes", "mpi-apps.sbatch", base / "apps-nodes",
                               ["--nodes=2", f"--ntasks-per-node={APPS_NODE_CPUS}",
                                *APPS_OPTIONS],
                               dict(apps, APPS_MIX="nodes", APPS_PER_SIZE=APPS_TWO_NODES // 4,
                                    APPS_SECONDS_FIRST_RUN=0.5)))
    try:
        for job in all_jobs:
            job.submit()
        yield {job.name: job for job in all_jobs}
    finally:
        ids = [job.id for job in all_jobs if job.id]
        if ids:
            run("scancel", *ids, check=False)


def read_rows(job: Job, n: int):
    """The survey's rows, checked: each of the n psets exactly once, correct, no failure."""
    path = job.directory / "survey.h5"
    assert path.exists(), job.explain()
    rows = psmpi.read(str(path), name="nap")
    assert len(rows) == n and sorted(rows["i"]) == list(range(n)), job.explain()
    assert rows["_pset_index"].is_unique and rows["_pset_hash"].is_unique, job.explain()
    assert (rows["y"] == rows["i"] ** 2).all(), job.explain()
    assert len(psmpi.read(str(path), name="nap", failures=True)) == 0, job.explain()
    assert not (job.directory / "survey.h5.lock").exists(), "the lock was left behind"
    return rows


def assert_in_order(log: str, story: list[str], job: Job) -> None:
    """Every line of ``story`` is in ``log``, in this order."""
    at = -1
    for line in story:
        found = log.find(line, at + 1)
        assert found > at, f"{line!r} missing or out of order\n{job.explain()}"
        at = found


def test_slurm_is_usable(slurm):
    require(slurm)
    nodes = run("sinfo", "-h", "-o", "%n %T %c").stdout.split("\n")
    assert any(int(line.split()[2]) >= 3 for line in nodes if line.strip()), (
        f"the jobs need a node with 3 CPUs or more: {nodes}")


@pytest.mark.parametrize("name, backend", [("srun", "mpi"), ("mpiexec", "mpi"),
                                           ("multiprocessing", "multiprocessing")])
def test_survey_completes(slurm, jobs, name, backend):
    require(slurm)
    job = jobs[name]
    info = job.wait(COMPLETE_DEADLINE)
    log = job.log_text()
    assert info.get("JobState") == "COMPLETED" and info.get("ExitCode") == "0:0", job.explain()
    assert "survey exited with status 0" in log, job.explain()
    assert f"backend {backend} with 2 workers" in log, job.explain()
    rows = read_rows(job, COMPLETE_PSETS)
    if backend == "mpi":  # real MPI with 3 ranks, not 3 singletons: workers are ranks 1, 2
        assert set(rows["_rank"]) == {1, 2}, job.explain()
    print(f"{name}: done {time.monotonic() - job.submitted:.1f} s after submission")


@pytest.mark.parametrize("name", ["requeue-srun", "requeue-mpiexec", "requeue-python"])
def test_requeue_until_complete(slurm, jobs, name):
    require(slurm)
    job = jobs[name]
    info = job.wait(REQUEUE_DEADLINE)
    log = job.log_text()
    assert info.get("JobState") == "COMPLETED" and info.get("ExitCode") == "0:0", job.explain()
    assert info.get("Restarts") == "1", job.explain()
    # The log (appended to by both runs) tells the story, in this order.
    story = ["run 1 (requeued 0 of at most 20 times)",
             "time-limit warning (SIGUSR1)",
             "survey: stopped with status 75",
             "survey exited with status 75",
             "stopped and saved before the time limit",
             "incomplete: requeueing",
             "run 2 (requeued 1 of at most 20 times)",
             "survey: run 2 of job",
             "survey exited with status 0",
             "the survey is complete"]
    assert_in_order(log, story, job)
    assert log.count("time-limit warning") == 1, job.explain()
    assert "DUE TO TIME LIMIT" not in log and "Traceback" not in log, job.explain()
    # No row lost, none twice: the first run's rows are the ones the file held at its exit,
    # the second run resumed exactly those and computed the rest.
    rows = read_rows(job, REQUEUE_PSETS)
    committed = int(re.search(r"stopped with status 75, (\d+) rows committed", log)[1])
    resumed = int(re.search(r"complete, \d+ rows, (\d+) resumed", log)[1])
    first = int((rows["restart"] == 0).sum())
    assert first == committed == resumed and 0 < first < REQUEUE_PSETS, job.explain()
    assert (rows["restart"] == 1).sum() == REQUEUE_PSETS - first, job.explain()
    print(f"{name}: {first} rows in run 1, {REQUEUE_PSETS - first} in run 2; done "
          f"{time.monotonic() - job.submitted:.1f} s after submission")


def array_logs(directory: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(directory.glob("job-*.out"))}


def wait_for_tasks(directory: Path, n: int, deadline: float, since: float) -> dict[str, str]:
    """The logs of n array tasks once each has ended (said with what status it exited)."""
    while True:
        logs = array_logs(directory)
        ended = [text for text in logs.values() if "survey exited with status" in text]
        if len(ended) >= n:
            return logs
        if time.monotonic() - since > deadline:
            pytest.fail(f"{len(ended)} of {n} array tasks ended after {deadline} s:\n{logs}")
        time.sleep(0.5)


def psmpi_cli(*args: str, cwd: Path) -> str:
    result = subprocess.run([sys.executable, "-m", "psmpi", *args], cwd=cwd, text=True,
                            capture_output=True, timeout=60,
                            env={**slurm_env(), "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_array_with_a_killed_task_resubmitted_then_merged(slurm, jobs):
    """An array of 4 over one survey; task 2 is SIGKILLed mid-way; `psmpi status` prints the
    sbatch line for it alone; resubmitted so, it resumes its shard; the merge holds every
    pset once."""
    require(slurm)
    job = jobs["array"]
    logs = wait_for_tasks(job.directory, ARRAY_TASKS, COMPLETE_DEADLINE, job.submitted)
    statuses = sorted(int(re.search(r"task (\d+): survey exited with status (\d+)", t)[2])
                      for t in logs.values())
    assert statuses == [0, 0, 0, 137], logs  # 128 + SIGKILL
    killed = next(t for t in logs.values() if "status 137" in t)
    assert f"task {ARRAY_KILLED}: survey exited" in killed, logs
    shards = sorted(p.name for p in job.directory.glob("survey.shard-*.h5"))
    assert shards == [f"survey.shard-{k:03d}-of-004.h5" for k in range(ARRAY_TASKS)], shards

    status = psmpi_cli("status", "survey.h5", cwd=job.directory)
    line = re.search(r"to resubmit the shards that are not complete: (?:cd (\S+) && )?"
                     r"sbatch --array=(\S+) --export=ALL,PSMPI_SHARD=(\S+) (.+)", status)
    assert line, status
    assert line[2] == str(ARRAY_KILLED) and line[3] == f"array:0-{ARRAY_TASKS - 1}", status
    assert line[4].strip() == str(JOBSCRIPTS / "array.sbatch"), status  # scontrol's Command=
    assert "3 done, 1 incomplete" in status, status

    # Resubmit as printed (plus the test's own variables, which a user's environment holds).
    variables = ",".join(f"{k}={v}" for k, v in job.variables.items())
    since = time.monotonic()
    run("sbatch", "--parsable", f"--chdir={job.directory}",
        f"--output={job.directory}/job-%j.out", "--job-name=psmpi-array-again",
        *[o for o in job.options if not o.startswith("--array")], f"--array={line[2]}",
        f"--export=ALL,{variables},PSMPI_SHARD={line[3]}", line[4].strip())
    logs = wait_for_tasks(job.directory, ARRAY_TASKS + 1, REQUEUE_DEADLINE, since)
    again = [t for t in logs.values() if "survey: run 1" in t and "complete," in t
             and f"task {ARRAY_KILLED}:" in t]
    assert again, logs
    resumed = int(re.search(r"complete, \d+ rows, (\d+) resumed", again[-1])[1])
    assert 0 < resumed < ARRAY_PSETS // ARRAY_TASKS, again[-1]  # the killed run's rows kept

    psmpi_cli("merge", "survey.h5", cwd=job.directory)
    rows = psmpi.read(str(job.directory / "survey.h5"), name="nap")
    assert sorted(rows["_pset_index"]) == list(range(ARRAY_PSETS)), rows
    assert sorted(rows["i"]) == list(range(ARRAY_PSETS)) and (rows["y"] == rows["i"] ** 2).all()
    status = psmpi_cli("status", "survey.h5", cwd=job.directory)
    assert "4 done" in status and "to resubmit" not in status, status
    print(f"array: {resumed} rows of the killed task resumed; merged "
          f"{time.monotonic() - job.submitted:.1f} s after submission")


def most_at_once(intervals: list[tuple[float, float, int]]) -> int:
    """The largest sum of weights of the (start, end, weight) intervals at any instant."""
    events = sorted([(start, weight) for start, _, weight in intervals]
                    + [(end, -weight) for _, end, weight in intervals])
    most = now = 0
    for _, change in events:
        now += change
        most = max(most, now)
    return most


def apps_rows(job: Job, n: int):
    """The ensemble's rows, checked: each of the n psets once, no failure, every
    application with the ranks it asked for."""
    path = job.directory / "apps.h5"
    assert path.exists(), job.explain()
    rows = psmpi.read(str(path), name="apps")
    assert sorted(rows["k"]) == list(range(n)) and rows["_pset_index"].is_unique, job.explain()
    assert len(psmpi.read(str(path), name="apps", failures=True)) == 0, job.explain()
    assert (rows["size"] == rows["ranks"]).all(), rows[["k", "ranks", "size"]]
    assert (rows["rank_nodes"].str.split(",").str.len() == rows["ranks"]).all()
    return rows


def test_ensemble_of_mpi_apps_drained_and_requeued(slurm, jobs):
    require(slurm)
    job = jobs["apps"]
    info = job.wait(REQUEUE_DEADLINE)
    log = job.log_text()
    assert info.get("JobState") == "COMPLETED" and info.get("ExitCode") == "0:0", job.explain()
    assert info.get("Restarts") == "1", job.explain()
    story = ["run 1 (requeued 0 of at most 20 times)",
             "time-limit warning (SIGUSR1)",
             "psets in flight were abandoned",   # applications were running at the drain
             "apps: stopped with status 75",
             "apps: job steps left after the drain: []",  # their steps ended with them
             "incomplete: requeueing",
             "run 2 (requeued 1 of at most 20 times)",
             "apps: complete",
             "apps: removed MPICH's leftovers of killed steps",
             "the survey is complete"]
    assert_in_order(log, story, job)
    assert "Traceback" not in log, job.explain()
    rows = apps_rows(job, APPS_DRAINED)
    assert set(rows["ranks"]) == {1, 2, 3}
    assert rows["command"].str.startswith("srun --exact --nodes=1").all(), rows["command"]
    committed = int(re.search(r"apps: stopped with status 75 after [\d.]+ s, (\d+) rows", log)[1])
    resumed = int(re.search(r"apps: complete, \d+ rows, (\d+) resumed", log)[1])
    first = int((rows["restart"] == 0).sum())
    assert first == committed == resumed and first < APPS_DRAINED, job.explain()
    for restart in (0, 1):  # the runs never overlap in time; each within the 4 CPUs
        mine = rows[rows["restart"] == restart]
        ranks = list(zip(mine["start"], mine["end"], mine["ranks"]))
        assert most_at_once(ranks) <= APPS_CPUS, mine[["k", "ranks", "start", "end"]]
    print(f"apps: {first} applications in run 1, {APPS_DRAINED - first} in run 2; done "
          f"{time.monotonic() - job.submitted:.1f} s after submission")


def test_ensemble_over_two_nodes(slurm, jobs):
    require(slurm)
    if "apps-nodes" not in jobs:
        message = (f"the cluster has {cluster_nodes()} node(s); start one of 2 with "
                   f"PSMPI_SLURM_NODES=2 .ci/slurm-up.sh (several slurmd on this machine)")
        if REQUIRED or START:
            pytest.fail(message)
        pytest.skip(message)
    job = jobs["apps-nodes"]
    info = job.wait(COMPLETE_DEADLINE)
    assert info.get("JobState") == "COMPLETED" and info.get("ExitCode") == "0:0", job.explain()
    rows = apps_rows(job, APPS_TWO_NODES)
    per_node: dict[str, list] = {}
    for row in rows.to_dict("records"):
        ran = collections.Counter(row["rank_nodes"].split(","))
        reserved = dict(part.split(":") for part in row["reserved"].split(","))
        assert ran == {node: int(count) for node, count in reserved.items()}, row
        if row["whole_nodes"]:
            assert row["nodes"] == len(ran) == 2 and "--exact" not in row["command"], row
        elif len(ran) > 1:
            assert "--distribution=arbitrary" in row["command"], row
        if row["ranks"] > APPS_NODE_CPUS:
            assert len(ran) == 2, row  # more ranks than a node has CPUs: over both
        for node, count in ran.items():
            weight = APPS_NODE_CPUS if row["whole_nodes"] else count
            per_node.setdefault(node, []).append((row["start"], row["end"], weight))
    assert (rows["ranks"] > APPS_NODE_CPUS).sum() == APPS_TWO_NODES // 4
    assert rows["whole_nodes"].sum() == APPS_TWO_NODES // 4
    assert len(per_node) == 2, per_node
    for node, intervals in per_node.items():
        assert most_at_once(intervals) <= APPS_NODE_CPUS, (node, intervals)
    print(f"apps over two nodes: done {time.monotonic() - job.submitted:.1f} s after "
          f"submission")


def test_a_hung_srun_leaves_no_job_step(slurm, jobs):
    """psmpi stops an srun that answers no SIGTERM with SIGKILL, which leaves its step
    running in the job: psmpi then cancels the step (tests/slurm/stuck_srun.py)."""
    require(slurm)
    job = jobs["stuck-srun"]
    info = job.wait(COMPLETE_DEADLINE)
    log = job.log_text()
    assert info.get("JobState") == "COMPLETED", job.explain()
    assert re.search(r"steps before: \['\d+\.0 psmpi-\w+'\]", log), job.explain()
    assert "srun returncode -9" in log, job.explain()  # it had to be SIGKILLed
    assert "steps after: []" in log, job.explain()
    assert re.search(r"timed out True after [\d.]+ s; steps then: \[\]", log), job.explain()
