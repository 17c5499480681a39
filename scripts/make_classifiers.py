#!/usr/bin/env python3
"""Write the small test classifiers of the recipes beyond the seed's, with seeded random weights.

Each is a few convolutions, a global average pool and a linear layer of 1000 classes (ImageNet's
count), built with `onnx` and `numpy` only by make_model.py's graph builder, small enough for CI:

- `classifier-nchw256.onnx`: input `input` float32 [N, 3, 256, 256], output `logits` float32
  [N, 1000], for a softmax head after a center crop (torchvision's and timm's recipes);
- `classifier-nhwc-uint8.onnx`: input `input` uint8 [N, 224, 224, 3] holding BGR pixels as they
  are, normalized inside the graph the way Keras's `caffe` mode does (the ImageNet mean in BGR
  pixel levels subtracted, no scaling), then transposed to NCHW; output `logits` [N, 1000];
- `classifier-any-size.onnx`: input `input` float32 [N, 3, H, W], every dimension but the
  channels symbolic (the global pool makes any size work); output `logits` [N, 1000];
- `classifier-labels.txt` and `classifier-labels.json`: the 1000 class names, as a text file with
  one name a line (ImageNet's usual form) and as a JSON list.

Every model is checked by onnx's checker and run once on a seeded input by ONNX Runtime. The files
are the same byte for byte on every run with the pinned packages; scripts/setup pins their sha256.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from make_model import Builder, write_and_print

SEED = 20261207
NUM_CLASSES = 1000
# Output channels and stride of each 3x3 convolution.
CONVS = ((8, 2), (16, 2), (32, 2))
# The fc weight is normal with std FC_SCALE / sqrt(fan-in), centered per class.
FC_SCALE = 40.0
# Keras's `caffe` preprocessing: the ImageNet mean in pixel levels, BGR order.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def labels() -> list[str]:
    """The class names: distinct, plain, and obviously not ImageNet's."""
    return [f"class {i:03d}" for i in range(NUM_CLASSES)]


def body(g: Builder, x: str) -> str:
    """The convolutions, global average pool and linear layer on an NCHW float tensor `x`."""
    cin = 3
    for i, (cout, stride) in enumerate(CONVS):
        x = g.relu(f"/conv{i}", g.conv(f"conv{i}", f"/conv{i}", x, cin, cout, 3, stride))
        # Each filter's weights sum to 0: it answers to edges and colors, not to how bright the
        # image is, so that photos get different classes (not the one a bright image favours).
        w = next(j for j, t in enumerate(g.inits) if t.name == f"conv{i}.weight")
        data = numpy_helper.to_array(g.inits[w])
        data = data - data.mean(axis=(1, 2, 3), keepdims=True)
        g.inits[w] = numpy_helper.from_array(data.astype(np.float32), f"conv{i}.weight")
        cin = cout
    g.nodes.append(helper.make_node("GlobalAveragePool", [x], ["/pool"], name="/pool"))
    g.nodes.append(helper.make_node("Flatten", ["/pool"], ["/flat"], name="/flatten", axis=1))
    # Each class's weights sum to 0, so a logit answers to which features an image has, not to
    # how strong they all are (the pooled features after a Relu are all positive).
    w = g.rng.standard_normal((NUM_CLASSES, cin), dtype=np.float32)
    w -= w.mean(axis=1, keepdims=True)
    w *= np.float32(FC_SCALE / np.sqrt(cin))
    g.inits.append(numpy_helper.from_array(w.astype(np.float32), "fc.weight"))
    w = "fc.weight"
    b = g.weight("fc.bias", (NUM_CLASSES,), 0.1)
    g.nodes.append(
        helper.make_node("Gemm", ["/flat", w, b], ["logits"], name="/fc", alpha=1.0, beta=1.0,
                         transB=1)
    )
    return "logits"


def model(name: str, elem: int, shape: list, nhwc_caffe: bool) -> onnx.ModelProto:
    """One classifier; `nhwc_caffe` puts Keras's caffe normalization and a transpose first."""
    g = Builder(SEED)
    x = "input"
    if nhwc_caffe:
        g.nodes.append(helper.make_node("Cast", [x], ["/cast"], name="/cast",
                                        to=TensorProto.FLOAT))
        mean = np.array(CAFFE_MEAN_BGR, dtype=np.float32).reshape(1, 1, 1, 3)
        g.inits.append(numpy_helper.from_array(mean, "caffe_mean"))
        g.nodes.append(helper.make_node("Sub", ["/cast", "caffe_mean"], ["/centered"],
                                        name="/centered"))
        g.nodes.append(helper.make_node("Transpose", ["/centered"], ["/nchw"], name="/nchw",
                                        perm=[0, 3, 1, 2]))
        x = "/nchw"
    out = body(g, x)
    m = g.model(
        name,
        helper.make_tensor_value_info("input", elem, shape),
        helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", NUM_CLASSES]),
        "arbiter-make-classifiers",
        f"a test classifier of {NUM_CLASSES} classes, seeded random weights (seed {SEED})",
    )
    onnx.checker.check_model(m, full_check=True)
    return m


MODELS = {
    "classifier-nchw256.onnx": (TensorProto.FLOAT, ["N", 3, 256, 256], False),
    "classifier-nhwc-uint8.onnx": (TensorProto.UINT8, ["N", 224, 224, 3], True),
    "classifier-any-size.onnx": (TensorProto.FLOAT, ["N", 3, "H", "W"], False),
}


def run_once(path: Path, elem: int, shape: list) -> None:
    """Runs the model on ONNX Runtime with one seeded input (two sizes where it is symbolic)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    sizes = [(240, 240), (224, 300)] if "H" in shape else [None]
    for size in sizes:
        dims = [1 if d == "N" else d for d in shape]
        if size:
            dims[2], dims[3] = size
        if elem == TensorProto.UINT8:
            x = rng.integers(0, 256, size=dims, dtype=np.uint8)
        else:
            x = rng.standard_normal(dims, dtype=np.float32)
        (y,) = session.run(None, {"input": x})
        if y.shape != (1, NUM_CLASSES) or not np.isfinite(y).all():
            raise SystemExit(f"{path}: on {dims} ONNX Runtime gave {y.shape}, not finite "
                             f"[1, {NUM_CLASSES}]")


def main() -> int:
    """Entry point: build, check, write and run each model, then write the labels."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="the folder to write into (var/models)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, (elem, shape, nhwc_caffe) in MODELS.items():
        m = model(name.removesuffix(".onnx"), elem, shape, nhwc_caffe)
        write_and_print(args.out / name, m.SerializeToString())
        run_once(args.out / name, elem, shape)
    names = labels()
    write_and_print(args.out / "classifier-labels.txt", "".join(f"{n}\n" for n in names).encode())
    write_and_print(args.out / "classifier-labels.json", (json.dumps(names, indent=0) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
