#!/usr/bin/env bash
# Go builds from the module proxy (sourced by kube.sh and e2e/kind/offline.sh, after lib.sh).
# The caller sets BUILD_DIR (wrapper modules and logs) and BIN_DIR; CGO_ENABLED is honoured (the
# kind images want static binaries).
#
# Why wrapper modules: k8s.io/kubernetes (and go.etcd.io/etcd/server/v3) `replace` their sibling
# modules with relative paths (./staging/src/k8s.io/..., ../api), which `go install pkg@version`
# refuses. We generate a small module that requires the release and maps each of those siblings to
# its published version instead, then `go build` the command from it.

# gomod_of MODULE@VERSION: print the path of that module's go.mod in the module cache (downloads it).
gomod_of() {
  local out
  out="$(cd "$BUILD_DIR" && go mod download -json "$1" 2>&1)" || { printf '%s\n' "$out" >&2; return 1; }
  printf '%s\n' "$out" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p'
}

# relative_replaces GOMOD: print "module relative-path" for each `replace M => ./x` or `=> ../x`
# line (inside a replace block or a single replace directive) of that go.mod.
relative_replaces() {
  awk '
    /^replace[[:space:]]*\($/ { inblock = 1; next }
    inblock && /^\)/           { inblock = 0; next }
    {
      line = $0
      if (!inblock) { if (line !~ /^replace[[:space:]]/) next; sub(/^replace[[:space:]]+/, "", line) }
      n = split(line, f, /[[:space:]]+/)
      # fields: [""] MODULE [VERSION] => TARGET [VERSION]
      for (i = 1; i <= n; i++) if (f[i] == "=>") break
      if (i > n) next
      mod = (f[1] == "" ? f[2] : f[1]); target = f[i + 1]
      if (target ~ /^\.\.?\//) print mod, target
    }' "$1"
}

# build_wrapped STEP NAME OUT_BIN MAIN_PKG REQUIRE_LINE REPLACE_LINES [EXTRA_LDFLAGS]
# Writes $BUILD_DIR/NAME/{go.mod,tools.go}, resolves the module graph and builds MAIN_PKG into OUT_BIN.
build_wrapped() {
  local step="$1" name="$2" out="$3" pkg="$4" require="$5" replaces="$6" ldflags="-s -w ${7:-}"
  local dir="$BUILD_DIR/$name" logf="$BUILD_DIR/$name.log"
  mkdir -p "$dir" "$BIN_DIR"
  rm -f "$dir/go.mod" "$dir/go.sum"
  {
    printf 'module rigwrapper/%s\n\ngo 1.24.0\n\nrequire %s\n' "$name" "$require"
    if [ -n "$replaces" ]; then printf '\nreplace (\n%s\n)\n' "$replaces"; fi
  } >"$dir/go.mod"
  # A blank import keeps `go mod tidy` from dropping the requirement.
  printf '//go:build tools\n\npackage tools\n\nimport _ "%s"\n' "$pkg" >"$dir/tools.go"
  log "building $name (log: $logf)"
  local t0=$SECONDS
  (
    cd "$dir"
    go mod tidy -e &&
      go build -trimpath -mod=mod -ldflags="$ldflags" -o "$out.tmp" "$pkg" &&
      mv "$out.tmp" "$out"
  ) >"$logf" 2>&1 || die "$step" "go build of $pkg failed; see $logf"
  log "built $name in $((SECONDS - t0))s"
}
