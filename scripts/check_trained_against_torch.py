#!/usr/bin/env python3
"""Check the set-up's EfficientNet-Lite0 ONNX file against PyTorch's own module on the same weights.

Run by scripts/check_trained_against_torch.sh in a throwaway venv with torch and
`efficientnet-lite-pytorch` 0.1.0 (never the set-up's venv). It checks, and exits 1 if one fails:

1. pth.py reads the .pth exactly as `torch.load` does: the same names, shapes, dtypes and values;
2. on every photo of var/photos and the corpus's odd ones, preprocessed by trained.py's recipe,
   the module's logits (`EfficientNet.from_pretrained("efficientnet-lite0", weights_path=PTH)`,
   eval mode) and ONNX Runtime's on the ONNX file differ by at most TOLERANCE, and their top-5
   classes agree.

It prints the largest difference and each photo's top-5 (docs/trained-model.md records them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import pth
import trained

TOLERANCE = 1e-4


def main() -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pth", type=Path, help="efficientnet-lite0-57934424.pth")
    ap.add_argument("onnx", type=Path, help="the set-up's var/models/efficientnet-lite0.onnx")
    ap.add_argument("labels", type=Path, help="the set-up's class names (a JSON list)")
    args = ap.parse_args()

    import onnxruntime as ort
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    ours = pth.load(args.pth)
    theirs = torch.load(str(args.pth), map_location="cpu", weights_only=True)
    assert list(ours) == list(theirs), "pth.py and torch.load disagree on the names"
    for name, t in theirs.items():
        a = t.numpy()
        assert ours[name].shape == a.shape and ours[name].dtype == a.dtype, name
        assert np.array_equal(ours[name], a), name
    print(f"pth.py reads all {len(ours)} tensors exactly as torch.load does")

    torch.set_num_threads(2)
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(args.pth)).eval()
    session = ort.InferenceSession(str(args.onnx), providers=["CPUExecutionProvider"])
    names = json.loads(args.labels.read_text())
    worst, failed = 0.0, False
    for path in trained.photos():
        x = trained.tensor(path)
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()[0]
        got = session.run(["logits"], {"input": x})[0][0]
        diff = float(np.max(np.abs(got - expected)))
        worst = max(worst, diff)
        top_t, top_o = trained.top_k(expected), trained.top_k(got)
        same = [i for i, _ in top_t] == [i for i, _ in top_o]
        failed |= diff > TOLERANCE or not same
        shown = ", ".join(f"{names[i]} {p:.3f}" for i, p in top_o)
        print(f"{trained.label(path):32} max diff {diff:.1e}{'' if same else ' TOP-5 DIFFERS'}  {shown}")
    verdict = "OK" if not failed else "FAILED"
    print(f"{verdict}: max |onnxruntime - torch| = {worst:.2e} over all photos "
          f"(tolerance {TOLERANCE:g}); torch {torch.__version__}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
