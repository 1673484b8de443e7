// How events read for people: times, actors, the ids of the table columns, one-line summaries, and
// every field of an event (walked with reflection, so that each payload type is covered).
import { type DescField, type DescMessage, isMessage, toJson } from "@bufbuild/protobuf";
import { type Timestamp, timestampDate } from "@bufbuild/protobuf/wkt";
import { displayName, typeString } from "./event-types.js";
import { Actor, type AuditEvent, AuditEventSchema, type Element, EventTypeSchema, MeetingAction } from "./gen.js";

/** A Timestamp as a Date; undefined when absent. */
export function toDate(ts: Timestamp | undefined): Date | undefined {
  return ts === undefined ? undefined : timestampDate(ts);
}

/** A time for people, in the browser's time zone unless one is given (tests pass "UTC"). */
export function formatTime(date: Date | undefined, timeZone?: string): string {
  if (date === undefined) return "";
  return new Intl.DateTimeFormat(undefined, {
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    fractionalSecondDigits: 3,
    hour12: false,
    ...(timeZone ? { timeZone } : {}),
  }).format(date);
}

/** The time zone the console shows times in, e.g. "Europe/Paris". */
export function browserTimeZone(): string {
  return Intl.DateTimeFormat().resolvedOptions().timeZone;
}

export function actorLabel(actor: Actor | undefined): string {
  switch (actor) {
    case Actor.AGENT:
      return "Agent";
    case Actor.CUSTOMER:
      return "Customer";
    default:
      return "";
  }
}

/** The payload message of an event, or undefined when it has none. */
function payloadOf(event: AuditEvent): { desc: DescMessage; value: Record<string, unknown> } | undefined {
  const field = AuditEventSchema.fields.find((f) => f.oneof?.localName === "payload" && f.localName === event.payload.case);
  if (field === undefined || field.message === undefined || event.payload.value === undefined) return undefined;
  return { desc: field.message, value: event.payload.value as unknown as Record<string, unknown> };
}

/** The customer an event concerns (any payload field named customer_id), or "". */
export function customerOf(event: AuditEvent): string {
  const p = payloadOf(event);
  const value = p?.value["customerId"];
  return typeof value === "string" ? value : "";
}

/** The co-browsing session of an event: its cobrowse context, or the session a LIVE_VIEW joined. */
export function sessionOf(event: AuditEvent): string {
  if (event.cobrowse?.sessionId) return event.cobrowse.sessionId;
  if (event.payload.case === "liveView") return event.payload.value.cobrowseSessionId;
  return "";
}

/** The name of the payload's oneof member in the contract, e.g. "start_call"; "" when none. */
export function payloadName(event: AuditEvent): string {
  return AuditEventSchema.fields.find((f) => f.localName === event.payload.case)?.name ?? "";
}

/** The payload as protobuf JSON (Struct/Value as plain JSON), or null when the event has none. */
export function payloadJson(event: AuditEvent): unknown {
  const p = payloadOf(event);
  return p === undefined ? null : toJson(p.desc, p.value as never);
}

/** One member of the payload's JSON form (e.g. a Struct as plain JSON), or undefined. */
function jsonField(event: AuditEvent, jsonName: string): unknown {
  const json = payloadJson(event);
  if (typeof json !== "object" || json === null || Array.isArray(json)) return undefined;
  return (json as Record<string, unknown>)[jsonName];
}

function quote(text: string): string {
  return `“${text}”`;
}

/** An element for people: “Buy now” (#buy), #buy, or “Buy now”. */
export function elementLabel(element: Element | undefined, fallback = "an element"): string {
  const name = element?.name ?? "";
  const id = element?.id ?? "";
  if (name && id) return `${quote(name)} (#${id})`;
  if (name) return quote(name);
  if (id) return `#${id}`;
  return fallback;
}

