#!/usr/bin/env bash
# A one-node SLURM on this machine, for tests/test_slurm.py.
#
#   tests/slurm/local_slurm.sh start DIR   install slurm-wlm + munge if missing (Debian, as root), write
#                                          DIR/slurm.conf for this host, start munged, slurmctld and slurmd;
#                                          prints "SLURM_CONF=DIR/slurm.conf" when the node is idle
#   tests/slurm/local_slurm.sh stop DIR    stop the daemons started by `start` (by their pid files in DIR)
#
# Exit 77: cannot run here (not root, no apt/package access, daemons do not come up) - the test is skipped
# with the reason printed on stderr. Outside DIR: the packages, munge's key, /run/munge, and a link
# /etc/slurm/slurm.conf -> DIR/slurm.conf (removed by stop; never over a real configuration).
set -euo pipefail

cmd=${1:?start|stop}
dir=$(realpath -m "${2:?state folder}")
conf="$dir/slurm.conf"

skip() { echo "local SLURM unavailable: $*" >&2; exit 77; }

stop() {
  for name in slurmd slurmctld munged; do
    pidfile="$dir/$name.pid"
    if [[ -s "$pidfile" ]]; then
      pid=$(cat "$pidfile")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$pidfile"
    fi
  done
}

if [[ "$cmd" == stop ]]; then
  stop
  if [[ -s "$dir/etc_link" ]]; then
    link=$(cat "$dir/etc_link")
    [[ -L "$link" && $(readlink "$link") == "$conf" ]] && rm -f "$link"
    rm -f "$dir/etc_link"
  fi
  exit 0
fi
[[ "$cmd" == start ]] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

[[ $(id -u) -eq 0 ]] || skip "needs root to install and run slurmctld/slurmd (running as $(id -un))"
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  command -v apt-get >/dev/null || skip "slurm-wlm is not installed and there is no apt-get"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -q && apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge; } \
    >"$dir.apt.log" 2>&1 || skip "apt-get install slurm-wlm munge failed (no package access?): see $dir.apt.log"
fi

mkdir -p "$dir"/{state,spool,munge}
chmod 755 "$dir"

# munge: the package's key if there is one, else a new one; the daemon's socket and pid in DIR.
key=/etc/munge/munge.key
if [[ ! -s "$key" ]]; then
  mkdir -p /etc/munge
  dd if=/dev/urandom of="$key" bs=1 count=1024 status=none
fi
chown munge:munge "$key" 2>/dev/null || true
chmod 400 "$key"
chown -R munge:munge "$dir/munge" 2>/dev/null || true
# The default socket (Slurm's munge plugins look there); /run/munge is made by systemd on a normal host.
mkdir -p /run/munge && chown munge:munge /run/munge 2>/dev/null || true
if ! runuser -u munge -- munged --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
     --seed-file="$dir/munge/munged.seed" 2>"$dir/munged.err"; then
  munged --force --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
    --seed-file="$dir/munge/munged.seed" 2>>"$dir/munged.err" || skip "munged does not start: $(cat "$dir/munged.err")"
fi
for _ in $(seq 50); do [[ -s "$dir/munge/munged.pid" ]] && break; sleep 0.1; done
cp "$dir/munge/munged.pid" "$dir/munged.pid"

host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
cat >"$conf" <<EOF
ClusterName=medsci-test
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=600
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

# Job steps (srun inside the batch job) read the default path: the plugin does not pass SLURM_CONF on. Link it
# there unless a real configuration lives there.
etc=/etc/slurm/slurm.conf
if [[ -e "$etc" && ! -L "$etc" ]]; then
  skip "$etc exists (a real SLURM configuration); not replacing it"
fi
mkdir -p /etc/slurm
ln -sfn "$conf" "$etc"
echo "$etc" >"$dir/etc_link"

export SLURM_CONF="$conf"
slurmctld -f "$conf" >"$dir/slurmctld.out" 2>&1 || { stop; skip "slurmctld does not start: $(tail -3 "$dir/slurmctld.log" 2>/dev/null)"; }
slurmd -f "$conf" >"$dir/slurmd.out" 2>&1 || { stop; skip "slurmd does not start: $(tail -3 "$dir/slurmd.log" 2>/dev/null)"; }
for _ in $(seq 120); do
  if sinfo -h -N -o '%t' 2>/dev/null | grep -qx 'idle'; then
    echo "SLURM_CONF=$conf"
    exit 0
  fi
  sleep 0.5
done
state=$(sinfo -h -N -o '%t %E' 2>&1 || true)
stop
skip "the node did not become idle within 60 s (sinfo: $state; see $dir/slurmctld.log, $dir/slurmd.log)"
