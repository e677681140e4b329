#!/usr/bin/env bash
# Docker-free aarch64 build for Raspberry Pi 4/5 and Jetson Orin boxes, checked under qemu.
# Works on a fresh Debian 12 machine (root or sudo for the apt step).
#   scripts/cross-aarch64.sh setup   # apt: cross gcc, qemu-user, arm64 libc; rustup target
#   scripts/cross-aarch64.sh build   # release binary, ELF machine check, size
#   scripts/cross-aarch64.sh smoke   # under qemu: selftest (model hash, NEON selection kernel,
#                                    # known answers through tract's aarch64 kernels) + a real scan
#   scripts/cross-aarch64.sh test    # the library's unit tests under qemu (see tests() for why
#                                    # not the integration suites)
# PROFILE=dist for the shipped binary (fat LTO, stripped; much longer to link).
# With Docker, `CROSS_CONFIG=cross.toml cross build --target aarch64-unknown-linux-gnu` also works
# (cross only reads Cross.toml by itself; CROSS_CONFIG points it at ours).
set -euo pipefail
cd "$(dirname "$0")/.."
T=aarch64-unknown-linux-gnu
PROFILE=${PROFILE:-release}
dir=${CARGO_TARGET_DIR:-target}/$T/$PROFILE
bin=$dir/ctsentinel
sudo=""; [[ $(id -u) == 0 ]] || sudo=sudo

setup() {
  $sudo dpkg --add-architecture arm64
  $sudo apt-get update -qq
  # libc6:arm64 gives qemu the loader at /lib/ld-linux-aarch64.so.1 (plain qemu-aarch64 works;
  # `qemu-aarch64 -L /usr/aarch64-linux-gnu` was seen to hang at a program's first thread).
  $sudo apt-get install -y -qq gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user libc6:arm64 libgcc-s1:arm64 file
  rustup target add $T
}

build() {
  cargo build --profile "$PROFILE" --target $T --bin ctsentinel
  local desc; desc=$(file "$bin")
  echo "$desc"
  [[ $desc == *"ARM aarch64"* ]] || { echo "not an aarch64 binary: $bin" >&2; exit 1; }
  echo "aarch64 binary ($PROFILE): $(stat -c %s "$bin") bytes; model: $(stat -c %s models/ctsentinel-fpn256.int8.onnx) bytes"
}

smoke() {
  qemu-aarch64 "$bin" selftest
  # A whole patient takes about 3 minutes emulated (24 slices); opt in with SMOKE_SCAN=1.
  if [[ ${SMOKE_SCAN:-0} == 1 ]]; then
    qemu-aarch64 "$bin" scan "${CTSENTINEL_SHARED_DATA:-../shared/data}/ct16/normal/ctmd_normal001" --threads 2
  fi
}

tests() {
  # The library's unit tests (selection kernel with its property test, preprocessing, the
  # patient rule, journal, atomic writes, ...). The integration suites spawn the binary, which
  # needs binfmt_misc for qemu, and the model suites take minutes per test under emulation.
  cargo test --target $T --lib
}

case ${1:-} in
  setup) setup ;;
  build) build ;;
  smoke) smoke ;;
  test) tests ;;
  all) setup; build; smoke; tests ;;
  *) echo "usage: $0 setup|build|smoke|test|all" >&2; exit 2 ;;
esac
