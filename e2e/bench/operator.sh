#!/usr/bin/env bash
# Benchmark of the operator (issue 6, "Measured"): memory and CPU of the release `rig-operator`
# with 1,000 routes and 10,000 Blacklist entries in the real test apiserver, the snapshot's size
# and the compile time.
#
#   bash e2e/bench/operator.sh [--routes 1000] [--blacklists 10000] [--burst 100] [--idle 20]
#                              [--write true]
#
# Numbers, not tests: nothing here runs in `cargo test` or e2e/test.sh. Needs the test apiserver
# (`bash e2e/env/up.sh`). Steps:
#   1. a fresh namespace; `--routes` routes (half EventRoutes with one event type each, half
#      ProxyRoutes with two regex endpoints each) and `--blacklists` Blacklists, created with
#      `kubectl create -f` from generated multi-document files, four kubectl processes at once;
#   2. a release operator starts (watching only that namespace, so other work on the apiserver
#      is not counted); time to its first snapshot with every object, CPU used until then;
#   3. it writes every object's status (Accepted, and Programmed/Ready `Unknown 0/0` since no data
#      plane reports): time and CPU until the writes settle;
#   4. idle: memory (VmRSS, VmHWM) and CPU over `--idle` seconds;
#   5. a burst of `--burst` more Blacklists, created one after another: each is compiled at once
#      (never debounced), so this is the steady-state compile time and CPU of a revocation burst.
# Compile times and the snapshot size come from the operator's own `GET /metrics`. With
# `--write true` (default) the table replaces the section of e2e/bench/results.md between the
# `operator.sh` markers (appended when absent).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root="$PWD"
out="$root/e2e/bench/results.md"
args="$*"

routes=1000 blacklists=10000 burst=100 idle=20 write=true
while [ $# -gt 0 ]; do
  case "$1" in
    --routes) routes="$2" ;;
    --blacklists) blacklists="$2" ;;
    --burst) burst="$2" ;;
    --idle) idle="$2" ;;
    --write) write="$2" ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done

say() { echo "[operator bench] $*" >&2; }
fail() { say "FAILED: $*"; exit 1; }

env_file="${RIG_ENV_FILE:-$root/e2e/.run/env}"
KUBECONFIG="$(sed -n 's/^KUBECONFIG=//p' "$env_file" 2>/dev/null | tail -n1)"
export KUBECONFIG
[ -n "$KUBECONFIG" ] && kubectl get --raw /readyz >/dev/null 2>&1 \
  || fail "no test apiserver (run: bash e2e/env/up.sh)"

build=(cargo build --release -p rig-operator --bin rig-operator)
say "${build[*]}"
"${build[@]}"
operator="${CARGO_TARGET_DIR:-$root/target}/release/rig-operator"

work="$(mktemp -d)"
ns="rig-bench-op-$(date +%s)"
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  # Delete the objects as collections first: the test apiserver runs no namespace controller, so
  # a deleted namespace stays Terminating and would keep its 11,000 objects in etcd.
  for r in blacklists eventroutes proxyroutes; do
    kubectl delete --raw "/apis/rig.dev/v1alpha1/namespaces/$ns/$r" >/dev/null 2>&1 || true
  done
  kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for=condition=Established --timeout=60s \
  crd/eventroutes.rig.dev crd/proxyroutes.rig.dev crd/blacklists.rig.dev >/dev/null
kubectl create namespace "$ns" >/dev/null

