#!/usr/bin/env bash
# Per-stage profile of a scan (issue 34): `ctsentinel scan --json` (release build) reports, in
# timing_ms, the selection pass (decode + count of every slice) and, per stage, the work of
# classifying the selected slices: decode, lung mask, preprocessing (on a preparing thread),
# network and evidence placement (on the classifying one). Beside it, the bare network
# (examples/bench_infer.rs, the same model and thread count) in the same run, so the overhead
# of the pipeline around the network is a ratio:
#   classify wall per selected slice / (bare network per slice on one thread / threads)
# i.e. against the network alone scaled perfectly over the threads (issue 34's target: <= 1.15).
# Usage: bench/scan_profile.sh [ROUNDS]     medians of ROUNDS runs, 1 and 2 threads
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
data=${CTSENTINEL_SHARED_DATA:-../shared/data}
cargo build -q --release --bin ctsentinel --example bench_infer
card=$(ls models/*.toml)
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(nproc) cores"
results=$(mktemp); trap 'rm -f "$results"' EXIT
for threads in 1 2; do
  for r in $(seq "$rounds"); do
    for target in "$data/dicom/normal/ctmd_normal001_thin" "$data/ct16/covid/ctmd_P001/SR_1"; do
      report=$(target/release/ctsentinel scan --json --threads "$threads" "$target" | python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)))')
      echo "{\"threads\": $threads, \"target\": \"$target\", \"report\": $report}" >> "$results"
    done
    echo "{\"threads\": $threads, \"bare\": $(target/release/examples/bench_infer "$card" 1 10)}" >> "$results"
  done
done
python3 - "$results" <<'PY'
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1])]
for threads in (1, 2):
    one = st.median(r["bare"]["tract_int8"] for r in rows if "bare" in r)
    bare = one / threads
    print(f"threads={threads}: bare network (tract int8) {one:.1f} ms a slice on one thread, "
          f"{bare:.1f} ms a slice if {threads} slices ran in parallel with no loss")
    for target in dict.fromkeys(r["target"] for r in rows if "target" in r):
        rs = [r["report"] for r in rows if r.get("target") == target and r["threads"] == threads]
        n = sum(len(s["slices"]) for s in rs[0]["series"])
        sel = rs[0]["selected_slices"]
        med = lambda f: st.median(f(r) for r in rs)
        sel_ms = med(lambda r: r["timing_ms"]["select"])
        cls_ms = med(lambda r: r["timing_ms"]["classify"])
        tot_ms = med(lambda r: r["timing_ms"]["total"])
        stages = {k: med(lambda r: r["timing_ms"]["stages"][k]) / sel for k in rs[0]["timing_ms"]["stages"]}
        name = "/".join(target.split("/")[-2:])
        print(f"  {name}: {n} slices, {sel} selected; total {tot_ms:.0f} ms; selection {sel_ms / n:.1f} ms a slice (all {n});"
              f" classify {cls_ms / sel:.1f} ms a selected slice = {cls_ms / sel / bare:.2f}x the bare network")
        print("    per selected slice, each stage's own work: " + ", ".join(f"{k} {v:.1f} ms" for k, v in stages.items()))
PY
