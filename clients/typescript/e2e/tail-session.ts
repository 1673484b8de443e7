// The TypeScript tail of the cross-language end-to-end test (spec: e2e/README.md at the repository root).
//
// Tails E2E_SESSION of E2E_TENANT from the beginning and prints JSON lines to
// stdout: {"caughtUp": {"headSequence": "<n>"}} once replay is done (the signal for the writer to
// start), then {"event": <the AuditEvent as proto JSON>} per event. Exits 0 after
// E2E_COBROWSE_EVENTS events in sequence order 1, 2, 3, ... (and caught_up); non-zero on any
// failure or after E2E_TIMEOUT_MS (default 60 s).
//
// AUDITLOG_TOKEN and AUDITLOG_TLS_* apply when set.
//
//   AUDITLOG_ADDR=... E2E_TENANT=... E2E_SESSION=... E2E_COBROWSE_EVENTS=200 node --import tsx e2e/tail-session.ts
import { toJson } from "@bufbuild/protobuf";
import { AuditEventSchema, connectFromEnv } from "../src/index.js";

function env(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

function emit(line: unknown): void {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

async function main(): Promise<void> {
  const tenantId = env("E2E_TENANT");
  const sessionId = env("E2E_SESSION");
  const count = BigInt(env("E2E_COBROWSE_EVENTS"));
  const timeoutMs = Number(process.env["E2E_TIMEOUT_MS"] ?? "60000");
  env("AUDITLOG_ADDR"); // required: the SDK's default address is never the test's server
  // The SDK's helper reads AUDITLOG_ADDR, AUDITLOG_TOKEN and AUDITLOG_TLS_*, as every SDK does.
  const { client, close } = connectFromEnv();
  let last = 0n;
  let caughtUp = false;
  try {
    for await (const msg of client.tailSession(
      { tenantId, sessionId, start: { case: "fromBeginning", value: true } },
      { signal: AbortSignal.timeout(timeoutMs) },
    )) {
      if (msg.cursor === "") throw new Error("a tail message without a cursor");
      switch (msg.kind.case) {
        case "caughtUp":
          if (caughtUp) throw new Error("caught_up sent twice");
          caughtUp = true;
          emit({ caughtUp: { headSequence: msg.kind.value.headSequence.toString() } });
          break;
        case "events":
          for (const event of msg.kind.value.events) {
            if (event.sequence !== last + 1n) {
              throw new Error(`event ${event.id} has sequence ${event.sequence}, want ${last + 1n}`);
            }
            if (event.sequence > count) throw new Error(`event ${event.id} is beyond the ${count} expected`);
            last = event.sequence;
            emit({ event: toJson(AuditEventSchema, event) });
          }
          break;
        case "heartbeat":
          break;
        default:
          throw new Error(`unexpected tail message: ${JSON.stringify(msg.kind)}`);
      }
      if (caughtUp && last === count) break; // leaving the loop cancels the call
    }
  } finally {
    close();
  }
  if (!caughtUp) throw new Error("the tail ended without caught_up");
  if (last !== count) throw new Error(`the tail ended after ${last} of ${count} events`);
  process.stderr.write(`typescript: tailed ${count} events in sequence order\n`);
}

main().catch((error: unknown) => {
  process.stderr.write(`typescript e2e tail: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exitCode = 1;
});
