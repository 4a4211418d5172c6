#!/usr/bin/env bash
# Cycles/s at K agents while SLOW slow connections are held (headers declaring a
# 60,000-byte body, one byte, then nothing; reopened as the server closes them), against
# cycles/s without them, interleaved in one run (issue 15; BENCHMARKS.md §9).
#
#   bench/slow.sh                       # K=64, SLOW=3000, 10 s, 3 repeats
#   AGENTS=64 SLOW=3000 DURATION=10 REPEAT=3 bench/slow.sh
#
# nexus serve runs with its defaults (30 s header and body timeouts, 4,096 connections).
# Not part of CI.
set -euo pipefail
AGENTS=${AGENTS:-64}
SLOW=${SLOW:-3000}
DURATION=${DURATION:-10}
REPEAT=${REPEAT:-3}
PORT=${PORT:-17979}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
command -v jq >/dev/null || { echo "slow.sh: jq not found: apt-get install -y jq" >&2; exit 1; }
(cd "$ROOT" && cargo build --release --quiet -p nexus -p nexus-bench)
TARGET_DIR=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
NEXUS="$TARGET_DIR/release/nexus" BENCH="$TARGET_DIR/release/nexus-bench"
# The slow connections are file descriptors of this process too.
ulimit -n $((SLOW + 1024))
DATA=$(mktemp -d /tmp/nexus-slow.XXXXXX)
"$NEXUS" serve --data "$DATA" --addr 127.0.0.1:$PORT --open >"$DATA.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DATA" "$DATA.log"' EXIT
for _ in $(seq 50); do curl -sf http://127.0.0.1:$PORT/v1/health >/dev/null && break; sleep 0.1; done
run() { "$BENCH" nexus --url http://127.0.0.1:$PORT --agents "$AGENTS" --duration "$DURATION" --json "$@"; }
printf '%-6s %-10s %12s %10s %10s\n' run slow cycles/s p50_ms p99_ms
plain=() held=()
for r in $(seq "$REPEAT"); do
  for slow in 0 "$SLOW"; do
    args=()
    [ "$slow" -gt 0 ] && args=(--slow "$slow")
    v=$(run "${args[@]}")
    c=$(jq -r .cycles_per_s <<<"$v")
    printf '%-6s %-10s %12s %10s %10s\n' "$r" "$slow" "$c" \
      "$(jq -r .cycle.p50_ms <<<"$v")" "$(jq -r .cycle.p99_ms <<<"$v")"
    [ "$slow" -gt 0 ] && { held+=("$c"); jq -c .slow <<<"$v"; } || plain+=("$c")
  done
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
p=$(median "${plain[@]}") h=$(median "${held[@]}")
echo "median cycles/s: without $p, with $SLOW slow connections $h: ratio $(awk -v a="$h" -v b="$p" 'BEGIN {printf "%.2f", a/b}')"
