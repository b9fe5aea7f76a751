#!/usr/bin/env bash
# Create benchmarks/.venv: psmpi (editable) plus the peers it is compared with.
# The peers live only here, never in psmpi's own dependencies.
# A peer that fails to install is reported; the benchmarks then skip it with a reason.
set -u
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
log="$venv/setup.log"

if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv" || { echo "setup.sh: cannot create $venv" >&2; exit 1; }
fi
: > "$log"
# psmpi with its mpi extra (mpi4py and the mpich wheel): the MPI benchmarks use this venv's
# mpiexec and python on every rank. Without MPI, psmpi alone still serves the local ones.
if ! "$venv/bin/python" -m pip install -e "$here/..[mpi]" >> "$log" 2>&1; then
    echo "setup.sh: could not install psmpi[mpi] (mpi4py, mpich), so the MPI benchmarks " \
         "cannot run; trying psmpi alone. pip said:" >&2
    grep -E "ERROR|error:" "$log" | tail -n 5 >&2
    if ! "$venv/bin/python" -m pip install -e "$here/.." >> "$log" 2>&1; then
        echo "setup.sh: cannot install psmpi into $venv; see $log" >&2
        tail -n 20 "$log" >&2
        exit 1
    fi
fi
# One package at a time, so that one failure does not hide the others.
# tables (PyTables) is for the pandas writer of store_append.py; libensemble for adaptive.py.
for peer in paramsurvey psweep schwimmbad tables libensemble; do
    if ! "$venv/bin/python" -m pip install "$peer" >> "$log" 2>&1; then
        echo "setup.sh: could not install $peer, so the benchmarks skip it; pip said:" >&2
        grep -E "ERROR|error:" "$log" | tail -n 5 >&2
    fi
done
echo "setup.sh: $venv has:" >&2
"$venv/bin/python" -m pip list 2>/dev/null \
    | grep -i -E '^(psmpi|paramsurvey|psweep|schwimmbad|tables|libensemble|h5py|pandas|numpy|mpi4py|mpich|cloudpickle) ' >&2
# The ray benchmarks (ray_throughput.py, ray_balance.py): ray, and paramsurvey's ray extra.
if ! "$venv/bin/python" -m pip install ray 'paramsurvey[ray]' >> "$log" 2>&1; then
    echo "setup.sh: could not install ray and paramsurvey[ray], so the ray benchmarks skip " \
         "them; pip said:" >&2
    grep -E "ERROR|error:" "$log" | tail -n 5 >&2
fi
"$venv/bin/python" -m pip list 2>/dev/null | grep -i -E '^ray ' >&2
