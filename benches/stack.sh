#!/usr/bin/env bash
# Throughput through the production-like stack (nginx/run-stack.sh, 2 pixgate processes) and
# directly against one pixgate process, in one run, for one workload (the 2000 px sample
# JPEG fitted into a width): cache misses (every request a new width/quality, so neither
# nginx's disk tier nor pixgate's memory cache can answer) and cache hits (one URL).
# Usage: benches/stack.sh [seconds] (default 10). Needs wrk and nginx (installed if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
. benches/common.sh
cargo build --release --quiet
work=$(mktemp -d)
cleanup() {
  [ -n "${stack_pid:-}" ] && kill -TERM "$stack_pid" 2>/dev/null && wait "$stack_pid" 2>/dev/null || true
  [ -n "${px_pid:-}" ] && kill "$px_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
export PIXGATE_LOG_LEVEL=warn PIXGATE_POLICY_FILE=""
nginx/run-stack.sh --port 0 --processes 2 --bin target/release/pixgate >"$work/stack.out" 2>"$work/stack.err" &
stack_pid=$!
until grep -q "^stack ready" "$work/stack.out" 2>/dev/null; do
  kill -0 "$stack_pid" || { cat "$work/stack.err"; exit 1; }
  sleep 0.1
done
port=$(sed -n 's|^stack ready on http://127.0.0.1:||p' "$work/stack.out")
PIXGATE_METRICS_LISTEN=127.0.0.1:0 target/release/pixgate serve --listen 127.0.0.1:0 >"$work/px.out" 2>"$work/px.err" &
px_pid=$!
until grep -q "listening on" "$work/px.out" 2>/dev/null; do sleep 0.05; done
px=$(sed -n 's/^listening on //p' "$work/px.out")

hit="/insecure/rs:fit:300:0/plain/local:///seeding.jpg"
cat >"$work/miss.lua" <<'LUA'
local n = 0
request = function()
  n = n + 1
  local w = 200 + n % 400
  local q = 40 + math.floor(n / 400) % 55
  return wrk.format("GET", string.format("/insecure/rs:fit:%d:0/q:%d/plain/local:///seeding.jpg", w, q))
end
LUA
rps() { awk '/Requests\/sec/ {print $2}'; }
run_hit() { curl -sf -o /dev/null "$1$hit"; wrk -t1 -c16 -d"${secs}s" "$1$hit" | rps; }
# Misses saturate the CPU at a few hundred req/s: 4 connections, each process gets work.
run_miss() { wrk -t1 -c4 -d"${secs}s" -s "$work/miss.lua" "$1" | rps; }
nx="http://127.0.0.1:$port"
n_hit=$(run_hit "$nx")
p_hit=$(run_hit "http://$px")
n_miss=$(run_miss "$nx")
p_miss=$(run_miss "http://$px")
printf 'workload: seeding.jpg (2000 px) fitted to 200-600 px JPEG\n'
printf '%-34s %12s %12s\n' "" "cache miss" "cache hit"
printf '%-34s %12s %12s\n' "nginx + 2 pixgate (disk tier hit)" "$n_miss" "$n_hit"
printf '%-34s %12s %12s\n' "pixgate direct (memory cache hit)" "$p_miss" "$p_hit"
