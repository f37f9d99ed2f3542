#!/usr/bin/env bash
# Benchmarks of the data plane's reverse proxy against DESIGN §7 (issue 4, "Measured"):
#
#   1. HTTP proxy: requests/s and p50/p99 of the release `rig-dataplane` (a PROXY_CONFIG_FILE route,
#      without and with a JWT check) beside nginx (Debian package) proxying the same backend, and
#      the backend alone (the ceiling), all driven by wrk with the same threads/connections/duration,
#      each configuration run --rounds times interleaved; the median is reported.
#   2. Sync-over-async through the real Kafka: a `target: kafka` + `response_from: kafka` route, a
#      responder process (`rig-bench responder`) answering every request event on the response
#      topic, wrk as --sync-connections closed-loop clients POSTing a CloudEvent.
#
#   bash e2e/bench/proxy.sh [--parts http,kafka] [--duration 10] [--threads 2] [--connections 64]
#                           [--rounds 3] [--warmup 3] [--sync-connections 100] [--sync-warmup 45]
#                           [--write true]
#
# Numbers, not tests: nothing here runs in `cargo test` or e2e/test.sh. Installs nginx (nginx-light)
# and wrk with apt-get when missing, builds the data plane and rig-bench in release, starts the test
# Kafka when it is not running (part 2), and replaces its own section of e2e/bench/results.md
# (between the `proxy.sh` markers; appended when absent). Everything binds 127.0.0.1 and shares the
# machine's cores: the tables report each process's CPU (cores used while wrk ran) and the machine's
# load, so a busy machine shows.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root="$PWD"
out="$root/e2e/bench/results.md"

parts="http,kafka"; duration=10; threads=2; connections=64; rounds=3; warmup=3; sync_connections=100
# The broker's JVM compiles its hot paths during the first seconds of load (a freshly started
# test Kafka used twice the CPU per request and answered with p99 > 70 ms for its first ~30 s
# under load): the sync-over-async part warms up longer.
sync_warmup=45
write=true
while [ $# -gt 0 ]; do
  case "$1" in
    --parts) parts="$2" ;;
    --duration) duration="$2" ;;
    --threads) threads="$2" ;;
    --connections) connections="$2" ;;
    --rounds) rounds="$2" ;;
    --warmup) warmup="$2" ;;
    --sync-connections) sync_connections="$2" ;;
    --sync-warmup) sync_warmup="$2" ;;
    --write) write="$2" ;;
    *) echo "proxy.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done
args_given="--parts $parts --duration $duration --threads $threads --connections $connections --rounds $rounds --warmup $warmup --sync-connections $sync_connections --sync-warmup $sync_warmup"
log() { echo "[proxy-bench] $*" >&2; }

# ---- tools ----------------------------------------------------------------------------------------
if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
  log "installing nginx-light and wrk (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq nginx-light wrk >/dev/null
fi
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

build=(cargo build --release -p rig-dataplane -p rig-e2e --bin rig-dataplane --bin rig-bench)
log "${build[*]}"
"${build[@]}"
target="${CARGO_TARGET_DIR:-$root/target}/release"
# RIG_DATAPLANE_BIN measures another build of the data plane (e.g. a baseline) with this script.
dataplane="${RIG_DATAPLANE_BIN:-$target/rig-dataplane}"
bench="$target/rig-bench"

work="$(mktemp -d /tmp/rig-proxy-bench.XXXXXX)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# A free loopback port (nothing answers a connect to it).
free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return; fi
  done
}

# Wait until `curl` of a URL answers (any HTTP status), at most 30 s.
wait_http() {
  local url="$1" i
  for i in $(seq 300); do
    if curl -s -m 10 -o /dev/null "$url"; then return 0; fi
    sleep 0.1
  done
  log "$url did not answer within 30 s"; return 1
}

# CPU ticks (user + system) of a process and its children's processes (nginx workers).
clk_tck="$(getconf CLK_TCK)"
ticks_of() {
  local total=0 pid
  for pid in "$@" $(for p in "$@"; do pgrep -P "$p" || true; done); do
    if [ -r "/proc/$pid/stat" ]; then
      total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    fi
  done
  echo "$total"
}
# Machine-wide busy and total ticks from /proc/stat.
machine_ticks() { awk '/^cpu /{idle=$5+$6; t=0; for(i=2;i<=NF;i++) t+=$i; print t-idle, t}' /proc/stat; }
busy() { echo "load average $(cut -d' ' -f1-3 /proc/loadavg), CPU pressure $(sed -n 's/^some //p' /proc/pressure/cpu 2>/dev/null || echo n/a)"; }

