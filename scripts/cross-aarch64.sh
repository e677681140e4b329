#!/usr/bin/env bash
# Docker-free aarch64 build for Raspberry Pi 4/5 and Jetson Orin boxes, checked under qemu.
# Works on a fresh Debian 12 machine (root or sudo for the apt step).
#   scripts/cross-aarch64.sh setup   # apt: cross gcc, qemu-user, arm64 libc; rustup targets
#   scripts/cross-aarch64.sh build   # release binary, ELF machine check, size
#   scripts/cross-aarch64.sh smoke   # under qemu: selftest (model hash, NEON selection kernel,
#                                    # known answers through tract's SDOT and SMLAL int8 kernels)
#   scripts/cross-aarch64.sh test    # unit tests + the integration suites under qemu (see tests())
#   scripts/cross-aarch64.sh musl    # static aarch64-unknown-linux-musl binary (any glibc), checked
#   scripts/cross-aarch64.sh deb     # .deb for arm64 and amd64 (cargo-deb), checked by
#                                    # packaging/test-deb.sh; DEB_ARCHS="arm64" builds and
#                                    # checks the arm64 package only (CI: the amd64 one is a
#                                    # second full x86 release compile of tract)
#   scripts/cross-aarch64.sh prebuild  # compile everything build/test/musl/deb need, run nothing
#                                    # (for a warm target dir before the qemu steps)
# PROFILE=dist for the shipped binary (fat LTO, one codegen unit, panic=abort, stripped):
#   PROFILE=dist scripts/cross-aarch64.sh build smoke musl deb
# With Docker, `CROSS_CONFIG=cross.toml cross build --target aarch64-unknown-linux-gnu` also works
# (cross only reads Cross.toml by itself; CROSS_CONFIG points it at ours).
set -euo pipefail
cd "$(dirname "$0")/.."
T=aarch64-unknown-linux-gnu
M=aarch64-unknown-linux-musl
PROFILE=${PROFILE:-release}
target=${CARGO_TARGET_DIR:-target}
bin=$target/$T/$PROFILE/ctsentinel
sudo=""; [[ $(id -u) == 0 ]] || sudo=sudo

setup() {
  $sudo dpkg --add-architecture arm64
  $sudo apt-get update -qq
  # libc6:arm64 gives qemu the loader at /lib/ld-linux-aarch64.so.1 (plain qemu-aarch64 works;
  # `qemu-aarch64 -L /usr/aarch64-linux-gnu` was seen to hang at a program's first thread).
  $sudo apt-get install -y -qq gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user libc6:arm64 libgcc-s1:arm64 file
  rustup target add $T $M
}

build() {
  cargo build --profile "$PROFILE" --target $T --bin ctsentinel
  local desc; desc=$(file "$bin")
  echo "$desc"
  [[ $desc == *"ARM aarch64"* ]] || { echo "not an aarch64 binary: $bin" >&2; exit 1; }
  echo "aarch64 binary ($PROFILE): $(stat -c %s "$bin") bytes; model: $(stat -c %s models/*.int8.onnx) bytes"
}

smoke() {
  # The boards' own cores, emulated: the Pi 5's Cortex-A76 (SDOT) and the Pi 4's Cortex-A72 (no
  # SDOT: tract's SMLAL kernel). qemu's default CPU ("max") has SVE, which neither board has, and
  # tract takes its SVE kernels there (seen in the self-test's kernel lines), so the default would
  # test neither board's kernel. Each run must pass its known answers with its board's kernel.
  local out
  out=$(qemu-aarch64 -cpu cortex-a76 "$bin" selftest)
  echo "$out"
  grep -q "matrix kernel: arm64simd_mmm_i32_8x8_dot " <<<"$out" ||
    { echo "Cortex-A76 (Pi 5): tract did not take its SDOT kernel" >&2; exit 1; }
  out=$(qemu-aarch64 -cpu cortex-a72 "$bin" selftest)
  grep -E "known_answers|cpu:|matrix kernel" <<<"$out"
  grep -q "matrix kernel: arm64simd_mmm_i32_8x8 " <<<"$out" ||
    { echo "Cortex-A72 (Pi 4): tract did not take its SMLAL kernel" >&2; exit 1; }
  # A whole patient takes about 3 minutes emulated (24 slices); opt in with SMOKE_SCAN=1.
  if [[ ${SMOKE_SCAN:-0} == 1 ]]; then
    qemu-aarch64 -cpu cortex-a76 "$bin" scan "${CTSENTINEL_SHARED_DATA:-../shared/data}/ct16/normal/ctmd_normal001" --threads 2
  fi
}

