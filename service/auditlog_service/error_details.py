"""The google.rpc form of domain errors, the same for every transport: Status with details."""

from __future__ import annotations

from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from auditlog.v1 import enums_pb2, service_pb2

from .errors import AuditLogError

ERROR_DOMAIN = "auditlog.v1"
# Trailing metadata key of the cursor a tail resumes from, on every way a tail ends.
CURSOR_TRAILER = "auditlog-cursor"


def _duration(seconds: float) -> duration_pb2.Duration:
    whole = int(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=int((seconds - whole) * 1e9))


def detail_messages(error: AuditLogError) -> list[object]:
    """ErrorInfo always; BadRequest for bad fields; RetryInfo when a retry must wait."""
    reason = enums_pb2.ErrorReason.Name(error.reason)
    details: list[object] = [
        error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=error.metadata)
    ]
    if error.violations:
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in error.violations
                ]
            )
        )
    if error.retry_after_s is not None:
        details.append(error_details_pb2.RetryInfo(retry_delay=_duration(error.retry_after_s)))
    return details


def to_status(error: AuditLogError) -> status_pb2.Status:
    """The google.rpc.Status of a domain error."""
    packed = []
    for detail in detail_messages(error):
        any_detail = any_pb2.Any()
        any_detail.Pack(detail)  # type: ignore[arg-type]
        packed.append(any_detail)
    return status_pb2.Status(code=error.code.value[0], message=error.message, details=packed)


def to_event_error(error: AuditLogError) -> service_pb2.EventError:
    """The per-event form of a domain error, for batch results and stream acks."""
    event_error = service_pb2.EventError(
        code=error.code.value[0],
        reason=error.reason,
        message=error.message,
        field_violations=[
            service_pb2.FieldViolation(field=v.field, description=v.description)
            for v in error.violations
        ],
    )
    if error.retry_after_s is not None:
        event_error.retry_delay.CopyFrom(_duration(error.retry_after_s))
    return event_error
