"""Python SDK for the auditlog service: the generated auditlog.v1 stubs, an async client, and a
batching logger.

>>> from auditlog import AuditLogClient, BatchingLogger, general_event
>>> from auditlog.v1.payloads_pb2 import StartCallAttributes
>>> async with AuditLogClient("127.0.0.1:50051") as client:
...     await client.log_general("acme", "agent-7", StartCallAttributes(call_id="call-1"))
"""

from .batching import (
    LOGGER_CLOSED,
    QUEUE_FULL,
    RETRYABLE_CODES,
    BatchingLogger,
    BatchSender,
    DeliveryFailure,
)
from .client import (
    AuditLogClient,
    AuditLogError,
    SessionTail,
    TokenSource,
    bearer_interceptors,
    event_type_info,
)
from .events import (
    PAYLOADS,
    PayloadSpec,
    cobrowse_event,
    event_filter,
    general_event,
    payload_spec,
    to_timestamp,
)
from .ids import new_event_id, uuid7
from .stream import MAX_STREAM_BATCH, EventStream

__all__ = [
    "LOGGER_CLOSED",
    "MAX_STREAM_BATCH",
    "PAYLOADS",
    "QUEUE_FULL",
    "RETRYABLE_CODES",
    "AuditLogClient",
    "AuditLogError",
    "BatchSender",
    "BatchingLogger",
    "DeliveryFailure",
    "EventStream",
    "PayloadSpec",
    "SessionTail",
    "TokenSource",
    "bearer_interceptors",
    "cobrowse_event",
    "event_filter",
    "event_type_info",
    "general_event",
    "new_event_id",
    "payload_spec",
    "to_timestamp",
    "uuid7",
]
