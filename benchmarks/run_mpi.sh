#!/usr/bin/env bash
# Set up benchmarks/.venv (psmpi[mpi]: mpi4py and the mpich wheel, plus the peers), run every
# MPI benchmark from a temporary directory with that venv's mpiexec, and write their markdown
# reports to benchmarks/results-mpi.md (results-mpi-quick.md with --quick).
#   bash benchmarks/run_mpi.sh            # full run, ~25 minutes on 2 cores
#   bash benchmarks/run_mpi.sh --quick    # smoke run, ~2 minutes
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
mode="${1:-}"
out="$here/results-mpi.md"
[ "$mode" = "--quick" ] && out="$here/results-mpi-quick.md"

bash "$here/setup.sh"
py="$here/.venv/bin/python"
mpiexec="$here/.venv/bin/mpiexec"
[ -x "$mpiexec" ] || { echo "run_mpi.sh: no $mpiexec (setup.sh could not install mpich)" >&2; exit 1; }
work="$(mktemp -d -t psmpi-bench-XXXXXX)"
trap 'rm -rf "$work"' EXIT
cd "$work"

{
    echo "# psmpi MPI benchmarks"
    echo
    echo "Written by \`bash benchmarks/run_mpi.sh${mode:+ $mode}\` on $(date -u '+%Y-%m-%d %H:%M UTC'),"
    echo "$(uname -srm), nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')."
    echo "MPI: \`$mpiexec\` ($("$here/.venv/bin/mpichversion" 2>/dev/null | head -n 1 | tr -s ' \t' ' ' || echo 'version unknown')),"
    echo "mpi4py $("$py" -c 'import mpi4py; print(mpi4py.__version__)'), every rank runs \`$py\`."
    echo "Each section gives its exact command; each measurement inside it is a fresh \`mpiexec\`."
    echo "The machine is shared and noisy: within a section the systems take turns in every round."
} > "$work/results.md"
for bench in mpi_throughput mpi_overhead mpi_balance mpi_idle mpi_scale mpi_memory mpi_startup; do
    echo "running $bench.py $mode" >&2
    echo >> "$work/results.md"
    "$py" "$here/$bench.py" $mode >> "$work/results.md"
done
echo "running mpi_scale.py --simulate $mode" >&2
echo >> "$work/results.md"
"$py" "$here/mpi_scale.py" --simulate $mode >> "$work/results.md"
mv "$work/results.md" "$out"
echo "wrote $out" >&2
