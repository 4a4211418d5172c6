#!/usr/bin/env bash
# neXus vs etcd 3.4 vs PostgreSQL 15: the same propose → claim → resolve workload
# (nexus-bench) against each, on loopback, on this machine, in one run.
#
#   bench/peers.sh                      # K = 1 16 64, 10 s per run
#   AGENTS="1 16 64" DURATION=10 REPEAT=1 bench/peers.sh
#   NEXUS_BASE=/path/to/old/nexus AGENTS=64 REPEAT=3 bench/peers.sh
#       # also runs an older `nexus` binary ("nexus-base", its own data directory),
#       # interleaved with the others, and prints the ratio nexus / nexus-base
#
# Needs (installs nothing): etcd 3.4 and PostgreSQL 15 binaries —
#   apt-get update && apt-get install -y etcd-server postgresql
# Every server runs with its default durability: etcd fsyncs its WAL before it answers;
# Postgres with fsync=on, synchronous_commit=on; nexus serve acknowledges a write only
# after the group-commit transaction holding it is durable.
#
# Prints a table (cycles/s, p50/p99 per step) and the ratios; the raw JSON lines go to
# $OUT (default: a file under /tmp, named at the end). Stops every server on exit.
# Not part of CI.
set -euo pipefail

AGENTS=${AGENTS:-"1 16 64"}
DURATION=${DURATION:-10}
REPEAT=${REPEAT:-1}
ETCD_PORT=${ETCD_PORT:-23791}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-23801}
PG_PORT=${PG_PORT:-54329}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/nexus-peers-$(date -u +%Y%m%dT%H%M%SZ).jsonl}

die() { echo "peers.sh: $*" >&2; exit 1; }

# ---- what is needed ----
ETCD_BIN=$(command -v etcd || true)
[ -n "$ETCD_BIN" ] || die "etcd not found: apt-get update && apt-get install -y etcd-server"
"$ETCD_BIN" --version | grep -q 'etcd Version: 3\.4' ||
  echo "peers.sh: warning: not etcd 3.4: $("$ETCD_BIN" --version | head -1)" >&2
PG_BIN=${PG_BIN:-}
if [ -z "$PG_BIN" ]; then
  for d in /usr/lib/postgresql/15/bin /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && { PG_BIN=$d; break; }
  done
fi
[ -n "$PG_BIN" ] && [ -x "$PG_BIN/initdb" ] ||
  die "PostgreSQL not found: apt-get update && apt-get install -y postgresql"
command -v jq >/dev/null || die "jq not found: apt-get install -y jq"
command -v curl >/dev/null || die "curl not found: apt-get install -y curl"

# ---- build once ----
echo "== building release binaries (nexus, nexus-bench)"
(cd "$ROOT" && cargo build --release --quiet -p nexus -p nexus-bench)
TARGET_DIR=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
NEXUS="$TARGET_DIR/release/nexus"
BENCH="$TARGET_DIR/release/nexus-bench"

