#!/usr/bin/env bash
# A real kube-apiserver backed by a real etcd, plus helm, all built from the Go module proxy.
#
#   kube.sh install   build kube-apiserver, etcd and helm into $RIG_CACHE/bin (once per version)
#   kube.sh up        generate PKI, start etcd + kube-apiserver on free 127.0.0.1 ports, write the
#                     kubeconfigs and the KUBECONFIG / KUBECONFIG_UNPRIVILEGED (a user with no RBAC
#                     bindings) / KUBE_APISERVER / HELM / KUBECTL env lines
#   kube.sh down      stop what `up` started (by pid) and remove its data
#
# Why wrapper modules: k8s.io/kubernetes (and go.etcd.io/etcd/server/v3) `replace` their sibling
# modules with relative paths (./staging/src/k8s.io/..., ../api), which `go install pkg@version`
# refuses. We generate a small module that requires the release and maps each of those siblings to
# its published version instead (k8s.io/<x> v0.N.M for kubernetes v1.N.M; etcd siblings at the same
# tag), then `go build` the command from it.
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

K8S_VERSION="${K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${HELM_VERSION:-v3.19.5}"

BIN_DIR="$RIG_CACHE/bin"
BUILD_DIR="$RIG_CACHE/build"
KUBE_APISERVER_BIN="$BIN_DIR/kube-apiserver-$K8S_VERSION"
ETCD_BIN="$BIN_DIR/etcd-$ETCD_VERSION"
HELM_BIN="$BIN_DIR/helm-$HELM_VERSION"
KUBECTL="${KUBECTL:-kubectl}"

KUBE_RUN="$RIG_RUN/kube"
PKI="$KUBE_RUN/pki"
KUBECONFIG_FILE="$KUBE_RUN/kubeconfig"

# ---------------------------------------------------------------------------------------------
# install
# ---------------------------------------------------------------------------------------------

# shellcheck source=gobuild.sh
source "$(dirname "${BASH_SOURCE[0]}")/gobuild.sh"

install_kube_apiserver() {
  local marker="$KUBE_APISERVER_BIN.ok"
  [ -x "$KUBE_APISERVER_BIN" ] && [ -f "$marker" ] && return 0
  local gomod staging_version replaces
  gomod="$(gomod_of "k8s.io/kubernetes@$K8S_VERSION")" && [ -f "$gomod" ] ||
    die "install kube-apiserver" "cannot download k8s.io/kubernetes@$K8S_VERSION go.mod from the module proxy"
  # kubernetes v1.N.M publishes its staging modules as k8s.io/<x> v0.N.M.
  staging_version="v0.${K8S_VERSION#v1.}"
  replaces="$(relative_replaces "$gomod" | awk -v v="$staging_version" '$1 ~ /^k8s\.io\// { printf "\t%s => %s %s\n", $1, $1, v }')"
  [ -n "$replaces" ] || die "install kube-apiserver" "no staging replace lines found in $gomod"
  # Stamp the version the way the release build does, or the server reports v0.0.0-master and
  # clients that check it (helm's kubeVersion constraints, kubectl's skew warning) misbehave.
  local minor="${K8S_VERSION#v1.}" ldflags="" p
  minor="${minor%%.*}"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  build_wrapped "install kube-apiserver" "kube-apiserver-$K8S_VERSION" "$KUBE_APISERVER_BIN" \
    k8s.io/kubernetes/cmd/kube-apiserver "k8s.io/kubernetes $K8S_VERSION" "$replaces" "$ldflags"
  touch "$marker"
}

# The node's Kubernetes commands for the kind path (e2e/kind/offline.sh), from the same wrapper
# module, version and stamp as kube-apiserver, in one `go build` (they share most packages), into
# $KUBE_NODE_DIR. CGO off: they run in images with no C library.
KUBE_NODE_DIR="$BIN_DIR/kubernetes-$K8S_VERSION"
KUBE_NODE_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubeadm kubectl)

