// Offline tests of bearer tokens, TLS/mTLS, the AUDITLOG_* environment, RetryInfo and the resuming tail,
// each against a stub AuditLogService served by the test on an ephemeral port (TLS from test/fixtures/tls).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { after, test } from "node:test";
import type { TLSSocket } from "node:tls";
import { type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import {
  AuditLogService,
  CURSOR_TRAILER,
  ErrorInfoSchema,
  RetryInfoSchema,
  type TailSessionRequest,
  TailSessionResponseSchema,
  type AuditLogConnection,
  type ConnectOptions,
  connectAuditLog,
  connectFromEnv,
  newEventId,
  optionsFromEnv,
  retryDelayMs,
  tailSession,
} from "../src/index.js";

const fixtures = join(import.meta.dirname, "fixtures", "tls");
const pem = (name: string) => join(fixtures, name);

type TailReply = MessageInitShape<typeof TailSessionResponseSchema>;

/** What the stub saw; `tail` serves TailSession (call counts from 1). */
interface Stub {
  auth: string[];
  clientNames: string[];
  tailCursors: string[];
  tail?: (call: number, req: TailSessionRequest, ctx: HandlerContext) => AsyncIterable<TailReply>;
}

const cleanups: (() => Promise<void> | void)[] = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** Serves a stub AuditLogService on an ephemeral loopback port: plaintext, TLS, or mTLS. */
async function serve(tls?: "tls" | "mtls"): Promise<{ stub: Stub; address: string }> {
  const stub: Stub = { auth: [], clientNames: [], tailCursors: [] };
  const handler = connectNodeAdapter({
    routes: (router) =>
      router.service(AuditLogService, {
        logEvent(req, ctx) {
          stub.auth.push(ctx.requestHeader.get("authorization") ?? "");
          return { event: req.event };
        },
        async *tailSession(req, ctx) {
          stub.auth.push(ctx.requestHeader.get("authorization") ?? "");
          stub.tailCursors.push(req.start.case === "cursor" ? req.start.value : "");
          yield* stub.tail!(stub.tailCursors.length, req, ctx);
        },
      }),
  });
  const server = tls
    ? http2.createSecureServer(
        {
          key: readFileSync(pem("server.key")),
          cert: readFileSync(pem("server.pem")),
          ca: readFileSync(pem("ca.pem")),
          requestCert: tls === "mtls",
          rejectUnauthorized: tls === "mtls",
        },
        handler,
      )
    : http2.createServer(handler);
  server.on("secureConnection", (socket: TLSSocket) => {
    const cn = socket.getPeerCertificate().subject?.CN;
    if (cn) stub.clientNames.push(String(cn));
  });
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (session) => {
    sessions.add(session);
    session.on("close", () => sessions.delete(session));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        for (const session of sessions) session.destroy();
        server.close(() => resolve());
      }),
  );
  return { stub, address: `127.0.0.1:${(server.address() as AddressInfo).port}` };
}

function connect(options: string | ConnectOptions): AuditLogConnection {
  const conn = connectAuditLog(options);
  cleanups.push(() => conn.close());
  return conn;
}

async function logOne(conn: AuditLogConnection): Promise<void> {
  // A bound on a hung call, not a speed assertion.
  await conn.client.logEvent({ event: { id: newEventId(), tenantId: "acme" } }, { signal: AbortSignal.timeout(10_000) });
}

/** A provider returning "token-1", "token-2", ... and how many it handed out. */
function countingTokens(): { provider: () => Promise<string>; issued: () => number } {
  let n = 0;
  return { provider: async () => `token-${++n}`, issued: () => n };
}

test("the token provider is asked for every call, over plaintext", async () => {
  const { stub, address } = await serve();
  const tokens = countingTokens();
  const conn = connect({ address, token: tokens.provider });
  for (let i = 0; i < 3; i++) await logOne(conn);
  assert.deepEqual(stub.auth, ["Bearer token-1", "Bearer token-2", "Bearer token-3"]);
  assert.equal(tokens.issued(), 3);
});

test("a static token, and no header without a token", async () => {
  const { stub, address } = await serve();
  await logOne(connect({ address, token: "static-token" }));
  await logOne(connect(address));
  assert.deepEqual(stub.auth, ["Bearer static-token", ""]);
});

