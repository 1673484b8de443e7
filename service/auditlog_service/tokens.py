"""Opaque, signed page tokens and cursors: clients can hold them but not forge or edit them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

_MAC_BYTES = 16


class TokenError(ValueError):
    """The token is malformed, tampered with, or was issued for another purpose."""


class TokenSigner:
    """Signs small JSON payloads with HMAC-SHA256 under a key that all replicas share."""

    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(secret.encode()).digest()

    def _mac(self, purpose: str, body: bytes) -> bytes:
        # hmac.digest: the one-shot C path.
        return hmac.digest(self._key, _prefix(purpose) + body, "sha256")[:_MAC_BYTES]

    def encode(self, purpose: str, payload: dict[str, Any]) -> str:
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        return _token(self._mac(purpose, body), body)

    def encoder_of(self, purpose: str, payload: dict[str, Any], field: str) -> Callable[[int], str]:
        """encode(purpose, {**payload, field: n}) as a function of the integer n, its JSON around
        n made once: an export signs a cursor per event (7-9 -> 2.6 us a token here)."""
        marker = b"-4711000000000000000"  # an integer no payload holds (else: no shortcut)
        text = json.dumps({**payload, field: int(marker)}, separators=(",", ":"), sort_keys=True)
        parts = text.encode().split(marker)
        if len(parts) != 2:
            return lambda n: self.encode(purpose, {**payload, field: n})
        before, after = parts
        # The MAC's state after the key and the purpose, copied per token: a third cheaper
        # than hmac.digest, which starts from the key each time (2.6 against 3.7 us a token).
        keyed = hmac.new(self._key, _prefix(purpose), "sha256")

        def sign(n: int) -> str:
            body = b"%s%d%s" % (before, n, after)
            mac = keyed.copy()
            mac.update(body)
            return _token(mac.digest()[:_MAC_BYTES], body)

        return sign

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


def _prefix(purpose: str) -> bytes:
    """What the MAC covers before a token's body: a token of one purpose is no other's."""
    return purpose.encode() + b"\0"


def _token(mac: bytes, body: bytes) -> str:
    return base64.urlsafe_b64encode(mac + body).rstrip(b"=").decode()


def query_fingerprint(parts: Any) -> str:
    """A short hash of the request a token belongs to, so a token is not reused for another."""
    text = json.dumps(parts, separators=(",", ":"), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