install_kube_node() {
  local marker="$KUBE_NODE_DIR/.ok"
  [ -f "$marker" ] && return 0
  local gomod staging_version replaces minor="${K8S_VERSION#v1.}" ldflags="-s -w" p c
  gomod="$(gomod_of "k8s.io/kubernetes@$K8S_VERSION")" && [ -f "$gomod" ] ||
    die "install kubernetes node" "cannot download k8s.io/kubernetes@$K8S_VERSION go.mod"
  staging_version="v0.${K8S_VERSION#v1.}"
  replaces="$(relative_replaces "$gomod" | awk -v v="$staging_version" '$1 ~ /^k8s\.io\// { printf "\t%s => %s %s\n", $1, $1, v }')"
  minor="${minor%%.*}"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  local dir="$BUILD_DIR/kubernetes-node-$K8S_VERSION" logf="$BUILD_DIR/kubernetes-node-$K8S_VERSION.log"
  mkdir -p "$dir" "$KUBE_NODE_DIR"
  rm -f "$dir/go.mod" "$dir/go.sum"
  {
    printf 'module rigwrapper/kubernetes-node\n\ngo 1.24.0\n\nrequire k8s.io/kubernetes %s\n' "$K8S_VERSION"
    printf '\nreplace (\n%s\n)\n' "$replaces"
  } >"$dir/go.mod"
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for c in "${KUBE_NODE_CMDS[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c"; done
    printf ')\n'
  } >"$dir/tools.go"
  local pkgs=()
  for c in "${KUBE_NODE_CMDS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  log "building the Kubernetes $K8S_VERSION node commands (the slow part of a cold kind run; log: $logf)"
  local t0=$SECONDS
  (
    cd "$dir"
    export CGO_ENABLED=0
    go mod tidy -e &&
      go build -trimpath -mod=mod -ldflags="$ldflags" -o "$KUBE_NODE_DIR/" "${pkgs[@]}"
  ) >"$logf" 2>&1 || die "install kubernetes node" "go build failed; see $logf"
  touch "$marker"
  log "built the node commands in $((SECONDS - t0))s"
}

install_etcd() {
  local marker="$ETCD_BIN.ok"
  [ -x "$ETCD_BIN" ] && [ -f "$marker" ] && return 0
  local gomod replaces
  gomod="$(gomod_of "go.etcd.io/etcd/server/v3@$ETCD_VERSION")" && [ -f "$gomod" ] ||
    die "install etcd" "cannot download go.etcd.io/etcd/server/v3@$ETCD_VERSION go.mod from the module proxy"
  # Siblings (api/v3, client/pkg/v3, client/v3, pkg/v3) are tagged together with the server.
  replaces="$(relative_replaces "$gomod" | awk -v v="$ETCD_VERSION" '$1 ~ /^go\.etcd\.io\/etcd\// { printf "\t%s => %s %s\n", $1, $1, v }')"
  build_wrapped "install etcd" "etcd-$ETCD_VERSION" "$ETCD_BIN" \
    go.etcd.io/etcd/server/v3 "go.etcd.io/etcd/server/v3 $ETCD_VERSION" "$replaces"
  touch "$marker"
}

install_helm() {
  local marker="$HELM_BIN.ok"
  [ -x "$HELM_BIN" ] && [ -f "$marker" ] && return 0
  build_wrapped "install helm" "helm-$HELM_VERSION" "$HELM_BIN" \
    helm.sh/helm/v3/cmd/helm "helm.sh/helm/v3 $HELM_VERSION" "" \
    "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  touch "$marker"
}

cmd_install() {
  command -v go >/dev/null || die "install" "go is not on PATH"
  mkdir -p "$BUILD_DIR" "$BIN_DIR"
  # Two installs at once (two checkouts sharing the cache) would write the same wrapper modules.
  exec 9>"$BUILD_DIR/.lock"
  flock -w 3600 9 || die "install" "another install holds $BUILD_DIR/.lock"
  install_etcd
  install_helm
  install_kube_apiserver
}