test("a failing token provider fails the call with UNAUTHENTICATED", async () => {
  const { stub, address } = await serve();
  const conn = connect({
    address,
    token: () => {
      throw new Error("identity provider down");
    },
  });
  await assert.rejects(logOne(conn), (e: unknown) => {
    assert.ok(e instanceof ConnectError);
    assert.equal(e.code, Code.Unauthenticated);
    assert.match(e.message, /identity provider down/);
    return true;
  });
  assert.deepEqual(stub.auth, []);
});

test("TLS: the right CA works, a plaintext client and the wrong CA are refused", async () => {
  const { stub, address } = await serve("tls");
  await logOne(connect({ address, token: "tls-token", tls: { caFile: pem("ca.pem") } }));
  // The certificate names localhost and 127.0.0.1: an override is verified too.
  await logOne(connect({ address, tls: { caFile: pem("ca.pem"), serverName: "localhost" } }));
  assert.deepEqual(stub.auth, ["Bearer tls-token", ""]);

  for (const options of [
    { address }, // plaintext
    { address, tls: { caFile: pem("other-ca.pem") } },
    { address, tls: { caFile: pem("ca.pem"), serverName: "auditlog.invalid" } },
    { address, tls: true as const }, // Node's root store
  ]) {
    await assert.rejects(logOne(connect(options)), ConnectError, JSON.stringify(options));
  }
  assert.equal(stub.auth.length, 2, "a refused client reached the service");
});

test("mTLS: the client certificate from AUDITLOG_TLS_CERT/KEY is presented", async () => {
  const { stub, address } = await serve("mtls");
  const env = { AUDITLOG_ADDR: address, AUDITLOG_TOKEN: "env-token", AUDITLOG_TLS_CA: pem("ca.pem") };
  const noCert = connectFromEnv(env);
  cleanups.push(() => noCert.close());
  await assert.rejects(logOne(noCert), ConnectError);
  assert.deepEqual(stub.auth, []);

  const conn = connectFromEnv({ ...env, AUDITLOG_TLS_CERT: pem("client.pem"), AUDITLOG_TLS_KEY: pem("client.key") });
  cleanups.push(() => conn.close());
  await logOne(conn);
  assert.deepEqual(stub.auth, ["Bearer env-token"]);
  assert.deepEqual(stub.clientNames, ["sdk-test-client"]);
});

test("optionsFromEnv", () => {
  assert.deepEqual(optionsFromEnv({}), { address: "127.0.0.1:50051" });
  // A client certificate without a CA must not quietly become a plaintext connection.
  assert.throws(() => optionsFromEnv({ AUDITLOG_TLS_CERT: "c.pem", AUDITLOG_TLS_KEY: "c.key" }), /AUDITLOG_TLS_CA/);
  assert.deepEqual(
    optionsFromEnv({
      AUDITLOG_ADDR: "auditlog:443",
      AUDITLOG_TOKEN: "t",
      AUDITLOG_TLS_CA: "ca.pem",
      AUDITLOG_TLS_CERT: "c.pem",
      AUDITLOG_TLS_KEY: "c.key",
      AUDITLOG_TLS_SERVER_NAME: "auditlog.internal",
    }),
    {
      address: "auditlog:443",
      token: "t",
      tls: { caFile: "ca.pem", certFile: "c.pem", keyFile: "c.key", serverName: "auditlog.internal" },
    },
  );
});

function rateLimited(delayMs: number, cursor?: string): ConnectError {
  return new ConnectError("rate limited", Code.ResourceExhausted, cursor ? { [CURSOR_TRAILER]: cursor } : undefined, [
    { desc: ErrorInfoSchema, value: { reason: "RATE_LIMITED", domain: "auditlog.v1" } },
    {
      desc: RetryInfoSchema,
      value: { retryDelay: { seconds: BigInt(Math.floor(delayMs / 1000)), nanos: (delayMs % 1000) * 1_000_000 } },
    },
  ]);
}

function events(...sequences: number[]): TailReply[] {
  return sequences.map((s) => ({
    cursor: `c${s}`,
    kind: { case: "events", value: { events: [{ id: `e${s}`, tenantId: "acme", sequence: BigInt(s) }] } },
  }));
}

