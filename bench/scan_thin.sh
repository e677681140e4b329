#!/usr/bin/env bash
# Scan-level speed and memory (issue 17): `ctsentinel scan` (release build) against a Python peer
# on the same machine and model (bench/scan_peer.py: pydicom / tifffile, numpy selection, ONNX
# Runtime int8), interleaved, ROUNDS rounds each, on
#   - the thin DICOM series of ../shared/data (154 slices of 2 mm, JPEG Lossless), and
#   - a generated 300-slice TIFF series (the COVID patient's 50 slices six times over, in a
#     temporary folder) for the peak-RSS bound.
# Reports median wall time, slices per second (all slices of the series) and peak RSS
# (/usr/bin/time's maximum resident set), and the ratios ctsentinel / peer.
# Usage: bench/scan_thin.sh [ROUNDS] [THREADS]   (needs the venv from scripts/setup-venv.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}; threads=${2:-2}
data=${CTSENTINEL_SHARED_DATA:-../shared/data}
cargo build -q --release --bin ctsentinel
card=$(ls models/*.toml)  # the shipped card (models/ holds exactly one)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/series300/SR_1"
k=0
for rep in 1 2 3 4 5 6; do
  for f in "$data"/ct16/covid/ctmd_P001/SR_1/*.tif; do
    k=$((k + 1)); cp "$f" "$tmp/series300/SR_1/$(printf 'IM%05d.tif' "$k")"
  done
done
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(nproc) cores; $threads threads each"
results="$tmp/results"
for target in "$data/dicom/normal/ctmd_normal001_thin" "$tmp/series300/SR_1"; do
  for r in $(seq "$rounds"); do
    /usr/bin/time -f '%e %M' -o "$tmp/t" target/release/ctsentinel scan --json --threads "$threads" "$target" > "$tmp/out"
    echo "ctsentinel $target $(cat "$tmp/t") $(.venv/bin/python -c 'import json,sys; r=json.load(open(sys.argv[1])); print(sum(len(s["slices"]) for s in r["series"]), r["selected_slices"], r["verdict"])' "$tmp/out")" >> "$results"
    /usr/bin/time -f '%e %M' -o "$tmp/t" .venv/bin/python bench/scan_peer.py "$card" "$target" "$threads" > "$tmp/out"
    echo "peer $target $(cat "$tmp/t") $(.venv/bin/python -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["slices"], r["selected"], r["verdict"])' "$tmp/out")" >> "$results"
  done
done
python3 - "$results" <<'PY'
import statistics as st, sys
rows = [l.split() for l in open(sys.argv[1])]
for target in dict.fromkeys(r[1] for r in rows):
    med = {}
    for who in ("ctsentinel", "peer"):
        rs = [r for r in rows if r[0] == who and r[1] == target]
        wall, rss = st.median(float(r[2]) for r in rs), max(int(r[3]) for r in rs)
        n, sel, verdict = rs[0][4], rs[0][5], rs[0][6]
        med[who] = (wall, rss)
        print(f"{who:10} {target.split('/')[-2] + '/' + target.split('/')[-1]}: {n} slices, {sel} selected, {verdict}: "
              f"{wall:.2f} s wall ({int(n) / wall:.1f} slices/s), peak RSS {rss / 1024:.0f} MiB")
    (wc, rc), (wp, rp) = med["ctsentinel"], med["peer"]
    print(f"  ratio ctsentinel / peer: wall {wc / wp:.2f}x, peak RSS {rc / rp:.2f}x")
PY
