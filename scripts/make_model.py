#!/usr/bin/env python3
"""Write the test model: torchvision's ResNet50 graph with a 20-class head, seeded random weights.

No package ships trained ResNet50 weights, and torch is 5.5 GB, so the set-up builds the exact graph
that `torch.onnx.export` gives for the seed's model (torchvision `resnet50()` with
`fc = Linear(2048, 20)`, in eval mode, batch-norm folded into the convolutions) with `onnx` and
`numpy` only:

- stem: Conv 7x7/2 (3->64) + Relu, MaxPool 3x3/2 pad 1;
- four stages of Bottleneck blocks, [3, 4, 6, 3] blocks, widths 64/128/256/512, expansion 4; the
  stride sits on the 3x3 conv (torchvision "v1.5"); the first block of each stage has a 1x1
  downsample conv (with the stride) on its shortcut;
- GlobalAveragePool, Flatten, Gemm 2048 -> 20 (`fc`), opset 17, IR version 8;
- input `input` float32 [N, 3, 224, 224], output `output` float32 [N, 20], `N` symbolic.

Weights come from `numpy.random.default_rng(SEED)`, drawn in a fixed order as float32 and scaled
He-normal; the last conv of each block is scaled down (as a small folded batch-norm gamma would) so
activations stay bounded through 16 residual blocks. The fc layer has a fixed scale and per-class
biases that were calibrated once on the set-up's test photos, so that on real photos the raw outputs
spread around the 0.5 threshold: each photo gets some labels, not all or none, and no output lies
within 0.019 of the threshold. To re-derive FC_BIAS after changing the weights: write a model with
`--no-calibration` (zero biases) and run `scripts/reference.py --print-calibration` on it.

This graph was checked against torch: it has the same nodes (names, inputs, outputs, attributes) and initializer shapes as
`torch.onnx.export` of torchvision's resnet50 (torch 2.15, opset 17), and torchvision's resnet50
loaded with these weights (identity batch-norms) gives the same outputs within 5e-6.

The output is the same file byte for byte on every run with the pinned packages.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SEED = 20211107
OPSET = 17
IR_VERSION = 8
NUM_CLASSES = 20
STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))
EXPANSION = 4
# Gain on the last 1x1 conv of every block (stands in for a small folded batch-norm gamma).
RESIDUAL_GAIN = 0.2
# Standard deviation of the folded conv biases.
CONV_BIAS_STD = 0.05
# The fc weight is normal with std FC_SCALE / sqrt(2048).
FC_SCALE = 1.0
# Per-class fc biases, calibrated once on var/photos (see the module doc).
FC_BIAS = (
    0.3715, -3.5475, 4.8267, -0.4825, 3.7416, -1.5441, -0.6342, -0.4873, 0.0649, -3.0027,
    -2.5602, 0.4878, 0.6310, 0.3317, -2.4745, 1.9552, -0.8825, 2.3712, -0.5119, 2.0551,
)


class Builder:
    """Accumulates nodes and initializers of the graph, drawing weights from one generator."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def weight(self, name: str, shape: tuple[int, ...], std: float) -> str:
        """Adds a float32 normal(0, std) initializer and returns its name."""
        data = self.rng.standard_normal(shape, dtype=np.float32) * np.float32(std)
        self.inits.append(numpy_helper.from_array(data.astype(np.float32), name))
        return name

    def conv(
        self, param: str, scope: str, x: str, cin: int, cout: int, k: int, stride: int,
        gain: float = 1.0,
    ) -> str:
        """Conv with bias (batch-norm folded in), He-normal weights times `gain`.

        `param` names the weights as torchvision's state dict does, `scope` the node as
        torch.onnx.export does.
        """
        fan_in = cin * k * k
        w = self.weight(f"{param}.weight", (cout, cin, k, k), gain * np.sqrt(2.0 / fan_in))
        b = self.weight(f"{param}.bias", (cout,), CONV_BIAS_STD)
        pad = k // 2
        return self.conv_node(scope, x, w, b, k, stride, [pad, pad, pad, pad])

    def model(
        self, graph_name: str, input_info: onnx.ValueInfoProto, output_info: onnx.ValueInfoProto,
        producer: str, doc: str,
    ) -> onnx.ModelProto:
        """The finished model: this graph with one input and one output, at OPSET and IR_VERSION."""
        graph = helper.make_graph(self.nodes, graph_name, [input_info], [output_info],
                                  initializer=self.inits)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name=producer,
            producer_version="1",
            doc_string=doc,
        )
        model.ir_version = IR_VERSION
        return model

    def const(self, name: str, data: np.ndarray) -> str:
        """Adds an initializer holding `data` (weights read from a file) and returns its name."""
        self.inits.append(numpy_helper.from_array(data, name))
        return name

    def conv_node(
        self, scope: str, x: str, w: str, b: str, k: int, stride: int, pads: list[int],
        group: int = 1,
    ) -> str:
        """A Conv node on initializers `w` and `b`; `pads` is ONNX's [top, left, bottom, right]."""
        out = f"{scope}/Conv_output_0"
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, w, b],
                [out],
                name=f"{scope}/Conv",
                dilations=[1, 1],
                group=group,
                kernel_shape=[k, k],
                pads=pads,
                strides=[stride, stride],
            )
        )
        return out

    def relu(self, scope: str, x: str) -> str:
        """Relu node in the given scope."""
        out = f"{scope}/Relu_output_0"
        self.nodes.append(helper.make_node("Relu", [x], [out], name=f"{scope}/Relu"))
        return out

    def bottleneck(self, stage: int, i: int, x: str, cin: int, width: int, stride: int) -> str:
        """torchvision Bottleneck `layer{stage}.{i}`: 1x1, 3x3 (stride), 1x1 x4, shortcut add, relu."""
        cout = width * EXPANSION
        p, sc = f"layer{stage}.{i}", f"/layer{stage}/layer{stage}.{i}"
        h = self.relu(f"{sc}/relu", self.conv(f"{p}.conv1", f"{sc}/conv1", x, cin, width, 1, 1))
        h = self.conv(f"{p}.conv2", f"{sc}/conv2", h, width, width, 3, stride)
        h = self.relu(f"{sc}/relu_1", h)
        h = self.conv(f"{p}.conv3", f"{sc}/conv3", h, width, cout, 1, 1, gain=RESIDUAL_GAIN)
        if stride != 1 or cin != cout:
            shortcut = self.conv(f"{p}.downsample.0", f"{sc}/downsample/downsample.0", x, cin, cout,
                                 1, stride)
        else:
            shortcut = x
        added = f"{sc}/Add_output_0"
        self.nodes.append(helper.make_node("Add", [h, shortcut], [added], name=f"{sc}/Add"))
        return self.relu(f"{sc}/relu_2", added)


