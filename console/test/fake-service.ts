// An in-memory AuditLogService for the tests: fake events, ListEvents with filters and keyset-like
// paging, and a scriptable TailSession, behind Connect's router transport.
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampDate, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ConnectRouter, createRouterTransport, type Transport } from "@connectrpc/connect";
import { ErrorInfoSchema } from "../../clients/typescript/src/errors.js";
import {
  Actor,
  type AuditEvent,
  AuditEventSchema,
  AuditLogService,
  type ListEventsRequest,
  SortOrder,
  type TailSessionRequest,
  type TailSessionResponse,
  TailSessionResponseSchema,
} from "../src/gen.js";
import { customerOf, sessionOf } from "../src/present.js";

export const TENANT = "acme";
const BASE_MS = Date.UTC(2024, 4, 1, 10, 0, 0);

type EventInit = MessageInitShape<typeof AuditEventSchema>;

/** One event of each general type, then co-browsing events of session "cob-1", one second apart. */
export function sampleEvents(): AuditEvent[] {
  const general: EventInit["payload"][] = [
    { case: "startCall", value: { callId: "call-1", customerId: "cust-1" } },
    { case: "messengerSend", value: { customerId: "cust-2" } },
    { case: "liveView", value: { cobrowseSessionId: "cob-1" } },
    { case: "loggedIn", value: {} },
    { case: "onlineStatusOnline", value: {} },
    { case: "onlineStatusOffline", value: {} },
    { case: "statusChange", value: { customerId: "cust-1", previousStatus: "Unresolved", status: "Done", messageId: "m-1" } },
    { case: "roleChange", value: { roleName: "admin", affectedTenantUserId: "user-9" } },
    { case: "permissionChange", value: { roleName: "admin", permissions: ["events:read", "=cmd()"] } },
    { case: "pluginChange", value: { plugin: "crm", configuration: { on: true } } },
    { case: "settingsChange", value: { section: "widget", configuration: {} } },
    { case: "meetingChange", value: { action: 1, conference: { id: "conf-1", title: "Weekly, \"sync\"" } } },
    { case: "conferenceAgent", value: { callId: "call-2", customerId: "cust-3" } },
    { case: "conferenceRecording", value: { callId: "call-2", customerId: "cust-3", joinedAgentIds: ["a", "b"], tags: ["t"] } },
  ];
  const cobrowse: [Actor, EventInit["payload"]][] = [
    [Actor.AGENT, { case: "click", value: { element: { name: "Buy now", id: "buy" } } }],
    [Actor.CUSTOMER, { case: "scroll", value: { position: { top: 120, left: 0 } } }],
    [Actor.CUSTOMER, { case: "form", value: { form: { id: "checkout" } } }],
    [Actor.CUSTOMER, { case: "input", value: { text: "••••", element: { name: "password" }, sensitive: true, masked: true } }],
    [Actor.AGENT, { case: "pageChange", value: { pageName: "Checkout", url: "https://shop.example/checkout" } }],
    [Actor.CUSTOMER, { case: "selection", value: { selectedText: "42 €" } }],
    [Actor.AGENT, { case: "customEvent", value: { eventType: "coupon", value: { kind: { case: "stringValue", value: "-10%" } } } }],
  ];
  const events: AuditEvent[] = [];
  general.forEach((payload, i) => {
    events.push(
      create(AuditEventSchema, {
        id: `g-${String(i).padStart(2, "0")}`,
        tenantId: TENANT,
        tenantUserId: `user-${i % 3}`,
        occurTime: timestampFromMs(BASE_MS + i * 1000),
        receiveTime: timestampFromMs(BASE_MS + i * 1000 + 5),
        eventType: i + 1,
        payload,
      } as EventInit),
    );
  });
  cobrowse.forEach(([actor, payload], i) => {
    events.push(cobrowseEvent(i + 1, actor, payload, BASE_MS + (general.length + i) * 1000));
  });
  return events;
}

const COBROWSE_TYPES: Record<string, number> = {
  click: 101,
  scroll: 102,
  form: 103,
  input: 104,
  pageChange: 105,
  selection: 106,
  customEvent: 107,
};

export function cobrowseEvent(sequence: number, actor: Actor, payload: EventInit["payload"], ms = BASE_MS + sequence * 1000, sessionId = "cob-1"): AuditEvent {
  return create(AuditEventSchema, {
    id: `${sessionId}-${sequence}`,
    tenantId: TENANT,
    tenantUserId: actor === Actor.AGENT ? "user-0" : "",
    occurTime: timestampFromMs(ms),
    receiveTime: timestampFromMs(ms + 5),
    eventType: COBROWSE_TYPES[payload?.case ?? ""] ?? 0,
    cobrowse: { sessionId, actor },
    sequence: BigInt(sequence),
    payload,
  } as EventInit);
}

