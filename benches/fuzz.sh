#!/usr/bin/env bash
# Runs every libFuzzer target in fuzz/ for MINUTES each (default 5), seeding its corpus from
# tests/fixtures and fuzz/regressions, and files each crash as a regression that
# `cargo test` replays (tests/it/fuzz.rs). Builds with cargo-fuzz on the stable toolchain
# (sanitizer off: `-s none`; on nightly, set PIXGATE_FUZZ_SANITIZER=address).
#   bash benches/fuzz.sh [MINUTES] [TARGET...]     targets: url probe transform multipart decision
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-5}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(url probe transform multipart decision)
sanitizer="${PIXGATE_FUZZ_SANITIZER:-none}"
fixtures=tests/fixtures
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

# Seeds, rebuilt each run (fuzz/corpus is not committed; the fuzzer adds what it finds).
seed() { mkdir -p "fuzz/corpus/$1"; }
for t in "${targets[@]}"; do seed "$t"; done
n=0
add() { n=$((n + 1)); printf '%s' "$2" > "fuzz/corpus/$1/seed-$n"; }
images=$(find "$fixtures" -type f \( -name '*.jpg' -o -name '*.png' -o -name '*.gif' -o -name '*.webp' \
  -o -name '*.avif' -o -name '*.svg' -o -name '*.bmp' -o -name '*.tif*' -o -name '*.ico' \) -size -300k | sort)
for t in "${targets[@]}"; do
  case "$t" in
    url)
      for p in /insecure/rs:fit:300:200/plain/https://a.example/b.jpg@webp \
        /insecure/rs:fill:100:100:1:1:ce:0:0/g:fp:0.5:0.5/q:70/plain/local:///x.png \
        /insecure/c:0.5:0.5:nowe:10:10/pd:1:2:3:4/bl:2/sh:1/f:avif/aHR0cHM6Ly9hLmV4YW1wbGUvYi5qcGc.png \
        /insecure/pr:thumb/wm:0.5:re:10:10:0.2/t:10:ff00ff:1:1/plain/local:///a.gif \
        /_/exp:1900000000/mb:10000/aq:dssim:0.02:40:90/car:1.5:1/a:10:1.2:0.8/plain/http://x/y \
        /AfrOrF3gWeDA6VOlDG4TzxMv39O7MXnF4CXpKUwGqRM/rs:fit:300:300/plain/http://img.example.com/pretty/image.jpg \
        /info/insecure/plain/local:///seeding.jpg; do add url "$p"; done ;;
    probe)
      for f in $images; do cp "$f" "fuzz/corpus/probe/$(basename "$f")"; done ;;
    transform)
      i=0
      for f in $images; do
        i=$((i + 1))
        opts=("rs:fit:64:64" "rs:fill:40:30/g:sm/f:webp" "c:20:20/bl:3/sh:1/f:png" "t:10/pd:2/f:avif" \
              "rs:fit:50:0/el:1/a:10:1.5:0.5/pix:4/f:gif" "w:32/sm:0/scp:0/mb:2000/f:jpg")
        o=${opts[$((i % ${#opts[@]}))]}
        { printf '%s\n' "$o"; cat "$f"; } > "fuzz/corpus/transform/$(basename "$f")"
      done ;;
    multipart)
      add multipart $'\x07XyZ\n--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\nContent-Type: image/png\r\n\r\nPNGDATA\r\n--XyZ--\r\n'
      add multipart $'\x03b\n--b\r\nContent-Disposition: form-data; name="other"\r\n\r\nx\r\n--b\r\nContent-Disposition: form-data; name="file"\r\n\r\n1234\r\n--b--\r\n' ;;
    decision)
      for b in 'return { allow = true }' \
        'return { allow = true, bucket = "ip:" .. req.ip, rate = 10, burst = 20, cost = 2 }' \
        'return { allow = false, status = 429, reason = "slow", retry_after = 3 }' \
        'local h = (req.referer or ""):match("^%a[%w+.-]*://([^/:?#]+)") return { allow = h ~= "x" }' \
        'for k, v in (req.path):gmatch("/(%w+):(%w+)") do end return { allow = true }' \
        'return { allow = true, brust = 3 }'; do add decision "$b"; done ;;
  esac
  if [ -d "fuzz/regressions/$t" ]; then cp fuzz/regressions/"$t"/* "fuzz/corpus/$t/" 2>/dev/null || true; fi
done

cargo fuzz build -s "$sanitizer" -O >/dev/null
printf '%-10s %8s %10s %8s %s\n' target minutes execs crashes "corpus"
for t in "${targets[@]}"; do
  log=$(mktemp)
  # -rss_limit_mb bounds what C libraries allocate (the Rust side is bounded tighter by the
  # targets' counting allocator); -timeout flags a single input taking over 30 s.
  cargo fuzz run -s "$sanitizer" -O "$t" "fuzz/corpus/$t" -- \
    -max_total_time=$((minutes * 60)) -rss_limit_mb=2048 -timeout=30 -max_len=1048576 \
    -print_final_stats=1 >"$log" 2>&1 || true
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  crashes=0
  for a in fuzz/artifacts/"$t"/crash-* fuzz/artifacts/"$t"/timeout-* fuzz/artifacts/"$t"/oom-*; do
    [ -e "$a" ] || continue
    mkdir -p "fuzz/regressions/$t"
    mv "$a" "fuzz/regressions/$t/"
    crashes=$((crashes + 1))
  done
  printf '%-10s %8s %10s %8s %s\n' "$t" "$minutes" "${execs:-0}" "$crashes" "$(ls "fuzz/corpus/$t" | wc -l) files"
  [ "$crashes" -eq 0 ] || { echo "  $t: new regressions in fuzz/regressions/$t (replayed by cargo test)"; tail -40 "$log"; }
  rm -f "$log"
done