# wrk output → "rps p50_ms p99_ms errors" (errors = non-2xx/3xx answers + socket errors).
parse_wrk() {
  awk '
    function ms(v) {
      if (v ~ /us$/) { sub(/us$/, "", v); return v / 1000 }
      if (v ~ /ms$/) { sub(/ms$/, "", v); return v + 0 }
      if (v ~ /m$/)  { sub(/m$/, "", v);  return v * 60000 }
      if (v ~ /s$/)  { sub(/s$/, "", v);  return v * 1000 }
      return v + 0
    }
    /Requests\/sec:/ { rps = $2 }
    /^ +50%/ { p50 = ms($2) }
    /^ +99%/ { p99 = ms($2) }
    /Non-2xx or 3xx responses:/ { errors += $NF }
    /Socket errors:/ { gsub(/[^0-9 ]/, " "); n = split($0, f, " "); for (i = 1; i <= n; i++) errors += f[i] }
    END { printf "%.0f %.3f %.3f %d\n", rps, p50, p99, errors }'
}

# Run wrk; print "rps p50 p99 errors proxy_cores backend_cores machine_busy_share".
# $1 url, $2 connections, $3 seconds, $4 "proxy pids", $5 "backend pids", rest: extra wrk args.
measure() {
  local url="$1" conns="$2" secs="$3" proxy_pids="$4" backend_pids="$5"
  shift 5
  local p0 b0 m0 p1 b1 m1 result
  p0="$(ticks_of $proxy_pids)"; b0="$(ticks_of $backend_pids)"; m0="$(machine_ticks)"
  result="$(wrk -t"$threads" -c"$conns" -d"${secs}s" --latency "$@" "$url" | tee -a "$work/wrk.log" | parse_wrk)"
  p1="$(ticks_of $proxy_pids)"; b1="$(ticks_of $backend_pids)"; m1="$(machine_ticks)"
  awk -v r="$result" -v p0="$p0" -v p1="$p1" -v b0="$b0" -v b1="$b1" -v s="$secs" -v hz="$clk_tck" \
      -v m0="$m0" -v m1="$m1" 'BEGIN {
    split(m0, a, " "); split(m1, b, " ");
    share = (b[2] - a[2]) > 0 ? (b[1] - a[1]) / (b[2] - a[2]) : 0;
    printf "%s %.2f %.2f %.2f\n", r, (p1 - p0) / hz / s, (b1 - b0) / hz / s, share }'
}

# Median of the numbers on stdin (one per line).
median() { sort -g | awk '{v[NR] = $1} END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# An HS256 JWT for JWT_SECRET_KEY $1, valid for an hour.
jwt() {
  local b64url='openssl base64 -A | tr "+/" "-_" | tr -d "="'
  local header payload sig
  header="$(printf '{"alg":"HS256","typ":"JWT"}' | eval "$b64url")"
  payload="$(printf '{"sub":"bench","jti":"bench-1","exp":%d}' "$(( $(date +%s) + 3600 ))" | eval "$b64url")"
  sig="$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -hmac "$1" -binary | eval "$b64url")"
  echo "$header.$payload.$sig"
}

# Start the release data plane with extra env ($@ as K=V), on $inbound/$internal; sets dp_pid.
start_dataplane() {
  local name="$1"; shift
  env -i PATH="$PATH" RUST_LOG="${RUST_LOG:-warn}" RIG_BIND_ADDRESS=127.0.0.1 HOST=127.0.0.1 \
    INBOUND_PORT="$inbound" API_HTTP_PORT="$internal" MAX_CONNECTIONS_PER_MINUTE=0 "$@" \
    "$dataplane" >"$work/$name.log" 2>&1 &
  dp_pid=$!
  pids+=("$dp_pid")
  wait_http "http://127.0.0.1:$internal/health"
}

started="$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
busy_before="$(busy)"
http_table=""; kafka_table=""; notes=()

# ---- 1. HTTP proxy: backend, nginx, rig ------------------------------------------------------------
if [[ ",$parts," == *",http,"* ]]; then
  backend_port="$(free_port)"; nginx_port="$(free_port)"; inbound="$(free_port)"; internal="$(free_port)"
  mkdir -p "$work/backend" "$work/nginx"
  # Backend: nginx answering a fixed 200 on every path from one worker (a fast, cheap backend);
  # keep-alive connections are never closed by request count, for clients and proxies alike.
  cat >"$work/backend/nginx.conf" <<EOF
worker_processes 1;
pid $work/backend/nginx.pid;
error_log $work/backend/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  server {
    listen 127.0.0.1:$backend_port reuseport backlog=4096;
    location / { default_type application/json; return 200 '{"ok":true,"from":"backend"}'; }
  }
}
EOF
  # nginx as the reverse proxy: as many workers as the data plane has threads (tokio: one per
  # core), a keep-alive upstream pool, HTTP/1.1 upstream, access log off. It sets Host (default)
  # and Forwarded, as the data plane does; nginx OSS has no JWT check.
  cat >"$work/nginx/nginx.conf" <<EOF