# ---- servers, stopped on exit ----
TMP=$(mktemp -d /tmp/nexus-peers.XXXXXX)
PGDATA_DIR=$(mktemp -d /tmp/nexus-peers-pg.XXXXXX)
NEXUS_PID="" ETCD_PID="" PG_STARTED=""
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
cleanup() {
  set +e
  [ -n "$NEXUS_PID" ] && kill "$NEXUS_PID" 2>/dev/null && wait "$NEXUS_PID" 2>/dev/null
  [ -n "${NEXUS_BASE_PID:-}" ] && kill "$NEXUS_BASE_PID" 2>/dev/null && wait "$NEXUS_BASE_PID" 2>/dev/null
  [ -n "${STARTED_PID:-}" ] && kill "$STARTED_PID" 2>/dev/null && wait "$STARTED_PID" 2>/dev/null
  [ -n "$ETCD_PID" ] && kill "$ETCD_PID" 2>/dev/null && wait "$ETCD_PID" 2>/dev/null
  [ -n "$PG_STARTED" ] && as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR/data" -m fast -w stop >/dev/null 2>&1
  rm -rf "$TMP" "$PGDATA_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_nexus NAME BINARY: starts `BINARY serve --open` on its own data directory and
# sets STARTED_PID and STARTED_URL.
start_nexus() {
  local name=$1 bin=$2 url=""
  echo "== starting $bin serve --open (data in $TMP/$name)"
  "$bin" serve --data "$TMP/$name" --addr 127.0.0.1:0 --open >"$TMP/$name.out" 2>"$TMP/$name.err" &
  STARTED_PID=$!
  for _ in $(seq 100); do
    url=$(sed -n 's/^nexus listening on //p' "$TMP/$name.out")
    [ -n "$url" ] && break
    kill -0 "$STARTED_PID" 2>/dev/null || { cat "$TMP/$name.err" >&2; die "$name serve exited"; }
    sleep 0.1
  done
  [ -n "$url" ] || die "$name serve did not start"
  STARTED_URL=$url
}
start_nexus nexus "$NEXUS"
NEXUS_PID=$STARTED_PID NEXUS_URL=$STARTED_URL
NEXUS_BASE_PID="" NEXUS_BASE_URL=""
if [ -n "${NEXUS_BASE:-}" ]; then
  start_nexus nexus-base "$NEXUS_BASE"
  NEXUS_BASE_PID=$STARTED_PID NEXUS_BASE_URL=$STARTED_URL
fi

echo "== starting etcd on 127.0.0.1:$ETCD_PORT (data in $TMP/etcd)"
"$ETCD_BIN" --name bench --data-dir "$TMP/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "bench=http://127.0.0.1:$ETCD_PEER_PORT" \
  >"$TMP/etcd.log" 2>&1 &
ETCD_PID=$!
ETCD_URL="http://127.0.0.1:$ETCD_PORT"
for _ in $(seq 100); do
  curl -fs "$ETCD_URL/health" 2>/dev/null | grep -q true && break
  kill -0 "$ETCD_PID" 2>/dev/null || { tail "$TMP/etcd.log" >&2; die "etcd exited"; }
  sleep 0.1
done
curl -fs "$ETCD_URL/health" | grep -q true || die "etcd did not become healthy"

echo "== starting PostgreSQL ($PG_BIN) on 127.0.0.1:$PG_PORT (data in $PGDATA_DIR)"
[ "$(id -u)" = 0 ] && chown postgres: "$PGDATA_DIR"
as_pg "$PG_BIN/initdb" -D "$PGDATA_DIR/data" -U postgres -A trust --no-locale -E UTF8 \
  >"$TMP/initdb.log" 2>&1 || { cat "$TMP/initdb.log" >&2; die "initdb failed"; }
as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR/data" -l "$PGDATA_DIR/postgres.log" -w \
  -o "-p $PG_PORT -k $PGDATA_DIR -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=on -c synchronous_commit=on" \
  start >/dev/null || { cat "$PGDATA_DIR/postgres.log" >&2; die "Postgres did not start"; }
PG_STARTED=1
PG_DSN="host=127.0.0.1 port=$PG_PORT user=postgres dbname=postgres"

# ---- server CPU (user + system seconds, incl. reaped children: Postgres backends) ----
ticks() { # PID... -> clock ticks of utime+stime+cutime+cstime, summed
  local t=0 p v
  for p in "$@"; do
    v=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12+$13+$14+$15}') || v=0
    t=$((t + ${v:-0}))
  done
  echo "$t"
}
PG_PID=$(head -1 "$PGDATA_DIR/data/postmaster.pid")
server_ticks() {
  case $1 in
    nexus) ticks "$NEXUS_PID" ;;
    nexus-base) ticks "$NEXUS_BASE_PID" ;;
    etcd) ticks "$ETCD_PID" ;;
    postgres) sleep 0.5; ticks "$PG_PID" $(pgrep -P "$PG_PID" || true) ;;
  esac
}

