// Entry point of the TypeScript SDK: the generated messages and service, plus connections (tokens, TLS), a resuming tail, batched ingest over one stream and small helpers.
import { getOption, hasOption } from "@bufbuild/protobuf";
import { EventTypeSchema, type EventType } from "./gen/auditlog/v1/enums_pb.js";
import { event_type_info, type EventTypeInfo } from "./gen/auditlog/v1/options_pb.js";

export * from "./gen/auditlog/v1/audit_event_pb.js";
export * from "./gen/auditlog/v1/enums_pb.js";
export * from "./gen/auditlog/v1/options_pb.js";
export * from "./gen/auditlog/v1/payloads_pb.js";
export * from "./gen/auditlog/v1/service_pb.js";
export * from "./connect.js";
export * from "./errors.js";
export * from "./ids.js";
export * from "./stream.js";
export * from "./tail.js";

/**
 * Returns the auditlog.v1.event_type_info option of an EventType value (seed type string, display
 * name, category), or undefined for EVENT_TYPE_UNSPECIFIED and for numbers this SDK does not know.
 */
export function eventTypeInfo(type: EventType): EventTypeInfo | undefined {
  const value = EventTypeSchema.value[type];
  if (value === undefined || !hasOption(value, event_type_info)) {
    return undefined;
  }
  return getOption(value, event_type_info);
}
