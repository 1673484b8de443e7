// Failed calls said for people: each code the console handles, with its google.rpc details.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorInfoSchema, RetryInfoSchema } from "../../clients/typescript/src/errors.js";
import { BadRequestSchema, describeError } from "../src/errors.js";

const info = (reason: string) => ({ desc: ErrorInfoSchema, value: { reason, domain: "auditlog.v1", metadata: {} } });

describe("describeError", () => {
  test("UNAUTHENTICATED", () => {
    const p = describeError(new ConnectError("token expired", Code.Unauthenticated), "list events");
    assert.equal(p.kind, "unauthenticated");
    assert.equal(p.serverMessage, "token expired");
  });

  test("PERMISSION_DENIED names the tenant", () => {
    const p = describeError(new ConnectError("other tenant", Code.PermissionDenied), "list events", "acme");
    assert.equal(p.kind, "permission");
    assert.match(p.message, /No permission to list events for tenant "acme"/);
  });

  test("UNAVAILABLE, database down or not", () => {
    assert.match(describeError(new ConnectError("x", Code.Unavailable), "list events").message, /server is unavailable/);
    const db = describeError(new ConnectError("x", Code.Unavailable, undefined, [info("ERROR_REASON_DATABASE_UNAVAILABLE")]), "list events");
    assert.equal(db.reason, "DATABASE_UNAVAILABLE");
    assert.match(db.message, /database/);
  });

  test("a network failure reads as unavailable", () => {
    const p = describeError(new ConnectError("Failed to fetch", Code.Unknown, undefined, undefined, new TypeError("Failed to fetch")), "list events");
    assert.equal(p.kind, "unavailable");
  });

  test("RESOURCE_EXHAUSTED with RetryInfo", () => {
    const p = describeError(
      new ConnectError("rate limited", Code.ResourceExhausted, undefined, [{ desc: RetryInfoSchema, value: { retryDelay: { seconds: 2n, nanos: 500_000_000 } } }]),
      "list events",
    );
    assert.equal(p.kind, "rate-limited");
    assert.equal(p.retryAfterMs, 2500);
    assert.match(p.message, /Try again in 3 seconds/);
  });

  test("INVALID_ARGUMENT lists the field violations", () => {
    const p = describeError(
      new ConnectError("bad", Code.InvalidArgument, undefined, [
        info("INVALID_ARGUMENT"),
        { desc: BadRequestSchema, value: { fieldViolations: [{ field: "filter.start_time", description: "after end_time" }] } },
      ]),
      "list events",
    );
    assert.equal(p.kind, "invalid");
    assert.deepEqual(p.violations, ["filter.start_time: after end_time"]);
    assert.match(p.message, /filter\.start_time: after end_time/);
  });

  test("details survive the Connect wire (router transport)", async () => {
    const { createRouterTransport, createClient } = await import("@connectrpc/connect");
    const { AuditLogService } = await import("../src/gen.js");
    const transport = createRouterTransport(({ service }) => {
      service(AuditLogService, {
        listEvents() {
          throw new ConnectError("bad token", Code.InvalidArgument, undefined, [info("ERROR_REASON_INVALID_PAGE_TOKEN")]);
        },
      });
    });
    const client = createClient(AuditLogService, transport);
    await assert.rejects(client.listEvents({ tenantId: "acme" }), (e: unknown) => {
      const p = describeError(e, "list events");
      assert.equal(p.reason, "INVALID_PAGE_TOKEN");
      assert.match(p.message, /page token is no longer valid/);
      return true;
    });
  });
});
