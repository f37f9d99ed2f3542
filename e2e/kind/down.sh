#!/usr/bin/env bash
# Undo up.sh: delete the kind cluster and its Docker network, remove e2e/.run/kind/, and stop the
# Docker engine if e2e/kind/engine.sh started it (restoring what dockerd changed on the host).
# Images stay cached: in Docker's data folder and, for the offline path, as saved tarballs under
# ~/.cache/rig-k8s/kind-offline, so the next up.sh is quick.
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if "$DOCKER" info >/dev/null 2>&1; then
  if [ -x "$(command -v "$KIND" 2>/dev/null)" ] && cluster_exists; then
    log "deleting kind cluster $CLUSTER"
    "$KIND" delete cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG" || die "down" "kind delete cluster failed"
  else
    log "no kind cluster named $CLUSTER"
  fi
  # kind's network outlives its clusters; remove it when nothing else uses it.
  if "$DOCKER" network inspect kind >/dev/null 2>&1 &&
    [ "$("$DOCKER" network inspect kind -f '{{len .Containers}}')" = 0 ]; then
    "$DOCKER" network rm kind >/dev/null || log "could not remove the Docker network kind"
  fi
fi
rm -rf "$STATE"
bash "$KIND_SCRIPTS/engine.sh" stop