test("retryDelayMs reads the RetryInfo detail received over the wire", async () => {
  assert.equal(retryDelayMs(new Error("plain")), undefined);
  assert.equal(retryDelayMs(new ConnectError("no details", Code.ResourceExhausted)), undefined);
  const { stub, address } = await serve();
  stub.tail = async function* () {
    yield* [];
    throw rateLimited(1500);
  };
  const conn = connect(address);
  const error = await (async () => {
    try {
      for await (const _ of conn.client.tailSession({ tenantId: "acme", sessionId: "s" })) void _;
    } catch (e) {
      return e;
    }
    return undefined;
  })();
  assert.ok(error instanceof ConnectError);
  assert.equal(error.code, Code.ResourceExhausted);
  assert.equal(retryDelayMs(error), 1500);
  assert.equal(error.findDetails(ErrorInfoSchema)[0]?.reason, "RATE_LIMITED");
});

async function collect(conn: AuditLogConnection, options: Parameters<typeof tailSession>[2] = {}) {
  const tail = tailSession(conn.client, { tenantId: "acme", sessionId: "s", start: { case: "fromBeginning", value: true } }, {
    signal: AbortSignal.timeout(20_000), // a bound on a hung test, not a speed assertion
    ...options,
  });
  const sequences: bigint[] = [];
  let error: unknown;
  try {
    for await (const msg of tail) {
      if (msg.kind.case === "events") sequences.push(...msg.kind.value.events.map((e) => e.sequence));
    }
  } catch (e) {
    error = e;
  }
  return { tail, sequences, error };
}

test("tailSession waits the RetryInfo delay, resumes from the cursor and skips duplicates", async () => {
  const { stub, address } = await serve();
  stub.tail = async function* (call) {
    if (call === 1) throw rateLimited(30); // before the first message
    if (call === 2) {
      yield* events(1, 2);
      throw rateLimited(20, "c2");
    }
    yield* events(2, 3); // a replay overlapping what was already delivered, then the end
  };
  const waits: number[] = [];
  const { tail, sequences, error } = await collect(connect(address), {
    initialBackoffMs: 3_600_000, // the server's delay must be used, never the backoff
    onRetry: (_, waitMs) => waits.push(waitMs),
  });
  assert.equal(error, undefined);
  assert.deepEqual(sequences, [1n, 2n, 3n]);
  assert.deepEqual(waits, [30, 20]);
  assert.deepEqual(stub.tailCursors, ["", "", "c2"]);
  assert.equal(tail.resumes, 2);
  assert.equal(tail.cursor, "c3");
});

test("tailSession gives up after maxRetries failures in a row", async () => {
  const { stub, address } = await serve();
  stub.tail = async function* () {
    yield* [];
    throw rateLimited(1);
  };
  const { tail, error } = await collect(connect(address), { maxRetries: 3 });
  assert.ok(error instanceof ConnectError);
  assert.equal(error.code, Code.ResourceExhausted);
  assert.equal(tail.resumes, 3);
  assert.equal(stub.tailCursors.length, 4);
});

test("tailSession renews an expired token and resumes from the trailer cursor", async () => {
  const { stub, address } = await serve();
  stub.tail = async function* (call, _req, ctx) {
    assert.equal(ctx.requestHeader.get("authorization"), `Bearer token-${call}`);
    if (call === 1) {
      yield* events(1);
      throw new ConnectError("token expired", Code.Unauthenticated, { [CURSOR_TRAILER]: "c1" });
    }
    yield* events(2);
  };
  const tokens = countingTokens();
  const waits: number[] = [];
  const { tail, sequences, error } = await collect(connect({ address, token: tokens.provider }), {
    onRetry: (_, waitMs) => waits.push(waitMs),
  });
  assert.equal(error, undefined);
  assert.deepEqual(sequences, [1n, 2n]);
  assert.equal(tokens.issued(), 2);
  assert.deepEqual(stub.tailCursors, ["", "c1"]);
  assert.deepEqual(waits, [0]);
  assert.equal(tail.resumes, 1);
});

test("tailSession reports a token refused again before any message", async () => {
  const { stub, address } = await serve();
  stub.tail = async function* (call) {
    if (call === 1) {
      yield* events(1);
      throw new ConnectError("token expired", Code.Unauthenticated, { [CURSOR_TRAILER]: "c1" });
    }
    throw new ConnectError("bad token", Code.Unauthenticated); // no cursor: nothing to resume
  };
  const tokens = countingTokens();
  const { tail, sequences, error } = await collect(connect({ address, token: tokens.provider }));
  assert.ok(error instanceof ConnectError);
  assert.equal(error.code, Code.Unauthenticated);
  assert.deepEqual(sequences, [1n]);
  assert.equal(tokens.issued(), 2);
  assert.equal(tail.resumes, 1);
});
