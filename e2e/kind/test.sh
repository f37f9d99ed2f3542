#!/usr/bin/env bash
# Test the kind install that up.sh made:
#
# 1. Smoke test of the images and the chart, in the cluster (through kubectl port-forward to each
#    data-plane pod): an EventRoute becomes Ready; an event produced to its Kafka topic reaches an
#    SSE client on every pod; a subscription update sent to pod 1 for a connection on pod 0 is
#    forwarded there (RIG_PEERS: the pods' DNS names under the headless Service) and takes
#    effect; a Blacklist closes the session's connections on every pod.
# 2. What only a cluster shows: the CRD examples in effect on every pod; a rolling update and a
#    pod deleted with --force under $RIG_KIND_SOAK_CLIENTS (1,000) SSE and WebSocket clients
#    through the inbound NodePort, none losing or repeating an event (e2e/src/bin/rig-soak.rs);
#    the operator leader deleted (the other replica leads, status is written, routes reach every
#    pod); helm upgrade with a changed value; helm uninstall leaving only the CRDs.
# 3. With --e2e: the e2e test suite (cargo test -p rig-e2e --tests) against the cluster's apiserver and
#    Kafka: the tests start their own operator and data-plane processes on this machine, as they
#    do against the local test environment. The in-cluster operator is scaled to zero meanwhile
#    (it would write status on the tests' objects too) and scaled back afterwards.
#
#   bash e2e/kind/test.sh [--smoke-only | --e2e]
#
# Needs kubectl, curl and openssl (to sign the smoke test's JWT); part 2 also cargo and helm.
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need "$KUBECTL" curl openssl sed grep
[ -s "$KUBECONFIG" ] || die "cluster" "no kubeconfig at $KUBECONFIG: run bash e2e/kind/up.sh first"

TOPIC="rig-kind-smoke"
ROUTE="kind-smoke"
EVENT_TYPE="com.example.kind.smoke"
OTHER_TYPE="com.example.kind.other"
INBOUND=4000
INTERNAL=4010

PIDS=()
OPERATOR_REPLICAS=""
cleanup() {
  local pid
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill "$pid" 2>/dev/null || true; done
  "$KUBECTL" -n "$NAMESPACE" delete eventroute "$ROUTE" --ignore-not-found >/dev/null 2>&1 || true
  if [ -n "$OPERATOR_REPLICAS" ]; then
    log "scaling the in-cluster operator back to $OPERATOR_REPLICAS"
    "$KUBECTL" -n "$NAMESPACE" scale "deployment/$RELEASE-operator" --replicas="$OPERATOR_REPLICAS" >/dev/null || true
  fi
}
trap cleanup EXIT

# in_port POD / internal_port POD: the local ports of POD's port-forward (after forward POD).
in_port() { sed -n "s/^Forwarding from 127\.0\.0\.1:\([0-9]*\) -> $INBOUND\$/\1/p" "$STATE/pf-$1.log" | head -n 1; }
internal_port() { sed -n "s/^Forwarding from 127\.0\.0\.1:\([0-9]*\) -> $INTERNAL\$/\1/p" "$STATE/pf-$1.log" | head -n 1; }

# forward POD: forward free local ports to POD's inbound and internal ports.
forward() {
  "$KUBECTL" -n "$NAMESPACE" port-forward "pod/$1" ":$INBOUND" ":$INTERNAL" >"$STATE/pf-$1.log" 2>&1 &
  PIDS+=("$!")
  wait_until "port-forward $1" 30 grep -q -- "-> $INTERNAL" "$STATE/pf-$1.log"
}

# sse NAME PORT QUERY: an SSE client on 127.0.0.1:PORT writing to $STATE/sse-NAME.log; its pid
# is in $STATE/sse-NAME.pid.
sse() {
  curl -sN "http://127.0.0.1:$2/_rig/v1/connection/sse?$3" >"$STATE/sse-$1.log" 2>&1 &
  PIDS+=("$!")
  echo "$!" >"$STATE/sse-$1.pid"
  wait_until "SSE greeting on $1" 30 grep -q 'rig.subscriptions_set' "$STATE/sse-$1.log"
}

