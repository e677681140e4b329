#!/usr/bin/env bash
# Installs the third-party DICOM peers the receiver's tests push with: dcmtk's storescu and
# echoscu (Debian package dcmtk). Idempotent; needs root or sudo for apt. Without them those
# tests skip loudly; CI (.ci/run) installs them and sets CTSENTINEL_REQUIRE_DCMTK=1.
set -euo pipefail
command -v storescu >/dev/null && command -v echoscu >/dev/null && exit 0
sudo=; [[ $(id -u) == 0 ]] || sudo=sudo
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dcmtk >/dev/null
storescu --version | head -1
