// Entry point of the TypeScript SDK: the generated messages and service, plus a gRPC client factory and small helpers.
import { getOption, hasOption } from "@bufbuild/protobuf";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { EventTypeSchema, type EventType } from "./gen/auditlog/v1/enums_pb.js";
import { event_type_info, type EventTypeInfo } from "./gen/auditlog/v1/options_pb.js";
import { AuditLogService } from "./gen/auditlog/v1/service_pb.js";

export * from "./gen/auditlog/v1/audit_event_pb.js";
export * from "./gen/auditlog/v1/enums_pb.js";
export * from "./gen/auditlog/v1/options_pb.js";
export * from "./gen/auditlog/v1/payloads_pb.js";
export * from "./gen/auditlog/v1/service_pb.js";

/** The default server address, as in every auditlog SDK. */
export const DEFAULT_ADDRESS = "127.0.0.1:50051";

/** A typed client of auditlog.v1.AuditLogService. */
export type AuditLogClient = Client<typeof AuditLogService>;

/** A client and the HTTP/2 connection under it. */
export interface AuditLogConnection {
  /** The service client: `await conn.client.logEvent({ event })`. */
  readonly client: AuditLogClient;
  /** Closes the HTTP/2 connection; calls in flight fail. */
  close(): void;
}

/**
 * Connects to an auditlog server over gRPC (HTTP/2). `address` is "host:port" (plaintext) or a full
 * "http://" / "https://" URL; it defaults to $AUDITLOG_ADDR, then 127.0.0.1:50051.
 */
export function connectAuditLog(address: string = process.env["AUDITLOG_ADDR"] || DEFAULT_ADDRESS): AuditLogConnection {
  const baseUrl = /^https?:\/\//.test(address) ? address : `http://${address}`;
  const sessionManager = new Http2SessionManager(baseUrl);
  const transport = createGrpcTransport({ baseUrl, sessionManager });
  return { client: createClient(AuditLogService, transport), close: () => sessionManager.abort() };
}

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
