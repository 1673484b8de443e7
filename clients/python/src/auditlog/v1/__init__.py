"""Generated protobuf and gRPC modules of the auditlog.v1 contract (see proto/auditlog/v1)."""
