"""Read a PyTorch state dict (.pth) into numpy arrays without torch, and without running its code.

A .pth is a pickle, and unpickling calls whatever globals the file names: `torch.load` without
`weights_only` on a file from a stranger runs the stranger's code. This reader's unpickler resolves
only the few globals a state dict of tensors needs (`ALLOWED`); any other global is refused with
`UnsafePickle` before it is looked up, so nothing the file names is imported or called.

Two layouts, both written by `torch.save`:

- legacy (before torch 1.6, or `_use_new_zipfile_serialization=False`): five pickles in a row -
  the magic number, the protocol version, system info (byte order, type sizes), the object
  (tensors refer to storages through persistent ids `('storage', type, key, location, numel)`),
  then the list of storage keys - followed by each storage in that order, as an 8-byte
  little-endian element count and the raw little-endian elements;
- zip (torch 1.6 and later): `ARCHIVE/data.pkl` holds the object with the same persistent ids,
  and `ARCHIVE/data/KEY` each storage's raw bytes.

Tensors come back as numpy arrays (copies, C-contiguous) in a dict, in the file's order.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np

# torch's legacy-format magic number, the first pickle of such a file.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# The storage types a state dict's tensors are pickled with, and their elements' dtype.
STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class UnsafePickle(pickle.UnpicklingError):
    """The pickle names a global outside ALLOWED: refused, nothing imported or called."""


class StorageType:
    """Stands in for `torch.FloatStorage` and its kin: only the element type is kept."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype = STORAGE_DTYPES[name]


class Storage:
    """A storage named by a persistent id; its data is filled in once the bytes are read."""

    def __init__(self, dtype: np.dtype, numel: int) -> None:
        self.dtype = dtype
        self.numel = numel
        self.data: np.ndarray | None = None


class Tensor:
    """`_rebuild_tensor_v2`'s arguments, turned into an array once the storages are read."""

    def __init__(self, storage: Storage, offset: int, size: tuple, stride: tuple) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def array(self) -> np.ndarray:
        """The tensor's elements as a C-contiguous numpy array."""
        data = self.storage.data
        if data is None:
            raise ValueError("a tensor's storage is missing from the file")
        if 0 in self.size:
            return np.zeros(self.size, data.dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if self.offset < 0 or min(self.stride, default=0) < 0 or last >= data.size:
            raise ValueError(f"a tensor of size {self.size} lies outside its storage")
        item = data.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset:], shape=self.size, strides=[s * item for s in self.stride],
            writeable=False,
        )
        return view.copy(order="C")  # not ascontiguousarray: it makes a 0-d tensor 1-d


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, *_):  # noqa: ANN001, ANN202
    """torch._utils._rebuild_tensor_v2, keeping only what an array needs."""
    if not isinstance(storage, Storage):
        raise pickle.UnpicklingError("a tensor's storage is not a storage")
    return Tensor(storage, offset, size, stride)


def _ordered_dict(*args):  # noqa: ANN002, ANN202
    """collections.OrderedDict, behind a function of ours: a pickle's BUILD on what find_class
    returns can set attributes, and must not reach a class the whole process uses."""
    return collections.OrderedDict(*args)


# (module, name) -> a function making what the unpickler gives for it. Nothing else resolves.
ALLOWED = {
    ("collections", "OrderedDict"): lambda: _ordered_dict,
    ("torch._utils", "_rebuild_tensor_v2"): lambda: _rebuild_tensor_v2,
    **{("torch", name): (lambda name=name: StorageType(name)) for name in STORAGE_DTYPES},
}


class _Unpickler(pickle.Unpickler):
    """Resolves ALLOWED globals only; collects the storages its persistent ids name."""

    def __init__(self, file: io.BufferedIOBase) -> None:
        super().__init__(file)
        self.storages: dict[str, Storage] = {}

    def find_class(self, module: str, name: str):  # noqa: ANN201
        try:
            make = ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickle(
                f"refusing to load global {module}.{name}: a state dict of tensors needs only "
                f"{', '.join(sorted(f'{m}.{n}' for m, n in ALLOWED if m != 'torch'))} "
                "and torch's storage types"
            ) from None
        return make()

    def persistent_load(self, pid: object) -> Storage:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.80}")
        kind, key, numel = pid[1], str(pid[2]), pid[4]
        if not isinstance(kind, StorageType) or not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError(f"unexpected storage {pid!r:.80}")
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views (torch before 1.0) are not supported")
        storage = self.storages.get(key)
        if storage is None:
            storage = self.storages[key] = Storage(kind.dtype, numel)
        return storage


def _flatten(obj: object) -> dict[str, np.ndarray]:
    """The tensors of a state dict (or of a {"state_dict": ...} checkpoint) as arrays."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"expected a state dict, found a {type(obj).__name__}")
    return {str(k): v.array() for k, v in obj.items() if isinstance(v, Tensor)}


def _load_legacy(f: io.BufferedIOBase) -> dict[str, np.ndarray]:
    def pickled() -> _Unpickler:
        return _Unpickler(f)

    if pickled().load() != LEGACY_MAGIC:
        raise ValueError("not a PyTorch file (wrong magic number)")
    if pickled().load() != LEGACY_PROTOCOL:
        raise ValueError("unsupported PyTorch legacy protocol version")
    info = pickled().load()
    if not (isinstance(info, dict) and info.get("little_endian", False)):
        raise ValueError("only little-endian files are supported")
    reader = pickled()
    obj = reader.load()
    keys = pickled().load()
    if not isinstance(keys, list):
        raise ValueError("the storage key list is not a list")
    for key in keys:
        storage = reader.storages.get(str(key))
        if storage is None:
            raise ValueError(f"storage {key} is listed but no tensor uses it")
        (numel,) = struct.unpack("<q", f.read(8))
        raw = f.read(numel * storage.dtype.itemsize)
        if numel != storage.numel or len(raw) != numel * storage.dtype.itemsize:
            raise ValueError(f"storage {key} is truncated or its size disagrees")
        storage.data = np.frombuffer(raw, storage.dtype)
    return _flatten(obj)


def _load_zip(z: zipfile.ZipFile) -> dict[str, np.ndarray]:
    names = z.namelist()
    pkl = next((n for n in names if n.endswith("/data.pkl") and n.count("/") == 1), None)
    if pkl is None:
        raise ValueError("a zip without ARCHIVE/data.pkl is not a PyTorch file")
    prefix = pkl[: -len("data.pkl")]
    byteorder = prefix + "byteorder"
    if byteorder in names and z.read(byteorder).strip() != b"little":
        raise ValueError("only little-endian files are supported")
    reader = _Unpickler(io.BytesIO(z.read(pkl)))
    obj = reader.load()
    for key, storage in reader.storages.items():
        raw = z.read(f"{prefix}data/{key}")
        if len(raw) != storage.numel * storage.dtype.itemsize:
            raise ValueError(f"storage {key} has {len(raw)} bytes, expected "
                             f"{storage.numel * storage.dtype.itemsize}")
        storage.data = np.frombuffer(raw, storage.dtype)
    return _flatten(obj)


def load(path: Path | str) -> dict[str, np.ndarray]:
    """The tensors of the state dict in a .pth file, by name, as numpy arrays.

    Raises UnsafePickle if the file names any global outside ALLOWED, ValueError if it is not a
    state dict in one of the two layouts.
    """
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            return _load_zip(z)
    with path.open("rb") as f:
        return _load_legacy(f)
