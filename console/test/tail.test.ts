// Session review's follower: replay to the caught-up marker, follow live, resume from the cursor after
// breaks with backoff, deliver each event once, and say which state it is in. No wall clock involved:
// the waits between reconnects go through a fake sleep that records them.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { RetryInfoSchema } from "../../clients/typescript/src/errors.js";
import { auditLogClient } from "../src/api.js";
import { Actor, type AuditEvent, type TailSessionRequest, type TailSessionResponseSchema } from "../src/gen.js";
import { CURSOR_METADATA, SessionFollower, type TailStatus } from "../src/tail.js";
import { TENANT, cobrowseEvent, fakeServer } from "./fake-service.js";

type Msg = MessageInitShape<typeof TailSessionResponseSchema>;

const ev = (seq: number): AuditEvent => cobrowseEvent(seq, seq % 2 ? Actor.AGENT : Actor.CUSTOMER, { case: "click", value: { element: { id: `e${seq}` } } });
const batch = (cursor: string, ...seqs: number[]): Msg => ({ cursor, kind: { case: "events", value: { events: seqs.map(ev) } } });
const caughtUp = (cursor: string, head: number): Msg => ({ cursor, kind: { case: "caughtUp", value: { headSequence: BigInt(head) } } });
const heartbeat = (cursor: string, head: number): Msg => ({ cursor, kind: { case: "heartbeat", value: { headSequence: BigInt(head) } } });

/** A promise the test resolves when it wants a scripted stream to go on. */
function gate(): { wait: Promise<void>; open: () => void } {
  let open = (): void => {};
  const wait = new Promise<void>((resolve) => (open = resolve));
  return { wait, open };
}

/** Lets the in-memory calls run until `cond` holds (turns of the event loop, not time). */
async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    if (cond()) return;
    await new Promise((r) => setImmediate(r));
  }
  assert.fail(`never: ${what}`);
}

function harness(follow: boolean) {
  const server = fakeServer([]);
  const delivered: bigint[] = [];
  const states: TailStatus[] = [];
  const sleeps: number[] = [];
  const gaps: [bigint, bigint][] = [];
  const follower = new SessionFollower(
    auditLogClient(server.transport),
    TENANT,
    "cob-1",
    {
      onEvents: (events) => delivered.push(...events.map((e) => e.sequence)),
      onStatus: (s) => states.push(s),
      onGap: (a, b) => gaps.push([a, b]),
    },
    {
      follow,
      sleep: async (ms) => {
        sleeps.push(ms);
      },
      random: () => 1, // no jitter: waits are the backoff itself
      idleTimeoutMs: 0,
      initialBackoffMs: 500,
      maxBackoffMs: 4000,
    },
  );
  const stateNames = (): string[] => states.map((s) => s.state);
  const start = (req: TailSessionRequest): string =>
    req.start.case === "cursor" ? `cursor:${req.start.value}` : req.start.case === "fromBeginning" ? "beginning" : String(req.start.case);
  return { server, follower, delivered, states, stateNames, sleeps, gaps, starts: () => server.tailRequests.map(start) };
}

