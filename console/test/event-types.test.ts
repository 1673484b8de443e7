// Display names come from the contract's enum value options, for every EventType value.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { EVENT_TYPES, displayName, eventTypeFromString, isCobrowseType, typeString } from "../src/event-types.js";
import { EventCategory, EventType, EventTypeSchema } from "../src/gen.js";

// The table of DESIGN.md ("The events"): what the contract must say, written out here on purpose.
const EXPECTED: [EventType, string, string][] = [
  [EventType.START_CALL, "START_CALL", "[Call] Start"],
  [EventType.MESSENGER_SEND, "MESSENGER_SEND", "[Messenger] Send message"],
  [EventType.LIVE_VIEW, "LIVE_VIEW", "[LiveView] joined"],
  [EventType.LOGGED_IN, "LOGGED_IN", "[Account] Logged in"],
  [EventType.ONLINE_STATUS_ONLINE, "ONLINE_STATUS_ONLINE", "[Agent] Go Online"],
  [EventType.ONLINE_STATUS_OFFLINE, "ONLINE_STATUS_OFFLINE", "[Agent] Go Offline"],
  [EventType.STATUS_CHANGE, "STATUS_CHANGE", "[Chat] Status changed"],
  [EventType.ROLE_CHANGE, "ROLE_CHANGE", "[Roles] changed"],
  [EventType.PERMISSION_CHANGE, "PERMISSION_CHANGE", "[Permissions] changed"],
  [EventType.PLUGIN_CHANGE, "PLUGIN_CHANGE", "[Plugin] changed"],
  [EventType.SETTINGS_CHANGE, "SETTINGS_CHANGE", "[Settings] changed"],
  [EventType.MEETING_CHANGE, "MEETING_CHANGE", "[Meeting] changed"],
  [EventType.CONFERENCE_AGENT, "CONFERENCE_AGENT", "[Meeting] Agent joined"],
  [EventType.CONFERENCE_RECORDING, "CONFERENCE_RECORDING", "[Meeting] Recording started"],
  [EventType.CLICK, "CLICK", "Clicked on element"],
  [EventType.SCROLL, "SCROLL", "Scroll on page or element"],
  [EventType.FORM, "FORM", "Form submitted"],
  [EventType.INPUT, "INPUT", "Input changed"],
  [EventType.PAGECHANGE, "PAGECHANGE", "Page changed"],
  [EventType.SELECTION, "SELECTION", "Text or elements selected"],
  [EventType.CUSTOM_EVENT, "CUSTOM_EVENT", "Custom event triggered via API"],
];

describe("event type metadata", () => {
  test("all 21 types have their display name and type string", () => {
    assert.equal(EVENT_TYPES.length, 21);
    for (const [type, str, name] of EXPECTED) {
      assert.equal(displayName(type), name, `display name of ${str}`);
      assert.equal(typeString(type), str);
      assert.equal(eventTypeFromString(str), type);
    }
  });

  test("every enum value but UNSPECIFIED is covered, in contract order", () => {
    const values = EventTypeSchema.values.filter((v) => v.number !== 0).map((v) => v.number);
    assert.deepEqual(
      EVENT_TYPES.map((m) => m.type),
      values,
    );
  });

  test("categories: 14 general, 7 co-browsing", () => {
    assert.equal(EVENT_TYPES.filter((m) => m.category === EventCategory.GENERAL).length, 14);
    assert.equal(EVENT_TYPES.filter((m) => m.category === EventCategory.COBROWSE).length, 7);
    assert.ok(isCobrowseType(EventType.CLICK));
    assert.ok(!isCobrowseType(EventType.LIVE_VIEW));
  });

  test("unknown and unspecified values still show something", () => {
    assert.equal(displayName(EventType.UNSPECIFIED), "EVENT_TYPE_UNSPECIFIED");
    assert.equal(displayName(9999), "Event type 9999");
    assert.equal(eventTypeFromString("NOPE"), undefined);
  });
});
