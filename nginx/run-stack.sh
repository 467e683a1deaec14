#!/usr/bin/env bash
# Runs the production-like stack in the foreground: K pixgate processes on loopback ports and
# nginx in front (nginx/nginx.conf, with its includes rendered for those ports).
#
#   nginx/run-stack.sh [--port PORT] [--processes K] [--tls-port PORT] [--workdir DIR]
#                      [--bin PATH]
#
# Prints `stack ready on http://127.0.0.1:PORT` once a request answered through its own
# nginx (found in that nginx's access log). A port already in use is refused with a message
# and exit status 1; port 0 (for --port or --tls-port) picks a free one, tried again if
# another process takes it first; stack.env says which. PIXGATE_* variables reach every
# pixgate process (PIXGATE_TRUSTED_PROXIES defaults to loopback, where nginx connects from).
# --bin picks the pixgate binary (default: cargo build --release, found in the target
# directory cargo reports, so CARGO_TARGET_DIR and .cargo/config are honoured).
# Ctrl-C or SIGTERM stops everything it started. The work directory (logs/, cache/, conf/,
# stack.env with ports and pids) is removed at exit unless --workdir was given.
set -euo pipefail

port=8080
processes=2
tls_port=""
work=""
bin=""
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port="$2"; shift 2 ;;
    --processes) processes="$2"; shift 2 ;;
    --tls-port) tls_port="$2"; shift 2 ;;
    --workdir) work="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "run-stack: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$processes" in ''|*[!0-9]*|0) echo "run-stack: --processes must be a positive number" >&2; exit 2 ;; esac

root=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "$bin" ]; then
  (cd "$root" && cargo build --release --quiet)
  target_dir=$(cd "$root" && cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  bin="$target_dir/release/pixgate"
fi
[ -x "$bin" ] || { echo "run-stack: no pixgate binary at $bin" >&2; exit 1; }
NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX_BIN" ] || { echo "run-stack: nginx is not installed (apt-get install nginx)" >&2; exit 1; }

own_work=""
if [ -z "$work" ]; then
  work=$(mktemp -d /tmp/pixgate-stack.XXXXXX)
  own_work=1
fi
mkdir -p "$work/conf" "$work/logs" "$work/cache" "$work/temp" "$work/tls"
chmod 755 "$work"
work=$(cd "$work" && pwd)
cp "$root/nginx/nginx.conf" "$work/conf/nginx.conf"
cp -r "$root/nginx/pixgate" "$work/conf/"

pids=()
nginx_pid=""
cleanup() {
  trap - EXIT INT TERM
  [ -n "$nginx_pid" ] && kill -TERM "$nginx_pid" 2>/dev/null || true
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "$own_work" ] && rm -rf "$work"
  return 0
}
trap cleanup EXIT
trap 'exit 0' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
# Exit status 0 when something listens on 127.0.0.1:$1.
port_busy() {
  python3 -c 'import socket,sys; s=socket.socket(); s.settimeout(1); sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)' "$1"
}
for p in "$port" "$tls_port"; do
  if [ -n "$p" ] && [ "$p" != 0 ] && port_busy "$p"; then
    echo "run-stack: port $p is already in use on 127.0.0.1 (another server?); pick another with --port/--tls-port, or 0 for a free one" >&2
    exit 1
  fi
done

# A port probed free may be taken before our server binds it: servers that fail to bind are
# started again on another, so a collision costs a retry, never a wrong server.
attempts=5

export PIXGATE_TRUSTED_PROXIES="${PIXGATE_TRUSTED_PROXIES:-127.0.0.0/8,::1}"
addrs=()
metrics=()
: >"$work/conf/pixgate/upstream.conf"
for i in $(seq 1 "$processes"); do
  for attempt in $(seq 1 "$attempts"); do
    m="127.0.0.1:$(free_port)"
    PIXGATE_METRICS_LISTEN="$m" "$bin" serve --listen 127.0.0.1:0 \
      >"$work/logs/pixgate-$i.out" 2>"$work/logs/pixgate-$i.log" &
    pid=$!
    started=1
    until grep -q '^listening on ' "$work/logs/pixgate-$i.out" 2>/dev/null; do
      if ! kill -0 "$pid" 2>/dev/null; then
        started=""
        break
      fi
      sleep 0.05
    done
    [ -n "$started" ] && break
    if [ "$attempt" = "$attempts" ] || ! grep -q 'cannot listen for metrics' "$work/logs/pixgate-$i.log"; then
      echo "run-stack: pixgate $i did not start:" >&2
      cat "$work/logs/pixgate-$i.log" >&2
      exit 1
    fi
  done
  pids+=("$pid")
  a=$(sed -n 's/^listening on //p' "$work/logs/pixgate-$i.out")
  addrs+=("$a")
  metrics+=("$m")
  echo "server $a max_fails=2 fail_timeout=5s;" >>"$work/conf/pixgate/upstream.conf"