describe("SessionFollower", () => {
  test("without follow: replays from the beginning, stops at the caught-up marker", async () => {
    const h = harness(false);
    let readPastCaughtUp = false;
    h.server.tailScripts.push(async function* () {
      yield batch("c2", 1, 2);
      yield batch("c3", 3);
      yield caughtUp("c3", 3);
      readPastCaughtUp = true;
      yield batch("c4", 4);
    });
    h.follower.start();
    await h.follower.settled();
    assert.deepEqual(h.delivered, [1n, 2n, 3n]);
    assert.deepEqual(h.starts(), ["beginning"]);
    assert.deepEqual(h.stateNames(), ["connecting", "stopped"]);
    assert.equal(h.states.at(-1)?.stopReason, "caught-up");
    assert.equal(h.follower.cursor, "c3");
    assert.equal(readPastCaughtUp, false);
  });

  test("following: live after caught up, reconnects from the last cursor, no duplicates, nothing missed", async () => {
    const h = harness(true);
    const g = gate();
    h.server.tailScripts.push(async function* () {
      yield batch("c2", 1, 2);
      yield caughtUp("c2", 2);
      yield batch("c3", 3);
      await g.wait;
      throw new ConnectError("server restarting", Code.Unavailable);
    });
    const g2 = gate();
    h.server.tailScripts.push(async function* (req) {
      assert.equal(req.start.case, "cursor");
      // A server may resend what the cursor already covers: it must not show twice.
      yield batch("c4", 3, 4);
      yield caughtUp("c4", 4);
      yield heartbeat("c4", 4);
      yield batch("c5", 5);
      await g2.wait;
    });
    h.follower.start();
    await until(() => h.delivered.length === 3, "three events");
    assert.equal(h.follower.status.state, "live");
    g.open();
    await until(() => h.delivered.length === 5, "five events");
    assert.deepEqual(h.delivered, [1n, 2n, 3n, 4n, 5n]);
    assert.deepEqual(h.starts(), ["beginning", "cursor:c3"]);
    assert.deepEqual(h.stateNames(), ["connecting", "live", "reconnecting", "live"]);
    const reconnecting = h.states[2];
    assert.equal(reconnecting?.attempt, 1);
    assert.equal(reconnecting?.retryInMs, 500);
    assert.equal(reconnecting?.problem?.kind, "unavailable");
    assert.deepEqual(h.sleeps, [500]);
    assert.equal(h.follower.cursor, "c5");
    h.follower.stop();
    assert.equal(h.follower.status.state, "stopped");
    await h.follower.settled();
  });

  test("a cursor in the error metadata wins, and RetryInfo sets the wait", async () => {
    const h = harness(true);
    h.server.tailScripts.push(async function* () {
      yield batch("c1", 1);
      yield caughtUp("c1", 1);
      throw new ConnectError("slow consumer", Code.ResourceExhausted, { [CURSOR_METADATA]: "c-trailer" }, [
        { desc: RetryInfoSchema, value: { retryDelay: { seconds: 3n, nanos: 0 } } },
      ]);
    });
    const g = gate();
    h.server.tailScripts.push(async function* () {
      yield batch("c2", 2);
      yield caughtUp("c2", 2);
      await g.wait;
    });
    h.follower.start();
    await until(() => h.delivered.length === 2 && h.follower.status.state === "live", "resumed");
    assert.deepEqual(h.starts(), ["beginning", "cursor:c-trailer"]);
    assert.deepEqual(h.sleeps, [3000]);
    assert.equal(h.states.find((s) => s.state === "reconnecting")?.problem?.kind, "rate-limited");
    h.follower.stop();
  });

  test("backoff doubles up to its cap while the server stays away, and resets after a message", async () => {
    const h = harness(true);
    for (let i = 0; i < 5; i++) {
      h.server.tailScripts.push(async function* () {
        throw new ConnectError("down", Code.Unavailable);
      });
    }
    const g = gate();
    h.server.tailScripts.push(async function* () {
      yield batch("c1", 1);
      yield caughtUp("c1", 1);
      throw new ConnectError("down again", Code.Unavailable);
    });
    h.server.tailScripts.push(async function* () {
      yield caughtUp("c1", 1);
      await g.wait;
    });
    h.follower.start();
    await until(() => h.server.tailRequests.length === 7 && h.follower.status.state === "live", "seventh call live");
    assert.deepEqual(h.sleeps, [500, 1000, 2000, 4000, 4000, 500]);
    assert.deepEqual(
      h.states.filter((s) => s.state === "reconnecting").map((s) => s.attempt),
      [1, 2, 3, 4, 5, 1],
    );
    assert.deepEqual(h.starts(), ["beginning", "beginning", "beginning", "beginning", "beginning", "beginning", "cursor:c1"]);
    h.follower.stop();
  });

  test("a break during replay without follow still completes the replay", async () => {
    const h = harness(false);
    h.server.tailScripts.push(async function* () {
      yield batch("c2", 1, 2);
      throw new ConnectError("network", Code.Unavailable);
    });
    h.server.tailScripts.push(async function* () {
      yield batch("c3", 3);
      yield caughtUp("c3", 3);
    });
    h.follower.start();
    await until(() => h.follower.status.state === "stopped", "stopped");
    assert.deepEqual(h.delivered, [1n, 2n, 3n]);
    assert.deepEqual(h.stateNames(), ["connecting", "reconnecting", "stopped"]);
    assert.deepEqual(h.starts(), ["beginning", "cursor:c2"]);
  });

  test("a stream that ends without error is resumed too", async () => {
    const h = harness(true);
    h.server.tailScripts.push(async function* () {
      yield batch("c1", 1);
      yield caughtUp("c1", 1);
    });
    const g = gate();
    h.server.tailScripts.push(async function* () {
      yield caughtUp("c1", 1);
      await g.wait;
    });
    h.follower.start();
    await until(() => h.server.tailRequests.length === 2 && h.follower.status.state === "live", "second call");
    assert.deepEqual(h.starts(), ["beginning", "cursor:c1"]);
    h.follower.stop();
  });

  test("UNAUTHENTICATED stops at once, with the problem to send the person to sign-in", async () => {
    const h = harness(true);
    h.server.tailScripts.push(async function* () {
      yield batch("c1", 1);
      throw new ConnectError("token expired", Code.Unauthenticated, { [CURSOR_METADATA]: "c1" });
    });
    h.follower.start();
    await h.follower.settled();
    const last = h.states.at(-1);
    assert.equal(last?.state, "stopped");
    assert.equal(last?.stopReason, "failed");
    assert.equal(last?.problem?.kind, "unauthenticated");
    assert.equal(h.server.tailRequests.length, 1);
    assert.deepEqual(h.sleeps, []);
  });

  test("PERMISSION_DENIED and INVALID_ARGUMENT are not retried", async () => {
    for (const code of [Code.PermissionDenied, Code.InvalidArgument]) {
      const h = harness(true);
      h.server.tailScripts.push(async function* () {
        throw new ConnectError("no", code);
      });
      h.follower.start();
      await h.follower.settled();
      assert.deepEqual(h.stateNames(), ["connecting", "stopped"]);
      assert.equal(h.server.tailRequests.length, 1);
    }
  });

  test("switching follow off closes a live stream; on again resumes from the cursor", async () => {
    const h = harness(true);
    const g = gate();
    h.server.tailScripts.push(async function* () {
      yield batch("c2", 1, 2);
      yield caughtUp("c2", 2);
      await g.wait;
    });
    h.follower.start();
    await until(() => h.follower.status.state === "live", "live");
    h.follower.setFollow(false);
    assert.equal(h.follower.status.state, "stopped");
    assert.equal(h.follower.status.stopReason, "switched-off");
    const g2 = gate();
    h.server.tailScripts.push(async function* () {
      yield batch("c3", 2, 3);
      yield caughtUp("c3", 3);
      await g2.wait;
    });
    h.follower.setFollow(true);
    await until(() => h.follower.status.state === "live" && h.delivered.length === 3, "live again");
    assert.deepEqual(h.delivered, [1n, 2n, 3n]);
    assert.deepEqual(h.starts(), ["beginning", "cursor:c2"]);
    assert.deepEqual(h.stateNames(), ["connecting", "live", "stopped", "connecting", "live"]);
    h.follower.stop();
  });

  test("switching follow on during a replay keeps the same call open", async () => {
    const h = harness(false);
    const g = gate();
    const g2 = gate();
    h.server.tailScripts.push(async function* () {
      yield batch("c1", 1);
      await g.wait;
      yield caughtUp("c1", 1);
      await g2.wait;
    });
    h.follower.start();
    await until(() => h.delivered.length === 1, "first event");
    h.follower.setFollow(true);
    g.open();
    await until(() => h.follower.status.state === "live", "live");
    assert.equal(h.server.tailRequests.length, 1);
    h.follower.stop();
  });

  test("a hole in the sequence is reported", async () => {
    const h = harness(false);
    h.server.tailScripts.push(async function* () {
      yield batch("c2", 1, 2);
      yield batch("c5", 5);
      yield caughtUp("c5", 5);
    });
    h.follower.start();
    await h.follower.settled();
    assert.deepEqual(h.delivered, [1n, 2n, 5n]);
    assert.deepEqual(h.gaps, [[2n, 5n]]);
  });
});
