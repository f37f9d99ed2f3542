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
RELEASE="rig"
# The HS256 key the kind install verifies JWTs with (the smoke test signs its tokens with it).
JWT_SECRET="${RIG_KIND_JWT_SECRET:-kind-smoke-jwt-secret-0123456789}"

STATE="$RIG_REPO/e2e/.run/kind"
mkdir -p "$STATE"
export KUBECONFIG="$STATE/kubeconfig"

HELM="${HELM:-helm}"
KUBECTL="${KUBECTL:-kubectl}"
KIND="${KIND:-kind}"
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

cluster_exists() { "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER"; }
