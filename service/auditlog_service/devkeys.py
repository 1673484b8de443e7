"""Dev-mode secrets: a JWT signing key with its JWKS, and a token secret, under .data/dev/.

Only for `make run` and tests: production configures its own JWKS (the private keys stay with
the platform's token issuer) and its own token secret.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

DEV_ISSUER = "auditlog-dev"
DEV_AUDIENCE = "auditlog"
SIGNING_KEY_FILE = "jwt-signing-key.pem"
JWKS_FILE = "jwks.json"
TOKEN_SECRET_FILE = "token-secret"
CHECKPOINT_KEY_FILE = "checkpoint-signing-key.pem"
KEY_ID_FILE = "jwt-key-id"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(private_key: Ed25519PrivateKey, key_id: str) -> dict[str, str]:
    raw = private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw), "kid": key_id, "alg": "EdDSA"}


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


@dataclass(frozen=True)
class DevKeys:
    """The dev secrets of one folder."""

    folder: Path

    @property
    def jwks_file(self) -> Path:
        return self.folder / JWKS_FILE

    @property
    def checkpoint_key_file(self) -> Path:
        return self.folder / CHECKPOINT_KEY_FILE

    @property
    def token_secret(self) -> str:
        return (self.folder / TOKEN_SECRET_FILE).read_text().strip()

    @property
    def key_id(self) -> str:
        return (self.folder / KEY_ID_FILE).read_text().strip()

    def signing_key(self) -> Ed25519PrivateKey:
        key = serialization.load_pem_private_key(
            (self.folder / SIGNING_KEY_FILE).read_bytes(), password=None
        )
        assert isinstance(key, Ed25519PrivateKey)
        return key

    def mint(
        self,
        tenant: str,
        scopes: list[str],
        *,
        ttl_s: float = 3600,
        subject: str = "dev",
        not_before: float | None = None,
    ) -> str:
        """A dev token signed with this folder's key."""
        now = time.time()
        claims = {
            "iss": DEV_ISSUER,
            "aud": DEV_AUDIENCE,
            "sub": subject,
            "tenant": tenant,
            "scope": " ".join(scopes),
            "iat": int(now),
            "exp": int(now + ttl_s),
            "jti": uuid.uuid4().hex,
        }
        if not_before is not None:
            claims["nbf"] = int(not_before)
        return jwt.encode(
            claims, self.signing_key(), algorithm="EdDSA", headers={"kid": self.key_id}
        )


def ensure_dev_keys(folder: Path) -> DevKeys:
    """Creates the dev secrets in `folder` once; later calls reuse them."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = DevKeys(folder)
    if not (folder / SIGNING_KEY_FILE).exists():
        private_key = Ed25519PrivateKey.generate()
        key_id = f"dev-{uuid.uuid4().hex[:8]}"
        _write_private(
            folder / SIGNING_KEY_FILE,
            private_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        (folder / KEY_ID_FILE).write_text(key_id + "\n")
        (folder / JWKS_FILE).write_text(
            json.dumps({"keys": [public_jwk(private_key, key_id)]}, indent=2) + "\n"
        )
    if not (folder / TOKEN_SECRET_FILE).exists():
        _write_private(folder / TOKEN_SECRET_FILE, (secrets.token_urlsafe(32) + "\n").encode())
    if not (folder / CHECKPOINT_KEY_FILE).exists():
        _write_private(
            folder / CHECKPOINT_KEY_FILE,
            Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
    return keys


@dataclass(frozen=True)
class DevTls:
    """A dev certificate authority and what it signed, as PEM files in one folder."""

    folder: Path

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def server_cert(self) -> Path:
        return self.folder / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.folder / "server.key"

    @property
    def client_cert(self) -> Path:
        return self.folder / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.folder / "client.key"


def _certificate(
    subject: str,
    key: Ed25519PrivateKey | Any,
    issuer: tuple[str, Any] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> Any:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = (
        (x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer[0])]), issuer[1])
        if issuer
        else (name, key)
    )
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def ensure_dev_tls(folder: Path, *, ca_name: str = "auditlog dev CA") -> DevTls:
    """A CA, a server certificate for localhost/127.0.0.1/::1 and a client certificate.

    ECDSA P-256 keys: what every gRPC and browser TLS stack accepts.
    """
    from cryptography.hazmat.primitives.asymmetric import ec

    tls = DevTls(folder)
    if tls.ca_file.exists():
        return tls
    folder.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _certificate(ca_name, ca_key, None, ca=True)
    for stem, subject, server in (
        ("server", "localhost", True),
        ("client", "auditlog-client", False),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(subject, key, (ca_name, ca_key), server=server)
        _write_private(
            folder / f"{stem}.key",
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        )
        (folder / f"{stem}.pem").write_bytes(cert.public_bytes(pem))
    tls.ca_file.write_bytes(ca_cert.public_bytes(pem))
    return tls
