// Live tests of EventStream against AUDITLOG_ADDR (skipped when unset): batches, per-event results, one-event messages.
package io.auditlog;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.auditlog.v1.Actor;
import io.auditlog.v1.AuditEvent;
import io.auditlog.v1.AuditLogServiceGrpc;
import io.auditlog.v1.AuditLogServiceGrpc.AuditLogServiceStub;
import io.auditlog.v1.ClickAttributes;
import io.auditlog.v1.CobrowseContext;
import io.auditlog.v1.Element;
import io.auditlog.v1.ErrorReason;
import io.auditlog.v1.StartCallAttributes;
import io.auditlog.v1.StreamEventResult;
import io.auditlog.v1.StreamEventsRequest;
import io.grpc.CallOptions;
import io.grpc.Channel;
import io.grpc.ClientCall;
import io.grpc.ClientInterceptor;
import io.grpc.ClientInterceptors;
import io.grpc.ForwardingClientCall.SimpleForwardingClientCall;
import io.grpc.ManagedChannel;
import io.grpc.MethodDescriptor;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.UUID;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

class StreamTest {
  private ManagedChannel channel;
  private AuditLogServiceStub stub;
  // How many events each StreamEvents request carried, in order.
  private final ConcurrentLinkedQueue<Integer> sizes = new ConcurrentLinkedQueue<>();
  private final String tenant = "sdk-java-" + UUID.randomUUID().toString().substring(0, 12);

  @BeforeEach
  void connect() {
    String address = System.getenv("AUDITLOG_ADDR");
    assumeTrue(address != null && !address.isEmpty(), "AUDITLOG_ADDR is not set: no live auditlog server");
    channel = AuditLog.channelFromEnv();
    ClientInterceptor recording = new ClientInterceptor() {
      @Override
      public <Q, A> ClientCall<Q, A> interceptCall(MethodDescriptor<Q, A> method, CallOptions options, Channel next) {
        return new SimpleForwardingClientCall<>(next.newCall(method, options)) {
          @Override
          public void sendMessage(Q message) {
            if (message instanceof StreamEventsRequest request) {
              sizes.add(request.hasEvent() ? 1 : request.getEventsCount());
            }
            super.sendMessage(message);
          }
        };
      }
    };
    stub = AuditLogServiceGrpc.newStub(ClientInterceptors.intercept(channel, recording));
  }

  @AfterEach
  void disconnect() throws InterruptedException {
    if (channel != null) {
      channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
  }

  private AuditEvent startCall(int n) {
    return AuditEvent.newBuilder().setTenantId(tenant).setTenantUserId("agent-7")
        .setStartCall(StartCallAttributes.newBuilder().setCallId("call-" + n).setCustomerId("customer-42"))
        .build();
  }

  private AuditEvent click(String session) {
    return AuditEvent.newBuilder().setTenantId(tenant)
        .setCobrowse(CobrowseContext.newBuilder().setSessionId(session).setActor(Actor.ACTOR_CUSTOMER))
        .setClick(ClickAttributes.newBuilder().setElement(Element.newBuilder().setId("buy")))
        .build();
  }

  @Test
  void sendsReadyEventsInBatchesWithOneResultPerEventInOrder() {
    String session = "session-" + UUID.randomUUID().toString().substring(0, 12);
    List<AuditEvent> events = new ArrayList<>();
    for (int n = 0; n < 2500; n++) {
      AuditEvent event = n % 10 == 0 ? click(session) : startCall(n);
      events.add(event.toBuilder().setId(AuditLog.newEventId()).build());
    }
    events.set(7, events.get(7).toBuilder().setStartCall(StartCallAttributes.newBuilder().setCallId("call\u0007")).build());

    List<StreamEventResult> results = new ArrayList<>();
    try (EventStream stream = new EventStream(stub.withDeadlineAfter(60, TimeUnit.SECONDS), events.iterator(),
        new EventStream.Options().maxBatch(5000))) {
      stream.forEachRemaining(results::add);
    }

    assertEquals(events.size(), results.size());
    long sequence = 0;
    for (int n = 0; n < events.size(); n++) {
      StreamEventResult result = results.get(n);
      if (n == 7) {
        assertEquals(ErrorReason.ERROR_REASON_INVALID_ARGUMENT, result.getError().getReason(), result.toString());
        continue;
      }
      assertTrue(result.hasAck(), "event " + n + ": " + result);
      assertEquals(events.get(n).getId(), result.getAck().getId());
      if (events.get(n).hasCobrowse()) {
        // The session's clicks take sequences in the order they were given.
        assertEquals(++sequence, result.getAck().getSequence());
      }
    }
    // Batches of what was ready, within the contract's limit: the server refused none.
    assertEquals(EventStream.MAX_BATCH, sizes.stream().mapToInt(Integer::intValue).max().orElse(0));
    assertEquals(events.size(), sizes.stream().mapToInt(Integer::intValue).sum());
  }

  @Test
  void sendsALoneEventAtOnceAsAOneEventMessage() {
    // Each event is made only once the previous one is answered: a stream that held a lone event
    // back to fill a batch would never answer.
    Semaphore answeredOne = new Semaphore(0);
    Iterator<AuditEvent> oneAtATime = new Iterator<>() {
      private int n;

      @Override
      public boolean hasNext() {
        if (n > 0) {
          answeredOne.acquireUninterruptibly();
        }
        return n < 3;
      }

      @Override
      public AuditEvent next() {
        AuditEvent event = startCall(n);
        // A general event needs its acting user.
        return n++ == 1 ? event.toBuilder().setTenantUserId("").build() : event;
      }
    };
    List<String> kinds = new ArrayList<>();
    try (EventStream stream = new EventStream(stub.withDeadlineAfter(30, TimeUnit.SECONDS), oneAtATime,
        new EventStream.Options())) {
      while (stream.hasNext()) {
        StreamEventResult result = stream.next();
        kinds.add(result.getResultCase().name());
        if (result.hasAck()) {
          assertFalse(result.getAck().getId().isEmpty()); // filled in by the stream
        }
        answeredOne.release();
      }
    }
    assertEquals(List.of("ACK", "ERROR", "ACK"), kinds);
    assertEquals(List.of(1, 1, 1), List.copyOf(sizes));
  }
}
