"""Domain errors: what went wrong, in the service's terms; api.py maps each to a gRPC status."""

from __future__ import annotations

import grpc

from auditlog.v1 import enums_pb2

from .validation import FieldViolation


class AuditLogError(Exception):
    """Base of the errors the service reports to clients."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: enums_pb2.ErrorReason.ValueType = enums_pb2.ERROR_REASON_UNSPECIFIED
    # When set, a google.rpc.RetryInfo tells the client how long to wait before retrying.
    retry_after_s: float | None = None

    def __init__(
        self,
        message: str,
        metadata: dict[str, str] | None = None,
        violations: list[FieldViolation] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        # Extra ErrorInfo metadata (ids, cursors) for clients that act on the error.
        self.metadata = metadata or {}
        # Offending request fields, sent as a google.rpc.BadRequest detail.
        self.violations = violations or []


class InvalidArgument(AuditLogError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = enums_pb2.ERROR_REASON_INVALID_ARGUMENT

    def __init__(
        self,
        violations: list[FieldViolation],
        reason: enums_pb2.ErrorReason.ValueType | None = None,
    ) -> None:
        fields = ", ".join(v.field for v in violations[:5])
        more = f" and {len(violations) - 5} more" if len(violations) > 5 else ""
        super().__init__(f"invalid request: {fields}{more}", violations=violations)
        if reason is not None:
            self.reason = reason


class IdConflict(AuditLogError):
    code = grpc.StatusCode.ALREADY_EXISTS
    reason = enums_pb2.ERROR_REASON_ID_CONFLICT

    def __init__(self, tenant_id: str, event_id: str) -> None:
        super().__init__(
            f"event {event_id!r} already exists in tenant {tenant_id!r} with other content",
            {"tenant_id": tenant_id, "id": event_id},
        )


class EventNotFound(AuditLogError):
    code = grpc.StatusCode.NOT_FOUND
    reason = enums_pb2.ERROR_REASON_EVENT_NOT_FOUND

    def __init__(self, tenant_id: str, event_id: str) -> None:
        super().__init__(
            f"no event {event_id!r} in tenant {tenant_id!r}",
            {"tenant_id": tenant_id, "id": event_id},
        )


class DatabaseUnavailable(AuditLogError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = enums_pb2.ERROR_REASON_DATABASE_UNAVAILABLE

    def __init__(self, detail: str, *, writing: bool = True) -> None:
        advice = "retry with the same event ids" if writing else "retry"
        super().__init__(f"the database is unavailable; {advice} ({detail})")
        self.detail = detail

    def for_read(self) -> AuditLogError:
        """The same failure as a read reports it: there are no event ids to retry with."""
        return DatabaseUnavailable(self.detail, writing=False)


class DatabaseTimeout(DatabaseUnavailable):
    """The database did not answer in time: unknown outcome for a write, a slow query for a read."""

    def for_read(self) -> AuditLogError:
        return QueryTimeout(
            "the query did not finish within its deadline; narrow the filter or time range, "
            f"or retry with a longer deadline ({self.detail})"
        )


class QueryTimeout(AuditLogError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = enums_pb2.ERROR_REASON_QUERY_TIMEOUT


class SequenceContention(AuditLogError):
    code = grpc.StatusCode.ABORTED
    reason = enums_pb2.ERROR_REASON_SEQUENCE_CONTENTION


class ShuttingDown(AuditLogError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = enums_pb2.ERROR_REASON_SHUTTING_DOWN


class TooManyTails(AuditLogError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = enums_pb2.ERROR_REASON_TOO_MANY_TAILS


class SlowConsumer(AuditLogError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = enums_pb2.ERROR_REASON_SLOW_CONSUMER


class InvalidCursor(InvalidArgument):
    def __init__(self, why: str) -> None:
        super().__init__([FieldViolation("cursor", why)], enums_pb2.ERROR_REASON_INVALID_CURSOR)


class CursorOutOfRange(AuditLogError):
    code = grpc.StatusCode.OUT_OF_RANGE
    reason = enums_pb2.ERROR_REASON_CURSOR_OUT_OF_RANGE

    def __init__(self, why: str) -> None:
        super().__init__(f"cursor: {why}", violations=[FieldViolation("cursor", why)])


class Unauthenticated(AuditLogError):
    """No valid bearer token: missing, malformed, badly signed, expired, or for someone else."""

    code = grpc.StatusCode.UNAUTHENTICATED

    def __init__(
        self, message: str, reason: enums_pb2.ErrorReason.ValueType, **metadata: str
    ) -> None:
        super().__init__(message, dict(metadata))
        self.reason = reason


class PermissionDenied(AuditLogError):
    """A valid token that does not allow this: a scope it lacks, a tenant it does not cover."""

    code = grpc.StatusCode.PERMISSION_DENIED
    reason = enums_pb2.ERROR_REASON_TENANT_NOT_ALLOWED

    def __init__(self, message: str, *, missing_scope: str = "") -> None:
        super().__init__(message, {"scope": missing_scope} if missing_scope else None)
        if missing_scope:
            self.reason = enums_pb2.ERROR_REASON_MISSING_SCOPE


class RateLimited(AuditLogError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = enums_pb2.ERROR_REASON_RATE_LIMITED

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(f"{message}; retry in {retry_after_s:.3g}s")
        self.retry_after_s = retry_after_s
