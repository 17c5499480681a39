#!/usr/bin/env python3
"""Derive the test photo set from the six real photos that scripts/setup takes out of the wheels.

Run with the set-up's venv python (Pillow, numpy). It reads the originals in PHOTO_DIR
(grace_hopper.jpg, chelsea.png, coffee.png, astronaut.png, motorcycle_left.png, rocket.jpg) and
writes next to them one file for each image mode and container the service must handle the way
Pillow's `convert("RGB")` does (grayscale, palette, alpha, 16-bit, CMYK, BMP, WebP, TIFF, GIF,
progressive and 4:4:4 JPEG, an EXIF-rotated JPEG), odd sizes (1x1, a 2000x60 strip), a 12-megapixel
JPEG for benchmarks, and in PHOTO_DIR/bad/ inputs that must be refused cleanly (empty, text, truncated
JPEG and PNG, a PNG decompression bomb).

Everything is deterministic: the same Pillow gives the same bytes on every run.
"""

from __future__ import annotations

import argparse
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

ORIGINALS = (
    "grace_hopper.jpg",
    "chelsea.png",
    "coffee.png",
    "astronaut.png",
    "motorcycle_left.png",
    "rocket.jpg",
)
BOMB_SIDE = 30000
NOISE_SEED = 12


def alpha_ramp(size: tuple[int, int]) -> Image.Image:
    """An L mask: opaque in the middle, fully transparent at the corners (radial ramp)."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    r = np.hypot((xx - w / 2) / (w / 2), (yy - h / 2) / (h / 2))
    a = np.clip((1.25 - r) / 0.75, 0.0, 1.0) * 255.0
    return Image.fromarray(np.round(a).astype(np.uint8))


def derive(d: Path) -> list[str]:
    """Writes the derived photos into `d` and returns their names."""
    im = {}
    for name in ORIGINALS:
        with Image.open(d / name) as img:
            if img.mode != "RGB":
                raise SystemExit(f"{name}: expected an RGB photo, got {img.mode}")
            img.load()
            # Drop the metadata (XMP, EXIF, comments) so derived files carry only what is asked.
            im[name] = Image.frombytes("RGB", img.size, img.tobytes())
    gh, cat, coffee = im["grace_hopper.jpg"], im["chelsea.png"], im["coffee.png"]
    astro, moto, rocket = im["astronaut.png"], im["motorcycle_left.png"], im["rocket.jpg"]
    out: list[str] = []

    def save(img: Image.Image, name: str, **kw: object) -> None:
        img.save(d / name, **kw)
        out.append(name)

    # Single-channel and alpha modes.
    save(cat.convert("L"), "chelsea_gray.jpg", quality=90)
    save(coffee.convert("L"), "coffee_gray.png")
    rgba = astro.copy()
    rgba.putalpha(alpha_ramp(astro.size))
    save(rgba, "astronaut_rgba.png")
    la = cat.convert("L")
    la.putalpha(alpha_ramp(cat.size))
    save(la, "chelsea_la.png")
    # Palettes: an adaptive 256-colour PNG, and a GIF (the colour under the alpha is what counts).
    save(coffee.quantize(256, dither=Image.Dither.NONE), "coffee_palette.png")
    save(rocket.quantize(256, dither=Image.Dither.FLOYDSTEINBERG), "rocket_palette.gif")
    # 16-bit grayscale over the full range (Pillow's convert("RGB") clips I;16 at 255).
    g16 = np.asarray(moto.convert("L"), dtype=np.uint16) * np.uint16(257)
    save(Image.fromarray(g16), "motorcycle_gray16.png")
    # Other colour models and containers.
    save(gh.convert("CMYK"), "grace_hopper_cmyk.jpg", quality=90)
    save(rocket, "rocket.bmp")
    save(coffee, "coffee.webp", quality=80, method=4)
    save(coffee, "coffee_lossless.webp", lossless=True)
    save(astro, "astronaut.tiff")
    save(gh, "grace_hopper_progressive.jpg", quality=90, progressive=True)
    save(cat, "chelsea_444.jpg", quality=95, subsampling=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display; Pillow's open() ignores it.
    save(gh, "grace_hopper_exif6.jpg", quality=90, exif=exif.tobytes())
    # Odd sizes.
    save(cat.resize((1, 1), Image.Resampling.BOX), "tiny_1x1.png")
    save(moto.resize((2000, 60), Image.Resampling.BICUBIC), "strip_2000x60.png")
    # A 12-megapixel camera-like JPEG: upscaled real photo plus seeded sensor-like grain.
    big = np.asarray(moto.resize((4000, 3000), Image.Resampling.BICUBIC), dtype=np.int16)
    grain = np.random.default_rng(NOISE_SEED).integers(-6, 7, size=big.shape, dtype=np.int16)
    big = np.clip(big + grain, 0, 255).astype(np.uint8)
    save(Image.fromarray(big), "big_12mp.jpg", quality=90)
    return out


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk with its CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(side: int) -> bytes:
    """A valid 1-bit grayscale PNG of side x side zero pixels (~0.1 MB, 2.7 GB once RGB)."""
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    row = b"\x00" * (1 + (side + 7) // 8)
    z = zlib.compressobj(9)
    parts = [z.compress(row) for _ in range(side)]
    parts.append(z.flush())
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", b"".join(parts))
        + png_chunk(b"IEND", b"")
    )


def bad(d: Path) -> list[str]:
    """Writes the inputs that must be refused into d/bad and returns their names."""
    b = d / "bad"
    b.mkdir(exist_ok=True)
    jpg = (d / "grace_hopper.jpg").read_bytes()
    png = (d / "chelsea.png").read_bytes()
    files = {
        "empty.jpg": b"",
        "text.jpg": b"This is not a JPEG, just text with a .jpg name.\n",
        "truncated.jpg": jpg[: len(jpg) // 2],
        "truncated.png": png[: len(png) // 2],
        "bomb.png": bomb_png(BOMB_SIDE),
    }
    for name, data in files.items():
        (b / name).write_bytes(data)
    return [f"bad/{n}" for n in files]


def main() -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("photo_dir", type=Path, help="folder holding the six original photos")
    args = ap.parse_args()
    missing = [n for n in ORIGINALS if not (args.photo_dir / n).is_file()]
    if missing:
        print(f"photos.py: missing originals in {args.photo_dir}: {', '.join(missing)}",
              file=sys.stderr)
        return 1
    names = derive(args.photo_dir) + bad(args.photo_dir)
    print(f"photos.py: wrote {len(names)} files: {' '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
