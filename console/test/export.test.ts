// Downloads: CSV cells (formula neutralisation, quoting), records, JSONL, and reading every event of a
// query through ListEvents pages or through an ExportEvents stream when the contract has one.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { create, createFileRegistry, fromJsonString, type DescService } from "@bufbuild/protobuf";
import {
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  FileDescriptorProtoSchema,
} from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createRouterTransport } from "@connectrpc/connect";
import {
  CSV_COLUMNS,
  EXPORT_EVENTS_PER_MESSAGE,
  buildExport,
  csvCell,
  csvRecord,
  csvRow,
  exportEvents,
  exportFileName,
  eventsIn,
  exportRequest,
  exportMethod,
} from "../src/export.js";
import { emptyQuery } from "../src/filters.js";
import {
  Actor,
  type AuditEvent,
  AuditEventSchema,
  AuditLogService,
  EventType,
  ExportEventsResponseSchema,
  SortOrder,
  file_auditlog_v1_audit_event,
  file_auditlog_v1_enums,
  file_auditlog_v1_service,
} from "../src/gen.js";
import { TENANT, fakeServer, manyEvents, sampleEvents } from "./fake-service.js";

/** A small RFC 4180 reader, to check what a spreadsheet would read. */
function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let cell = "";
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        cell += '"';
        i++;
      } else if (c === '"') quoted = false;
      else cell += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") {
      row.push(cell);
      cell = "";
    } else if (c === "\r" && text[i + 1] === "\n") {
      row.push(cell);
      rows.push(row);
      row = [];
      cell = "";
      i++;
    } else cell += c;
  }
  assert.equal(cell, "", "text ends with CRLF");
  return rows;
}

describe("CSV cells", () => {
  test("formula starts get a leading apostrophe", () => {
    assert.equal(csvCell("=1+2"), "'=1+2");
    assert.equal(csvCell("+49 30 1234"), "'+49 30 1234");
    assert.equal(csvCell("-10%"), "'-10%");
    assert.equal(csvCell("@SUM(A1)"), "'@SUM(A1)");
    assert.equal(csvCell("\tx"), "'\tx");
    assert.equal(csvCell("\rx"), '"\'\rx"');
    assert.equal(csvCell("a=1"), "a=1");
    assert.equal(csvCell(""), "");
  });

  test("quoting of commas, quotes and line breaks", () => {
    assert.equal(csvCell("plain"), "plain");
    assert.equal(csvCell("a,b"), '"a,b"');
    assert.equal(csvCell('say "hi"'), '"say ""hi"""');
    assert.equal(csvCell("two\nlines"), '"two\nlines"');
    assert.equal(csvCell('=HYPERLINK("x","y")'), '"\'=HYPERLINK(""x"",""y"")"');
    assert.equal(csvRow(["a", "b,c"]), 'a,"b,c"\r\n');
  });
});

describe("CSV records", () => {
  test("one column per common field, the display name, the payload as JSON", () => {
    const events = sampleEvents();
    const text = csvRow(CSV_COLUMNS) + events.map(csvRecord).join("");
    const rows = parseCsv(text);
    assert.deepEqual(rows[0], [...CSV_COLUMNS]);
    assert.equal(rows.length, events.length + 1);
    for (const row of rows) assert.equal(row.length, CSV_COLUMNS.length);
    const col = (name: (typeof CSV_COLUMNS)[number]): number => CSV_COLUMNS.indexOf(name);

    const start = rows[1]!;
    assert.equal(start[col("id")], "g-00");
    assert.equal(start[col("event_type")], "START_CALL");
    assert.equal(start[col("display_name")], "[Call] Start");
    assert.equal(start[col("occur_time")], "2024-05-01T10:00:00.000Z");
    assert.equal(start[col("receive_time")], "2024-05-01T10:00:00.005Z");
    assert.equal(start[col("sequence")], "");
    assert.equal(start[col("payload_type")], "start_call");
    assert.deepEqual(JSON.parse(start[col("payload")]!), { callId: "call-1", customerId: "cust-1" });

    const meeting = rows.find((r) => r[col("event_type")] === "MEETING_CHANGE")!;
    assert.deepEqual(JSON.parse(meeting[col("payload")]!), {
      action: "MEETING_ACTION_CREATE_OR_UPDATE",
      conference: { id: "conf-1", title: 'Weekly, "sync"' },
    });

    const click = rows.find((r) => r[col("event_type")] === "CLICK")!;
    assert.equal(click[col("session_id")], "cob-1");
    assert.equal(click[col("actor")], "AGENT");
    assert.equal(click[col("sequence")], "1");
  });

  test("hostile ids are neutralised in the file", () => {
    const event = create(AuditEventSchema, {
      id: "=cmd|' /C calc'!A0",
      tenantId: TENANT,
      tenantUserId: "@admin",
      eventType: EventType.LOGGED_IN,
      payload: { case: "loggedIn", value: {} },
    });
    const [row] = parseCsv(csvRecord(event));
    assert.equal(row?.[0], "'=cmd|' /C calc'!A0");
    assert.equal(row?.[CSV_COLUMNS.indexOf("tenant_user_id")], "'@admin");
  });
});

