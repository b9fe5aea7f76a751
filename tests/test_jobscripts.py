"""The Slurm job scripts in jobscripts/, checked without Slurm.

Static checks: every script is valid bash, its #SBATCH lines are where Slurm reads them
(before the first command) and name real sbatch options, the site-specific ones are
disabled, the settings tests override are variables, and the requeue script has each
piece of the requeue loop. Then the scripts run under plain bash with stand-ins for srun,
mpiexec, scontrol and the survey (tests/slurm/fake_survey.py): the study gets its
arguments, exit statuses come through, and requeue.sbatch passes SIGUSR1 on, waits for the
survey, requeues on status 75 only and stops at MAX_RESTARTS. tests/test_slurm.py runs the
same scripts on a real Slurm.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from psmpi import config
from psmpi.stopping import EXIT_INCOMPLETE

ROOT = Path(__file__).resolve().parent.parent
JOBSCRIPTS = ROOT / "jobscripts"
FAKE_SURVEY = ROOT / "tests" / "slurm" / "fake_survey.py"
SCRIPTS = sorted(JOBSCRIPTS.glob("*.sbatch"))
NAMES = [p.name for p in SCRIPTS]
SIMPLE = ["mpi.sbatch", "mpi-mpiexec.sbatch", "multiprocessing.sbatch"]
CI_SCRIPTS = [ROOT / ".ci" / "slurm-up.sh", ROOT / ".ci" / "slurm-down.sh"]

# Every option the scripts may set, enabled or disabled (a typo would make sbatch fail).
SBATCH_OPTIONS = {
    "job-name", "nodes", "ntasks", "ntasks-per-node", "cpus-per-task", "time", "output",
    "error", "account", "partition", "mem", "mem-per-cpu", "signal", "requeue",
    "open-mode", "qos", "constraint", "exclusive", "mail-type", "mail-user", "array",
    "gpus-per-node", "gres",
}


def text(name: str) -> str:
    return (JOBSCRIPTS / name).read_text()


def sbatch_lines(name: str) -> list[tuple[int, bool, str, str | None]]:
    """(line number, enabled, option, value) of every #SBATCH / ##SBATCH line."""
    found = []
    for number, line in enumerate(text(name).splitlines(), 1):
        match = re.match(r"^(#{1,2})SBATCH\s+--([a-z-]+)(?:=(\S+))?\s*(?:#.*)?$", line)
        if match:
            found.append((number, match[1] == "#", match[2], match[3]))
    return found


def enabled(name: str) -> dict[str, str | None]:
    return {opt: value for _, on, opt, value in sbatch_lines(name) if on}


# --- static checks ----------------------------------------------------------------------

def test_the_scripts_are_there():
    assert NAMES == sorted(["array.sbatch", "gpu.sbatch", "mpi.sbatch", "mpi-mpiexec.sbatch",
                            "multiprocessing.sbatch", "requeue.sbatch", "mpi-apps.sbatch"])


