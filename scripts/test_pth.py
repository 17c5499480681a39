#!/usr/bin/env python3
"""Tests of scripts/pth.py: it reads state dicts in both layouts, and refuses a pickle that asks
for any global a tensor does not need, before anything runs.

The files are written opcode by opcode (torch is not needed), as `torch.save` writes them.
Run: var/venv/bin/python scripts/test_pth.py (scripts/test does).
"""

from __future__ import annotations

import io
import pickle
import struct
import sys
import tempfile
import unittest
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pth  # noqa: E402


def glob(module: str, name: str) -> bytes:
    """The GLOBAL opcode."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def text(s: str) -> bytes:
    """BINUNICODE."""
    raw = s.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def ints(values: tuple[int, ...]) -> bytes:
    """A tuple of small ints."""
    return b"(" + b"".join(b"J" + struct.pack("<i", v) for v in values) + b"t"


def tensor(key: str, numel: int, offset: int, size: tuple, stride: tuple) -> bytes:
    """`_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())` as pickled."""
    pid = b"(" + text("storage") + glob("torch", "FloatStorage") + text(key) + text("cpu")
    pid += b"J" + struct.pack("<i", numel) + b"N" + b"t" + b"Q"
    hooks = glob("collections", "OrderedDict") + b")R"
    args = b"(" + pid + b"J" + struct.pack("<i", offset) + ints(size) + ints(stride) + b"\x89"
    return glob("torch._utils", "_rebuild_tensor_v2") + args + hooks + b"tR"


def state_dict(entries: bytes) -> bytes:
    """An OrderedDict pickle holding `entries` (pairs of key and value opcodes)."""
    return b"\x80\x02" + glob("collections", "OrderedDict") + b")R(" + entries + b"u."


def legacy(obj_pickle: bytes, storages: dict[str, np.ndarray]) -> bytes:
    """The legacy layout: magic, protocol, system info, object, storage keys, storages."""
    out = pickle.dumps(pth.LEGACY_MAGIC, protocol=2) + pickle.dumps(pth.LEGACY_PROTOCOL, protocol=2)
    out += pickle.dumps({"protocol_version": 1001, "little_endian": True,
                         "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2)
    out += obj_pickle + pickle.dumps(list(storages), protocol=2)
    for data in storages.values():
        out += struct.pack("<q", data.size) + data.astype("<f4").tobytes()
    return out


def zipped(obj_pickle: bytes, storages: dict[str, np.ndarray]) -> bytes:
    """The zip layout of torch 1.6 and later."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", obj_pickle)
        z.writestr("archive/byteorder", "little")
        for key, data in storages.items():
            z.writestr(f"archive/data/{key}", data.astype("<f4").tobytes())
    return buf.getvalue()


# A 2 x 3 weight and, sharing its storage, a transposed view of it starting one element in.
STORAGE = np.arange(7, dtype=np.float32)
GOOD = state_dict(
    text("w") + tensor("0", 7, 0, (2, 3), (3, 1)) + text("v") + tensor("0", 7, 1, (3, 2), (1, 3))
)


def evil(marker: Path) -> bytes:
    """A state dict whose value is `os.system("touch MARKER")`, as a malicious .pth would hold."""
    call = glob("os", "system") + b"(" + text(f"touch {marker}") + b"tR"
    return state_dict(text("w") + call)


class ReadsStateDicts(unittest.TestCase):
    def check(self, data: bytes) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp, "model.pth")
            path.write_bytes(data)
            got = pth.load(path)
        self.assertEqual(list(got), ["w", "v"])
        np.testing.assert_array_equal(got["w"], [[0, 1, 2], [3, 4, 5]])
        np.testing.assert_array_equal(got["v"], [[1, 4], [2, 5], [3, 6]])
        self.assertEqual(got["w"].dtype, np.float32)

    def test_legacy(self) -> None:
        self.check(legacy(GOOD, {"0": STORAGE}))

    def test_zip(self) -> None:
        self.check(zipped(GOOD, {"0": STORAGE}))

    def test_truncated_storage_is_an_error(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp, "model.pth")
            path.write_bytes(legacy(GOOD, {"0": STORAGE})[:-4])
            with self.assertRaises(ValueError):
                pth.load(path)

    def test_a_tensor_beyond_its_storage_is_an_error(self) -> None:
        # as_strided would read whatever memory lies past the storage.
        beyond = state_dict(text("w") + tensor("0", 7, 5, (2, 3), (3, 1)))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp, "model.pth")
            path.write_bytes(legacy(beyond, {"0": STORAGE}))
            with self.assertRaises(ValueError):
                pth.load(path)


class RefusesOtherGlobals(unittest.TestCase):
    def refuses(self, layout) -> None:  # noqa: ANN001
        with tempfile.TemporaryDirectory() as tmp:
            marker = Path(tmp, "pwned")
            path = Path(tmp, "model.pth")
            path.write_bytes(layout(evil(marker), {}))
            with self.assertRaises(pth.UnsafePickle) as caught:
                pth.load(path)
            self.assertIn("os.system", str(caught.exception))
            self.assertFalse(marker.exists(), "the reader ran the pickle's command")

    def test_legacy(self) -> None:
        self.refuses(legacy)

    def test_zip(self) -> None:
        self.refuses(zipped)

    def test_the_crafted_pickle_is_live(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            marker = Path(tmp, "pwned")
            pickle.loads(evil(marker))
            self.assertTrue(marker.exists())

    def test_builtins_are_refused_too(self) -> None:
        data = state_dict(text("w") + glob("builtins", "eval") + b"(" + text("1") + b"tR")
        with self.assertRaises(pth.UnsafePickle):
            pth._Unpickler(io.BytesIO(data)).load()


if __name__ == "__main__":
    unittest.main()