received() { grep -qF "$2" "$STATE/sse-$1.log"; }
# revoked NAME: the client was told its session is killed, or its stream ended.
revoked() { received "$1" "rig.session_killed" || ! kill -0 "$(cat "$STATE/sse-$1.pid")" 2>/dev/null; }

# produce JSON: one record to $TOPIC, from inside the Kafka pod.
produce() {
  printf '%s\n' "$1" | "$KUBECTL" -n "$KAFKA_NAMESPACE" exec -i kafka-0 -- \
    /opt/kafka/bin/kafka-console-producer.sh --bootstrap-server localhost:9092 --topic "$TOPIC" >/dev/null 2>&1
}

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

# jwt SESSION_ID: an HS256 token for the kind install's key, valid for an hour.
jwt() {
  local header payload signature
  header="$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)"
  payload="$(printf '{"jti":"%s","exp":%d}' "$1" "$(($(date +%s) + 3600))" | b64url)"
  signature="$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -hmac "$JWT_SECRET" -binary | b64url)"
  printf '%s.%s.%s' "$header" "$payload" "$signature"
}

# --- 1. smoke test in the cluster -------------------------------------------------------------
log "waiting for the release to be ready"
"$KUBECTL" -n "$NAMESPACE" rollout status "deployment/$RELEASE-operator" --timeout=180s >/dev/null \
  || die "operator" "not ready"
"$KUBECTL" -n "$NAMESPACE" rollout status "statefulset/$RELEASE-dataplane" --timeout=180s >/dev/null \
  || die "data plane" "not ready"
