"""The evidence output of the paper's FPN network, added to its exported ONNX graphs (issue 16).

`python -m training.evidence models/ctsentinel-fpn256.fp32.onnx models/ctsentinel-fpn256.int8.onnx`

Why graph surgery and not a second model: the appliance must show *why* from the one int8 run
that classified the slice, without gradients. The paper's heads make that exact. Each of the five
pyramid levels f_k (C x H x W) goes through flatten -> dense(2), and the five 2-vectors through a
final dense(10 -> 2); everything after the feature maps is linear, so

    l_covid - l_normal = b + sum_k sum_{c,i,j} f_k[c,i,j] * v_k[c,i,j]
    v_k = W_k @ d_k,   d_k = F[2k:2k+2, 1] - F[2k:2k+2, 0]
    b   = sum_k b_k . d_k + (fb_1 - fb_0)

(W_k: head k's weight, CHW x 2, rows in flatten order c*H*W + i*W + j; F, fb: the final layer's
weight 10 x 2 and bias). Head k's map is E_k[i,j] = sum_c f_k[c,i,j] v_k[c,i,j]; the output
`evidence` puts the five maps on the finest grid (f3: input / 16, 16 x 16 at 256 px) by spreading
each coarse cell evenly over the fine cells it covers (nearest upsampling divided by the number of
cells), so the combined map still sums to l_covid - l_normal - b. Positive pushes towards COVID.
Placement is exact for f3, f4 and f5 (f3 is built from f4 by nearest upsampling); f6 and f7 come
from stride-2 convolutions centred on the even cells, so their cells sit up to half a cell off.

In the int8 graph the map is taken from what the int8 heads multiply: the re-quantized flatten
inputs (DequantizeLinear of the QLinearMatMul's uint8 input) and the dequantized int8 weights, so
it agrees with the int8 logits up to the heads' output rounding. The probabilities are untouched:
every node of the original graph stays as it is, the map only adds nodes that read its tensors.
"""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import numpy as np

OUTPUT = "evidence"
PREFIX = "evidence/"


def _producer(graph) -> dict:
    return {o: n for n in graph.node for o in n.output}


def _init(graph, name: str) -> np.ndarray:
    """An initializer's value; the fp32 file stores large weights as `<name>_fp16` behind a Cast
    (`export.store_weights_fp16`)."""
    from onnx import numpy_helper
    inits = {i.name: i for i in graph.initializer}
    identity = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity"}
    while name not in inits and name in identity:  # the exporter deduplicates equal constants
        name = identity[name]
    if name in inits:
        return numpy_helper.to_array(inits[name]).astype(np.float64)
    if name + "_fp16" in inits:
        return numpy_helper.to_array(inits[name + "_fp16"]).astype(np.float64)
    raise ValueError(f"initializer {name!r} not found")


def _dense(graph, prod: dict, add_out: str) -> tuple[str, np.ndarray, np.ndarray]:
    """For a dense layer ending in `add_out` (MatMul + Add, or QLinearMatMul -> DequantizeLinear ->
    Add): (the float tensor its matmul multiplies, weight in x out as float, bias)."""
    add = prod[add_out]
    if add.op_type != "Add":
        raise ValueError(f"{add_out}: expected the dense layer's Add, found {add.op_type}")
    mm_out, bias_name = add.input
    bias = _init(graph, bias_name)
    node = prod[mm_out]
    if node.op_type == "MatMul":
        return node.input[0], _init(graph, node.input[1]), bias
    if node.op_type == "DequantizeLinear":
        q = prod[node.input[0]]
        if q.op_type != "QLinearMatMul":
            raise ValueError(f"{mm_out}: expected QLinearMatMul, found {q.op_type}")
        a_q, a_s, a_zp, w_q, w_s, w_zp = q.input[:6]
        w = (_init(graph, w_q) - _init(graph, w_zp)) * _init(graph, w_s)
        return f"int8:{a_q}|{a_s}|{a_zp}", w, bias
    raise ValueError(f"{mm_out}: unexpected {node.op_type} before the dense layer's Add")