describe("exports through ListEvents", () => {
  test("pages of 1000 until the last page, CSV", async () => {
    const server = fakeServer(manyEvents(2500));
    const progress: number[] = [];
    const { parts, count } = await buildExport("csv", server.transport, TENANT, emptyQuery(), {
      onProgress: (n, via) => {
        assert.equal(via, "ListEvents");
        progress.push(n);
      },
    });
    assert.equal(count, 2500);
    assert.deepEqual(progress, [1000, 2000, 2500]);
    assert.deepEqual(
      server.listRequests.map((r) => r.pageSize),
      [1000, 1000, 1000],
    );
    const rows = parseCsv(parts.join(""));
    assert.equal(rows.length, 2501);
    assert.equal(rows[1]?.[0], "e-002499"); // the query's order: newest first
  });

  test("JSONL: one event per line, read back equal", async () => {
    const server = fakeServer(sampleEvents());
    const query = { ...emptyQuery(), order: SortOrder.OLDEST_FIRST as const };
    const { parts, count } = await buildExport("jsonl", server.transport, TENANT, query);
    const lines = parts.join("").split("\n");
    assert.equal(lines.pop(), "");
    assert.equal(lines.length, count);
    const back = lines.map((l) => fromJsonString(AuditEventSchema, l));
    assert.deepEqual(
      back.map((e) => e.id),
      sampleEvents().map((e) => e.id),
    );
    const input = back.find((e) => e.payload.case === "input");
    assert.equal(input?.payload.case === "input" && input.payload.value.masked, true);
  });

  test("the filter applies to the download", async () => {
    const server = fakeServer(sampleEvents());
    const { count } = await buildExport("csv", server.transport, TENANT, { ...emptyQuery(), actor: Actor.CUSTOMER });
    assert.equal(count, 4);
    assert.equal(server.listRequests[0]?.filter?.actor, Actor.CUSTOMER);
  });

  test("file names", () => {
    assert.equal(exportFileName("acme", "csv", new Date("2024-05-01T10:00:00.123Z")), "auditlog-acme-2024-05-01T10-00-00Z.csv");
    assert.equal(exportFileName("a/b c", "jsonl", new Date(0)), "auditlog-a_b_c-1970-01-01T00-00-00Z.jsonl");
  });
});

// A contract that has ExportEvents, as a later version may: described here, served by a fake.
const { STRING, MESSAGE, ENUM } = FieldDescriptorProto_Type;
const { OPTIONAL, REPEATED } = FieldDescriptorProto_Label;
function exportService(withFilter: boolean): DescService {
  const registry = createFileRegistry(
    create(FileDescriptorProtoSchema, {
      name: "auditlog/v1test/export.proto",
      package: "auditlog.v1test",
      dependency: ["auditlog/v1/audit_event.proto", "auditlog/v1/enums.proto", "auditlog/v1/service.proto"],
      syntax: "proto3",
      messageType: [
        {
          name: "ExportEventsRequest",
          field: [
            { name: "tenant_id", jsonName: "tenantId", number: 1, type: STRING, label: OPTIONAL },
            ...(withFilter
              ? [{ name: "filter", jsonName: "filter", number: 2, type: MESSAGE, label: OPTIONAL, typeName: ".auditlog.v1.EventFilter" }]
              : []),
            { name: "order", jsonName: "order", number: 3, type: ENUM, label: OPTIONAL, typeName: ".auditlog.v1.SortOrder" },
          ],
        },
        { name: "Checkpoint", field: [{ name: "hash", jsonName: "hash", number: 1, type: STRING, label: OPTIONAL }] },
        {
          name: "ExportEventsResponse",
          field: [
            { name: "events", jsonName: "events", number: 1, type: MESSAGE, label: REPEATED, typeName: ".auditlog.v1.AuditEvent" },
            { name: "checkpoint", jsonName: "checkpoint", number: 2, type: MESSAGE, label: OPTIONAL, typeName: ".auditlog.v1test.Checkpoint" },
            { name: "cursor", jsonName: "cursor", number: 3, type: STRING, label: OPTIONAL },
          ],
        },
      ],
      service: [
        {
          name: "ExportService",
          method: [
            {
              name: "ExportEvents",
              inputType: ".auditlog.v1test.ExportEventsRequest",
              outputType: ".auditlog.v1test.ExportEventsResponse",
              serverStreaming: true,
            },
          ],
        },
      ],
    }),
    (name) =>
      ({
        "auditlog/v1/audit_event.proto": file_auditlog_v1_audit_event,
        "auditlog/v1/enums.proto": file_auditlog_v1_enums,
        "auditlog/v1/service.proto": file_auditlog_v1_service,
      })[name],
  );
  const service = registry.getService("auditlog.v1test.ExportService");
  assert.ok(service);
  return service;
}

