#!/usr/bin/env bash
# Everything the kind path needs, built without any container registry: for machines whose
# network reaches only the package registries (Debian, the Go module proxy, Maven Central).
#
#   bash e2e/kind/offline.sh tools        kind (and kubectl, helm) from the Go module proxy
#   bash e2e/kind/offline.sh node-image   the kind node image $OFFLINE_NODE_IMAGE
#   bash e2e/kind/offline.sh kafka-image  $KAFKA_IMAGE from Debian's JRE and the Maven-built Kafka
#   bash e2e/kind/offline.sh app-images TAG  rig-operator:TAG and rig-dataplane:TAG from the
#                                         release binaries (the Dockerfiles' runtime, no registry)
#
# Built artefacts are cached under $RIG_CACHE/kind-offline, keyed by version: the Go binaries, the
# Debian root filesystems, and each image as a saved tarball (a later run `docker load`s it). The
# node image: Kubernetes $K8S_VERSION binaries from e2e/env/kube.sh (one build with the test
# apiserver's), etcd, CoreDNS and crictl from the module proxy, pause compiled from the Kubernetes
# module's source, on kind's base image rebuilt from a debootstrap root filesystem with kind's own
# files (from the kind module). Single node: kind's CNI (kindnetd) is replaced by a bridge
# configuration, its storage provisioner by a placeholder (no dynamic volumes).
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=../env/gobuild.sh
source "$RIG_REPO/e2e/env/gobuild.sh"

OFF="$RIG_CACHE/kind-offline"
BUILD_DIR="$OFF/build"
BIN_DIR="$OFF/bin"
ROOTFS="$OFF/rootfs"
IMAGES="$OFF/images"
KUBE_BIN="$RIG_CACHE/bin/kubernetes-$K8S_VERSION"
KIND_MOD="$GOMODCACHE/sigs.k8s.io/kind@$KIND_VERSION"
DEBIAN_MIRROR="${RIG_KIND_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
mkdir -p "$BUILD_DIR" "$BIN_DIR" "$ROOTFS" "$IMAGES"

# ---- tools -----------------------------------------------------------------------------------

cmd_tools() {
  if [ ! -x "$KIND_BIN" ]; then
    log "building kind $KIND_VERSION from the Go module proxy"
    local tmp
    tmp="$(mktemp -d)"
    CGO_ENABLED=0 GOBIN="$tmp" go install "sigs.k8s.io/kind@$KIND_VERSION" >"$BUILD_DIR/kind.log" 2>&1 ||
      die "kind" "go install sigs.k8s.io/kind@$KIND_VERSION failed; see $BUILD_DIR/kind.log"
    mkdir -p "$(dirname "$KIND_BIN")"
    mv "$tmp/kind" "$KIND_BIN"
    rm -rf "$tmp"
  fi
  # kubectl, kubelet & co. and helm: the test environment's builds.
  bash "$RIG_REPO/e2e/env/kube.sh" install-node
}

# ---- Go binaries of the node ------------------------------------------------------------------

# static_build NAME MODULE VERSION PKG SIBLINGS [LDFLAGS]: a static binary $BIN_DIR/NAME-VERSION.
# Modules under the SIBLINGS prefix that MODULE replaces by relative paths (etcd's) are mapped to
# their published versions at the same tag.
static_build() {
  local name="$1" module="$2" version="$3" pkg="$4" siblings="$5" ldflags="${6:-}" out="$BIN_DIR/$1-$3"
  [ -x "$out" ] && return 0
  local gomod replaces=""
  gomod="$(gomod_of "$module@$version")" || die "$name" "cannot download $module@$version"
  if [ -n "$siblings" ]; then
    replaces="$(relative_replaces "$gomod" | awk -v v="$version" -v m="$siblings" \
      'index($1, m) == 1 { printf "\t%s => %s %s\n", $1, $1, v }')"
  fi
  CGO_ENABLED=0 build_wrapped "$name" "$name-$version" "$out" "$pkg" "$module $version" "$replaces" "$ldflags"
}

node_binaries() {
  static_build etcd go.etcd.io/etcd/server/v3 "$ETCD_NODE_VERSION" go.etcd.io/etcd/server/v3 go.etcd.io/etcd/
  static_build crictl sigs.k8s.io/cri-tools "$CRICTL_VERSION" sigs.k8s.io/cri-tools/cmd/crictl "" \
    "-X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION"
  static_build coredns github.com/coredns/coredns "$COREDNS_VERSION" github.com/coredns/coredns ""
  local pause="$BIN_DIR/pause-$K8S_VERSION"
  if [ ! -x "$pause" ]; then
    local src="$GOMODCACHE/k8s.io/kubernetes@$K8S_VERSION/build/pause/linux/pause.c"
    [ -f "$src" ] || gomod_of "k8s.io/kubernetes@$K8S_VERSION" >/dev/null
    gcc -Os -static -o "$pause" "$src" -DVERSION="$PAUSE_VERSION" || die "pause" "gcc -static $src failed"
  fi
}

