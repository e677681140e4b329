#!/usr/bin/env bash
# Per-slice latency of the shipped model: tract int8 vs tract fp32 vs ONNX Runtime int8 and
# fp32, same model files, same phantom slice, same thread counts, interleaved (ROUNDS rounds of
# tract then ORT, per thread count); medians of the rounds and ratios to tract int8. Then the
# end-to-end `scan` time of each shared patient (release build).
# Usage: bench/compare_infer.sh [ROUNDS] [ITERS]   (needs the venv from scripts/setup-venv.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}; iters=${2:-10}
card=$(ls models/*.toml)  # the shipped card (models/ holds exactly one)
data=${CTSENTINEL_SHARED_DATA:-../shared/data}
cargo build -q --release --example bench_infer --bin ctsentinel
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(nproc) cores"
results=$(mktemp)
for threads in 1 2; do
  for r in $(seq "$rounds"); do
    echo "{\"threads\": $threads, \"tract\": $(target/release/examples/bench_infer $card $threads $iters), \"ort\": $(.venv/bin/python bench/infer_ort.py $card $threads $iters)}" >> "$results"
  done
done
python3 - "$results" <<'PY'
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1])]
for threads in sorted({r["threads"] for r in rows}):
    rs = [r for r in rows if r["threads"] == threads]
    med = {k: st.median(r[side][k] for r in rs) for side in ("tract", "ort") for k in rs[0][side]}
    base = med["tract_int8"]
    print(f"threads={threads}: " + ", ".join(f"{k} {v:.1f} ms ({v/base:.2f}x)" for k, v in med.items()))
PY
python3 - "$data" <<'PY'
import json, subprocess, sys, time
for p in ("covid/ctmd_P001", "normal/ctmd_normal001", "cap/ctmd_cap001", "lungcancer/ldx_A0001"):
    t = time.perf_counter()
    out = subprocess.run(["target/release/ctsentinel", "scan", f"{sys.argv[1]}/ct16/{p}", "--json"], capture_output=True, text=True)
    wall = time.perf_counter() - t
    r = json.loads(out.stdout)
    print(f"scan {p}: {wall:.2f} s wall ({r['selected_slices']} selected of {sum(len(s['slices']) for s in r['series'])} slices), "
          f"timing_ms {r['timing_ms']}")
PY
