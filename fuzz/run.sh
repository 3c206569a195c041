#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each and prints a
# summary: runs, executions per second, libFuzzer's final coverage (cov:
# edges, ft: features) and whether it found anything. docs/fuzzing.md.
#
#   bash fuzz/run.sh [SECONDS] [TARGET...]     default: 60 s, every target
#
# Environment:
#   SANITIZER=none      (default) stable toolchain, no sanitizer
#   SANITIZER=address   AddressSanitizer, via RUSTC_BOOTSTRAP=1 on stable
#   FUZZ_JOBS=N         targets run N at a time (default 1)
#   FUZZ_ARGS="..."     extra libFuzzer flags (e.g. -max_len=8192)
#
# Each target grows its working corpus in fuzz/corpus/TARGET (not checked
# in) from the seeds in fuzz/seeds/TARGET; a crash is written to
# fuzz/artifacts/TARGET/ and makes the script exit 1. Logs: fuzz/logs/.
set -euo pipefail
cd "$(dirname "$0")"

secs=${1:-60}
if [ $# -gt 0 ]; then shift; fi
sanitizer=${SANITIZER:-none}
jobs=${FUZZ_JOBS:-1}

san=(-s "$sanitizer")
if [ "$sanitizer" != none ]; then
  # Sanitizers need -Z flags; stable rustc accepts them with this.
  export RUSTC_BOOTSTRAP=1
fi

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

echo "== building ${#targets[@]} fuzz targets (sanitizer: $sanitizer)"
cargo fuzz build "${san[@]}"

mkdir -p logs
summary=logs/summary.txt

run_one() {
  local t=$1
  mkdir -p "corpus/$t" "artifacts/$t"
  local start rc=0
  start=$(date +%s)
  # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
  cargo fuzz run "${san[@]}" "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="artifacts/$t/" ${FUZZ_ARGS:-} >"logs/$t.log" 2>&1 || rc=$?
  local took=$(($(date +%s) - start))
  local runs eps cov ft status
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "logs/$t.log" | tail -1 || true)
  eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "logs/$t.log" | tail -1 || true)
  cov=$(grep -oE 'cov: [0-9]+' "logs/$t.log" | tail -1 | cut -d' ' -f2 || true)
  ft=$(grep -oE 'ft: [0-9]+' "logs/$t.log" | tail -1 | cut -d' ' -f2 || true)
  if [ "$rc" -eq 0 ]; then status=ok; else status="FAILED (exit $rc, see fuzz/logs/$t.log)"; fi
  printf '%-16s %8ss %12s %10s %8s %8s  %s\n' "$t" "$took" "${runs:--}" "${eps:--}" \
    "${cov:--}" "${ft:--}" "$status" >"logs/$t.row"
  return "$rc"
}

failed=0
pids=()
alive() {
  local n=0 p
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && n=$((n + 1)); done
  echo "$n"
}
for t in "${targets[@]}"; do
  while [ "$(alive)" -ge "$jobs" ]; do sleep 1; done
  echo "== $t: ${secs}s"
  run_one "$t" &
  pids+=($!)
done
for p in "${pids[@]}"; do
  wait "$p" || failed=1
done

{
  printf '%-16s %9s %12s %10s %8s %8s  %s\n' target time runs exec/s cov ft result
  for t in "${targets[@]}"; do cat "logs/$t.row"; done
} | tee "$summary"

if [ "$failed" -ne 0 ]; then
  for t in "${targets[@]}"; do
    if grep -q FAILED "logs/$t.row"; then
      echo "== $t failed; the end of its log:"
      tail -40 "logs/$t.log"
    fi
  done
  exit 1
fi
