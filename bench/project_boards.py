#!/usr/bin/env python3
"""Projects the per-slice inference time on the boards (Raspberry Pi 4 and 5) from a measurement
on this machine, by the ratio of peak multiply-accumulate rates. A projection, not a measurement:
no board has been measured (issue 17).

Usage: bench/project_boards.py CARD [ITERS]   (needs target/release/examples/bench_infer and the
venv from scripts/setup-venv.sh)

What it does, and every assumption in it:
1. Counts the model's multiply-accumulates per slice from its ONNX file (every convolution and
   matrix product, shapes inferred with onnx). Nothing else in the plan is counted.
2. Measures tract int8 and tract fp32 on this machine, one thread, one slice a run
   (`bench_infer CARD 1 ITERS`, medians).
3. Takes the peak rate of one core from the instruction each runtime's kernel is built on
   (PEAKS below: instructions a cycle times multiply-accumulates each, at the nominal clock) and
   assumes the whole slice runs at the same fraction of the board's peak as it does of this
   machine's (same efficiency). That is optimistic for the boards where the plan's
   memory-bound parts (im2col, requantization) weigh more: a Pi's memory is much slower than a
   server's, and these parts do not shrink with the multiply rate.
4. Four cores: the one-core figure divided by four, as if parallel slices scaled perfectly (on
   this 2-core machine they scale less than that; bench_infer's `*_parallel_slices`).
"""
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import onnx
from onnx import numpy_helper, shape_inference

# Per core: (name, nominal GHz, int8 multiply-accumulates a cycle, fp32 FMAs a cycle, basis).
PEAKS = {
    "zen5": ("AMD Zen 5 (EPYC, AVX-512 VNNI, full-width 512-bit units)", None, 128, 32,
             "int8: two 512-bit VPDPBUSD a cycle (128 MACs); fp32: two 512-bit FMA pipes (32); "
             "the host's rates are measured by bench/peak_x86.rs, not taken from the nominal clock"),
    "zen4": ("AMD Zen 4 (EPYC, AVX-512 VNNI)", None, 64, 16,
             "int8: one 512-bit VPDPBUSD a cycle (64 MACs, tract's avx512vnni kernels); "
             "fp32: two 256-bit FMA pipes (16)"),
    "zen1": ("AMD Zen 1 (EPYC, AVX2, no VNNI)", None, 8, 8,
             "int8: ymm VPMADDWD (16 MACs) every other cycle (classify::madd16); "
             "fp32: two 128-bit FMA pipes (8)"),
    "pi5": ("Raspberry Pi 5 (Cortex-A76, 2.4 GHz)", 2.4, 32, 8,
            "int8: two SDOT a cycle on the V0/V1 pipes (16 MACs each, tract's "
            "arm64simd_mmm_i32_8x8_dot); fp32: two FMLA .4s a cycle (8)"),
    "pi4": ("Raspberry Pi 4 (Cortex-A72, 1.8 GHz)", 1.8, 4, 8,
            "int8: one SMLAL .4s a cycle, integer multiplies issue on the F0 pipe only "
            "(4 MACs; tract's arm64simd_mmm_i32_8x8); fp32: FMLA .4s on F0 and F1 (8)"),
}