# ---- the runs ----
echo "== machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
: >"$OUT"
for r in $(seq "$REPEAT"); do
  for k in $AGENTS; do
    for t in nexus ${NEXUS_BASE:+nexus-base} etcd postgres; do
      case $t in
        nexus) addr=(--url "$NEXUS_URL") ;;
        nexus-base) addr=(--url "$NEXUS_BASE_URL") ;;
        etcd) addr=(--endpoint "$ETCD_URL") ;;
        postgres) addr=(--dsn "$PG_DSN") ;;
      esac
      load=$(cut -d' ' -f1 /proc/loadavg)
      s0=$(server_ticks "$t")
      line=$("$BENCH" "${t%-base}" "${addr[@]}" --agents "$k" --duration "$DURATION" --json) ||
        { echo "$line" >&2; die "$t at K=$k failed"; }
      line=$(echo "$line" | jq -c --arg t "$t" '.target = $t')
      s1=$(server_ticks "$t")
      line=$(echo "$line" | jq -c --arg load "$load" --argjson r "$r" --argjson st $((s1 - s0)) \
        '. + {load1: ($load|tonumber), rep: $r, server_cpu_s: ($st / 100)}')
      echo "$line" >>"$OUT"
      echo "$line" | jq -r '"  \(.target) K=\(.agents): \(.cycles_per_s) cycles/s, cycle p50 \(.cycle.p50_ms) ms p99 \(.cycle.p99_ms) ms, errors \(.errors), CPU ms/cycle server \(1000 * .server_cpu_s / .cycles * 100 | round / 100) client \(1000 * .client_cpu_s / .cycles * 100 | round / 100)"'
    done
  done
done
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"

# ---- the table (medians over repeats) ----
jq -rs -L "$ROOT/bench" 'include "stats";
  group_by([.agents, .target]) | map({
    k: .[0].agents, t: .[0].target,
    scpu: (map(1000 * .server_cpu_s / .cycles) | med), ccpu: (map(1000 * .client_cpu_s / .cycles) | med)
  } + step_medians) as $rows
  | "| K | system | cycles/s | propose p50 / p99 ms | claim p50 / p99 ms | resolve p50 / p99 ms | errors | CPU ms/cycle server / client | load1 |",
    "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ($rows | sort_by(.k, (.t | if . == "nexus" then 0 elif . == "nexus-base" then 1 elif . == "etcd" then 2 else 3 end))[]
      | "| \(.k) | \(.t) | \(.cps | r1) | \(.pp50|f) / \(.pp99|f) | \(.cp50|f) / \(.cp99|f) | \(.rp50|f) / \(.rp99|f) | \(.err) | \(.scpu|f) / \(.ccpu|f) | \(.load|f) |"),
    "",
    "| K | nexus / etcd | nexus / postgres | nexus / better peer | ≥ 2× | worst step p99: nexus / better-throughput peer |",
    "|---:|---:|---:|---:|---|---|",
    ($rows | group_by(.k)[] | (map({(.t): .}) | add) as $m
      | ([$m.etcd, $m.postgres] | max_by(.cps)) as $best
      | ($m.nexus.cps / $best.cps) as $x
      | ([$m.nexus.pp99, $m.nexus.cp99, $m.nexus.rp99] | max) as $n99
      | ([$best.pp99, $best.cp99, $best.rp99] | max) as $b99
      | "| \($m.nexus.k) | \($m.nexus.cps / $m.etcd.cps | f) | \($m.nexus.cps / $m.postgres.cps | f) | \($x | f) (\($best.t)) | \(if $x >= 2 then "met" else "missed" end) | \($n99|f) / \($b99|f) ms |"),
    (if ($rows | map(.t) | index("nexus-base")) then
      "",
      "| K | nexus / nexus-base cycles/s | server CPU ms/cycle: nexus / nexus-base |",
      "|---:|---:|---:|",
      ($rows | group_by(.k)[] | (map({(.t): .}) | add) as $m
        | "| \($m.nexus.k) | \($m.nexus.cps / $m["nexus-base"].cps | f) | \($m.nexus.scpu|f) / \($m["nexus-base"].scpu|f) |")
    else empty end)
' "$OUT"
echo "== raw results: $OUT"
