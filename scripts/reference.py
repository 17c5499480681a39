#!/usr/bin/env python3
"""Compute the Python reference answers for every test photo, the seed's way.

Run with the set-up's venv python. For each photo in PHOTO_DIR (not bad/), exactly as the article's
service does with torchvision (SPEC section 2) but without torch:

    img = Image.open(p).convert("RGB").resize((224, 224), Image.BILINEAR)
    x = (np.asarray(img, np.float32) / 255 - mean) / std, transposed to CHW
    out = onnxruntime.InferenceSession(model, CPU).run(["output"], {"input": x[None]})[0][0]
    idx = np.where(out > 0.5)[0]; labels = idx[np.argsort(out[idx])]

It writes OUT_DIR/NAME.rgb (the resized uint8 HWC pixels, 224*224*3 bytes, what a Rust decoder and
resizer must reproduce) and OUT_DIR/manifest.json with the raw outputs and the predictions.

For JPEGs it also writes what `fast_jpeg` must reproduce: OUT_DIR/NAME.draft.rgb, the same pipeline
after `img.draft("RGB", (448, 448))` (libjpeg's DCT scaling, twice the model's input at least),
with its outputs and prediction in the manifest ("draft_*").

For the other resize recipes (RECIPES, see recipes.py) it writes OUT_DIR/recipes/NAME.RECIPE.rgb,
each recipe's input pixels, and for JPEGs NAME.RECIPE.draft.rgb, the same after
`img.draft("RGB", twice the size the recipe resizes to)`, listed in OUT_DIR/recipes/manifest.json.
`--recipes-only` writes only those.

`--models` writes OUT_DIR/models.json instead: for each config of MODEL_CASES (the recipes of
`etc/` on the set-up's test models, and one more), each photo of PHOTO_DIR, its bad/ ones and the
odd images of `crates/vision/tests/fixtures` run through that config's own recipe the way the
team's Python pipeline does it (recipes.py: Pillow's resize, numpy's normalization, the config's
channel order, layout and element type), then ONNX Runtime: the sha256 of the input tensor's
bytes, the raw outputs and the classes the answer keeps; or the error Pillow raised. What
`crates/worker/tests/recipes.rs` compares the worker with.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import tomllib

import numpy as np
import onnxruntime as ort
from PIL import Image

import recipes

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
SIZE = (224, 224)
DRAFT = (2 * SIZE[0], 2 * SIZE[1])
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
# The resize recipes beyond the seed's checked on every photo (crates/vision/tests/recipes.rs):
# name -> (recipe, (width, height)).
RECIPES = {
    "bicubic_shorter256_crop224": ({"filter": "bicubic", "shorter_side": 256}, (224, 224)),
    "bilinear_shorter256_crop224": ({"filter": "bilinear", "shorter_side": 256}, (224, 224)),
    "lanczos_squash224": ({"filter": "lanczos"}, (224, 224)),
    "nearest_squash224": ({"filter": "nearest"}, (224, 224)),
    "bicubic_crop_pct0.875_240": ({"filter": "bicubic", "crop_pct": 0.875}, (240, 240)),
    # A crop wider than the resized image on most photos: zeros padded.
    "lanczos_shorter160_crop224x200": ({"filter": "lanczos", "shorter_side": 160}, (224, 200)),
}

# The configs whose recipes `--models` runs, relative to the repository: the commented examples of
# etc/ on the set-up's test models, a float BGR input with Caffe's mean and no division, and
# Keras's "tf" scaling on a non-square input with a sigmoid (crates/worker/tests/recipes/). Their
# keys are read with the seed's defaults (recipes.py).
MODEL_CASES = [
    "etc/torchvision.toml",
    "etc/timm.toml",
    "etc/keras.toml",
    "crates/worker/tests/recipes/caffe-nchw256.toml",
    "crates/worker/tests/recipes/tf-sigmoid.toml",
]
# The odd images (1 x 1, strips, CMYK, palette...) of the vision crate's recipe parity, listed
# in this manifest relative to its parent folder.
ODD_IMAGES = "crates/vision/tests/fixtures/recipes/manifest.json"
# Pillow resizes the whole image before the crop: a recipe that would make more pixels than
# this (a 20000 x 1 strip to a shorter side of 256) is skipped, in Python and in the test.
MAX_RESIZED_PIXELS = 50_000_000


def sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def thresh_sort(x: np.ndarray, thresh: float) -> np.ndarray:
    """The seed's thresh_sort: indices above the threshold, by ascending output."""
    (idx,) = np.where(x > thresh)
    return idx[np.argsort(x[idx])]


