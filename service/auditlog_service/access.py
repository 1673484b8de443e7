"""Who may call what: the one layer every transport calls before and after an RPC.

It verifies the bearer token, checks the method's scope and the tenant of each request, applies
the per-tenant rate limits and tail caps, and writes one access-log line per call. It knows
nothing of grpc.aio or HTTP: the gRPC and the browser (Connect) transports both go through it.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from dataclasses import dataclass, field

from . import metrics
from .auth import (
    ANY_TENANT,
    SCOPE_ADMIN,
    SCOPE_EXPORT,
    SCOPE_READ,
    SCOPE_TAIL,
    SCOPE_WRITE,
    Principal,
    TokenVerifier,
)
from .errors import AuditLogError, PermissionDenied, RateLimited, TooManyTails

# The scope each RPC needs (also named in each RPC's comment in the contract).
METHOD_SCOPES = {
    "LogEvent": SCOPE_WRITE,
    "LogEvents": SCOPE_WRITE,
    "StreamEvents": SCOPE_WRITE,
    "GetEvent": SCOPE_READ,
    "ListEvents": SCOPE_READ,
    "TailSession": SCOPE_TAIL,
    "TailEvents": SCOPE_TAIL,
    "ExportEvents": SCOPE_EXPORT,
    "GetCheckpoint": SCOPE_READ,
    "GetVerificationKeys": SCOPE_READ,
    "VerifyLedger": SCOPE_READ,
    "GetRetention": SCOPE_READ,
    "SetRetention": SCOPE_ADMIN,
}

access_log = logging.getLogger("auditlog.access")


@dataclass
class Call:
    """One RPC as the core sees it, whatever transport carried it."""

    method: str
    principal: Principal
    peer: str
    started: float = field(default_factory=time.monotonic)
    deadline: float | None = None  # monotonic seconds, from the client's deadline
    tenant: str = ""  # the tenant the request named (for the access log)
    events_stored: int = 0
    events_returned: int = 0

    def time_remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()


@dataclass(frozen=True)
class TenantLimits:
    """Per-tenant limits; 0 means unlimited."""

    rpcs_per_s: float = 0.0
    rpc_burst: float = 0.0
    events_per_s: float = 0.0
    event_burst: float = 0.0
    max_tails: int = 0


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up."""

    __slots__ = ("_burst", "_level", "_rate", "_updated")

    def __init__(self, rate: float, burst: float) -> None:
        self._rate = rate
        self._burst = max(burst, rate, 1.0)
        self._level = self._burst
        self._updated = time.monotonic()

    def take(self, amount: float) -> float:
        """Takes `amount` tokens and returns 0, or takes none and returns the seconds until
        they would be there."""
        now = time.monotonic()
        self._level = min(self._burst, self._level + (now - self._updated) * self._rate)
        self._updated = now
        if amount <= self._level:
            self._level -= amount
            return 0.0
        if amount > self._burst:
            # More than a burst at once can never be granted whole: the caller must split it.
            return (amount - self._level) / self._rate
        return (amount - self._level) / self._rate


