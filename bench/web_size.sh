#!/usr/bin/env bash
# What the results page (issue 36) adds to the aarch64 binary: the sizes of the symbols of the
# crates only the page uses (tokio, hyper, axum, rustls, ring, maud, argon2, rcgen, ...) and of
# ctsentinel's own web module, summed from the symbol table of the aarch64 release build
# (`nm --print-size`; generic code monomorphised for the page is named after the crate it comes
# from), against the whole binary. The stripped, fat-LTO `dist` binary is smaller overall; the
# share is what this reports.
#   bench/web_size.sh     (needs the aarch64 toolchain: scripts/cross-aarch64.sh setup)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cross}
./scripts/cross-aarch64.sh build >/dev/null
bin=$CARGO_TARGET_DIR/aarch64-unknown-linux-gnu/release/ctsentinel
nm=aarch64-linux-gnu-nm
command -v $nm >/dev/null || nm=nm
$nm --print-size --size-sort -C "$bin" | python3 -c '
import re, sys, os
web = ("tokio", "tokio_rustls", "hyper", "hyper_util", "axum", "axum_core", "http", "http_body", "http_body_util",
       "httparse", "httpdate", "tower", "tower_service", "tower_layer", "rustls", "rustls_pki_types", "webpki",
       "ring", "maud", "argon2", "password_hash", "blake2", "base64ct", "rcgen", "yasna", "pem", "time",
       "time_core", "mio", "socket2", "matchit", "serde_urlencoded", "form_urlencoded", "untrusted",
       "subtle", "zeroize", "getrandom", "mime", "sync_wrapper", "pin_project_lite", "futures_util",
       "futures_core", "futures_task", "percent_encoding", "phc")
total = page = own = 0
for line in sys.stdin:
    parts = line.split(maxsplit=3)
    if len(parts) < 4 or parts[2] not in "tTrRdDbB":
        continue
    size, name = int(parts[1], 16), parts[3]
    total += size
    if "ctsentinel::service::web" in name or "ctsentinel::fuzzing::web_request" in name:
        own += size
        continue
    m = re.match(r"[<&\s]*(?:dyn\s+)?([a-z_][a-z0-9_]*)::", name)
    first = m.group(1) if m else ""
    inner = {c for c in re.findall(r"(?:^|[<\s(&,])([a-z_][a-z0-9_]*)::", name)}
    if (first in web or "ring_core_" in name
            or (first in ("core", "alloc", "std") and inner & set(web))
            or (first in ("core", "alloc", "std") and "ctsentinel::service::web" in name)):
        page += size
size = os.path.getsize(sys.argv[1])
print(f"aarch64 release binary {size / 2**20:.1f} MiB on disk; symbols {total / 2**20:.2f} MiB, of which the "
      f"page'"'"'s crates {page / 2**20:.2f} MiB ({100 * page / total:.1f}%) and src/service/web "
      f"{own / 2**10:.0f} KiB: {(page + own) / 2**20:.2f} MiB in all")
' "$bin"
