#!/usr/bin/env bash
# Every fuzz target to 1,000,000 executions or 30 minutes, whichever comes first, two at a time
# (one per core of the 2-core machines); each run appends its line to fuzz/runs.tsv.
#   fuzz/run-all.sh [SECONDS] [RUNS]
# The two slow decoders (slice, image8) start first, one per lane; the fast text and PDU parsers
# follow them, so both lanes end at about the same time.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-1800} runs=${2:-1000000}
# Build once before the lanes start (run.sh's own build is then a no-op).
(cd fuzz && flock /tmp/ctsentinel-cargo.lock cargo +nightly fuzz build -O --fuzz-dir .)
lane() { local t; for t in "$@"; do fuzz/run.sh "$t" "$secs" "$runs" || echo "run.sh $t failed" >&2; done; }
lane slice dicom_header &
a=$!
lane image8 journal dicom_peer service_config model_card web_request &
b=$!
wait "$a" "$b"
