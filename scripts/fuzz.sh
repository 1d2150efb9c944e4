#!/usr/bin/env bash
# Runs every fuzz target (fuzz/README.md) for SECONDS each (default 60) and prints, per
# target, the executions, the coverage reached and whether anything was found.
# Needs cargo-fuzz (`cargo install cargo-fuzz`); the stable toolchain is enough with
# RUSTC_BOOTSTRAP=1, set here.
set -uo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O >/dev/null 2>&1 || cargo fuzz build -O || exit 1
status=0
for t in $(cargo fuzz list); do
  mkdir -p "fuzz/corpus/$t"
  log="$(mktemp)"
  cargo fuzz run -O "$t" "fuzz/corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=4096 \
      -print_final_stats=1 >"$log" 2>&1
  rc=$?
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
  cov=$(grep -E '^#[0-9]+' "$log" | grep -o 'cov: [0-9]*' | tail -1)
  ft=$(grep -E '^#[0-9]+' "$log" | grep -o 'ft: [0-9]*' | tail -1)
  corpus=$(ls "fuzz/corpus/$t" | wc -l)
  if [ $rc -eq 0 ]; then
    echo "fuzz: $t: ${runs:-?} executions in ${secs} s, ${cov:-cov: ?}, ${ft:-ft: ?}, corpus $corpus inputs, nothing found"
  else
    status=1
    echo "fuzz: $t: FAILED (exit $rc); see the artifact below"
    grep -E 'panicked|ERROR|artifact|SUMMARY' "$log" | head -20
  fi
  rm -f "$log"
done
exit $status
