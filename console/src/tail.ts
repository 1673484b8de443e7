// Session review's stream: TailSession replayed from the beginning, then (when following) kept open,
// resumed from the last cursor with backoff after any break, each event delivered once.
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { retryDelayMs } from "../../clients/typescript/src/errors.js";
import type { AuditLogClient } from "./api.js";
import { describeError, type Problem } from "./errors.js";
import { type AuditEvent, type TailSessionRequest, TailSessionRequestSchema } from "./gen.js";

/** Trailing metadata key under which the server sends the cursor to resume from, whatever ended the call. */
export const CURSOR_METADATA = "auditlog-cursor";

/**
 * What the stream is doing, as shown to people:
 * - connecting: the first call is replaying the session;
 * - live: replay is done (caught up) and the stream is open for new events;
 * - reconnecting: the stream broke and a new call resumes from the last cursor (after a wait);
 * - stopped: no stream is open (replay done without following, switched off, or a failure that
 *   retrying cannot fix).
 */
export type TailState = "connecting" | "live" | "reconnecting" | "stopped";

export interface TailStatus {
  state: TailState;
  /** Why the stream stopped. */
  stopReason?: "caught-up" | "switched-off" | "failed";
  /** The failure that stopped the stream, or that the reconnect is recovering from. */
  problem?: Problem;
  /** The how-manieth reconnect in a row this is (1 for the first). */
  attempt?: number;
  /** How long the follower waits before the reconnect. */
  retryInMs?: number;
}

export interface FollowerCallbacks {
  /** New events, in sequence order, never one delivered before. */
  onEvents(events: AuditEvent[]): void;
  onStatus(status: TailStatus): void;
  /** Replay reached the head (once per call). */
  onCaughtUp?(headSequence: bigint): void;
  /** Events between `after` and `before` (exclusive) never came: the server skipped sequences. */
  onGap?(after: bigint, before: bigint): void;
}

export interface FollowerOptions {
  /** Keep the stream open after replay ("Follow live"). */
  follow: boolean;
  /** Waits before a reconnect; rejects or resolves early when the signal aborts. Tests pass a fake. */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
  /** Exponential backoff between reconnects without RetryInfo: first wait and cap (ms). */
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  /** In [0, 1): spreads reconnects of many consoles after a server restart. Tests pass a constant. */
  random?: () => number;
  /** A call with no message for this long is taken as dead and replaced (0: never). */
  idleTimeoutMs?: number;
  /** Reconnects in a row before giving up (default: never give up while following). */
  maxAttempts?: number;
}

// Codes after which a new call from the cursor can succeed: the server went away or restarted,
// shed load (rate limit, too many tails), dropped a slow client, or the connection broke.
const RESUMABLE: ReadonlySet<Code> = new Set([
  Code.Unavailable,
  Code.ResourceExhausted,
  Code.DeadlineExceeded,
  Code.Aborted,
  Code.Internal,
  Code.Unknown,
  Code.Canceled,
]);

export function defaultSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}

class IdleTimeout extends Error {}

/**
 * Follows one co-browsing session. start() replays it from the beginning; without `follow` the call
 * ends at the caught-up marker, with it the stream stays open. Any break (network, server restart,
 * rate limit, ...) resumes from the last cursor after a backoff; events are deduplicated by sequence,
 * so none is delivered twice, and the cursor makes sure none is missed.
 */
export class SessionFollower {
  /** The cursor of the last message received: a new call from it continues right after it. */
  cursor = "";
  /** The sequence of the last event delivered. */
  lastSequence = 0n;
  /** The status last reported. */
  status: TailStatus = { state: "stopped" };
  private follow: boolean;
  private run: { controller: AbortController; done: Promise<void> } | undefined;

  constructor(
    private readonly client: AuditLogClient,
    readonly tenantId: string,
    readonly sessionId: string,
    private readonly callbacks: FollowerCallbacks,
    private readonly options: FollowerOptions,
  ) {
    this.follow = options.follow;
  }

  get following(): boolean {
    return this.follow;
  }

  /** Starts (or restarts) reading from the last cursor, or from the beginning. */
  start(): void {
    this.abortRun();
    const controller = new AbortController();
    const done = this.loop(controller.signal);
    this.run = { controller, done };
  }

  /**
   * Turns following on (opens the stream again from the cursor) or off: a live stream closes at once,
   * while a replay still running goes on until it has caught up, so the timeline is complete.
   */
  setFollow(on: boolean): void {
    this.follow = on;
    if (on) {
      if (this.status.state === "stopped") this.start();
    } else if (this.status.state === "live") {
      this.abortRun();
      this.setStatus({ state: "stopped", stopReason: "switched-off" });
    }
  }

