#!/usr/bin/env bash
# Soak: pixgate under mixed traffic for MINUTES (default 10) — cache hits, unique misses in
# every output format, keyed requests against the shipped policy (some rate-limited), the
# issue-15 attacks (huge sigmas, 36 MP results near the limit, metadata bombs, bad URLs and
# signatures) — while a second client keeps 200 silent and slowloris connections open from
# another loopback address. Samples pixgate's RSS every 5 s and prints req/s, latency, status
# classes, RSS (min/median/max), late jobs and closed connections.
#   bash benches/soak.sh [MINUTES] [BINARY]     (default: a release build)
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-10}"
bin="${2:-}"
. benches/common.sh
# The binary is an argument, not a PIXGATE_* variable: pixgate reads every PIXGATE_<KEY> as
# configuration and refuses keys it does not know.
if [ -z "$bin" ]; then
  cargo build --release --quiet
  bin=./target/release/pixgate
fi
work=$(mktemp -d)
cleanup() {
  [ -n "${px_pid:-}" ] && kill "$px_pid" 2>/dev/null || true
  [ -n "${lor_pid:-}" ] && kill "$lor_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cp samples/* "$work/"
python3 - "$work/bomb.png" <<'PY'
import struct, sys, zlib
def chunk(t, d): return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
c = zlib.compressobj(9)
z = b''.join(c.compress(b'\0' * (1 << 20)) for _ in range(512)) + c.flush()
png = b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', 8, 8, 8, 2, 0, 0, 0)) \
    + chunk(b'iCCP', b'bomb\0\0' + z) + chunk(b'IDAT', zlib.compress(b'\0' * 200)) + chunk(b'IEND', b'')
open(sys.argv[1], 'wb').write(png)
PY
mport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
PIXGATE_LOG_LEVEL=warn PIXGATE_METRICS_LISTEN="127.0.0.1:$mport" PIXGATE_LOCAL_ROOT="$work" \
  PIXGATE_POLICY_FILE="$PWD/lua/policy.lua" PIXGATE_MAX_CONNECTIONS_PER_IP=64 \
  "$bin" serve --listen 127.0.0.1:0 >"$work/px.out" 2>"$work/px.err" &
px_pid=$!
until grep -q "listening on" "$work/px.out" 2>/dev/null; do
  kill -0 "$px_pid" || { cat "$work/px.err"; exit 1; }
  sleep 0.05
done
addr=$(sed -n 's/^listening on //p' "$work/px.out")
metrics="http://127.0.0.1:$mport/metrics"

# Silent connections and slowloris header drips from 127.0.0.2, reopened when closed.
python3 - "$addr" >/dev/null 2>&1 <<'PY' &
import socket, sys, time, random
host, port = sys.argv[1].rsplit(':', 1)
conns = []
while True:
    while len(conns) < 200:
        try:
            s = socket.socket(); s.bind(('127.0.0.2', 0)); s.settimeout(0.5)
            s.connect((host, int(port)))
            if random.random() < 0.5: s.send(b'GET /health HTTP/1.1\r\nHost: x\r\n')
            conns.append(s)
        except OSError:
            time.sleep(0.05)
    for s in list(conns):
        try:
            s.send(b'X-Drip: 1\r\n')
        except OSError:
            conns.remove(s); s.close()
    time.sleep(1)
PY
lor_pid=$!

cat >"$work/mix.lua" <<'LUA'
local n = 0
local keys = { "demo-free", "demo-pro", "demo-enterprise", "demo-blocked", "no-such-key" }
local formats = { "jpg", "webp", "png", "avif", "gif" }
request = function()
  n = n + 1
  local r = math.random(100)
  local headers = {}
  local path
  if r <= 40 then
    path = "/insecure/rs:fit:400:0/plain/local:///seeding.jpg"
  elseif r <= 70 then
    path = "/insecure/rs:fit:" .. math.random(100, 900) .. ":0/cb:" .. n .. "/f:" ..
           formats[math.random(#formats)] .. "/plain/local:///" ..
           ({ "seeding.jpg", "friends.jpg", "sunset.png" })[math.random(3)]
  elseif r <= 80 then
    path = "/insecure/rs:fit:300:0/plain/local:///friends.jpg"
    headers["X-Api-Key"] = keys[math.random(#keys)]
  elseif r <= 84 then
    path = "/insecure/bl:1e9/sh:1e300/cb:" .. n .. "/plain/local:///seeding.jpg"
  elseif r <= 86 then
    path = "/insecure/el:1/rs:fit:8000:8000/cb:" .. n .. "/plain/local:///seeding.jpg"
  elseif r <= 90 then
    path = "/insecure/w:20/cb:" .. n .. "/plain/local:///bomb.png"
  elseif r <= 93 then
    path = "/info/insecure/plain/local:///bomb.png"
  elseif r <= 96 then
    path = "/insecure/rs:fit:abc/plain/local:///nope.jpg"
  else
    path = "/c2lnbmF0dXJl/w:100/plain/http://169.254.169.254/latest"
  end
  return wrk.format("GET", path, headers)
end
LUA

rss() { awk '/VmRSS/{print int($2/1024)}' "/proc/$px_pid/status"; }
samples=()
wrk -t2 -c32 -d"${minutes}m" --latency -s "$work/mix.lua" "http://$addr" >"$work/wrk.out" 2>&1 &
wrk_pid=$!
while kill -0 "$wrk_pid" 2>/dev/null; do
  samples+=("$(rss)")
  sleep 5
done
wait "$wrk_pid" || true
samples+=("$(rss)")
sorted=$(printf '%s\n' "${samples[@]}" | sort -n)
count=${#samples[@]}
echo "soak: $minutes min, mixed traffic (wrk -t2 -c32) + 200 silent/slowloris connections"
grep -E "Requests/sec|Latency +[0-9]|50%|99%|requests in|Socket errors|Non-2xx" "$work/wrk.out" | sed 's/^/  /'
echo "  RSS MiB: min $(echo "$sorted" | head -1), median $(echo "$sorted" | sed -n "$(( (count + 1) / 2 ))p"), max $(echo "$sorted" | tail -1), last ${samples[-1]} ($count samples)"
if [ -n "$metrics" ]; then
  curl -s "$metrics" | grep -E '^pixgate_http_requests_total|^pixgate_cpu_overrun|^pixgate_http_connections_closed|^pixgate_cpu_panics|^pixgate_errors_total\{code="(internal-error|request-timeout|queue-full)"\}' \
    | awk '$2 != 0' | sed 's/^/  /'
fi
kill -0 "$px_pid" && echo "  pixgate still serving: $(curl -s -o /dev/null -w '%{http_code}' "http://$addr/health") on /health"