class CallGuard:
    """Authentication, authorisation, limits and the access log of every RPC."""

    def __init__(
        self, verifier: TokenVerifier, limits: TenantLimits, *, access_log: bool = True
    ) -> None:
        self._verifier = verifier
        self._limits = limits
        self._access_log = access_log  # AUDITLOG_ACCESS_LOG: whether finish writes lines
        self._rpc_buckets: dict[str, TokenBucket] = {}
        self._event_buckets: dict[str, TokenBucket] = {}
        self._tails: dict[str, int] = {}

    async def begin(
        self, method: str, authorization: str | None, peer: str, timeout_s: float | None
    ) -> Call:
        """The Call of an RPC whose caller may use `method`; else Unauthenticated or
        PermissionDenied (before anything is read), or RateLimited."""
        principal = await self._verifier.verify(authorization)
        call = Call(
            method=method,
            principal=principal,
            peer=peer,
            deadline=None if timeout_s is None else time.monotonic() + timeout_s,
        )
        scope = METHOD_SCOPES[method]
        if scope not in principal.scopes:
            raise PermissionDenied(f"{method} needs the scope {scope!r}", missing_scope=scope)
        if principal.tenant != ANY_TENANT:
            self._charge_rpc(principal.tenant)
        return call

    def require_tenant(self, call: Call, tenant_id: str) -> None:
        """PermissionDenied unless the caller's token covers `tenant_id`; decided from the token
        alone, so the answer is the same whether the other tenant has such data or not."""
        call.tenant = call.tenant or tenant_id
        if not call.principal.covers(tenant_id):
            raise PermissionDenied(f"the token is not valid for tenant {tenant_id!r}")
        if call.principal.tenant == ANY_TENANT and call.tenant == tenant_id:
            # A platform token is limited by the tenant it acts for.
            self._charge_rpc(tenant_id)

    def covers(self, call: Call, tenant_id: str) -> bool:
        return call.principal.covers(tenant_id)

    def _charge_rpc(self, tenant_id: str) -> None:
        limits = self._limits
        if limits.rpcs_per_s <= 0:
            return
        bucket = self._rpc_buckets.get(tenant_id)
        if bucket is None:
            bucket = self._rpc_buckets[tenant_id] = TokenBucket(limits.rpcs_per_s, limits.rpc_burst)
        wait = bucket.take(1)
        if wait:
            raise RateLimited(f"tenant {tenant_id!r} is over its limit of RPCs a second", wait)

    def charge_events(self, tenant_id: str, count: int) -> float:
        """0 when `count` events of the tenant may be stored now, else the seconds to wait."""
        limits = self._limits
        if limits.events_per_s <= 0 or count == 0:
            return 0.0
        bucket = self._event_buckets.get(tenant_id)
        if bucket is None:
            bucket = TokenBucket(limits.events_per_s, limits.event_burst)
            self._event_buckets[tenant_id] = bucket
        return bucket.take(count)

    def open_tail(self, tenant_id: str) -> None:
        """Counts a tail of the tenant; TooManyTails beyond the tenant's cap."""
        cap = self._limits.max_tails
        open_now = self._tails.get(tenant_id, 0)
        if cap and open_now >= cap:
            raise TooManyTails(
                f"tenant {tenant_id!r} already has {open_now} tails on this server (its cap)"
            )
        self._tails[tenant_id] = open_now + 1

    def close_tail(self, tenant_id: str) -> None:
        left = self._tails.get(tenant_id, 1) - 1
        if left > 0:
            self._tails[tenant_id] = left
        else:
            self._tails.pop(tenant_id, None)

    def finish(
        self,
        method: str,
        call: Call | None,
        peer: str,
        code: str,
        started: float | None = None,
        *,
        protocol: str = "",
    ) -> None:
        """The access-log line of a finished RPC: who, what, how it ended; never a token, a key
        or event content. `protocol` names the HTTP port's protocol (connect, grpc-web, grpc);
        calls on the gRPC port have none. Also where both transports' RPCs are counted, once."""
        begun = call.started if call is not None else started or time.monotonic()
        seconds = time.monotonic() - begun
        metrics.rpc_finished(method, code, protocol, seconds)
        if not self._access_log or not access_log.isEnabledFor(logging.INFO):
            return
        # The JSON of a dict of these fields, put together field by field (json.dumps of each
        # string): with the record below, 33.6 -> 19.4 µs a line here, to a log file, out of
        # ~600 µs of a unary call at INFO (the default level;
        # bench/results/access_log_ab_session40.md).
        line = (
            f'{{"time":"{_utc_stamp(time.time())}","peer":{_json(peer)},'
            f'"method":{_json(method)},"code":{_json(code)},'
            f'"duration_ms":{round(seconds * 1000, 2)!r}'
        )
        if protocol:
            line += f',"protocol":{_json(protocol)}'
        if call is not None:
            principal = call.principal
            line += (
                f',"subject":{_json(principal.subject)},"token_tenant":'
                f'{_json(principal.tenant)},"tenant":{_json(call.tenant)}'
            )
            if call.events_stored:
                line += f',"events_stored":{call.events_stored:d}'
            if call.events_returned:
                line += f',"events_returned":{call.events_returned:d}'
        # A record made here and handed on: Logger.info would also look up the caller's source
        # line, which no access line shows.
        access_log.handle(
            access_log.makeRecord(access_log.name, logging.INFO, "", 0, line + "}", (), None)
        )


_json = json.dumps  # of a str: the string as JSON, quoted and escaped (ASCII only)


@functools.lru_cache(maxsize=1)  # a busy server stamps many lines within one second
def _utc_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def _utc_stamp(now: float) -> str:
    """`now` (seconds since the epoch) as 2026-12-06T21:13:25.877Z."""
    return f"{_utc_second(int(now))}.{int(now * 1000) % 1000:03d}Z"


def failure_code(error: BaseException) -> str:
    """The status code name an RPC ended with, for the access log."""
    if isinstance(error, AuditLogError):
        return error.code.name
    return "UNKNOWN"
