"""Writes the tiny ONNX models that arbiter-infer's tests load (each well under 2 KB).

Run from this directory with any Python that has `onnx` and `numpy`:
    python make_models.py
The outputs are committed; rerun only to change them.

- tiny_ok.onnx: `input` [N, 3, 4, 4] -> GlobalAveragePool -> Flatten -> Gemm -> `output` [N, 5].
  output[n][c] = sum_k mean(input[n][k]) * W[k][c] + B[c], with W[k][c] = (k + 1) * (c - 2) / 4
  and B[c] = c / 10 (the tests recompute this).
- tiny_fixed1.onnx: the same graph with a fixed batch of 1: `input` [1, 3, 4, 4] -> `output` [1, 5].
- nhwc.onnx: input `x` [1, 224, 224, 3] (channels last) -> ReduceMean -> `y` [1, 3].
- two_outputs.onnx: `input` [N, 3, 4, 4] -> two outputs.
- output_rank3.onnx: `input` [N, 3, 4, 4] -> `output` [N, 3, 4].
- dynamic_hw.onnx: `input` [N, 3, H, W] (symbolic H, W) -> `output` [N, 3].
- int_input.onnx: `input` int64 [N, 3, 4, 4] -> `output` float [N, 3].
"""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]


def save(name, nodes, inputs, outputs, inits=()):
    graph = helper.make_graph(nodes, name.removesuffix(".onnx"), inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="arbiter-infer-tests")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, name)


def tensor(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def pooled(batch, classes=5):
    w = np.array([[(k + 1) * (c - 2) / 4 for c in range(classes)] for k in range(3)], np.float32)
    b = np.array([c / 10 for c in range(classes)], np.float32)
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W", "B"], ["output"]),
    ]
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")]
    return nodes, [tensor("input", TensorProto.FLOAT, [batch, 3, 4, 4])], [
        tensor("output", TensorProto.FLOAT, [batch, classes])
    ], inits


save("tiny_ok.onnx", *pooled("N"))
save("tiny_fixed1.onnx", *pooled(1))

save(
    "nhwc.onnx",
    [helper.make_node("ReduceMean", ["x"], ["y"], axes=[1, 2], keepdims=0)],
    [tensor("x", TensorProto.FLOAT, [1, 224, 224, 3])],
    [tensor("y", TensorProto.FLOAT, [1, 3])],
)

save(
    "two_outputs.onnx",
    [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["output"], axis=1),
        helper.make_node("Identity", ["output"], ["extra"]),
    ],
    [tensor("input", TensorProto.FLOAT, ["N", 3, 4, 4])],
    [tensor("output", TensorProto.FLOAT, ["N", 3]), tensor("extra", TensorProto.FLOAT, ["N", 3])],
)

save(
    "output_rank3.onnx",
    [
        helper.make_node("ReduceMean", ["input"], ["output"], axes=[3], keepdims=0),
    ],
    [tensor("input", TensorProto.FLOAT, ["N", 3, 4, 4])],
    [tensor("output", TensorProto.FLOAT, ["N", 3, 4])],
)

save(
    "dynamic_hw.onnx",
    [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["output"], axis=1),
    ],
    [tensor("input", TensorProto.FLOAT, ["N", 3, "H", "W"])],
    [tensor("output", TensorProto.FLOAT, ["N", 3])],
)

save(
    "int_input.onnx",
    [
        helper.make_node("Cast", ["input"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("GlobalAveragePool", ["f"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["output"], axis=1),
    ],
    [tensor("input", TensorProto.INT64, ["N", 3, 4, 4])],
    [tensor("output", TensorProto.FLOAT, ["N", 3])],
)
