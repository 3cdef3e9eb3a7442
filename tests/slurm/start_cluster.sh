#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, with accounting, for the real-Slurm tests
# (tests/test_slurm_cluster.py) and to try profiles/slurm by hand.
#
#   bash tests/slurm/start_cluster.sh          # start (installs the packages when missing)
#   bash tests/slurm/start_cluster.sh stop     # stop the daemons
#   bash tests/slurm/start_cluster.sh status   # exit 0 when sinfo shows the node and sacct answers
#
# Needs root and Debian/Ubuntu (apt-get: slurm-wlm, slurmdbd, munge, mariadb-server; no other
# network). Runs the daemons directly, no systemd: munged, mariadbd (accounting database),
# slurmdbd (accounting), slurmctld and slurmd (one node: this machine's CPUs and memory, as
# `slurmd -C` reports them, in a partition `main`). Everything they keep is in $STATE
# (default /var/tmp/potflow-slurm); /etc/slurm/slurm.conf and slurmdbd.conf are written here and
# carry a first line naming this script (an existing slurm.conf without it is left alone: the
# script refuses). Idempotent: start on a running cluster only checks it; after stop, start
# reuses the database. Jobs run as root under the account `potflow`.
set -euo pipefail

STATE=${POTFLOW_SLURM_STATE:-/var/tmp/potflow-slurm}
CONF_DIR=/etc/slurm
MARK="# written by potflow tests/slurm/start_cluster.sh"
CLUSTER=potflow
ACCOUNT=potflow
DB_SOCKET=/run/mysqld/mysqld.sock
NODE=$(hostname -s)

say() { echo "start_cluster [${SECONDS}s]: $*"; }
die() { echo "start_cluster: $*" >&2; exit 1; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: retry the command every 0.5 s
    local limit=$1 what=$2 t=0
    shift 2
    until "$@" >/dev/null 2>&1; do
        t=$((t + 1))
        [ "$t" -le $((limit * 2)) ] || return 1
        sleep 0.5
    done
}

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

cluster_answers() {  # without slurmctld, sinfo would retry for half a minute
    pid_alive "$STATE/slurmctld.pid" && command -v sinfo >/dev/null \
        && [ "$(sinfo -h -N -n "$NODE" -o %t 2>/dev/null)" = idle ] && sacct -n -X -S now-1minute >/dev/null 2>&1
}

install_packages() {
    local missing=()
    command -v munged >/dev/null || missing+=(munge)
    command -v mariadbd >/dev/null || missing+=(mariadb-server)
    command -v slurmdbd >/dev/null || missing+=(slurmdbd)
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        || missing+=(slurm-wlm)
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    say "installed"
}

write_conf() {
    local conf=$CONF_DIR/slurm.conf
    if [ -e "$conf" ] && ! head -n1 "$conf" | grep -qF "$MARK"; then
        die "$conf exists and was not written by this script; not touching this machine's Slurm"
    fi
    mkdir -p "$CONF_DIR" "$STATE/ctld" "$STATE/spool"
    # this machine as slurmd sees it (CPUs, sockets, cores, memory), minus its uptime line
    local node_line
    node_line=$(slurmd -C | head -n1 | sed "s/^NodeName=[^ ]*/NodeName=$NODE NodeAddr=127.0.0.1/")
    cat >"$conf" <<EOF
$MARK
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
# no cgroups without systemd: processes are tracked through /proc, tasks are not bound
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# accounting: sacct answers from slurmdbd (the Slurm executor plugin follows jobs with sacct)
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStorageEnforce=associations
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
# sacct shows the comment the Slurm executor plugin gives each job (rule_<rule>_wildcards_...)
AccountingStoreFlags=job_comment
# a job that is cancelled or runs out of time is killed 5 s after SIGTERM
KillWait=5
SchedulerParameters=sched_interval=2
MessageTimeout=30
MailProg=/bin/true
# a job without --mem gets 1000 MB per CPU, not the whole node
DefMemPerCPU=1000
$node_line State=UNKNOWN
PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$CONF_DIR/slurmdbd.conf" <<EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=$STATE/slurmdbd.pid
LogFile=$STATE/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=potflow-slurm
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$CONF_DIR/slurmdbd.conf"
}