/** Many LOGGED_IN events, for paging through more than one export page. */
export function manyEvents(n: number): AuditEvent[] {
  return Array.from({ length: n }, (_, i) =>
    create(AuditEventSchema, {
      id: `e-${String(i).padStart(6, "0")}`,
      tenantId: TENANT,
      tenantUserId: `user-${i % 7}`,
      occurTime: timestampFromMs(BASE_MS + i * 1000),
      eventType: 4,
      payload: { case: "loggedIn", value: {} },
    }),
  );
}

function callIdOf(event: AuditEvent): string {
  const v = event.payload.value as { callId?: unknown } | undefined;
  return typeof v?.callId === "string" ? v.callId : "";
}

function matches(event: AuditEvent, req: ListEventsRequest): boolean {
  const f = req.filter;
  if (!f) return true;
  const ms = event.occurTime ? timestampDate(event.occurTime).getTime() : 0;
  if (f.startTime && ms < timestampDate(f.startTime).getTime()) return false;
  if (f.endTime && ms >= timestampDate(f.endTime).getTime()) return false;
  if (f.eventTypes.length > 0 && !f.eventTypes.includes(event.eventType)) return false;
  if (f.tenantUserId && event.tenantUserId !== f.tenantUserId) return false;
  if (f.customerId && customerOf(event) !== f.customerId) return false;
  if (f.callId && callIdOf(event) !== f.callId) return false;
  if (f.cobrowseSessionId && sessionOf(event) !== f.cobrowseSessionId) return false;
  if (f.actor !== Actor.UNSPECIFIED && event.cobrowse?.actor !== f.actor) return false;
  return true;
}

function queryKey(req: ListEventsRequest): string {
  return JSON.stringify({ f: req.filter ?? null, o: req.order, t: req.tenantId, s: req.pageSize }, (_k, v: unknown) =>
    typeof v === "bigint" ? v.toString() : v,
  );
}

function errorInfo(reason: string) {
  return { desc: ErrorInfoSchema, value: { reason, domain: "auditlog.v1", metadata: {} } };
}

export interface FakeServer {
  transport: Transport;
  events: AuditEvent[];
  listRequests: ListEventsRequest[];
  tailRequests: TailSessionRequest[];
  /** Scripts of the next TailSession calls, in order: each yields responses, then may throw. */
  tailScripts: ((req: TailSessionRequest) => AsyncGenerator<MessageInitShape<typeof TailSessionResponseSchema>>)[];
}

/** A fake server holding `events`, answering ListEvents (offset tokens tied to the query) and scripted tails. */
export function fakeServer(events: AuditEvent[] = sampleEvents()): FakeServer {
  const server: FakeServer = { transport: undefined as unknown as Transport, events, listRequests: [], tailRequests: [], tailScripts: [] };
  server.transport = createRouterTransport(fakeRoutes(server));
  return server;
}

/** The fake AuditLogService's routes, for a router transport (or any Connect server adapter). */
export function fakeRoutes(server: Omit<FakeServer, "transport">): (router: ConnectRouter) => void {
  return ({ service }) => {
    service(AuditLogService, {
      listEvents(req) {
        server.listRequests.push(req);
        if (req.tenantId !== TENANT) {
          throw new ConnectError("tenant not allowed", Code.PermissionDenied, undefined, [errorInfo("ERROR_REASON_UNSPECIFIED")]);
        }
        let offset = 0;
        if (req.pageToken !== "") {
          const [key, at] = req.pageToken.split("#");
          if (key !== btoa(queryKey(req)) || at === undefined) {
            throw new ConnectError("bad page token", Code.InvalidArgument, undefined, [errorInfo("INVALID_PAGE_TOKEN")]);
          }
          offset = Number(at);
        }
        const sorted = server.events.filter((e) => matches(e, req));
        const ms = (e: AuditEvent): number => (e.occurTime ? timestampDate(e.occurTime).getTime() : 0);
        sorted.sort((a, b) => ms(a) - ms(b) || a.id.localeCompare(b.id));
        if (req.order !== SortOrder.OLDEST_FIRST) sorted.reverse();
        const size = req.pageSize > 0 ? Math.min(req.pageSize, 1000) : 50;
        const page = sorted.slice(offset, offset + size);
        const next = offset + size < sorted.length ? `${btoa(queryKey(req))}#${offset + size}` : "";
        return { events: page, nextPageToken: next };
      },
      async *tailSession(req) {
        server.tailRequests.push(req);
        const script = server.tailScripts.shift();
        if (!script) throw new ConnectError("no script left", Code.Unavailable);
        for await (const msg of script(req)) yield create(TailSessionResponseSchema, msg) as TailSessionResponse;
      },
    });
  };
}
