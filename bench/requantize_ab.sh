#!/usr/bin/env bash
# The vectorised requantization (src/classify/fastquant.rs) against tract's own QuantizeLinearU8,
# same model, same process type, interleaved: ROUNDS rounds of `tract_probe` with the appliance's
# plan and with TRACT_PROBE_PLAIN=1 (tract's plan), 5 single-thread runs each; medians and ratio.
# Usage: bench/requantize_ab.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-6}
cargo build -q --release --example tract_probe
model=models/$(sed -n 's/^file = "\(.*\)"/\1/p' models/*.toml | head -1)
runs=$(mktemp); trap 'rm -f "$runs"' EXIT
for _ in $(seq "$rounds"); do
  for v in plain vectorised; do
    if [[ $v == plain ]]; then export TRACT_PROBE_PLAIN=1; else unset TRACT_PROBE_PLAIN; fi
    target/release/examples/tract_probe "$model" 5 2>&1 | awk -v v=$v '/^run /{sub("ms", "", $2); print v, $2}' >> "$runs"
  done
done
python3 - "$runs" <<'PY'
import statistics as st, sys
rows = [l.split() for l in open(sys.argv[1])]
med = {v: st.median(float(r[1]) for r in rows if r[0] == v) for v in ("plain", "vectorised")}
n = sum(r[0] == "plain" for r in rows)
print(f"per slice, 1 thread, median of {n} runs each: tract's QuantizeLinearU8 {med['plain']:.1f} ms, "
      f"vectorised {med['vectorised']:.1f} ms: {med['vectorised'] / med['plain']:.3f}x")
PY
