#!/usr/bin/env bash
# Soak: the demo workload with random process churn against a real tt-aggregator for
# DURATION seconds (default 600). Checks at the end: every process released, device
# figures back to zero, nothing lost, aggregator private memory (RssAnon) flat (growth
# after the first fifth of the run at most 1 MiB + 5%).
#
#   scripts/soak.sh [DURATION_S] [BIN_DIR]     (BIN_DIR default: target/release)
set -euo pipefail
duration=${1:-600}
bin=${2:-target/release}
for b in tt-aggregator tt-track tt-smi; do
  [ -x "$bin/$b" ] || { echo "soak: $bin/$b not built (cargo build --release)"; exit 2; }
done
dir=$(mktemp -d /dev/shm/tttrack-soak.XXXXXX)
log=$(mktemp /tmp/tttrack-soak-log.XXXXXX)
cleanup() {
  pkill -TERM -f "tt-track workload --soak-dir $dir" 2>/dev/null || true
  [ -n "${agg:-}" ] && kill "$agg" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
# The events kept for snapshots are a window, bounded by time and bytes: a 5 s window
# is full well before the early measure below, so what follows is the flat part.
"$bin/tt-aggregator" --dir "$dir" --no-compat-socket --no-metal-shm --quiet --last-events-seconds 5 >"$log" 2>&1 &
agg=$!
sleep 0.5
# Private memory: the counters page is a shared file mapping whose history pages get
# touched one per second until the ring wraps (16 min); that is bounded, not growth.
rss() { awk '/RssAnon/ {print $2}' "/proc/$agg/status"; }
spawned=0
start=$(date +%s)
rss_early=""
pids=()
while :; do
  now=$(date +%s)
  elapsed=$((now - start))
  [ "$elapsed" -ge "$duration" ] && break
  if [ -z "$rss_early" ] && [ "$elapsed" -ge $((duration / 5)) ]; then rss_early=$(rss); fi
  # Keep 2 to 5 processes; each lives a random number of program cycles, some leak,
  # some are killed with SIGKILL mid-run.
  alive=()
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive+=("$p"); done
  pids=("${alive[@]}")
  if [ "${#pids[@]}" -lt $((2 + RANDOM % 4)) ]; then
    leak=""; [ $((RANDOM % 4)) -eq 0 ] && leak="--leak"
    TT_ALLOC_TRACKING_ENABLED=1 TTTRACK_DIR="$dir" \
      "$bin/tt-track" workload --soak-dir "$dir" --seed $((spawned + 1)) \
      --cycles $((20 + RANDOM % 200)) --pace-ms $((1 + RANDOM % 10)) $leak >/dev/null 2>&1 &
    pids+=("$!")
    spawned=$((spawned + 1))
  fi
  if [ "${#pids[@]}" -gt 0 ] && [ $((RANDOM % 20)) -eq 0 ]; then
    kill -KILL "${pids[$((RANDOM % ${#pids[@]}))]}" 2>/dev/null || true
  fi
  sleep 0.2
done
for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
wait "${pids[@]}" 2>/dev/null || true
# Every process released (they are within about 100 ms; up to 30 s on a loaded machine).
for _ in $(seq 1 300); do
  json=$("$bin/tt-smi" --json --dir "$dir")
  python3 -c 'import json,sys; sys.exit(0 if not json.loads(sys.argv[1])["processes"] else 1)' "$json" && break
  sleep 0.1
done
rss_end=$(rss)
rss_early=${rss_early:-$rss_end}
result=$(python3 - "$json" "$rss_early" "$rss_end" "$spawned" <<'PY'
import json, sys
d = json.loads(sys.argv[1]); early, end, spawned = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
problems = []
if d["processes"]: problems.append(f"{len(d['processes'])} processes still listed")
for dev in d["devices"]:
    for t, f in dev["memory"].items():
        if f["used_bytes"]: problems.append(f"device {dev['id']} {t} still {f['used_bytes']} bytes")
a = d["aggregator"]
if a["events_lost"]: problems.append(f"{a['events_lost']} events lost")
if not a["events_applied"] or spawned == 0: problems.append("no events were applied: the workload did not run")
if end > early + 1024 + early // 20: problems.append(f"aggregator private memory grew from {early} KiB to {end} KiB")
print(f"soak: {spawned} processes, {a['events_applied']} events applied, {a['events_lost']} lost, aggregator private memory (RssAnon) {early} KiB -> {end} KiB")
for p in problems: print("soak problem:", p)
print("FAIL" if problems else "OK")
PY
)
echo "$result"
if [ "$(echo "$result" | tail -1)" = OK ]; then echo "soak: 1 passed, 0 failed"; else echo "soak: 0 passed, 1 failed"; exit 1; fi
