// Example program for the Java SDK: logs a general and a co-browsing event, reads them back, tails the session.
package io.auditlog.example;

import io.auditlog.AuditLog;
import io.auditlog.SessionTail;
import io.auditlog.v1.Actor;
import io.auditlog.v1.AuditEvent;
import io.auditlog.v1.AuditLogServiceGrpc;
import io.auditlog.v1.ClickAttributes;
import io.auditlog.v1.CobrowseContext;
import io.auditlog.v1.Element;
import io.auditlog.v1.EventType;
import io.auditlog.v1.EventTypeInfo;
import io.auditlog.v1.GetEventRequest;
import io.auditlog.v1.ListEventsRequest;
import io.auditlog.v1.ListEventsResponse;
import io.auditlog.v1.LogEventRequest;
import io.auditlog.v1.LogEventResponse;
import io.auditlog.v1.SortOrder;
import io.auditlog.v1.StartCallAttributes;
import io.auditlog.v1.TailSessionRequest;
import io.auditlog.v1.TailSessionResponse;
import io.grpc.ManagedChannel;
import java.time.Instant;
import java.util.UUID;
import java.util.concurrent.TimeUnit;

/**
 * Run with a server listening on AUDITLOG_ADDR (default 127.0.0.1:50051):
 * {@code mvn -q -Dmaven.repo.local=../../.tools/m2 compile exec:java}. AUDITLOG_TOKEN (a bearer
 * token) and AUDITLOG_TLS_CA / AUDITLOG_TLS_CERT / AUDITLOG_TLS_KEY (TLS, mTLS) apply when set.
 */
public final class Example {
  private Example() {}

  public static void main(String[] args) throws Exception {
    ManagedChannel channel = AuditLog.channelFromEnv();
    try {
      run(channel);
    } finally {
      channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
  }

  private static void run(ManagedChannel channel) throws Exception {
    var stub = AuditLogServiceGrpc.newBlockingStub(channel).withDeadlineAfter(30, TimeUnit.SECONDS);
    String tenant = "example-java-" + UUID.randomUUID().toString().substring(0, 8);
    String session = "session-" + UUID.randomUUID().toString().substring(0, 8);

    // A general event: the acting tenant user plus a typed payload (one setter per oneof case).
    LogEventResponse call = stub.logEvent(LogEventRequest.newBuilder()
        .setEvent(AuditEvent.newBuilder()
            .setId(AuditLog.newEventId())
            .setTenantId(tenant)
            .setTenantUserId("agent-7")
            .setOccurTime(AuditLog.timestamp(Instant.now()))
            .setStartCall(StartCallAttributes.newBuilder().setCallId("call-1").setCustomerId("customer-42")))
        .build());
    AuditEvent stored = call.getEvent();
    System.out.printf("logged %s id=%s received=%s%n", stored.getEventType(), stored.getId(),
        AuditLog.instant(stored.getReceiveTime()));

    // A co-browsing event: the session context instead of (or besides) a tenant user.
    LogEventResponse click = stub.logEvent(LogEventRequest.newBuilder()
        .setEvent(AuditEvent.newBuilder()
            .setId(AuditLog.newEventId())
            .setTenantId(tenant)
            .setOccurTime(AuditLog.timestamp(Instant.now()))
            .setCobrowse(CobrowseContext.newBuilder().setSessionId(session).setActor(Actor.ACTOR_CUSTOMER))
            .setClick(ClickAttributes.newBuilder()
                .setElement(Element.newBuilder().setName("Buy now").setId("buy-button"))))
        .build());
    System.out.printf("logged %s id=%s sequence=%d%n", click.getEvent().getEventType(), click.getEvent().getId(),
        click.getEvent().getSequence());

    // Read one back by id.
    AuditEvent got = stub.getEvent(GetEventRequest.newBuilder().setTenantId(tenant).setId(stored.getId()).build())
        .getEvent();
    System.out.printf("got %s call_id=%s customer_id=%s%n", got.getEventType(), got.getStartCall().getCallId(),
        got.getStartCall().getCustomerId());

    // List the tenant's events, oldest first, following the page tokens.
    var list = ListEventsRequest.newBuilder().setTenantId(tenant).setOrder(SortOrder.SORT_ORDER_OLDEST_FIRST)
        .setPageSize(50);
    do {
      ListEventsResponse page = stub.listEvents(list.build());
      for (AuditEvent e : page.getEventsList()) {
        System.out.printf("listed %s id=%s%n", e.getEventType(), e.getId());
      }
      list.setPageToken(page.getNextPageToken());
    } while (!list.getPageToken().isEmpty());

    // Tail the session from its first event until replay has caught up with the live head. The
    // SDK's tail resumes by itself from the last cursor if the call breaks (server restart, rate
    // limit, expired token), so a console can follow a session for hours; closing it cancels the call.
    var retries = new SessionTail.Options().onRetry((error, wait) ->
        System.out.printf("tail: resuming in %s after %s%n", wait, error.getStatus()));
    try (SessionTail tail = new SessionTail(stub, TailSessionRequest.newBuilder()
        .setTenantId(tenant).setSessionId(session).setFromBeginning(true).build(), retries)) {
      boolean caughtUp = false;
      while (!caughtUp && tail.hasNext()) {
        TailSessionResponse msg = tail.next();
        switch (msg.getKindCase()) {
          case EVENTS -> msg.getEvents().getEventsList().forEach(e -> System.out.printf(
              "tail: #%d %s element=%s%n", e.getSequence(), e.getEventType(), e.getClick().getElement().getId()));
          case CAUGHT_UP -> {
            System.out.printf("tail: caught up at head %d (cursor %s)%n", msg.getCaughtUp().getHeadSequence(),
                msg.getCursor());
            caughtUp = true;
          }
          case HEARTBEAT -> System.out.printf("tail: heartbeat at head %d%n", msg.getHeartbeat().getHeadSequence());
          default -> { }
        }
      }
      if (!caughtUp) {
        throw new IllegalStateException("TailSession ended before caught_up");
      }
    }

    // The seed type string and display name are options on the enum value, readable offline.
    EventTypeInfo info = AuditLog.typeInfo(EventType.EVENT_TYPE_START_CALL).orElseThrow();
    System.out.printf("EVENT_TYPE_START_CALL: type_string=%s display_name=%s category=%s%n", info.getTypeString(),
        info.getDisplayName(), info.getCategory());
  }
}