# ---- root filesystems ------------------------------------------------------------------------

# The packages of kind's images/base/Dockerfile, from Debian instead of kind's own builds.
NODE_PACKAGES="systemd,systemd-sysv,libsystemd0,iptables,nftables,iproute2,conntrack,ethtool,util-linux,mount,kmod,libseccomp2,pigz,ca-certificates,procps,bash,jq,containerd,runc,containernetworking-plugins,socat,ebtables,fuse-overlayfs,zstd"
PROXY_PACKAGES="iptables,nftables,conntrack,ca-certificates"
KAFKA_PACKAGES="openjdk-17-jre-headless,ca-certificates,bash"

# rootfs NAME PACKAGES: a debootstrap minbase root filesystem as $ROOTFS/NAME-<suite>.tar.
rootfs() {
  local name="$1" packages="$2" tar="$ROOTFS/$1-$DEBIAN_SUITE.tar"
  [ -s "$tar" ] && return 0
  command -v debootstrap >/dev/null || {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null 2>&1 ||
      die "rootfs" "debootstrap is needed (apt-get install debootstrap)"
  }
  local dir="$BUILD_DIR/rootfs-$name"
  rm -rf "$dir"
  log "debootstrap $DEBIAN_SUITE for the $name image (log: $BUILD_DIR/rootfs-$name.log)"
  debootstrap --variant=minbase --include="$packages" "$DEBIAN_SUITE" "$dir" "$DEBIAN_MIRROR" \
    >"$BUILD_DIR/rootfs-$name.log" 2>&1 || die "rootfs" "debootstrap failed; see $BUILD_DIR/rootfs-$name.log"
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
  tar --numeric-owner -C "$dir" -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
  rm -rf "$dir"
}

# ---- images ----------------------------------------------------------------------------------

have_image() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

# cached_image IMAGE FILE: load IMAGE from its saved FILE when the engine lacks it; true when it
# is there afterwards.
cached_image() {
  have_image "$1" && return 0
  [ -s "$2" ] || return 1
  log "loading $1 from $2"
  "$DOCKER" load -i "$2" >/dev/null && have_image "$1"
}

# import_dir IMAGE DIR [CHANGE...]: DIR as a one-layer image.
import_dir() {
  local image="$1" dir="$2"
  shift 2
  local changes=() c
  for c in "$@"; do changes+=(-c "$c"); done
  tar --numeric-owner -C "$dir" -c . | "$DOCKER" import ${changes[@]+"${changes[@]}"} - "$image" >/dev/null ||
    die "image $image" "docker import failed"
}

# static_image IMAGE BINARY NAME [ENTRYPOINT]: BINARY as /usr/local/bin/NAME of an otherwise
# empty image.
static_image() {
  local dir
  dir="$(mktemp -d)"
  mkdir -p "$dir/usr/local/bin" "$dir/etc" "$dir/tmp"
  chmod 1777 "$dir/tmp"
  install -m 0755 "$2" "$dir/usr/local/bin/$3"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532::/home/nonroot:/sbin/nologin\n' >"$dir/etc/passwd"
  local changes=('ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin')
  [ -n "${4:-}" ] && changes+=("ENTRYPOINT [\"$4\"]")
  import_dir "$1" "$dir" "${changes[@]}"
  rm -rf "$dir"
}

