#!/bin/sh
# trireme node installer, run by the DaemonSet in examples/kubernetes/trireme.yaml (image
# built from examples/kubernetes/Dockerfile). POSIX sh + jq. Idempotent.
#
#   install.sh install    binaries -> /opt/cni/bin, keys from the Secret -> /etc/trireme/keys,
#                         policies, and trireme appended to the node's first CNI conflist
#   install.sh sync       loop: keep policyDir equal to the ConfigMap, keep the conflist patched
#   install.sh uninstall  remove trireme from the conflist (new pods start without it); the
#                         binaries and /etc/trireme stay until no pod attached with trireme
#                         is left (their DEL needs the plugin): then `install.sh purge`
#
# The host's filesystem is mounted under $HOST_ROOT (default /host).
set -eu

HOST_ROOT=${HOST_ROOT:-/host}
BIN_SRC=${BIN_SRC:-/usr/local/bin}
CNI_BIN_DIR=${CNI_BIN_DIR:-$HOST_ROOT/opt/cni/bin}
CNI_NET_DIR=${CNI_NET_DIR:-$HOST_ROOT/etc/cni/net.d}
TRIREME_ETC=${TRIREME_ETC:-$HOST_ROOT/etc/trireme}
KEYS_SRC=${KEYS_SRC:-/keys}
POLICIES_SRC=${POLICIES_SRC:-/policies}
PLUGIN_CONF=${PLUGIN_CONF:-/config/trireme-plugin.json}
TRIREME_KEYS_FROM_SECRET=${TRIREME_KEYS_FROM_SECRET:-true}
SYNC_INTERVAL=${SYNC_INTERVAL:-5}
NODE_NAME=${NODE_NAME:-$(hostname)}

log() { echo "trireme-install: $*" >&2; }
die() { log "error: $*"; exit 1; }

# Copies $1 to $2 atomically (temp file in the same directory, then rename) with mode $3.
put() {
  tmp="$(dirname "$2")/.$(basename "$2").tmp.$$"
  cp "$1" "$tmp" && chmod "$3" "$tmp" && mv -f "$tmp" "$2"
}

install_binaries() {
  mkdir -p "$CNI_BIN_DIR"
  for b in trireme trireme-enforcer; do
    [ -x "$BIN_SRC/$b" ] || die "$BIN_SRC/$b missing in the image"
    put "$BIN_SRC/$b" "$CNI_BIN_DIR/$b" 0755
  done
  mkdir -p "$TRIREME_ETC/bin"
  put "$BIN_SRC/triremectl" "$TRIREME_ETC/bin/triremectl" 0755
  log "installed trireme, trireme-enforcer in $CNI_BIN_DIR; triremectl in $TRIREME_ETC/bin"
}

install_keys() {
  dir="$TRIREME_ETC/keys"
  if [ "$TRIREME_KEYS_FROM_SECRET" != "true" ]; then
    [ -d "$dir" ] || die "TRIREME_KEYS_FROM_SECRET=false but $dir does not exist on the node"
    log "keys: using $dir as provisioned on the node"
    return
  fi
  mkdir -p "$dir" && chmod 0700 "$dir"
  if [ -f "$KEYS_SRC/psk.key" ]; then
    put "$KEYS_SRC/psk.key" "$dir/psk.key" 0600
    rm -f "$dir/ca.crt" "$dir/node.key" "$dir/node.crt"
    log "keys: PSK mode"
  elif [ -f "$KEYS_SRC/ca.crt" ] && [ -f "$KEYS_SRC/$NODE_NAME.key" ] && [ -f "$KEYS_SRC/$NODE_NAME.crt" ]; then
    put "$KEYS_SRC/ca.crt" "$dir/ca.crt" 0600
    put "$KEYS_SRC/$NODE_NAME.key" "$dir/node.key" 0600
    put "$KEYS_SRC/$NODE_NAME.crt" "$dir/node.crt" 0600
    rm -f "$dir/psk.key"
    log "keys: PKI mode, node $NODE_NAME"
  else
    die "Secret trireme-keys has neither psk.key nor ca.crt + $NODE_NAME.key + $NODE_NAME.crt (see examples/keys/README.md)"
  fi
}

