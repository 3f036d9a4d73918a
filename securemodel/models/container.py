"""A small, pickle-free binary container for named numpy arrays plus a JSON header.

Layout (all integers little-endian)::

    b"SMDL"                 4 bytes  magic
    version                 1 byte   (1)
    header_length           4 bytes  unsigned
    header                  header_length bytes of UTF-8 JSON:
                            {"meta": {...}, "arrays": [[name, dtype, shape, offset, nbytes], ...]}
    blob                    the arrays' raw C-order bytes, back to back; offsets are relative to it

Like safetensors, loading parses JSON and copies raw bytes into numpy arrays of a
whitelisted dtype: no code is ever executed on load (contrast with pickle, which
``torch.load`` without ``weights_only`` would run). Every offset and shape is checked
against the blob before anything is read, so a truncated or malformed payload raises
:class:`ContainerError` instead of reading out of bounds. The header is compact JSON
because for small models it is a noticeable share of the stored bytes.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any, Final

import numpy as np

MAGIC: Final[bytes] = b"SMDL"
VERSION: Final[int] = 1
_PREFIX = struct.Struct("<4sBI")
# The only dtypes a container may hold (numpy dtype strings, little-endian).
DTYPES: Final[frozenset[str]] = frozenset({"<f4", "<f2", "|i1", "|u1", "<i4", "<i8"})


class ContainerError(ValueError):
    """The bytes are not a well-formed container."""


def pack(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    """Serialize ``meta`` (JSON-able) and ``arrays`` (dtypes in :data:`DTYPES`) into one payload."""
    entries: list[list[Any]] = []
    blobs: list[bytes] = []
    offset = 0
    for name, array in arrays.items():
        little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        dtype = little.dtype.str
        if dtype not in DTYPES:
            raise ContainerError(f"array {name!r}: dtype {array.dtype} is not storable")
        data = little.tobytes()
        entries.append([name, dtype, list(little.shape), offset, len(data)])
        blobs.append(data)
        offset += len(data)
    header = json.dumps({"meta": meta, "arrays": entries}, separators=(",", ":"), sort_keys=True).encode()
    return _PREFIX.pack(MAGIC, VERSION, len(header)) + header + b"".join(blobs)


def unpack(payload: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Parse a payload made by :func:`pack`; returns (meta, arrays) with arrays copied out of ``payload``."""
    if len(payload) < _PREFIX.size:
        raise ContainerError("payload too short to be a securemodel model")
    magic, version, header_length = _PREFIX.unpack_from(payload)
    if magic != MAGIC:
        raise ContainerError("not a securemodel model payload (bad magic)")
    if version != VERSION:
        raise ContainerError(f"unsupported model payload version {version}")
    start = _PREFIX.size + header_length
    if start > len(payload):
        raise ContainerError("truncated header")
    try:
        header = json.loads(payload[_PREFIX.size : start])
        meta, entries = header["meta"], header["arrays"]
    except (ValueError, KeyError, TypeError) as err:
        raise ContainerError(f"malformed header: {err}") from err
    blob = memoryview(payload)[start:]
    arrays: dict[str, np.ndarray] = {}
    for entry in entries:
        name, dtype, shape, offset, nbytes = _check_entry(entry, len(blob))
        arrays[name] = np.frombuffer(blob[offset : offset + nbytes], dtype=dtype).reshape(shape).copy()
    return meta, arrays


def _check_entry(entry: Any, blob_length: int) -> tuple[str, str, tuple[int, ...], int, int]:
    try:
        name, dtype, shape, offset, nbytes = entry
        shape = tuple(int(dim) for dim in shape)
    except (ValueError, TypeError) as err:
        raise ContainerError(f"malformed array entry {entry!r}") from err
    if dtype not in DTYPES:
        raise ContainerError(f"array {name!r}: dtype {dtype!r} is not allowed")
    if any(dim < 0 for dim in shape) or not isinstance(offset, int) or not isinstance(nbytes, int):
        raise ContainerError(f"array {name!r}: malformed shape or offset")
    if math.prod(shape) * np.dtype(dtype).itemsize != nbytes:
        raise ContainerError(f"array {name!r}: shape {shape} does not match {nbytes} bytes")
    if offset < 0 or offset + nbytes > blob_length:
        raise ContainerError(f"array {name!r}: extends past the end of the payload")
    return str(name), dtype, shape, offset, nbytes
