// Live tests of streamEvents against AUDITLOG_ADDR (skipped when unset): batches, per-event results, one-event messages.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { test } from "node:test";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import {
  Actor,
  type AuditEvent,
  AuditEventSchema,
  type AuditLogClient,
  ErrorReason,
  MAX_STREAM_BATCH,
  type StreamEventResult,
  type StreamEventsRequestSchema,
  connectFromEnv,
  streamEvents,
} from "../src/index.js";

const address = process.env["AUDITLOG_ADDR"];
const live = { skip: address ? false : "AUDITLOG_ADDR is not set" };

/** The client, keeping how many events each StreamEvents request carried. */
function recording(client: AuditLogClient): { client: AuditLogClient; sizes: number[] } {
  const sizes: number[] = [];
  async function* record(requests: AsyncIterable<MessageInitShape<typeof StreamEventsRequestSchema>>) {
    for await (const request of requests) {
      sizes.push(request.events?.length || (request.event ? 1 : 0));
      yield request;
    }
  }
  const streaming: AuditLogClient["streamEvents"] = (requests, options) => client.streamEvents(record(requests), options);
  return { client: { ...client, streamEvents: streaming }, sizes };
}

function startCall(tenantId: string, n: number): AuditEvent {
  return create(AuditEventSchema, {
    tenantId,
    tenantUserId: "agent-7",
    payload: { case: "startCall", value: { callId: `call-${n}`, customerId: "customer-42" } },
  });
}

function click(tenantId: string, sessionId: string): AuditEvent {
  return create(AuditEventSchema, {
    tenantId,
    cobrowse: { sessionId, actor: Actor.CUSTOMER },
    payload: { case: "click", value: { element: { id: "buy" } } },
  });
}

async function collect(results: AsyncIterable<StreamEventResult>): Promise<StreamEventResult[]> {
  const all: StreamEventResult[] = [];
  for await (const result of results) all.push(result);
  return all;
}

test("streamEvents sends ready events in batches, one result per event in order", live, async () => {
  const { client: plain, close } = connectFromEnv();
  const { client, sizes } = recording(plain);
  const tenantId = `sdk-ts-${randomBytes(6).toString("hex")}`;
  const sessionId = `session-${randomBytes(6).toString("hex")}`;
  try {
    const events = Array.from({ length: 2500 }, (_, n) => (n % 10 === 0 ? click(tenantId, sessionId) : startCall(tenantId, n)));
    if (events[7]!.payload.case === "startCall") events[7]!.payload.value.callId = "call\x07"; // a control character
    const results = await collect(streamEvents(client, events, { maxBatch: 5000, signal: AbortSignal.timeout(60_000) }));

    assert.equal(results.length, events.length);
    let sequence = 0n;
    results.forEach((result, n) => {
      if (n === 7) {
        assert.equal(result.result.case, "error");
        assert.equal(result.result.value?.reason, ErrorReason.INVALID_ARGUMENT);
        return;
      }
      assert.equal(result.result.case, "ack", `event ${n}`);
      assert.notEqual(events[n]!.id, "");
      assert.equal(result.result.value.id, events[n]!.id);
      // The session's clicks take sequences in the order they were given.
      if (events[n]!.cobrowse) assert.equal(result.result.value.sequence, ++sequence);
    });
    // Batches of what was ready, within the contract's limit: the server refused none.
    assert.equal(Math.max(...sizes), MAX_STREAM_BATCH);
    assert.equal(sizes.reduce((a, b) => a + b, 0), events.length);
  } finally {
    close();
  }
});

test("streamEvents sends a lone event at once, as a one-event message", live, async () => {
  const { client: plain, close } = connectFromEnv();
  const { client, sizes } = recording(plain);
  const tenantId = `sdk-ts-${randomBytes(6).toString("hex")}`;
  const answered: StreamEventResult[] = [];
  let answer = (): void => {};
  // Each event is made only once the previous one is answered: a stream that held a lone event
  // back to fill a batch would never answer.
  async function* oneAtATime(): AsyncGenerator<AuditEvent> {
    for (let n = 0; n < 3; n++) {
      const seen = new Promise<void>((resolve) => (answer = resolve));
      const event = startCall(tenantId, n);
      if (n === 1) event.tenantUserId = ""; // a general event needs its acting user
      yield event;
      await seen;
    }
  }
  try {
    for await (const result of streamEvents(client, oneAtATime(), { signal: AbortSignal.timeout(30_000) })) {
      answered.push(result);
      answer();
    }
    assert.deepEqual(answered.map((r) => r.result.case), ["ack", "error", "ack"]);
    assert.deepEqual(sizes, [1, 1, 1]);
  } finally {
    close();
  }
});
