#!/usr/bin/env bash
# Issue 16's figures (BENCHMARKS.md §7), through the real `nexus serve` (release build):
# the server's peak resident memory (VmHWM) under 16 concurrent `GET /v1/log?limit=1000`
# over 1,000 records of ~60 KiB, and the median proposal latency with no Hint, with the
# active Hint list full by bytes (4 KiB selectors up to 512 KiB) and by count (1,000
# small Hints). The measurement is the ignored test `bench_bounds` in
# crates/nexus/tests/bounds.rs; it asserts no timing. Not part of CI.
#
#   bench/bounds.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo nextest run --release -p nexus --test bounds --run-ignored only --no-capture 2>&1 |
  grep -E '^(log|proposal)'
