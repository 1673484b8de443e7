// Download of every event of a query: CSV (spreadsheet-safe) and JSONL, read with ExportEvents when the
// contract has it, else by paging through ListEvents.
import { create, type DescMessage, type DescMethod, type DescService, type Message, toJsonString } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { displayName, typeString } from "./event-types.js";
import { type EventQuery, isFiltered, listRequest } from "./filters.js";
import { Actor, type AuditEvent, AuditEventSchema, AuditLogService } from "./gen.js";
import { payloadJson, payloadName } from "./present.js";

/** Page size of the ListEvents walk of a download (the server's maximum). */
export const EXPORT_PAGE_SIZE = 1000;
/** Events per ExportEvents message asked for (the most the service sends). */
export const EXPORT_EVENTS_PER_MESSAGE = 1000;

// ---- CSV ----------------------------------------------------------------------------------------

/** The CSV columns: the common fields of AuditEvent, the display name, and the payload as JSON. */
export const CSV_COLUMNS = [
  "id",
  "tenant_id",
  "event_type",
  "display_name",
  "occur_time",
  "receive_time",
  "tenant_user_id",
  "session_id",
  "actor",
  "sequence",
  "payload_type",
  "payload",
] as const;

/** Characters that make a spreadsheet read a cell as a formula (CSV injection). */
const FORMULA_START = /^[=+\-@\t\r]/;

/**
 * One CSV cell: a cell a spreadsheet would run as a formula gets a leading apostrophe, and a cell
 * holding a comma, quote or line break is quoted with its quotes doubled (RFC 4180).
 */
