#!/usr/bin/env bash
# CI's fuzz smoke: every target under libFuzzer + AddressSanitizer for a short, bounded time,
# so the harnesses stay alive and a crash that the seeds or the regression files reach fails CI.
#   fuzz/smoke.sh [SECONDS_PER_TARGET]      (default 15)
# Not evidence of robustness (that is fuzz/run-all.sh, recorded in fuzz/runs.tsv); nothing is
# appended to runs.tsv. Same limits as run.sh: 512 MB RSS and malloc, 10 s per input.
# Installs cargo-fuzz when it is missing (needs the nightly toolchain the machines have).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-15}
lock=/tmp/ctsentinel-cargo.lock
# Exit 3 means "could not be installed here" (CI prints the smoke as NOT CHECKED, not passed).
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz smoke: no nightly toolchain (cargo-fuzz needs it for the sanitizer flags)" >&2
  exit 3
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --quiet || { echo "fuzz smoke: cargo-fuzz could not be installed" >&2; exit 3; }
fi
flock "$lock" cargo test -q --test fuzz_corpus -- --ignored write_seed_corpus >/dev/null
# Its own target folder (fuzz/target), whatever CARGO_TARGET_DIR says: ASan builds never mix with the product's.
(cd fuzz && CARGO_TARGET_DIR=target flock "$lock" cargo +nightly fuzz build -O --fuzz-dir . >/dev/null)
export ASAN_OPTIONS=${ASAN_OPTIONS:-quarantine_size_mb=32}
mkdir -p fuzz/logs
failed=()
for t in $(cd fuzz && CARGO_TARGET_DIR=target cargo +nightly fuzz list --fuzz-dir .); do
  dirs=("fuzz/corpus/$t")
  [ -d "fuzz/regressions/$t" ] && dirs+=("fuzz/regressions/$t")
  mkdir -p "fuzz/artifacts/smoke/$t"
  log=fuzz/logs/smoke-$t.log
  set +e
  "fuzz/target/x86_64-unknown-linux-gnu/release/$t" "${dirs[@]}" -rss_limit_mb=512 -malloc_limit_mb=512 \
    -timeout=10 -max_total_time="$secs" -print_final_stats=1 \
    -artifact_prefix="fuzz/artifacts/smoke/$t/" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -o '^stat::number_of_executed_units: *[0-9]*' "$log" | awk '{print $2}' | tail -1)
  echo "fuzz smoke: $t ${secs}s, ${execs:-?} inputs, libFuzzer exit $rc"
  if [ "$rc" != 0 ]; then
    tail -n 40 "$log"
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz smoke failed: ${failed[*]} (inputs under fuzz/artifacts/smoke/)" >&2
  exit 1
fi
