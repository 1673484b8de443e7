// The Activity Logs filter: its URL form (shareable, reloadable) and the ListEventsRequest it asks for.
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { eventTypeFromString, typeString } from "./event-types.js";
import { Actor, type EventType, type ListEventsRequest, ListEventsRequestSchema, SortOrder } from "./gen.js";

export const DEFAULT_PAGE_SIZE = 50;
export const PAGE_SIZES: readonly number[] = [25, 50, 100, 200];

/** Everything the Activity Logs view filters and sorts by: one field per EventFilter field, plus order and page size. */
export interface EventQuery {
  eventTypes: EventType[];
  tenantUserId: string;
  customerId: string;
  callId: string;
  sessionId: string;
  actor: Actor;
  /** At or after (inclusive). */
  from?: Date;
  /** Before (exclusive). */
  to?: Date;
  order: SortOrder.NEWEST_FIRST | SortOrder.OLDEST_FIRST;
  pageSize: number;
}

export function emptyQuery(): EventQuery {
  return {
    eventTypes: [],
    tenantUserId: "",
    customerId: "",
    callId: "",
    sessionId: "",
    actor: Actor.UNSPECIFIED,
    order: SortOrder.NEWEST_FIRST,
    pageSize: DEFAULT_PAGE_SIZE,
  };
}

// URL parameter names. Short, readable, and stable: shared links depend on them.
const P = {
  types: "types",
  user: "user",
  customer: "customer",
  call: "call",
  session: "session",
  actor: "actor",
  from: "from",
  to: "to",
  order: "order",
  size: "size",
} as const;

const ACTOR_WORDS: ReadonlyMap<string, Actor> = new Map([
  ["agent", Actor.AGENT],
  ["customer", Actor.CUSTOMER],
]);

function actorWord(actor: Actor): string | undefined {
  for (const [word, value] of ACTOR_WORDS) if (value === actor) return word;
  return undefined;
}

function parseDate(text: string | null): Date | undefined {
  if (text === null || text === "") return undefined;
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? undefined : date;
}

/** Reads a query from URL parameters; unknown types, bad dates and other junk are ignored. */
export function queryFromParams(params: URLSearchParams): EventQuery {
  const query = emptyQuery();
  const types = params.get(P.types);
  if (types) {
    const seen = new Set<EventType>();
    for (const word of types.split(",")) {
      const type = eventTypeFromString(word.trim());
      if (type !== undefined && !seen.has(type)) {
        seen.add(type);
        query.eventTypes.push(type);
      }
    }
  }
  query.tenantUserId = params.get(P.user)?.trim() ?? "";
  query.customerId = params.get(P.customer)?.trim() ?? "";
  query.callId = params.get(P.call)?.trim() ?? "";
  query.sessionId = params.get(P.session)?.trim() ?? "";
  query.actor = ACTOR_WORDS.get(params.get(P.actor)?.toLowerCase() ?? "") ?? Actor.UNSPECIFIED;
  const from = parseDate(params.get(P.from));
  if (from) query.from = from;
  const to = parseDate(params.get(P.to));
  if (to) query.to = to;
  if (params.get(P.order) === "oldest") query.order = SortOrder.OLDEST_FIRST;
  const size = Number(params.get(P.size));
  if (Number.isInteger(size) && size >= 1 && size <= 1000) query.pageSize = size;
  return query;
}

/** Writes a query as URL parameters, leaving out defaults, in a fixed order (so equal queries give equal URLs). */
export function queryToParams(query: EventQuery): URLSearchParams {
  const params = new URLSearchParams();
  if (query.eventTypes.length > 0) params.set(P.types, query.eventTypes.map((t) => typeString(t)).join(","));
  if (query.tenantUserId) params.set(P.user, query.tenantUserId);
  if (query.customerId) params.set(P.customer, query.customerId);
  if (query.callId) params.set(P.call, query.callId);
  if (query.sessionId) params.set(P.session, query.sessionId);
  const actor = actorWord(query.actor);
  if (actor) params.set(P.actor, actor);
  if (query.from) params.set(P.from, query.from.toISOString());
  if (query.to) params.set(P.to, query.to.toISOString());
  if (query.order === SortOrder.OLDEST_FIRST) params.set(P.order, "oldest");
  if (query.pageSize !== DEFAULT_PAGE_SIZE) params.set(P.size, String(query.pageSize));
  return params;
}

/** True when two queries ask for the same events in the same order and page size. */
export function sameQuery(a: EventQuery, b: EventQuery): boolean {
  return queryToParams(a).toString() === queryToParams(b).toString();
}

/** True when the query filters at all (order and page size aside). */
export function isFiltered(query: EventQuery): boolean {
  return (
    query.eventTypes.length > 0 ||
    query.tenantUserId !== "" ||
    query.customerId !== "" ||
    query.callId !== "" ||
    query.sessionId !== "" ||
    query.actor !== Actor.UNSPECIFIED ||
    query.from !== undefined ||
    query.to !== undefined
  );
}

/** The ListEventsRequest of one page of a query. */
export function listRequest(tenantId: string, query: EventQuery, pageToken = "", pageSize = query.pageSize): ListEventsRequest {
  return create(ListEventsRequestSchema, {
    tenantId,
    order: query.order,
    pageSize,
    pageToken,
    filter: {
      eventTypes: query.eventTypes,
      tenantUserId: query.tenantUserId,
      customerId: query.customerId,
      callId: query.callId,
      cobrowseSessionId: query.sessionId,
      actor: query.actor,
      ...(query.from ? { startTime: timestampFromDate(query.from) } : {}),
      ...(query.to ? { endTime: timestampFromDate(query.to) } : {}),
    },
  });
}

/** A Date as the value of an <input type="datetime-local"> in the browser's time zone (to the second). */
export function toLocalInputValue(date: Date): string {
  const pad = (n: number, w = 2): string => String(n).padStart(w, "0");
  return (
    `${pad(date.getFullYear(), 4)}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}` +
    `T${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`
  );
}

/** The value of an <input type="datetime-local"> (browser time zone) as a Date; undefined when empty or bad. */
export function fromLocalInputValue(value: string): Date | undefined {
  if (value.trim() === "") return undefined;
  // A date-time without offset is local time (ECMAScript Date Time String Format).
  return parseDate(value);
}
