#!/usr/bin/env bash
# The model chain's pytest suite (training/): creates .venv-train with the pinned torch, ONNX
# and ONNX Runtime (about 5 minutes and 3 GB on a fresh machine) if missing, then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x .venv-train/bin/python ]] || python3 -m venv .venv-train
.venv-train/bin/pip install -q --disable-pip-version-check -r training/requirements.txt
.venv-train/bin/python -m pytest -q training
