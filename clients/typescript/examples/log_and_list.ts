// Example program for the TypeScript SDK: logs a general and a co-browsing event, reads them back, tails the session.
//
// Run with a server listening on AUDITLOG_ADDR (default 127.0.0.1:50051):  npm run example
// AUDITLOG_TOKEN (a bearer token) and AUDITLOG_TLS_CA / AUDITLOG_TLS_CERT / AUDITLOG_TLS_KEY (TLS, mTLS) apply when set.
import { randomBytes } from "node:crypto";
import { timestampDate, timestampNow } from "@bufbuild/protobuf/wkt";
import { Actor, EventType, SortOrder, connectFromEnv, eventTypeInfo, newEventId, tailSession } from "../src/index.js";

const { client, close } = connectFromEnv();
const tenantId = `example-ts-${randomBytes(4).toString("hex")}`;
const sessionId = `session-${randomBytes(4).toString("hex")}`;
const signal = AbortSignal.timeout(30_000);

try {
  // A general event: the acting tenant user plus a typed payload (a oneof: { case, value }).
  const call = await client.logEvent(
    {
      event: {
        id: newEventId(),
        tenantId,
        tenantUserId: "agent-7",
        occurTime: timestampNow(),
        payload: { case: "startCall", value: { callId: "call-1", customerId: "customer-42" } },
      },
    },
    { signal },
  );
  const stored = call.event!;
  console.log(`logged ${EventType[stored.eventType]} id=${stored.id} received=${timestampDate(stored.receiveTime!).toISOString()}`);

  // A co-browsing event: the session context instead of (or besides) a tenant user.
  const click = await client.logEvent(
    {
      event: {
        id: newEventId(),
        tenantId,
        occurTime: timestampNow(),
        cobrowse: { sessionId, actor: Actor.CUSTOMER },
        payload: { case: "click", value: { element: { name: "Buy now", id: "buy-button" } } },
      },
    },
    { signal },
  );
  console.log(`logged ${EventType[click.event!.eventType]} id=${click.event!.id} sequence=${click.event!.sequence}`);

  // Read one back by id.
  const got = (await client.getEvent({ tenantId, id: stored.id }, { signal })).event!;
  if (got.payload.case === "startCall") {
    console.log(`got ${EventType[got.eventType]} call_id=${got.payload.value.callId} customer_id=${got.payload.value.customerId}`);
  }

  // List the tenant's events, oldest first, following the page tokens.
  let pageToken = "";
  do {
    const page = await client.listEvents({ tenantId, order: SortOrder.OLDEST_FIRST, pageSize: 50, pageToken }, { signal });
    for (const e of page.events) console.log(`listed ${EventType[e.eventType]} id=${e.id}`);
    pageToken = page.nextPageToken;
  } while (pageToken !== "");

  // Tail the session from its first event until replay has caught up with the live head; leaving
  // the loop cancels the stream. The SDK's tail resumes by itself from the last cursor if the call
  // breaks (server restart, rate limit, expired token), so a console can follow a session for hours.
  for await (const msg of tailSession(
    client,
    { tenantId, sessionId, start: { case: "fromBeginning", value: true } },
    { signal, onRetry: (error, waitMs) => console.log(`tail: resuming in ${waitMs} ms after ${error.message}`) },
  )) {
    if (msg.kind.case === "events") {
      for (const e of msg.kind.value.events) {
        const element = e.payload.case === "click" ? e.payload.value.element?.id : "";
        console.log(`tail: #${e.sequence} ${EventType[e.eventType]} element=${element}`);
      }
    } else if (msg.kind.case === "caughtUp") {
      console.log(`tail: caught up at head ${msg.kind.value.headSequence} (cursor ${msg.cursor})`);
      break;
    } else if (msg.kind.case === "heartbeat") {
      console.log(`tail: heartbeat at head ${msg.kind.value.headSequence}`);
    }
  }

  // The seed type string and display name are options on the enum value, readable offline.
  const info = eventTypeInfo(EventType.START_CALL)!;
  console.log(`EVENT_TYPE_START_CALL: type_string=${info.typeString} display_name=${info.displayName}`);
} finally {
  close();
}
