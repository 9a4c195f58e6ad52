#!/usr/bin/env bash
# The sandbox demo: a cluster of network-namespace pods on this machine, attached with the
# real bridge + host-local CNI plugins and trireme chained, running the example policies of
# examples/policies/demo/. Prints the expected reachability matrix (the policy engine) and
# the observed one (real TCP connections between the pods), then removes everything.
#
#   sudo scripts/demo.sh            # build (release), run, clean up
#   sudo scripts/demo.sh --keep     # leave the cluster running; prints how to remove it
#   sudo scripts/demo.sh --debug    # debug build (faster to compile)
#   sudo scripts/demo.sh --policies PATH [--policies PATH ...]   # other Namespace/Pod/NetworkPolicy YAML
#
# Needs root (network namespaces, a bridge, iptables, NFQUEUE) and a Rust toolchain (cargo).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/demo.sh: must run as root (network namespaces, bridges, iptables, NFQUEUE); run: sudo $0 $*" >&2
  exit 1
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "scripts/demo.sh: cargo not found; install Rust first: https://rustup.rs" >&2
  exit 1
fi

profile=release
args=()
policies=(--policies examples/policies/demo)
for a in "$@"; do
  case "$a" in
    --debug) profile=debug ;;
    --policies) policies=(); args+=("$a") ;;
    *) args+=("$a") ;;
  esac
done

scripts/install-deps.sh

build=(cargo build --workspace --bins --locked)
[ "$profile" = release ] && build+=(--release)
echo "demo: building ($profile): ${build[*]}" >&2
"${build[@]}"

exec "target/$profile/trireme-sandbox" up ${policies[@]+"${policies[@]}"} ${args[@]+"${args[@]}"}
