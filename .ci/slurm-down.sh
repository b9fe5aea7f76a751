#!/usr/bin/env bash
# Stop the private Slurm cluster started by .ci/slurm-up.sh: cancel its jobs, shut down
# slurmctld and slurmd, stop munged. Daemons are found by their PID files under
# $PSMPI_SLURM_BASE (default /tmp/psmpi-slurm) or reached by RPC, never by process name,
# so a system Slurm on the same machine is left alone. The logs under
# $PSMPI_SLURM_BASE/log stay for inspection; pass --clean to delete the whole directory.
set -uo pipefail

BASE=${PSMPI_SLURM_BASE:-/tmp/psmpi-slurm}
export SLURM_CONF=$BASE/etc/slurm.conf
say() { echo "slurm-down: $*"; }

pid_of() { # the PID in file $1 if it is alive and is program $2 (not a reused PID)
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 0
    [[ $pid =~ ^[0-9]+$ ]] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] && echo "$pid"
    return 0
}
wait_gone() { # wait up to $2 seconds for PID $1 to exit
    local i
    for i in $(seq 1 $(($2 * 4))); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.25; done
    return 1
}

# Read the PIDs first: the daemons delete their PID files early while shutting down.
CTLD=$(pid_of "$BASE/run/slurmctld.pid" slurmctld)
SLURMD=$(for file in "$BASE"/run/slurmd*.pid; do pid_of "$file" slurmd; done | tr '\n' ' ')
MUNGED=$(pid_of "$BASE/munge/munged.pid" munged)

if [ -n "$CTLD" ] && [ -f "$SLURM_CONF" ]; then
    # Every job of this private cluster goes, whoever submitted it.
    jobs=$(squeue -h -o %i 2>/dev/null | tr '\n' ' ')
    if [ -n "${jobs// /}" ]; then
        say "cancelling jobs $jobs"
        # shellcheck disable=SC2086
        scancel $jobs 2>/dev/null || true
        for _ in $(seq 1 40); do
            [ -z "$(squeue -h -o %i -t RUNNING,COMPLETING 2>/dev/null)" ] && break
            sleep 0.25
        done
    fi
    timeout 10 scontrol shutdown >/dev/null 2>&1 || say "scontrol shutdown failed; using the PID files"
fi
for pid in $CTLD $SLURMD; do
    wait_gone "$pid" 15 || { say "PID $pid still there: SIGTERM"; kill "$pid" 2>/dev/null; }
    wait_gone "$pid" 5 || { say "PID $pid still there: SIGKILL"; kill -9 "$pid" 2>/dev/null; }
done
if [ -n "$MUNGED" ]; then
    munged --stop -S "$BASE/munge/munge.socket.2" >/dev/null 2>&1 || kill "$MUNGED" 2>/dev/null
    wait_gone "$MUNGED" 5 || kill -9 "$MUNGED" 2>/dev/null
fi
rm -f "$BASE/run/slurmctld.pid" "$BASE"/run/slurmd*.pid "$BASE/munge/munged.pid"
if [ "${1:-}" = --clean ]; then
    rm -rf "$BASE"
fi
say "stopped (${CTLD:+slurmctld $CTLD }${SLURMD:+slurmd ${SLURMD% } }${MUNGED:+munged $MUNGED})"