worker_processes $(nproc);
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  upstream backend {
    server 127.0.0.1:$backend_port;
    keepalive 128;
    keepalive_requests 10000000;
  }
  server {
    listen 127.0.0.1:$nginx_port reuseport backlog=4096;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Forwarded "for=\$remote_addr;by=\$server_addr";
    }
  }
}
EOF
  nginx -p "$work/backend" -e "$work/backend/error.log" -c "$work/backend/nginx.conf" -g 'daemon off;' &
  backend_pid=$!; pids+=("$backend_pid")
  nginx -p "$work/nginx" -e "$work/nginx/error.log" -c "$work/nginx/nginx.conf" -g 'daemon off;' &
  nginx_pid=$!; pids+=("$nginx_pid")
  wait_http "http://127.0.0.1:$backend_port/"
  wait_http "http://127.0.0.1:$nginx_port/"

  secret="proxy-bench-secret"
  token="$(jwt "$secret")"
  routes="$(cat <<EOF
[{"id":"bench","name":"bench","auth_type":"jwt","auth":{"use_header":true,"header_name":"Authorization"},
  "version_data":{"default":{"endpoints":[
    {"id":"open","method":"GET","path_regex":"/open"},
    {"id":"secured","method":"GET","path_regex":"/secured","secured":true}]}},
  "proxy":{"target_url":"http://127.0.0.1","port":$backend_port}}]
