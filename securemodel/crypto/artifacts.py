"""Encrypted model artifacts: AES-256-GCM files that are written once and authenticated on every read.

Security guarantees:
- Confidentiality: the file holds only the header below and AES-256-GCM ciphertext under the
  model's random 32-byte data key; nothing of the payload is readable without that key.
- Integrity: any change to the file (one flipped bit, truncation, a swapped header) or the wrong
  key makes ``read_artifact`` raise ``ArtifactTamperedError``; no unauthenticated byte is returned.
- Kind binding: the header (magic, format version, artifact kind) is GCM associated data and the
  reader supplies the kind it expects, so an artifact of one kind cannot be passed off as another.
- Nonces: 12 random bytes per write. With random nonces one key is safe for about 2**32 writes,
  far more than the handful of artifacts one model ever has.
- Write-once: ``write_artifact`` never replaces an existing file and never leaves a partial one.

File layout: ``b"SMAF" | version (1 byte) | len(kind) (1 byte) | kind (ASCII) | nonce (12) | ciphertext+tag``.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"SMAF"
FORMAT_VERSION = 1
KEY_BYTES = 32
NONCE_BYTES = 12
FILE_MODE = 0o640  # group-readable for a PVC shared through fsGroup; the content is ciphertext

_KIND = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


class ArtifactError(Exception):
    """An artifact could not be written or read."""


class ArtifactTamperedError(ArtifactError):
    """The artifact failed authentication: it was modified or truncated, or the key or kind is wrong."""

    def __init__(self, path: Path, detail: str | None = None) -> None:
        message = f"artifact {path} failed authentication: modified, truncated or wrong key"
        super().__init__(f"{message} ({detail})" if detail else message)
        self.path = path


class ArtifactExistsError(ArtifactError, FileExistsError):
    """The destination already exists; artifacts are never overwritten."""


def new_data_key() -> bytes:
    """A fresh random 256-bit data key for one model's artifacts."""
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def read_data_key(path: Path) -> bytes:
    """The data key from a mounted Secret file (exactly 32 raw bytes)."""
    key = Path(path).read_bytes()
    if len(key) != KEY_BYTES:
        raise ArtifactError(f"data key file {path} holds {len(key)} bytes, expected {KEY_BYTES} raw bytes")
    return key


def write_artifact(path: Path, payload: bytes, key: bytes, *, kind: str) -> str:
    """Encrypt ``payload`` into a new file at ``path`` and return ``sha256:<hex>`` of the file's bytes.

    The file appears complete or not at all: it is written and flushed under a temporary name in
    the same directory, then hard-linked to ``path``, which fails if ``path`` exists.
    """
    path = Path(path)
    header = _header(kind)
    nonce = os.urandom(NONCE_BYTES)
    blob = header + nonce + _cipher(key).encrypt(nonce, payload, header)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(blob)
            file.flush()
            os.fchmod(file.fileno(), FILE_MODE)
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            raise ArtifactExistsError(f"artifact {path} already exists; artifacts are never overwritten") from None
    finally:
        os.unlink(temporary)
    _fsync_directory(path.parent)
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def read_artifact(path: Path, key: bytes, *, kind: str) -> bytes:
    """Decrypt the artifact at ``path``, which must be of ``kind``; raise ``ArtifactTamperedError`` otherwise."""
    path = Path(path)
    expected = _header(kind)
    cipher = _cipher(key)
    blob = path.read_bytes()
    found = _parse_header(path, blob)
    if found != expected:
        raise ArtifactTamperedError(path, _header_mismatch(found, kind))
    nonce = blob[len(found) : len(found) + NONCE_BYTES]
    try:
        return cipher.decrypt(nonce, blob[len(found) + NONCE_BYTES :], expected)
    except InvalidTag:
        raise ArtifactTamperedError(path) from None


def _header(kind: str) -> bytes:
    if not _KIND.match(kind):
        raise ValueError(f"invalid artifact kind {kind!r}: lower-case letters, digits and '-', at most 63")
    encoded = kind.encode("ascii")
    return MAGIC + bytes([FORMAT_VERSION, len(encoded)]) + encoded


def _parse_header(path: Path, blob: bytes) -> bytes:
    """The header of ``blob``, checked only for shape; authenticity comes from the GCM tag."""
    fixed = len(MAGIC) + 2
    if len(blob) < fixed or not blob.startswith(MAGIC):
        raise ArtifactTamperedError(path, "no artifact header")
    end = fixed + blob[fixed - 1]
    if len(blob) < end + NONCE_BYTES + 16:
        raise ArtifactTamperedError(path, f"{len(blob)} bytes is shorter than any artifact")
    return blob[:end]


def _header_mismatch(found: bytes, kind: str) -> str:
    version = found[len(MAGIC)]
    if version != FORMAT_VERSION:
        return f"format version {version}, expected {FORMAT_VERSION}"
    found_kind = found[len(MAGIC) + 2 :].decode("ascii", errors="replace")
    return f"header says kind {found_kind!r}, expected {kind!r}"


def _cipher(key: bytes) -> AESGCM:
    if len(key) != KEY_BYTES:
        raise ValueError(f"a data key is {KEY_BYTES} bytes, got {len(key)}")
    return AESGCM(key)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
