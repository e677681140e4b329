#!/usr/bin/env bash
# Regenerate tests/expected/selection.json from the independent numpy reference.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${CTSENTINEL_SHARED_DATA:-../shared/data}
.venv/bin/python - "$data" <<'PY'
import json, subprocess, glob, os, sys
root = os.path.join(sys.argv[1], "ct16")
dirs = sorted(glob.glob(os.path.join(root, "*/*/SR_*")))
out = subprocess.run([sys.executable, "tests/reference/select_ref.py", *dirs], capture_output=True, text=True, check=True).stdout
exp = {os.path.relpath(k, root): {"selected": [f for f, c, kp in v if kp], "dark_pixels": [c for f, c, kp in v]}
       for k, v in json.loads(out).items()}
json.dump({"_source": "tests/reference/select_ref.py (numpy + tifffile, independent of the Rust code) run on ../shared/data/ct16; regenerate with scripts/regen-expected-selection.sh",
           "series": exp}, open("tests/expected/selection.json", "w"), indent=1)
PY
