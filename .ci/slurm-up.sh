#!/usr/bin/env bash
# Start a private single-node Slurm cluster on this machine (for tests/test_slurm.py).
#
#   bash .ci/slurm-up.sh            # installs Debian's Slurm + munge if missing (needs root)
#   export SLURM_CONF=/tmp/psmpi-slurm/etc/slurm.conf   # printed at the end; or:
#   source /tmp/psmpi-slurm/env.sh
#   bash .ci/slurm-down.sh          # stops it again
#
# Everything lives under $PSMPI_SLURM_BASE (default /tmp/psmpi-slurm): config, state, logs,
# a munge daemon with its own key and socket. Nothing under /etc is read or changed once
# the packages are installed; clients find the cluster through SLURM_CONF only.
# Tested with Slurm 22.05 (Debian 12) as root without systemd. Needs: bash, root (the
# daemons run as root so that jobs can run as any user).
#
# Settings and why (each one was measured to matter on a 2-core machine):
#   CPUs=$NCPUS + SlurmdParameters=config_overrides  advertise more CPUs than exist, so an
#                                  8-rank job fits; without it the node goes INVAL/DRAIN
#   slurmctld -c                   start with clean state (no DRAIN reason from a last run)
#   AuthInfo ... cred_expire=10    a requeued job may restart after ~12 s (default: ~130 s)
#   bf_interval=1,sched_interval=2 pending and requeued jobs start at once
#   KillWait=5                     5 s between SIGTERM and SIGKILL at the time limit (30)
#   EnforcePartLimits=ALL          a job that can never fit is refused by sbatch instead of
#                                  pending for ever
#   JobRequeue=1                   jobs are requeueable by default
#   MpiDefault=none                jobs choose: srun --mpi=pmi2 (mpich), or mpiexec
#   MailProg=/bin/true             no "MailProg is invalid" errors without a mailer
#   FirstJobId=<from the clock>    job ids differ from one start to the next (-c starts again
#                                  at 1 otherwise): MPICH under srun names its shared memory
#                                  after <job>.<step>, and an application killed in a test
#                                  leaves /dev/shm/mpich_shm_* behind, which made the same
#                                  job.step of a later cluster fail in MPI_Init
#   Slurm{ctld,d}Port              private ports, away from a system Slurm on 6817/6818
#
# PSMPI_SLURM_NODES=2 (or more): nodes n1, n2, ... all on this machine, one slurmd each
# (slurmd -N n1) on ports $SLURMD_PORT, +1, ...: Debian's Slurm 22.05 is built with
# --enable-multiple-slurmd, so multi-node jobs and steps (srun -N 2, MPI over both) run for
# real. Each node gets $NCPUS CPUs. With 1 (the default) the node is called localhost.
set -euo pipefail

BASE=${PSMPI_SLURM_BASE:-/tmp/psmpi-slurm}
NCPUS=${PSMPI_SLURM_CPUS:-8}
NNODES=${PSMPI_SLURM_NODES:-1}
CTLD_PORT=${PSMPI_SLURM_CTLD_PORT:-16817}
SLURMD_PORT=${PSMPI_SLURM_SLURMD_PORT:-16818}
HERE=$(cd "$(dirname "$0")" && pwd)
started=$(date +%s%N)

say() { echo "slurm-up: $*"; }

# 1. Packages: Debian's slurmctld slurmd slurm-client munge (about 10 s).
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
   || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    if [ "$(id -u)" != 0 ]; then
        say "Slurm is not installed and this is not root: install slurmctld slurmd" \
            "slurm-client munge, or run as root" >&2
        exit 1
    fi
    say "installing slurmctld slurmd slurm-client munge"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null
fi
if [ "$(id -u)" != 0 ]; then
    say "must run as root (slurmd runs jobs as their owners)" >&2
    exit 1
fi

# 2. A cluster of ours still running from an earlier call: stop it first.
if [ -e "$BASE/run/slurmctld.pid" ] || [ -e "$BASE/munge/munged.pid" ]; then
    say "stopping the cluster already under $BASE"
    PSMPI_SLURM_BASE=$BASE bash "$HERE/slurm-down.sh" || true
fi