cmd_install_node() {
  command -v go >/dev/null || die "install" "go is not on PATH"
  mkdir -p "$BUILD_DIR" "$BIN_DIR"
  exec 9>"$BUILD_DIR/.lock"
  flock -w 3600 9 || die "install" "another install holds $BUILD_DIR/.lock"
  install_etcd
  install_helm
  install_kube_node
}

# ---------------------------------------------------------------------------------------------
# up / down
# ---------------------------------------------------------------------------------------------

# sign NAME SUBJECT EXTENSIONS: key + certificate signed by our CA, in $PKI/NAME.{key,crt}.
sign() {
  local name="$1" subj="$2" ext="$3" logf="$PKI/openssl.log"
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$PKI/$name.key" -out "$PKI/$name.csr" -subj "$subj" >>"$logf" 2>&1 &&
    printf '%s\n' "$ext" >"$PKI/$name.ext" &&
    openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
      -days 3650 -sha256 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" >>"$logf" 2>&1 ||
    die "generate pki" "cannot create the $name certificate; see $logf"
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

ensure_pki() {
  [ -f "$PKI/done" ] && return 0
  rm -rf "$PKI" && mkdir -p "$PKI"
  local logf="$PKI/openssl.log"
  log "generating PKI in $PKI"
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$PKI/ca.key" -out "$PKI/ca.crt" -days 3650 -sha256 -subj "/CN=rig-e2e-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    >>"$logf" 2>&1 || die "generate pki" "cannot create the CA; see $logf"
  sign apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  local client="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  sign admin "/O=system:masters/CN=rig-e2e-admin" "$client"
  # A user with no RBAC bindings at all: used to prove authorization is enforced.
  sign nobody "/CN=rig-e2e-nobody" "$client"
  openssl genrsa -out "$PKI/sa.key" 2048 >>"$logf" 2>&1 &&
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" >>"$logf" 2>&1 ||
    die "generate pki" "cannot create the service-account key pair; see $logf"
  touch "$PKI/done"
}

# write_kubeconfig FILE USER SERVER
write_kubeconfig() {
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: rig-e2e
  cluster:
    server: $3
    certificate-authority: $PKI/ca.crt
users:
- name: $2
  user:
    client-certificate: $PKI/$2.crt
    client-key: $PKI/$2.key
contexts:
- name: rig-e2e
  context:
    cluster: rig-e2e
    user: $2
current-context: rig-e2e
EOF
}

# distinct_ports N: N different free loopback ports, space separated.
distinct_ports() {
  local -a ports=()
  local p
  while ((${#ports[@]} < $1)); do
    p="$(free_port)"
    [[ " ${ports[*]} " == *" $p "* ]] || ports+=("$p")
  done
  echo "${ports[*]}"
}

etcd_healthy() { [[ "$(curl -fsS --max-time 5 "http://127.0.0.1:$1/health")" == *'"health":"true"'* ]]; }
# ready_or_dead NAME CHECK...: true when CHECK passes or when process NAME is gone (so we fail fast).
ready_or_dead() { local name="$1"; shift; ! pid_alive "$name" || "$@"; }
kube_ready() {
  "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" --request-timeout=5s get --raw /readyz &&
    "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" --request-timeout=5s get namespace default
}

cmd_up() {
  if pid_alive etcd && pid_alive kube-apiserver && [ -f "$KUBECONFIG_FILE" ] && kube_ready >/dev/null 2>&1; then
    log "kube-apiserver already running at $(env_get KUBE_APISERVER)"
    return 0
  fi
  # Half-running leftovers (one process died): start from scratch.
  cmd_down >/dev/null 2>&1 || true

  for b in "$ETCD_BIN" "$KUBE_APISERVER_BIN" "$HELM_BIN"; do
    [ -x "$b" ] || die "up" "$b is missing; run '$0 install' first"
  done
  command -v "$KUBECTL" >/dev/null || die "up" "kubectl is not on PATH"
  mkdir -p "$KUBE_RUN"
  ensure_pki

  # A failed `up` stops what it started (logs stay in $RIG_RUN for the post-mortem).
  trap 'rc=$?; if ((rc != 0)); then stop_bg kube-apiserver; stop_bg etcd; fi' EXIT

  local etcd_client etcd_peer api_port
  read -r etcd_client etcd_peer api_port <<<"$(distinct_ports 3)"

  log "starting etcd $ETCD_VERSION on 127.0.0.1:$etcd_client"
  rm -rf "$KUBE_RUN/etcd"
  start_bg etcd "$ETCD_BIN" \
    --name rig-e2e \
    --data-dir "$KUBE_RUN/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_client" \
    --advertise-client-urls "http://127.0.0.1:$etcd_client" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "rig-e2e=http://127.0.0.1:$etcd_peer" \
    --initial-cluster-state new \
    --unsafe-no-fsync \
    --log-level warn
  wait_until "start etcd" 60 ready_or_dead etcd etcd_healthy "$etcd_client"
  pid_alive etcd || die "start etcd" "etcd exited; see $RIG_RUN/etcd.log"

  local server="https://127.0.0.1:$api_port"
  log "starting kube-apiserver $K8S_VERSION on $server"
  write_kubeconfig "$KUBECONFIG_FILE" admin "$server"
  write_kubeconfig "$KUBE_RUN/kubeconfig-nobody" nobody "$server"
  mkdir -p "$KUBE_RUN/apiserver-certs"
  # Only the apiserver runs (no controller-manager, scheduler or kubelet), so admission plugins
  # that need their controllers are off: ServiceAccount would reject every Pod because nothing
  # creates the `default` service account. Everything else is the upstream default set.
  start_bg kube-apiserver "$KUBE_APISERVER_BIN" \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    --secure-port="$api_port" \
    --cert-dir="$KUBE_RUN/apiserver-certs" \
    --etcd-servers="http://127.0.0.1:$etcd_client" \
    --authorization-mode=Node,RBAC \
    --client-ca-file="$PKI/ca.crt" \
    --tls-cert-file="$PKI/apiserver.crt" \
    --tls-private-key-file="$PKI/apiserver.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" \
    --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --disable-admission-plugins=ServiceAccount \
    --allow-privileged=true \
    --profiling=false \
    --v=1
  wait_until "start kube-apiserver" 120 ready_or_dead kube-apiserver kube_ready
  pid_alive kube-apiserver || die "start kube-apiserver" "kube-apiserver exited; see $RIG_RUN/kube-apiserver.log"

  # RBAC must really be enforced: a user without bindings is forbidden to list namespaces.
  local out
  out="$("$KUBECTL" --kubeconfig "$KUBE_RUN/kubeconfig-nobody" get namespaces 2>&1)" &&
    die "check rbac" "an unprivileged user could list namespaces; see $RIG_RUN/kube-apiserver.log"
  [[ "$out" == *Forbidden* || "$out" == *forbidden* ]] ||
    die "check rbac" "expected 403 Forbidden for an unprivileged user, got: $out"

  trap - EXIT
  env_set KUBECONFIG "$KUBECONFIG_FILE"
  env_set KUBECONFIG_UNPRIVILEGED "$KUBE_RUN/kubeconfig-nobody"
  env_set KUBE_APISERVER "$server"
  env_set HELM "$HELM_BIN"
  env_set KUBECTL "$KUBECTL"
  log "kube-apiserver ready at $server (KUBECONFIG=$KUBECONFIG_FILE)"
}

cmd_down() {
  stop_bg kube-apiserver
  stop_bg etcd
  rm -rf "$KUBE_RUN/etcd" "$KUBE_RUN/apiserver-certs"
  for k in KUBECONFIG KUBECONFIG_UNPRIVILEGED KUBE_APISERVER HELM KUBECTL; do env_unset "$k"; done
  log "kube-apiserver and etcd stopped"
}

main() {
  case "${1:-}" in
    install) cmd_install ;;
    install-node) cmd_install_node ;;
    up) cmd_up ;;
    down) cmd_down ;;
    *) echo "usage: $0 install|install-node|up|down" >&2; return 2 ;;
  esac
}

# One line, so bash has parsed it all before running: editing this file mid-run cannot bite.
main "$@"; exit $?