EOF
)"
  start_dataplane rig-http PROXY_CONFIG_FILE="$routes" JWT_SECRET_KEY="$secret"
  # Sanity: each configuration answers 200 (and the secured route refuses a request without JWT).
  for url in "http://127.0.0.1:$backend_port/open" "http://127.0.0.1:$nginx_port/open" "http://127.0.0.1:$inbound/open"; do
    code="$(curl -s -m 10 -o /dev/null -w '%{http_code}' "$url")"
    [ "$code" = 200 ] || { log "$url answered $code"; exit 1; }
  done
  code="$(curl -s -m 10 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "http://127.0.0.1:$inbound/secured")"
  [ "$code" = 200 ] || { log "secured route with a JWT answered $code"; exit 1; }
  code="$(curl -s -m 10 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$inbound/secured")"
  [ "$code" = 401 ] || { log "secured route without a JWT answered $code"; exit 1; }

  # name | url | proxy pids | extra wrk args
  configs=(
    "backend direct (ceiling)|http://127.0.0.1:$backend_port/open||"
    "nginx|http://127.0.0.1:$nginx_port/open|$nginx_pid|"
    "rig, no auth|http://127.0.0.1:$inbound/open|$dp_pid|"
    "nginx + JWT header (not checked)|http://127.0.0.1:$nginx_port/secured|$nginx_pid|jwt"
    "rig, secured route (JWT verified)|http://127.0.0.1:$inbound/secured|$dp_pid|jwt"
  )
  log "warm-up: ${warmup}s per configuration"
  for c in "${configs[@]}"; do
    IFS='|' read -r name url ppids extra <<<"$c"
    hdr=(); [ "$extra" = jwt ] && hdr=(-H "Authorization: Bearer $token")
    measure "$url" "$connections" "$warmup" "$ppids" "$backend_pid" "${hdr[@]}" >/dev/null
  done
  declare -A results
  for round in $(seq "$rounds"); do
    for c in "${configs[@]}"; do
      IFS='|' read -r name url ppids extra <<<"$c"
      hdr=(); [ "$extra" = jwt ] && hdr=(-H "Authorization: Bearer $token")
      r="$(measure "$url" "$connections" "$duration" "$ppids" "$backend_pid" "${hdr[@]}")"
      log "round $round: $name: rps p50 p99 errors proxy-cores backend-cores machine-busy = $r"
      results["$name"]+="$r"$'\n'
    done
  done
  col() { printf '%s' "${results[$1]}" | awk -v k="$2" 'NF {print $k}' | median; }
  nginx_rps="$(col nginx 1)"; nginx_jwt_rps="$(col 'nginx + JWT header (not checked)' 1)"
  http_table+="| configuration | requests/s (median of $rounds) | per round | p50 (ms) | p99 (ms) | errors | proxy CPU (cores) | proxy CPU per request (µs) | backend CPU (cores) | machine busy | rig / nginx |"$'\n'
  http_table+="|---|---|---|---|---|---|---|---|---|---|---|"$'\n'
  for c in "${configs[@]}"; do
    IFS='|' read -r name url ppids extra <<<"$c"
    rps="$(col "$name" 1)"
    per_round="$(printf '%s' "${results[$name]}" | awk 'NF {printf "%s%s", sep, $1; sep=" / "}')"
    errors="$(printf '%s' "${results[$name]}" | awk 'NF {s += $4} END {print s + 0}')"
    ratio="—"
    case "$name" in
      "rig, no auth") ratio="$(awk -v a="$rps" -v b="$nginx_rps" 'BEGIN {printf "**%.2f×**", a / b}')" ;;
      "rig, secured"*) ratio="$(awk -v a="$rps" -v b="$nginx_jwt_rps" 'BEGIN {printf "**%.2f×** (vs nginx + header)", a / b}')" ;;
    esac
    proxy_cpu="—"; per_request="—"
    if [ -n "$ppids" ]; then
      proxy_cpu="$(col "$name" 5)"
      # Per round, then the median: CPU time per request is what contention distorts least.
      per_request="$(printf '%s' "${results[$name]}" | awk 'NF && $1 > 0 {printf "%.1f\n", $5 / $1 * 1e6}' | median)"
    fi
    busy_share="$(col "$name" 7 | awk '{printf "%.0f %%", $1 * 100}')"
    http_table+="| $name | $rps | $per_round | $(col "$name" 2) | $(col "$name" 3) | $errors | $proxy_cpu | $per_request | $(col "$name" 6) | $busy_share | $ratio |"$'\n'
  done
  kill "$dp_pid" "$nginx_pid" "$backend_pid" 2>/dev/null || true
  wait "$dp_pid" "$nginx_pid" "$backend_pid" 2>/dev/null || true
fi

# ---- 2. Sync-over-async through Kafka ----------------------------------------------------------------
if [[ ",$parts," == *",kafka,"* ]]; then
  env_file="${RIG_ENV_FILE:-$root/e2e/.run/env}"
  brokers="$(sed -n 's/^KAFKA_BROKERS=//p' "$env_file" 2>/dev/null | tail -n1 || true)"
  first="${brokers%%,*}"
  if [ -z "$brokers" ] || ! (exec 3<>"/dev/tcp/${first%:*}/${first##*:}") 2>/dev/null; then
    log "starting the test Kafka"
    bash e2e/env/kafka.sh up
    brokers="$(sed -n 's/^KAFKA_BROKERS=//p' "$env_file" | tail -n1)"
    first="${brokers%%,*}"
  fi
  kafka_pid="$(ss -ltnpH "sport = :${first##*:}" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -n1)"
  suffix="$(date +%s)-$RANDOM"
  requests="rig-bench-sync-requests-$suffix"; responses="rig-bench-sync-responses-$suffix"
  # The responder runs until SIGTERM, then prints its counters.
  "$bench" responder --brokers "$brokers" --requests "$requests" --responses "$responses" \
    </dev/null >"$work/responder.out" 2>"$work/responder.log" &
  responder_pid=$!; pids+=("$responder_pid")
  for i in $(seq 300); do grep -q ready "$work/responder.out" 2>/dev/null && break; sleep 0.1; done
  grep -q ready "$work/responder.out" || { log "responder not ready: $(cat "$work/responder.log")"; exit 1; }

  inbound="$(free_port)"; internal="$(free_port)"
  routes="$(cat <<EOF
[{"id":"sync","name":"sync","version_data":{"default":{"endpoints":[
    {"id":"sync","method":"POST","path_regex":"/sync","target":"kafka","topic":"$requests","response_from":"kafka"}]}},
  "proxy":{"target_url":"http://127.0.0.1","port":9}}]
EOF
)"
  start_dataplane rig-kafka PROXY_CONFIG_FILE="$routes" KAFKA_BROKERS="$brokers" \
    KAFKA_SOURCE_TOPICS="rig-bench-sync-unused-$suffix" PROXY_KAFKA_RESPONSE_TOPICS="$responses" \
    PROXY_KAFKA_RESPONSE_TIMEOUT=5000
  for i in $(seq 300); do
    n="$(curl -s -m 5 "http://127.0.0.1:$internal/metrics" | awk '/^rig_proxy_response_partitions /{print $2}' || true)"
    [ "${n:-0}" -ge 1 ] 2>/dev/null && break
    sleep 0.1
  done
  body='{"specversion":"1.0","type":"bench.sync","source":"/bench","id":"1","datacontenttype":"application/json","data":{"order":42}}'
  code="$(curl -s -m 30 -o /dev/null -w '%{http_code}' -H 'content-type: application/json' -d "$body" "http://127.0.0.1:$inbound/sync")"
  [ "$code" = 200 ] || { log "sync-over-async request answered $code"; exit 1; }
  cat >"$work/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
