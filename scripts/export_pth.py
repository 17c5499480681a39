#!/usr/bin/env python3
"""Export a trained model.pth (the article's ResNet50, fc 2048 -> 20) to the ONNX file Arbiter serves.

For users who trained the seed's model: `init_model()` builds torchvision's `resnet50()`, replaces
`fc` with `Linear(2048, 20)` and loads `model.pth`. This script does the same, exports it with
opset 17, input `input` [N, 3, 224, 224], output `output` [N, 20] and a dynamic batch dimension `N`
(batch-norm is folded into the convolutions by the exporter in eval mode), then checks that ONNX
Runtime on the exported file gives the same raw outputs as torch on a few images (max abs
difference < 1e-3) and prints the labels both give.

Needs torch and torchvision (about 5.5 GB with the CUDA stack; not part of the set-up's venv):

    python3 -m venv /tmp/export && /tmp/export/bin/pip install torch torchvision onnx onnxruntime pillow
    /tmp/export/bin/python scripts/export_pth.py model.pth var/models/resnet50-voc20-trained.onnx
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_IMAGES = [ROOT / "var" / "photos" / n for n in ("grace_hopper.jpg", "chelsea.png", "coffee.png")]
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
TOLERANCE = 1e-3


def load_model(path: Path, num_classes: int):  # noqa: ANN201 (torch is imported lazily)
    """The seed's init_model(): resnet50 with fc = Linear(2048, num_classes), weights loaded, eval.

    The state dict (or a checkpoint's "state_dict") is read by pth.py, which refuses a file that
    would run code, rather than by torch.load.
    """
    import torch
    from torchvision import models

    import pth

    resnet = models.resnet50()
    resnet.fc = torch.nn.Linear(resnet.fc.in_features, num_classes)
    state = {k: torch.from_numpy(v) for k, v in pth.load(path).items()}
    # A model saved from nn.DataParallel has every key prefixed with "module.".
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    resnet.load_state_dict(state)
    for param in resnet.parameters():
        param.requires_grad = False
    return resnet.eval()


def export(model, out: Path) -> None:  # noqa: ANN001
    """torch.onnx.export with the names and dynamic batch Arbiter expects."""
    import torch

    dummy = torch.zeros(1, 3, 224, 224, dtype=torch.float32)
    kwargs = {
        "input_names": ["input"],
        "output_names": ["output"],
        "dynamic_axes": {"input": {0: "N"}, "output": {0: "N"}},
        "opset_version": 17,
        "do_constant_folding": True,
    }
    # Newer torch defaults to the dynamo exporter; the TorchScript one honours dynamic_axes names.
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(model, (dummy,), str(out), **kwargs)


def thresh_sort(x, thresh: float):  # noqa: ANN001, ANN201
    """The seed's thresh_sort: indices above the threshold, by ascending output."""
    import numpy as np

    (idx,) = np.where(x > thresh)
    return idx[np.argsort(x[idx])]


def main() -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(
        description="Export the article's trained ResNet50 (model.pth) to ONNX for Arbiter and "
        "check ONNX Runtime against torch.",
        epilog="torch and torchvision must be installed (they are not in the set-up's venv).",
    )
    ap.add_argument("pth", type=Path, help="the trained state dict (model.pth)")
    ap.add_argument("out", type=Path, help="where to write the .onnx file")
    ap.add_argument("--images", type=Path, nargs="+", default=None,
                    help="images to compare torch and ONNX Runtime on "
                    "(default: grace_hopper.jpg, chelsea.png, coffee.png from var/photos)")
    ap.add_argument("--classes", type=Path, default=ROOT / "etc" / "class_name.json",
                    help="class-name file (default: etc/class_name.json)")
    ap.add_argument("--threshold", type=float, default=0.5)
    args = ap.parse_args()

    try:
        import numpy as np
        import onnx
        import onnxruntime as ort
        import torch
        from PIL import Image
        from torchvision import transforms
    except ImportError as e:
        print(f"export_pth.py: {e}: install torch, torchvision, onnx, onnxruntime and pillow",
              file=sys.stderr)
        return 2

    names = json.loads(args.classes.read_text())
    model = load_model(args.pth, len(names))
    export(model, args.out)
    proto = onnx.load(str(args.out))
    onnx.checker.check_model(proto)
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    print(f"exported {args.out} (opset 17, input {proto.graph.input[0].name} {dims}, "
          f"output {proto.graph.output[0].name})")

    # The article's own transform for torch; the same tensor goes to ONNX Runtime.
    data_trans = transforms.Compose([
        transforms.Resize([224, 224]),
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
    ])
    images = args.images or [p for p in DEFAULT_IMAGES if p.is_file()]
    if images:
        batch = torch.stack([data_trans(Image.open(p).convert("RGB")) for p in images])
        labels_of = [p.name for p in images]
    else:
        print("no images found (run scripts/setup or pass --images): comparing on random inputs")
        batch = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        labels_of = [f"random {i}" for i in range(3)]
    with torch.no_grad():
        expected = model(batch).numpy()
    session = ort.InferenceSession(str(args.out), providers=["CPUExecutionProvider"])
    got = session.run(["output"], {"input": batch.numpy()})[0]
    diff = float(np.max(np.abs(got - expected)))

    for name, row_t, row_o in zip(labels_of, expected, got):
        lt = [names[str(i)] for i in thresh_sort(row_t, args.threshold)] or "No Categories"
        lo = [names[str(i)] for i in thresh_sort(row_o, args.threshold)] or "No Categories"
        print(f"  {name}: torch {lt}  onnxruntime {lo}")
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    if diff < TOLERANCE:
        print(f"OK: max |onnxruntime - torch| = {diff:.2e} < {TOLERANCE:g} on {len(batch)} images; "
              f"sha256 {digest}")
        return 0
    print(f"FAILED: max |onnxruntime - torch| = {diff:.2e} >= {TOLERANCE:g}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