@pytest.mark.parametrize("path", SCRIPTS + CI_SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(path):
    assert path.read_text().startswith(("#!/bin/bash\n", "#!/usr/bin/env bash\n")), path
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", NAMES)
def test_sbatch_lines_are_read_by_slurm(name):
    """Slurm stops reading #SBATCH at the first command: every one must come before it."""
    lines = text(name).splitlines()
    first_command = next(i for i, line in enumerate(lines, 1)
                         if line.strip() and not line.lstrip().startswith("#"))
    options = sbatch_lines(name)
    assert options, f"{name} has no #SBATCH line"
    late = [number for number, *_ in options if number > first_command]
    assert not late, f"{name}: #SBATCH on lines {late}, after the first command (line {first_command})"
    unknown = {opt for _, _, opt, _ in options} - SBATCH_OPTIONS
    assert not unknown, f"{name}: unknown sbatch options {unknown}"
    # Every #SBATCH-looking line was understood (no "# SBATCH", no "#SBATCH -N 2" forms).
    loose = [line for line in lines if re.match(r"^#+\s*SBATCH", line)]
    assert len(loose) == len(options), f"{name}: lines not in the --option=value form: {loose}"


@pytest.mark.parametrize("name", NAMES)
def test_runs_anywhere_unmodified(name):
    """Site-specific settings are there to fill in, but disabled; the rest is set."""
    on = enabled(name)
    all_options = {opt for _, _, opt, _ in sbatch_lines(name)}
    assert {"account", "partition"} <= all_options - set(on), name
    for option in ("job-name", "time", "output"):
        assert on.get(option), f"{name}: no #SBATCH --{option}"
    assert re.fullmatch(r"(\d+-)?\d{1,2}:\d\d:\d\d", on["time"]), on["time"]


@pytest.mark.parametrize("name", NAMES)
def test_settings_are_variables(name):
    """Tests (and users) set STUDY and VENV from outside, e.g. sbatch --export=ALL,STUDY=..."""
    body = text(name)
    assert re.search(r'^STUDY=\$\{STUDY:-[^}]+\}', body, re.M), name
    assert re.search(r'^VENV=\$\{VENV:-[^}]+\}', body, re.M), name
    assert body.index("VENV=${VENV:-") < body.index('source "$VENV/bin/activate"'), name
    assert re.search(r'python "\$STUDY" "\$@"', body), name
    used = set(re.findall(r"\b(PSMPI_[A-Z_]+)=", body))
    known = {option.env_var for option in config.OPTIONS.values() if option.env_var}
    assert used <= known, f"{name} sets unknown psmpi variables {used - known}"


def test_mpi_launchers():
    assert re.search(r"^srun --mpi=pmi2 --kill-on-bad-exit=1 python ", text("mpi.sbatch"), re.M)
    assert re.search(r'^mpiexec -n "\$SLURM_NTASKS" python ', text("mpi-mpiexec.sbatch"), re.M)
    for name in ("mpi.sbatch", "mpi-mpiexec.sbatch"):
        assert {"nodes", "ntasks-per-node"} <= set(enabled(name)), name


def test_multiprocessing_is_one_node():
    on = enabled("multiprocessing.sbatch")
    assert on["nodes"] == "1" and on["ntasks"] == "1" and int(on["cpus-per-task"]) > 1, on
    body = text("multiprocessing.sbatch")
    assert "export PSMPI_BACKEND=multiprocessing" in body
    assert "export PSMPI_NCORES=${SLURM_CPUS_PER_TASK" in body
    assert not re.search(r"^\s*(srun|mpiexec)\b", body, re.M), "one node needs no launcher"


def test_gpu_script_has_a_rank_per_gpu_block_and_one_for_rank_0():
    on = enabled("gpu.sbatch")
    body = text("gpu.sbatch")
    default = re.search(r"^GPUS_PER_WORKER=\$\{GPUS_PER_WORKER:-(\d+)\}", body, re.M)
    assert default, "GPUS_PER_WORKER must be a variable with a default"
    assert on["nodes"] == "1"
    assert int(on["ntasks"]) == int(on["gpus-per-node"]) // int(default[1]) + 1, on
    assert "export PSMPI_GPUS_PER_WORKER=$GPUS_PER_WORKER" in body
    assert config.OPTIONS["gpus_per_worker"].env_var == "PSMPI_GPUS_PER_WORKER"
    assert re.search(r"^srun --mpi=pmi2 --kill-on-bad-exit=1 python ", body, re.M)
    assert "--gpus-per-task" not in on and "gpu-bind" not in body.split("srun --mpi")[1]


def test_requeue_has_every_piece():
    body = text("requeue.sbatch")
    on = enabled("requeue.sbatch")
    signal_option = re.fullmatch(r"B:USR1@(\d+)", on.get("signal") or "")
    assert signal_option, f"need #SBATCH --signal=B:USR1@<seconds>, got {on.get('signal')}"
    drain = config.OPTIONS["drain_seconds"].default
    assert int(signal_option[1]) >= drain + 30, "the warning leaves no time to drain"
    assert "requeue" in on and on["requeue"] is None
    assert on["open-mode"] == "append"
    assert "up to 60 s earlier" in body  # the warning is not punctual: say so
    # The restart cap, with SLURM_RESTART_COUNT unset on the first run.
    assert "RESTARTS=${SLURM_RESTART_COUNT:-0}" in body
    assert re.search(r"^MAX_RESTARTS=\$\{MAX_RESTARTS:-\d+\}", body, re.M)
    assert '"$RESTARTS" -ge "$MAX_RESTARTS"' in body
    # The trap: USR1 only (a CONT trap can make bash lose the USR1 trap).
    traps = re.findall(r"^\s*trap\s+(\S+)\s+(.+)$", body, re.M)
    assert traps == [("on_warning", "USR1")], traps
    assert re.search(r'kill -USR1 "\$survey"', body)
    # The survey runs in the background, and is waited for again after a trap.
    assert re.search(r'^\s*\$LAUNCH python "\$STUDY" "\$@" &$', body, re.M)
    assert body.count('wait "$survey"') == 1 and "while :; do" in body
    # Requeue on psmpi's "incomplete" status only.
    assert EXIT_INCOMPLETE == 75 and re.search(r"^\s*75\)$", body, re.M)
    assert 'scontrol requeue "$SLURM_JOB_ID"' in body
    # MPI by default, plain python and mpiexec as documented alternatives.
    assert "LAUNCH=${LAUNCH-srun --mpi=pmi2 --kill-on-bad-exit=1}" in body
    assert '# LAUNCH="mpiexec -n $SLURM_NTASKS"' in body and '# LAUNCH=""' in body


def test_readme_covers_every_script():
    readme = (JOBSCRIPTS / "README.md").read_text()
    for name in NAMES:
        assert f"`{name}`" in readme, f"jobscripts/README.md does not describe {name}"
    for word in ("--account", "--partition", "module load", "--time", "VENV", "STUDY",
                 "SLURM_RESTART_COUNT", "75"):
        assert word in readme, word


def test_ci_scripts_start_the_settings_that_matter():
    up = CI_SCRIPTS[0].read_text()
    for setting in ("SlurmdParameters=config_overrides", "cred_expire=10", "bf_interval=1",
                    "sched_interval=2", "KillWait=5", "EnforcePartLimits=ALL", "JobRequeue=1",
                    "MailProg=/bin/true", "slurmctld -c", "export SLURM_CONF=",
                    # several nodes on this machine: a slurmd each, on a port each
                    "NodeHostname=localhost", "SlurmdPidFile=$BASE/run/slurmd-%n.pid",
                    'slurmd -f "$SLURM_CONF" -N "n$i"'):
        assert setting in up, setting
    # CI runs the ensembles over 2 nodes (tests/test_slurm.py fails without them there)
    assert "PSMPI_SLURM_NODES=2 bash .ci/slurm-up.sh" in (ROOT / ".ci" / "run").read_text()
    down = CI_SCRIPTS[1].read_text()
    assert not re.search(r"\b(pkill|killall|pgrep)\b", up + down), "stop daemons by PID only"
    assert "scontrol shutdown" in down and "munged --stop" in down


# --- the scripts, run by bash with stand-ins for Slurm and the survey --------------------

FAKE_TOOL = """#!/bin/bash
# stand-in for {tool}: log the command line, then run what follows the options
echo "{tool} $*" >> "$FAKE_TOOLS_LOG"
{body}
"""
FAKE_BODIES = {
    "srun": 'while [[ $1 == -* ]]; do shift; done\nexec "$@"',
    "mpiexec": '[ "$1" = -n ] && shift 2\nexec "$@"',
    "scontrol": '[ -n "$FAKE_SCONTROL_SHOW" ] && echo "$FAKE_SCONTROL_SHOW"\n'
                'exit "${FAKE_SCONTROL_RC:-0}"',
}


@pytest.fixture
def fake(tmp_path):
    """A bin directory with srun, mpiexec and scontrol stand-ins, a venv whose python is
    this one, and the environment a Slurm job would see."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool, body in FAKE_BODIES.items():
        path = bin_dir / tool
        path.write_text(FAKE_TOOL.format(tool=tool, body=body))
        path.chmod(0o755)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    (venv / "bin" / "activate").write_text(f'export PATH="{venv}/bin:$PATH"\n')
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "PSMPI_", "PMI_", "LAUNCH", "MAX_RESTARTS"))}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
               VENV=str(venv), STUDY=str(FAKE_SURVEY),
               FAKE_LOG=str(tmp_path / "survey.log"), FAKE_READY=str(tmp_path / "ready"),
               FAKE_TOOLS_LOG=str(tmp_path / "tools.log"),
               SLURM_JOB_ID="4242", SLURM_NTASKS="3", SLURM_CPUS_PER_TASK="2",
               SLURM_JOB_NUM_NODES="1", SLURM_JOB_NODELIST="localhost")

    class Fake:
        path = tmp_path

        def start(self, name, *args, **extra):
            run_env = dict(env, **{k: str(v) for k, v in extra.items()})
            return subprocess.Popen(["bash", str(JOBSCRIPTS / name), *args], env=run_env,
                                    cwd=tmp_path, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)

        def run(self, name, *args, **extra):
            proc = self.start(name, *args, **extra)
            out, _ = proc.communicate(timeout=60)
            return proc.returncode, out

        def tools(self) -> list[str]:
            log = tmp_path / "tools.log"
            return log.read_text().splitlines() if log.exists() else []

        def survey_runs(self) -> list[str]:
            log = tmp_path / "survey.log"
            return log.read_text().splitlines() if log.exists() else []

    return Fake()


def wait_for_file(path: Path, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, _ = proc.communicate()
            pytest.fail(f"the survey did not start (exit {proc.returncode}):\n{out}")
        time.sleep(0.02)


LAUNCHERS = {"srun (default)": (None, "srun --mpi=pmi2 --kill-on-bad-exit=1 python"),
             "mpiexec": ("mpiexec -n 3", "mpiexec -n 3 python"),
             "plain python": ("", None)}


@pytest.mark.parametrize("launch", list(LAUNCHERS))
def test_requeue_passes_the_warning_on_and_requeues(fake, launch):
    """USR1 reaches the survey; the script waits through its drain (and a second USR1)
    for status 75, then requeues its own job."""
    value, launcher_line = LAUNCHERS[launch]
    extra = {} if value is None else {"LAUNCH": value}
    proc = fake.start("requeue.sbatch", "a", "two words", FAKE_DRAIN=1.0, **extra)
    wait_for_file(fake.path / "ready", proc)
    proc.send_signal(signal.SIGUSR1)
    time.sleep(0.3)
    proc.send_signal(signal.SIGUSR1)  # a second warning while the survey drains
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert out.count("time-limit warning (SIGUSR1)") == 2, out
    assert "survey exited with status 75" in out and "incomplete: requeueing" in out, out
    assert "stopped and saved before the time limit" in out, out
    tools = fake.tools()
    assert tools[-1] == "scontrol requeue 4242", tools
    if launcher_line:
        assert tools[0].startswith(launcher_line.rsplit(" python", 1)[0]), tools
    else:
        assert len(tools) == 1, tools
    ncores = "2" if value == "" else None  # plain python: one worker per allocated core
    assert fake.survey_runs() == [f"args=['a', 'two words'] restart=None ncores={ncores} "
                                  f"backend=None"]


def test_mpi_apps_runs_one_driver_passes_the_warning_on_and_requeues(fake):
    """mpi-apps.sbatch: plain python (the driver launches the applications itself), SIGUSR1
    reaches it, status 75 requeues."""
    proc = fake.start("mpi-apps.sbatch", "a", FAKE_DRAIN=1.0)
    wait_for_file(fake.path / "ready", proc)
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "time-limit warning (SIGUSR1)" in out and "incomplete: requeueing" in out, out
    assert fake.tools() == ["scontrol requeue 4242"]  # no srun in front of the driver
    assert fake.survey_runs() == ["args=['a'] restart=None ncores=None backend=None"]
    code, out = fake.run("mpi-apps.sbatch", FAKE_EXIT=0)
    assert code == 0 and "the survey is complete" in out, out


@pytest.mark.parametrize("status", [0, 3])
def test_requeue_stops_when_complete_or_failed(fake, status):
    code, out = fake.run("requeue.sbatch", FAKE_EXIT=status)
    assert code == status, out
    assert not any(t.startswith("scontrol") for t in fake.tools()), fake.tools()
    assert ("the survey is complete" in out) == (status == 0), out


@pytest.mark.parametrize("restarts, requeued", [(None, True), (1, True), (2, False)])
def test_requeue_stops_at_max_restarts(fake, restarts, requeued):
    extra = {} if restarts is None else {"SLURM_RESTART_COUNT": restarts}
    code, out = fake.run("requeue.sbatch", FAKE_EXIT=75, MAX_RESTARTS=2, **extra)
    assert f"run {(restarts or 0) + 1} (requeued {restarts or 0} of at most 2 times)" in out
    assert code == (0 if requeued else 75), out
    assert ("scontrol requeue 4242" in fake.tools()) == requeued, fake.tools()


def test_requeue_that_fails_keeps_status_75(fake):
    code, out = fake.run("requeue.sbatch", FAKE_EXIT=75, FAKE_SCONTROL_RC=1)
    assert code == 75 and "scontrol requeue failed" in out, out


@pytest.mark.parametrize("status", [0, 75])
def test_gpu_script_runs_the_study_with_srun(fake, status):
    code, out = fake.run("gpu.sbatch", "--x", "1 2", FAKE_EXIT=status, GPUS_PER_WORKER=2)
    assert code == status, out
    assert "2 GPU(s) per worker rank" in out and f"survey exited with status {status}" in out
    assert fake.tools() == ["srun --mpi=pmi2 --kill-on-bad-exit=1 python " + str(FAKE_SURVEY)
                            + " --x 1 2"]


@pytest.mark.parametrize("name", SIMPLE)
@pytest.mark.parametrize("status", [0, 75])
def test_simple_scripts_run_the_study(fake, name, status):
    code, out = fake.run(name, "--x", "1 2", FAKE_EXIT=status)
    assert code == status, out
    assert f"survey exited with status {status}" in out, out
    settings = "ncores=2 backend=multiprocessing" if name == "multiprocessing.sbatch" else \
        "ncores=None backend=None"
    assert fake.survey_runs() == [f"args=['--x', '1 2'] restart=None {settings}"]
    expected = {"mpi.sbatch": ["srun --mpi=pmi2 --kill-on-bad-exit=1 python " + str(FAKE_SURVEY)
                               + " --x 1 2"],
                "mpi-mpiexec.sbatch": ["mpiexec -n 3 python " + str(FAKE_SURVEY) + " --x 1 2"],
                "multiprocessing.sbatch": []}[name]
    assert fake.tools() == expected


def test_array_is_one_node_per_task_and_records_the_job_script():
    on = enabled("array.sbatch")
    assert re.fullmatch(r"0-\d+", on["array"]) and on["nodes"] == "1", on
    assert "%A_%a" in on["output"], "one log per task"
    body = text("array.sbatch")
    assert "export PSMPI_NCORES=${SLURM_CPUS_PER_TASK" in body
    assert 'scontrol show job "$SLURM_JOB_ID"' in body and "export PSMPI_JOB_SCRIPT" in body
    assert "psmpi status" in body and "psmpi merge" in body and "PSMPI_SHARD=array:" in body


@pytest.mark.parametrize("status", [0, 75])
def test_array_runs_the_study_with_its_job_script(fake, status):
    show = "   JobId=4242 JobName=survey\n   Command=/site/array.sbatch --x 1\n   WorkDir=/w"
    code, out = fake.run("array.sbatch", "--x", "1", FAKE_EXIT=status, FAKE_SCONTROL_SHOW=show,
                         SLURM_ARRAY_JOB_ID="4240", SLURM_ARRAY_TASK_ID="2")
    assert code == status, out
    assert f"job 4240 task 2: survey exited with status {status}" in out, out
    assert fake.survey_runs() == ["args=['--x', '1'] restart=None ncores=2 "
                                  "backend=multiprocessing job_script=/site/array.sbatch --x 1"]


@pytest.mark.parametrize("name", NAMES)
def test_a_missing_venv_is_explained(fake, name):
    code, out = fake.run(name, VENV=fake.path / "nowhere", FAKE_EXIT=0)
    assert code == 1 and "No Python virtual environment at" in out, out
    assert fake.survey_runs() == []

