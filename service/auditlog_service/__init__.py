"""auditlog service: records a tenant's audit trail in MongoDB and serves it over gRPC."""
