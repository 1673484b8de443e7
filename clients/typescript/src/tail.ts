// A session tail that resumes by itself: from the last cursor, after the RetryInfo delay, with a fresh token.
import { setTimeout as sleep } from "node:timers/promises";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { AuditLogClient } from "./connect.js";
import { retryDelayMs } from "./errors.js";
import {
  TailSessionRequestSchema,
  TailSessionResponseSchema,
  type TailSessionRequest,
  type TailSessionResponse,
} from "./gen/auditlog/v1/service_pb.js";

/** Trailing metadata key under which the server sends the cursor a tail resumes from, whatever ended the call. */
export const CURSOR_TRAILER = "auditlog-cursor";

/** Tuning of a SessionTail; every field is optional. */
export interface TailOptions {
  /** Aborting it ends the tail (the iteration throws the abort reason). */
  signal?: AbortSignal;
  /** Failed calls in a row retried before the error is thrown (default 10); a message resets the count. */
  maxRetries?: number;
  /** Bounds of the exponential wait between retries when the server did not say how long to wait (100 ms, 2 s). */
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  /** Called before each resume with the error that ended the call and the wait before the next one (e.g. to log it). */
  onRetry?: (error: ConnectError, waitMs: number) => void;
}

// Statuses after which a tail resumes by itself: the server went away, shut down, shed load, or
// dropped a client that did not keep up. Anything else (a bad cursor, say) is the caller's to handle.
const RESUMABLE = new Set([Code.ResourceExhausted, Code.Unavailable, Code.DeadlineExceeded, Code.Internal, Code.Unknown, Code.Canceled]);

/**
 * Follows a co-browsing session like client.tailSession, but resumes by itself from the last cursor
 * when a call ends early: after the error's RetryInfo delay (rate limits) or an exponential backoff
 * (server restart, failover), and at once when the token expired (UNAUTHENTICATED with a cursor: the
 * next call asks the connection's token provider again). It never yields an event twice. Iterate it
 * once; leaving the loop cancels the call.
 */
export class SessionTail implements AsyncIterable<TailSessionResponse> {
  /** The cursor of the last message yielded: a later tail from it continues after it. */
  cursor: string;
  /** How many times the tail started a new call after one ended early. */
  resumes = 0;
  private lastSequence = 0n;
  private readonly request: TailSessionRequest;

  constructor(
    private readonly client: AuditLogClient,
    request: MessageInitShape<typeof TailSessionRequestSchema>,
    private readonly options: TailOptions = {},
  ) {
    this.request = create(TailSessionRequestSchema, request);
    this.cursor = this.request.start.case === "cursor" ? this.request.start.value : "";
  }

  private nextRequest(): TailSessionRequest {
    if (this.cursor === "") return this.request;
    return create(TailSessionRequestSchema, {
      tenantId: this.request.tenantId,
      sessionId: this.request.sessionId,
      eventTypes: this.request.eventTypes,
      start: { case: "cursor", value: this.cursor },
    });
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<TailSessionResponse, void, undefined> {
    const { signal, maxRetries = 10, initialBackoffMs = 100, maxBackoffMs = 2000 } = this.options;
    let failures = 0;
    let backoffMs = initialBackoffMs;
    for (;;) {
      signal?.throwIfAborted();
      try {
        for await (const msg of this.client.tailSession(this.nextRequest(), signal ? { signal } : {})) {
          failures = 0;
          backoffMs = initialBackoffMs;
          this.cursor = msg.cursor;
          if (msg.kind.case === "events") {
            const fresh = msg.kind.value.events.filter((e) => e.sequence > this.lastSequence);
            if (fresh.length === 0) continue;
            this.lastSequence = fresh[fresh.length - 1]!.sequence;
            if (fresh.length < msg.kind.value.events.length) {
              yield create(TailSessionResponseSchema, { cursor: msg.cursor, kind: { case: "events", value: { events: fresh } } });
              continue;
            }
          }
          yield msg;
        }
        return; // the server ended the tail normally
      } catch (cause) {
        signal?.throwIfAborted();
        const error = ConnectError.from(cause);
        const fromTrailer = error.metadata.get(CURSOR_TRAILER) ?? "";
        if (fromTrailer !== "") this.cursor = fromTrailer;
        let waitMs = 0;
        if (error.code === Code.Unauthenticated) {
          // The token expired under a running tail: the server says where to resume, and the next
          // call gets a fresh token. Without a cursor, or when a fresh token fails again before any
          // message, the token itself is the problem, and only the caller can fix it.
          if (fromTrailer === "" || failures > 0) throw error;
        } else if (RESUMABLE.has(error.code)) {
          const delay = retryDelayMs(error);
          if (delay !== undefined) {
            waitMs = delay;
          } else {
            waitMs = backoffMs;
            backoffMs = Math.min(2 * backoffMs, maxBackoffMs);
          }
        } else {
          throw error;
        }
        if (failures >= maxRetries) throw error;
        failures++;
        this.resumes++;
        this.options.onRetry?.(error, waitMs);
        if (waitMs > 0) await sleep(waitMs, undefined, signal ? { signal } : {});
      }
    }
  }
}

/** Starts following a session with a SessionTail: `for await (const msg of tailSession(client, request)) ...`. */
export function tailSession(
  client: AuditLogClient,
  request: MessageInitShape<typeof TailSessionRequestSchema>,
  options: TailOptions = {},
): SessionTail {
  return new SessionTail(client, request, options);
}
