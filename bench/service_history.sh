#!/bin/sh
# Restart time, poll cost and memory of the service against its history (issue 32): a state
# folder whose receiver delivered N series, all processed, the newest 20 still held, the rest
# pruned after retention_days (results kept). Small and large history in the same run, each in
# its own process (examples/service_history.rs), then the ratios large / small.
#   bench/service_history.sh [SMALL] [LARGE]      (defaults 100 10000)
set -eu
cd "$(dirname "$0")/.."
small=${1:-100}
large=${2:-10000}
cargo build --release --example service_history >/dev/null 2>&1 || cargo build --release --example service_history
bin=target/release/examples/service_history
a=$($bin "$small" 20)
b=$($bin "$large" 20)
echo "$a"
echo "$b"
python3 - "$a" "$b" <<'PY'
import json, sys
a, b = (json.loads(x) for x in sys.argv[1:3])
print(f"history {a['history']} -> {b['history']} series (held {a['held']}):")
for k, what in [("first_start_ms", "first start after the history (sweeps results/)"),
                ("restart_ms", "restart after a clean stop"),
                ("first_look_ms", "first look after that restart"),
                ("look_median_ms", "a look (median of 40)"),
                ("rss_kb", "RSS after the looks"),
                ("journal_lines_after", "journal lines after compaction")]:
    ratio = b[k] / a[k] if a[k] else float("nan")
    print(f"  {what:52s} {a[k]:>10} -> {b[k]:>10}   x{ratio:.2f}")
PY
