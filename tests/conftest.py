import glob
import os
import sys

import pytest
from hypothesis import settings

# In CI (CI=true) property tests draw the same examples every run, so a submission's CI
# result does not depend on luck; locally they keep exploring new examples.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

# Let tests import tests/contract.py and the helper scripts as plain modules.
sys.path.insert(0, os.path.dirname(__file__))

# Most tests run maps in the repository directory, where the hidden run logs
# (.psmpi-*.log) would pile up. Subprocesses inherit this too. The tests of the log itself
# (test_logfile.py) remove it and work in temporary directories.
os.environ["PSMPI_LOGFILE"] = "0"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session", autouse=True)
def no_run_logs_left_in_the_repository():
    """A test that starts a study with an environment of its own (PSMPI_* dropped) in the
    repository still writes a run log there: remove the logs this session created."""
    pattern = os.path.join(ROOT, ".psmpi-*.log")
    before = set(glob.glob(pattern))
    yield
    for path in set(glob.glob(pattern)) - before:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


@pytest.fixture
def serial_session():
    """Each test starts from a fresh serial session (psmpi.init) and closes it after."""
    from psmpi import api
    api.init(backend="serial", verbose=0)
    yield
    api._session.close_backend()
    api._session.initialised = False


# Scripts run as programs (by subprocess or mpiexec), never imported by pytest: importing
# one would run its study.
collect_ignore_glob = ["scripts/*", "mpi_scripts/*", "helpers/*", "run_contract.py"]
