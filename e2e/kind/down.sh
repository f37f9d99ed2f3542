#!/usr/bin/env bash
# Delete the kind cluster that up.sh created, and the files it left in e2e/.run/kind/. The images
# stay in Docker (and in BuildKit's cache), so the next up.sh builds quickly.
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need "$KIND"
if cluster_exists; then
  log "deleting kind cluster $CLUSTER"
  "$KIND" delete cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG" || die "down" "kind delete cluster failed"
else
  log "no kind cluster named $CLUSTER"
fi
rm -rf "$STATE"
