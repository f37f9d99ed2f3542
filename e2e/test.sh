#!/usr/bin/env bash
# The one test command: everything CI runs, in order. From a fresh clone on a fresh machine:
#   bash e2e/test.sh
# 1. formatting and clippy; 2. unit tests; 3. CRD drift check; 4. the real environment up
# (Kafka, kube-apiserver + etcd, helm; built and cached under ~/.cache/rig-k8s on the first run);
# 5. integration and e2e tests; 6. the environment down, also when something failed; 7. the chart
# on a real kind cluster (e2e/kind: up, scenarios, down; RIG_KIND=0 skips it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==== %s ====\n' "$*"; }
fail() { printf '\n[test] FAILED step "%s"\n' "$1" >&2; exit 1; }

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# One shared target directory across clones (CI builds a clean clone): dependencies build once.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${RIG_CACHE:-$HOME/.cache/rig-k8s}/cargo-target}"
# A clean clone never reuses incremental state, and it costs gigabytes in the cache.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# Tests run on 2 cores next to a JVM and an apiserver: keep the test binaries' parallelism modest.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-2}"

step "format"
cargo fmt --all -- --check || fail "cargo fmt --check (run cargo fmt --all)"

step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings || fail "clippy"

step "unit tests"
cargo test --workspace --locked --exclude rig-e2e || fail "unit tests"
cargo test --locked -p rig-e2e --lib || fail "e2e support unit tests"

step "CRD drift"
cargo run --locked -q -p rig-operator -- crdgen --check || fail "CRD drift"

step "environment up"
cleanup() {
  step "environment down"
  bash e2e/env/down.sh
  if [ "${KIND_STARTED:-0}" = 1 ]; then
    step "kind down"
    bash e2e/kind/down.sh
  fi
}
trap cleanup EXIT
bash e2e/env/up.sh || fail "environment up"

step "integration and e2e tests"
# The e2e tests start the real rig-dataplane and rig-operator binaries.
cargo build --locked -p rig-dataplane || fail "build rig-dataplane"
cargo build --locked -p rig-operator || fail "build rig-operator"
cargo test --locked --no-fail-fast -p rig-e2e --tests -- --test-threads="$RUST_TEST_THREADS" || fail "e2e tests"

bash e2e/env/down.sh

if [ "${RIG_KIND:-1}" = 1 ]; then
  step "kind: the chart on a real cluster"
  KIND_STARTED=1
  t0=$SECONDS
  bash e2e/kind/up.sh || fail "kind up"
  bash e2e/kind/test.sh || fail "kind scenarios"
  bash e2e/kind/down.sh || fail "kind down"
  KIND_STARTED=0
  printf '[test] kind stage: %ss\n' "$((SECONDS - t0))"
fi

step "all green"
