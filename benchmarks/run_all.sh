#!/usr/bin/env bash
# Set up benchmarks/.venv, run every local benchmark from a temporary directory and write
# their markdown reports to benchmarks/results-local.md (results-local-quick.md with --quick).
#   bash benchmarks/run_all.sh            # full run, several minutes
#   bash benchmarks/run_all.sh --quick    # smoke run
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
mode="${1:-}"
out="$here/results-local.md"
[ "$mode" = "--quick" ] && out="$here/results-local-quick.md"

bash "$here/setup.sh"
py="$here/.venv/bin/python"
work="$(mktemp -d -t psmpi-bench-XXXXXX)"
trap 'rm -rf "$work"' EXIT
cd "$work"   # paramsurvey leaves log files in the working directory

{
    echo "# psmpi local benchmarks"
    echo
    echo "Written by \`bash benchmarks/run_all.sh${mode:+ $mode}\` on $(date -u '+%Y-%m-%d %H:%M UTC'),"
    echo "$(uname -srm), nproc $(nproc). Each section gives its exact command."
} > "$work/results.md"
for bench in throughput_local store_append store_values; do
    echo "running $bench.py $mode" >&2
    echo >> "$work/results.md"
    "$py" "$here/$bench.py" $mode >> "$work/results.md"
done
mv "$work/results.md" "$out"
echo "wrote $out" >&2
