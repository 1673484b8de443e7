"""Opaque, signed page tokens and cursors: clients can hold them but not forge or edit them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

_MAC_BYTES = 16


class TokenError(ValueError):
    """The token is malformed, tampered with, or was issued for another purpose."""


class TokenSigner:
    """Signs small JSON payloads with HMAC-SHA256 under a key that all replicas share."""

    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(secret.encode()).digest()

    def _mac(self, purpose: str, body: bytes) -> bytes:
        # hmac.digest: the one-shot C path (export signs a cursor per event).
        return hmac.digest(self._key, purpose.encode() + b"\0" + body, "sha256")[:_MAC_BYTES]

    def encode(self, purpose: str, payload: dict[str, Any]) -> str:
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        raw = self._mac(purpose, body) + body
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def decode(self, purpose: str, token: str) -> dict[str, Any]:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, TypeError) as exc:
            raise TokenError("not base64url") from exc
        mac, body = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
        if len(mac) != _MAC_BYTES or not hmac.compare_digest(mac, self._mac(purpose, body)):
            raise TokenError("signature does not match")
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise TokenError("not JSON") from exc
        if not isinstance(payload, dict):
            raise TokenError("not an object")
        return payload


def query_fingerprint(parts: Any) -> str:
    """A short hash of the request a token belongs to, so a token is not reused for another."""
    text = json.dumps(parts, separators=(",", ":"), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
