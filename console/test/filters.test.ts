// The Activity Logs filter <-> URL round trip, and the ListEventsRequest it becomes.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import {
  type EventQuery,
  emptyQuery,
  fromLocalInputValue,
  listRequest,
  queryFromParams,
  queryToParams,
  sameQuery,
  toLocalInputValue,
} from "../src/filters.js";
import { Actor, EventType, SortOrder } from "../src/gen.js";
import { parseRoute, routeHash } from "../src/routes.js";

function fullQuery(): EventQuery {
  return {
    eventTypes: [EventType.START_CALL, EventType.CLICK, EventType.INPUT],
    tenantUserId: "user 7/ä",
    customerId: "cust&1=2",
    callId: "call-1",
    sessionId: "cob#1?",
    actor: Actor.CUSTOMER,
    from: new Date("2024-05-01T10:00:00.000Z"),
    to: new Date("2024-05-02T00:00:00.250Z"),
    order: SortOrder.OLDEST_FIRST,
    pageSize: 100,
  };
}

describe("filter URL", () => {
  test("an empty query is an empty query string", () => {
    assert.equal(queryToParams(emptyQuery()).toString(), "");
    assert.deepEqual(queryFromParams(new URLSearchParams("")), emptyQuery());
  });

  test("every filter field survives URL -> query -> URL", () => {
    const query = fullQuery();
    const params = queryToParams(query);
    assert.equal(
      params.toString(),
      "types=START_CALL%2CCLICK%2CINPUT&user=user+7%2F%C3%A4&customer=cust%261%3D2&call=call-1&session=cob%231%3F" +
        "&actor=customer&from=2024-05-01T10%3A00%3A00.000Z&to=2024-05-02T00%3A00%3A00.250Z&order=oldest&size=100",
    );
    const back = queryFromParams(new URLSearchParams(params.toString()));
    assert.deepEqual(back, query);
    assert.ok(sameQuery(back, query));
  });

  test("through the route hash too (Activity Logs view)", () => {
    const query = fullQuery();
    const hash = routeHash({ view: "activity", query });
    assert.ok(hash.startsWith("#/events?"));
    const route = parseRoute(hash);
    assert.equal(route.view, "activity");
    assert.deepEqual(route.view === "activity" && route.query, query);
  });

  test("each field alone", () => {
    const cases: [Partial<EventQuery>, string][] = [
      [{ eventTypes: [EventType.LOGGED_IN] }, "types=LOGGED_IN"],
      [{ tenantUserId: "u" }, "user=u"],
      [{ customerId: "c" }, "customer=c"],
      [{ callId: "k" }, "call=k"],
      [{ sessionId: "s" }, "session=s"],
      [{ actor: Actor.AGENT }, "actor=agent"],
      [{ from: new Date(0) }, "from=1970-01-01T00%3A00%3A00.000Z"],
      [{ to: new Date(0) }, "to=1970-01-01T00%3A00%3A00.000Z"],
      [{ order: SortOrder.OLDEST_FIRST }, "order=oldest"],
      [{ pageSize: 25 }, "size=25"],
    ];
    for (const [patch, expected] of cases) {
      const query = { ...emptyQuery(), ...patch };
      assert.equal(queryToParams(query).toString(), expected);
      assert.deepEqual(queryFromParams(new URLSearchParams(expected)), query);
    }
  });

  test("junk in a hand-edited URL is ignored, not fatal", () => {
    const q = queryFromParams(new URLSearchParams("types=NOPE,CLICK,CLICK,,&actor=robot&from=yesterday&size=100000&order=sideways"));
    assert.deepEqual(q, { ...emptyQuery(), eventTypes: [EventType.CLICK] });
  });

  test("session review routes", () => {
    assert.deepEqual(parseRoute("#/sessions/cob%2F1?follow=1"), { view: "session", sessionId: "cob/1", follow: true });
    assert.equal(routeHash({ view: "session", sessionId: "cob/1", follow: true }), "#/sessions/cob%2F1?follow=1");
    assert.deepEqual(parseRoute("#/sessions"), { view: "session", sessionId: "", follow: false });
    assert.deepEqual(parseRoute(""), { view: "activity", query: emptyQuery() });
    assert.deepEqual(parseRoute("#/nowhere"), { view: "activity", query: emptyQuery() });
  });

  test("event links name their tenant", () => {
    assert.deepEqual(parseRoute("#/events/01a2%2Fx?tenant=globex"), { view: "event", eventId: "01a2/x", tenantId: "globex" });
    assert.equal(routeHash({ view: "event", eventId: "01a2/x", tenantId: "globex" }), "#/events/01a2%2Fx?tenant=globex");
    assert.deepEqual(parseRoute("#/events/e1"), { view: "event", eventId: "e1", tenantId: "" });
    // Without an id it is the list, filters and all.
    assert.equal(parseRoute("#/events?user=u").view, "activity");
  });
});

describe("ListEventsRequest of a query", () => {
  test("carries every filter field, the order, the page size and token", () => {
    const req = listRequest("acme", fullQuery(), "tok");
    assert.equal(req.tenantId, "acme");
    assert.equal(req.pageToken, "tok");
    assert.equal(req.pageSize, 100);
    assert.equal(req.order, SortOrder.OLDEST_FIRST);
    const f = req.filter;
    assert.ok(f);
    assert.deepEqual(f.eventTypes, [EventType.START_CALL, EventType.CLICK, EventType.INPUT]);
    assert.equal(f.tenantUserId, "user 7/ä");
    assert.equal(f.customerId, "cust&1=2");
    assert.equal(f.callId, "call-1");
    assert.equal(f.cobrowseSessionId, "cob#1?");
    assert.equal(f.actor, Actor.CUSTOMER);
    assert.equal(f.startTime && timestampDate(f.startTime).toISOString(), "2024-05-01T10:00:00.000Z");
    assert.equal(f.endTime && timestampDate(f.endTime).toISOString(), "2024-05-02T00:00:00.250Z");
  });

  test("an empty query sets no time bounds", () => {
    const f = listRequest("acme", emptyQuery()).filter;
    assert.equal(f?.startTime, undefined);
    assert.equal(f?.endTime, undefined);
  });
});

describe("datetime-local values", () => {
  test("local input value <-> Date round trip (to the second)", () => {
    const date = new Date(2024, 4, 1, 9, 5, 7);
    assert.equal(toLocalInputValue(date), "2024-05-01T09:05:07");
    assert.equal(fromLocalInputValue("2024-05-01T09:05:07")?.getTime(), date.getTime());
    assert.equal(fromLocalInputValue("2024-05-01T09:05")?.getTime(), new Date(2024, 4, 1, 9, 5).getTime());
    assert.equal(fromLocalInputValue(""), undefined);
    assert.equal(fromLocalInputValue("garbage"), undefined);
  });
});
