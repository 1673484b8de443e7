"""Python SDK for the auditlog service: the generated auditlog.v1 stubs and an async client."""

from .client import AuditLogClient, AuditLogError, event_type_info

__all__ = ["AuditLogClient", "AuditLogError", "event_type_info"]
