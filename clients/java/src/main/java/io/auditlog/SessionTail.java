// A session tail of the Java SDK that resumes by itself: from the last cursor, after the RetryInfo delay, with a fresh token.
package io.auditlog;

import io.auditlog.v1.AuditEvent;
import io.auditlog.v1.AuditLogServiceGrpc.AuditLogServiceBlockingStub;
import io.auditlog.v1.TailEventBatch;
import io.auditlog.v1.TailSessionRequest;
import io.auditlog.v1.TailSessionResponse;
import io.grpc.Context;
import io.grpc.Deadline;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.NoSuchElementException;
import java.util.Set;
import java.util.function.BiConsumer;

/**
 * Follows a co-browsing session like the blocking stub's {@code tailSession}, but resumes by itself
 * from the last cursor when a call ends early: after the error's RetryInfo delay (rate limits) or an
 * exponential backoff (server restart, failover), and at once when the token expired
 * (UNAUTHENTICATED with a cursor: the next call asks the channel's {@link TokenProvider} again). It
 * never returns an event twice.
 *
 * <pre>{@code
 * try (SessionTail tail = new SessionTail(stub, request, new SessionTail.Options())) {
 *   while (tail.hasNext()) {
 *     TailSessionResponse msg = tail.next(); // events, caught_up (again after a resume), heartbeats
 *   }
 * }
 * }</pre>
 *
 * <p>{@code hasNext()} blocks; it returns false when the server ended the tail normally and throws
 * the call's StatusRuntimeException when it is not worth retrying or retries ran out. Closing the
 * tail (from any thread) cancels the call and ends the iteration. Not thread-safe otherwise.
 */
public final class SessionTail implements Iterator<TailSessionResponse>, AutoCloseable {
  /** Trailing metadata under which the server sends the cursor a tail resumes from, whatever ended the call. */
  public static final Metadata.Key<String> CURSOR_TRAILER =
      Metadata.Key.of("auditlog-cursor", Metadata.ASCII_STRING_MARSHALLER);

  // Statuses after which a tail resumes by itself: the server went away, shut down, shed load, or
  // dropped a client that did not keep up. Anything else (a bad cursor, say) is the caller's to handle.
  private static final Set<Status.Code> RESUMABLE = Set.of(Status.Code.RESOURCE_EXHAUSTED, Status.Code.UNAVAILABLE,
      Status.Code.DEADLINE_EXCEEDED, Status.Code.INTERNAL, Status.Code.UNKNOWN, Status.Code.CANCELLED);

  /** Tuning of a SessionTail; the defaults are fine. */
  public static final class Options {
    private int maxRetries = 10;
    private Duration initialBackoff = Duration.ofMillis(100);
    private Duration maxBackoff = Duration.ofSeconds(2);
    private BiConsumer<StatusRuntimeException, Duration> onRetry = (error, wait) -> { };

    /** Failed calls in a row retried before the error is thrown (default 10); a message resets the count. */
    public Options maxRetries(int maxRetries) {
      this.maxRetries = maxRetries;
      return this;
    }

    /** Bounds of the exponential wait when the server did not say how long to wait (100 ms, 2 s). */
    public Options backoff(Duration initial, Duration max) {
      this.initialBackoff = initial;
      this.maxBackoff = max;
      return this;
    }

    /** Called before each resume with the error that ended the call and the wait before the next one. */
    public Options onRetry(BiConsumer<StatusRuntimeException, Duration> onRetry) {
      this.onRetry = onRetry;
      return this;
    }
  }

  private final AuditLogServiceBlockingStub stub;
  private final TailSessionRequest request;
  private final Options options;
  private volatile boolean closed;
  private volatile Context.CancellableContext call;
  private Iterator<TailSessionResponse> stream;
  private TailSessionResponse pending;
  private boolean ended;
  private String cursor;
  private long lastSequence;
  private int failures;
  private Duration backoff;
  private int resumes;

  /**
   * Starts following a session on {@code stub} (its deadline and call credentials apply to every
   * call). The request's start applies to the first call only; resumes use the last cursor.
   */
  public SessionTail(AuditLogServiceBlockingStub stub, TailSessionRequest request, Options options) {
    this.stub = stub;
    this.request = request;
    this.options = options;
    this.cursor = request.hasCursor() ? request.getCursor() : "";
    this.backoff = options.initialBackoff;
  }