EOF
  log "sync-over-async warm-up: ${sync_warmup}s"
  measure "http://127.0.0.1:$inbound/sync" "$sync_connections" "$sync_warmup" "$dp_pid" "$responder_pid" -s "$work/post.lua" >/dev/null
  for round in $(seq "$rounds"); do
    k0="$(ticks_of $kafka_pid)"
    r="$(measure "http://127.0.0.1:$inbound/sync" "$sync_connections" "$duration" "$dp_pid" "$responder_pid" -s "$work/post.lua")"
    k1="$(ticks_of $kafka_pid)"
    kafka_cores="$(awk -v a="$k0" -v b="$k1" -v s="$duration" -v hz="$clk_tck" 'BEGIN {printf "%.2f", (b - a) / hz / s}')"
    log "sync round $round: rps p50 p99 errors rig-cores responder-cores machine-busy = $r; broker cores $kafka_cores"
    sync_results+="$r $kafka_cores"$'\n'
  done
  scol() { printf '%s' "$sync_results" | awk -v k="$1" 'NF {print $k}' | median; }
  kill -TERM "$responder_pid" 2>/dev/null || true
  wait "$responder_pid" 2>/dev/null || true
  kafka_table+="| clients | requests/s (median of $rounds) | per round | p50 (ms) | p99 (ms) | errors (non-2xx, socket) | data-plane CPU (cores) | responder CPU | broker CPU | machine busy | must ≥ 5k/s, p99 < 50 ms |"$'\n'
  kafka_table+="|---|---|---|---|---|---|---|---|---|---|---|"$'\n'
  rps="$(scol 1)"; p99="$(scol 3)"
  verdict="$(awk -v r="$rps" -v p="$p99" 'BEGIN {print (r >= 5000 && p < 50) ? "meets" : "**misses**"}')"
  kafka_table+="| $sync_connections | $rps | $(printf '%s' "$sync_results" | awk 'NF {printf "%s%s", sep, $1; sep=" / "}') | $(scol 2) | $p99 | $(printf '%s' "$sync_results" | awk 'NF {s += $4} END {print s + 0}') | $(scol 5) | $(scol 6) | $(scol 8) | $(scol 7 | awk '{printf "%.0f %%", $1 * 100}') | $verdict |"$'\n'
  notes+=("Responder: $(tail -n1 "$work/responder.log")")
  kill "$dp_pid" 2>/dev/null || true
  wait "$dp_pid" 2>/dev/null || true
fi
busy_after="$(busy)"

