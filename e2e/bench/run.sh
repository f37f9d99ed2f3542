#!/usr/bin/env bash
# Benchmarks of the data plane against DESIGN §7: process memory per idle SSE and WebSocket
# connection, frames delivered per second and Kafka → client latency, each with 10,000 connections
# on loopback. Numbers, not tests: nothing here runs in `cargo test` or e2e/test.sh.
#
#   bash e2e/bench/run.sh [rig-bench run options, e.g. --connections 2000 --duration 5]
#
# Builds the data plane and the benchmark in release, starts the test Kafka if it is not running,
# runs `rig-bench run` (which starts a fresh release data plane per transport on 127.0.0.1 and its
# client processes on 127.0.0.10, .11, …) and writes the results table to e2e/bench/results.md with
# the date, the machine and the commands. About 4 minutes; every scenario is bounded. Clients and
# the data plane share the machine's cores, so run it once on a machine that is otherwise quiet.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root="$PWD"
out="$root/e2e/bench/results.md"

# Every connection is a file descriptor in the data plane and in a client process; children
# inherit the limit (10,000 connections need ~10,100 in the data plane).
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "[bench] open files limit: $(ulimit -n)" >&2

build=(cargo build --release -p rig-dataplane -p rig-e2e --bin rig-dataplane --bin rig-bench)
echo "[bench] ${build[*]}" >&2
"${build[@]}"
target="${CARGO_TARGET_DIR:-$root/target}/release"
export RIG_DATAPLANE_BIN="$target/rig-dataplane"

# The test Kafka (`kafka.sh up` is idempotent: a running broker is left alone). RIG_ENV_FILE points
# the benchmark at another checkout's environment.
env_file="${RIG_ENV_FILE:-$root/e2e/.run/env}"
brokers="$(sed -n 's/^KAFKA_BROKERS=//p' "$env_file" 2>/dev/null | tail -n1)"
first="${brokers%%,*}"
if [ -z "$brokers" ] || ! (exec 3<>"/dev/tcp/${first%:*}/${first##*:}") 2>/dev/null; then
  echo "[bench] starting the test Kafka" >&2
  bash e2e/env/kafka.sh up
fi

bench=("$target/rig-bench" run "$@")
echo "[bench] ulimit -n $(ulimit -n); RIG_DATAPLANE_BIN=$RIG_DATAPLANE_BIN ${bench[*]}" >&2
# Other work on the machine shows in the results: load average and CPU pressure (share of time
# runnable tasks waited for a core) before and after.
busy() { echo "load average $(cut -d' ' -f1-3 /proc/loadavg), CPU pressure $(sed -n 's/^some //p' /proc/pressure/cpu 2>/dev/null || echo n/a)"; }
started="$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
busy_before="$(busy)"
table="$("${bench[@]}")"
busy_after="$(busy)"
printf '%s\n' "$table"

# The other benchmark scripts (proxy.sh, operator.sh, revocation.sh) keep their own sections
# between `<!-- name: begin -->` / `<!-- name: end -->` markers: carry them over.
kept="$(sed -n '/^<!-- [a-z-]*\.sh: begin -->$/,$p' "$out" 2>/dev/null || true)"
{
  echo "# Data-plane benchmarks"
  echo
  echo "Run: $started, commit \`$(git rev-parse --short HEAD)\`$(git diff --quiet HEAD -- dataplane || echo ' (with uncommitted data-plane changes)')."
  echo
  echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), $(free -g | awk '/^Mem:/{print $2}') GiB memory, Linux $(uname -r)."
  echo "Other work on the machine: before the run $busy_before; after it $busy_after."
  echo "The data plane (release, \`RUST_LOG=warn\`, default queue of 256 frames, replay window on),"
  echo "the client processes, the publishers and the Kafka broker all share these cores on loopback."
  echo
  echo "Commands:"
  echo
  echo '```'
  echo "bash e2e/bench/run.sh $*"
  echo "# which runs:"
  echo "ulimit -n $(ulimit -n)"
  echo "${build[*]}"
  echo "RIG_DATAPLANE_BIN=target/release/rig-dataplane target/release/rig-bench run $*"
  echo '```'
  echo
  echo "$table"
  if [ -n "$kept" ]; then
    echo
    echo "$kept"
  fi
} >"$out"
echo "[bench] wrote $out" >&2
