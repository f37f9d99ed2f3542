#!/usr/bin/env bash
# Debian's Chromium, for the browser e2e tests (a real EventSource in headless Chromium).
#
#   chromium.sh install   install the Debian package `chromium` when /usr/bin/chromium is missing
#                         (idempotent; unattended; needs root, as CI runs)
#   chromium.sh path      print the browser's path (what up.sh writes as CHROMIUM to the env file)
#
# The tests start Chromium themselves with the flags this closed network needs
# (--disable-background-networking, --disable-component-update, --disable-sync, ...).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CHROMIUM_BIN="/usr/bin/chromium"
INSTALL_LOG="$RIG_RUN/chromium-install.log"

# apt_install: one unattended install attempt, output appended to the install log.
apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold chromium \
    >>"$INSTALL_LOG" 2>&1
}

install() {
  [ -x "$CHROMIUM_BIN" ] && return 0
  command -v apt-get >/dev/null || die "chromium install" "apt-get not found (a Debian machine is expected)"
  if [ "$(id -u)" -ne 0 ]; then
    die "chromium install" "$CHROMIUM_BIN is missing and installing it needs root (apt-get install chromium)"
  fi
  log "installing Debian's chromium (log: $INSTALL_LOG)"
  local t0=$SECONDS
  : >"$INSTALL_LOG"
  if ! apt_install; then
    # A fresh machine may have no package lists yet: refresh them once and try again.
    log "apt-get install failed; running apt-get update and trying again"
    DEBIAN_FRONTEND=noninteractive apt-get update >>"$INSTALL_LOG" 2>&1 \
      || die "chromium install" "apt-get update failed; see $INSTALL_LOG"
    apt_install || die "chromium install" "apt-get install chromium failed; see $INSTALL_LOG"
  fi
  [ -x "$CHROMIUM_BIN" ] || die "chromium install" "package installed but $CHROMIUM_BIN is missing"
  "$CHROMIUM_BIN" --version >>"$INSTALL_LOG" 2>&1 \
    || die "chromium install" "$CHROMIUM_BIN --version failed; see $INSTALL_LOG"
  log "chromium installed in $((SECONDS - t0))s: $("$CHROMIUM_BIN" --version 2>/dev/null)"
}

case "${1:-}" in
  install) install ;;
  path) echo "$CHROMIUM_BIN" ;;
  *) echo "usage: $0 install|path" >&2; exit 2 ;;
esac
