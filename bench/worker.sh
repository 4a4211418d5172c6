#!/usr/bin/env bash
# The Cloudflare Worker (workers/nexus-single under wrangler dev, workerd) vs the native
# server (nexus serve, redb): the same propose → claim → resolve workload (nexus-bench)
# against both, on loopback, on this machine, in one run; then the Worker's per-request
# KV / R2 / Durable Object operations (x-nexus-metrics, via worker-costs) and its wasm
# size.
#
#   bench/worker.sh                          # K = 1 16, 8 s per run
#   AGENTS="1 16 64" DURATION=10 REPEAT=3 bench/worker.sh
#
# Needs what scripts/setup installs (worker-build, wasm-bindgen-cli, npm ci) and jq.
# Not part of CI. Stops both servers on exit.
set -euo pipefail

AGENTS=${AGENTS:-"1 16"}
DURATION=${DURATION:-8}
REPEAT=${REPEAT:-1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORKER="$ROOT/workers/nexus-single"
OUT=${OUT:-/tmp/nexus-worker-bench-$(date -u +%Y%m%dT%H%M%SZ).jsonl}

die() { echo "worker.sh: $*" >&2; exit 1; }
command -v jq >/dev/null || die "jq not found: apt-get install -y jq"

echo "== building (nexus, nexus-bench, worker-costs; the deployable Worker)"
(cd "$ROOT" && cargo build --release --quiet -p nexus -p nexus-bench -p nexus-worker-test)
TARGET_DIR=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
SIZE=$("$ROOT/scripts/worker-build" --deploy-only | grep '^worker wasm')
echo "$SIZE"

TMP=$(mktemp -d /tmp/nexus-worker-bench.XXXXXX)
NEXUS_PID="" WRANGLER_PID=""
cleanup() {
  set +e
  [ -n "$NEXUS_PID" ] && kill "$NEXUS_PID" 2>/dev/null && wait "$NEXUS_PID" 2>/dev/null
  # wrangler runs in a process group of its own (setsid): stop it and its workerd.
  [ -n "$WRANGLER_PID" ] && kill -INT -- "-$WRANGLER_PID" 2>/dev/null && sleep 1 &&
    kill -KILL -- "-$WRANGLER_PID" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== starting nexus serve --open (data in $TMP/nexus)"
"$TARGET_DIR/release/nexus" serve --data "$TMP/nexus" --addr 127.0.0.1:0 --open \
  >"$TMP/nexus.out" 2>"$TMP/nexus.err" &
NEXUS_PID=$!
NATIVE_URL=""
for _ in $(seq 100); do
  NATIVE_URL=$(sed -n 's/^nexus listening on //p' "$TMP/nexus.out")
  [ -n "$NATIVE_URL" ] && break
  sleep 0.1
done
[ -n "$NATIVE_URL" ] || die "nexus serve did not start"

PORT=${PORT:-$((20000 + RANDOM % 20000))}
echo "== starting wrangler dev on 127.0.0.1:$PORT (state in $TMP/worker)"
(
  cd "$WORKER"
  WRANGLER_SEND_METRICS=false CI=true CLOUDFLARE_CF_FETCH_ENABLED=false \
    WRANGLER_REGISTRY_PATH="$TMP/registry" \
    exec setsid node_modules/.bin/wrangler dev build/worker/shim.mjs --local \
    --ip 127.0.0.1 --port "$PORT" --inspector-port $((PORT + 1)) --persist-to "$TMP/worker" \
    --log-level error --show-interactive-dev-session=false --var NEXUS_OPEN:true \
    >"$TMP/wrangler.log" 2>&1
) &
WRANGLER_PID=$!
WORKER_URL="http://127.0.0.1:$PORT"
for _ in $(seq 300); do
  curl -fs "$WORKER_URL/v1/health" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fs "$WORKER_URL/v1/health" >/dev/null || { cat "$TMP/wrangler.log" >&2; die "wrangler dev did not start"; }

echo "== machine: $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
: >"$OUT"
for r in $(seq "$REPEAT"); do
  for k in $AGENTS; do
    for host in native worker; do
      url=$NATIVE_URL
      [ "$host" = worker ] && url=$WORKER_URL
      load=$(cut -d' ' -f1 /proc/loadavg)
      line=$("$TARGET_DIR/release/nexus-bench" nexus --url "$url" --agents "$k" \
        --duration "$DURATION" --json) || { echo "$line" >&2; die "$host at K=$k failed"; }
      line=$(echo "$line" | jq -c --arg host "$host" --arg load "$load" --argjson r "$r" \
        '. + {host: $host, load1: ($load|tonumber), rep: $r}')
      echo "$line" >>"$OUT"
      echo "$line" | jq -r '"  \(.host) K=\(.agents): \(.cycles_per_s) cycles/s, cycle p50 \(.cycle.p50_ms) ms p99 \(.cycle.p99_ms) ms, errors \(.errors)"'
    done
  done
done
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"

jq -rs -L "$ROOT/bench" 'include "stats";
  group_by([.agents, .host]) | map({k: .[0].agents, h: .[0].host} + step_medians) as $rows
  | "| K | host | cycles/s (= 3 writes each) | propose p50 / p99 ms | claim p50 / p99 ms | resolve p50 / p99 ms | errors | load1 |",
    "|---:|---|---:|---:|---:|---:|---:|---:|",
    ($rows | sort_by(.k, .h)[]
      | "| \(.k) | \(.h) | \(.cps | r1) | \(.pp50|f) / \(.pp99|f) | \(.cp50|f) / \(.cp99|f) | \(.rp50|f) / \(.rp99|f) | \(.err) | \(.load|f) |"),
    "",
    "| K | Worker / native cycles/s | Worker / native cycle p50 |",
    "|---:|---:|---:|",
    ($rows | group_by(.k)[] | (map({(.h): .}) | add) as $m
      | "| \($m.worker.k) | \($m.worker.cps / $m.native.cps | f) | \(($m.worker.pp50 + $m.worker.cp50 + $m.worker.rp50) / ($m.native.pp50 + $m.native.cp50 + $m.native.rp50) | f) |")
' "$OUT"

echo "== the Worker's operations per request (mean over 20 cycles, x-nexus-metrics)"
"$TARGET_DIR/release/worker-costs" "$WORKER_URL" 20 | tee -a "$OUT.costs" | jq -r '
  .mean_per_request | to_entries[] | "  \(.key): \(.value | to_entries | map("\(.key)=\(.value)") | join(" "))"'
echo "$SIZE"
echo "== raw results: $OUT"
