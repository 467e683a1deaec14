#!/usr/bin/env bash
# End-to-end load benchmark: pixgate's cache-hit path against nginx serving the same bytes as
# a static file, with wrk on this machine; pixgate without a policy and with a Lua policy that
# puts every request in a (never exhausted) rate-limit bucket, so the difference is the cost
# of the policy call plus the GCRA check. Prints req/s, latency percentiles, the ratios and
# pixgate's peak RSS. Usage: benches/load.sh [seconds] (default 10).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"

. benches/common.sh

cargo build --release --quiet
work=$(mktemp -d)
chmod 755 "$work"   # nginx workers run unprivileged
cleanup() {
  [ -n "${px_pid:-}" ] && kill "$px_pid" 2>/dev/null || true
  [ -n "${pol_pid:-}" ] && kill "$pol_pid" 2>/dev/null || true
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# start NAME POLICY_FILE: starts pixgate, sets ${NAME}_pid and ${NAME}_addr.
start() {
  PIXGATE_LOG_LEVEL=warn PIXGATE_METRICS_LISTEN=127.0.0.1:0 PIXGATE_POLICY_FILE="$2" ./target/release/pixgate serve --listen 127.0.0.1:0 >"$work/$1.out" 2>"$work/$1.err" &
  local pid=$!
  until grep -q "listening on" "$work/$1.out" 2>/dev/null; do
    kill -0 "$pid" || { cat "$work/$1.err"; exit 1; }
    sleep 0.05
  done
  printf -v "${1}_pid" %s "$pid"
  printf -v "${1}_addr" %s "$(sed -n 's/^listening on //p' "$work/$1.out")"
}
cat >"$work/policy.lua" <<'LUA'
function decide(req)
  return { allow = true, bucket = "ip:" .. req.ip, rate = 1e9, burst = 1e9 }
end
LUA
start px ""
start pol "$work/policy.lua"
path="/insecure/rs:fit:400:0/f:webp/plain/local:///seeding.jpg"
curl -sf -o "$work/static.webp" "http://$px_addr$path"   # warms the caches
curl -sf -o /dev/null "http://$pol_addr$path"

ng_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/nginx.conf" <<CONF
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx.err warn;
events { worker_connections 1024; }
http {
  access_log off;
  types { image/webp webp; }
  sendfile on;
  keepalive_requests 100000;
  server { listen 127.0.0.1:$ng_port; root $work; }
}
CONF
"$NGINX_BIN" -c "$work/nginx.conf"
until curl -sf -o /dev/null "http://127.0.0.1:$ng_port/static.webp"; do sleep 0.05; done

run() { wrk -t1 -c16 -d"${secs}s" --latency "$1" | tee "$work/wrk.out" >&2; awk '/Requests\/sec/ {print $2}' "$work/wrk.out"; }
echo "== pixgate cache hit: $path ($(stat -c %s "$work/static.webp") bytes)" >&2
px_rps=$(run "http://$px_addr$path")
echo "== pixgate cache hit with a Lua policy and a rate-limit bucket" >&2
pol_rps=$(run "http://$pol_addr$path")
echo "== nginx static file, same bytes" >&2
ng_rps=$(run "http://127.0.0.1:$ng_port/static.webp")
rss=$(awk '/VmHWM/ {print $2}' "/proc/$px_pid/status")
python3 - "$px_rps" "$ng_rps" "$rss" "$pol_rps" <<'PY'
import sys
px, ng, rss, pol = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
print(f"pixgate {px:.0f} req/s, nginx {ng:.0f} req/s, ratio {px/ng:.2f}, pixgate peak RSS {rss/1024:.0f} MiB")
print(f"pixgate with policy {pol:.0f} req/s ({(pol/px - 1)*100:+.1f} % against no policy)")
PY
