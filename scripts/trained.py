"""The trained EfficientNet-Lite0's evaluation recipe in Python (Pillow + numpy), and the photos it
is checked on: the one reference that the torch check, the goldens and Arbiter are held to.

Recipe (the model's ImageNet evaluation, as measured with torch - see docs/trained-model.md):
`Image.open(p).convert("RGB")`, shorter side to 256 bicubic (torchvision's `Resize(256)` on a PIL
image), center crop 224 x 224, then `(x - 127) / 128` per channel in float32, NCHW; the answer is a
softmax over the 1000 logits, the five most likely with their scores.

Needs only Pillow and numpy, so that both the set-up's venv and the throwaway torch venv import it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

import recipes

ROOT = Path(__file__).resolve().parent.parent
RECIPE = {"filter": "bicubic", "shorter_side": 256}
SIZE = 224
MEAN, STD = 127.0, 128.0
TOP_K = 5
# The odd files of the decode corpus that Pillow decodes fully: they are photos to the model too.
CORPUS_PHOTOS = ("cmyk.jpg", "gray.jpg", "gray16.png", "palette.gif", "rgb16.png", "tiny_1x1.png",
                 "tall_1x20000.png", "wide_20000x1.png")


def pixels(path: Path) -> np.ndarray:
    """The recipe's 224 x 224 RGB uint8 pixels (HWC) of one image file."""
    with Image.open(path) as img:
        return np.asarray(recipes.apply(img.convert("RGB"), RECIPE, SIZE, SIZE), dtype=np.uint8)


def tensor(path: Path) -> np.ndarray:
    """The model's input for one image file: float32 [1, 3, 224, 224]."""
    x = (pixels(path).astype(np.float32) - np.float32(MEAN)) / np.float32(STD)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax of one row of logits, in float64."""
    z = np.exp(logits.astype(np.float64) - float(logits.max()))
    return z / z.sum()


def top_k(logits: np.ndarray, k: int = TOP_K) -> list[tuple[int, float]]:
    """The k most likely classes and their softmax scores, most likely first (ties: lower index)."""
    p = softmax(logits)
    order = np.argsort(-p, kind="stable")[:k]
    return [(int(i), float(p[i])) for i in order]


def photos(photo_dir: Path = ROOT / "var" / "photos") -> list[Path]:
    """Every photo of var/photos (not bad/), then the corpus's odd ones that decode, by name."""
    found = sorted(p for p in photo_dir.iterdir() if p.is_file())
    corpus = ROOT / "tests" / "corpus"
    return found + [corpus / n for n in CORPUS_PHOTOS if (corpus / n).is_file()]


def label(path: Path) -> str:
    """A photo's name in the goldens and reports: `NAME` for var/photos, `corpus/NAME` otherwise."""
    return f"corpus/{path.name}" if path.parent.name == "corpus" else path.name