  /** Closes the stream for good (leaving the page). */
  stop(): void {
    this.abortRun();
    if (this.status.state !== "stopped") this.setStatus({ state: "stopped", stopReason: "switched-off" });
  }

  /** Resolves when the current run has ended (tests). */
  async settled(): Promise<void> {
    await this.run?.done;
  }

  private abortRun(): void {
    this.run?.controller.abort();
    this.run = undefined;
  }

  private setStatus(status: TailStatus): void {
    this.status = status;
    this.callbacks.onStatus(status);
  }

  private request(): TailSessionRequest {
    return create(TailSessionRequestSchema, {
      tenantId: this.tenantId,
      sessionId: this.sessionId,
      start: this.cursor === "" ? { case: "fromBeginning", value: true } : { case: "cursor", value: this.cursor },
    });
  }

  private deliver(events: readonly AuditEvent[]): void {
    const fresh: AuditEvent[] = [];
    for (const event of events) {
      if (event.sequence <= this.lastSequence) continue;
      if (this.lastSequence > 0n && event.sequence > this.lastSequence + 1n) {
        this.callbacks.onGap?.(this.lastSequence, event.sequence);
      }
      this.lastSequence = event.sequence;
      fresh.push(event);
    }
    if (fresh.length > 0) this.callbacks.onEvents(fresh);
  }

  private async loop(signal: AbortSignal): Promise<void> {
    const {
      sleep = defaultSleep,
      initialBackoffMs = 500,
      maxBackoffMs = 15_000,
      random = Math.random,
      idleTimeoutMs = 60_000,
      maxAttempts = Number.POSITIVE_INFINITY,
    } = this.options;
    let backoffMs = initialBackoffMs;
    let attempt = 0;
    this.setStatus({ state: "connecting" });
    while (!signal.aborted) {
      let problem: Problem | undefined;
      let retryAfterMs: number | undefined;
      const call = new AbortController();
      const onAbort = (): void => call.abort();
      signal.addEventListener("abort", onAbort, { once: true });
      let idleTimer: ReturnType<typeof setTimeout> | undefined;
      const armIdle = (): void => {
        if (idleTimeoutMs <= 0) return;
        clearTimeout(idleTimer);
        idleTimer = setTimeout(() => call.abort(new IdleTimeout("no message from the server")), idleTimeoutMs);
      };
      try {
        armIdle();
        for await (const message of this.client.tailSession(this.request(), { signal: call.signal })) {
          armIdle();
          attempt = 0;
          backoffMs = initialBackoffMs;
          if (message.cursor !== "") this.cursor = message.cursor;
          const kind = message.kind;
          if (kind.case === "events") {
            this.deliver(kind.value.events);
          } else if (kind.case === "caughtUp") {
            this.callbacks.onCaughtUp?.(kind.value.headSequence);
            if (!this.follow) {
              this.setStatus({ state: "stopped", stopReason: "caught-up" });
              return; // leaving the loop cancels the call
            }
            this.setStatus({ state: "live" });
          }
        }
        // The server ended the stream without an error (e.g. shutting down): resume like after a break.
      } catch (cause) {
        if (signal.aborted) return;
        const error = ConnectError.from(cause);
        const fromMetadata = error.metadata.get(CURSOR_METADATA);
        if (fromMetadata) this.cursor = fromMetadata;
        if (!(call.signal.reason instanceof IdleTimeout)) {
          problem = describeError(error, "follow the session", this.tenantId);
          if (!RESUMABLE.has(error.code) && problem.kind !== "unavailable") {
            this.setStatus({ state: "stopped", stopReason: "failed", problem });
            return;
          }
          retryAfterMs = retryDelayMs(error);
        }
      } finally {
        clearTimeout(idleTimer);
        call.abort();
        signal.removeEventListener("abort", onAbort);
      }
      if (signal.aborted) return;
      attempt++;
      if (attempt > maxAttempts) {
        this.setStatus({
          state: "stopped",
          stopReason: "failed",
          problem: problem ?? describeError(new ConnectError("the stream keeps ending", Code.Unavailable), "follow the session"),
        });
        return;
      }
      let waitMs: number;
      if (retryAfterMs !== undefined) {
        waitMs = retryAfterMs;
      } else {
        waitMs = Math.round(backoffMs * (0.5 + 0.5 * random()));
        backoffMs = Math.min(backoffMs * 2, maxBackoffMs);
      }
      this.setStatus({ state: "reconnecting", attempt, retryInMs: waitMs, ...(problem ? { problem } : {}) });
      await sleep(waitMs, signal);
    }
  }
}
