#!/usr/bin/env bash
# Runs every test of trireme: installs what the tests need, checks formatting and lints,
# builds the binaries and runs unit, integration and conformance tests.
# Needs root: the tests create network namespaces, veth pairs, iptables rules and NFQUEUE
# listeners (each with unique names, removed again also when a test fails).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh: must run as root (tests use network namespaces, iptables and NFQUEUE); run: sudo $0" >&2
  exit 1
fi

scripts/install-deps.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Integration tests start the real binaries, so build them first.
cargo build --workspace --bins --locked
cargo test --workspace --locked "$@" -- --skip netpol_conformance_on_real_pods
# The NetworkPolicy conformance suite on real pods prints every case's matrices and a final
# "N passed, N failed" line, so it runs on its own with its output shown.
cargo test -p trireme-conformance --locked --test netpol "$@" -- --nocapture
