#!/usr/bin/env bash
# The Debian package's life cycle on this machine: build it with cargo-deb, install it with
# dpkg, run the installed binary with the installed configuration from / (a sample served
# from /usr/share/pixgate/samples, the shipped policy from /etc/pixgate/lua), verify the
# systemd unit, remove the package and check nothing of it is left. Needs root.
#
# CI packages the binary the tests just built in target/debug (`--profile dev` is where
# cargo-deb looks for it; a release build would add ~9 minutes on two cores). Run alone, it
# builds that binary first. `cargo deb` without flags builds the release package.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --quiet
target_dir=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
[ -x "$target_dir/debug/pixgate" ] || cargo build --locked --quiet --bin pixgate
deb=$(cargo deb --no-build --profile dev --quiet 2>/dev/null | tail -n 1)
[ -f "$deb" ] || deb=$(ls -t target/debian/pixgate_*.deb | head -n 1)
echo "deb: built $deb ($(du -h "$deb" | cut -f1))"
dpkg-deb --contents "$deb" | awk '{print "deb:   " $6}'

dpkg -i "$deb"
work=$(mktemp -d)
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true
  rm -rf "$work"
  dpkg --purge pixgate >/dev/null 2>&1 || true
}
trap cleanup EXIT

unit=$(dpkg -L pixgate | grep '/pixgate.service$')
systemd-analyze verify "$unit"
echo "deb: systemd-analyze verify $unit: clean"

# The installed binary with the installed configuration, away from any checkout.
(cd / && PIXGATE_METRICS_LISTEN="" /usr/bin/pixgate serve --config /etc/pixgate/pixgate.toml \
  --listen 127.0.0.1:0 >"$work/out" 2>"$work/log") &
pid=$!
for _ in $(seq 1 200); do
  grep -q '^listening on ' "$work/out" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/log" >&2; exit 1; }
  sleep 0.05
done
addr=$(sed -n 's/^listening on //p' "$work/out")
[ -n "$addr" ] || { echo "deb: the installed pixgate did not start" >&2; cat "$work/log" >&2; exit 1; }
/usr/bin/pixgate health --url "http://$addr/health"
type=$(curl -sf -o "$work/img" -w '%{content_type}' \
  "http://$addr/insecure/rs:fit:200:0/plain/local:///seeding.jpg")
[ "$type" = "image/jpeg" ] || { echo "deb: sample answered $type" >&2; cat "$work/log" >&2; exit 1; }
grep -q 'policy loaded' "$work/log" || { echo "deb: the shipped policy did not load" >&2; cat "$work/log" >&2; exit 1; }
curl -sf "http://$addr/version"; echo
kill "$pid"; wait "$pid" || true; pid=""

dpkg --purge pixgate
for f in /usr/bin/pixgate /usr/share/pixgate/samples/seeding.jpg /etc/pixgate/pixgate.toml "$unit"; do
  [ ! -e "$f" ] || { echo "deb: $f is still there after dpkg --purge" >&2; exit 1; }
done
echo "deb: install, run, verify and remove: ok"
