"""Encrypted model artifacts: AES-256-GCM files that are written once and authenticated on every read.

Security guarantees:
- Confidentiality: the file holds only the header below and AES-256-GCM ciphertext under the
  model's random 32-byte data key; nothing of the payload is readable without that key.
- Integrity: any change to the file (one flipped bit, truncation, a swapped header) or the wrong
  key makes ``read_artifact`` raise ``ArtifactTamperedError``; no unauthenticated byte is returned.
- Binding: an artifact is written for a :class:`Binding`, its kind plus what it is (for a model:
  the SecureModel's uid, its training version, its version and its encoding; see
  :func:`securemodel.models.serialization.model_binding`). The header is the binding's canonical
  encoding and is GCM associated data, but the reader never trusts it: ``read_artifact`` takes
  the binding it expects and authenticates the ciphertext under THAT binding, so a genuine
  artifact of another model, version or encoding (an older version copied over the current one,
  the fp32 file at the compressed path) is refused. The header only makes the refusal readable
  (``ArtifactBindingError`` says what the file was written for, and whether that claim is itself
  authentic under the key).
- Digest: ``read_artifact(..., digest=...)`` also refuses a file whose SHA-256 is not the one
  recorded when it was written (``write_artifact`` returns it), checked on the very bytes decrypted.
- Nonces: 12 random bytes per write. With random nonces one key is safe for about 2**32 writes,
  far more than the handful of artifacts one model ever has.
- Write-once: ``write_artifact`` never replaces an existing file and never leaves a partial one.

File layout (format 2): ``b"SMAF" | 2 (1 byte) | n (2 bytes, big-endian) | binding (n bytes:
canonical JSON, {"kind": ..., <field>: <value>, ...} with sorted keys) | nonce (12) | ciphertext+tag``.
Files of format 1 (kind only) are refused.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC: Final = b"SMAF"
FORMAT_VERSION: Final = 2
KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
FILE_MODE: Final = 0o640  # group-readable for a PVC shared through fsGroup; the content is ciphertext

_KIND = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_FIELD = re.compile(r"^[a-z][a-zA-Z0-9]{0,31}$")
_VALUE = re.compile(r"^[A-Za-z0-9._:-]{1,253}$")
_PREFIX = len(MAGIC) + 1 + 2  # magic, format version, binding length
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class ArtifactError(Exception):
    """An artifact could not be written or read."""


class ArtifactRejectedError(ArtifactError):
    """The file is not the artifact the reader asked for; nothing of it may be used."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = path


class ArtifactTamperedError(ArtifactRejectedError):
    """The artifact failed authentication: it was modified or truncated, or the key or binding is wrong."""

    def __init__(self, path: Path, detail: str | None = None) -> None:
        message = f"artifact {path} failed authentication: modified, truncated or wrong key"
        super().__init__(path, f"{message} ({detail})" if detail else message)


class ArtifactBindingError(ArtifactTamperedError):
    """The artifact was written for another binding (model, version, encoding or kind) than the one expected."""

    def __init__(self, path: Path, found: Binding, expected: Binding, *, authentic: bool) -> None:
        genuine = "the header is genuine: it authenticates under this key"
        claim = genuine if authentic else "the header fails authentication"
        ArtifactRejectedError.__init__(
            self,
            path,
            f"artifact {path} was written for {found.describe()} but this reader expects {expected.describe()} "
            f"({found.differences(expected)}; {claim})",
        )
        self.found, self.expected, self.authentic = found, expected, authentic


class ArtifactDigestError(ArtifactRejectedError):
    """The file's SHA-256 is not the digest recorded for it."""


class ArtifactExistsError(ArtifactError, FileExistsError):
    """The destination already exists; artifacts are never overwritten."""


@dataclass(frozen=True)
class Binding:
    """What an artifact is: its kind and named fields (e.g. uid, training, version, encoding).

    Its canonical encoding (:meth:`header`) is the file's header and the GCM associated data.
    """

    kind: str
    fields: tuple[tuple[str, str], ...] = field(default=())

    @classmethod
    def of(cls, kind: str, fields: Mapping[str, str] | None = None) -> Binding:
        """A binding of ``kind`` and ``fields``; raises ValueError for a malformed kind, field or value."""
        if not _KIND.match(kind):
            raise ValueError(f"invalid artifact kind {kind!r}: lower-case letters, digits and '-', at most 63")
        for name, value in (fields or {}).items():
            if not _FIELD.match(name) or name == "kind":
                raise ValueError(f"invalid artifact binding field {name!r}: a letter, then letters or digits")
            if not isinstance(value, str) or not _VALUE.match(value):
                raise ValueError(f"invalid value {value!r} of artifact binding field {name!r}")
        return cls(kind, tuple(sorted((fields or {}).items())))

    def header(self) -> bytes:
        """``MAGIC | FORMAT_VERSION | length | canonical JSON``: the file's header and the GCM associated data."""
        encoded = json.dumps({"kind": self.kind, **dict(self.fields)}, sort_keys=True, separators=(",", ":"))
        body = encoded.encode("ascii")
        return MAGIC + bytes([FORMAT_VERSION]) + len(body).to_bytes(2, "big") + body

    def describe(self) -> str:
        """E.g. ``model (encoding compressed, training v1a2b3c4d, uid 0c1d..., version v5e6f7a8b)``."""
        if not self.fields:
            return self.kind
        return f"{self.kind} ({', '.join(f'{name} {value}' for name, value in self.fields)})"

    def differences(self, expected: Binding) -> str:
        """The fields in which this binding differs from ``expected``, in words."""
        found, wanted = {"kind": self.kind, **dict(self.fields)}, {"kind": expected.kind, **dict(expected.fields)}
        names = sorted(name for name in found.keys() | wanted.keys() if found.get(name) != wanted.get(name))
        return "; ".join(f"{name}: {found.get(name, '(none)')}, expected {wanted.get(name, '(none)')}" for name in names)


