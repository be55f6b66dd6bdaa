"""Reader and writer for the IDX format of MNIST (raw or gzipped).

IDX layout (big-endian): two zero bytes, a type code, the number of dimensions D, then D uint32
sizes, then the data in C order. MNIST uses type 0x08 (uint8): images ``(N, 28, 28)``, labels ``(N,)``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
from pathlib import Path

import numpy as np

from digitlab.errors import DataError

# type code -> big-endian numpy dtype
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_FOR_KIND = {(np.dtype(v).kind, np.dtype(v).itemsize): k for k, v in IDX_DTYPES.items()}


def read_bytes(path: str | os.PathLike) -> bytes:
    """The file's content, decompressed when it is gzip (detected by its magic, not its name)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(
                f"{path}: the gzip stream is corrupt or truncated ({exc}); get a fresh copy of the file"
            ) from None
    return raw


def sha256_of_content(path: str | os.PathLike) -> str:
    """SHA-256 of the decompressed content, so a raw file and its .gz share one pin."""
    return hashlib.sha256(read_bytes(path)).hexdigest()


def parse_idx(raw: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode IDX bytes into a native-endian array; every inconsistency is a `DataError`."""
    if len(raw) < 4:
        raise DataError(f"{name}: only {len(raw)} bytes, too short to be an IDX file")
    zero, code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or code not in IDX_DTYPES or ndim == 0:
        raise DataError(
            f"{name}: wrong magic number 0x{raw[:4].hex()} (an IDX file starts with 00 00, a type code "
            f"among {sorted(hex(c) for c in IDX_DTYPES)} and a dimension count); is this an IDX file?"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{name}: truncated header ({len(raw)} bytes, {header} needed)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = IDX_DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) < expected:
        raise DataError(
            f"{name}: truncated file: the header promises shape {shape} ({expected} bytes) but the file "
            f"has {len(raw)} bytes; download or copy it again"
        )
    if len(raw) > expected:
        raise DataError(f"{name}: {len(raw) - expected} unexpected bytes after the data of shape {shape}")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw or .gz) into a numpy array."""
    return parse_idx(read_bytes(path), name=str(path))


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write ``array`` as IDX; gzip when ``compress`` or (by default) when the name ends in .gz."""
    path = Path(path)
    array = np.asarray(array)
    key = (array.dtype.kind, array.dtype.itemsize)
    if key not in _CODE_FOR_KIND:
        raise DataError(f"IDX cannot store dtype {array.dtype}; use uint8, int8, int16, int32, float32 or float64")
    code = _CODE_FOR_KIND[key]
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    body = header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        body = gzip.compress(body, mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return path