pods=()
while IFS= read -r pod; do pods+=("$pod"); done < <("$KUBECTL" -n "$NAMESPACE" get pods \
  -l "app.kubernetes.io/instance=$RELEASE,app.kubernetes.io/component=dataplane" \
  -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
((${#pods[@]} >= 2)) || die "data plane" "expected at least 2 data-plane pods, found ${#pods[@]}"

log "topic $TOPIC and EventRoute $ROUTE"
"$KUBECTL" -n "$KAFKA_NAMESPACE" exec kafka-0 -- /opt/kafka/bin/kafka-topics.sh \
  --bootstrap-server localhost:9092 --create --if-not-exists --topic "$TOPIC" \
  --partitions 3 --replication-factor 1 >/dev/null || die "topic" "kafka-topics.sh --create failed"
"$KUBECTL" -n "$NAMESPACE" apply -f - >/dev/null <<YAML || die "EventRoute" "kubectl apply failed"
apiVersion: rig.dev/v1alpha1
kind: EventRoute
metadata:
  name: $ROUTE
spec:
  source:
    kafka:
      topics: [$TOPIC]
  events:
    - type: $EVENT_TYPE
    - type: $OTHER_TYPE
YAML
"$KUBECTL" -n "$NAMESPACE" wait --for=condition=Ready "eventroute/$ROUTE" --timeout=120s >/dev/null \
  || die "EventRoute" "not Ready: $("$KUBECTL" -n "$NAMESPACE" describe eventroute "$ROUTE")"
"$KUBECTL" get rig -n "$NAMESPACE" >&2

subscriptions="subscriptions=%5B%7B%22eventType%22%3A%22$EVENT_TYPE%22%7D%5D"
for pod in "${pods[@]}"; do
  forward "$pod"
  sse "$pod" "$(in_port "$pod")" "$subscriptions"
done

log "Kafka -> every pod's SSE client"
# The data planes start reading the new topic at its latest offset shortly after the route is
# Ready: produce until every client has an event (each record has its own id), within a deadline.
deadline=$((SECONDS + 90))
n=0
while :; do
  n=$((n + 1))
  produce "{\"specversion\":\"1.0\",\"type\":\"$EVENT_TYPE\",\"source\":\"/kind-smoke\",\"id\":\"kind-$n\",\"data\":{\"n\":$n}}" \
    || die "produce" "kafka-console-producer.sh failed"
  all=1
  for pod in "${pods[@]}"; do received "$pod" "\"type\":\"$EVENT_TYPE\"" || all=0; done
  ((all == 1)) && break
  ((SECONDS < deadline)) || die "Kafka -> SSE" "not every pod's client got an event (see $STATE/sse-*.log)"
done
log "every pod delivered (after $n record(s))"

log "subscription update through another pod (RIG_PEERS)"
owner="${pods[0]}"
relay="${pods[1]}"
token="$(grep -o '"connection_token":"[^"]*"' "$STATE/sse-$owner.log" | head -n 1 | cut -d'"' -f4)"
[ -n "$token" ] || die "peers" "no connection token in $STATE/sse-$owner.log"
status="$(curl -s -o "$STATE/put.log" -w '%{http_code}' -X PUT -H 'content-type: application/json' \
  --data "{\"subscriptions\":[{\"eventType\":\"$OTHER_TYPE\"}]}" \
  "http://127.0.0.1:$(in_port "$relay")/_rig/v1/connection/sse/$token/subscriptions")"
case "$status" in
  2??) ;;
  *) die "peers" "PUT via $relay answered $status: $(cat "$STATE/put.log")" ;;
esac
wait_until "peers: new subscriptions on $owner" 30 received "$owner" "$OTHER_TYPE"
log "forwarded from $relay to $owner"

log "Blacklist closes the session on every pod"
session="kind-smoke-$(date +%s)"
token="$(jwt "$session")"
for pod in "${pods[@]}"; do sse "jwt-$pod" "$(in_port "$pod")" "jwt=$token&$subscriptions"; done
"$KUBECTL" -n "$NAMESPACE" apply -f - >/dev/null <<YAML || die "Blacklist" "kubectl apply failed"
apiVersion: rig.dev/v1alpha1
kind: Blacklist
metadata:
  name: $session
spec:
  sessionId: $session
  expiresAt: "2099-01-01T00:00:00Z"
  reason: kind smoke test
YAML
for pod in "${pods[@]}"; do wait_until "Blacklist closes the connection on $pod" 30 revoked "jwt-$pod"; done
"$KUBECTL" -n "$NAMESPACE" delete blacklist "$session" >/dev/null
log "smoke test passed"

if [ "${1:-}" = "--smoke-only" ]; then exit 0; fi

# --- 2. what only a cluster shows ---------------------------------------------------------------

# dataplane_pods: the data-plane pods' names, one per line.
dataplane_pods() {
  "$KUBECTL" -n "$NAMESPACE" get pods \
    -l "app.kubernetes.io/instance=$RELEASE,app.kubernetes.io/component=dataplane" \
    -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}'
}

# forward_all: a fresh port-forward to every data-plane pod (after restarts); sets pods=(...).
forward_all() {
  pods=()
  while IFS= read -r pod; do pods+=("$pod"); done < <(dataplane_pods)
  local pod
  for pod in "${pods[@]}"; do forward "$pod"; done
}

# http_code URL [CURL ARGS...]: the status of one request.
http_code() { local url="$1"; shift; curl -s -o /dev/null -w '%{http_code}' "$@" "$url"; }
# answers CODE URL [CURL ARGS...]: the request answers CODE.
answers() { local code="$1"; shift; [ "$(http_code "$@")" = "$code" ]; }

log "scenario: the CRD examples (crds/examples/) applied, Ready, in effect on every pod"
for example in "$RIG_REPO"/crds/examples/*.yaml; do
  "$KUBECTL" -n "$NAMESPACE" apply -f "$example" >/dev/null || die "examples" "kubectl apply -f $example failed"
done
"$KUBECTL" -n "$NAMESPACE" wait --for=condition=Ready eventroute/greetings proxyroute/books \
  proxyroute/orders blacklist/session-3b1f2c9e --timeout=120s >/dev/null \
  || die "examples" "not Ready: $("$KUBECTL" -n "$NAMESPACE" get rig -o wide 2>&1)"
greeting_subs="subscriptions=%5B%7B%22eventType%22%3A%22com.example.greeting%22%2C%22oneOf%22%3A%5B%7B%22name%22%3A%22joe%22%7D%5D%7D%5D"
for pod in "${pods[@]}"; do
  in="$(in_port "$pod")" internal="$(internal_port "$pod")"
  # ProxyRoute books: routed (its backend does not exist here: 502, not 404).
  wait_until "books route on $pod" 60 answers 502 "http://127.0.0.1:$in/books/1"
  # ProxyRoute orders: secured (401 without a token).
  wait_until "orders route on $pod" 60 answers 401 "http://127.0.0.1:$in/orders" -X POST -d '{}'
  # Blacklist: the session is revoked there.
  wait_until "blacklist on $pod" 60 answers 200 \
    "http://127.0.0.1:$internal/v3/session-blacklist/3b1f2c9e-8d4a-4a8e-9d0c-6f1e2a7b5c41"
  sse "greet-$pod" "$in" "$greeting_subs"
done
TOPIC=greetings
deadline=$((SECONDS + 90))
n=0
while :; do
  n=$((n + 1))
  produce "{\"specversion\":\"1.0\",\"type\":\"com.example.greeting\",\"source\":\"/kind\",\"id\":\"greet-$n\",\"data\":{\"name\":\"joe\"}}" \
    || die "produce" "kafka-console-producer.sh failed"
  all=1
  for pod in "${pods[@]}"; do received "greet-$pod" '"com.example.greeting"' || all=0; done
  ((all == 1)) && break
  ((SECONDS < deadline)) || die "examples" "the EventRoute greetings did not deliver on every pod"
done
log "examples: EventRoute, both ProxyRoutes and the Blacklist in effect on ${#pods[@]} pods"

# The soak: rig-soak's clients through the inbound NodePort while ACTION changes the cluster.
(cd "$RIG_REPO" && cargo build --release --locked -p rig-e2e --bin rig-soak) >"$STATE/rig-soak-build.log" 2>&1 \
  || die "rig-soak" "cargo build failed; see $STATE/rig-soak-build.log"
SOAK="$CARGO_RELEASE/rig-soak"
SOAK_CLIENTS="${RIG_KIND_SOAK_CLIENTS:-1000}"
SOAK_TOPIC="rig-kind-soak"
"$KUBECTL" -n "$KAFKA_NAMESPACE" exec kafka-0 -- /opt/kafka/bin/kafka-topics.sh \
  --bootstrap-server localhost:9092 --create --if-not-exists --topic "$SOAK_TOPIC" \
  --partitions 1 --replication-factor 1 >/dev/null || die "soak" "kafka-topics.sh --create failed"
"$KUBECTL" -n "$NAMESPACE" apply -f - >/dev/null <<YAML || die "soak" "kubectl apply failed"
apiVersion: rig.dev/v1alpha1
kind: EventRoute
metadata:
  name: soak
spec:
  source:
    kafka:
      topics: [$SOAK_TOPIC]
  events:
    - type: soak.rolling
    - type: soak.forced
YAML
"$KUBECTL" -n "$NAMESPACE" wait --for=condition=Ready eventroute/soak --timeout=120s >/dev/null \
  || die "soak" "EventRoute soak not Ready"

# soak NAME ACTION...: clients receive a steady stream; ACTION runs; then every client must hold
# every event exactly once. Prints rig-soak's report.
soak() {
  local name="$1"
  shift
  local dir="$STATE/soak-$name"
  rm -rf "$dir" && mkdir -p "$dir"
  "$SOAK" --inbound "$INBOUND_EXTERNAL" --brokers "$KAFKA_EXTERNAL" --topic "$SOAK_TOPIC" \
    --type "soak.$name" --sse "$((SOAK_CLIENTS / 2))" --ws "$((SOAK_CLIENTS - SOAK_CLIENTS / 2))" \
    --rate 20 --ready "$dir/ready" --stop "$dir/stop" >"$dir/report.json" 2>"$dir/soak.log" &
  local soak_pid=$!
  PIDS+=("$soak_pid")
  wait_until "soak $name: $SOAK_CLIENTS clients connected (log: $dir/soak.log)" 240 test -f "$dir/ready"
  sleep 5
  log "soak $name: $SOAK_CLIENTS clients receiving; now: $*"
  "$@" || die "soak $name" "the action failed: $*"
  sleep 5
  touch "$dir/stop"
  local rc=0
  wait "$soak_pid" || rc=$?
  log "soak $name: $(cat "$dir/report.json")"
  ((rc == 0)) || die "soak $name" "events lost or duplicated (exit $rc; report $dir/report.json, log $dir/soak.log)"
}

rolling_update() {
  "$KUBECTL" -n "$NAMESPACE" rollout restart "statefulset/$RELEASE-dataplane" >/dev/null &&
    "$KUBECTL" -n "$NAMESPACE" rollout status "statefulset/$RELEASE-dataplane" --timeout=300s >/dev/null
}
soak rolling rolling_update
# The drain was graceful: the streams were ended by the pods, none broke.
broken="$(sed -n 's/.*"broken_ends":\([0-9]*\).*/\1/p' "$STATE/soak-rolling/report.json")"
clean="$(sed -n 's/.*"clean_ends":\([0-9]*\).*/\1/p' "$STATE/soak-rolling/report.json")"
((clean >= SOAK_CLIENTS)) || die "rolling update" "only $clean streams were ended by the draining pods"
log "rolling update: $clean streams ended by the draining pods (preStop, then drain), $broken broken"

force_delete() {
  "$KUBECTL" -n "$NAMESPACE" delete pod "$RELEASE-dataplane-0" --force --grace-period=0 >/dev/null 2>&1 &&
    "$KUBECTL" -n "$NAMESPACE" rollout status "statefulset/$RELEASE-dataplane" --timeout=300s >/dev/null
}
soak forced force_delete

log "scenario: the operator leader pod deleted"
leader="$("$KUBECTL" -n "$NAMESPACE" get lease rig-operator -o jsonpath='{.spec.holderIdentity}')"
[ -n "$leader" ] || die "leader" "no holder of the Lease rig-operator"
"$KUBECTL" -n "$NAMESPACE" delete pod "$leader" --wait=false >/dev/null || die "leader" "cannot delete $leader"
"$KUBECTL" -n "$NAMESPACE" apply -f - >/dev/null <<YAML || die "leader" "kubectl apply failed"
apiVersion: rig.dev/v1alpha1
kind: ProxyRoute
metadata:
  name: during-failover
spec:
  endpoints:
    - {id: ping, method: GET, pathRegex: /failover}
  target: {kind: Http, url: "http://127.0.0.1:9"}
YAML
new_leader() {
  local now
  now="$("$KUBECTL" -n "$NAMESPACE" get lease rig-operator -o jsonpath='{.spec.holderIdentity}')"
  [ -n "$now" ] && [ "$now" != "$leader" ]
}
wait_until "leader: another replica takes the Lease" 120 new_leader
"$KUBECTL" -n "$NAMESPACE" wait --for=condition=Ready proxyroute/during-failover --timeout=120s >/dev/null \
  || die "leader" "the route applied during the failover got no Ready status"
for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
PIDS=()
forward_all
for pod in "${pods[@]}"; do
  wait_until "during-failover route on $pod" 60 answers 502 "http://127.0.0.1:$(in_port "$pod")/failover"
done
log "leader: $leader deleted, $("$KUBECTL" -n "$NAMESPACE" get lease rig-operator -o jsonpath='{.spec.holderIdentity}') leads; the route applied meanwhile is Ready and on ${#pods[@]} pods"
"$KUBECTL" -n "$NAMESPACE" delete proxyroute/during-failover eventroute/soak >/dev/null

log "scenario: helm upgrade with changed values"
tag="$(cat "$STATE/image-tag")"
"$HELM" upgrade "$RELEASE" "$RIG_REPO/charts/rig" --namespace "$NAMESPACE" -f "$KIND_SCRIPTS/values.yaml" \
  --set image.tag="$tag" --set dataplane.kafka.brokers="$KAFKA_INTERNAL" \
  --set-string dataplane.env.MAX_CONNECTIONS_PER_SESSION=1 --wait --timeout 5m >/dev/null \
  || die "helm upgrade" "failed"
"$KUBECTL" -n "$NAMESPACE" rollout status "statefulset/$RELEASE-dataplane" --timeout=300s >/dev/null
for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
PIDS=()
forward_all
session="kind-upgrade-$(date +%s)"
token="$(jwt "$session")"
in="$(in_port "${pods[0]}")"
sse upgrade-1 "$in" "jwt=$token"
answers 429 "http://127.0.0.1:$in/_rig/v1/connection/sse?jwt=$token" --max-time 5 \
  || die "helm upgrade" "MAX_CONNECTIONS_PER_SESSION=1 is not in effect after the upgrade"
log "helm upgrade: the new value is in effect (a second connection of one session gets 429)"
for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
PIDS=()
for example in "$RIG_REPO"/crds/examples/*.yaml; do
  "$KUBECTL" -n "$NAMESPACE" delete -f "$example" --ignore-not-found >/dev/null
done

log "scenario: helm uninstall leaves nothing but the CRDs"
"$HELM" uninstall "$RELEASE" --namespace "$NAMESPACE" --wait --timeout 5m >/dev/null || die "helm uninstall" "failed"
# The pods drain and go (each data plane deletes its report Lease on the way out).
"$KUBECTL" -n "$NAMESPACE" wait --for=delete pod -l "app.kubernetes.io/instance=$RELEASE" --timeout=180s >/dev/null 2>&1 || true
left="$("$KUBECTL" -n "$NAMESPACE" get all,configmap,secret,lease,serviceaccount,role,rolebinding,pdb \
  -l "app.kubernetes.io/instance=$RELEASE" -o name 2>/dev/null)"
leases="$("$KUBECTL" -n "$NAMESPACE" get lease -o name 2>/dev/null | grep -v '^$' || true)"
cluster_left="$("$KUBECTL" get clusterrole,clusterrolebinding -l "app.kubernetes.io/instance=$RELEASE" -o name 2>/dev/null)"
[ -z "$left$leases$cluster_left" ] || die "helm uninstall" "left behind: $left $leases $cluster_left"
"$KUBECTL" get crd eventroutes.rig.dev proxyroutes.rig.dev blacklists.rig.dev >/dev/null \
  || die "helm uninstall" "the CRDs must stay"
log "helm uninstall: nothing of the release is left; the CRDs stay"
log "the release is uninstalled: bash e2e/kind/up.sh installs it again (the cluster is reused)"

if [ "${1:-}" != "--e2e" ]; then
  log "kind scenarios passed"
  exit 0
fi

# --- 3. the e2e tests against the cluster (--e2e) -----------------------------------------------------
need cargo "$HELM"
OPERATOR_REPLICAS="$("$KUBECTL" -n "$NAMESPACE" get "deployment/$RELEASE-operator" -o jsonpath='{.spec.replicas}')"
log "scaling the in-cluster operator to 0 while the tests run their own"
"$KUBECTL" -n "$NAMESPACE" scale "deployment/$RELEASE-operator" --replicas=0 >/dev/null
"$KUBECTL" -n "$NAMESPACE" wait --for=delete pod \
  -l "app.kubernetes.io/instance=$RELEASE,app.kubernetes.io/component=operator" --timeout=120s >/dev/null \
  || die "scale" "operator pods did not stop"

env_file="$STATE/env"
{
  echo "KUBECONFIG=$KUBECONFIG"
  echo "KUBE_APISERVER=$("$KUBECTL" config view --minify -o jsonpath='{.clusters[0].cluster.server}')"
  echo "HELM=$(command -v "$HELM")"
  echo "KUBECTL=$(command -v "$KUBECTL")"
  echo "KAFKA_BROKERS=$KAFKA_EXTERNAL"
  for browser in chromium chromium-browser google-chrome; do
    if command -v "$browser" >/dev/null 2>&1; then
      echo "CHROMIUM=$(command -v "$browser")"
      break
    fi
  done
} >"$env_file"

cd "$RIG_REPO"
log "building the binaries the tests start"
cargo build --locked -p rig-dataplane -p rig-operator || die "build" "cargo build failed"
log "e2e tests against the kind cluster (env: $env_file)"
RIG_ENV_FILE="$env_file" cargo test --locked -p rig-e2e --tests -- --test-threads="${RUST_TEST_THREADS:-2}" \
  || die "e2e tests" "see the output above"
log "all passed"
