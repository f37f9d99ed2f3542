#!/usr/bin/env bash
# Shared helpers for the test-environment scripts (sourced, not executed).
#
# Layout:
#   RIG_CACHE   ~/.cache/rig-k8s            downloads and builds, keyed by version (survives clones)
#   RIG_RUN     <repo>/e2e/.run             pids, logs, data dirs and the env file of the running env
#   RIG_ENV     $RIG_RUN/env                KEY=VALUE lines that tests read (see e2e/README.md)
set -euo pipefail

RIG_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RIG_CACHE="${RIG_CACHE:-$HOME/.cache/rig-k8s}"
RIG_RUN="${RIG_RUN:-$RIG_REPO/e2e/.run}"
RIG_ENV="$RIG_RUN/env"
mkdir -p "$RIG_CACHE" "$RIG_RUN"

# Go builds: module and build caches inside our cache folder, so deleting it rebuilds everything.
export GOMODCACHE="${GOMODCACHE:-$RIG_CACHE/go/mod}"
export GOCACHE="${GOCACHE:-$RIG_CACHE/go/build}"
export GOFLAGS="${GOFLAGS:--mod=mod}"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

log() { printf '[env %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# die STEP MESSAGE: report which step failed and why, then exit non-zero.
die() { local step="$1"; shift; printf '[env] FAILED step "%s": %s\n' "$step" "$*" >&2; exit 1; }

# free_port: a TCP port on 127.0.0.1 that nothing listens on right now.
free_port() {
  python3 - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

# env_set KEY VALUE: write or replace one line of the env file. Locked: up.sh starts Kafka and the
# apiserver in parallel, and two unlocked read-modify-writes would drop each other's lines.
env_set() {
  local key="$1" value="$2" tmp
  (
    flock -w 30 8 || die "env_set" "cannot lock $RIG_RUN/env.lock"
    touch "$RIG_ENV"
    tmp="$(mktemp "$RIG_RUN/env.XXXXXX")"
    grep -v "^${key}=" "$RIG_ENV" >"$tmp" || true
    printf '%s=%s\n' "$key" "$value" >>"$tmp"
    mv "$tmp" "$RIG_ENV"
  ) 8>"$RIG_RUN/env.lock"
}

# env_unset KEY: drop one line of the env file (same lock as env_set).
env_unset() {
  local key="$1" tmp
  [ -f "$RIG_ENV" ] || return 0
  (
    flock -w 30 8 || die "env_unset" "cannot lock $RIG_RUN/env.lock"
    tmp="$(mktemp "$RIG_RUN/env.XXXXXX")"
    grep -v "^${key}=" "$RIG_ENV" >"$tmp" || true
    mv "$tmp" "$RIG_ENV"
  ) 8>"$RIG_RUN/env.lock"
}

# env_get KEY: print a value from the env file (empty when absent).
env_get() { [ -f "$RIG_ENV" ] && sed -n "s/^$1=//p" "$RIG_ENV" | tail -n 1 || true; }

# wait_until STEP TIMEOUT_SECONDS COMMAND...: poll COMMAND until it succeeds or the deadline passes.
wait_until() {
  local step="$1" timeout="$2"; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then die "$step" "not ready after ${timeout}s (command: $*)"; fi
    sleep 0.2
  done
}

# pid_alive NAME: true when the process recorded in $RIG_RUN/NAME.pid runs.
pid_alive() {
  local f="$RIG_RUN/$1.pid"
  [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null
}

# start_bg NAME COMMAND...: start a background process, log to $RIG_RUN/NAME.log, record its pid.
start_bg() {
  local name="$1"; shift
  # setsid: own process group, so stop_bg can end the process and its children together.
  setsid "$@" >"$RIG_RUN/$name.log" 2>&1 < /dev/null &
  echo $! >"$RIG_RUN/$name.pid"
}

# stop_bg NAME: stop only the process this environment started (by pid), then forget it.
stop_bg() {
  local name="$1" f="$RIG_RUN/$1.pid" pid
  [ -f "$f" ] || return 0
  pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 20))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}
