#!/usr/bin/env bash
# A one-node Slurm cluster with accounting, on loopback, for evolve's tests and demo.
#
#   bash tools/slurm-local.sh start    # install Debian's packages if missing, start, wait for idle
#   bash tools/slurm-local.sh status   # daemons and node state
#   bash tools/slurm-local.sh stop     # cancel every job, then stop the daemons
#
# Needs root and Debian/Ubuntu (CI and containers). No systemd is assumed: the daemons are
# started directly. Everything the cluster writes lives in $EVOLVE_SLURM_DIR (default
# /tmp/evolve-slurm); /etc/slurm/{slurm,slurmdbd}.conf become symlinks into it so that sbatch,
# sacct and squeue find the cluster without SLURM_CONF. `start` on a running cluster is a no-op.
#
# Settings:  EVOLVE_SLURM_DIR   state folder            (default /tmp/evolve-slurm)
#            EVOLVE_SLURM_CPUS  CPUs the node claims    (default 8: four 2-CPU tasks at once)
#            EVOLVE_SLURM_MEM_MB memory the node claims (default 16000)
#            EVOLVE_SLURM_GPUS  GPUs the node claims   (default 4; count-only, no devices: enough
#                               for --gpus-per-task to be scheduled and accounted, not to compute)
set -euo pipefail

DIR=${EVOLVE_SLURM_DIR:-/tmp/evolve-slurm}
CPUS=${EVOLVE_SLURM_CPUS:-8}
MEM_MB=${EVOLVE_SLURM_MEM_MB:-16000}
GPUS=${EVOLVE_SLURM_GPUS:-4}
CLUSTER=evolve
ACCOUNT=evolve
DB_PORT=${EVOLVE_SLURM_DB_PORT:-33061}
NODE=$(hostname -s)
ETC=/etc/slurm
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)

log() { echo "slurm-local: $*" >&2; }
die() { log "error: $*"; exit 1; }

# alive PIDFILE: true when the pid recorded in PIDFILE is a live process (zombies count as dead).
alive() {
  local pid
  [ -s "$1" ] || return 1
  pid=$(cat "$1")
  [ -d "/proc/$pid" ] || return 1
  ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2; shift 2
  local end=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$end" ] || die "timed out after ${limit}s waiting for $what (logs: $DIR/log)"
    sleep 0.5
  done
}

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return
  [ "$(id -u)" -eq 0 ] || die "packages missing (${missing[*]}) and not root: install them or run as root"
  command -v apt-get >/dev/null || die "packages missing (${missing[*]}) and no apt-get"
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

link_config() {  # refuse to replace a real site config: this script is for throwaway machines
  local name=$1 target="$DIR/etc/$1"
  mkdir -p "$ETC"
  if [ -e "$ETC/$name" ] && [ "$(readlink "$ETC/$name" || true)" != "$target" ]; then
    die "$ETC/$name exists and is not ours; refusing to replace a real Slurm configuration"
  fi
  ln -sfn "$target" "$ETC/$name"
}