start_munge() {
    pid_alive /run/munge/munged.pid && return 0
    [ -s /etc/munge/munge.key ] || { mkdir -p /etc/munge; dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; }
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    runuser -u munge -- munged
    wait_for 20 munge munge -n || die "munged does not answer"
}

start_mariadb() {
    local db=$STATE/mariadb  # data, pid file and log, owned by the mysql user it runs as
    mkdir -p /run/mysqld "$db" && chown mysql:mysql /run/mysqld "$db"
    if [ ! -d "$db/data/mysql" ]; then
        mariadb-install-db --user=mysql --datadir="$db/data" --skip-test-db >"$db/install.log" 2>&1 \
            || die "mariadb-install-db failed (see $db/install.log)"
    fi
    if ! pid_alive "$db/mariadb.pid"; then
        mariadbd --user=mysql --datadir="$db/data" --socket="$DB_SOCKET" --pid-file="$db/mariadb.pid" \
            --skip-networking --log-error="$db/mariadb.log" --innodb-buffer-pool-size=64M </dev/null >/dev/null 2>&1 &
        disown
        wait_for 60 mariadb mariadb --socket="$DB_SOCKET" -e "select 1" || die "mariadbd does not answer (see $db/mariadb.log)"
    fi
    mariadb --socket="$DB_SOCKET" <<'SQL'
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'potflow-slurm';
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
SQL
}

start_slurm() {
    if ! pid_alive "$STATE/slurmdbd.pid"; then
        slurmdbd
        wait_for 60 slurmdbd sacctmgr -n list cluster || die "slurmdbd does not answer (see $STATE/slurmdbd.log)"
    fi
    # the cluster, an account, root in it (before slurmctld, which then finds its associations)
    [ -n "$(sacctmgr -n list cluster "$CLUSTER" format=cluster)" ] || sacctmgr -i add cluster "$CLUSTER" >/dev/null
    [ -n "$(sacctmgr -n list account "$ACCOUNT" format=account)" ] \
        || sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description="potflow tests" Organization=potflow >/dev/null
    [ -n "$(sacctmgr -n -P list assoc users=root account="$ACCOUNT" format=user)" ] \
        || sacctmgr -i add user root Account="$ACCOUNT" DefaultAccount="$ACCOUNT" >/dev/null
    say "slurmdbd answers"
    pid_alive "$STATE/slurmctld.pid" || slurmctld
    pid_alive "$STATE/slurmd.pid" || slurmd
    if ! wait_for 60 "node idle" cluster_answers; then
        # a node left DOWN/DRAIN by an earlier run: return it to service once
        scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
        wait_for 30 "node idle" cluster_answers || die "the node is not idle: $(sinfo -N -o '%N %t %E' 2>&1 | tail -n1) (see $STATE/slurmctld.log, $STATE/slurmd.log)"
    fi
}

stop_daemons() {  # stop_daemons PIDFILE...: SIGTERM to all at once, SIGKILL after 20 s
    local pids=() pidfile pid
    for pidfile in "$@"; do
        pid_alive "$pidfile" && pids+=("$(cat "$pidfile")")
    done
    [ ${#pids[@]} -eq 0 ] && return 0
    kill "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 200); do
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && sleep 0.1 && continue 2; done
        return 0
    done
    say "killing what did not stop in 20 s: ${pids[*]}"
    kill -9 "${pids[@]}" 2>/dev/null || true
}

case "${1:-start}" in
start)
    [ "$(id -u)" -eq 0 ] || die "needs root (it installs packages and writes /etc/slurm)"
    if cluster_answers; then
        say "running already: $(sinfo -h -N -o '%N %P %c CPUs %m MB %t')"
        exit 0
    fi
    install_packages
    write_conf
    start_munge
    start_mariadb
    say "munge and mariadb answer"
    start_slurm
    say "running: $(sinfo -h -N -o '%N %P %c CPUs %m MB %t'); state and logs in $STATE"
    ;;
stop)
    stop_daemons "$STATE/slurmd.pid" "$STATE/slurmctld.pid" "$STATE/slurmdbd.pid"
    stop_daemons "$STATE/mariadb/mariadb.pid" /run/munge/munged.pid
    say "stopped"
    ;;
status)
    cluster_answers
    ;;
*)
    die "usage: $0 [start|stop|status]"
    ;;
esac
