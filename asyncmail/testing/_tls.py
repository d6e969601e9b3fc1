"""Throw-away TLS material for a CaptureServer: a trustme CA and a cert for localhost/127.0.0.1."""

from __future__ import annotations

import shutil
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

import trustme

__all__ = ["TLSMaterial"]

#: Names the server certificate is valid for.
SERVER_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSMaterial:
    """A CA, the server context it signed, and the CA as a PEM file in a private temp dir."""

    ca: trustme.CA
    server_context: ssl.SSLContext
    ca_file: Path

    @classmethod
    def create(cls) -> TLSMaterial:
        """Make a fresh CA and server certificate, and write the CA to a temp file."""
        ca = trustme.CA()
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*SERVER_NAMES).configure_cert(server_context)
        directory = Path(tempfile.mkdtemp(prefix="asyncmail-ca-"))
        ca_file = directory / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        return cls(ca=ca, server_context=server_context, ca_file=ca_file)

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts only this CA, with hostname checking on."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def cleanup(self) -> None:
        """Remove the temp dir holding the CA file."""
        shutil.rmtree(self.ca_file.parent, ignore_errors=True)
