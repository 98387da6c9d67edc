#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for the tests marked `slurm` (tests/slurm/):
#   bash .ci/slurm.sh start    # install (Debian: slurmctld slurmd slurm-client munge) if needed, start, wait idle
#   bash .ci/slurm.sh stop     # stop only the daemons this script started (by their PID files)
#   bash .ci/slurm.sh status
#   bash .ci/slurm.sh answers  # exit 0 when a cluster (this script's or another) has a usable node now
# Both are idempotent. Needs root and no systemd: munged, slurmctld and slurmd run as foreground processes in
# their own sessions; their state, logs and PID files live in $ORTHONOISE_SLURM_DIR (default /tmp/orthonoise-slurm).
# The node has no accounting database: `sacct` answers "accounting storage is disabled", and the launcher reads job
# states from slurmctld instead (orthonoise/sweep/launcher.py; docs/sweeps.md, "SLURM").
set -euo pipefail

DIR=${ORTHONOISE_SLURM_DIR:-/tmp/orthonoise-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by orthonoise .ci/slurm.sh"
PARTITION=cpu

log() { echo "slurm.sh: $*" >&2; }

alive() {  # alive <pidfile> <command name>: the PID file names a live process of that name
    local pid
    [[ -s $1 ]] || return 1
    pid=$(cat "$1")
    [[ -r /proc/$pid/comm && $(cat "/proc/$pid/comm") == "$2" ]]
}

install_packages() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null && return
    log "installing slurmctld slurmd slurm-client munge (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq </dev/null
    apt-get install -y -qq slurmctld slurmd slurm-client munge </dev/null >/dev/null
}

write_config() {
    if [[ -e $CONF ]] && ! grep -qF "$MARK" "$CONF"; then
        log "$CONF exists and is not ours: using it as it is"
        return
    fi
    local node host
    node=$(slurmd -C | head -1)           # NodeName=<host> CPUs=.. Boards=.. ... RealMemory=..
    host=$(hostname -s)
    mkdir -p /etc/slurm "$DIR/state" "$DIR/spool"
    cat > "$CONF" <<EOF
$MARK
ClusterName=orthonoise
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
# a requeued job's credential expires in 10 s, so it restarts in ~11 s instead of ~126 s
AuthInfo=cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.own.pid
SlurmdPidFile=$DIR/slurmd.own.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
# no cgroups in a container: processes tracked through /proc, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# cores and memory are consumable: several 1-CPU jobs share the node instead of one job taking it
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
# a request the partition can never satisfy is refused at submission instead of pending forever
EnforcePartLimits=ALL
JobRequeue=1
# finished jobs stay in slurmctld's memory for an hour: without accounting, that is where their state is read
MinJobAge=3600
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
KillWait=10
$node State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

start_daemon() {  # start_daemon <name> <command...>: in its own session, PID recorded in $DIR/<name>.pid
    local name=$1
    shift
    if alive "$DIR/$name.pid" "$name"; then
        log "$name already running (pid $(cat "$DIR/$name.pid"))"
        return
    fi
    setsid "$@" </dev/null >>"$DIR/$name.out" 2>&1 &
    echo $! > "$DIR/$name.pid"
}

show_logs() {
    for f in "$DIR"/munged.out "$DIR"/slurmctld.out "$DIR"/slurmd.out "$DIR"/slurmctld.log "$DIR"/slurmd.log; do
        [[ -s $f ]] && { echo "---- $f (last 40 lines)" >&2; tail -40 "$f" >&2; }
    done
    return 0
}

answers() {
    command -v sinfo >/dev/null || return 1
    local states
    states=$(timeout 10 sinfo -h -o %t 2>/dev/null) || return 1
    grep -qxE 'idle|mix|alloc' <<<"$states"
}

wait_idle() {
    local deadline=$((SECONDS + ${ORTHONOISE_SLURM_TIMEOUT:-60})) state=""
    while ((SECONDS < deadline)); do
        state=$(sinfo -h -p "$PARTITION" -o %t 2>/dev/null | head -1 || true)
        [[ $state == idle || $state == mix || $state == alloc ]] && { log "node $state"; return 0; }
        # a node left drained or down by an earlier, interrupted run (its state is saved in $DIR/state)
        [[ $state == drain* || $state == drng* || $state == down* ]] \
            && scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1
        sleep 1
    done
    log "the node did not become idle within ${ORTHONOISE_SLURM_TIMEOUT:-60} s (state: '${state:-no answer}')"
    show_logs
    return 1
}

start() {
    install_packages
    mkdir -p "$DIR"
    write_config
    install -d -o munge -g munge -m 0755 /run/munge
    [[ -s /etc/munge/munge.key ]] || { mungekey -c -f -k /etc/munge/munge.key; chown munge:munge /etc/munge/munge.key; }
    start_daemon munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --foreground
    for _ in $(seq 50); do munge -n </dev/null >/dev/null 2>&1 && break; sleep 0.1; done
    munge -n </dev/null | unmunge >/dev/null || { log "munge does not answer"; show_logs; return 1; }
    start_daemon slurmctld /usr/sbin/slurmctld -D -i
    start_daemon slurmd /usr/sbin/slurmd -D
    wait_idle
}

stop() {
    local name pid
    for name in slurmd slurmctld munged; do
        if alive "$DIR/$name.pid" "$name"; then
            pid=$(cat "$DIR/$name.pid")
            kill -TERM "$pid"
            for _ in $(seq 100); do [[ -d /proc/$pid ]] || break; sleep 0.1; done
            [[ -d /proc/$pid ]] && kill -KILL "$pid"
            log "stopped $name (pid $pid)"
        fi
        rm -f "$DIR/$name.pid"
    done
}

status() {
    local name
    for name in munged slurmctld slurmd; do
        if alive "$DIR/$name.pid" "$name"; then echo "$name: running (pid $(cat "$DIR/$name.pid"))"
        else echo "$name: not running"; fi
    done
    sinfo 2>/dev/null || true
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    logs) show_logs ;;
    answers) answers ;;
    *) echo "usage: $0 start|stop|status|logs|answers" >&2; exit 2 ;;
esac