def add_fpn_evidence(model):
    """A copy of the model with a second output `evidence` (N x G x G, see the module doc).
    Raises ValueError when the graph is not the FPN head this module knows."""
    import copy

    import onnx
    from onnx import helper, numpy_helper

    model = copy.deepcopy(model)

    g = model.graph
    if any(o.name == OUTPUT for o in g.output):
        raise ValueError(f"the model already has an output {OUTPUT!r}")
    prod = _producer(g)
    softmax = prod[g.output[0].name]
    if softmax.op_type != "Softmax":
        raise ValueError("the first output is not a Softmax")
    final_in, fw, fb = _dense(g, prod, softmax.input[0])
    if fw.shape != (10, 2):
        raise ValueError(f"final layer weight {fw.shape}: expected 10 x 2")
    if final_in.startswith("int8:"):  # the float concatenation behind the final layer's QuantizeLinear
        final_in = prod[final_in[5:].split("|")[0]].input[0]
    concat = prod[final_in]
    if concat.op_type != "Concat" or len(concat.input) != 5:
        raise ValueError("the final layer does not read the concatenation of five heads")

    nodes, inits = [], []

    def const(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(arr, np.float32), PREFIX + name))
        return PREFIX + name

    def shape(name: str, dims) -> str:
        inits.append(numpy_helper.from_array(np.asarray(dims, np.int64), PREFIX + name))
        return PREFIX + name

    # The pyramid's finest level is input / 16 (models.ResNet50V2FPN); its head's input count
    # gives the channel count, shared by all five levels.
    dims = g.input[0].type.tensor_type.shape.dim
    fine = dims[2].dim_value // 16 if len(dims) == 4 else 0
    heads = [_dense(g, prod, h) for h in concat.input]
    channels = heads[0][1].shape[0] // (fine * fine) if fine else 0
    if not channels:
        raise ValueError("the input has no fixed N x C x H x W shape")

    maps, bias = [], float(fb[1] - fb[0])
    for k, (x, w, b) in enumerate(heads):
        d = fw[2 * k:2 * k + 2, 1] - fw[2 * k:2 * k + 2, 0]
        bias += float(b @ d)
        if x.startswith("int8:"):  # the uint8 input the QLinearMatMul reads, dequantized
            q, s, zp = x[5:].split("|")
            x = PREFIX + f"f{k}_deq"
            nodes.append(helper.make_node("DequantizeLinear", [q, s, zp], [x], name=PREFIX + f"dequantize{k}"))
        cells, c = w.shape[0], channels
        side = math.isqrt(cells // c)
        if c * side * side != cells:
            raise ValueError(f"head {k}: {cells} inputs is not {c} x H x H")
        v = (w @ d).reshape(1, c, side, side)
        f = PREFIX + f"f{k}"
        nodes.append(helper.make_node("Reshape", [x, shape(f"shape{k}", [-1, c, side, side])], [f], name=f))
        nodes.append(helper.make_node("Mul", [f, const(f"v{k}", v)], [f + "_v"], name=f + "_v"))
        nodes.append(helper.make_node("ReduceSum", [f + "_v", shape(f"axis{k}", [1])], [f + "_map"], keepdims=0,
                                      name=f + "_map"))
        maps.append((k, f + "_map", side))
    grid = max(s for _, _, s in maps)
    parts = []
    for k, name, side in maps:
        if grid % side:
            raise ValueError(f"a {side} x {side} map does not tile the {grid} x {grid} grid")
        r = grid // side
        if r == 1:
            parts.append(name)
            continue
        # nearest upsampling by r, each fine cell carrying 1/r^2 of its coarse cell
        spread = const(f"spread{k}", np.full((1, 1, r, 1, r), 1.0 / (r * r)))
        nodes.append(helper.make_node("Reshape", [name, shape(f"cells{k}", [-1, side, 1, side, 1])],
                                      [name + "_cells"], name=name + "_cells"))
        nodes.append(helper.make_node("Mul", [name + "_cells", spread], [name + "_spread"], name=name + "_spread"))
        nodes.append(helper.make_node("Reshape", [name + "_spread", shape(f"grid{k}", [-1, grid, grid])],
                                      [name + "_grid"], name=name + "_grid"))
        parts.append(name + "_grid")
    nodes.append(helper.make_node("Sum", parts, [OUTPUT], name=PREFIX + "sum"))
    g.node.extend(nodes)
    g.initializer.extend(inits)
    batch = g.input[0].type.tensor_type.shape.dim[0]
    out = helper.make_tensor_value_info(OUTPUT, onnx.TensorProto.FLOAT, [None, grid, grid])
    out.type.tensor_type.shape.dim[0].CopyFrom(batch)
    g.output.append(out)
    helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                   "evidence_bias": repr(bias), "evidence": __doc__.splitlines()[0]})
    onnx.checker.check_model(model)
    return model


def strip_fpn_evidence(model):
    """A copy of the model without what `add_fpn_evidence` added (the benchmark's peer, bench/
    evidence_cost.sh): the original graph, whose probabilities are the same."""
    import copy
    model = copy.deepcopy(model)
    g = model.graph
    keep_nodes = [n for n in g.node if not n.name.startswith(PREFIX) and OUTPUT not in n.output]
    keep_inits = [i for i in g.initializer if not i.name.startswith(PREFIX)]
    keep_outputs = [o for o in g.output if o.name != OUTPUT]
    if len(keep_outputs) == len(g.output):
        raise ValueError(f"the model has no output {OUTPUT!r}")
    for field, keep in ((g.node, keep_nodes), (g.initializer, keep_inits), (g.output, keep_outputs)):
        del field[:]
        field.extend(keep)
    props = [p for p in model.metadata_props if p.key not in ("evidence", "evidence_bias")]
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    return model


def evidence_bias(model) -> float:
    """The constant b of the module doc: l_covid - l_normal = b + sum(evidence)."""
    return float({p.key: p.value for p in model.metadata_props}["evidence_bias"])


def rewrite(path: Path) -> None:
    """Add the evidence output to an ONNX file in place (temporary file, fsync, rename)."""
    import onnx
    m = add_fpn_evidence(onnx.load(str(path)))
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(m, str(tmp))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("onnx", nargs="+", type=Path, help="exported FPN files (fp32 and/or int8), rewritten in place")
    a = ap.parse_args(argv)
    for p in a.onnx:
        rewrite(p)
        print(f"{p}: evidence output added")


if __name__ == "__main__":
    main()