# Generated objects, in 4 files per kind so 4 kubectl processes create them at once.
events=$((routes / 2))
proxies=$((routes - events))
gen() { # kind count prefix
  awk -v kind="$1" -v n="$2" -v prefix="$3" -v ns="$ns" -v dir="$work" 'BEGIN {
    for (i = 0; i < n; i++) {
      f = sprintf("%s/%s-%d.yaml", dir, prefix, i % 4)
      print "---\napiVersion: rig.dev/v1alpha1\nkind: " kind > f
      printf "metadata: {name: %s-%05d, namespace: %s}\n", prefix, i, ns > f
      if (kind == "EventRoute") {
        printf "spec:\n  source: {kafka: {topics: [events-%d]}}\n", i % 50 > f
        printf "  events:\n    - type: com.example.bench.e%05d\n", i > f
        print "      extractors: [{field: name, eventPointer: /data/name, jwtPointer: /username}]" > f
      } else if (kind == "ProxyRoute") {
        print "spec:\n  endpoints:" > f
        printf "    - {id: get, method: GET, pathRegex: \"/api%05d/items/([a-z0-9-]+)\", pathReplacement: \"/v2/items/\\\\1\"}\n", i > f
        printf "    - {id: post, method: POST, pathRegex: \"/api%05d/items/([a-z0-9-]+)/orders\", secured: true}\n", i > f
        printf "  target: {kind: Http, url: \"http://svc-%d.default.svc:8080\"}\n", i > f
        print "  auth: {header: Authorization}" > f
      } else {
        printf "spec: {sessionId: sess-%s-%08d, expiresAt: \"2099-01-01T00:00:00Z\", reason: benchmark}\n", prefix, i > f
      }
    }
  }'
}
gen EventRoute "$events" er
gen ProxyRoute "$proxies" pr
gen Blacklist "$blacklists" bl
created_at=$SECONDS
for i in 0 1 2 3; do
  files=()
  for p in er pr bl; do [ -f "$work/$p-$i.yaml" ] && files+=(-f "$work/$p-$i.yaml"); done
  [ ${#files[@]} -gt 0 ] && kubectl create "${files[@]}" >/dev/null &
done
wait
total=$((routes + blacklists))
have="$(kubectl get eventroutes,proxyroutes,blacklists -n "$ns" --no-headers 2>/dev/null | wc -l)"
[ "$have" -eq "$total" ] || fail "created $have objects, expected $total"
say "created $total objects in $((SECONDS - created_at)) s"

port="$(awk 'BEGIN {srand(); print 20000 + int(rand() * 20000)}')"
addr="127.0.0.1:$port"
metric() { curl -sf "http://$addr/metrics" | awk -v n="$1" '$1 == n {print $2; found = 1} END {if (!found) print ""}'; }
clk_tck="$(getconf CLK_TCK)"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
kib() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$pid/status"; }
now_ms() { date +%s%3N; }
# Poll every 100 ms until "$@" succeeds, at most $1 seconds.
wait_for() {
  local limit="$1" what="$2"; shift 2
  local deadline=$((SECONDS + limit))
  until "$@"; do
    [ $SECONDS -lt $deadline ] || fail "timed out after ${limit}s waiting for $what"
    sleep 0.1
  done
}

busy() { echo "load average $(cut -d' ' -f1-3 /proc/loadavg), CPU pressure $(sed -n 's/^some //p' /proc/pressure/cpu 2>/dev/null || echo n/a)"; }
busy_before="$(busy)"
started="$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
t0="$(now_ms)"
RUST_LOG=warn POD_NAME=bench-operator RIG_OPERATOR_STREAM_ADDR="$addr" \
  RIG_OPERATOR_LEASE_NAMESPACE="$ns" RIG_OPERATOR_WATCH_NAMESPACE="$ns" \
  "$operator" run >"$work/operator.log" 2>&1 &
pid=$!

all_objects() {
  local n=0 k v
  for k in EventRoute ProxyRoute Blacklist; do
    v="$(metric "rig_operator_snapshot_objects{kind=\"$k\"}")"
    n=$((n + ${v:-0}))
  done
  [ "$n" -eq "$total" ]
}
wait_for 300 "the first snapshot with all $total objects" all_objects
t_snapshot="$(now_ms)"
cpu_snapshot="$(cpu_ticks)"
rss_snapshot="$(kib VmRSS)"
first_compile="$(metric rig_operator_compile_seconds)"
compiles_initial="$(metric rig_operator_compiles_total)"
bytes="$(metric rig_operator_snapshot_bytes)"
say "snapshot after $((t_snapshot - t0)) ms: $bytes bytes, compile ${first_compile}s"

# Status writes settle: every object written (Accepted + Programmed/Ready Unknown 0/0 in one
# write), and the counter stands still for a second.
writes_done() { local w; w="$(metric rig_operator_status_writes_total)"; [ "${w:-0}" -ge "$total" ]; }
wait_for 900 "$total status writes" writes_done
last_writes=-1
settled() {
  local w; w="$(metric rig_operator_status_writes_total)"
  [ "$w" = "$last_writes" ] && return 0
  last_writes="$w"; sleep 1; return 1
}
wait_for 300 "the status writes to settle" settled
t_status="$(now_ms)"
cpu_status="$(cpu_ticks)"
rss_status="$(kib VmRSS)"
write_errors="$(metric rig_operator_status_write_errors_total)"
writes_status="$(metric rig_operator_status_writes_total)"
say "status of $total objects written after $((t_status - t0)) ms ($write_errors errors)"

# Idle.
c0="$(cpu_ticks)"
sleep "$idle"
c1="$(cpu_ticks)"
rss_idle="$(kib VmRSS)"
hwm_idle="$(kib VmHWM)"
idle_cores="$(awk -v a="$c0" -v b="$c1" -v s="$idle" -v hz="$clk_tck" 'BEGIN {printf "%.3f", (b - a) / hz / s}')"

# A burst of revocations, one object at a time (each compiles the whole state).
n0="$(metric rig_operator_compiles_total)"
s0="$(metric rig_operator_compile_seconds_total)"
awk -v n="$burst" -v ns="$ns" 'BEGIN {
  for (i = 0; i < n; i++)
    printf "---\napiVersion: rig.dev/v1alpha1\nkind: Blacklist\nmetadata: {name: burst-%05d, namespace: %s}\nspec: {sessionId: burst-%05d, expiresAt: \"2099-01-01T00:00:00Z\"}\n", i, ns, i
}' >"$work/burst.yaml"
c0="$(cpu_ticks)"
b0="$(now_ms)"
kubectl create -f "$work/burst.yaml" >/dev/null
burst_in() { local v; v="$(metric 'rig_operator_snapshot_objects{kind="Blacklist"}')"; [ "${v:-0}" -eq $((blacklists + burst)) ]; }
wait_for 300 "the burst in the snapshot" burst_in
b1="$(now_ms)"
c1="$(cpu_ticks)"
n1="$(metric rig_operator_compiles_total)"
s1="$(metric rig_operator_compile_seconds_total)"
rss_burst="$(kib VmRSS)"
hwm_burst="$(kib VmHWM)"
last_compile="$(metric rig_operator_compile_seconds)"
bytes_burst="$(metric rig_operator_snapshot_bytes)"
burst_cores="$(awk -v a="$c0" -v b="$c1" -v ms="$((b1 - b0))" -v hz="$clk_tck" 'BEGIN {printf "%.2f", (b - a) / hz / (ms / 1000)}')"
avg_compile_ms="$(awk -v a="$s0" -v b="$s1" -v x="$n0" -v y="$n1" 'BEGIN {if (y > x) printf "%.1f", (b - a) / (y - x) * 1000; else print "n/a"}')"
busy_after="$(busy)"

mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
secs() { awk -v ms="$1" 'BEGIN {printf "%.1f", ms / 1000}'; }
cpu_s() { awk -v a="$1" -v b="$2" -v hz="$clk_tck" 'BEGIN {printf "%.1f", (b - a) / hz}'; }
table="$(
  echo "| what | value |"
  echo "|---|---|"
  echo "| objects | $events EventRoutes, $proxies ProxyRoutes ($((proxies * 2)) regex endpoints), $blacklists Blacklists |"
  echo "| snapshot size (stream line) | $bytes bytes ($(mib $((bytes / 1024))) MiB) |"
  echo "| first compile (all objects, regexes compiled) | $(awk -v s="$first_compile" 'BEGIN {printf "%.1f", s * 1000}') ms |"
  echo "| start → first complete snapshot (list of 3 kinds + compile + encode) | $(secs $((t_snapshot - t0))) s, $(cpu_s 0 "$cpu_snapshot") CPU s, $compiles_initial compilation(s) |"
  echo "| start → all $total statuses written (8 in flight; settled 1 s) | $(secs $((t_status - t0 - 1000))) s, $(cpu_s 0 "$cpu_status") CPU s in total, $writes_status writes, ${write_errors:-0} write errors |"
  echo "| VmRSS: at the first snapshot / after the status writes / idle | $(mib "$rss_snapshot") / $(mib "$rss_status") / $(mib "$rss_idle") MiB |"
  echo "| VmHWM (peak RSS) after start / after the burst | $(mib "$hwm_idle") / $(mib "$hwm_burst") MiB |"
  echo "| idle CPU over ${idle} s | $idle_cores cores |"
  echo "| burst: $burst Blacklists created one by one → all in the snapshot | $(secs $((b1 - b0))) s, $((n1 - n0)) compilations, $avg_compile_ms ms per compilation (last $(awk -v s="$last_compile" 'BEGIN {printf "%.1f", s * 1000}') ms), $burst_cores cores while it ran |"
  echo "| after the burst: VmRSS, snapshot size | $(mib "$rss_burst") MiB, $bytes_burst bytes |"
)"
printf '%s\n' "$table"