# The file the runtime uses: the first *.conf, *.conflist or *.json in lexical order (libcni).
first_conf() {
  ls -1 "$CNI_NET_DIR" 2>/dev/null | grep -E '\.(conf|conflist|json)$' | LC_ALL=C sort | head -n 1
}

# Appends trireme (the JSON in $PLUGIN_CONF) to the first conflist, replacing an earlier
# trireme entry; a single-plugin .conf becomes a .conflist (the original is kept in
# $TRIREME_ETC/backup). Rewrites the file only when its content changes.
patch_conflist() {
  name=$(first_conf)
  [ -n "$name" ] || { log "no CNI config in $CNI_NET_DIR yet"; return 1; }
  f="$CNI_NET_DIR/$name"
  jq -e . "$PLUGIN_CONF" >/dev/null || die "$PLUGIN_CONF is not JSON"
  mkdir -p "$TRIREME_ETC/backup"
  [ -f "$TRIREME_ETC/backup/$name" ] || cp "$f" "$TRIREME_ETC/backup/$name"
  tmp="$CNI_NET_DIR/.trireme.tmp.$$"
  if jq -e 'has("plugins")' "$f" >/dev/null 2>&1; then
    jq --slurpfile t "$PLUGIN_CONF" \
      '.plugins = ([.plugins[] | select(.type != "trireme")] + $t)' "$f" >"$tmp"
    out="$f"
  else
    jq --slurpfile t "$PLUGIN_CONF" \
      '{cniVersion: .cniVersion, name: .name, plugins: ([del(.cniVersion, .name)] + $t)}' "$f" >"$tmp"
    out="$CNI_NET_DIR/${name%.*}.conflist"
  fi
  if [ "$out" = "$f" ] && cmp -s "$tmp" "$f"; then
    rm -f "$tmp"
    return 0
  fi
  mv -f "$tmp" "$out"
  [ "$out" = "$f" ] || rm -f "$f"
  log "trireme chained in $out"
}

# Makes $TRIREME_ETC/policies hold exactly the *.yaml, *.yml and *.json files of the
# ConfigMap (each file replaced atomically, so enforcers never read half a file).
sync_policies() {
  dst="$TRIREME_ETC/policies"
  mkdir -p "$dst"
  for src in "$POLICIES_SRC"/*; do
    base=$(basename "$src")
    case "$base" in .*) continue ;; *.yaml | *.yml | *.json) ;; *) continue ;; esac
    [ -f "$src" ] || continue
    cmp -s "$src" "$dst/$base" || { put "$src" "$dst/$base" 0644; log "policy $base updated"; }
  done
  for old in "$dst"/*; do
    [ -f "$old" ] || continue
    base=$(basename "$old")
    [ -f "$POLICIES_SRC/$base" ] || { rm -f "$old"; log "policy $base removed"; }
  done
}

uninstall() {
  name=$(first_conf)
  if [ -n "$name" ]; then
    f="$CNI_NET_DIR/$name"
    tmp="$CNI_NET_DIR/.trireme.tmp.$$"
    if jq -e 'has("plugins")' "$f" >/dev/null 2>&1; then
      jq '.plugins = [.plugins[] | select(.type != "trireme")]' "$f" >"$tmp" && mv -f "$tmp" "$f"
      log "trireme removed from $f"
    fi
  fi
  # The sync loop stops re-appending trireme while this marker exists (install removes it).
  mkdir -p "$TRIREME_ETC" && : >"$TRIREME_ETC/uninstalled"
  log "new pods start without trireme; pods attached before keep their enforcers until deleted"
}

purge() {
  rm -f "$CNI_BIN_DIR/trireme" "$CNI_BIN_DIR/trireme-enforcer"
  rm -rf "$TRIREME_ETC"
  log "removed the binaries and $TRIREME_ETC"
}

case "${1:-}" in
  install)
    rm -f "$TRIREME_ETC/uninstalled"
    install_binaries
    install_keys
    sync_policies
    patch_conflist || die "no CNI config to chain into; install the node's network plugin first"
    ;;
  sync)
    trap 'exit 0' TERM INT
    while :; do
      sync_policies
      [ -e "$TRIREME_ETC/uninstalled" ] || patch_conflist || true
      sleep "$SYNC_INTERVAL" &
      wait $!
    done
    ;;
  uninstall) uninstall ;;
  purge) purge ;;
  *) die "usage: $0 install|sync|uninstall|purge" ;;
esac