function exportServer(service: DescService, events: AuditEvent[], fail?: ConnectError) {
  const requests: Record<string, unknown>[] = [];
  const list = fakeServer(events);
  const transport = createRouterTransport(({ service: add }) => {
    add(AuditLogService, {
      listEvents: async (req) => {
        list.listRequests.push(req);
        return { events: events.slice(0, 1000), nextPageToken: "" };
      },
    });
    add(service, {
      async *exportEvents(req: Record<string, unknown>) {
        requests.push(req);
        if (fail) throw fail;
        yield { events: events.slice(0, 2) };
        yield { checkpoint: { hash: "abc" } }; // no events in it: skipped
        yield { events: events.slice(2), cursor: "c" };
      },
    } as never);
  });
  return { transport, requests, listRequests: list.listRequests };
}

describe("exports through ExportEvents (when the contract has it)", () => {
  test("the generated service has ExportEvents (issue 10's ledger export): downloads use it", () => {
    assert.equal(exportMethod(AuditLogService)?.name, "ExportEvents");
  });

  test("streams the events, with tenant, filter and order in the request", async () => {
    const service = exportService(true);
    const events = sampleEvents();
    const server = exportServer(service, events);
    const query = { ...emptyQuery(), tenantUserId: "user-1", order: SortOrder.OLDEST_FIRST as const };
    const seen: string[] = [];
    for await (const batch of exportEvents(server.transport, TENANT, query, {
      service,
      onProgress: (_n, via) => assert.equal(via, "ExportEvents"),
    })) {
      seen.push(...batch.map((e) => e.id));
    }
    assert.deepEqual(seen, events.map((e) => e.id));
    assert.equal(server.listRequests.length, 0);
    const req = server.requests[0] as { tenantId: string; filter: { tenantUserId: string }; order: SortOrder };
    assert.equal(req.tenantId, TENANT);
    assert.equal(req.filter.tenantUserId, "user-1");
    assert.equal(req.order, SortOrder.OLDEST_FIRST);
  });

  test("the service's own ExportEvents is asked for batches, and a batch's events are read in order", () => {
    const method = exportMethod(AuditLogService);
    assert.ok(method);
    const request = exportRequest(method.input, TENANT, emptyQuery()) as unknown as { eventsPerMessage: number };
    assert.equal(request.eventsPerMessage, EXPORT_EVENTS_PER_MESSAGE);
    const events = sampleEvents().slice(0, 3);
    const response = create(ExportEventsResponseSchema, {
      item: { case: "batch", value: { events: events.map((event) => ({ event, cursor: `c-${event.id}` })) } },
    });
    const found = eventsIn(method.output, response as unknown as Record<string, unknown>);
    assert.deepEqual(
      found.map((e) => e.id),
      events.map((e) => e.id),
    );
  });

  test("falls back to ListEvents when the token may not export (PERMISSION_DENIED before any event)", async () => {
    const service = exportService(true);
    const server = exportServer(service, sampleEvents(), new ConnectError("missing scope events:export", Code.PermissionDenied));
    const { count } = await buildExport("csv", server.transport, TENANT, emptyQuery(), { service });
    assert.equal(count, sampleEvents().length);
    assert.equal(server.requests.length, 1);
    assert.equal(server.listRequests.length, 1);
  });

  test("other failures are not hidden", async () => {
    const service = exportService(true);
    const server = exportServer(service, sampleEvents(), new ConnectError("down", Code.Unavailable));
    await assert.rejects(buildExport("csv", server.transport, TENANT, emptyQuery(), { service }), (e: unknown) => e instanceof ConnectError && e.code === Code.Unavailable);
  });

  test("a request without a filter field is used only for unfiltered downloads", () => {
    const service = exportService(false);
    const method = exportMethod(service);
    assert.ok(method);
    assert.ok(exportRequest(method.input, TENANT, emptyQuery()));
    assert.equal(exportRequest(method.input, TENANT, { ...emptyQuery(), callId: "c" }), undefined);
  });

  test("a filtered download with such a contract pages through ListEvents", async () => {
    const service = exportService(false);
    const server = exportServer(service, sampleEvents());
    const { count } = await buildExport("jsonl", server.transport, TENANT, { ...emptyQuery(), callId: "call-1" }, { service });
    assert.equal(server.requests.length, 0);
    assert.equal(server.listRequests.length, 1);
    assert.equal(count, sampleEvents().length); // this fake ListEvents does not filter
  });
});
