#!/usr/bin/env bash
# Runs the selection benchmarks and the numpy peer in one go and prints the two ratios the
# README quotes: vectorised/naive kernel throughput, and Rust/numpy end-to-end series/s.
# Usage: bench/compare_select.sh   (needs ../shared/data and the venv from scripts/setup-venv.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
data=${CTSENTINEL_SHARED_DATA:-../shared/data}
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
cargo bench --bench select -- --noplot 2>&1 | grep -E '^(roi_count|select_series)|time:|thrpt:' || true
py=$(.venv/bin/python bench/select_numpy.py "$data/ct16" 10)
python3 - "$py" <<'PY'
import json, sys
est = lambda n: json.load(open(f"target/criterion/{n}/new/estimates.json"))["median"]["point_estimate"]  # ns
vec, naive, e2e = est("roi_count/vectorised"), est("roi_count/naive"), est("select_series/all_shared")
np_ = json.loads(sys.argv[1])
rust_sps = 5 / (e2e / 1e9)
print(f"kernel: vectorised {25000/vec*1e3:.0f} Mpx/s, naive {25000/naive*1e3:.0f} Mpx/s -> ratio {naive/vec:.1f}x")
print(f"end-to-end (decode+count+select, 5 series): rust {rust_sps:.1f} series/s, numpy {np_['series_per_s']:.1f} series/s -> ratio {rust_sps/np_['series_per_s']:.2f}x")
PY
