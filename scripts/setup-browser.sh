#!/usr/bin/env bash
# Installs the real browser the results page's test uses (tests/web_browser.rs): Debian's
# chromium and chromedriver (Selenium itself comes with .venv, scripts/setup-venv.sh).
# Idempotent; needs root or sudo for apt. Without them that test skips loudly; CI (.ci/run)
# installs them and sets CTSENTINEL_REQUIRE_BROWSER=1. Exit 3: could not be installed here.
set -euo pipefail
command -v chromium >/dev/null && command -v chromedriver >/dev/null && exit 0
sudo=; [[ $(id -u) == 0 ]] || sudo=sudo
$sudo apt-get update -qq || exit 3
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null || exit 3
chromium --version
