// Events for people: summaries, column values, and the reflection walk of the detail panel.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Actor, type AuditEvent, AuditEventSchema } from "../src/gen.js";
import { type FieldRow, actorLabel, customerOf, eventFields, formatTime, payloadName, sessionOf, summary } from "../src/present.js";
import { sampleEvents } from "./fake-service.js";

function byCase(events: AuditEvent[], c: string): AuditEvent {
  const e = events.find((x) => x.payload.case === c);
  assert.ok(e, c);
  return e;
}

function find(rows: FieldRow[], path: string[]): FieldRow | undefined {
  const [head, ...rest] = path;
  const row = rows.find((r) => r.name === head);
  if (!row || rest.length === 0) return row;
  return find(row.children ?? [], rest);
}

describe("summaries", () => {
  const events = sampleEvents();
  const expected: Record<string, string> = {
    startCall: "Call call-1 with customer cust-1",
    messengerSend: "Message to customer cust-2",
    liveView: "Joined co-browsing session cob-1",
    loggedIn: "",
    onlineStatusOnline: "",
    onlineStatusOffline: "",
    statusChange: "Chat with customer cust-1: Unresolved → Done",
    roleChange: "Role “admin” for tenant user user-9",
    permissionChange: "Role “admin”: events:read, =cmd()",
    pluginChange: 'Plugin “crm”: {"on":true}',
    settingsChange: "Section “widget”: {}",
    meetingChange: "Created or updated meeting “Weekly, \"sync\"” (conf-1)",
    conferenceAgent: "Call call-2 with customer cust-3",
    conferenceRecording: "Call call-2 with customer cust-3; agents: a, b; tags: t",
    click: "Clicked on “Buy now” (#buy)",
    scroll: "Scrolled the page to top 120, left 0",
    form: "Submitted form #checkout",
    input: "Input into “password”: masked value (hidden by the server)",
    pageChange: "Changed page to “Checkout” (https://shop.example/checkout)",
    selection: "Selected “42 €”",
    customEvent: 'Custom event “coupon”: "-10%"',
  };
  test("one per payload type (all 21)", () => {
    assert.equal(Object.keys(expected).length, 21);
    for (const [c, text] of Object.entries(expected)) assert.equal(summary(byCase(events, c)), text, c);
  });

  test("an unmasked input shows its text; a scroll of an element names it", () => {
    const input = create(AuditEventSchema, { payload: { case: "input", value: { text: "hello", element: { id: "q" } } } });
    assert.equal(summary(input), "Input into #q: “hello”");
    const scroll = create(AuditEventSchema, {
      payload: { case: "scroll", value: { position: { top: 1.25, left: 3 }, element: { name: "list" } } },
    });
    assert.equal(summary(scroll), "Scrolled “list” to top 1.3, left 3");
  });
});

describe("table columns", () => {
  const events = sampleEvents();
  test("customer, session, actor", () => {
    assert.equal(customerOf(byCase(events, "startCall")), "cust-1");
    assert.equal(customerOf(byCase(events, "loggedIn")), "");
    assert.equal(sessionOf(byCase(events, "liveView")), "cob-1");
    assert.equal(sessionOf(byCase(events, "click")), "cob-1");
    assert.equal(sessionOf(byCase(events, "startCall")), "");
    assert.equal(actorLabel(Actor.AGENT), "Agent");
    assert.equal(actorLabel(Actor.CUSTOMER), "Customer");
    assert.equal(actorLabel(undefined), "");
    assert.equal(payloadName(byCase(events, "pageChange")), "page_change");
  });

  test("times in a given time zone", () => {
    assert.match(formatTime(new Date(Date.UTC(2024, 4, 1, 10, 0, 1, 234)), "UTC"), /10:00:01[.,]234/);
    assert.equal(formatTime(undefined), "");
  });
});

describe("detail fields (reflection)", () => {
  test("every payload type shows its oneof member and its fields", () => {
    for (const event of sampleEvents()) {
      const rows = eventFields(event, "UTC");
      const name = payloadName(event);
      const payload = rows.find((r) => r.name === name);
      assert.ok(payload, `payload row ${name}`);
      assert.equal(payload.kind, "message");
      // Exactly one payload member is shown.
      const members = AuditEventSchema.fields.filter((f) => f.oneof?.localName === "payload").map((f) => f.name);
      assert.equal(rows.filter((r) => members.includes(r.name)).length, 1);
    }
  });

  test("common fields, enums, times, structs, values, lists", () => {
    const events = sampleEvents();
    const click = eventFields(byCase(events, "click"), "UTC");
    assert.equal(find(click, ["event_type"])?.value, "Clicked on element (CLICK)");
    assert.equal(find(click, ["cobrowse", "actor"])?.value, "AGENT");
    assert.equal(find(click, ["sequence"])?.value, "1");
    assert.equal(find(click, ["click", "element", "id"])?.value, "buy");
    assert.match(find(click, ["occur_time"])?.value ?? "", /\(2024-05-01T10:00:14\.000Z\)$/);
    assert.equal(find(click, ["tenant_id"])?.value, "acme");

    const plugin = eventFields(byCase(events, "pluginChange"), "UTC");
    assert.deepEqual(JSON.parse(find(plugin, ["plugin_change", "configuration"])?.value ?? ""), { on: true });
    assert.equal(find(plugin, ["cobrowse"])?.kind, "empty");

    const custom = eventFields(byCase(events, "customEvent"), "UTC");
    assert.deepEqual(JSON.parse(find(custom, ["custom_event", "value"])?.value ?? ""), "-10%");

    const perms = eventFields(byCase(events, "permissionChange"), "UTC");
    assert.deepEqual(
      find(perms, ["permission_change", "permissions"])?.children?.map((r) => r.value),
      ["events:read", "=cmd()"],
    );
    const meeting = eventFields(byCase(events, "meetingChange"), "UTC");
    assert.equal(find(meeting, ["meeting_change", "action"])?.value, "CREATE_OR_UPDATE");
    assert.equal(find(meeting, ["meeting_change", "conference", "start_time"])?.kind, "empty");

    const status = eventFields(byCase(events, "statusChange"), "UTC");
    assert.equal(find(status, ["status_change", "previous_status"])?.value, "Unresolved");
  });

  test("masked input is shown as masked", () => {
    const rows = eventFields(byCase(sampleEvents(), "input"), "UTC");
    const text = find(rows, ["input", "text"]);
    assert.equal(text?.kind, "masked");
    assert.equal(text?.value, "••••");
    assert.equal(find(rows, ["input", "masked"])?.value, "true");
    const plain = eventFields(create(AuditEventSchema, { payload: { case: "input", value: { text: "hi" } } }));
    assert.equal(find(plain, ["input", "text"])?.kind, "text");
  });

  test("an event without a payload or times still walks", () => {
    const rows = eventFields(create(AuditEventSchema, { id: "x", occurTime: timestampFromMs(0) }), "UTC");
    assert.equal(find(rows, ["id"])?.value, "x");
    assert.equal(find(rows, ["event_type"])?.kind, "empty");
    assert.equal(find(rows, ["receive_time"])?.kind, "empty");
  });
});
