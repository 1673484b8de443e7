// Entry point of the TypeScript SDK: the generated messages and service, plus connections (tokens, TLS), a resuming tail and small helpers.
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

/**
 * Returns a new UUIDv7 (time-ordered, random tail) to use as AuditEvent.id, so that a retried
 * logEvent stores the event once.
 */
export function newEventId(): string {
  const b = new Uint8Array(16);
  globalThis.crypto.getRandomValues(b);
  let ms = Date.now();
  for (let i = 5; i >= 0; i--) {
    b[i] = ms % 256;
    ms = Math.floor(ms / 256);
  }
  b[6] = 0x70 | (b[6]! & 0x0f); // version 7
  b[8] = 0x80 | (b[8]! & 0x3f); // RFC 9562 variant
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