function shortJson(value: unknown, max = 80): string {
  const text = JSON.stringify(value) ?? "null";
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

function list(items: readonly string[], max = 5): string {
  if (items.length <= max) return items.join(", ");
  return `${items.slice(0, max).join(", ")} … (+${items.length - max} more)`;
}

function formatNumber(n: number): string {
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}

/** One sentence saying what the event's payload says ("" for events whose name says it all). */
export function summary(event: AuditEvent): string {
  const p = event.payload;
  switch (p.case) {
    case "startCall":
      return `Call ${p.value.callId} with customer ${p.value.customerId}`;
    case "messengerSend":
      return `Message to customer ${p.value.customerId}`;
    case "liveView":
      return `Joined co-browsing session ${p.value.cobrowseSessionId}`;
    case "loggedIn":
    case "onlineStatusOnline":
    case "onlineStatusOffline":
      return "";
    case "statusChange": {
      const change = p.value.previousStatus ? `${p.value.previousStatus} → ${p.value.status}` : `→ ${p.value.status}`;
      return `Chat with customer ${p.value.customerId}: ${change}`;
    }
    case "roleChange":
      return `Role ${quote(p.value.roleName)} for tenant user ${p.value.affectedTenantUserId}`;
    case "permissionChange":
      return `Role ${quote(p.value.roleName)}: ${p.value.permissions.length === 0 ? "no permissions" : list(p.value.permissions)}`;
    case "pluginChange":
      return `Plugin ${quote(p.value.plugin)}: ${shortJson(jsonField(event, "configuration") ?? {})}`;
    case "settingsChange":
      return `Section ${quote(p.value.section)}: ${shortJson(jsonField(event, "configuration") ?? {})}`;
    case "meetingChange": {
      const c = p.value.conference;
      const what = c?.title ? `${quote(c.title)} (${c.id})` : (c?.id ?? "");
      if (p.value.action === MeetingAction.DELETE) return `Deleted meeting ${what}`;
      if (p.value.action === MeetingAction.CREATE_OR_UPDATE) return `Created or updated meeting ${what}`;
      return `Meeting ${what}`;
    }
    case "conferenceAgent":
      return `Call ${p.value.callId} with customer ${p.value.customerId}`;
    case "conferenceRecording": {
      const parts = [`Call ${p.value.callId} with customer ${p.value.customerId}`];
      if (p.value.joinedAgentIds.length > 0) parts.push(`agents: ${list(p.value.joinedAgentIds)}`);
      if (p.value.tags.length > 0) parts.push(`tags: ${list(p.value.tags)}`);
      return parts.join("; ");
    }
    case "click":
      return `Clicked on ${elementLabel(p.value.element)}`;
    case "scroll": {
      const pos = p.value.position;
      const where = p.value.element ? elementLabel(p.value.element) : "the page";
      return `Scrolled ${where} to top ${formatNumber(pos?.top ?? 0)}, left ${formatNumber(pos?.left ?? 0)}`;
    }
    case "form":
      return `Submitted form ${elementLabel(p.value.form, "(unnamed)")}`;
    case "input":
      if (p.value.masked) return `Input into ${elementLabel(p.value.element)}: masked value (hidden by the server)`;
      return `Input into ${elementLabel(p.value.element)}: ${quote(p.value.text)}`;
    case "pageChange": {
      const name = p.value.pageName ? quote(p.value.pageName) : "";
      if (name && p.value.url) return `Changed page to ${name} (${p.value.url})`;
      return `Changed page to ${name || p.value.url || "an unnamed page"}`;
    }
    case "selection": {
      const text = p.value.selectedText ? quote(p.value.selectedText) : "";
      if (text && p.value.element) return `Selected ${text} in ${elementLabel(p.value.element)}`;
      if (text) return `Selected ${text}`;
      return `Selected ${elementLabel(p.value.element, "nothing")}`;
    }
    case "customEvent":
      return `Custom event ${quote(p.value.eventType)}: ${shortJson(jsonField(event, "value") ?? null)}`;
    default: {
      // A payload type newer than this build: show what the generic walk finds.
      const p2 = payloadOf(event);
      if (p2 === undefined) return "";
      return shortJson(toJson(p2.desc, p2.value as never), 140);
    }
  }
}

/** One line of the event detail panel: a field's name and its value, or the fields of a message under it. */
export interface FieldRow {
  /** The field's name in the contract, e.g. "tenant_user_id". */
  name: string;
  /** Its value for people ("" when the field is empty). */
  value: string;
  /** How to show it. */
  kind: "text" | "empty" | "json" | "masked" | "time" | "message" | "list";
  /** The fields of a message value, or the items of a list. */
  children?: FieldRow[];
}

const TIMESTAMP = "google.protobuf.Timestamp";
const JSON_TYPES = new Set([
  "google.protobuf.Struct",
  "google.protobuf.Value",
  "google.protobuf.ListValue",
  "google.protobuf.Duration",
  "google.protobuf.Any",
]);

function scalarText(value: unknown): string {
  if (value instanceof Uint8Array) {
    let binary = "";
    for (const b of value) binary += String.fromCharCode(b);
    return btoa(binary);
  }
  return String(value);
}

function enumText(field: DescField & { fieldKind: "enum" }, value: number): string {
  if (field.enum.typeName === EventTypeSchema.typeName) {
    return value === 0 ? "" : `${displayName(value)} (${typeString(value)})`;
  }
  const v = field.enum.value[value];
  if (v === undefined) return String(value);
  return value === 0 ? "" : v.localName;
}

function messageRow(name: string, desc: DescMessage, value: unknown, timeZone?: string): FieldRow {
  if (value === undefined) return { name, value: "not set", kind: "empty" };
  if (desc.typeName === TIMESTAMP) {
    const date = timestampDate(value as Timestamp);
    return { name, value: `${formatTime(date, timeZone)} (${date.toISOString()})`, kind: "time" };
  }
  if (JSON_TYPES.has(desc.typeName)) {
    // protobuf-es keeps some of these as messages (Value) and hands others over as plain JSON (Struct).
    const json = isMessage(value) ? toJson(desc, value as never) : value;
    return { name, value: JSON.stringify(json, null, 2), kind: "json" };
  }
  if (!isMessage(value)) {
    // A wrapper type (google.protobuf.StringValue, ...) that protobuf-es hands over unwrapped.
    return { name, value: String(value), kind: "text" };
  }
  return { name, value: "", kind: "message", children: messageFields(desc, value as unknown as Record<string, unknown>, timeZone) };
}

/** Every field of a message, in contract order: set oneof members only, empty values marked empty. */
export function messageFields(desc: DescMessage, message: Record<string, unknown>, timeZone?: string): FieldRow[] {
  const rows: FieldRow[] = [];
  const masked = desc.typeName === "auditlog.v1.InputAttributes" && message["masked"] === true;
  for (const field of desc.fields) {
    let value: unknown;
    if (field.oneof) {
      const selected = message[field.oneof.localName] as { case?: string; value?: unknown } | undefined;
      if (selected?.case !== field.localName) continue;
      value = selected.value;
    } else {
      value = message[field.localName];
    }
    switch (field.fieldKind) {
      case "scalar": {
        const text = scalarText(value);
        if (masked && field.name === "text") rows.push({ name: field.name, value: text, kind: "masked" });
        else rows.push({ name: field.name, value: text, kind: text === "" ? "empty" : "text" });
        break;
      }
      case "enum": {
        const text = enumText(field, value as number);
        rows.push({ name: field.name, value: text, kind: text === "" ? "empty" : "text" });
        break;
      }
      case "message":
        rows.push(messageRow(field.name, field.message, value, timeZone));
        break;
      case "list": {
        const items = value as unknown[];
        const children: FieldRow[] = items.map((item, i) => {
          const name = `[${i}]`;
          if (field.listKind === "message") return messageRow(name, field.message, item, timeZone);
          if (field.listKind === "enum") return { name, value: String(field.enum.value[item as number]?.localName ?? item), kind: "text" };
          return { name, value: scalarText(item), kind: "text" };
        });
        rows.push(children.length === 0 ? { name: field.name, value: "none", kind: "empty" } : { name: field.name, value: "", kind: "list", children });
        break;
      }
      case "map": {
        const entries = Object.entries(value as Record<string, unknown>);
        const children: FieldRow[] = entries.map(([k, v]) => {
          if (field.mapKind === "message") return messageRow(k, field.message, v, timeZone);
          return { name: k, value: scalarText(v), kind: "text" };
        });
        rows.push(children.length === 0 ? { name: field.name, value: "none", kind: "empty" } : { name: field.name, value: "", kind: "list", children });
        break;
      }
    }
  }
  return rows;
}

/** Every field of an event for the detail panel. */
export function eventFields(event: AuditEvent, timeZone?: string): FieldRow[] {
  return messageFields(AuditEventSchema, event as unknown as Record<string, unknown>, timeZone);
}
