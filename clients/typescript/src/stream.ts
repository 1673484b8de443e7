// Batched ingest: events sent over one StreamEvents call, one result per event back, in order.
import { create, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import type { AuditLogClient } from "./connect.js";
import { AuditEventSchema, type AuditEvent } from "./gen/auditlog/v1/audit_event_pb.js";
import { ErrorReason } from "./gen/auditlog/v1/enums_pb.js";
import {
  StreamEventResultSchema,
  StreamEventsRequestSchema,
  type StreamEventResult,
  type StreamEventsRequest,
  type StreamEventsResponse,
} from "./gen/auditlog/v1/service_pb.js";
import { newEventId } from "./ids.js";

/** The contract's batch limit: a request carries at most as many events as a LogEvents request takes. */
export const MAX_STREAM_BATCH = 1000;

// A default gRPC server refuses messages over 4 MiB and the refusal ends the whole stream, so a
// batch stops short of that (with room for framing); a single larger event still goes alone.
const MAX_BATCH_BYTES = 4 * 1024 * 1024 - 64 * 1024;

type EventInit = MessageInitShape<typeof AuditEventSchema>;

/** Tuning of an EventStream; every field is optional. */
export interface StreamOptions {
  /** Events per request at most (default and ceiling: MAX_STREAM_BATCH). */
  maxBatch?: number;
  /** Events sent and not yet yielded at most (default 4 × maxBatch): a slow reader slows the source. */
  maxInFlight?: number;
  /** Aborting it ends the call (the iteration throws the abort reason). */
  signal?: AbortSignal;
}

/** Events sent in one request; `first` numbers the first of them in the caller's order. */
interface SentRequest {
  first: number;
  events: AuditEvent[];
}

/**
 * Sends events over one StreamEvents call and yields one StreamEventResult per event, in the order
 * of the events (`result.result.case` is "ack" or "error").
 *
 * Each request carries the events that are ready when it is sent: a lone event goes at once, and
 * while the transport is busy the next requests grow, up to maxBatch and about 4 MiB. A server
 * whose batch limit is lower answers BATCH_TOO_LARGE for the whole request, storing none of it;
 * the stream then sends those events again in smaller requests and keeps the smaller size, so the
 * caller never sees that error (events refused that way may be stored after events sent behind
 * them). Empty event ids are filled in (a UUIDv7, in the event itself), so sending an event again
 * after a failure stores it once. A failed call throws: events without a result by then may or
 * may not be stored. Iterate it once; leaving the loop cancels the call.
 */
export class EventStream implements AsyncIterable<StreamEventResult> {
  private readonly maxBatch: number;
  private readonly maxInFlight: number;
  private limit: number; // the largest request this server took or is believed to take
  private readonly ready: AuditEvent[] = [];
  private readonly resend: SentRequest[] = [];
  private readonly sent: SentRequest[] = [];
  private sourceDone = false;
  private numbered = 0;
  private inFlight = 0; // numbered and not yet yielded
  private failure: { error: unknown } | undefined;
  private waiters: (() => void)[] = [];
  private readonly abort = new AbortController();

  constructor(
    private readonly client: AuditLogClient,
    private readonly source: AsyncIterable<EventInit> | Iterable<EventInit>,
    private readonly options: StreamOptions = {},
  ) {
    // The contract's limit is a ceiling: a larger request would only come back refused.
    this.maxBatch = Math.max(1, Math.min(options.maxBatch ?? MAX_STREAM_BATCH, MAX_STREAM_BATCH));
    this.maxInFlight = Math.max(1, options.maxInFlight ?? 4 * this.maxBatch);
    this.limit = this.maxBatch;
  }

  private changed(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private notify(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<StreamEventResult, void, undefined> {
    const signal = this.options.signal ? AbortSignal.any([this.options.signal, this.abort.signal]) : this.abort.signal;
    void this.pump();
    const answered = new Map<number, StreamEventResult>();
    let nextOut = 0;
    try {
      for await (const response of this.client.streamEvents(this.requests(), { signal })) {
        this.answer(this.sent.shift()!, response, answered);
        for (let result = answered.get(nextOut); result !== undefined; result = answered.get(nextOut)) {
          answered.delete(nextOut++);
          yield result;
          this.inFlight--;
          this.notify();
        }
      }
    } catch (error) {
      // A failing source aborts the call: its error is the one to report.
      if (this.failure !== undefined) throw this.failure.error;
      throw error;
    } finally {
      this.abort.abort();
      this.notify();
    }
    if (this.failure !== undefined) throw this.failure.error;
    if (nextOut < this.numbered) {
      throw new Error(`the server ended the stream with ${this.numbered - nextOut} events unanswered`);
    }
  }

  /** Files the results of one request by event number, or queues its events again. */
  private answer(request: SentRequest, response: StreamEventsResponse, answered: Map<number, StreamEventResult>): void {
    const n = request.events.length;
    const result = response.result;
    if (n > 1 && result.case === "error" && result.value.reason === ErrorReason.BATCH_TOO_LARGE) {
      // None of it was taken: send it again in halves (or smaller, if the limit already is).
      this.limit = Math.max(1, Math.min(this.limit, Math.floor(n / 2)));
      for (let start = 0; start < n; start += this.limit) {
        this.resend.push({ first: request.first + start, events: request.events.slice(start, start + this.limit) });
      }
      this.notify();
      return;
    }
    for (let i = 0; i < n; i++) {
      // An error for the whole request is every one of its events' error.
      const own = response.results[i] ?? (result.case === undefined ? undefined : create(StreamEventResultSchema, { result }));
      if (own !== undefined) answered.set(request.first + i, own);
    }
  }

  /** Moves events from the source to the ready queue, at most one batch ahead. */
  private async pump(): Promise<void> {
    try {
      // A plain iterable is read in runs without an await between events, so that they are ready together.
      const runs =
        Symbol.iterator in this.source
          ? runsOf(this.source as Iterable<EventInit>, () => this.maxBatch - this.ready.length)
          : oneByOne(this.source as AsyncIterable<EventInit>);
      for await (const run of runs) {
        for (const init of run) {
          while (this.ready.length >= this.maxBatch && !this.abort.signal.aborted) await this.changed();
          if (this.abort.signal.aborted) return;
          const event = create(AuditEventSchema, init);
          if (event.id === "") event.id = newEventId();
          this.ready.push(event);
        }
        this.notify();
      }
      this.sourceDone = true;
      this.notify();
    } catch (error) {
      this.failure = { error };
      this.abort.abort();
    }
  }

  private canSend(): boolean {
    if (this.resend.length > 0) return true;
    if (this.ready.length > 0) return this.inFlight < this.maxInFlight;
    // Half-close only once every event is answered: a refused batch must still be resent.
    return this.sourceDone && this.inFlight === 0;
  }

  private async *requests(): AsyncGenerator<StreamEventsRequest, void, undefined> {
    for (;;) {
      while (!this.canSend() && !this.abort.signal.aborted) await this.changed();
      if (this.abort.signal.aborted) return;
      let request = this.resend.shift();
      if (request === undefined) {
        if (this.ready.length === 0) return;
        request = this.take();
        this.notify(); // the source may refill the queue
      }
      this.sent.push(request);
      // A lone event goes as `event`, the one-event message every server takes.
      yield create(
        StreamEventsRequestSchema,
        request.events.length === 1 ? { event: request.events[0] } : { events: request.events },
      );
    }
  }

  /** The next request from the ready events: all of them, up to the limit, the window and the bytes. */
  private take(): SentRequest {
    const room = Math.min(this.limit, this.maxInFlight - this.inFlight);
    let size = 0;
    let count = 0;
    while (count < Math.min(room, this.ready.length)) {
      size += toBinary(AuditEventSchema, this.ready[count]!).length;
      if (count > 0 && size > MAX_BATCH_BYTES) break;
      count++;
    }
    const request = { first: this.numbered, events: this.ready.splice(0, count) };
    this.numbered += count;
    this.inFlight += count;
    return request;
  }
}

async function* oneByOne<T>(source: AsyncIterable<T>): AsyncGenerator<T[]> {
  for await (const item of source) yield [item];
}

// Up to room() items of a plain iterable at a time, read synchronously (at least one per run).
function* runsOf<T>(source: Iterable<T>, room: () => number): Generator<T[]> {
  const iterator = source[Symbol.iterator]();
  for (;;) {
    const run: T[] = [];
    const wanted = Math.max(1, room());
    for (let next = iterator.next(); ; next = iterator.next()) {
      if (next.done) {
        if (run.length > 0) yield run;
        return;
      }
      run.push(next.value);
      if (run.length >= wanted) break;
    }
    yield run;
  }
}

/** Sends events over one StreamEvents call in batches: `for await (const result of streamEvents(client, events)) ...`. */
export function streamEvents(
  client: AuditLogClient,
  events: AsyncIterable<EventInit> | Iterable<EventInit>,
  options: StreamOptions = {},
): EventStream {
  return new EventStream(client, events, options);
}