rm -rf "$BASE"
mkdir -p "$BASE"/{etc,state,spool,log,run,munge}
chmod 755 "$BASE" "$BASE/munge"   # munged wants a world-searchable socket directory
MUNGE_SOCKET=$BASE/munge/munge.socket.2

# 3. munge: a private key and a daemon on a private socket.
mungekey --create --keyfile="$BASE/munge/munge.key" --force
munged --key-file="$BASE/munge/munge.key" --socket="$MUNGE_SOCKET" \
       --pid-file="$BASE/munge/munged.pid" --log-file="$BASE/munge/munged.log" \
       --seed-file="$BASE/munge/munged.seed"
munge -n -S "$MUNGE_SOCKET" | unmunge -S "$MUNGE_SOCKET" >/dev/null

# 4. slurm.conf: one node called localhost (or n1..nN on this machine), a partition debug.
if [ "$NNODES" = 1 ]; then
    NODES=localhost
    SLURMD_FILES="SlurmdPidFile=$BASE/run/slurmd.pid
SlurmdSpoolDir=$BASE/spool
SlurmdLogFile=$BASE/log/slurmd.log"
    NODE_LINES="NodeName=localhost CPUs=$NCPUS RealMemory=1000 State=UNKNOWN"
else
    NODES="n[1-$NNODES]"
    SLURMD_FILES="SlurmdPidFile=$BASE/run/slurmd-%n.pid
SlurmdSpoolDir=$BASE/spool/%n
SlurmdLogFile=$BASE/log/slurmd-%n.log"
    NODE_LINES=""
    for i in $(seq 1 "$NNODES"); do
        mkdir -p "$BASE/spool/n$i"
        NODE_LINES+="NodeName=n$i NodeHostname=localhost NodeAddr=127.0.0.1 Port=$((SLURMD_PORT + i - 1)) CPUs=$NCPUS RealMemory=1000 State=UNKNOWN
"
    done
fi
cat > "$BASE/etc/slurm.conf" <<CONF
# Written by psmpi's .ci/slurm-up.sh: a private single-node test cluster.
ClusterName=psmpi
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
StateSaveLocation=$BASE/state
SlurmctldPidFile=$BASE/run/slurmctld.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
$SLURMD_FILES
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
EnforcePartLimits=ALL
MpiDefault=none
ReturnToService=2
JobRequeue=1
MinJobAge=300
KillWait=5
MailProg=/bin/true
FirstJobId=$(( $(date +%s) % 60000000 + 1000 ))
$NODE_LINES
PartitionName=debug Nodes=$NODES Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$BASE/etc/slurm.conf
echo "export SLURM_CONF=$SLURM_CONF" > "$BASE/env.sh"

# 5. The daemons (both daemonize and write their PID files).
slurmctld -c -f "$SLURM_CONF"
if [ "$NNODES" = 1 ]; then
    slurmd -f "$SLURM_CONF" -N localhost
else
    for i in $(seq 1 "$NNODES"); do slurmd -f "$SLURM_CONF" -N "n$i"; done
fi

# 6. Wait until every node takes jobs.
state=
for _ in $(seq 1 120); do
    state=$(sinfo -h -n "$NODES" -o %T 2>/dev/null | sort -u | tr '\n' ' ' || true)
    [ "$state" = "idle " ] && break
    sleep 0.25
done
if [ "$state" != "idle " ]; then
    say "the nodes did not become idle within 30 s (state: '${state:-no answer}'); logs:" >&2
    tail -n 30 "$BASE/log/slurmctld.log" "$BASE"/log/slurmd*.log >&2 || true
    exit 1
fi
sinfo
elapsed_ms=$(( ($(date +%s%N) - started) / 1000000 ))
say "up in $((elapsed_ms / 1000)).$(printf %03d $((elapsed_ms % 1000))) s"
down="bash $HERE/slurm-down.sh"
[ "$BASE" = /tmp/psmpi-slurm ] || down="PSMPI_SLURM_BASE=$BASE $down"  # a custom base
cat <<EOF

Slurm is running. Point the client tools (sbatch, squeue, srun, ...) at it with:

    export SLURM_CONF=$SLURM_CONF

(or: source $BASE/env.sh). Stop it with: $down
EOF
