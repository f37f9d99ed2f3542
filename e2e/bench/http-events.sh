#!/usr/bin/env bash
# HTTP-published events through Kafka (issue 13), against two release data planes on the test
# broker: POST to one data plane -> Kafka -> SSE client on the other, p50/p99 at 1,000 events/s,
# beside events produced to Kafka directly in the same run; and accepted POSTs/s with the broker's
# acknowledgement from 64 keep-alive publishers (see e2e/src/bin/rig-bench/http_events.rs).
#
#   bash e2e/bench/http-events.sh [--rate 1000] [--duration 10] [--publishers 64] [--write true]
#
# Numbers, not tests: nothing here runs in `cargo test` or e2e/test.sh. Builds the data plane and
# rig-bench in release, starts the test Kafka if it is not running, and replaces its own section
# of e2e/bench/results.md (between the `http-events.sh` markers; appended when absent). About a
# minute.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root="$PWD"
out="$root/e2e/bench/results.md"

write=true
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --write) write="$2" ;;
    --rate|--duration|--publishers) args+=("$1" "$2") ;;
    *) echo "http-events.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done
log() { echo "[http-events-bench] $*" >&2; }
# busy, replace_section
. "$root/e2e/bench/section.sh"

build=(cargo build --release -p rig-dataplane -p rig-e2e --bin rig-dataplane --bin rig-bench)
log "${build[*]}"
"${build[@]}"
target="${CARGO_TARGET_DIR:-$root/target}/release"
export RIG_DATAPLANE_BIN="$target/rig-dataplane"

# The test Kafka (`kafka.sh up` is idempotent: a running broker is left alone).
env_file="${RIG_ENV_FILE:-$root/e2e/.run/env}"
brokers="$(sed -n 's/^KAFKA_BROKERS=//p' "$env_file" 2>/dev/null | tail -n1)"
first="${brokers%%,*}"
if [ -z "$brokers" ] || ! (exec 3<>"/dev/tcp/${first%:*}/${first##*:}") 2>/dev/null; then
  log "starting the test Kafka"
  bash e2e/env/kafka.sh up >&2
fi

started="$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
busy_before="$(busy)"
table="$("$target/rig-bench" http-events "${args[@]}")"
busy_after="$(busy)"

section="$(
  echo "<!-- http-events.sh: begin -->"
  echo "## HTTP-published events through Kafka"
  echo
  echo "Run: $started, commit \`$(git rev-parse --short HEAD)\`$(git diff --quiet HEAD -- dataplane || echo ' (with uncommitted data-plane changes)')."
  echo "Machine: $(nproc) cores, Linux $(uname -r). Other work on the machine: before the run $busy_before;"
  echo "after it $busy_after. The data planes (release, \`RUST_LOG=warn\`), the broker and the clients share these cores."
  echo
  echo '```'
  echo "bash e2e/bench/http-events.sh ${args[*]}"
  echo '```'
  echo
  printf '%s\n' "$table"
  echo "<!-- http-events.sh: end -->"
)"
printf '%s\n' "$section"
if [ "$write" = true ]; then
  replace_section http-events.sh "$out" "$section"
  log "wrote the section to $out"
fi