def calibration(outputs: np.ndarray, threshold: float = 0.5) -> list[float]:
    """Per-class biases that put the threshold in the widest gap near the middle of the photos.

    For each class, the cut goes between two consecutive distinct outputs ranked within the middle
    third of the photos, where the gap is widest: about half the photos get the label, and none sits
    close to the threshold (photos that differ only by container give near-equal outputs).
    """
    n = outputs.shape[0]
    biases = []
    for col in outputs.T:
        v = np.sort(col)
        lo, hi = max(n // 3, 1), min(n - n // 3, n - 1)
        best = max(range(lo, hi + 1), key=lambda k: v[k] - v[k - 1])
        biases.append(threshold - float(v[best] + v[best - 1]) / 2)
    return biases


def write_recipes(photos: list[Path], out: Path) -> None:
    """Each recipe's input pixels for every photo (and after a draft for JPEGs), and a manifest."""
    out.mkdir(parents=True, exist_ok=True)
    images = []
    for p in photos:
        pixels, drafts = {}, {}
        for name, (recipe, (width, height)) in RECIPES.items():
            with Image.open(p) as img:
                fmt, size = img.format, img.size
                rgb = recipes.apply(img.convert("RGB"), recipe, width, height)
            pixels[name] = f"{p.name}.{name}.rgb"
            (out / pixels[name]).write_bytes(np.asarray(rgb, dtype=np.uint8).tobytes())
            if fmt == "JPEG":
                resized = recipes.resized_size(size, recipe, width, height)
                with Image.open(p) as img:
                    img.draft("RGB", (2 * resized[0], 2 * resized[1]))
                    rgb = recipes.apply(img.convert("RGB"), recipe, width, height)
                drafts[name] = f"{p.name}.{name}.draft.rgb"
                (out / drafts[name]).write_bytes(np.asarray(rgb, dtype=np.uint8).tobytes())
        images.append({"file": p.name, "pixels": pixels, "draft_pixels": drafts})
    manifest = {
        "pillow": Image.__version__,
        "recipes": [
            {"name": name, **recipe, "width": size[0], "height": size[1]}
            for name, (recipe, size) in RECIPES.items()
        ],
        "images": images,
    }
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    tmp.replace(out / "manifest.json")


def model_case(root: Path, config: str, photos: list[Path]) -> dict:
    """One config's recipe on every image: the input's sha256, outputs and answer, or the error."""
    path = root / config
    toml = tomllib.loads(path.read_text())
    model = toml["model"]
    pre = model.get("preprocess", {})
    post = model.get("postprocess", {})
    model_path = (path.parent / model["path"]).resolve()
    labels_path = (path.parent / model["labels"]).resolve()
    text = labels_path.read_text()
    if labels_path.suffix == ".json":
        parsed = json.loads(text)
        labels = parsed if isinstance(parsed, list) else [parsed[str(i)] for i in range(len(parsed))]
    else:
        labels = [line.strip() for line in text.splitlines()]
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    size = pre.get("input_size")
    if size is None:
        h, w = inp.shape[1:3] if pre.get("layout", "nchw") == "nhwc" else inp.shape[2:4]
    else:
        h, w = (size, size) if isinstance(size, int) else size
    recipe = recipes.resize_of(pre)
    threshold = model.get("threshold", 0.5)
    images = []
    for p in photos:
        entry = {"file": str(p.relative_to(root))}
        try:
            with Image.open(p) as img:
                resized = recipes.resized_size(img.size, recipe, w, h)
                if resized[0] * resized[1] > MAX_RESIZED_PIXELS:
                    entry["skipped"] = f"Pillow would resize it to {resized[0]} x {resized[1]}"
                    images.append(entry)
                    continue
                rgb = recipes.apply(img.convert("RGB"), recipe, w, h)
        except Exception as e:  # noqa: BLE001 - any refusal of Pillow's is the expected answer
            entry["error"] = f"{type(e).__name__}: {e}"
            images.append(entry)
            continue
        x = recipes.to_tensor(np.asarray(rgb, dtype=np.uint8), pre)
        out = session.run(None, {inp.name: x})[0][0]
        entry["input_sha256"] = hashlib.sha256(x.tobytes()).hexdigest()
        entry["output"] = [float(v) for v in out]
        entry["classes"] = recipes.answer(out, labels, threshold, post)
        images.append(entry)
    return {"config": config, "model_sha256": sha256(model_path), "images": images}


def write_models(root: Path, photo_dir: Path, out: Path) -> None:
    """OUT/models.json: every config of MODEL_CASES on every photo, bad and odd image."""
    odd_manifest = root / ODD_IMAGES
    odd = [(odd_manifest.parent.parent / i["file"]).resolve()
           for i in json.loads(odd_manifest.read_text())["images"]]
    photos = sorted(p for p in photo_dir.iterdir() if p.is_file())
    bad = sorted(p for p in (photo_dir / "bad").iterdir() if p.is_file())
    every = [p.resolve() for p in photos + bad] + odd
    cases = [model_case(root.resolve(), config, every) for config in MODEL_CASES]
    manifest = {"onnxruntime": ort.__version__, "pillow": Image.__version__,
                "numpy": np.__version__, "cases": cases}
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "models.json.tmp"
    tmp.write_text(json.dumps(manifest) + "\n")
    tmp.replace(out / "models.json")


def main() -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=Path, required=True, help="folder of photos (bad/ is skipped)")
    ap.add_argument("--model", type=Path, required=True, help="the .onnx model")
    ap.add_argument("--classes", type=Path, required=True, help="class_name.json")
    ap.add_argument("--out", type=Path, required=True, help="folder for NAME.rgb and manifest.json")
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--print-calibration", action="store_true",
                    help="print per-class fc biases (0.5 - median output) for make_model.py")
    ap.add_argument("--recipes-only", action="store_true",
                    help="write only OUT/recipes (the other resize recipes' pixels), no model run")
    ap.add_argument("--models", action="store_true",
                    help="write only OUT/models.json (MODEL_CASES' recipes on the test models)")
    args = ap.parse_args()

    if args.models:
        write_models(Path(__file__).resolve().parent.parent, args.photos, args.out)
        return 0
    names = json.loads(args.classes.read_text())
    photos = sorted(p for p in args.photos.iterdir()
                    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not photos:
        print(f"reference.py: no photos in {args.photos}", file=sys.stderr)
        return 1
    if args.recipes_only:
        write_recipes(photos, args.out / "recipes")
        return 0
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(args.model), opts, providers=["CPUExecutionProvider"])
    args.out.mkdir(parents=True, exist_ok=True)

    images = []
    outputs = []
    started = time.monotonic()
    for p in photos:
        with Image.open(p) as img:
            width, height, mode, fmt = img.width, img.height, img.mode, img.format
            rgb = img.convert("RGB").resize(SIZE, Image.BILINEAR)
        pixels = np.asarray(rgb, dtype=np.uint8)
        (args.out / f"{p.name}.rgb").write_bytes(pixels.tobytes())

        def run(pixels: np.ndarray) -> tuple[np.ndarray, dict]:
            x = (pixels.astype(np.float32) / 255.0 - MEAN) / STD
            x = np.ascontiguousarray(x.transpose(2, 0, 1)[None])
            out = session.run(["output"], {"input": x})[0][0]
            labels = thresh_sort(out, args.threshold)
            if len(labels) == 0:
                return out, {"result": "No Categories", "status": 0}
            return out, {"result": [names[str(i)] for i in labels], "status": 1}

        out, prediction = run(pixels)
        outputs.append(out)
        draft = {}
        if fmt == "JPEG":
            with Image.open(p) as img:
                img.draft("RGB", DRAFT)
                draft_size = img.size
                draft_rgb = img.convert("RGB").resize(SIZE, Image.BILINEAR)
            draft_pixels = np.asarray(draft_rgb, dtype=np.uint8)
            (args.out / f"{p.name}.draft.rgb").write_bytes(draft_pixels.tobytes())
            draft_out, draft_prediction = run(draft_pixels)
            draft = {
                "draft_pixels": f"{p.name}.draft.rgb",
                "draft_size": list(draft_size),
                "draft_output": [float(v) for v in draft_out],
                "draft_prediction": draft_prediction,
            }
        images.append({
            "file": p.name,
            "sha256": sha256(p),
            "width": width,
            "height": height,
            "mode": mode,
            "pixels": f"{p.name}.rgb",
            "output": [float(v) for v in out],
            "prediction": prediction,
            **draft,
        })
    manifest = {
        "model_sha256": sha256(args.model),
        "threshold": args.threshold,
        "mean": [float(v) for v in MEAN],
        "std": [float(v) for v in STD],
        "images": images,
    }
    tmp = args.out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    tmp.replace(args.out / "manifest.json")
    write_recipes(photos, args.out / "recipes")
    elapsed = time.monotonic() - started
    labelled = sum(1 for i in images if i["prediction"]["status"] == 1)
    print(f"reference.py: {len(images)} photos ({labelled} with labels) in {elapsed:.1f} s")
    for i in images:
        r = i["prediction"]["result"]
        print(f"  {i['file']}: {', '.join(r) if isinstance(r, list) else r}")
    if args.print_calibration:
        print("FC_BIAS = (" + ", ".join(f"{b:.4f}" for b in calibration(np.stack(outputs))) + ")")
    margin = float(np.min(np.abs(np.stack(outputs) - args.threshold)))
    print(f"reference.py: smallest |output - threshold| = {margin:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