# Integration suites run under qemu: the binary is started through CTSENTINEL_TEST_RUNNER
# (tests/common), so no binfmt_misc is needed. select_real_data, malformed_input, selftest and
# display: 32 tests, about 2 minutes with warm builds; complete_decode, decoder_mutations and
# dicom_input (the strict inflate, the mutation storm and DICOM with JPEG Lossless on aarch64):
# 28 tests, about 25 s. Left out, because emulated inference takes
# seconds a slice: scan_cli (whole patients, about 3 minutes each), model_int8 (parity on real
# slices), and service (6 minutes; its 9 in-process tests pass under qemu, the 3 that spawn
# `watch` wait with native-speed deadlines while the emulated self-test alone takes ~100 s).
# Inference on aarch64 is covered by the self-test's known answers (smoke, both int8 kernels)
# and, on request, SMOKE_SCAN=1. QEMU_SUITES="..." sets the list (e.g. with service).
read -r -a QEMU_SUITES <<<"${QEMU_SUITES:-select_real_data malformed_input complete_decode decoder_mutations dicom_input selftest display}"

suite_args() {
  local s
  for s in "${QEMU_SUITES[@]}"; do printf -- '--test\n%s\n' "$s"; done
}

tests_build() {
  local args; mapfile -t args < <(suite_args)
  cargo test --release --target $T --lib --no-run
  cargo test --release --target $T "${args[@]}" --no-run
}

tests() {
  # The library's unit tests: selection kernel with its property test, preprocessing, the
  # patient rule, journal, atomic writes, ...
  # In the release profile, so the test build reuses the dependencies `build` compiled (tract,
  # dicom-rs: one aarch64 compile instead of two, minutes of CI); debug assertions and overflow
  # checks are exercised by the native `cargo test`, which runs every suite in the dev profile.
  local args; mapfile -t args < <(suite_args)
  cargo test --release --target $T --lib
  CTSENTINEL_TEST_RUNNER=qemu-aarch64 cargo test --release --target $T "${args[@]}"
}

musl_build() {
  # tract-linalg assembles its NEON kernels with the C compiler; Debian's cross gcc does it
  # (no libc headers involved). Linking: .cargo/config.toml (self-contained musl, crt-static).
  CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc cargo build --profile "$PROFILE" --target $M --bin ctsentinel
}

musl() {
  musl_build
  local m=$target/$M/$PROFILE/ctsentinel desc
  desc=$(file "$m")
  echo "$desc"
  [[ $desc == *"ARM aarch64"* && $desc == *"statically linked"* ]] || { echo "not a static aarch64 binary: $m" >&2; exit 1; }
  echo "static aarch64 binary ($PROFILE): $(stat -c %s "$m") bytes"
  qemu-aarch64 "$m" selftest
}

read -r -a DEB_ARCHS <<<"${DEB_ARCHS:-arm64 amd64}"

deb_build() {
  command -v cargo-deb >/dev/null || cargo install cargo-deb --locked
  local a
  for a in "${DEB_ARCHS[@]}"; do
    case $a in
      arm64) cargo deb --profile "$PROFILE" --target $T ;;
      amd64) cargo deb --profile "$PROFILE" ;;
      *) echo "DEB_ARCHS: unknown architecture $a (arm64, amd64)" >&2; exit 2 ;;
    esac
  done
}

deb() {
  deb_build
  # The newest package of each architecture built: the ones just built.
  DEB_ARCHS="${DEB_ARCHS[*]}" packaging/test-deb.sh
}

# Everything the other steps compile, nothing run: afterwards build/test/musl/deb only check.
prebuild() {
  cargo build --profile "$PROFILE" --target $T --bin ctsentinel
  tests_build
  musl_build
  deb_build
}

(($#)) || set -- usage
for cmd in "$@"; do
  case $cmd in
    setup) setup ;;
    build) build ;;
    smoke) smoke ;;
    test) tests ;;
    musl) musl ;;
    deb) deb ;;
    prebuild) prebuild ;;
    all) setup; build; smoke; tests; musl; deb ;;
    *) echo "usage: $0 setup|prebuild|build|smoke|test|musl|deb|all... (several run in order)" >&2; exit 2 ;;
  esac
done
