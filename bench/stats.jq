# jq helpers shared by bench/peers.sh and bench/worker.sh (jq -L bench 'include "stats"; …').
def med: sort | if length % 2 == 1 then .[length/2|floor] else (.[length/2-1] + .[length/2]) / 2 end;
def f: . * 100 | round / 100;
def r1: . * 10 | round / 10;
# The medians of one group of `nexus-bench --json` runs: cycles/s and each step's p50/p99.
def step_medians: {
  cps: (map(.cycles_per_s) | med),
  pp50: (map(.propose.p50_ms) | med), pp99: (map(.propose.p99_ms) | med),
  cp50: (map(.claim.p50_ms) | med),   cp99: (map(.claim.p99_ms) | med),
  rp50: (map(.resolve.p50_ms) | med), rp99: (map(.resolve.p99_ms) | med),
  err: (map(.errors) | add), load: (map(.load1) | med)
};
