#!/usr/bin/env bash
# shellcheck disable=SC2034  # the settings are used by the scripts that source this file
# Shared settings and helpers of the kind scripts (sourced, not executed).
#
# Everything the scripts write lives in e2e/.run/kind/ (kubeconfig, env file for the e2e tests,
# logs); the user's ~/.kube/config is not touched. Settings (environment variables):
#   RIG_KIND_CLUSTER     kind cluster name                          (rig)
#   RIG_KIND_NAMESPACE   namespace of the rig release               (rig-system)
#   RIG_KIND_KAFKA_PORT  host port of Kafka's external listener     (30092, on 127.0.0.1)
#   RIG_KIND_KAFKA_IMAGE the Kafka image                            (apache/kafka:4.1.1)
#   RIG_KIND_NODE_IMAGE  kind node image (Kubernetes >= 1.30)       (kind's default)
#   HELM, KUBECTL, KIND, DOCKER  the tools                          (from PATH)
set -euo pipefail

KIND_SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RIG_REPO="$(cd "$KIND_SCRIPTS/../.." && pwd)"
CLUSTER="${RIG_KIND_CLUSTER:-rig}"
NAMESPACE="${RIG_KIND_NAMESPACE:-rig-system}"
KAFKA_NAMESPACE="rig-kafka"
KAFKA_IMAGE="${RIG_KIND_KAFKA_IMAGE:-apache/kafka:4.1.1}"
KAFKA_HOST_PORT="${RIG_KIND_KAFKA_PORT:-30092}"
# Inside the cluster (data planes) and from the host (e2e tests started on this machine).
KAFKA_INTERNAL="kafka.$KAFKA_NAMESPACE.svc.cluster.local:9092"
KAFKA_EXTERNAL="127.0.0.1:$KAFKA_HOST_PORT"
# The inbound Service's node port (e2e/kind/values.yaml), from the host.
INBOUND_HOST_PORT="${RIG_KIND_INBOUND_PORT:-30400}"
INBOUND_EXTERNAL="127.0.0.1:$INBOUND_HOST_PORT"
RELEASE="rig"
# The HS256 key the kind install verifies JWTs with (the smoke test signs its tokens with it).
JWT_SECRET="${RIG_KIND_JWT_SECRET:-kind-smoke-jwt-secret-0123456789}"

# Downloads and builds, keyed by version (shared with e2e/env).
RIG_CACHE="${RIG_CACHE:-$HOME/.cache/rig-k8s}"
export GOMODCACHE="${GOMODCACHE:-$RIG_CACHE/go/mod}"
export GOCACHE="${GOCACHE:-$RIG_CACHE/go/build}"
export GOFLAGS="${GOFLAGS:--mod=mod}"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
# Versions of the offline path (e2e/kind/offline.sh); Kubernetes as e2e/env/kube.sh builds it.
KIND_VERSION="${RIG_KIND_VERSION:-v0.33.0}"
K8S_VERSION="${K8S_VERSION:-v1.34.4}"
ETCD_NODE_VERSION="${RIG_KIND_ETCD_VERSION:-v3.6.16}"
CRICTL_VERSION="${RIG_KIND_CRICTL_VERSION:-v1.34.0}"
COREDNS_VERSION="${RIG_KIND_COREDNS_VERSION:-v1.12.1}"
PAUSE_VERSION="3.10.1"
DEBIAN_SUITE="${RIG_KIND_DEBIAN_SUITE:-bookworm}"
KAFKA_VERSION="4.1.1"
OFFLINE_NODE_IMAGE="rig.local/kind-node:$K8S_VERSION"
KIND_BIN_CACHED="$RIG_CACHE/bin/kind-$KIND_VERSION"
# The release binaries the images are made of (e2e/test.sh's shared target directory).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$RIG_CACHE/cargo-target}"
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
CARGO_RELEASE="$CARGO_TARGET_DIR/release"

STATE="$RIG_REPO/e2e/.run/kind"
mkdir -p "$STATE"
export KUBECONFIG="$STATE/kubeconfig"

# helm: from PATH, else the one e2e/env/kube.sh builds.
HELM_VERSION="${HELM_VERSION:-v3.19.5}"
if [ -z "${HELM:-}" ]; then
  if command -v helm >/dev/null 2>&1; then HELM=helm; else HELM="$RIG_CACHE/bin/helm-$HELM_VERSION"; fi
fi
KUBECTL="${KUBECTL:-kubectl}"
# kind: from PATH, else the one offline.sh builds.
if [ -z "${KIND:-}" ]; then
  if command -v kind >/dev/null 2>&1; then KIND=kind; else KIND="$KIND_BIN_CACHED"; fi
fi
KIND_BIN="$KIND_BIN_CACHED"
DOCKER="${DOCKER:-docker}"

log() { printf '[kind %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# die STEP MESSAGE: report which step failed and why, then exit non-zero.
die() {
  local step="$1"
  shift
  printf '[kind] FAILED step "%s": %s\n' "$step" "$*" >&2
  exit 1
}

# need TOOL...: each tool is on PATH (or named by its variable).
need() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || die "tools" "$tool is needed (not found on PATH)"
  done
}

# wait_until STEP TIMEOUT_SECONDS COMMAND...: poll COMMAND until it succeeds or the deadline passes.
wait_until() {
  local step="$1" timeout="$2"
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then die "$step" "not done after ${timeout}s (command: $*)"; fi
    sleep 0.5
  done
}

# has_cap_sys_resource: bit 24 of this process's capability bounding set (missing on some VMs).
has_cap_sys_resource() {
  local bnd
  bnd="$(awk '/^CapBnd:/ {print $2}' /proc/self/status)"
  (((0x$bnd >> 24) & 1))
}

cluster_exists() { "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER"; }
