#!/usr/bin/env bash
# The write path of this tree vs a baseline `nexus` binary, interleaved, with this tree's
# nexus-bench (which signs version 1 claims for a baseline older than wire format v2):
#   cargo build --release -p nexus -p nexus-bench
#   NEW=target/release/nexus BASE=/path/to/old/nexus BENCH=target/release/nexus-bench \
#     K=16 DURATION=8 REPEAT=3 bench/ab.sh
# Prints one JSON line per run (cycles/s, errors, claim p50/p99). Loopback only; stops
# both servers on exit. Not part of CI.
set -euo pipefail
NEW=${NEW:?} BASE=${BASE:?} BENCH=${BENCH:?}
K=${K:-16} DURATION=${DURATION:-8} REPEAT=${REPEAT:-3}
T=$(mktemp -d)
start() { "$1" serve --data "$T/$2" --addr "127.0.0.1:$3" --open >"$T/$2.log" 2>&1 & echo $!; }
P1=$(start "$NEW" new 17881); P2=$(start "$BASE" base 17882)
trap 'kill $P1 $P2 2>/dev/null; rm -rf "$T"' EXIT
sleep 2
for r in $(seq "$REPEAT"); do
  for t in new:17881 base:17882; do
    name=${t%%:*} port=${t##*:}
    line=$("$BENCH" nexus --url "http://127.0.0.1:$port" --agents "$K" --duration "$DURATION" --json)
    echo "$name $(echo "$line" | jq -c "{cycles_per_s, errors, claim_p50: .claim.p50_ms, claim_p99: .claim.p99_ms}" 2>/dev/null || echo "$line")"
  done
done
