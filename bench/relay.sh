#!/usr/bin/env bash
# Builds the release binary and runs the relay benchmark: coturn and our
# relay side by side on loopback (docs/performance.md). Flags are passed
# through, e.g.:
#   bench/relay.sh                      # full run, about 10 minutes
#   bench/relay.sh --quick              # smoke run, about a minute
#   bench/relay.sh --only udp,loadgen --json /tmp/bench.json
# Needs coturn (turnserver, turnutils_uclient, turnutils_peer) for the
# comparison: apt-get install coturn.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p onionrtc
# Run a copy, so a rebuild during the run cannot swap the binary under the
# relay and load generator processes it starts.
bin=$(mktemp -d)/onionrtc
trap 'rm -rf "$(dirname "$bin")"' EXIT
cp target/release/onionrtc "$bin"
"$bin" bench relay "$@"
