"""The resize recipes of image classifiers' Python pipelines, on Pillow, without torch.

Each recipe is what a team's own pipeline does to a PIL image before ToTensor, written from the
sources of the libraries that define it (what `arbiter_vision::Resize` must reproduce):

- squash: torchvision's `Resize([h, w])`, i.e. Pillow's `img.resize((w, h), filter)`;
- shorter_side s: torchvision's `Resize(s)` then `CenterCrop((h, w))` on a PIL image
  (`transforms/functional.py`: `_compute_resized_output_size`, `resize`, `center_crop`, and
  `_functional_pil.py`: `pad` through `ImageOps.expand`, `crop`);
- crop_pct p: timm's `transforms_imagenet_eval` for a square input (`transforms_factory.py`):
  `Resize(math.floor(size / p))` then `CenterCrop(size)`.

A recipe is a dict: {"filter": "nearest" | "bilinear" | "bicubic" | "lanczos", and at most one of
"shorter_side": s or "crop_pct": p}.
"""

from __future__ import annotations

import math

from PIL import Image, ImageOps

FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def shorter_side_size(width: int, height: int, s: int) -> tuple[int, int]:
    """torchvision's `_compute_resized_output_size((h, w), [s])`, as (width, height)."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = s, int(s * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def tv_resize(img: Image.Image, size: tuple[int, int], resample: int) -> Image.Image:
    """torchvision's `resize` of a PIL image to (width, height): unchanged when the size is."""
    if img.size == size:
        return img
    return img.resize(size, resample)


def center_crop(img: Image.Image, width: int, height: int) -> Image.Image:
    """torchvision's `center_crop` of a PIL image: zeros padded where the crop is larger."""
    image_width, image_height = img.size
    if width > image_width or height > image_height:
        padding_ltrb = [
            (width - image_width) // 2 if width > image_width else 0,
            (height - image_height) // 2 if height > image_height else 0,
            (width - image_width + 1) // 2 if width > image_width else 0,
            (height - image_height + 1) // 2 if height > image_height else 0,
        ]
        img = ImageOps.expand(img, border=tuple(padding_ltrb), fill=0)
        image_width, image_height = img.size
        if width == image_width and height == image_height:
            return img
    top = int(round((image_height - height) / 2.0))
    left = int(round((image_width - width) / 2.0))
    return img.crop((left, top, left + width, top + height))


def resized_size(size: tuple[int, int], recipe: dict, width: int, height: int) -> tuple[int, int]:
    """The (width, height) the recipe resizes an image of `size` to, before any crop."""
    if "shorter_side" in recipe:
        return shorter_side_size(*size, recipe["shorter_side"])
    if "crop_pct" in recipe:
        scale = math.floor(width / recipe["crop_pct"]), math.floor(height / recipe["crop_pct"])
        assert scale[0] == scale[1], "crop_pct is for square inputs"
        return shorter_side_size(*size, scale[0])
    return width, height


def apply(img: Image.Image, recipe: dict, width: int, height: int) -> Image.Image:
    """The recipe's width x height input from an RGB image."""
    resample = FILTERS[recipe["filter"]]
    resized = tv_resize(img, resized_size(img.size, recipe, width, height), resample)
    if "shorter_side" in recipe or "crop_pct" in recipe:
        return center_crop(resized, width, height)
    return resized


# --- The whole recipe of a config's [model.preprocess] and [model.postprocess] -------------------
# Every key defaults to the seed's (crates/config/src/defaults.rs), as Arbiter reads it.

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize_of(pre: dict) -> dict:
    """The resize recipe (see `apply`) of a [model.preprocess] table."""
    recipe = {"filter": pre.get("interpolation", "bilinear")}
    resize = pre.get("resize", "squash")
    if resize == "shorter_side":
        recipe["shorter_side"] = pre["shorter_side"]
    elif resize == "crop_pct":
        recipe["crop_pct"] = pre["crop_pct"]
    return recipe


def to_tensor(pixels, pre: dict):
    """A width x height RGB image (uint8 HWC numpy array) as a batch of one of the model's input,
    as the team's own pipeline writes it: the channels flipped for BGR; for float32,
    `(x / divide_by - mean) / std` in float32 (torchvision's `ToTensor` then `Normalize`, mean and
    std in the input's channel order, each rounded once to float32 as a torch tensor holds them);
    for uint8 the pixels as they are; transposed to CHW for NCHW."""
    import numpy as np

    x = pixels
    if pre.get("channels", "rgb") == "bgr":
        x = x[..., ::-1]
    if pre.get("input_type", "float32") == "float32":
        mean = np.array(pre.get("mean", IMAGENET_MEAN), dtype=np.float32)
        std = np.array(pre.get("std", IMAGENET_STD), dtype=np.float32)
        x = (x.astype(np.float32) / np.float32(pre.get("divide_by", 255)) - mean) / std
    else:
        x = x.astype(np.uint8)
    if pre.get("layout", "nchw") == "nchw":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[None])


def answer(outputs, labels: list[str], threshold: float, post: dict) -> list[int]:
    """The indices an answer keeps, in its order: the seed's raw threshold (ascending output),
    a sigmoid and threshold (ascending), or a softmax's top k (most likely first, equal outputs
    in index order)."""
    import numpy as np

    x = np.asarray(outputs, dtype=np.float64)[: len(labels)]
    output = post.get("output", "threshold")
    if output == "softmax":
        order = np.argsort(-x, kind="stable")
        return [int(i) for i in order[: post.get("top_k", 1)]]
    # Arbiter's scores are float32: a sigmoid computed in float64 and rounded once, ranked as
    # rounded (equal scores in index order), and compared with the float32 threshold.
    scores = (1.0 / (1.0 + np.exp(-x)) if output == "sigmoid" else x).astype(np.float32)
    (idx,) = np.where(scores > np.float32(threshold))
    return [int(i) for i in idx[np.argsort(scores[idx], kind="stable")]]