def new_data_key() -> bytes:
    """A fresh random 256-bit data key for one model's artifacts."""
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def read_data_key(path: Path) -> bytes:
    """The data key from a mounted Secret file (exactly 32 raw bytes)."""
    key = Path(path).read_bytes()
    if len(key) != KEY_BYTES:
        raise ArtifactError(f"data key file {path} holds {len(key)} bytes, expected {KEY_BYTES} raw bytes")
    return key


def write_artifact(
    path: Path, payload: bytes, key: bytes, *, kind: str, binding: Mapping[str, str] | None = None
) -> str:
    """Encrypt ``payload`` bound to ``kind`` and ``binding`` into a new file at ``path``; return its ``sha256:<hex>``.

    The file appears complete or not at all: it is written and flushed under a temporary name in
    the same directory, then hard-linked to ``path``, which fails if ``path`` exists.
    """
    path = Path(path)
    header = Binding.of(kind, binding).header()
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
    return file_digest(blob)


def read_artifact(
    path: Path,
    key: bytes,
    *,
    kind: str,
    binding: Mapping[str, str] | None = None,
    digest: str | None = None,
) -> bytes:
    """Decrypt the artifact at ``path``, which must have been written for exactly ``kind`` and ``binding``.

    With ``digest`` (``sha256:<hex>``), the file must also have that digest. Raises
    ``ArtifactBindingError`` (written for another binding), ``ArtifactDigestError`` or
    ``ArtifactTamperedError``; no byte of a refused file is returned.
    """
    path = Path(path)
    expected = Binding.of(kind, binding)
    header = expected.header()
    cipher = _cipher(key)
    if digest is not None and not _DIGEST.match(digest):
        raise ValueError(f"invalid artifact digest {digest!r}: expected sha256:<64 lower-case hex digits>")
    blob = path.read_bytes()
    found_header = _split_header(path, blob)
    nonce, sealed = blob[len(found_header) : len(found_header) + NONCE_BYTES], blob[len(found_header) + NONCE_BYTES :]
    if found_header != header:
        found = _parse_binding(path, found_header)
        raise ArtifactBindingError(path, found, expected, authentic=_opens(cipher, nonce, sealed, found_header))
    if digest is not None and not hmac.compare_digest(file_digest(blob), digest):
        raise ArtifactDigestError(
            path, f"artifact {path} has digest {file_digest(blob)}, not the {digest} recorded when it was written"
        )
    try:
        return cipher.decrypt(nonce, sealed, header)
    except InvalidTag:
        raise ArtifactTamperedError(path) from None


def file_digest(blob: bytes) -> str:
    """``sha256:<hex>`` of a file's bytes, as ``write_artifact`` returns it."""
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def _split_header(path: Path, blob: bytes) -> bytes:
    """The header of ``blob``, checked for shape only; authenticity comes from the GCM tag."""
    if len(blob) < _PREFIX or not blob.startswith(MAGIC):
        raise ArtifactTamperedError(path, "no artifact header")
    version = blob[len(MAGIC)]
    if version != FORMAT_VERSION:
        raise ArtifactTamperedError(path, f"format version {version}, expected {FORMAT_VERSION}")
    end = _PREFIX + int.from_bytes(blob[len(MAGIC) + 1 : _PREFIX], "big")
    if len(blob) < end + NONCE_BYTES + TAG_BYTES:
        raise ArtifactTamperedError(path, f"{len(blob)} bytes is shorter than any artifact")
    return blob[:end]


def _parse_binding(path: Path, header: bytes) -> Binding:
    """The binding a header claims (unauthenticated: only used to explain a refusal).

    Only the canonical encoding names a binding: a header that decodes to one but is not byte for byte what
    ``write_artifact`` writes for it (whitespace, key order) is malformed, so a header that differs from the
    expected one is never reported as the expected binding.
    """
    try:
        fields = json.loads(header[_PREFIX:].decode("ascii"))
        kind = fields.pop("kind")
        binding = Binding.of(kind, fields)
    except (UnicodeDecodeError, ValueError, AttributeError, KeyError, TypeError):
        raise ArtifactTamperedError(path, "malformed artifact header") from None
    if binding.header() != header:
        raise ArtifactTamperedError(path, "malformed artifact header: not the canonical encoding of a binding")
    return binding


def _opens(cipher: AESGCM, nonce: bytes, sealed: bytes, header: bytes) -> bool:
    """Whether the ciphertext authenticates under ``header`` (the plaintext is discarded)."""
    try:
        cipher.decrypt(nonce, sealed, header)
    except InvalidTag:
        return False
    return True


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