def macs_per_slice(path: Path) -> int:
    m = onnx.load(str(path))
    for d in m.graph.input[0].type.tensor_type.shape.dim[:1]:
        d.dim_value = 1  # one slice a run
    m = shape_inference.infer_shapes(m)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(m.graph.value_info) + list(m.graph.output)}
    dims = {i.name: list(i.dims) for i in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type == "Constant":
            dims[n.output[0]] = list(numpy_helper.to_array(n.attribute[0].t).shape)
    total = 0
    for n in m.graph.node:
        weight = {"QLinearConv": 3, "Conv": 1, "ConvInteger": 1,
                  "QLinearMatMul": 3, "MatMul": 1, "MatMulInteger": 1, "Gemm": 1}.get(n.op_type)
        if weight is None:
            continue
        w, out = dims.get(n.input[weight]), shapes.get(n.output[0])
        if w is None or not out or 0 in out:
            raise SystemExit(f"{path}: cannot size {n.op_type} {n.name} (weight or output shape unknown)")
        if "Conv" in n.op_type:
            # output channels x output pixels x (input channels per group x kernel area)
            total += out[1] * out[2] * out[3] * w[1] * w[2] * w[3]
        else:
            total += (out[0] if len(out) > 1 else 1) * w[0] * w[1]
    return total


def host_core() -> tuple[str, float]:
    info = Path("/proc/cpuinfo").read_text()
    first = info.split("\n\n")[0]
    field = dict(l.split(":", 1) for l in first.splitlines() if ":" in l)
    field = {k.strip(): v.strip() for k, v in field.items()}
    flags = set(field.get("flags", "").split())
    ghz = float(field.get("cpu MHz", "0")) / 1000
    if field.get("vendor_id") == "AuthenticAMD" and field.get("cpu family") == "25" and "avx512_vnni" in flags:
        return "zen4", ghz
    if field.get("vendor_id") == "AuthenticAMD" and field.get("cpu family") == "26" and "avx512_vnni" in flags:
        return "zen5", ghz
    if field.get("vendor_id") == "AuthenticAMD" and field.get("cpu family") == "23":
        return "zen1", ghz
    raise SystemExit(f"no peak rates known for this CPU ({field.get('model name')}, family "
                     f"{field.get('cpu family')}); add it to PEAKS with its basis")


def measured_peaks() -> dict[str, float]:
    """One core's peak int8 MAC and fp32 FMA rates (G/s), measured by bench/peak_x86.rs."""
    exe = Path("target/release/peak_x86")
    exe.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["rustc", "-O", "-C", "target-cpu=native", "bench/peak_x86.rs", "-o", str(exe)], check=True)
    r = json.loads(subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout)
    return {"int8": r["int8_gmacs"], "fp32": r["fp32_gfmas"]}


def main() -> None:
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    card_path = Path(sys.argv[1])
    iters = sys.argv[2] if len(sys.argv) == 3 else "10"
    card = tomllib.loads(card_path.read_text())
    model = card_path.parent / card["model"]["file"]
    macs = macs_per_slice(model)
    host, ghz = host_core()
    out = subprocess.run(["target/release/examples/bench_infer", str(card_path), "1", iters],
                         capture_output=True, text=True, check=True)
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    name, _, h_int8, h_fp32, h_basis = PEAKS[host]
    # One core's peak in G/s: measured where the nominal clock would misstate it (boost), else
    # the per-cycle rate times the nominal clock.
    host_peak = ({"int8": h_int8 * ghz, "fp32": h_fp32 * ghz} if host != "zen5" else measured_peaks())
    print(f"model {model.name}: {macs / 1e9:.2f} G multiply-accumulates a slice")
    print(f"this machine: {name}, {ghz:.2f} GHz nominal ({h_basis}); one core's peak: "
          f"int8 {host_peak['int8']:.0f} G MAC/s, fp32 {host_peak['fp32']:.0f} G FMA/s")
    for prec, key in (("int8", "tract_int8"), ("fp32", "tract_fp32")):
        ms = measured[key]
        peak = host_peak[prec]
        eff = macs / (ms / 1e3) / (peak * 1e9)
        print(f"  tract {prec}: {ms:.1f} ms a slice, 1 thread = {eff:.0%} of one core's peak "
              f"({peak:.0f} G/s)")
    print("projection (same efficiency as here; optimistic, see the docstring):")
    for board in ("pi5", "pi4"):
        bname, bghz, b_int8, b_fp32, basis = PEAKS[board]
        cells = []
        for prec, b_per_cycle, key in (("int8", b_int8, "tract_int8"), ("fp32", b_fp32, "tract_fp32")):
            one = measured[key] * host_peak[prec] / (b_per_cycle * bghz)
            cells.append(f"{prec} {one:,.0f} ms a slice on 1 core, {one / 4:,.0f} on 4")
        print(f"  {bname}: " + "; ".join(cells) + f"  [{basis}]")


if __name__ == "__main__":
    main()
