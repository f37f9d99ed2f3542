#!/usr/bin/env bash
# The kind path, for users with Docker: a kind cluster running the real images and the Helm chart,
# with a single-node Kafka inside the cluster.
#
#   bash e2e/kind/up.sh     create (or reuse) the cluster, build and load both images, install
#                           Kafka and the chart, wait until everything is ready
#   bash e2e/kind/test.sh   smoke test in the cluster, then the e2e tests against it
#   bash e2e/kind/down.sh   delete the cluster
#
# Needs docker, kubectl and Go; kind and helm are built from the Go module proxy when missing.
# With no Docker engine running, e2e/kind/engine.sh starts Debian's (down.sh stops it). When
# the container registries cannot be reached (or RIG_KIND_OFFLINE=1), every image is built here
# without them (e2e/kind/offline.sh): the kind node image, Kafka, and our images from the
# release binaries; otherwise kind's node image, apache/kafka and our Dockerfiles are used.
# Settings: see lib.sh.
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need "$DOCKER" "$KUBECTL" sed
bash "$KIND_SCRIPTS/engine.sh" start || die "docker" "no Docker engine"
if ! command -v "$KIND" >/dev/null 2>&1 || ! command -v "$HELM" >/dev/null 2>&1; then
  bash "$KIND_SCRIPTS/offline.sh" tools || die "tools" "kind and helm could not be built"
fi

# offline: 1 when the registries are out of reach (a registry answers 401 to an anonymous /v2/).
offline="${RIG_KIND_OFFLINE:-auto}"
if [ "$offline" = auto ]; then
  if curl -s -o /dev/null --max-time 10 https://registry-1.docker.io/v2/; then offline=0; else offline=1; fi
fi
if [ "$offline" = 1 ]; then
  log "offline: building the kind node, Kafka and our images without a registry (cached in $RIG_CACHE/kind-offline)"
  bash "$KIND_SCRIPTS/offline.sh" node-image || die "node image" "offline build failed"
  bash "$KIND_SCRIPTS/offline.sh" kafka-image || die "kafka image" "offline build failed"
  RIG_KIND_NODE_IMAGE="${RIG_KIND_NODE_IMAGE:-$OFFLINE_NODE_IMAGE}"
fi

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
      - containerPort: 30400
        hostPort: $INBOUND_HOST_PORT
        listenAddress: "127.0.0.1"
YAML
  node_image=()
  if [ -n "${RIG_KIND_NODE_IMAGE:-}" ]; then node_image=(--image "$RIG_KIND_NODE_IMAGE"); fi
  "$KIND" create cluster --name "$CLUSTER" --config "$STATE/kind-config.yaml" \
    --kubeconfig "$KUBECONFIG" --wait 180s "${node_image[@]}" \
    || die "cluster" "kind create cluster failed"
fi

if [ "$offline" = 1 ]; then
  # The offline node image has no storage provisioner (its image is a placeholder).
  "$KUBECTL" -n local-path-storage delete deployment local-path-provisioner --ignore-not-found >/dev/null 2>&1 || true
fi

# --- images -----------------------------------------------------------------------------------
# A new tag per run, so that `helm upgrade` rolls the pods onto the images just built.
tag="kind-$(date +%Y%m%d%H%M%S)"
if [ "$offline" = 1 ]; then
  # The Dockerfiles' runtime (glibc, CA certificates, uid 65532) from the release binaries.
  log "building the release binaries and rig-{operator,dataplane}:$tag from them"
  (cd "$RIG_REPO" && cargo build --release --locked -p rig-operator -p rig-dataplane) \
    || die "images" "cargo build --release failed"
  bash "$KIND_SCRIPTS/offline.sh" app-images "$tag" || die "images" "offline app images failed"
else
  for image in operator dataplane; do
    log "building rig-$image:$tag (first build compiles the workspace; later ones reuse the cache)"
    DOCKER_BUILDKIT=1 "$DOCKER" build -f "$RIG_REPO/$image/Dockerfile" -t "rig-$image:$tag" "$RIG_REPO" \
      || die "image rig-$image" "docker build failed"
  done
fi
echo "$tag" >"$STATE/image-tag"
log "loading the images into the cluster"
"$KIND" load docker-image --name "$CLUSTER" "rig-operator:$tag" "rig-dataplane:$tag" \
  || die "images" "kind load docker-image failed"
if [ "$offline" = 1 ]; then
  "$KIND" load docker-image --name "$CLUSTER" "$KAFKA_IMAGE" || die "images" "kind load of $KAFKA_IMAGE failed"
fi

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
