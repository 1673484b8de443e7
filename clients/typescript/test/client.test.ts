// Tests of the TypeScript SDK: descriptor options offline, and a live round trip against AUDITLOG_ADDR (skipped when unset)
// with AUDITLOG_TOKEN and AUDITLOG_TLS_* applied by connectFromEnv.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { test } from "node:test";
import { clone, create, equals } from "@bufbuild/protobuf";
import { timestampDate, timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  Actor,
  type AuditEvent,
  AuditEventSchema,
  EventCategory,
  EventType,
  EventTypeSchema,
  SortOrder,
  connectFromEnv,
  eventTypeInfo,
  newEventId,
  tailSession,
} from "../src/index.js";

test("EventType values carry their seed type string and display name", () => {
  const start = eventTypeInfo(EventType.START_CALL);
  assert.equal(start?.typeString, "START_CALL");
  assert.equal(start?.displayName, "[Call] Start");
  assert.equal(start?.category, EventCategory.GENERAL);
  assert.equal(eventTypeInfo(EventType.CLICK)?.category, EventCategory.COBROWSE);
  assert.equal(eventTypeInfo(EventType.UNSPECIFIED), undefined);
  for (const value of EventTypeSchema.values) {
    if (value.number === 0) continue;
    const info = eventTypeInfo(value.number);
    assert.equal(`EVENT_TYPE_${info?.typeString}`, value.name);
    assert.ok(info?.displayName);
  }
});

test("newEventId returns distinct UUIDv7s", () => {
  const a = newEventId();
  assert.match(a, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.notEqual(a, newEventId());
});

const address = process.env["AUDITLOG_ADDR"];

test("live round trip: log, get, list, tail", { skip: address ? false : "AUDITLOG_ADDR is not set" }, async () => {
  // AUDITLOG_TOKEN and AUDITLOG_TLS_* (when set) reach the server through the SDK's own helper.
  const { client, close } = connectFromEnv();
  const signal = AbortSignal.timeout(30_000);
  const tenantId = `sdk-ts-${randomBytes(6).toString("hex")}`;
  const sessionId = `session-${randomBytes(6).toString("hex")}`;
  // Millisecond times survive any storage (BSON dates are milliseconds), so they compare exactly.
  const base = Date.now();
  try {
    const general = create(AuditEventSchema, {
      id: newEventId(),
      tenantId,
      tenantUserId: "agent-7",
      occurTime: timestampFromMs(base),
      payload: { case: "startCall", value: { callId: "call-1", customerId: "customer-42" } },
    });
    const logged = await client.logEvent({ event: general }, { signal });
    const g = logged.event!;
    assert.equal(logged.alreadyStored, false);
    assert.equal(g.id, general.id);
    assert.equal(g.tenantId, tenantId);
    assert.equal(g.eventType, EventType.START_CALL);
    assert.equal(g.sequence, 0n);
    assert.ok(g.receiveTime);
    assert.equal(timestampDate(g.occurTime!).getTime(), base);
    assert.deepEqual(g.payload.case === "startCall" && [g.payload.value.callId, g.payload.value.customerId], [
      "call-1",
      "customer-42",
    ]);

    // The same id and content again is an idempotent retry.
    const again = await client.logEvent({ event: general }, { signal });
    assert.equal(again.alreadyStored, true);
    assert.equal(again.event?.id, general.id);

    const cobrowse = create(AuditEventSchema, {
      id: newEventId(),
      tenantId,
      occurTime: timestampFromMs(base + 1000),
      cobrowse: { sessionId, actor: Actor.CUSTOMER },
      payload: { case: "click", value: { element: { name: "Buy now", id: "buy-button" } } },
    });
    const c = (await client.logEvent({ event: cobrowse }, { signal })).event!;
    assert.equal(c.eventType, EventType.CLICK);
    assert.equal(c.sequence, 1n);
    assert.equal(c.cobrowse?.sessionId, sessionId);
    assert.equal(c.cobrowse?.actor, Actor.CUSTOMER);
    assert.ok(c.payload.case === "click");
    assert.equal(c.payload.value.element?.name, "Buy now");
    assert.equal(c.payload.value.element?.id, "buy-button");

    // GetEvent returns each as stored.
    for (const want of [g, c]) {
      const got = await client.getEvent({ tenantId, id: want.id }, { signal });
      assertSameEvent(got.event, want);
    }

    // ListEvents: oldest first, one per page, then the session filter.
    const listed: AuditEvent[] = [];
    let pageToken = "";
    for (let pages = 0; ; pages++) {
      assert.ok(pages <= 3, "too many pages");
      const page = await client.listEvents({ tenantId, order: SortOrder.OLDEST_FIRST, pageSize: 1, pageToken }, { signal });
      listed.push(...page.events);
      pageToken = page.nextPageToken;
      if (pageToken === "") break;
    }
    assert.equal(listed.length, 2);
    assertSameEvent(listed[0], g);
    assertSameEvent(listed[1], c);
    const bySession = await client.listEvents({ tenantId, filter: { cobrowseSessionId: sessionId } }, { signal });
    assert.equal(bySession.events.length, 1);
    assert.equal(bySession.nextPageToken, "");
    assertSameEvent(bySession.events[0], c);

    // TailSession replays the session from its start, then says it caught up.
    const tailed: AuditEvent[] = [];
    let headSequence: bigint | undefined;
    for await (const msg of client.tailSession(
      { tenantId, sessionId, start: { case: "fromBeginning", value: true } },
      { signal: AbortSignal.timeout(15_000) },
    )) {
      assert.notEqual(msg.cursor, "", "every tail message carries a cursor");
      if (msg.kind.case === "events") tailed.push(...msg.kind.value.events);
      if (msg.kind.case === "caughtUp") {
        headSequence = msg.kind.value.headSequence;
        break;
      }
    }
    assert.equal(headSequence, 1n);
    assert.equal(tailed.length, 1);
    assertSameEvent(tailed[0], c);

    // The resuming tail helper sees the same replay.
    const viaHelper: AuditEvent[] = [];
    const tail = tailSession(
      client,
      { tenantId, sessionId, start: { case: "fromBeginning", value: true } },
      { signal: AbortSignal.timeout(15_000) },
    );
    for await (const msg of tail) {
      if (msg.kind.case === "events") viaHelper.push(...msg.kind.value.events);
      if (msg.kind.case === "caughtUp") break;
    }
    assert.equal(viaHelper.length, 1);
    assert.notEqual(tail.cursor, "");
    assertSameEvent(viaHelper[0], c);
  } finally {
    close();
  }
});

/** Compares two events; receive_time only for presence, whatever precision the server stores; not the ledger fields. */
function assertSameEvent(got: AuditEvent | undefined, want: AuditEvent): void {
  assert.ok(got, `event ${want.id} missing`);
  assert.ok(got.receiveTime, `event ${got.id} has no receive_time`);
  const a = clone(AuditEventSchema, got);
  const b = clone(AuditEventSchema, want);
  a.receiveTime = undefined;
  b.receiveTime = undefined;
  // The ledger's place is filled in once the event is sequenced: a read may have it, the
  // answer to LogEvent never does.
  for (const e of [a, b]) {
    e.ledgerSequence = 0n;
    e.ledgerHash = new Uint8Array(0);
  }
  assert.ok(equals(AuditEventSchema, a, b), `event differs: ${JSON.stringify(got, bigints)} vs ${JSON.stringify(want, bigints)}`);
}

function bigints(_key: string, value: unknown): unknown {
  return typeof value === "bigint" ? value.toString() : value;
}
