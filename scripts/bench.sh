#!/usr/bin/env bash
# The side-by-side benchmarks: trireme vs its baselines, measured in one interleaved run on
# this machine (see docs/benchmarks.md). Needs root (network namespaces, bridges, NFQUEUE).
# Installs what it needs, builds the release binaries, then runs
#   conformance/benches/side_by_side.rs   (pods, TLS, CNI, memory, policy; prints a table)
# and, with --criterion, the crates' criterion benches (token sign/verify, policy decision,
# one in-process handshake).
# TRIREME_BENCH_QUICK=1 runs a much smaller version (seconds instead of minutes).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/bench.sh: must run as root (network namespaces, bridges, iptables, NFQUEUE); run: sudo $0" >&2
  exit 1
fi

scripts/install-deps.sh

echo "== machine: $(nproc) CPUs, $(uname -r), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
cargo build --release --workspace --bins --locked
cargo bench --locked -p trireme-conformance --bench side_by_side

if [ "${1:-}" = "--criterion" ]; then
  cargo bench --locked -p trireme-token
  cargo bench --locked -p trireme-policy
  cargo bench --locked -p trireme-enforcer --bench handshake
fi
