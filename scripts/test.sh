#!/usr/bin/env bash
# The whole OnionRTC test suite, as CI runs it (`.ci/run` calls this script).
# It installs the system packages the tests need, then runs every test of
# every workspace member, lints, and checks that the fuzz targets build.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the tests need:
#   coturn   - turnutils_uclient/_peer/_stunclient (independent TURN client
#              tools the relay is tested against) and turnserver (benchmarks)
#   chromium - headless browser for the WebRTC end-to-end tests
#   iproute2, util-linux - `ip` and `unshare` for network-namespace tests
#   tor, tor-geoipdb - a private Tor network for the connector's tests
#              (testkit::tor, inside a network namespace) and the GeoIP
#              files `--tor-nodes` presets need
#   nftables - `nft`, the port-443-only firewall of the restricted-network test and the
#              packet counters of the connector's TURN-redirect test
#   microsocks - a tiny SOCKS5 proxy for the connector and lab SOCKS tests
#   prlimit (util-linux) - raises the open-file limit in the bad-input test
#   tcpdump  - captures the relay's side of a browser call on lo (RTP header
#              extensions and audio sizes: onionrtc tests/serve/speech.rs)
#   cmake    - builds libopus for the `opus` crate (onionrtc feature `call`,
#              i.e. `media/opus`; the default build does not need it)
#   libasound2-dev - ALSA's headers (with pkg-config) for cpal, the live
#              microphone and speaker of `onionrtc call` (feature `call`)
#   pulseaudio, libasound2-plugins - a private sound server (null sinks
#              paced by its own clock) behind ALSA's `pulse` plugin: the
#              microphone and speaker test needs no sound card
#              (onionrtc tests/serve/call_audio.rs)
#   python3-aiortc, python3-websockets - aiortc, a third-party WebRTC
#              stack, as a peer of `onionrtc call` (tests/serve/call.rs)
#   nginx-light - the reverse proxy in front of `serve` in the privacy
#              test `proxy` (client addresses, operator token, 421), and
#              the HTTPS site (test CA) of `connect https://SITE` and
#              `call https://SITE` (tests/serve/wellknown.rs, privacy tor_call)
#   firefox-esr - the second browser of the group-call tests: Firefox and
#              Chromium in one call (onionrtc tests/serve/firefox.rs)
#   npm (and nodejs) - runs tests/js/firefox_call.mjs, which drives Firefox
#              over WebDriver BiDi with puppeteer-core (pinned in
#              tests/js/package-lock.json, installed below with npm ci),
#              and bundles JsSIP for the SIP tests (tests/js/cjs_bundle.mjs;
#              JsSIP and SIP.js pinned in the same lock file)
#   sip-tester - SIPp, a SIP traffic generator we did not write: phones
#              registering (digest) and calling over UDP and TCP in
#              onionrtc tests/serve/sipp.rs, and `onionrtc bench sip`
#              (its CI smoke in tests/bench.rs)
#   postgresql - a real PostgreSQL (initdb + postgres on 127.0.0.1, started
#              by testkit::postgres as the `postgres` user) for the signal
#              and lab store suites; no cluster service is started (policy-rc.d)
#   redis-server - a real Redis (testkit::redis, 127.0.0.1, random port)
#              for the multi-node room tests (tests/serve/cluster.rs: rooms on Redis)
need=()
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v turnutils_uclient >/dev/null 2>&1 || need+=(coturn)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
command -v tor >/dev/null 2>&1 || need+=(tor)
[ -f /usr/share/tor/geoip ] || need+=(tor-geoipdb)
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v microsocks >/dev/null 2>&1 || need+=(microsocks)
command -v prlimit >/dev/null 2>&1 || need+=(util-linux)
command -v tcpdump >/dev/null 2>&1 || need+=(tcpdump)
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)
# baresip: a real SIP phone (serve/baresip.rs: SIP over TLS; serve/sip_rtp.rs: two phones talk through the media bridge)
command -v baresip >/dev/null 2>&1 || need+=(baresip)
[ -f /usr/include/alsa/asoundlib.h ] || need+=(libasound2-dev)
command -v pulseaudio >/dev/null 2>&1 || need+=(pulseaudio)
compgen -G '/usr/lib/*/alsa-lib/libasound_module_pcm_pulse.so' >/dev/null || need+=(libasound2-plugins)
/usr/bin/python3 -c 'import aiortc' >/dev/null 2>&1 || need+=(python3-aiortc)
/usr/bin/python3 -c 'import websockets' >/dev/null 2>&1 || need+=(python3-websockets)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v firefox-esr >/dev/null 2>&1 || need+=(firefox-esr)
command -v npm >/dev/null 2>&1 || need+=(npm)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    # Installed packages must not start their services: tor would join the
    # public Tor network, coturn would bind ports, postgresql would start
    # its cluster (the tests start their own). Debian honours
    # policy-rc.d (exit 101 = "not allowed").
    policy=/usr/sbin/policy-rc.d
    made_policy=0
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' > "$policy"
      chmod +x "$policy"
      made_policy=1
    fi
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}"
    if [ "$made_policy" = 1 ]; then rm -f "$policy"; fi
  else
    echo "missing system packages: ${need[*]} (run as root or install them)" >&2
    exit 1
  fi
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --features onionrtc/call -- -D warnings
echo "== fuzz targets build"
# Into the workspace's target dir: dependencies built with the same
# features are shared with the test build below.
(cd fuzz && CARGO_TARGET_DIR=../target cargo build --quiet)
echo "== npm ci (tests/js: puppeteer-core for the Firefox test; no browser download)"
(cd tests/js && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --ignore-scripts --no-audit --no-fund)
echo "== cargo test"
cargo test --workspace --features onionrtc/call