def build(calibrated: bool = True) -> onnx.ModelProto:
    """Builds the whole model proto."""
    g = Builder(SEED)
    x = g.relu("/relu", g.conv("conv1", "/conv1", "input", 3, 64, 7, 2))
    pooled = "/maxpool/MaxPool_output_0"
    g.nodes.append(
        helper.make_node(
            "MaxPool",
            [x],
            [pooled],
            name="/maxpool/MaxPool",
            ceil_mode=0,
            dilations=[1, 1],
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
            strides=[2, 2],
        )
    )
    x, cin = pooled, 64
    for stage, (width, blocks, stride) in enumerate(STAGES, start=1):
        for i in range(blocks):
            x = g.bottleneck(stage, i, x, cin, width, stride if i == 0 else 1)
            cin = width * EXPANSION
    g.nodes.append(
        helper.make_node("GlobalAveragePool", [x], ["/avgpool/GlobalAveragePool_output_0"],
                         name="/avgpool/GlobalAveragePool")
    )
    g.nodes.append(
        helper.make_node("Flatten", ["/avgpool/GlobalAveragePool_output_0"], ["/Flatten_output_0"],
                         name="/Flatten", axis=1)
    )
    fc_w = g.weight("fc.weight", (NUM_CLASSES, cin), FC_SCALE / np.sqrt(cin))
    bias = np.array(FC_BIAS if calibrated else [0.0] * NUM_CLASSES, dtype=np.float32)
    g.inits.append(numpy_helper.from_array(bias, "fc.bias"))
    g.nodes.append(
        helper.make_node("Gemm", ["/Flatten_output_0", fc_w, "fc.bias"], ["output"], name="/fc/Gemm",
                         alpha=1.0, beta=1.0, transB=1)
    )
    return g.model(
        "main_graph",
        helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224]),
        helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", NUM_CLASSES]),
        "arbiter-make-model",
        f"torchvision ResNet50, fc 2048->20, seeded random weights (seed {SEED})",
    )


def write(path: Path, data: bytes) -> None:
    """Writes through a temporary file, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def write_and_print(path: Path, data: bytes) -> None:
    """[write], then prints the size and sha256."""
    write(path, data)
    print(f"{path}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")


def main() -> int:
    """Entry point: build, check, write, print the sha256."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="where to write the .onnx file")
    ap.add_argument("--no-calibration", action="store_true",
                    help="write zero fc biases (to re-derive FC_BIAS on the photos)")
    args = ap.parse_args()
    model = build(calibrated=not args.no_calibration)
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write(args.out, data)
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    print(f"{args.out}: {len(data)} bytes, {params} parameters, "
          f"sha256 {hashlib.sha256(data).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
