#!/usr/bin/env bash
# Fuzzes every target for SECONDS each (default 60), one after another, from the committed
# seeds in fuzz/seeds/<target>/. New inputs go to fuzz/corpus/<target>/ (not committed), a
# crash to fuzz/artifacts/<target>/ and fails the run. Prints executions per second and in
# total for each target. Needs the nightly toolchain; installs cargo-fuzz when missing.
#   fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
shift || true

command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz --version 0.13.2
# No sanitizer: Plexus forbids unsafe code, so what the fuzzer looks for is a panic (an
# unwrap, an overflow, an index out of range) or a hang, which libFuzzer sees without one.
# Debug assertions on, so arithmetic overflow panics as it does in the test builds.
flags=(--sanitizer none --debug-assertions --codegen-units 16)
cargo +nightly fuzz build "${flags[@]}"

targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
summary=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  log=$(mktemp)
  # -timeout: one input taking over 10 s is a hang; -rss_limit_mb bounds a memory blow-up.
  if ! cargo +nightly fuzz run "${flags[@]}" "$t" "corpus/$t" "seeds/$t" -- \
      -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz: $t failed; the input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  summary+=("$(printf '%-12s %10s execs/s %12s execs in %ss' "$t" "$rate" "$execs" "$secs")")
  rm -f "$log"
done
printf 'fuzz: %s\n' "${summary[@]}"
