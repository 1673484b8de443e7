// The generated contract (clients/typescript/src/gen, protoc-gen-es v2), imported from one place.
export * from "../../clients/typescript/src/gen/auditlog/v1/audit_event_pb.js";
export * from "../../clients/typescript/src/gen/auditlog/v1/enums_pb.js";
export * from "../../clients/typescript/src/gen/auditlog/v1/options_pb.js";
export * from "../../clients/typescript/src/gen/auditlog/v1/payloads_pb.js";
export * from "../../clients/typescript/src/gen/auditlog/v1/service_pb.js";
