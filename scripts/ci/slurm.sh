#!/usr/bin/env bash
# A one-node SLURM on this machine for the slow tier (tests/test_slurm.py): Debian's slurm-wlm
# and munge, slurmctld and slurmd on the loopback address, proctrack/linuxproc, task/none, no
# accounting database (as on many small clusters; job states come from slurmctld alone).
#
#   bash scripts/ci/slurm.sh start   # install (apt, once), configure, start, wait for the node
#   bash scripts/ci/slurm.sh stop    # cancel its jobs and stop the daemons that start started
#
# Idempotent: a second start leaves running daemons alone; where a SLURM already answers (a real
# cluster, or a slurm.conf this script did not write) nothing is installed, written or started.
# Run as root (CI is): SlurmUser is root. State, logs and pid files: $HIVA_SLURM_DIR.
set -euo pipefail

STATE=${HIVA_SLURM_DIR:-/var/spool/hiva-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by scripts/ci/slurm.sh"
NODE=localhost
STARTED="$STATE/started"  # the daemons this script started: what stop may stop

say() { echo "slurm.sh: $*"; }
die() { echo "slurm.sh: error: $*" >&2; exit 1; }

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
      && command -v sbatch >/dev/null && command -v munged >/dev/null; then
    return
  fi
  [ "$(id -u)" = 0 ] || die "installing slurm-wlm and munge needs root (apt-get)"
  say "installing slurm-wlm and munge (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

answers() {  # whether a controller answers for the configured cluster
  timeout 10 sinfo -h -o %T >/dev/null 2>&1
}

write_conf() {
  local cpus mem
  cpus=$(nproc)
  # 95% of the machine's memory in MB: --mem requests up to it are accepted
  mem=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.95}' /proc/meminfo)
  mkdir -p /etc/slurm "$STATE/ctld" "$STATE/d"
  cat > "$CONF.tmp" <<EOF
$MARK: a one-node cluster for the slow tests
ClusterName=hiva-ci
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# a requeued job may start again once its credentials expire: 30 s here, SLURM's default 120 s
AuthInfo=cred_expire=30
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# the node as written here, whatever slurmd detects (containers report odd topologies)
SlurmdParameters=config_overrides
ReturnToService=2
SlurmdTimeout=60
KillWait=30
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=ci Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  if [ -f "$CONF" ] && cmp -s "$CONF" "$CONF.tmp"; then
    rm "$CONF.tmp"
  else
    mv "$CONF.tmp" "$CONF"
  fi
}

alive() {  # alive NAME PIDFILE: the pid file names a running NAME
  local pid
  [ -f "$2" ] || return 1
  pid=$(cat "$2" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$1" ]
}

started() { echo "$1 $2" >> "$STARTED"; }

start_munge() {
  if timeout 5 munge -n 2>/dev/null | timeout 5 unmunge >/dev/null 2>&1; then
    return  # a munged already answers (ours from an earlier start, or the machine's)
  fi
  if [ ! -s /etc/munge/munge.key ]; then
    say "creating /etc/munge/munge.key"
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  fi
  chown munge:munge /etc/munge/munge.key /etc/munge
  chmod 0400 /etc/munge/munge.key
  mkdir -p /run/munge /var/lib/munge /var/log/munge
  chown munge:munge /run/munge /var/lib/munge /var/log/munge
  runuser -u munge -- /usr/sbin/munged 9>&-  # the lock is not for the daemons to hold
  for _ in $(seq 50); do
    if alive munged /run/munge/munged.pid; then break; fi
    sleep 0.2
  done
  alive munged /run/munge/munged.pid || die "munged did not start (see /var/log/munge/munged.log)"
  started munged /run/munge/munged.pid
}

start_daemon() {  # start_daemon NAME ARGS...
  local name=$1
  shift
  if alive "$name" "$STATE/$name.pid"; then
    return
  fi
  "/usr/sbin/$name" "$@" 9>&- || die "$name did not start (see $STATE/$name.log)"
  for _ in $(seq 50); do
    if alive "$name" "$STATE/$name.pid"; then break; fi
    sleep 0.2
  done
  alive "$name" "$STATE/$name.pid" || die "$name did not start (see $STATE/$name.log)"
  started "$name" "$STATE/$name.pid"
}

wait_idle() {
  local state=""
  for i in $(seq 90); do
    state=$(timeout 10 sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n 1 || true)
    case "$state" in
      idle|mixed|allocated) say "node $NODE $state ($(sinfo --version))"; return ;;
      down*|drain*|fail*)  # e.g. left down by an earlier run: give it back to the scheduler
        scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 1
    [ "$i" = 90 ] || continue
  done
  die "node $NODE is not idle after 90 s (sinfo: '${state}'); logs: $STATE/slurmctld.log," \
      "$STATE/slurmd.log"
}

start() {
  mkdir -p "$STATE"
  exec 9> "$STATE/lock"
  flock -w 300 9 || die "another slurm.sh holds $STATE/lock"
  install_packages
  if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    answers && { say "a SLURM already answers ($CONF): using it"; return; }
    die "$CONF exists and was not written by this script, and no controller answers;" \
        "start that cluster, or move $CONF away to let this script write its own"
  fi
  write_conf
  start_munge
  start_daemon slurmctld
  start_daemon slurmd -N "$NODE"
  wait_idle
}

stop_pid() {  # stop_pid NAME PIDFILE
  local pid
  alive "$1" "$2" || return 0
  pid=$(cat "$2")
  kill "$pid"
  for _ in $(seq 100); do
    [ -d "/proc/$pid" ] || return 0
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
}

stop() {
  [ -f "$STARTED" ] || { say "nothing started by this script"; return; }
  exec 9> "$STATE/lock"
  flock -w 300 9 || die "another slurm.sh holds $STATE/lock"
  if grep -q '^slurmctld ' "$STARTED" && answers; then
    # the cluster is ours: its jobs (the tests') end with it, not as orphans on the machine
    squeue -h -o %A | xargs -r scancel 2>/dev/null || true
    for _ in $(seq 30); do
      [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break
      sleep 1
    done
  fi
  # the reverse order of start
  tac "$STARTED" | while read -r name pidfile; do
    stop_pid "$name" "$pidfile"
    say "stopped $name"
  done
  rm -f "$STARTED"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) die "usage: bash scripts/ci/slurm.sh start|stop" ;;
esac
