import os
import sys

# Let tests import tests/contract.py and the helper scripts as plain modules.
sys.path.insert(0, os.path.dirname(__file__))

# Scripts run as programs (by subprocess or mpiexec), never imported by pytest: importing
# one would run its study.
collect_ignore_glob = ["scripts/*", "mpi_scripts/*", "helpers/*", "run_contract.py"]
