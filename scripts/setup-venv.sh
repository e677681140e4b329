#!/usr/bin/env bash
# Creates .venv (Python 3.11+) with what the tests' independent references and the bench peers
# need. Idempotent; training/ has its own, heavier requirements (see training/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x .venv/bin/python ]] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -r bench/requirements.txt
