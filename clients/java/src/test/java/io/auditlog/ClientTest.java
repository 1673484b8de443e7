// Tests of the Java SDK: descriptor options offline, and a live round trip against AUDITLOG_ADDR (skipped when unset)
// with AUDITLOG_TOKEN and AUDITLOG_TLS_* applied by AuditLog.channelFromEnv().
package io.auditlog;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.auditlog.v1.Actor;
import io.auditlog.v1.AuditEvent;
import io.auditlog.v1.AuditLogServiceGrpc;
import io.auditlog.v1.ClickAttributes;
import io.auditlog.v1.CobrowseContext;
import io.auditlog.v1.Element;
import io.auditlog.v1.EventCategory;
import io.auditlog.v1.EventFilter;
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
import io.grpc.Context;
import io.grpc.ManagedChannel;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

class ClientTest {
  @Test
  void eventTypesCarryTheirSeedTypeStringAndDisplayName() {
    EventTypeInfo start = AuditLog.typeInfo(EventType.EVENT_TYPE_START_CALL).orElseThrow();
    assertEquals("START_CALL", start.getTypeString());
    assertEquals("[Call] Start", start.getDisplayName());
    assertEquals(EventCategory.EVENT_CATEGORY_GENERAL, start.getCategory());
    assertEquals(EventCategory.EVENT_CATEGORY_COBROWSE,
        AuditLog.typeInfo(EventType.EVENT_TYPE_CLICK).orElseThrow().getCategory());
    assertTrue(AuditLog.typeInfo(EventType.EVENT_TYPE_UNSPECIFIED).isEmpty());
    for (EventType type : EventType.values()) {
      if (type == EventType.EVENT_TYPE_UNSPECIFIED || type == EventType.UNRECOGNIZED) {
        continue;
      }
      EventTypeInfo info = AuditLog.typeInfo(type).orElseThrow(() -> new AssertionError(type + " has no info"));
      assertEquals(type.name(), "EVENT_TYPE_" + info.getTypeString());
      assertFalse(info.getDisplayName().isEmpty(), type + " has no display name");
    }
  }

  @Test
  void newEventIdReturnsDistinctUuidV7s() {
    String a = AuditLog.newEventId();
    assertTrue(a.matches("[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"), a);
    assertEquals(7, UUID.fromString(a).version());
    assertNotEquals(a, AuditLog.newEventId());
  }

