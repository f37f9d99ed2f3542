#!/usr/bin/env bash
# Stop what e2e/env/up.sh started (by pid, nothing else). Idempotent.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
here="$(dirname "${BASH_SOURCE[0]}")"
rc=0
bash "$here/kube.sh" down || rc=$?
bash "$here/kafka.sh" down || rc=$?
rm -f "$RIG_ENV"
exit "$rc"