export function csvCell(value: string): string {
  const safe = FORMULA_START.test(value) ? `'${value}` : value;
  return /[",\r\n]/.test(safe) ? `"${safe.replace(/"/g, '""')}"` : safe;
}

/** One CSV record, CRLF-terminated (RFC 4180). */
export function csvRow(cells: readonly string[]): string {
  return `${cells.map(csvCell).join(",")}\r\n`;
}

export function csvHeader(): string {
  return csvRow(CSV_COLUMNS);
}

function iso(ts: { seconds: bigint; nanos: number } | undefined): string {
  if (ts === undefined) return "";
  return new Date(Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1_000_000)).toISOString();
}

function actorName(actor: Actor | undefined): string {
  if (actor === Actor.AGENT) return "AGENT";
  if (actor === Actor.CUSTOMER) return "CUSTOMER";
  return "";
}

/** The CSV record of one event, in CSV_COLUMNS order. Times are UTC (ISO 8601). */
export function csvRecord(event: AuditEvent): string {
  return csvRow([
    event.id,
    event.tenantId,
    event.eventType === 0 ? "" : typeString(event.eventType),
    event.eventType === 0 ? "" : displayName(event.eventType),
    iso(event.occurTime),
    iso(event.receiveTime),
    event.tenantUserId,
    event.cobrowse?.sessionId ?? "",
    actorName(event.cobrowse?.actor),
    event.sequence === 0n ? "" : event.sequence.toString(),
    payloadName(event),
    JSON.stringify(payloadJson(event)),
  ]);
}

/** One JSONL line: the event in the protobuf JSON mapping. */
export function jsonlRecord(event: AuditEvent): string {
  return `${toJsonString(AuditEventSchema, event)}\n`;
}

// ---- reading every event of a query -------------------------------------------------------------

export interface ExportOptions {
  signal?: AbortSignal;
  /** The service descriptor to look for ExportEvents in (tests pass one that has it). */
  service?: DescService;
  /** Called with the running count after each batch. */
  onProgress?: (count: number, via: ExportVia) => void;
  timeoutMs?: number;
}

export type ExportVia = "ExportEvents" | "ListEvents";

/** The server-streaming ExportEvents method of a service, when the contract has one. */
export function exportMethod(service: DescService): DescMethod | undefined {
  return service.methods.find((m) => m.name === "ExportEvents" && m.methodKind === "server_streaming");
}

/**
 * The ExportEvents request of a query, built by field name (tenant_id, filter, order) since the
 * console may be older than the contract; undefined when the request cannot express the query.
 */
export function exportRequest(input: DescMessage, tenantId: string, query: EventQuery): Message | undefined {
  const list = listRequest(tenantId, query);
  const byName = new Map(input.fields.map((f) => [f.name, f]));
  const tenant = byName.get("tenant_id");
  if (tenant === undefined || tenant.fieldKind !== "scalar") return undefined;
  const init: Record<string, unknown> = { [tenant.localName]: tenantId };
  const filter = byName.get("filter");
  if (filter?.fieldKind === "message" && filter.message.typeName === "auditlog.v1.EventFilter") {
    init[filter.localName] = list.filter;
  } else if (isFiltered(query)) {
    return undefined;
  }
  const order = byName.get("order");
  if (order?.fieldKind === "enum" && order.enum.typeName === "auditlog.v1.SortOrder") init[order.localName] = list.order;
  // Events in batches where the contract has them: a message costs both ends far more than an event.
  const perMessage = byName.get("events_per_message");
  if (perMessage?.fieldKind === "scalar") init[perMessage.localName] = EXPORT_EVENTS_PER_MESSAGE;
  return create(input, init as never);
}

/** Every AuditEvent in a message: in its fields, lists and oneofs, and in messages nested in them. */
export function eventsIn(desc: DescMessage, message: Record<string, unknown>, depth = 0): AuditEvent[] {
  if (desc.typeName === AuditEventSchema.typeName) return [message as unknown as AuditEvent];
  if (depth > 4) return [];
  const found: AuditEvent[] = [];
  for (const field of desc.fields) {
    let value: unknown;
    if (field.oneof) {
      const selected = message[field.oneof.localName] as { case?: string; value?: unknown } | undefined;
      if (selected?.case !== field.localName) continue;
      value = selected.value;
    } else {
      value = message[field.localName];
    }
    if (value === undefined) continue;
    if (field.fieldKind === "message") {
      found.push(...eventsIn(field.message, value as Record<string, unknown>, depth + 1));
    } else if (field.fieldKind === "list" && field.listKind === "message") {
      for (const item of value as Record<string, unknown>[]) found.push(...eventsIn(field.message, item, depth + 1));
    }
  }
  return found;
}

// ExportEvents answers that send the download back to ListEvents paging: the method is not served,
// or the token lacks its scope (events:export) while events:read still lists.
const FALL_BACK = new Set([Code.Unimplemented, Code.PermissionDenied, Code.NotFound]);

/**
 * Yields the events of a query in batches: through ExportEvents when the service has it (falling back
 * to paging if the server does not serve it to this token before any event came), else by paging
 * through ListEvents with page_size 1000.
 */
export async function* exportEvents(
  transport: Transport,
  tenantId: string,
  query: EventQuery,
  options: ExportOptions = {},
): AsyncGenerator<AuditEvent[], void, undefined> {
  const service = options.service ?? AuditLogService;
  const callOptions = options.signal ? { signal: options.signal } : {};
  let count = 0;
  const method = exportMethod(service);
  const request = method && exportRequest(method.input, tenantId, query);
  if (method && request) {
    const client = createClient(service, transport) as unknown as Record<
      string,
      (req: Message, opts: object) => AsyncIterable<Record<string, unknown>>
    >;
    const call = client[method.localName];
    if (call !== undefined) {
      try {
        for await (const response of call(request, callOptions)) {
          const events = eventsIn(method.output, response);
          if (events.length === 0) continue;
          count += events.length;
          options.onProgress?.(count, "ExportEvents");
          yield events;
        }
        return;
      } catch (cause) {
        const error = ConnectError.from(cause);
        if (count > 0 || !FALL_BACK.has(error.code) || options.signal?.aborted) throw error;
      }
    }
  }
  const client = createClient(AuditLogService, transport);
  let token = "";
  do {
    const response = await client.listEvents(listRequest(tenantId, query, token, EXPORT_PAGE_SIZE), {
      ...callOptions,
      timeoutMs: options.timeoutMs ?? 60_000,
    });
    token = response.nextPageToken;
    count += response.events.length;
    options.onProgress?.(count, "ListEvents");
    if (response.events.length > 0) yield response.events;
  } while (token !== "");
}

export type ExportFormat = "csv" | "jsonl";

/** Reads every event of a query into the parts of a file (for a Blob), with the count. */
export async function buildExport(
  format: ExportFormat,
  transport: Transport,
  tenantId: string,
  query: EventQuery,
  options: ExportOptions = {},
): Promise<{ parts: string[]; count: number }> {
  const parts: string[] = format === "csv" ? [csvHeader()] : [];
  let count = 0;
  for await (const batch of exportEvents(transport, tenantId, query, options)) {
    let chunk = "";
    for (const event of batch) chunk += format === "csv" ? csvRecord(event) : jsonlRecord(event);
    parts.push(chunk);
    count += batch.length;
  }
  return { parts, count };
}

/** A file name for a download, e.g. auditlog-acme-2024-05-01T10-00-00Z.csv. */
export function exportFileName(tenantId: string, format: ExportFormat, now: Date): string {
  const stamp = now.toISOString().replace(/\.\d+Z$/, "Z").replace(/:/g, "-");
  const tenant = tenantId.replace(/[^A-Za-z0-9._-]+/g, "_") || "tenant";
  return `auditlog-${tenant}-${stamp}.${format}`;
}
