#!/usr/bin/env bash
# BENCHMARKS.md §4: what a deployed contract costs the HTTP server. Two `nexus serve`
# instances side by side on loopback: `a` without a contract, `b` with a 100-rule
# contract one rule of which reads every Fact of nexus-bench's cycle; nexus-bench runs
# against each in turn, REPEAT times. Build first:
#   cargo build --release -p nexus -p nexus-bench
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release
REPEAT=${REPEAT:-3} DURATION=${DURATION:-6} AGENTS=${AGENTS:-16}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
{
  echo 'contract = "http-bench"'
  for i in $(seq 0 98); do
    cat <<RULE

[[rule]]
name = "budget-$i"
topic = "area$i/**"
where = "fact.body.status == 'failed'"
group = "fact.topic"
threshold = 5
within = "6h"
emit = { effect = "deny", topic = "\${group}/**", reason = "budget spent under \${group}" }
RULE
  done
  cat <<'RULE'

[[rule]]
name = "busy-agent"
topic = "bench/**"
where = "has(fact.resolves) && fact.body.result == 42"
group = "fact.body.agent"
threshold = 64
within = "1s"
emit = { effect = "priority", priority = -1, topic = "elsewhere/**", reason = "agent ${group} is busy" }
RULE
} > "$work/bench.nex"
$BIN/nexus contract check "$work/bench.nex"
$BIN/nexus serve --data "$work/a" --addr 127.0.0.1:17871 --open > "$work/a.log" 2>&1 &
$BIN/nexus serve --data "$work/b" --addr 127.0.0.1:17872 --open > "$work/b.log" 2>&1 &
sleep 1.5
NEXUS_HOME="$work/home" $BIN/nexus keygen > /dev/null 2>&1
NEXUS_HOME="$work/home" $BIN/nexus --server http://127.0.0.1:17872 contract deploy "$work/bench.nex"
for rep in $(seq "$REPEAT"); do
  for t in a b; do
    port=17871; [ "$t" = b ] && port=17872
    echo "== repeat $rep, server $t (load $(cut -d' ' -f1 /proc/loadavg))"
    $BIN/nexus-bench nexus --url "http://127.0.0.1:$port" --agents "$AGENTS" --duration "$DURATION"
  done
done
echo "== Hints in force on b: $(NEXUS_HOME="$work/home" $BIN/nexus --server http://127.0.0.1:17872 hints --json | grep -o '"hint":' | wc -l)"