base_image() {
  local image="rig.local/kind-base:$DEBIAN_SUITE-$KIND_VERSION" file="$IMAGES/kind-base-$DEBIAN_SUITE-$KIND_VERSION.tar"
  cached_image "$image" "$file" && return 0
  rootfs node "$NODE_PACKAGES"
  node_binaries
  local root="$BUILD_DIR/base-root" files="$KIND_MOD/images/base/files"
  [ -d "$files" ] || die "base image" "kind's base files are missing: $files"
  rm -rf "$root" && mkdir -p "$root"
  tar -C "$root" -xf "$ROOTFS/node-$DEBIAN_SUITE.tar"
  log "assembling kind's base image from the $DEBIAN_SUITE root filesystem and kind's files"
  # kind's files (entrypoint, systemd units, containerd config, crictl config, ...).
  cp -a "$files/." "$root/"
  chmod -R u+w "$root"
  chmod 0755 "$root/kind" "$root/kind/bin" "$root"/kind/bin/* "$root"/usr/local/bin/*
  # Debian's containerd is in /usr/bin (kind's units want /usr/local/bin); kind v0.33 drives
  # containerd 2's ctr: the shim maps the two commands Debian's ctr lacks.
  ln -sf /usr/bin/containerd "$root/usr/local/bin/containerd"
  install -m 0755 "$KIND_SCRIPTS/offline/ctr-shim" "$root/usr/local/bin/ctr"
  mkdir -p "$root/opt/cni/bin"
  cp -a "$root"/usr/lib/cni/. "$root/opt/cni/bin/"
  install -m 0755 "$BIN_DIR/crictl-$CRICTL_VERSION" "$root/usr/local/bin/crictl"
  # systemd in a container: kind's image does the same trimming.
  find "$root/lib/systemd/system/sysinit.target.wants/" -name "systemd-tmpfiles-setup.service" -delete
  rm -f "$root"/lib/systemd/system/multi-user.target.wants/* "$root"/etc/systemd/system/*.wants/* \
    "$root"/lib/systemd/system/local-fs.target.wants/* "$root"/lib/systemd/system/sockets.target.wants/*udev* \
    "$root"/lib/systemd/system/sockets.target.wants/*initctl* "$root"/lib/systemd/system/basic.target.wants/*
  echo "ReadKMsg=no" >>"$root/etc/systemd/journald.conf"
  ln -sf /usr/lib/systemd/systemd "$root/sbin/init"
  chroot "$root" systemctl enable kubelet.service containerd.service undo-mount-hacks.service >/dev/null 2>&1 ||
    die "base image" "systemctl enable in the node root filesystem failed"
  chroot "$root" systemctl mask systemd-binfmt.service >/dev/null 2>&1 || true
  mkdir -p "$root/etc/kubernetes/manifests"
  if ! has_cap_sys_resource; then
    # Without CAP_SYS_RESOURCE no container may lower its oom_score_adj, and privileged pods
    # need the same runc wrapper as the node itself.
    sed -i 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' "$root/etc/containerd/config.toml"
    install -m 0755 "$KIND_SCRIPTS/offline/runc-capfix" "$root/usr/local/sbin/runc-capfix"
    sed -i 's|^\(\s*\)SystemdCgroup = true|\1SystemdCgroup = true\n\1BinaryName = "/usr/local/sbin/runc-capfix"|' \
      "$root/etc/containerd/config.toml"
  fi
  # Single node: a bridge on the node's pod range instead of kindnetd.
  mkdir -p "$root/etc/cni/net.d"
  cat >"$root/etc/cni/net.d/10-bridge.conflist" <<'CNI'
{"cniVersion": "1.0.0", "name": "kind-bridge", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
CNI
  # containerd's default OCI spec plus kind's mount hook (kind's base image generates it so).
  chroot "$root" /usr/bin/ctr oci spec 2>/dev/null |
    jq '.hooks.createContainer += [{"path": "/kind/bin/mount-product-files.sh"}] | del(.process.rlimits)' \
      >"$root/etc/containerd/cri-base.json" || die "base image" "cannot write cri-base.json"
  import_dir "$image.stage" "$root"
  printf 'FROM %s\nENV container=docker\nSTOPSIGNAL SIGRTMIN+3\nENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]\n' \
    "$image.stage" | DOCKER_BUILDKIT=0 "$DOCKER" build -q -t "$image" - >/dev/null 2>&1 ||
    die "base image" "docker build failed"
  "$DOCKER" rmi "$image.stage" >/dev/null 2>&1 || true
  rm -rf "$root"
  "$DOCKER" save -o "$file.tmp" "$image" && mv "$file.tmp" "$file"
}

# kind_image_tag NAME: the image tag kind's node-image build pulls for NAME (from kind's source).
kind_image_tag() {
  grep -rhoE "docker\.io/kindest/$1:v[0-9a-f-]+" "$KIND_MOD/pkg/build/nodeimage/" | head -n 1
}

cmd_node_image() {
  local file="$IMAGES/kind-node-$K8S_VERSION-$KIND_VERSION.tar"
  cached_image "$OFFLINE_NODE_IMAGE" "$file" && return 0
  cmd_tools
  base_image
  node_binaries
  local release="$BUILD_DIR/release" server
  server="$release/kubernetes/server/bin"
  rm -rf "$release" && mkdir -p "$server"
  echo "$K8S_VERSION" >"$release/kubernetes/version"
  cp "$KUBE_BIN/kubeadm" "$KUBE_BIN/kubelet" "$KUBE_BIN/kubectl" "$server/"
  log "component images for Kubernetes $K8S_VERSION"
  local c
  for c in kube-apiserver kube-controller-manager kube-scheduler; do
    static_image "registry.k8s.io/$c-amd64:$K8S_VERSION" "$KUBE_BIN/$c" "$c"
    "$DOCKER" save -o "$server/$c.tar" "registry.k8s.io/$c-amd64:$K8S_VERSION"
  done
  rootfs proxy "$PROXY_PACKAGES"
  local proxy_root="$BUILD_DIR/proxy-root"
  rm -rf "$proxy_root" && mkdir -p "$proxy_root"
  tar -C "$proxy_root" -xf "$ROOTFS/proxy-$DEBIAN_SUITE.tar"
  install -m 0755 "$KUBE_BIN/kube-proxy" "$proxy_root/usr/local/bin/kube-proxy"
  import_dir "registry.k8s.io/kube-proxy-amd64:$K8S_VERSION" "$proxy_root" 'ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
  rm -rf "$proxy_root"
  local etcd_tag coredns_tag pause_tag
  etcd_tag="$("$KUBE_BIN/kubeadm" config images list --kubernetes-version "$K8S_VERSION" 2>/dev/null | grep /etcd:)"
  coredns_tag="$("$KUBE_BIN/kubeadm" config images list --kubernetes-version "$K8S_VERSION" 2>/dev/null | grep /coredns:)"
  pause_tag="$("$KUBE_BIN/kubeadm" config images list --kubernetes-version "$K8S_VERSION" 2>/dev/null | grep /pause:)"
  static_image "$etcd_tag" "$BIN_DIR/etcd-$ETCD_NODE_VERSION" etcd
  static_image "$coredns_tag" "$BIN_DIR/coredns-$COREDNS_VERSION" coredns /usr/local/bin/coredns
  static_image "$pause_tag" "$BIN_DIR/pause-$K8S_VERSION" pause /usr/local/bin/pause
  # kind's build pulls these too; single node needs none of them: the pause image stands in.
  # The base image's containerd names its own sandbox image as well.
  local extra=() t sandbox
  sandbox="$(sed -n 's/^\s*sandbox_image = "\(.*\)"/\1/p' "$KIND_MOD/images/base/files/etc/containerd/config.toml" | head -n 1)"
  for t in "$(kind_image_tag kindnetd)" "$(kind_image_tag local-path-provisioner)" "$(kind_image_tag local-path-helper)" "$sandbox"; do
    [ -n "$t" ] || die "node image" "cannot find an image tag in kind's source"
    [ "$t" = "$pause_tag" ] && continue
    "$DOCKER" tag "$pause_tag" "$t"
    extra+=("$t")
  done
  # kind reads the tags of the first entry of each image archive only (`repositories` first):
  # the extra images go into one archive whose `repositories` names them fully qualified.
  local pack="$BUILD_DIR/pack"
  rm -rf "$pack" && mkdir -p "$pack/u"
  "$DOCKER" save -o "$pack/all.tar" "registry.k8s.io/kube-proxy-amd64:$K8S_VERSION" "$etcd_tag" \
    "$coredns_tag" "$pause_tag" "${extra[@]}"
  tar -C "$pack/u" -xf "$pack/all.tar"
  jq 'with_entries(if (.key | startswith("kindest/")) then .key = "docker.io/" + .key else . end)' \
    "$pack/u/repositories" >"$pack/repositories" && mv "$pack/repositories" "$pack/u/repositories"
  (cd "$pack/u" && tar -cf "$server/kube-proxy.tar" repositories manifest.json \
    $(ls | grep -vx 'repositories\|manifest.json'))
  rm -rf "$pack"
  tar -C "$release" -czf "$BUILD_DIR/kubernetes-server-linux-amd64.tar.gz" kubernetes
  log "kind build node-image $OFFLINE_NODE_IMAGE (log: $BUILD_DIR/node-image.log)"
  "$KIND_BIN" build node-image --type file "$BUILD_DIR/kubernetes-server-linux-amd64.tar.gz" \
    --base-image "rig.local/kind-base:$DEBIAN_SUITE-$KIND_VERSION" --image "$OFFLINE_NODE_IMAGE" \
    >"$BUILD_DIR/node-image.log" 2>&1 || die "node image" "kind build node-image failed; see $BUILD_DIR/node-image.log"
  rm -rf "$release" "$BUILD_DIR/kubernetes-server-linux-amd64.tar.gz"
  "$DOCKER" save -o "$file.tmp" "$OFFLINE_NODE_IMAGE" && mv "$file.tmp" "$file"
  log "node image $OFFLINE_NODE_IMAGE built and saved to $file"
}

# ---- Kafka -----------------------------------------------------------------------------------

cmd_kafka_image() {
  local file="$IMAGES/kafka-$KAFKA_VERSION-$DEBIAN_SUITE.tar"
  cached_image "$KAFKA_IMAGE" "$file" && return 0
  # The Maven-built Kafka of the test environment.
  bash "$RIG_REPO/e2e/env/kafka.sh" install >/dev/null || die "kafka image" "e2e/env/kafka.sh install failed"
  local libs="$RIG_CACHE/kafka-$KAFKA_VERSION/libs"
  [ -d "$libs" ] || die "kafka image" "no Kafka libraries in $libs"
  rootfs kafka "$KAFKA_PACKAGES"
  local root="$BUILD_DIR/kafka-root"
  rm -rf "$root" && mkdir -p "$root"
  tar -C "$root" -xf "$ROOTFS/kafka-$DEBIAN_SUITE.tar"
  mkdir -p "$root/opt/kafka/bin" "$root/opt/kafka/config" "$root/var/lib/kafka/data"
  cp -r "$libs" "$root/opt/kafka/libs"
  install -m 0755 "$KIND_SCRIPTS/offline/kafka-run" "$root/opt/kafka/bin/run"
  install -m 0755 "$KIND_SCRIPTS/offline/kafka-tool" "$root/opt/kafka/bin/kafka-run-class"
  local tool
  for tool in "kafka-topics.sh org.apache.kafka.tools.TopicCommand" \
    "kafka-console-producer.sh org.apache.kafka.tools.ConsoleProducer" \
    "kafka-console-consumer.sh org.apache.kafka.tools.consumer.ConsoleConsumer"; do
    printf '#!/bin/sh\nexec /opt/kafka/bin/kafka-run-class %s "$@"\n' "${tool#* }" >"$root/opt/kafka/bin/${tool%% *}"
    chmod 0755 "$root/opt/kafka/bin/${tool%% *}"
  done
  import_dir "$KAFKA_IMAGE" "$root" 'ENV PATH=/opt/kafka/bin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    'ENTRYPOINT ["/opt/kafka/bin/run"]'
  rm -rf "$root"
  "$DOCKER" save -o "$file.tmp" "$KAFKA_IMAGE" && mv "$file.tmp" "$file"
}

# ---- our images ------------------------------------------------------------------------------

# The runtime of the Dockerfiles (distroless/cc: glibc, libgcc, CA certificates; uid 65532) from
# this machine's release binaries and the shared libraries they load.
cmd_app_images() {
  local tag="${1:?usage: offline.sh app-images TAG}" x bin dir lib
  for x in operator dataplane; do
    bin="$CARGO_RELEASE/rig-$x"
    [ -x "$bin" ] || die "image rig-$x" "missing $bin (cargo build --release -p rig-$x)"
    dir="$(mktemp -d)"
    mkdir -p "$dir/usr/local/bin" "$dir/etc/ssl/certs" "$dir/tmp" "$dir/home/nonroot"
    chmod 1777 "$dir/tmp"
    cp "$bin" "$dir/usr/local/bin/"
    for lib in $(ldd "$bin" | awk '/=>/ {print $3} /ld-linux/ {print $1}'); do
      cp --parents -L "$lib" "$dir/"
    done
    cp -L /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$dir/etc/passwd"
    printf 'root:x:0:\nnonroot:x:65532:\n' >"$dir/etc/group"
    chown 65532:65532 "$dir/home/nonroot"
    local changes=('USER 65532:65532' "ENTRYPOINT [\"/usr/local/bin/rig-$x\"]")
    [ "$x" = operator ] && changes+=('CMD ["run"]')
    import_dir "rig-$x:$tag" "$dir" "${changes[@]}"
    rm -rf "$dir"
  done
}

case "${1:-}" in
  tools) cmd_tools ;;
  node-image) cmd_node_image ;;
  kafka-image) cmd_kafka_image ;;
  app-images) cmd_app_images "${2:-}" ;;
  *) echo "usage: $0 tools|node-image|kafka-image|app-images TAG" >&2; exit 2 ;;
esac
