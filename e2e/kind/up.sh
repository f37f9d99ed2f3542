#!/usr/bin/env bash
# The kind path, for users with Docker: a kind cluster running the real images and the Helm chart,
# with a single-node Kafka inside the cluster.
#
#   bash e2e/kind/up.sh     create (or reuse) the cluster, build and load both images, install
#                           Kafka and the chart, wait until everything is ready
#   bash e2e/kind/test.sh   smoke test in the cluster, then the e2e tests against it
#   bash e2e/kind/down.sh   delete the cluster
#
# Needs docker (with an engine and BuildKit), kind, kubectl and helm. Settings: see lib.sh.
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need "$DOCKER" "$KIND" "$KUBECTL" "$HELM" sed
"$DOCKER" info >/dev/null 2>&1 || die "docker" "no Docker engine answers ($DOCKER info failed)"

# --- cluster ----------------------------------------------------------------------------------
if cluster_exists; then
  log "reusing kind cluster $CLUSTER"
  "$KIND" export kubeconfig --name "$CLUSTER" --kubeconfig "$KUBECONFIG" >/dev/null \
    || die "cluster" "kind export kubeconfig failed"
else
  log "creating kind cluster $CLUSTER (Kafka reachable from the host on $KAFKA_EXTERNAL)"
  cat >"$STATE/kind-config.yaml" <<YAML
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
    extraPortMappings:
      - containerPort: 30092
        hostPort: $KAFKA_HOST_PORT
        listenAddress: "127.0.0.1"
YAML
  node_image=()
  if [ -n "${RIG_KIND_NODE_IMAGE:-}" ]; then node_image=(--image "$RIG_KIND_NODE_IMAGE"); fi
  "$KIND" create cluster --name "$CLUSTER" --config "$STATE/kind-config.yaml" \
    --kubeconfig "$KUBECONFIG" --wait 180s "${node_image[@]}" \
    || die "cluster" "kind create cluster failed"
fi

# --- images -----------------------------------------------------------------------------------
# A new tag per run, so that `helm upgrade` rolls the pods onto the images just built.
tag="kind-$(date +%Y%m%d%H%M%S)"
for image in operator dataplane; do
  log "building rig-$image:$tag (first build compiles the workspace; later ones reuse the cache)"
  DOCKER_BUILDKIT=1 "$DOCKER" build -f "$RIG_REPO/$image/Dockerfile" -t "rig-$image:$tag" "$RIG_REPO" \
    || die "image rig-$image" "docker build failed"
done
log "loading the images into the cluster"
"$KIND" load docker-image --name "$CLUSTER" "rig-operator:$tag" "rig-dataplane:$tag" \
  || die "images" "kind load docker-image failed"

# --- Kafka ------------------------------------------------------------------------------------
log "installing Kafka ($KAFKA_IMAGE) in namespace $KAFKA_NAMESPACE"
sed -e "s|@KAFKA_NAMESPACE@|$KAFKA_NAMESPACE|g" \
  -e "s|@KAFKA_IMAGE@|$KAFKA_IMAGE|g" \
  -e "s|@KAFKA_INTERNAL@|$KAFKA_INTERNAL|g" \
  -e "s|@KAFKA_EXTERNAL@|$KAFKA_EXTERNAL|g" \
  "$KIND_SCRIPTS/kafka.yaml" | "$KUBECTL" apply -f - >/dev/null || die "kafka" "kubectl apply failed"
"$KUBECTL" -n "$KAFKA_NAMESPACE" rollout status statefulset/kafka --timeout=300s \
  || die "kafka" "Kafka did not become ready (kubectl -n $KAFKA_NAMESPACE logs kafka-0)"

# --- the chart --------------------------------------------------------------------------------
"$KUBECTL" create namespace "$NAMESPACE" --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
"$KUBECTL" -n "$NAMESPACE" create secret generic rig-jwt \
  --from-literal=JWT_SECRET_KEY="$JWT_SECRET" --dry-run=client -o yaml \
  | "$KUBECTL" apply -f - >/dev/null || die "jwt secret" "kubectl apply failed"
# CRDs in the chart's crds/ are installed once and never upgraded by Helm: apply the current
# ones first (Helm skips CRDs that exist).
"$KUBECTL" apply --server-side --force-conflicts -f "$RIG_REPO/charts/rig/crds" >/dev/null \
  || die "crds" "kubectl apply failed"
log "installing the chart as release $RELEASE in namespace $NAMESPACE"
"$HELM" upgrade --install "$RELEASE" "$RIG_REPO/charts/rig" \
  --namespace "$NAMESPACE" \
  -f "$KIND_SCRIPTS/values.yaml" \
  --set image.tag="$tag" \
  --set dataplane.kafka.brokers="$KAFKA_INTERNAL" \
  --wait --timeout 5m \
  || die "helm install" "see: kubectl -n $NAMESPACE get pods; kubectl -n $NAMESPACE describe pods"

log "up: release $RELEASE in $NAMESPACE (images rig-*:$tag), Kafka $KAFKA_INTERNAL (host: $KAFKA_EXTERNAL)"
log "kubeconfig: export KUBECONFIG=$KUBECONFIG"
"$KUBECTL" -n "$NAMESPACE" get pods -o wide >&2
