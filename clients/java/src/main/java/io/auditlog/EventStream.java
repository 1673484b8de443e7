// Batched ingest of the Java SDK: events sent over one StreamEvents call, one result per event back, in order.
package io.auditlog;

import io.auditlog.v1.AuditEvent;
import io.auditlog.v1.AuditLogServiceGrpc.AuditLogServiceStub;
import io.auditlog.v1.ErrorReason;
import io.auditlog.v1.StreamEventResult;
import io.auditlog.v1.StreamEventsRequest;
import io.auditlog.v1.StreamEventsResponse;
import io.grpc.Context;
import io.grpc.Status;
import io.grpc.stub.StreamObserver;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.NoSuchElementException;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;

/**
 * Sends the events of an iterator over one StreamEvents call and returns one StreamEventResult per
 * event, in the order of the events ({@code hasAck()} or {@code hasError()}).
 *
 * <pre>{@code
 * try (EventStream stream = new EventStream(asyncStub, events.iterator(), new EventStream.Options())) {
 *   while (stream.hasNext()) {
 *     StreamEventResult result = stream.next(); // result.getAck().getId(), or result.getError()
 *   }
 * }
 * }</pre>
 *
 * <p>A thread reads the iterator ahead (at most one batch), and each request carries the events
 * read by the time it is sent: a lone event goes at once, and while earlier requests are unanswered
 * the next ones grow, up to {@code maxBatch} and about 4 MiB. At most {@code maxInFlight} events are
 * sent and not yet returned, so a slow reader slows the source. A server whose batch limit is lower
 * answers BATCH_TOO_LARGE for the whole request, storing none of it; the stream then sends those
 * events again in smaller requests and keeps the smaller size, so the caller never sees that error
 * (events refused that way may be stored after events sent behind them). Events without an id get
 * one (a UUIDv7; the ack carries it), so sending an event again after a failure stores it once.
 *
 * <p>{@code hasNext()} blocks; it returns false once every event has its result, and throws the
 * call's StatusRuntimeException when the call fails (events without a result by then may or may
 * not be stored) or the iterator's exception when it failed. Closing the stream (from any thread)
 * cancels the call. Not thread-safe otherwise.
 */
public final class EventStream implements Iterator<StreamEventResult>, AutoCloseable {
  /** The contract's batch limit: a request carries at most as many events as a LogEvents request takes. */
  public static final int MAX_BATCH = 1000;

  // A default gRPC server refuses messages over 4 MiB and the refusal ends the whole stream, so a
  // batch stops short of that (with room for framing); a single larger event still goes alone.
  private static final int MAX_BATCH_BYTES = 4 * 1024 * 1024 - 64 * 1024;
  private static final Object COMPLETED = new Object();

  /** Tuning of an EventStream; the defaults are fine. */
  public static final class Options {
    private int maxBatch = MAX_BATCH;
    private int maxInFlight;

    /** Events per request at most (default and ceiling: {@link #MAX_BATCH}). */
    public Options maxBatch(int maxBatch) {
      this.maxBatch = maxBatch;
      return this;
    }

    /** Events sent and not yet returned at most (default 4 × maxBatch). */
    public Options maxInFlight(int maxInFlight) {
      this.maxInFlight = maxInFlight;
      return this;
    }
  }

  /** Events sent in one request; {@code first} numbers the first of them in the caller's order. */
  private record Request(int first, List<AuditEvent> events) {
    StreamEventsRequest message() {
      // A lone event goes as `event`, the one-event message every server takes.
      return events.size() == 1
          ? StreamEventsRequest.newBuilder().setEvent(events.get(0)).build()
          : StreamEventsRequest.newBuilder().addAllEvents(events).build();
    }
  }

  private final Iterator<? extends AuditEvent> source;
  private final int maxBatch;
  private final int maxInFlight;
  private final Context.CancellableContext call = Context.current().withCancellation();
  // Responses, then COMPLETED or the call's Throwable, as the call delivers them.
  private final BlockingQueue<Object> responses = new LinkedBlockingQueue<>();
  private final StreamObserver<StreamEventsRequest> requests;

  // The consumer's own: results by event number, until their turn.
  private final Map<Integer, StreamEventResult> answered = new HashMap<>();
  private int nextOut;
  private StreamEventResult pending;
  private boolean ended;

  private final Object lock = new Object();
  private final ArrayDeque<AuditEvent> ready = new ArrayDeque<>();
  private final ArrayDeque<Request> resend = new ArrayDeque<>();
  private final ArrayDeque<Request> sent = new ArrayDeque<>();
  private int limit; // the largest request this server took or is believed to take
  private int numbered;
  private int inFlight; // numbered and not yet returned
  private boolean sourceDone;
  private volatile boolean closed;
  private volatile RuntimeException failure;

  /** Starts the call on {@code stub} (its deadline and call credentials apply) and the threads that feed it. */
  public EventStream(AuditLogServiceStub stub, Iterator<? extends AuditEvent> events, Options options) {
    this.source = events;
    // The contract's limit is a ceiling: a larger request would only come back refused.
    this.maxBatch = Math.max(1, Math.min(options.maxBatch, MAX_BATCH));
    this.maxInFlight = options.maxInFlight > 0 ? options.maxInFlight : 4 * maxBatch;
    this.limit = maxBatch;
    // The call belongs to the context current when it starts; a context of its own is the only way
    // to cancel it from another thread.
    Context previous = call.attach();
    try {
      requests = stub.streamEvents(new StreamObserver<>() {
        @Override
        public void onNext(StreamEventsResponse response) {
          responses.add(response);
        }

        @Override
        public void onError(Throwable t) {
          responses.add(t);
        }

        @Override
        public void onCompleted() {
          responses.add(COMPLETED);
        }
      });
    } finally {
      call.detach(previous);
    }
    start("auditlog-stream-source", this::pump);
    start("auditlog-stream-sender", this::send);
  }

