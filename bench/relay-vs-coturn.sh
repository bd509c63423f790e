#!/usr/bin/env bash
# Runs the same turnutils_uclient load against coturn's turnserver and our
# relay, side by side on loopback, and prints messages, loss, server
# CPU-seconds (user+sys from /proc), messages per CPU-second and peak RSS.
#
# usage: bench/relay-vs-coturn.sh [uclient flags...]
#   default flags: -c -m 50 -n 200 -l 120 -z 10
# Needs: coturn (turnserver, turnutils_uclient, turnutils_peer), a release
# build of onionrtc (built here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
flags=("$@")
[ ${#flags[@]} -gt 0 ] || flags=(-c -m 50 -n 200 -l 120 -z 10)

bin=target/release/onionrtc
[ -x "$bin" ] || cargo build --release -p onionrtc
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

tck=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
split_ticks() { awk '{print "user=" $14 " sys=" $15}' "/proc/$1/stat"; }
peak_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

peer_port=$(free_port)
turnutils_peer -L 127.0.0.1 -p "$peer_port" >/dev/null 2>&1 &
pids+=($!)

run_load() { # name pid port
  local name=$1 pid=$2 port=$3
  local t0; t0=$(cpu_ticks "$pid")
  local out
  out=$(timeout 300 turnutils_uclient -u bench -w benchpw -e 127.0.0.1 -r "$peer_port" "${flags[@]}" -p "$port" 127.0.0.1 2>&1 || true)
  local t1; t1=$(cpu_ticks "$pid")
  local sent recv lost
  sent=$(grep -o 'tot_send_msgs=[0-9]*' <<<"$out" | tail -1 | cut -d= -f2)
  recv=$(grep -o 'tot_recv_msgs=[0-9]*' <<<"$out" | tail -1 | cut -d= -f2)
  lost=$(grep -o 'Total lost packets [0-9]*' <<<"$out" | tail -1 | awk '{print $4}')
  local cpu; cpu=$(awk -v a="$t0" -v b="$t1" -v t="$tck" 'BEGIN{printf "%.2f", (b-a)/t}')
  local relayed=$(( ${sent:-0} + ${recv:-0} ))
  local rate; rate=$(awk -v m="$relayed" -v c="$cpu" 'BEGIN{ if (c>0) printf "%.0f", m/c; else print "inf"}')
  printf '%-8s sent=%-7s recv=%-7s lost=%-5s cpu_s=%-6s msgs_per_cpu_s=%-9s peak_rss_kb=%s\n' \
    "$name" "${sent:-?}" "${recv:-?}" "${lost:-?}" "$cpu" "$rate" "$(peak_kb "$pid")"
  echo "         cumulative ticks: $(split_ticks "$pid")"
  echo "$rate" > "$tmp/$name.rate"
}

# coturn: flags written down so anyone can rerun them.
cport=$(free_port)
turnserver -n --no-cli --no-tls --no-dtls --listening-ip=127.0.0.1 --listening-port="$cport" \
  --relay-ip=127.0.0.1 --min-port=49152 --max-port=65535 --lt-cred-mech --realm=bench \
  --user=bench:benchpw --allow-loopback-peers --no-stun-backward-compatibility \
  --log-file=stdout >"$tmp/coturn.log" 2>&1 &
cpid=$!; pids+=($cpid)

oport=$(free_port)
cat >"$tmp/relay.toml" <<TOML
[relay]
listen = ["udp://127.0.0.1:$oport", "tcp://127.0.0.1:$oport"]
realm = "bench"
relay_ip = "127.0.0.1"
users = { bench = "benchpw" }
max_allocations_per_user = 100000
max_allocations_per_ip = 100000
dangerous_allow_loopback_peers = true
TOML
RUST_LOG=warn "$bin" relay --config "$tmp/relay.toml" >"$tmp/relay.log" 2>&1 &
opid=$!; pids+=($opid)
sleep 1

echo "load: turnutils_uclient ${flags[*]}"
run_load coturn "$cpid" "$cport"
run_load onionrtc "$opid" "$oport"
awk -v a="$(cat "$tmp/onionrtc.rate")" -v b="$(cat "$tmp/coturn.rate")" 'BEGIN{ if (b>0 && a!="inf") printf "ratio onionrtc/coturn (messages per CPU-second): %.2f\n", a/b; else print "ratio: n/a (CPU below measurement resolution)"}'
