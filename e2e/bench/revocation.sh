#!/usr/bin/env bash
# Revocation latency inside one data plane (issue 5): from `POST /v3/session-blacklist` to the SSE
# client of the revoked session reading the end of its stream, p50/p99 over 100 revocations, one
# at a time, while 1,000 (then 10,000) SSE connections of other sessions stay open (see
# e2e/src/bin/rig-bench/revocation.rs for the method).
#
#   bash e2e/bench/revocation.sh [--background 1000,10000] [--revocations 100] [--warmup 5]
#                                [--write true]
#
# Numbers, not tests: nothing here runs in `cargo test` or e2e/test.sh. Builds the data plane and
# rig-bench in release, runs `rig-bench revocation` (a fresh release data plane on 127.0.0.1, no
# Kafka), and replaces its own section of e2e/bench/results.md (between the `revocation.sh`
# markers; appended when absent). About a minute.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root="$PWD"
out="$root/e2e/bench/results.md"

write=true
args=(--background 1000,10000)
while [ $# -gt 0 ]; do
  case "$1" in
    --write) write="$2" ;;
    --background|--revocations|--warmup|--validity) args+=("$1" "$2") ;;
    *) echo "revocation.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done
log() { echo "[revocation-bench] $*" >&2; }
# busy, replace_section
. "$root/e2e/bench/section.sh"

# The background connections are file descriptors in the data plane and in rig-bench.
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

build=(cargo build --release -p rig-dataplane -p rig-e2e --bin rig-dataplane --bin rig-bench)
log "${build[*]}"
"${build[@]}"
target="${CARGO_TARGET_DIR:-$root/target}/release"
export RIG_DATAPLANE_BIN="$target/rig-dataplane"

started="$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
busy_before="$(busy)"
table="$("$target/rig-bench" revocation "${args[@]}")"
busy_after="$(busy)"

section="$(
  echo "<!-- revocation.sh: begin -->"
  echo "## Revocation latency inside one process"
  echo
  echo "Run: $started, commit \`$(git rev-parse --short HEAD)\`$(git diff --quiet HEAD -- dataplane || echo ' (with uncommitted data-plane changes)')."
  echo "Machine: $(nproc) cores, Linux $(uname -r). Other work on the machine: before the run $busy_before;"
  echo "after it $busy_after. The data plane (release, \`RUST_LOG=warn\`) and the client share these cores."
  echo
  echo '```'
  echo "bash e2e/bench/revocation.sh ${args[*]}"
  echo "# which runs:"
  echo "ulimit -n $(ulimit -n)"
  echo "${build[*]}"
  echo "RIG_DATAPLANE_BIN=target/release/rig-dataplane target/release/rig-bench revocation ${args[*]}"
  echo '```'
  echo
  printf '%s\n' "$table"
  echo "<!-- revocation.sh: end -->"
)"
printf '%s\n' "$section"
if [ "$write" = true ]; then
  replace_section revocation.sh "$out" "$section"
  log "wrote the section to $out"
fi