  private static void start(String name, Runnable body) {
    Thread thread = new Thread(body, name);
    thread.setDaemon(true);
    thread.start();
  }

  @Override
  public boolean hasNext() {
    while (pending == null) {
      StreamEventResult result = answered.remove(nextOut);
      if (result != null) {
        nextOut++;
        pending = result;
        synchronized (lock) {
          inFlight--;
          lock.notifyAll();
        }
        return true;
      }
      if (ended || closed) {
        return false;
      }
      Object item;
      try {
        item = responses.take();
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        close();
        throw Status.CANCELLED.withDescription("interrupted").withCause(e).asRuntimeException();
      }
      if (item instanceof StreamEventsResponse response) {
        Request request;
        synchronized (lock) {
          request = sent.poll();
        }
        answer(request, response);
        continue;
      }
      ended = true;
      // A failing iterator cancels the call: its exception is the one to report.
      if (failure != null) {
        throw failure;
      }
      if (item instanceof Throwable t) {
        throw Status.fromThrowable(t).asRuntimeException(Status.trailersFromThrowable(t));
      }
      int missing;
      synchronized (lock) {
        missing = numbered - nextOut;
      }
      if (missing > 0) {
        throw new IllegalStateException("the server ended the stream with " + missing + " events unanswered");
      }
    }
    return true;
  }

  @Override
  public StreamEventResult next() {
    if (!hasNext()) {
      throw new NoSuchElementException("every event has its result");
    }
    StreamEventResult result = pending;
    pending = null;
    return result;
  }

  /** Cancels the call and stops reading the iterator; hasNext() returns false from then on. */
  @Override
  public void close() {
    closed = true;
    synchronized (lock) {
      lock.notifyAll();
    }
    call.cancel(null);
  }

  /** Files the results of one request by event number, or queues its events again. */
  private void answer(Request request, StreamEventsResponse response) {
    int n = request.events().size();
    if (n > 1 && response.hasError() && response.getError().getReason() == ErrorReason.ERROR_REASON_BATCH_TOO_LARGE) {
      // None of it was taken: send it again in halves (or smaller, if the limit already is).
      synchronized (lock) {
        limit = Math.max(1, Math.min(limit, n / 2));
        for (int start = 0; start < n; start += limit) {
          resend.add(new Request(request.first() + start, request.events().subList(start, Math.min(start + limit, n))));
        }
        lock.notifyAll();
      }
      return;
    }
    for (int i = 0; i < n; i++) {
      StreamEventResult result;
      if (i < response.getResultsCount()) {
        result = response.getResults(i);
      } else if (response.hasAck()) {
        result = StreamEventResult.newBuilder().setAck(response.getAck()).build();
      } else {
        // An error for the whole request is every one of its events' error.
        result = StreamEventResult.newBuilder().setError(response.getError()).build();
      }
      answered.put(request.first() + i, result);
    }
  }

  /** Reads the iterator into the ready queue, at most one batch ahead. */
  private void pump() {
    try {
      while (!closed && source.hasNext()) {
        AuditEvent event = source.next();
        if (event.getId().isEmpty()) {
          event = event.toBuilder().setId(AuditLog.newEventId()).build();
        }
        synchronized (lock) {
          while (ready.size() >= maxBatch && !closed) {
            lock.wait();
          }
          ready.add(event);
          lock.notifyAll();
        }
      }
      synchronized (lock) {
        sourceDone = true;
        lock.notifyAll();
      }
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    } catch (RuntimeException e) {
      failure = e;
      call.cancel(e);
    }
  }

  private boolean canSend() {
    if (!resend.isEmpty()) {
      return true;
    }
    if (!ready.isEmpty()) {
      return inFlight < maxInFlight;
    }
    // Half-close only once every event is answered: a refused batch must still be resent.
    return sourceDone && inFlight == 0;
  }

  /** Writes requests until the iterator is done and every event is answered, then half-closes. */
  private void send() {
    try {
      while (true) {
        Request request;
        synchronized (lock) {
          while (!canSend() && !closed) {
            lock.wait();
          }
          if (closed) {
            return;
          }
          if (!resend.isEmpty()) {
            request = resend.poll();
          } else if (!ready.isEmpty()) {
            request = take();
            lock.notifyAll(); // the iterator may be read further
          } else {
            requests.onCompleted();
            return;
          }
          sent.add(request);
        }
        requests.onNext(request.message());
      }
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    } catch (RuntimeException e) {
      // Writing into a call that already ended fails too; the call's own status says why.
      call.cancel(e);
    }
  }

  /** The next request from the ready events: all of them, up to the limit, the window and the bytes. */
  private Request take() {
    int room = Math.min(limit, maxInFlight - inFlight);
    List<AuditEvent> events = new ArrayList<>();
    long size = 0;
    while (!ready.isEmpty() && events.size() < room) {
      size += ready.peek().getSerializedSize();
      if (!events.isEmpty() && size > MAX_BATCH_BYTES) {
        break;
      }
      events.add(ready.poll());
    }
    Request request = new Request(numbered, events);
    numbered += events.size();
    inFlight += events.size();
    return request;
  }
}
