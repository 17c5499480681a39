#!/usr/bin/env python3
"""Write the Python reference answers of the trained EfficientNet-Lite0: logits and top-5 per photo.

Run with the set-up's venv python. Each photo goes through trained.py's recipe (Pillow + numpy),
then ONNX Runtime (CPU) on the set-up's `var/models/efficientnet-lite0.onnx`:

    x = trained.tensor(photo)          # shorter side 256 bicubic, crop 224, (x - 127) / 128
    logits = session.run(["logits"], {"input": x})[0][0]
    top5 = trained.top_k(logits)       # softmax, the five most likely, with their scores

The JSON it writes holds, per photo (by trained.label), the photo's sha256, the top-5 as
`[index, name, score]` and the 1000 logits, with the model's sha256 and the recipe. Two uses:

- `--goldens`: the repository's goldens, tests/data/efficientnet-lite0-goldens.json, on GOLDEN
  (the original photos of var/photos, which the set-up checks by sha256), for the test suite;
- by default, every photo of var/photos and the corpus's odd ones, for var/reference (the set-up).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

import trained

GOLDEN = ("chelsea.png", "coffee.png", "astronaut.png", "grace_hopper.jpg", "motorcycle_left.png",
          "rocket.jpg")
DEFAULT_GOLDENS = trained.ROOT / "tests" / "data" / "efficientnet-lite0-goldens.json"


def sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def reference(model: Path, labels: Path, photos: list[Path]) -> dict:
    """The reference answers for `photos`."""
    names = json.loads(labels.read_text(encoding="utf-8"))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    out = {}
    for path in photos:
        logits = session.run(["logits"], {"input": trained.tensor(path)})[0][0]
        out[trained.label(path)] = {
            "sha256": sha256(path),
            "top5": [[i, names[i], round(p, 7)] for i, p in trained.top_k(logits)],
            "logits": [round(float(v), 6) for v in logits],
        }
    return {
        "model": model.name,
        "model_sha256": sha256(model),
        "recipe": {"resize": "shorter_side", "shorter_side": trained.RECIPE["shorter_side"],
                   "interpolation": trained.RECIPE["filter"], "crop": [trained.SIZE, trained.SIZE],
                   "mean": trained.MEAN, "std": trained.STD, "output": "softmax",
                   "top_k": trained.TOP_K},
        "photos": out,
    }


def main() -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    models = trained.ROOT / "var" / "models"
    ap.add_argument("--model", type=Path, default=models / "efficientnet-lite0.onnx")
    ap.add_argument("--labels", type=Path, default=models / "efficientnet-lite0-labels.json")
    ap.add_argument("--photos", type=Path, default=trained.ROOT / "var" / "photos")
    ap.add_argument("--goldens", action="store_true",
                    help=f"only the photos {', '.join(GOLDEN)}; --out defaults to the goldens file")
    ap.add_argument("--out", type=Path, help="the JSON file to write")
    args = ap.parse_args()
    if args.goldens:
        photos, out = [args.photos / n for n in GOLDEN], args.out or DEFAULT_GOLDENS
    elif args.out:
        photos, out = trained.photos(args.photos), args.out
    else:
        ap.error("--out is needed without --goldens")
    ref = reference(args.model, args.labels, photos)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    # One line per innermost list (a top-5 entry, a photo's logits): short and diffable. The
    # names hold no commas (trained.py's labels are each class's first name).
    text = re.sub(r"\[\s+([^\[\]]*?)\s+\]",
                  lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]",
                  json.dumps(ref, indent=1))
    tmp.write_text(text + "\n", encoding="utf-8")
    tmp.replace(out)
    cat = ref["photos"].get("chelsea.png")
    if cat:
        print("chelsea.png: " + ", ".join(f"{n} {p:.3f}" for _, n, p in cat["top5"]))
    print(f"{out}: {len(photos)} photos")
    return 0


if __name__ == "__main__":
    sys.exit(main())