done

if [ -n "$tls_port" ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$work/tls/key.pem" -out "$work/tls/cert.pem" 2>/dev/null
fi
# listen.conf and tls.conf for the ports chosen.
render_ports() {
  echo "listen 127.0.0.1:$port;" >"$work/conf/pixgate/listen.conf"
  if [ -n "$tls_port" ]; then
    sed -e "s|^listen 443 ssl http2;|listen 127.0.0.1:$tls_port ssl http2;|" \
        -e '/^listen \[::\]:443/d' \
        -e "s|/etc/ssl/pixgate/fullchain.pem|$work/tls/cert.pem|" \
        -e "s|/etc/ssl/pixgate/privkey.pem|$work/tls/key.pem|" \
        "$root/nginx/pixgate/tls.conf" >"$work/conf/pixgate/tls.conf"
  else
    : >"$work/conf/pixgate/tls.conf"
  fi
}
auto_port=""; [ "$port" = 0 ] && auto_port=1
auto_tls=""; [ "$tls_port" = 0 ] && auto_tls=1
# Workers write the cache and temp files; as root they run as www-data (nginx.conf `user`).
if [ "$(id -u)" = 0 ]; then
  chown -R www-data "$work/cache" "$work/temp" 2>/dev/null || true
else
  sed -i 's/^user www-data;/# user: not root, workers run as the invoking user/' "$work/conf/nginx.conf"
fi

for attempt in $(seq 1 "$attempts"); do
  [ -n "$auto_port" ] && port=$(free_port)
  [ -n "$auto_tls" ] && tls_port=$(free_port)
  render_ports
  "$NGINX_BIN" -t -q -p "$work/" -c "$work/conf/nginx.conf"
  : >"$work/logs/error.log"
  "$NGINX_BIN" -p "$work/" -c "$work/conf/nginx.conf" -g 'daemon off;' &
  nginx_pid=$!
  up=""
  # Our nginx, not whatever else answers on the port: the probe, marked with a token of
  # this run, must answer and appear in this nginx's own access log.
  token="stack-probe-$$-$attempt-$RANDOM"
  deadline=$((SECONDS + 30))
  until kill -0 "$nginx_pid" 2>/dev/null &&
        curl -sf -o /dev/null "http://127.0.0.1:$port/health?$token" 2>/dev/null &&
        grep -q "$token" "$work/logs/access.log" 2>/dev/null; do
    if ! kill -0 "$nginx_pid" 2>/dev/null; then
      break
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "run-stack: nginx runs but no probe answered through it within 30 s" >&2
      exit 1
    fi
    sleep 0.05
  done
  kill -0 "$nginx_pid" 2>/dev/null && up=1
  [ -n "$up" ] && break
  nginx_pid=""
  if [ "$attempt" = "$attempts" ] || ! { [ -n "$auto_port$auto_tls" ] && grep -q 'Address already in use' "$work/logs/error.log"; }; then
    echo "run-stack: nginx did not start:" >&2
    cat "$work/logs/error.log" >&2 || true
    exit 1
  fi
done

cat >"$work/stack.env" <<ENV
NGINX_PORT=$port
TLS_PORT=$tls_port
PIXGATE_ADDRS="${addrs[*]}"
PIXGATE_METRICS="${metrics[*]}"
PIXGATE_PIDS="${pids[*]}"
WORKDIR=$work
ENV
echo "pixgate processes: ${addrs[*]} (metrics: ${metrics[*]}); logs and config in $work" >&2
echo "stack ready on http://127.0.0.1:$port"
wait "$nginx_pid"
