#!/usr/bin/env bash
# Run one fuzz target with libFuzzer and record what it did.
#   fuzz/run.sh TARGET [SECONDS] [RUNS]
# Writes the generated seed corpus (tests/fuzz_corpus.rs), adds a few real files from
# ../shared/data where that exists (never committed: fuzz/corpus is git-ignored), builds the
# targets (nightly, cargo-fuzz, AddressSanitizer, -O) and runs TARGET until SECONDS have passed
# or RUNS inputs were executed (default: 600 s, 1,000,000 runs), with a 512 MB RSS limit and a
# 10 s per-input timeout. Crashing inputs land in fuzz/artifacts/TARGET/; the final statistics
# are appended to fuzz/runs.tsv (target, date, seconds, executions, exec/s, new units, crash
# artifacts, peak RSS MB, libFuzzer's exit status).
set -euo pipefail
cd "$(dirname "$0")/.."
target=$1 secs=${2:-600} runs=${3:-1000000}
lock=/tmp/ctsentinel-cargo.lock

flock "$lock" cargo test -q --test fuzz_corpus -- --ignored write_seed_corpus >/dev/null
shared=../shared/data
add() { mkdir -p "fuzz/corpus/$1"; cp -f "$2" "fuzz/corpus/$1/shared-$(echo "$2" | tr / _)"; }
if [ -d "$shared" ]; then
  case $target in
    slice)
      add slice "$shared/ct16/covid/ctmd_P001/SR_1/IM00025.tif"            # uncompressed
      add slice "$shared/ct16/normal/ctmd_normal001/SR_1/IM00025.tif"      # Deflate + predictor
      add slice "$shared/dicom/covid/ctmd_P001/SR_1/IM00025.dcm"           # JPEG Lossless SV1
      add slice "$shared/dicom/normal/ctmd_normal001_thin/99C628-ASAD_77.dcm" ;;
    dicom_header)
      add dicom_header "$shared/dicom/covid/ctmd_P001/SR_1/IM00025.dcm"
      add dicom_header "$shared/dicom/normal/ctmd_normal001_thin/99C628-ASAD_77.dcm" ;;
    image8)
      for s in mosmed ucsd sarscov2; do
        f=$(awk -F, -v s=$s '$2==s {print $1; exit}' "$shared/train8/labels.csv")
        add image8 "$shared/train8/$f"
      done ;;
  esac
fi
(cd fuzz && flock "$lock" cargo +nightly fuzz build -O --fuzz-dir . "$target" >/dev/null)
bin=fuzz/target/x86_64-unknown-linux-gnu/release/$target
mkdir -p "fuzz/artifacts/$target" fuzz/logs
log=fuzz/logs/$target.log
# libFuzzer's RSS limit counts the whole process: the in-memory corpus (real 512 KB slices) and
# AddressSanitizer's quarantine of freed blocks (256 MB by default) besides the input's own
# allocations. A 32 MB quarantine keeps the limit about what the decoders use; single
# allocations over 512 MB are caught by -malloc_limit_mb whatever the total.
export ASAN_OPTIONS=${ASAN_OPTIONS:-quarantine_size_mb=32}
start=$(date +%s)
set +e
"$bin" "fuzz/corpus/$target" -rss_limit_mb=512 -malloc_limit_mb=512 -timeout=10 \
  -max_total_time="$secs" -runs="$runs" -print_final_stats=1 \
  -artifact_prefix="fuzz/artifacts/$target/" >"$log" 2>&1
rc=$?
set -e
took=$(( $(date +%s) - start ))
stat() { grep -o "^stat::$1: *[0-9]*" "$log" | tail -1 | awk '{print $2}'; }
execs=$(stat number_of_executed_units); rate=$(stat average_exec_per_sec)
units=$(stat new_units_added); rss=$(stat peak_rss_mb)
crashes=$(find "fuzz/artifacts/$target" -type f | wc -l)
printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$(date -u +%FT%TZ)" "$took" "${execs:-?}" \
  "${rate:-?}" "${units:-?}" "$crashes" "${rss:-?}" "$rc" | tee -a fuzz/runs.tsv
