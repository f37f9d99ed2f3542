#!/usr/bin/env bash
# Hostile and unlucky clients (issue 12), measured against the release data plane: RSS with 1,000
# connections resuming from the oldest position and never reading (< 2x the replay window's own
# size), RSS after a 30 s broker outage with 1,000 resuming readers (within 10 % of before), and
# 5,000 idle sockets closed within RIG_HEAD_TIMEOUT_MS while a healthy client's p99 stays under
# 50 ms (see e2e/src/bin/rig-bench/hostile.rs for the method).
#
#   bash e2e/bench/hostile.sh [--events 10000] [--resumers 1000] [--readers 1000] [--rate 200]
#                             [--idle 5000] [--write true]
#
# Numbers, not tests: nothing here runs in `cargo test` or e2e/test.sh. Builds the data plane and
# rig-bench in release, starts a private Kafka broker (its own run directory, stopped and started
# for the outage, deleted at the end) and replaces its own section of e2e/bench/results.md
# (between the `hostile.sh` markers; appended when absent). About 4 minutes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root="$PWD"
out="$root/e2e/bench/results.md"

write=true
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --write) write="$2" ;;
    --events|--resumers|--readers|--rate|--idle) args+=("$1" "$2") ;;
    *) echo "hostile.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done
log() { echo "[hostile-bench] $*" >&2; }
# busy, replace_section
. "$root/e2e/bench/section.sh"

ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

build=(cargo build --release -p rig-dataplane -p rig-e2e --bin rig-dataplane --bin rig-bench)
log "${build[*]}"
"${build[@]}"
target="${CARGO_TARGET_DIR:-$root/target}/release"
export RIG_DATAPLANE_BIN="$target/rig-dataplane"

# A broker of its own: the outage stops it, so it must not be the test environment's.
run="$(mktemp -d /tmp/rig-hostile-kafka.XXXXXX)"
cleanup() { RIG_RUN="$run" bash e2e/env/kafka.sh down >/dev/null 2>&1 || true; rm -rf "$run"; }
trap cleanup EXIT
log "starting a private Kafka broker in $run"
RIG_RUN="$run" bash e2e/env/kafka.sh up >&2

started="$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
busy_before="$(busy)"
table="$("$target/rig-bench" hostile "${args[@]}" --kafka-run "$run" --kafka-sh "$root/e2e/env/kafka.sh")"
busy_after="$(busy)"

section="$(
  echo "<!-- hostile.sh: begin -->"
  echo "## Hostile and unlucky clients"
  echo
  echo "Run: $started, commit \`$(git rev-parse --short HEAD)\`$(git diff --quiet HEAD -- dataplane || echo ' (with uncommitted data-plane changes)')."
  echo "Machine: $(nproc) cores, Linux $(uname -r). Other work on the machine: before the run $busy_before;"
  echo "after it $busy_after. The data plane (release, \`RUST_LOG=warn\`), the broker and the clients share these cores."
  echo
  echo '```'
  echo "bash e2e/bench/hostile.sh ${args[*]}"
  echo '```'
  echo
  printf '%s\n' "$table"
  echo "<!-- hostile.sh: end -->"
)"
printf '%s\n' "$section"
if [ "$write" = true ]; then
  replace_section hostile.sh "$out" "$section"
  log "wrote the section to $out"
fi