if [ "$write" = true ]; then
  section="$work/section.md"
  {
    echo "<!-- operator.sh: begin -->"
    echo "# Operator benchmark"
    echo
    echo "Run: $started, commit \`$(git rev-parse --short HEAD)\`$(git diff --quiet HEAD -- operator crds || echo ' (with uncommitted operator/crds changes)')."
    echo
    echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), $(free -g | awk '/^Mem:/{print $2}') GiB memory, Linux $(uname -r)."
    echo "Other work on the machine: before the run $busy_before; after it $busy_after."
    echo "The release operator (\`RUST_LOG=warn\`, one replica, so it holds the Lease and writes every"
    echo "status), the test kube-apiserver and etcd, and kubectl share these cores on loopback. No data"
    echo "plane reports, so every object's \`Programmed\` is \`Unknown 0/0\`."
    echo
    echo "Command:"
    echo
    echo '```'
    echo "bash e2e/bench/operator.sh $args"
    echo "# which builds: ${build[*]}"
    echo '```'
    echo
    echo "$table"
    echo
    cat <<'NOTE'
Wall times (the compile-time metric is wall time too) include waiting for a core when the machine
is busy (see the CPU pressure above); the CPU seconds are the operator process's own
(`/proc/<pid>/stat`). A compilation clones every spec, hashes the canonical JSON (the version) and
encodes the stream line: linear in the objects, so a `Blacklist` added to 11,000 objects costs one
full pass; status writes go 8 at a time and are bounded by the apiserver on the same cores.
NOTE
    echo "<!-- operator.sh: end -->"
  } >"$section"
  if grep -q '<!-- operator.sh: begin -->' "$out" 2>/dev/null; then
    awk -v f="$section" 'BEGIN {while ((getline l < f) > 0) s = s l "\n"}
      /<!-- operator.sh: begin -->/ {printf "%s", s; skip = 1; next}
      /<!-- operator.sh: end -->/ {skip = 0; next}
      !skip' "$out" >"$work/results.md"
    cp "$work/results.md" "$out"
  else
    { echo; cat "$section"; } >>"$out"
  fi
  say "wrote $out"
fi
