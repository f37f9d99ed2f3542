#!/usr/bin/env bash
# A Docker engine for the kind path, only when none answers.
#
#   bash e2e/kind/engine.sh start   nothing if `docker info` answers; else start Debian's containerd
#                                   and dockerd (installing docker.io when missing), remembering
#                                   their pids and the host settings dockerd changes
#   bash e2e/kind/engine.sh stop    stop exactly what `start` started (by pid) and restore
#                                   net.ipv4.ip_forward and the iptables FORWARD policy
#
# A machine whose capability bounding set lacks CAP_SYS_RESOURCE (some VMs) cannot run privileged
# containers (kind's node is one) with plain runc: "unable to apply caps". dockerd then uses
# runc-capfix (runc with CAP_SYS_RESOURCE taken out of the container's capability sets); on other
# machines plain runc runs.
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Outside $STATE: down.sh removes that, the engine may outlive a cluster.
ENGINE="$RIG_REPO/e2e/.run/docker-engine"
# Images and build cache of an engine we start live with the other caches.
DOCKER_ROOT="$RIG_CACHE/docker"
mkdir -p "$ENGINE"

engine_answers() { "$DOCKER" info >/dev/null 2>&1; }

install_packages() {
  local missing=() p
  for p in dockerd:docker.io containerd:containerd runc:runc iptables:iptables; do
    command -v "${p%%:*}" >/dev/null 2>&1 || missing+=("${p#*:}")
  done
  [ -d /usr/lib/cni ] || missing+=(containernetworking-plugins)
  [ "${#missing[@]}" -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "engine" "no Docker engine and no apt-get to install ${missing[*]}"
  log "installing ${missing[*]} (Debian packages)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >"$ENGINE/apt.log" 2>&1 ||
    die "engine" "apt-get install ${missing[*]} failed; see $ENGINE/apt.log"
}

# running PIDFILE: the pid in PIDFILE is alive.
running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

cmd_start() {
  if engine_answers; then
    log "a Docker engine answers: using it"
    return 0
  fi
  [ "$(id -u)" -eq 0 ] || die "engine" "no Docker engine answers and starting one needs root"
  install_packages
  # What dockerd changes on the host, to put back on stop (only when we start it).
  if [ ! -f "$ENGINE/saved" ]; then
    printf 'ip_forward=%s\n' "$(cat /proc/sys/net/ipv4/ip_forward)" >"$ENGINE/saved.tmp"
    iptables-save >"$ENGINE/iptables.save" 2>/dev/null || true
    ip6tables-save >"$ENGINE/ip6tables.save" 2>/dev/null || true
    mv "$ENGINE/saved.tmp" "$ENGINE/saved"
  fi
  if ! running "$ENGINE/containerd.pid"; then
    log "starting containerd"
    containerd --root "$ENGINE/containerd-root" --state "$ENGINE/containerd-state" \
      --address "$ENGINE/containerd.sock" >"$ENGINE/containerd.log" 2>&1 &
    echo "$!" >"$ENGINE/containerd.pid"
    wait_until "containerd" 30 test -S "$ENGINE/containerd.sock"
  fi
  local runtime=()
  if ! has_cap_sys_resource; then
    log "no CAP_SYS_RESOURCE in the bounding set: containers run through runc-capfix"
    install -m 0755 "$KIND_SCRIPTS/offline/runc-capfix" "$ENGINE/runc-capfix"
    runtime=(--add-runtime "capfix=$ENGINE/runc-capfix" --default-runtime capfix)
  fi
  if ! running "$ENGINE/dockerd.pid"; then
    log "starting dockerd"
    mkdir -p "$DOCKER_ROOT"
    dockerd --containerd="$ENGINE/containerd.sock" --pidfile "$ENGINE/dockerd.pidfile" \
      --data-root "$DOCKER_ROOT" --exec-root "$ENGINE/exec" \
      ${runtime[@]+"${runtime[@]}"} >"$ENGINE/dockerd.log" 2>&1 &
    echo "$!" >"$ENGINE/dockerd.pid"
  fi
  wait_until "dockerd (log: $ENGINE/dockerd.log)" 60 engine_answers
  log "Docker engine up (ours: stop with bash e2e/kind/engine.sh stop)"
}

# stop_pid NAME: TERM the process in $ENGINE/NAME.pid, wait for it, KILL after 30 s.
stop_pid() {
  local file="$ENGINE/$1.pid" pid
  [ -s "$file" ] || return 0
  pid="$(cat "$file")"
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping $1 (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.5; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

# restore_tables CMD SAVED: put CMD's tables (iptables or ip6tables) back to what CMD-save wrote
# to SAVED before dockerd started. iptables-restore replaces the tables the file names; a table
# the file does not name was empty then (dockerd created its chains and rules there): emptied,
# builtin chains back to ACCEPT.
restore_tables() {
  local cmd="$1" saved="$2" table chain
  command -v "$cmd" >/dev/null 2>&1 || return 0
  for table in filter nat mangle raw; do
    grep -q "^\*$table\$" "$saved" 2>/dev/null && continue
    "$cmd" -t "$table" -F 2>/dev/null || continue
    "$cmd" -t "$table" -X 2>/dev/null || true
    for chain in $("$cmd" -t "$table" -S 2>/dev/null | awk '$1 == "-P" {print $2}'); do
      "$cmd" -t "$table" -P "$chain" ACCEPT 2>/dev/null || true
    done
  done
  if [ -s "$saved" ]; then "$cmd-restore" <"$saved" 2>/dev/null || log "$cmd-restore of $saved failed"; fi
}

cmd_stop() {
  stop_pid dockerd
  stop_pid containerd
  # containerd-shim processes of our containerd outlive it when containers were left running.
  pkill -f "containerd-shim.*$ENGINE/containerd.sock" 2>/dev/null || true
  # dockerd leaves its bridge and its iptables chains behind: put the host back as it was.
  ip link delete docker0 2>/dev/null || true
  if [ -f "$ENGINE/saved" ]; then
    local ip_forward
    ip_forward="$(sed -n 's/^ip_forward=//p' "$ENGINE/saved")"
    restore_tables iptables "$ENGINE/iptables.save"
    restore_tables ip6tables "$ENGINE/ip6tables.save"
    [ -n "$ip_forward" ] && echo "$ip_forward" >/proc/sys/net/ipv4/ip_forward
    rm -f "$ENGINE/saved" "$ENGINE/iptables.save" "$ENGINE/ip6tables.save"
    log "restored ip_forward=$ip_forward and the iptables rules as they were before dockerd"
  fi
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
