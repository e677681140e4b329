#!/usr/bin/env bash
# What the evidence maps cost a scan (issue 16: they must add < 10%): `ctsentinel scan` with the
# shipped card against the same int8 file with its evidence output removed
# (training/evidence.py `strip_fpn_evidence`; same probabilities) behind a card without
# `output.evidence`, so the peer also skips the lung masks kept to place the maps. Interleaved,
# ROUNDS rounds per shared patient; medians of the scan's own total (timing_ms.total, model load
# excluded) and of the process wall time, and their ratios.
# Usage: bench/evidence_cost.sh [ROUNDS]   (needs the venv from scripts/setup-venv.sh;
#        PROFILE=debug uses the test build's binary instead of building the release one)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
profile=${PROFILE:-release}
data=${CTSENTINEL_SHARED_DATA:-../shared/data}
if [[ $profile == release ]]; then cargo build -q --release --bin ctsentinel; fi
bin=target/$profile/ctsentinel
card=$(ls models/*.toml)  # the shipped card (models/ holds exactly one)
peer=$(mktemp -d); trap 'rm -rf "$peer"' EXIT
.venv/bin/python - "$card" "$peer" <<'PY'
import hashlib, sys, tomllib
from pathlib import Path
import onnx
sys.path.insert(0, ".")
from training.evidence import strip_fpn_evidence
card_path, peer = Path(sys.argv[1]), Path(sys.argv[2])
text = card_path.read_text()
card = tomllib.loads(text)
model = card_path.parent / card["model"]["file"]
onnx.save(strip_fpn_evidence(onnx.load(str(model))), str(peer / model.name))
sha = hashlib.sha256((peer / model.name).read_bytes()).hexdigest()
fp32 = card["model"]["reference_fp32_file"]
(peer / fp32).symlink_to((card_path.parent / fp32).resolve())
lines = [l for l in text.splitlines() if not l.startswith("evidence = ")]
lines = [f'sha256 = "{sha}"' if l.startswith("sha256 = ") else l for l in lines]
(peer / card_path.name).write_text("\n".join(lines) + "\n")
PY
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(nproc) cores; binary $bin"
.venv/bin/python - "$bin" "$data" "$rounds" models "$peer" <<'PY'
import json, statistics as st, subprocess, sys, time
binary, data, rounds, shipped, peer = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
for p in ("covid/ctmd_P001", "normal/ctmd_normal001"):
    runs = {"evidence": [], "none": []}
    for _ in range(rounds):
        for kind, models in (("evidence", shipped), ("none", peer)):
            t = time.perf_counter()
            out = subprocess.run([binary, "scan", "--model", models, "--json", f"{data}/ct16/{p}"],
                                 capture_output=True, text=True, check=True)
            wall = time.perf_counter() - t
            r = json.loads(out.stdout)
            has = any("evidence" in s for se in r["series"] for s in se["slices"])
            assert has == (kind == "evidence"), f"{kind}: evidence present = {has}"
            runs[kind].append((r["timing_ms"]["total"], wall))
    med = {k: (st.median(t for t, _ in v), st.median(w for _, w in v)) for k, v in runs.items()}
    (te, we), (tn, wn) = med["evidence"], med["none"]
    print(f"scan {p} ({r['selected_slices']} selected): with evidence {te:.0f} ms scan / {we:.2f} s wall, "
          f"without {tn:.0f} ms / {wn:.2f} s: {te / tn:.3f}x scan, {we / wn:.3f}x wall (median of {rounds})")
PY