  @Test
  void liveRoundTrip() throws Exception {
    String address = System.getenv("AUDITLOG_ADDR");
    assumeTrue(address != null && !address.isEmpty(), "AUDITLOG_ADDR is not set: no live auditlog server");
    // AUDITLOG_TOKEN and AUDITLOG_TLS_* (when set) reach the server through the SDK's own helper.
    ManagedChannel channel = AuditLog.channelFromEnv();
    try {
      roundTrip(channel);
    } finally {
      channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
  }

  private static void roundTrip(ManagedChannel channel) {
    var stub = AuditLogServiceGrpc.newBlockingStub(channel).withDeadlineAfter(30, TimeUnit.SECONDS);
    String tenant = "sdk-java-" + UUID.randomUUID().toString().substring(0, 12);
    String session = "session-" + UUID.randomUUID().toString().substring(0, 12);
    // Millisecond times survive any storage (BSON dates are milliseconds), so they compare exactly.
    Instant base = Instant.now().truncatedTo(ChronoUnit.MILLIS);

    AuditEvent general = AuditEvent.newBuilder()
        .setId(AuditLog.newEventId())
        .setTenantId(tenant)
        .setTenantUserId("agent-7")
        .setOccurTime(AuditLog.timestamp(base))
        .setStartCall(StartCallAttributes.newBuilder().setCallId("call-1").setCustomerId("customer-42"))
        .build();
    LogEventResponse logged = stub.logEvent(LogEventRequest.newBuilder().setEvent(general).build());
    AuditEvent g = logged.getEvent();
    assertFalse(logged.getAlreadyStored());
    assertEquals(general.getId(), g.getId());
    assertEquals(tenant, g.getTenantId());
    assertEquals(EventType.EVENT_TYPE_START_CALL, g.getEventType());
    assertEquals(AuditEvent.PayloadCase.START_CALL, g.getPayloadCase());
    assertEquals(general.getStartCall(), g.getStartCall());
    assertEquals(0, g.getSequence());
    assertTrue(g.hasReceiveTime());
    assertEquals(base, AuditLog.instant(g.getOccurTime()));

    // The same id and content again is an idempotent retry.
    LogEventResponse again = stub.logEvent(LogEventRequest.newBuilder().setEvent(general).build());
    assertTrue(again.getAlreadyStored());
    assertEquals(general.getId(), again.getEvent().getId());

    AuditEvent cobrowse = AuditEvent.newBuilder()
        .setId(AuditLog.newEventId())
        .setTenantId(tenant)
        .setOccurTime(AuditLog.timestamp(base.plusSeconds(1)))
        .setCobrowse(CobrowseContext.newBuilder().setSessionId(session).setActor(Actor.ACTOR_CUSTOMER))
        .setClick(ClickAttributes.newBuilder().setElement(Element.newBuilder().setName("Buy now").setId("buy-button")))
        .build();
    AuditEvent c = stub.logEvent(LogEventRequest.newBuilder().setEvent(cobrowse).build()).getEvent();
    assertEquals(EventType.EVENT_TYPE_CLICK, c.getEventType());
    assertEquals(1, c.getSequence());
    assertEquals(cobrowse.getCobrowse(), c.getCobrowse());
    assertEquals(cobrowse.getClick(), c.getClick());

    // GetEvent returns each as stored.
    for (AuditEvent want : List.of(g, c)) {
      assertSameEvent(want,
          stub.getEvent(GetEventRequest.newBuilder().setTenantId(tenant).setId(want.getId()).build()).getEvent());
    }

    // ListEvents: oldest first, one per page, then the session filter.
    List<AuditEvent> listed = new ArrayList<>();
    var list = ListEventsRequest.newBuilder().setTenantId(tenant).setOrder(SortOrder.SORT_ORDER_OLDEST_FIRST)
        .setPageSize(1);
    for (int pages = 0; ; pages++) {
      assertTrue(pages <= 3, "too many pages");
      ListEventsResponse page = stub.listEvents(list.build());
      listed.addAll(page.getEventsList());
      if (page.getNextPageToken().isEmpty()) {
        break;
      }
      list.setPageToken(page.getNextPageToken());
    }
    assertEquals(2, listed.size());
    assertSameEvent(g, listed.get(0));
    assertSameEvent(c, listed.get(1));
    ListEventsResponse bySession = stub.listEvents(ListEventsRequest.newBuilder().setTenantId(tenant)
        .setFilter(EventFilter.newBuilder().setCobrowseSessionId(session)).build());
    assertEquals(1, bySession.getEventsCount());
    assertEquals("", bySession.getNextPageToken());
    assertSameEvent(c, bySession.getEvents(0));

    // TailSession replays the session from its start, then says it caught up; closing the
    // cancellable context cancels the stream, which would otherwise stay open for live events.
    List<AuditEvent> tailed = new ArrayList<>();
    long[] head = {-1};
    try (Context.CancellableContext tail = Context.current().withCancellation()) {
      tail.run(() -> {
        Iterator<TailSessionResponse> stream = stub.withDeadlineAfter(15, TimeUnit.SECONDS)
            .tailSession(TailSessionRequest.newBuilder().setTenantId(tenant).setSessionId(session)
                .setFromBeginning(true).build());
        while (stream.hasNext()) {
          TailSessionResponse msg = stream.next();
          assertFalse(msg.getCursor().isEmpty(), "every tail message carries a cursor");
          if (msg.hasEvents()) {
            tailed.addAll(msg.getEvents().getEventsList());
          }
          if (msg.hasCaughtUp()) {
            head[0] = msg.getCaughtUp().getHeadSequence();
            return;
          }
        }
        fail("TailSession ended before caught_up");
      });
    }
    assertEquals(1, head[0]);
    assertEquals(1, tailed.size());
    assertSameEvent(c, tailed.get(0));

    // The resuming tail helper sees the same replay.
    List<AuditEvent> viaHelper = new ArrayList<>();
    try (SessionTail tail = new SessionTail(stub.withDeadlineAfter(15, TimeUnit.SECONDS),
        TailSessionRequest.newBuilder().setTenantId(tenant).setSessionId(session).setFromBeginning(true).build(),
        new SessionTail.Options())) {
      while (tail.hasNext()) {
        TailSessionResponse msg = tail.next();
        viaHelper.addAll(msg.getEvents().getEventsList());
        if (msg.hasCaughtUp()) {
          break;
        }
      }
      assertFalse(tail.cursor().isEmpty());
    }
    assertEquals(1, viaHelper.size());
    assertSameEvent(c, viaHelper.get(0));
  }

  /** Compares two events; receive_time only for presence, whatever precision the server stores. */
  private static void assertSameEvent(AuditEvent want, AuditEvent got) {
    assertTrue(got.hasReceiveTime(), "event " + got.getId() + " has no receive_time");
    // The ledger's place is filled in once the event is sequenced: a read may have it, the answer
    // to LogEvent never does.
    assertEquals(
        want.toBuilder().clearReceiveTime().clearLedgerSequence().clearLedgerHash().build(),
        got.toBuilder().clearReceiveTime().clearLedgerSequence().clearLedgerHash().build());
  }
}
