// Paging through ListEvents with the next page token, and back with a stack of tokens.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { auditLogClient } from "../src/api.js";
import { describeError } from "../src/errors.js";
import { emptyQuery } from "../src/filters.js";
import { Actor, EventType, SortOrder } from "../src/gen.js";
import { EventPager, PageTokens } from "../src/paging.js";
import { TENANT, fakeServer, manyEvents, sampleEvents } from "./fake-service.js";

describe("PageTokens", () => {
  test("forward pushes, back pops", () => {
    const t = new PageTokens();
    t.restarted("A");
    assert.deepEqual([t.pageNumber, t.hasPrevious, t.hasNext, t.current], [1, false, true, ""]);
    t.advanced("B");
    assert.deepEqual([t.pageNumber, t.current, t.next, t.previousToken], [2, "A", "B", ""]);
    t.advanced("");
    assert.deepEqual([t.pageNumber, t.current, t.hasNext, t.previousToken], [3, "B", false, "A"]);
    t.wentBack("B");
    assert.deepEqual([t.pageNumber, t.current, t.next], [2, "A", "B"]);
    t.wentBack("A");
    assert.deepEqual([t.pageNumber, t.current, t.next, t.hasPrevious], [1, "", "A", false]);
  });
});

describe("EventPager", () => {
  const ids = (page: { events: { id: string }[] } | undefined): string[] => page?.events.map((e) => e.id) ?? [];

  test("walks 23 events in pages of 10: forward to the end and back to the start", async () => {
    const server = fakeServer(manyEvents(23));
    const pager = new EventPager(auditLogClient(server.transport), TENANT, { ...emptyQuery(), pageSize: 10 });
    const p1 = await pager.first();
    assert.deepEqual([p1?.pageNumber, p1?.hasPrevious, p1?.hasNext, p1?.events.length], [1, false, true, 10]);
    assert.equal(ids(p1)[0], "e-000022"); // newest first
    const p2 = await pager.next();
    assert.deepEqual([p2?.pageNumber, p2?.hasPrevious, p2?.hasNext], [2, true, true]);
    assert.equal(ids(p2)[0], "e-000012");
    const p3 = await pager.next();
    assert.deepEqual([p3?.pageNumber, p3?.hasNext, p3?.events.length], [3, false, 3]);
    assert.deepEqual(ids(p3), ["e-000002", "e-000001", "e-000000"]);
    // At the end "next" is a no-op that makes no call.
    const calls = server.listRequests.length;
    assert.equal((await pager.next())?.pageNumber, 3);
    assert.equal(server.listRequests.length, calls);
    const back2 = await pager.previous();
    assert.equal(back2?.pageNumber, 2);
    assert.deepEqual(ids(back2), ids(p2));
    const back1 = await pager.previous();
    assert.deepEqual([back1?.pageNumber, back1?.hasPrevious], [1, false]);
    assert.deepEqual(ids(back1), ids(p1));
    // The tokens sent: "", t1, t2, t1, "".
    const tokens = server.listRequests.map((r) => r.pageToken);
    assert.equal(tokens[0], "");
    assert.equal(tokens[3], tokens[1]);
    assert.equal(tokens[4], "");
    assert.ok(server.listRequests.every((r) => r.pageSize === 10 && r.tenantId === TENANT));
  });

  test("filters and order reach the server", async () => {
    const server = fakeServer(sampleEvents());
    const pager = new EventPager(auditLogClient(server.transport), TENANT, {
      ...emptyQuery(),
      eventTypes: [EventType.CLICK, EventType.PAGECHANGE, EventType.CUSTOM_EVENT],
      actor: Actor.AGENT,
      order: SortOrder.OLDEST_FIRST,
    });
    const page = await pager.first();
    assert.deepEqual(page?.events.map((e) => e.payload.case), ["click", "pageChange", "customEvent"]);
    assert.equal(page?.hasNext, false);
  });

  test("no match is an empty first page", async () => {
    const server = fakeServer(sampleEvents());
    const pager = new EventPager(auditLogClient(server.transport), TENANT, { ...emptyQuery(), customerId: "nobody" });
    const page = await pager.first();
    assert.deepEqual([page?.events.length, page?.hasNext, page?.hasPrevious], [0, false, false]);
  });

  test("a failed page leaves the walk where it was", async () => {
    const server = fakeServer(manyEvents(30));
    const client = auditLogClient(server.transport);
    const pager = new EventPager(client, TENANT, { ...emptyQuery(), pageSize: 10 });
    await pager.first();
    await pager.next();
    // Corrupt the next token, as a server restart with a new key would.
    pager.tokens.next = "garbage";
    await assert.rejects(pager.next(), (e: unknown) => {
      const p = describeError(e, "list events");
      assert.equal(p.kind, "invalid");
      assert.equal(p.reason, "INVALID_PAGE_TOKEN");
      return true;
    });
    assert.equal(pager.page.pageNumber, 2);
    assert.equal((await pager.previous())?.pageNumber, 1);
  });

  test("another tenant is PERMISSION_DENIED", async () => {
    const server = fakeServer(sampleEvents());
    const pager = new EventPager(auditLogClient(server.transport), "other", emptyQuery());
    await assert.rejects(pager.first(), (e: unknown) => e instanceof ConnectError && e.code === Code.PermissionDenied);
  });

  test("a newer fetch overtakes an older one", async () => {
    const server = fakeServer(manyEvents(30));
    const pager = new EventPager(auditLogClient(server.transport), TENANT, { ...emptyQuery(), pageSize: 10 });
    const older = pager.first();
    const newer = pager.first();
    assert.equal(await older, undefined);
    assert.equal((await newer)?.pageNumber, 1);
  });
});