write_configs() {
  mkdir -p "$DIR"/{etc,log,ctld,spool,mysql,run}
  [ -s "$DIR/etc/db.pass" ] || (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$DIR/etc/db.pass")
  local pass; pass=$(cat "$DIR/etc/db.pass")
  cat >"$DIR/etc/slurm.conf" <<EOF
# Written by tools/slurm-local.sh; a test cluster on loopback, not a template for real sites.
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# Credentials expire after 10 s instead of 120, so a requeued job does not wait in BeginTime.
AuthInfo=cred_expire=10
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# No cgroups in containers: track processes through /proc, bind no tasks.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
# CR_Core, not CR_Core_Memory: with memory as a resource and no DefMemPerCPU each job takes the
# node's whole memory and the array's tasks run one at a time.
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
ReturnToService=2
MailProg=/bin/true
KillWait=5
MinJobAge=300
JobRequeue=1
MpiDefault=none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
# Unknown accounts are refused at submission, as on real clusters.
AccountingStorageEnforce=associations
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
# The node may claim more CPUs and memory than the machine has, so arrays run in parallel.
SlurmdParameters=config_overrides
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB $( [ "$GPUS" -gt 0 ] && echo "Gres=gpu:$GPUS") State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  (umask 077; cat >"$DIR/etc/slurmdbd.conf" <<EOF
# Written by tools/slurm-local.sh.
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
AuthType=auth/munge
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$pass
StorageLoc=slurm_acct_db
EOF
  )
  chmod 600 "$DIR/etc/slurmdbd.conf"
  # Fake GPUs: character devices aliasing /dev/null (slurmd wants device files; a count alone
  # registers 0 GPUs). Jobs can ask for them and sacct accounts them; nothing computes on them.
  : >"$DIR/etc/gres.conf"
  if [ "$GPUS" -gt 0 ]; then
    mkdir -p "$DIR/dev"
    for ((i = 0; i < GPUS; i++)); do
      [ -e "$DIR/dev/gpu$i" ] || mknod "$DIR/dev/gpu$i" c 1 3 2>/dev/null || : >"$DIR/dev/gpu$i"
    done
    echo "NodeName=$NODE Name=gpu File=$DIR/dev/gpu[0-$((GPUS - 1))]" >"$DIR/etc/gres.conf"
  fi
  link_config slurm.conf
  link_config slurmdbd.conf
  link_config gres.conf
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return; fi
  if [ ! -s /etc/munge/munge.key ]; then
    if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key
    else dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; fi
    chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
  fi
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  log "starting munged"
  runuser -u munge -- /usr/sbin/munged
  wait_for 20 munged bash -c 'munge -n | unmunge'
}

mysql_root() { mariadb --no-defaults --socket="$DIR/run/mysql.sock" -uroot "$@"; }

start_mariadb() {
  if alive "$DIR/run/mysql.pid"; then return; fi
  if [ ! -d "$DIR/mysql/mysql" ]; then
    log "creating the accounting database in $DIR/mysql"
    mariadb-install-db --no-defaults --user=root --datadir="$DIR/mysql" \
      --auth-root-authentication-method=socket --skip-test-db >"$DIR/log/mariadb-install.log" 2>&1 \
      || die "mariadb-install-db failed; see $DIR/log/mariadb-install.log"
  fi
  log "starting mariadbd on 127.0.0.1:$DB_PORT"
  # --no-defaults: the system's /etc/mysql settings (socket, datadir) must not apply.
  setsid mariadbd --no-defaults --user=root --datadir="$DIR/mysql" --socket="$DIR/run/mysql.sock" \
    --port="$DB_PORT" --bind-address=127.0.0.1 --skip-name-resolve \
    --pid-file="$DIR/run/mysql.pid" --log-error="$DIR/log/mariadb.log" \
    </dev/null >/dev/null 2>&1 &
  wait_for 60 mariadbd mysql_root -e 'SELECT 1'
  local pass; pass=$(cat "$DIR/etc/db.pass")
  mysql_root -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$pass';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
}

start_slurmdbd() {
  if ! alive "$DIR/run/slurmdbd.pid"; then
    log "starting slurmdbd"
    slurmdbd
  fi
  wait_for 60 slurmdbd sacctmgr -n list cluster
  register_accounts
}

register_accounts() {
  # Registering is idempotent in effect: sacctmgr refuses duplicates with a message, not damage.
  if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
  fi
  if ! sacctmgr -n -P list account format=account | grep -qx "$ACCOUNT"; then
    sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description=evolve organization=evolve >/dev/null
  fi
  # An existing user root (created by the packages, or an older run of this script) may lack
  # the association with $ACCOUNT; `add user` adds just the association then.
  if ! sacctmgr -n -P show assoc user=root account="$ACCOUNT" format=account | grep -qx "$ACCOUNT"; then
    if sacctmgr -n -P list user format=user | grep -qx root; then
      sacctmgr -i add user root account="$ACCOUNT" >/dev/null
    else
      sacctmgr -i add user root account="$ACCOUNT" defaultaccount="$ACCOUNT" >/dev/null
    fi
  fi
}

node_state() { sinfo -h -n "$NODE" -o %T 2>/dev/null | head -1; }

start_slurm() {
  if ! alive "$DIR/run/slurmctld.pid"; then log "starting slurmctld"; slurmctld; fi
  wait_for 30 slurmctld scontrol ping
  if ! alive "$DIR/run/slurmd.pid"; then log "starting slurmd"; slurmd; fi
  local end=$((SECONDS + 60)) state
  while :; do
    state=$(node_state)
    case "$state" in
      idle|mixed|allocated|completing) break ;;
      down*|drain*) scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
    esac
    [ "$SECONDS" -lt "$end" ] || die "node $NODE is '$state', not idle, after 60s (logs: $DIR/log)"
    sleep 0.5
  done
}

cmd_start() {
  install_packages
  if [ -L "$ETC/slurm.conf" ] && alive "$DIR/run/slurmctld.pid" && alive "$DIR/run/slurmd.pid" \
     && alive "$DIR/run/slurmdbd.pid" && alive "$DIR/run/mysql.pid"; then
    case "$(node_state)" in
      idle|mixed|allocated|completing) register_accounts; log "already running"; return ;;
    esac
  fi
  write_configs
  start_munge
  start_mariadb
  start_slurmdbd
  start_slurm
  log "up: node $NODE is $(node_state); partition debug, account $ACCOUNT, state in $DIR"
}

stop_pid() {  # stop_pid PIDFILE NAME: TERM, wait, then KILL; only the pid this cluster recorded
  local f=$1 name=$2 pid
  alive "$f" || return 0
  pid=$(cat "$f" 2>/dev/null) || return 0  # the daemon may remove its pid file as it exits
  log "stopping $name ($pid)"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do alive "$f" || return 0; sleep 0.25; done
  kill -9 "$pid" 2>/dev/null || true
}

cmd_stop() {
  # Stopping slurmd leaves its jobs running, so every job is cancelled first.
  if command -v squeue >/dev/null && scontrol ping >/dev/null 2>&1; then
    local ids; ids=$(squeue -h -o %A 2>/dev/null || true)
    if [ -n "$ids" ]; then
      log "cancelling jobs: $(echo $ids)"
      # shellcheck disable=SC2086
      scancel $ids 2>/dev/null || true
      for _ in $(seq 1 60); do [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.5; done
    fi
  fi
  stop_pid "$DIR/run/slurmd.pid" slurmd
  stop_pid "$DIR/run/slurmctld.pid" slurmctld
  stop_pid "$DIR/run/slurmdbd.pid" slurmdbd
  stop_pid "$DIR/run/mysql.pid" mariadbd
  log "stopped (munged left running; state kept in $DIR)"
}

cmd_status() {
  local f
  for f in mysql slurmdbd slurmctld slurmd; do
    if alive "$DIR/run/$f.pid"; then echo "$f: running ($(cat "$DIR/run/$f.pid"))"; else echo "$f: stopped"; fi
  done
  if command -v sinfo >/dev/null && scontrol ping >/dev/null 2>&1; then sinfo; squeue; else echo "controller: down"; fi
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
