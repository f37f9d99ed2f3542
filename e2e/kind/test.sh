#!/usr/bin/env bash
# Test the kind install that up.sh made, in two parts:
#
# 1. Smoke test of the images and the chart, in the cluster (through kubectl port-forward to each
#    data-plane pod): an EventRoute becomes Ready; an event produced to its Kafka topic reaches an
#    SSE client on every pod; a subscription update sent to pod 1 for a connection on pod 0 is
#    forwarded there (RIG_PEERS: the pods' DNS names under the headless Service) and takes
#    effect; a Blacklist closes the session's connections on every pod.
# 2. The e2e test suite (cargo test -p rig-e2e --tests) against the cluster's apiserver and
#    Kafka: the tests start their own operator and data-plane processes on this machine, as they
#    do against the local test environment. The in-cluster operator is scaled to zero meanwhile
#    (it would write status on the tests' objects too) and scaled back afterwards.
#
#   bash e2e/kind/test.sh [--smoke-only]
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

# --- 2. the e2e tests against the cluster -----------------------------------------------------
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
