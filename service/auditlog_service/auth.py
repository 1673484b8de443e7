"""Who is calling: bearer JWTs verified against JWKS keys, turned into a Principal."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from jwt import PyJWK, PyJWKClient, PyJWKSet

from auditlog.v1 import enums_pb2

from .errors import AuditLogError, Unauthenticated

log = logging.getLogger(__name__)

# Asymmetric algorithms only: a verifier that holds only public keys can never be fooled into
# checking an HMAC made with a public key as its secret ("algorithm confusion"), and "none" is
# never accepted.
ALLOWED_ALGORITHMS = ("EdDSA", "ES256", "RS256")
ANY_TENANT = "*"

# The scopes of the contract: each RPC names the one it needs in its comment.
SCOPE_WRITE = "events:write"
SCOPE_READ = "events:read"
SCOPE_TAIL = "sessions:tail"
SCOPE_EXPORT = "events:export"
SCOPE_ADMIN = "tenant:admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified caller: who (subject), for which tenant (or ANY_TENANT), allowed to do what."""

    subject: str
    tenant: str
    scopes: frozenset[str]
    expires_at: float  # seconds since the epoch

    def covers(self, tenant_id: str) -> bool:
        return self.tenant == ANY_TENANT or self.tenant == tenant_id


@dataclass(frozen=True)
class AuthSettings:
    issuer: str
    audience: str
    jwks_file: str = ""
    jwks_url: str = ""
    leeway_s: float = 30.0
    algorithms: tuple[str, ...] = ALLOWED_ALGORITHMS
    # A JWKS URL is fetched again at most this often when a token names an unknown key id.
    jwks_refresh_min_interval_s: float = 30.0


def _unauthenticated(
    why: str, reason: enums_pb2.ErrorReason.ValueType = enums_pb2.ERROR_REASON_UNAUTHENTICATED
) -> AuditLogError:
    return Unauthenticated(why, reason)


class _KeySource:
    """The verification keys by key id, from a JWKS file or URL."""

    def __init__(self, settings: AuthSettings) -> None:
        self._settings = settings
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at = -1e9
        self._lock = asyncio.Lock()
        self._url_client = (
            PyJWKClient(settings.jwks_url, cache_jwk_set=False) if settings.jwks_url else None
        )
        if settings.jwks_file:
            self._keys = self._index(PyJWKSet.from_json(Path(settings.jwks_file).read_text()))

    @staticmethod
    def _index(jwk_set: PyJWKSet) -> dict[str, PyJWK]:
        keys = {}
        for key in jwk_set.keys:
            if key.key_id:
                keys[key.key_id] = key
        return keys

    async def key(self, key_id: str) -> PyJWK | None:
        if key_id in self._keys or self._url_client is None:
            return self._keys.get(key_id)
        async with self._lock:
            now = time.monotonic()
            if (
                key_id not in self._keys
                and now - self._fetched_at >= self._settings.jwks_refresh_min_interval_s
            ):
                # An unknown key id is how a key rotation shows: fetch the set again (in a
                # thread, PyJWKClient is blocking), but not more often than the minimum interval,
                # so that tokens with made-up key ids cannot make us hammer the key server.
                self._fetched_at = now
                client = self._url_client
                try:
                    jwk_set = await asyncio.to_thread(client.get_jwk_set, True)
                    self._keys = self._index(jwk_set)
                except jwt.PyJWKClientError as exc:
                    log.warning("JWKS fetch failed: %s", exc)
        return self._keys.get(key_id)


class TokenVerifier:
    """Verifies bearer tokens; remembers verified ones (by a hash of the token) until expiry.

    The cache is what keeps authentication cheap: a signature check costs 50-500 µs, a dict
    lookup well under one, and a caller reuses its token for many calls.
    """

    def __init__(self, settings: AuthSettings, *, cache_size: int = 10_000) -> None:
        if not settings.jwks_file and not settings.jwks_url:
            raise ValueError("JWT verification needs a JWKS file or URL")
        unknown = set(settings.algorithms) - set(ALLOWED_ALGORITHMS)
        if unknown:
            raise ValueError(f"algorithms not allowed: {sorted(unknown)}")
        self._settings = settings
        self._keys = _KeySource(settings)
        self._cache: OrderedDict[bytes, Principal] = OrderedDict()
        self._cache_size = cache_size

    async def verify(self, authorization: str | None) -> Principal:
        """The principal of an `authorization` metadata value; Unauthenticated if it is bad.

        Messages name what is wrong, never the token or a key.
        """
        if not authorization:
            raise _unauthenticated("missing bearer token (authorization: Bearer <JWT>)")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthenticated("the authorization metadata must be 'Bearer <JWT>'")
        token = token.strip()
        digest = hashlib.sha256(token.encode()).digest()
        now = time.time()
        cached = self._cache.get(digest)
        if cached is not None:
            if cached.expires_at + self._settings.leeway_s > now:
                self._cache.move_to_end(digest)
                return cached
            del self._cache[digest]
            raise _unauthenticated("the token has expired", enums_pb2.ERROR_REASON_TOKEN_EXPIRED)
        principal = await self._verify(token, now)
        self._cache[digest] = principal
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return principal

    async def _verify(self, token: str, now: float) -> Principal:
        settings = self._settings
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _unauthenticated("the bearer token is not a JWT") from None
        algorithm = header.get("alg")
        if algorithm not in settings.algorithms:
            raise _unauthenticated(
                f"token algorithm {str(algorithm)[:20]!r} is not allowed "
                f"(allowed: {', '.join(settings.algorithms)})"
            )
        key = await self._keys.key(str(header.get("kid", "")))
        if key is None:
            raise _unauthenticated("the token's key id is not among the trusted keys")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[algorithm],
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=settings.leeway_s,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise _unauthenticated(
                "the token has expired", enums_pb2.ERROR_REASON_TOKEN_EXPIRED
            ) from None
        except jwt.ImmatureSignatureError:
            raise _unauthenticated("the token is not valid yet (nbf)") from None
        except jwt.InvalidAudienceError:
            raise _unauthenticated("the token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise _unauthenticated("the token is from another issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _unauthenticated(f"the token has no {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise _unauthenticated("the token's signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise _unauthenticated(f"the token is invalid ({type(exc).__name__})") from None
        return principal_from_claims(claims)


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    tenant = claims.get("tenant")
    if not isinstance(tenant, str) or not tenant:
        raise _unauthenticated("the token has no 'tenant' claim")
    scope = claims.get("scope", "")
    if not isinstance(scope, str):
        raise _unauthenticated("the token's 'scope' claim must be a space-separated string")
    subject = claims.get("sub", "")
    return Principal(
        subject=str(subject)[:200],
        tenant=tenant,
        scopes=frozenset(scope.split()),
        expires_at=float(claims["exp"]),
    )


def jwks_of(public_jwks: Iterable[dict[str, Any]]) -> str:
    """A JWKS document (JSON) of public JWKs."""
    return json.dumps({"keys": list(public_jwks)}, indent=2)
