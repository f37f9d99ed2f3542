#!/usr/bin/env bash
# Start the whole real test environment (Kafka, etcd + kube-apiserver, helm, Chromium), installing and
# building what is missing first (cached under ~/.cache/rig-k8s). Idempotent: what already runs is
# left alone. Writes e2e/.run/env for the tests.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
here="$(dirname "${BASH_SOURCE[0]}")"

log "installing (cached after the first run)"
bash "$here/kafka.sh" install || die "kafka install" "see the output above"
bash "$here/kube.sh" install || die "kube install" "see the output above"
bash "$here/chromium.sh" install || die "chromium install" "see the output above"

log "starting Kafka and the apiserver"
# The two start in parallel: both spend most of their start-up waiting.
bash "$here/kafka.sh" up &
kafka_pid=$!
bash "$here/kube.sh" up &
kube_pid=$!
kafka_rc=0; kube_rc=0
wait "$kafka_pid" || kafka_rc=$?
wait "$kube_pid" || kube_rc=$?
((kafka_rc == 0)) || die "kafka up" "exit $kafka_rc; see $RIG_RUN/kafka.log"
((kube_rc == 0)) || die "kube up" "exit $kube_rc; see $RIG_RUN/kube-apiserver.log and $RIG_RUN/etcd.log"
env_set CHROMIUM "$(bash "$here/chromium.sh" path)"   # for the browser tests (e2e/tests/browser_sse.rs)

log "environment up; tests read $RIG_ENV:"
cat "$RIG_ENV" >&2