  /** The cursor of the last message returned: a later tail from it continues after it. */
  public String cursor() {
    return cursor;
  }

  /** How many times the tail started a new call after one ended early. */
  public int resumes() {
    return resumes;
  }

  @Override
  public boolean hasNext() {
    while (pending == null) {
      if (ended || closed) {
        return false;
      }
      try {
        if (stream == null) {
          start();
        }
        if (!stream.hasNext()) {
          ended = true;
          endCall();
          return false;
        }
        accept(stream.next());
      } catch (StatusRuntimeException e) {
        endCall();
        if (closed) {
          return false;
        }
        retryOrThrow(e);
      }
    }
    return true;
  }

  @Override
  public TailSessionResponse next() {
    if (!hasNext()) {
      throw new NoSuchElementException("the tail ended");
    }
    TailSessionResponse msg = pending;
    pending = null;
    return msg;
  }

  /** Cancels the current call; hasNext() returns false from then on. */
  @Override
  public void close() {
    closed = true;
    endCall();
  }

  private void start() {
    TailSessionRequest next = cursor.isEmpty() ? request : request.toBuilder().setCursor(cursor).build();
    // The blocking call belongs to the context current when it starts; a context of its own is the
    // only way to cancel it before the server ends it.
    Context.CancellableContext context = Context.current().withCancellation();
    call = context;
    Context previous = context.attach();
    try {
      stream = stub.tailSession(next);
    } finally {
      context.detach(previous);
    }
  }

  private void endCall() {
    Context.CancellableContext context = call;
    call = null;
    stream = null;
    if (context != null) {
      context.cancel(null);
    }
  }

  private void accept(TailSessionResponse msg) {
    failures = 0;
    backoff = options.initialBackoff;
    cursor = msg.getCursor();
    if (!msg.hasEvents()) {
      pending = msg;
      return;
    }
    List<AuditEvent> fresh = new ArrayList<>();
    for (AuditEvent event : msg.getEvents().getEventsList()) {
      if (event.getSequence() > lastSequence) {
        fresh.add(event);
        lastSequence = event.getSequence();
      }
    }
    if (fresh.isEmpty()) {
      return;
    }
    pending = fresh.size() == msg.getEvents().getEventsCount()
        ? msg
        : msg.toBuilder().setEvents(TailEventBatch.newBuilder().addAllEvents(fresh)).build();
  }

  private void retryOrThrow(StatusRuntimeException error) {
    Deadline deadline = stub.getCallOptions().getDeadline();
    if (Context.current().isCancelled() || (deadline != null && deadline.isExpired())) {
      throw error;
    }
    Metadata trailers = Status.trailersFromThrowable(error);
    String fromTrailer = trailers == null ? null : trailers.get(CURSOR_TRAILER);
    if (fromTrailer != null && !fromTrailer.isEmpty()) {
      cursor = fromTrailer;
    }
    Status.Code code = error.getStatus().getCode();
    Duration wait = Duration.ZERO;
    if (code == Status.Code.UNAUTHENTICATED) {
      // The token expired under a running tail: the server says where to resume, and the next call
      // gets a fresh token. Without a cursor, or when a fresh token fails again before any message,
      // the token itself is the problem, and only the caller can fix it.
      if (fromTrailer == null || fromTrailer.isEmpty() || failures > 0) {
        throw error;
      }
    } else if (RESUMABLE.contains(code)) {
      var delay = AuditLog.retryDelay(error);
      if (delay.isPresent()) {
        wait = delay.get();
      } else {
        wait = backoff;
        Duration doubled = backoff.multipliedBy(2);
        backoff = doubled.compareTo(options.maxBackoff) > 0 ? options.maxBackoff : doubled;
      }
    } else {
      throw error;
    }
    if (failures >= options.maxRetries) {
      throw error;
    }
    failures++;
    resumes++;
    options.onRetry.accept(error, wait);
    if (!wait.isZero()) {
      try {
        Thread.sleep(wait.toMillis(), wait.toNanosPart() % 1_000_000);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        throw Status.CANCELLED.withDescription("interrupted while waiting to resume").withCause(e).asRuntimeException();
      }
    }
  }
}
