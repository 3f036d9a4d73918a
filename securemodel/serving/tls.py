"""Mutual TLS for the serve worker, following the certificate files of a mounted Secret without a restart.

Security guarantees:
- Every connection must present a client certificate that chains to a CA in ``ca.crt``, is within
  its validity period and is meant for ``clientAuth``; otherwise the handshake fails.
- Only TLS 1.3, with session tickets off: every connection is a full handshake, verified against
  the trust store in force when it is made. (TLS 1.2 is refused because Python cannot turn off
  its session-ID cache: a TLS 1.2 client could resume a session for up to two hours after its
  certificate expired or its CA was dropped.)
- Rotation: the files are re-read on a timer. Changed, valid files become a fresh ``SSLContext``
  that every later handshake uses (the listening socket's context hands each new connection to
  it from its SNI callback); connections already open carry on untouched. Files that fail to
  load (for instance read half-way through an update) are ignored and the previous context stays.
  The context is built from exactly the bytes that were read and fingerprinted (OpenSSL reads them
  from anonymous memory files, never again from the volume), so what is in use is what was checked.
- Nothing read from the key file is logged; logs name the certificate's subject, serial and expiry.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509

from securemodel.crypto.pki import CA_CERT, TLS_CERT, TLS_KEY
from securemodel.serving.metrics import ServingMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Loaded:
    context: ssl.SSLContext
    fingerprint: bytes
    certificate: x509.Certificate


class ServerTLS:
    """The server side of mutual TLS, read from ``tls_dir`` (``tls.crt``, ``tls.key``, ``ca.crt``).

    Pass ``context`` to the listening socket once; call ``refresh`` on a timer to pick up new
    files (``ServingServer`` does). Construction fails if the files cannot be loaded.
    """

    def __init__(self, tls_dir: Path, metrics: ServingMetrics) -> None:
        self._dir = Path(tls_dir)
        self._metrics = metrics
        files = self._read()
        self._loaded = self._load(files)
        self.context = self._loaded.context
        self.context.sni_callback = self._select
        self._announce()

    @property
    def not_after(self) -> datetime:
        """Expiry of the server certificate in use."""
        return self._loaded.certificate.not_valid_after_utc

    def refresh(self) -> bool:
        """Load the files if they changed; return whether new ones are now in use."""
        try:
            files = self._read()
            if _fingerprint(files) == self._loaded.fingerprint:
                return False
            self._loaded = self._load(files)
        except (OSError, ValueError) as err:  # ssl.SSLError is an OSError
            self._metrics.tls_reloads.labels("rejected").inc()
            log.warning(
                "ignoring the TLS files in %s: %s; still using the certificate valid until %s",
                self._dir,
                err,
                self.not_after,
            )
            return False
        self._metrics.tls_reloads.labels("loaded").inc()
        self._announce()
        return True

    def _select(self, connection: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        """SNI callback (also called without SNI): hand the handshake to the newest context."""
        if connection.context is not self._loaded.context:
            connection.context = self._loaded.context

    def _read(self) -> tuple[bytes, bytes, bytes]:
        directory = self._dir
        return (
            (directory / TLS_CERT).read_bytes(),
            (directory / TLS_KEY).read_bytes(),
            (directory / CA_CERT).read_bytes(),
        )

    def _load(self, files: tuple[bytes, bytes, bytes]) -> _Loaded:
        cert_pem, _, ca_pem = files
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.verify_mode = ssl.CERT_REQUIRED
        context.verify_flags |= ssl.VERIFY_X509_STRICT
        context.num_tickets = 0
        with _memory_file(files[0]) as cert_path, _memory_file(files[1]) as key_path:
            context.load_cert_chain(cert_path, key_path)
        context.load_verify_locations(cadata=ca_pem.decode("ascii"))
        return _Loaded(context, _fingerprint(files), x509.load_pem_x509_certificate(cert_pem))

    def _announce(self) -> None:
        cert = self._loaded.certificate
        self._metrics.certificate_loaded(cert.not_valid_after_utc)
        log.info(
            "serving with certificate %s (serial %x, valid until %s) from %s",
            cert.subject.rfc4514_string(),
            cert.serial_number,
            cert.not_valid_after_utc.isoformat(),
            self._dir,
        )


def client_context(tls_dir: Path) -> ssl.SSLContext:
    """A client context from a client Secret's files (``tls.crt``, ``tls.key``, ``ca.crt``).

    It verifies the server's certificate and name as any HTTPS client does.
    """
    tls_dir = Path(tls_dir)
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls_dir / CA_CERT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(tls_dir / TLS_CERT, tls_dir / TLS_KEY)
    return context


def _fingerprint(files: tuple[bytes, ...]) -> bytes:
    digest = hashlib.sha256()
    for content in files:
        digest.update(len(content).to_bytes(8, "big"))
        digest.update(content)
    return digest.digest()


@contextlib.contextmanager
def _memory_file(content: bytes) -> Iterator[str]:
    """A path OpenSSL can open that holds ``content``: an anonymous in-memory file (no copy of a key on disk)."""
    fd = os.memfd_create("tls", os.MFD_CLOEXEC)
    try:
        os.write(fd, content)
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)
