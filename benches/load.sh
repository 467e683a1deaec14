#!/usr/bin/env bash
# End-to-end load benchmark: pixgate's cache-hit path against nginx serving the same bytes as
# a static file, with wrk on this machine. Prints req/s, latency percentiles, the ratio and
# pixgate's peak RSS. Usage: benches/load.sh [seconds] (default 10).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

cargo build --release --quiet
work=$(mktemp -d)
chmod 755 "$work"   # nginx workers run unprivileged
cleanup() {
  [ -n "${px_pid:-}" ] && kill "$px_pid" 2>/dev/null || true
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

PIXGATE_LOG_LEVEL=warn ./target/release/pixgate serve --listen 127.0.0.1:0 >"$work/px.out" 2>"$work/px.err" &
px_pid=$!
until grep -q "listening on" "$work/px.out" 2>/dev/null; do
  kill -0 "$px_pid" || { cat "$work/px.err"; exit 1; }
  sleep 0.05
done
px_addr=$(sed -n 's/^listening on //p' "$work/px.out")
path="/insecure/rs:fit:400:0/f:webp/plain/local:///seeding.jpg"
curl -sf -o "$work/static.webp" "http://$px_addr$path"   # warms the cache

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
"$NGINX" -c "$work/nginx.conf"
until curl -sf -o /dev/null "http://127.0.0.1:$ng_port/static.webp"; do sleep 0.05; done

run() { wrk -t1 -c16 -d"${secs}s" --latency "$1" | tee "$work/wrk.out" >&2; awk '/Requests\/sec/ {print $2}' "$work/wrk.out"; }
echo "== pixgate cache hit: $path ($(stat -c %s "$work/static.webp") bytes)" >&2
px_rps=$(run "http://$px_addr$path")
echo "== nginx static file, same bytes" >&2
ng_rps=$(run "http://127.0.0.1:$ng_port/static.webp")
rss=$(awk '/VmHWM/ {print $2}' "/proc/$px_pid/status")
python3 - "$px_rps" "$ng_rps" "$rss" <<'PY'
import sys
px, ng, rss = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
print(f"pixgate {px:.0f} req/s, nginx {ng:.0f} req/s, ratio {px/ng:.2f}, pixgate peak RSS {rss/1024:.0f} MiB")
PY