section="$(
  echo "<!-- proxy.sh: begin -->"
  echo "## Reverse proxy and sync-over-async (\`e2e/bench/proxy.sh\`)"
  echo
  echo "Run: $started, commit \`$(git rev-parse --short HEAD)\`$(git diff --quiet HEAD -- dataplane || echo ' (with uncommitted data-plane changes)'); $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), Linux $(uname -r); $(nginx -v 2>&1 | sed 's/^nginx version: //'), $(wrk -v 2>&1 | head -n1 | awk '{print "wrk " $2}')."
  echo "Other work on the machine: before $busy_before; after $busy_after."
  echo
  echo '```'
  echo "${RIG_DATAPLANE_BIN:+RIG_DATAPLANE_BIN=$RIG_DATAPLANE_BIN }bash e2e/bench/proxy.sh $args_given"
  echo "# HTTP: wrk -t$threads -c$connections -d${duration}s --latency URL  [-H 'Authorization: Bearer <HS256 JWT>']"
  echo "# sync-over-async: wrk -t$threads -c$sync_connections -d${duration}s --latency -s post.lua http://127.0.0.1:<inbound>/sync"
  echo '```'
  if [ -n "$http_table" ]; then
    echo
    echo "### Reverse proxy, one backend, wrk $threads threads × $connections connections × ${duration} s (DESIGN §7: rig ≥ 0.8× nginx, aim 1.2×)"
    echo
    printf '%s' "$http_table"
    echo
    echo "Backend: nginx, 1 worker, a fixed 30-byte JSON 200 on every path. nginx proxy: $(nproc) workers"
    echo "(the data plane runs one tokio worker per core), upstream keep-alive pool, HTTP/1.1 upstream,"
    echo "access log off, \`Host\` and \`Forwarded\` set. rig: release \`rig-dataplane\`, \`RUST_LOG=warn\`,"
    echo "a \`PROXY_CONFIG_FILE\` API with \`/open\` and \`/secured\` (\`auth_type: jwt\`, HS256 bearer token)"
    echo "to the same backend; rig also drops hop-by-hop headers, adds \`traceparent\`, counts"
    echo "\`rig_proxy_requests_total\` and the upstream latency histogram. Each configuration: ${warmup} s"
    echo "warm-up, then $rounds rounds of ${duration} s interleaved (configurations in turn); medians per column."
    echo "CPU = user+system time of the proxy's processes (nginx: master + workers) / wall time; per"
    echo "request = that CPU time / requests (median over rounds), the figure contention distorts least;"
    echo "machine busy = non-idle share of all cores. wrk, backend and proxy share the $(nproc) cores:"
    echo "requests/s is what the pair proxy + backend sustains beside the load generator."
  fi
  if [ -n "$kafka_table" ]; then
    echo
    echo "### Sync-over-async through the real Kafka (DESIGN §7: ≥ 5k req/s, p99 < 50 ms; aim ≥ 20k, p99 < 15 ms)"
    echo
    printf '%s' "$kafka_table"
    echo
    echo "A RIG definition \`POST /sync\` → \`target: kafka\` (one-partition request topic), \`response_from: kafka\`"
    echo "(one-partition response topic in \`PROXY_KAFKA_RESPONSE_TOPICS\`); wrk POSTs a 130-byte CloudEvent"
    echo "from $sync_connections keep-alive connections (closed loop: each waits for its answer). The responder"
    echo "(\`rig-bench responder\`) reads the request topic and produces each correlated response at once"
    echo "(\`linger.ms=0\`, \`acks=1\`). Data plane: producer \`acks=all\`, \`linger.ms=1\`; response consumer"
    echo "\`fetch.wait.max.ms=10\`; Nagle off on every Kafka connection (\`socket.nagle.disable\`). The broker"
    echo "is the single-node test Kafka (KRaft, JVM) on the same cores."
    for n in "${notes[@]}"; do echo; echo "$n"; done
  fi
  echo "<!-- proxy.sh: end -->"
)"
printf '%s\n' "$section"
if [ "$write" = true ]; then
  printf '%s\n' "$section" >"$work/section.md"
  if grep -q '<!-- proxy.sh: begin -->' "$out" 2>/dev/null; then
    awk -v f="$work/section.md" 'BEGIN {while ((getline l < f) > 0) s = s l "\n"}
      /<!-- proxy.sh: begin -->/ {printf "%s", s; skip = 1; next}
      /<!-- proxy.sh: end -->/ {skip = 0; next}
      !skip' "$out" >"$work/results.md"
    cp "$work/results.md" "$out"
  else
    { echo; printf '%s\n' "$section"; } >>"$out"
  fi
  log "wrote the section to $out"
fi
