#!/usr/bin/env python3
"""Write the bad-input corpus of tests/reliability (the image files listed in manifest.txt).

Run with the set-up's venv python (Pillow, numpy): `var/venv/bin/python tests/corpus/make_corpus.py`.
The files are committed; this script says how each was made and rewrites them byte for byte with
the pinned packages. Requests that are malformed at the HTTP or multipart level (a missing
boundary, 1000 parts, a 100 MB part, absurd headers...) are built by the test itself, and big
inputs are never committed: the decompression bombs here are a few kilobytes that declare
billions of pixels.
"""

from __future__ import annotations

import io
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent


def png(width: int, height: int, depth: int, color: int, raw: bytes, level: int = 9) -> bytes:
    """A PNG from already filtered scanlines (each starts with its filter byte)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw, level))
        + chunk(b"IEND", b"")
    )


def gradient(w: int, h: int) -> np.ndarray:
    """A smooth RGB test picture."""
    yy, xx = np.mgrid[0:h, 0:w]
    r = (xx * 255 // max(w - 1, 1)).astype(np.uint8)
    g = (yy * 255 // max(h - 1, 1)).astype(np.uint8)
    b = ((xx + yy) * 127 // max(w + h - 2, 1)).astype(np.uint8)
    return np.stack([r, g, b], axis=2)


def encoded(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_bomb(side: int) -> bytes:
    """A 1-bit grayscale PNG of side x side black pixels: about 50 KB that inflate to side^2/8."""
    row = b"\x00" + bytes((side + 7) // 8)
    comp = zlib.compressobj(9)
    parts = [comp.compress(row) for _ in range(side)]
    parts.append(comp.flush())
    data = b"".join(parts)
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def gif_bomb(width: int, height: int, codes: int) -> bytes:
    """A GIF whose one frame declares width x height pixels of color 0 (2-bit LZW codes)."""
    # LZW with min code size 2: clear = 4, end = 5; emitting code 0 `codes` times keeps the code
    # size at 3 bits only while the table has room, so emit a clear every few codes.
    bits, nbits = 0, 0
    out = bytearray()

    def emit(code: int, size: int) -> None:
        nonlocal bits, nbits
        bits |= code << nbits
        nbits += size
        while nbits >= 8:
            out.append(bits & 0xFF)
            bits >>= 8
            nbits -= 8

    for i in range(codes):
        if i % 2 == 0:
            emit(4, 3)
        emit(0, 3)
    emit(5, 3)
    if nbits:
        out.append(bits & 0xFF)
    blocks = bytearray()
    for i in range(0, len(out), 255):
        piece = out[i : i + 255]
        blocks += bytes([len(piece)]) + piece
    blocks += b"\x00"
    header = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0)
    palette = b"\x00\x00\x00\xff\xff\xff"
    descriptor = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0)
    return header + palette + descriptor + b"\x02" + bytes(blocks) + b";"


def jpeg_with_size(jpeg: bytes, width: int, height: int) -> bytes:
    """Rewrites the frame size in a baseline JPEG's SOF0 segment."""
    i = jpeg.index(b"\xff\xc0")
    return jpeg[: i + 5] + struct.pack(">HH", height, width) + jpeg[i + 9 :]


def main() -> int:
    pic = Image.fromarray(gradient(64, 48))
    files: dict[str, bytes] = {}
    files["empty.bin"] = b""
    files["text.jpg"] = b"This is plain text posing as a JPEG image.\n"
    files["html.png"] = b"<!DOCTYPE html><html><body>not a picture</body></html>\n"
    jpeg = encoded(pic, "JPEG", quality=90)
    files["truncated.jpg"] = jpeg[: len(jpeg) // 2]
    files["header_only.jpg"] = jpeg[: jpeg.index(b"\xff\xda")]
    pngfile = encoded(pic, "PNG")
    files["truncated.png"] = pngfile[: len(pngfile) // 2]
    bad_crc = bytearray(pngfile)
    bad_crc[29] ^= 0xFF  # the IHDR CRC
    files["bad_crc.png"] = bytes(bad_crc)
    files["zero_width.png"] = png(0, 1, 8, 0, b"\x00")
    files["bomb.png"] = png_bomb(20000)
    files["bomb.gif"] = gif_bomb(65535, 65535, 64)
    files["huge_dims.jpg"] = jpeg_with_size(jpeg, 65500, 65500)
    # Under the pixel limit (81 M pixels) but with the data of 64 x 48: a truncated JPEG whose
    # decode would need a 243 MB buffer.
    files["big_dims_truncated.jpg"] = jpeg_with_size(jpeg, 9000, 9000)
    files["truncated.gif"] = encoded(pic.quantize(16), "GIF")[:100]
    files["truncated.webp"] = encoded(pic, "WEBP", quality=80)[:60]
    files["truncated.bmp"] = encoded(pic, "BMP")[:200]
    # Valid but unusual images: each must be answered 200.
    files["tiny_1x1.png"] = png(1, 1, 8, 2, b"\x00\x80\x40\x20")
    files["wide_20000x1.png"] = png(20000, 1, 8, 2, b"\x00" + gradient(20000, 1).tobytes())
    files["tall_1x20000.png"] = png(1, 20000, 8, 0, b"".join(b"\x00" + bytes([i % 256]) for i in range(20000)))
    g16 = (np.mgrid[0:48, 0:64][1] * 1000).astype(">u2")
    files["gray16.png"] = png(64, 48, 16, 0, b"".join(b"\x00" + r.tobytes() for r in g16))
    rgb16 = (gradient(64, 48).astype(">u2") * 257).astype(">u2")
    files["rgb16.png"] = png(64, 48, 16, 2, b"".join(b"\x00" + r.tobytes() for r in rgb16))
    files["cmyk.jpg"] = encoded(pic.convert("CMYK"), "JPEG", quality=90)
    files["palette.gif"] = encoded(pic.quantize(16), "GIF")
    files["gray.jpg"] = encoded(pic.convert("L"), "JPEG", quality=90)
    for name, data in files.items():
        (HERE / name).write_bytes(data)
    print(f"wrote {len(files)} files to {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
