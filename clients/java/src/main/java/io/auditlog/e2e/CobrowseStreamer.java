// The Java writer of the cross-language end-to-end test (spec: e2e/README.md): streams co-browsing events over StreamEvents, checking every ack.
package io.auditlog.e2e;

import com.google.protobuf.ListValue;
import com.google.protobuf.Struct;
import com.google.protobuf.Timestamp;
import com.google.protobuf.Value;
import io.auditlog.AuditLog;
import io.auditlog.v1.Actor;
import io.auditlog.v1.AuditEvent;
import io.auditlog.v1.AuditLogServiceGrpc;
import io.auditlog.v1.ClickAttributes;
import io.auditlog.v1.CobrowseContext;
import io.auditlog.v1.CustomEventAttributes;
import io.auditlog.v1.Element;
import io.auditlog.v1.EventAck;
import io.auditlog.v1.FormAttributes;
import io.auditlog.v1.InputAttributes;
import io.auditlog.v1.PageChangeAttributes;
import io.auditlog.v1.ScrollAttributes;
import io.auditlog.v1.ScrollPosition;
import io.auditlog.v1.SelectionAttributes;
import io.auditlog.v1.StreamEventsRequest;
import io.auditlog.v1.StreamEventsResponse;
import io.grpc.ManagedChannel;
import io.grpc.stub.StreamObserver;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

/**
 * Streams the co-browsing events of the end-to-end test into one session over StreamEvents and checks
 * that every ack answers its request in order with the sent id and the next sequence. With
 * {@code --wait-for-start} it first connects and waits for a line on stdin, so that a tail can catch
 * up before the first event. Any failure ends the program with exit status 1.
 *
 * <p>Needs AUDITLOG_ADDR, E2E_TENANT, E2E_SESSION, E2E_BASE_MS and E2E_COBROWSE_EVENTS; AUDITLOG_TOKEN
 * and AUDITLOG_TLS_* apply when set. The pom pins
 * exec:java to the example, so run it on the runtime classpath, e.g. after
 * {@code mvn compile dependency:build-classpath -Dmdep.outputFile=cp.txt -Dmdep.includeScope=runtime}:
 * {@code java -cp target/classes:$(cat cp.txt) io.auditlog.e2e.CobrowseStreamer}.
 */
public final class CobrowseStreamer {
  private CobrowseStreamer() {}

  /** The inputs of the spec. */
  record Spec(String tenant, String session, long baseMs) {}

  public static void main(String[] args) {
    try {
      run(args);
    } catch (Throwable t) {
      System.err.println("java e2e streamer: " + t);
      t.printStackTrace();
      System.exit(1);
    }
  }

  private static String env(String name) {
    String value = System.getenv(name);
    if (value == null || value.isEmpty()) {
      throw new IllegalStateException(name + " is not set");
    }
    return value;
  }

  private static Timestamp ms(long millis) {
    return Timestamp.newBuilder()
        .setSeconds(Math.floorDiv(millis, 1000))
        .setNanos((int) Math.floorMod(millis, 1000) * 1_000_000)
        .build();
  }

  private static Value num(double x) {
    return Value.newBuilder().setNumberValue(x).build();
  }

  private static Value str(String s) {
    return Value.newBuilder().setStringValue(s).build();
  }

  private static Value bool(boolean b) {
    return Value.newBuilder().setBoolValue(b).build();
  }

  /** Co-browsing event j (1-based) of the spec. */
  static AuditEvent cobrowseEvent(Spec spec, int j) {
    boolean agent = j % 3 == 0;
    AuditEvent.Builder e = AuditEvent.newBuilder()
        .setId(String.format("java-%04d", j))
        .setTenantId(spec.tenant())
        .setOccurTime(ms(spec.baseMs() + 137L * j))
        .setCobrowse(CobrowseContext.newBuilder()
            .setSessionId(spec.session())
            .setActor(agent ? Actor.ACTOR_AGENT : Actor.ACTOR_CUSTOMER));
    if (agent) {
      e.setTenantUserId("agent-" + (j % 5));
    }
    switch ((j - 1) % 7) {
      case 0 -> e.setClick(ClickAttributes.newBuilder()
          .setElement(Element.newBuilder().setName("button-" + j).setId("btn-" + j)));
      case 1 -> {
        ScrollAttributes.Builder scroll = ScrollAttributes.newBuilder()
            .setPosition(ScrollPosition.newBuilder().setTop(12.5 * j).setLeft(0.25 * (j % 4)));
        if (j % 2 == 0) {
          scroll.setElement(Element.newBuilder().setId("panel-" + j));
        }
        e.setScroll(scroll);
      }
      case 2 -> e.setForm(FormAttributes.newBuilder().setForm(Element.newBuilder().setName("form-" + j)));
      case 3 -> e.setInput(InputAttributes.newBuilder()
          .setText("text-" + j)
          .setElement(Element.newBuilder().setId("input-" + j))
          .setSensitive(j % 4 == 0));
      case 4 -> e.setPageChange(PageChangeAttributes.newBuilder()
          .setPageName("Página " + j + " ✓")
          .setUrl("https://shop.example/p/" + j));
      case 5 -> {
        SelectionAttributes.Builder selection = SelectionAttributes.newBuilder().setSelectedText("selected " + j);
        if (j % 2 == 0) {
          selection.setElement(Element.newBuilder().setName("para-" + j));
        }
        e.setSelection(selection);
      }
      default -> e.setCustomEvent(CustomEventAttributes.newBuilder()
          .setEventType("custom-" + (j % 3))
          .setValue(Value.newBuilder().setStructValue(Struct.newBuilder()
              .putFields("n", num(j))
              .putFields("flags", Value.newBuilder()
                  .setListValue(ListValue.newBuilder().addValues(bool(true)).addValues(bool(false)))
                  .build())
              .putFields("label", str("v-" + j)))));
    }
    return e.build();
  }

  private static void run(String[] args) throws Exception {
    env("AUDITLOG_ADDR"); // required: the SDK's default address is never the test's server
    Spec spec = new Spec(env("E2E_TENANT"), env("E2E_SESSION"), Long.parseLong(env("E2E_BASE_MS")));
    int count = Integer.parseInt(env("E2E_COBROWSE_EVENTS"));
    List<AuditEvent> events = new ArrayList<>(count);
    for (int j = 1; j <= count; j++) {
      events.add(cobrowseEvent(spec, j));
    }

    // The SDK's helper reads AUDITLOG_ADDR, AUDITLOG_TOKEN and AUDITLOG_TLS_*, as every SDK does.
    ManagedChannel channel = AuditLog.channelFromEnv();
    try {
      if (List.of(args).contains("--wait-for-start")) {
        // Connect while waiting, so that the gate is the only delay once it opens.
        channel.getState(true);
        var stdin = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        if (stdin.readLine() == null) {
          throw new IllegalStateException("stdin closed before the start signal");
        }
      }
      stream(channel, events);
    } finally {
      channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
    System.out.println("java: streamed " + count + " co-browsing events, every ack checked");
  }

  /** Sends every event on one StreamEvents call and checks each ack as it arrives. */
  private static void stream(ManagedChannel channel, List<AuditEvent> events) throws Exception {
    CompletableFuture<Integer> done = new CompletableFuture<>();
    var stub = AuditLogServiceGrpc.newStub(channel).withDeadlineAfter(60, TimeUnit.SECONDS);
    StreamObserver<StreamEventsRequest> requests = stub.streamEvents(new StreamObserver<>() {
      private int answered;

      @Override
      public void onNext(StreamEventsResponse response) {
        try {
          check(events, answered, response);
          answered++;
        } catch (RuntimeException e) {
          done.completeExceptionally(e);
        }
      }

      @Override
      public void onError(Throwable t) {
        done.completeExceptionally(new IllegalStateException(
            "StreamEvents failed after " + answered + " acks", t));
      }

      @Override
      public void onCompleted() {
        done.complete(answered);
      }
    });
    // 200 small events: the transport buffers them, so no need to wait for isReady between them.
    for (AuditEvent event : events) {
      requests.onNext(StreamEventsRequest.newBuilder().setEvent(event).build());
    }
    requests.onCompleted();
    int answered = done.get(60, TimeUnit.SECONDS);
    if (answered != events.size()) {
      throw new IllegalStateException("StreamEvents answered " + answered + " of " + events.size() + " events");
    }
  }

  private static void check(List<AuditEvent> events, int index, StreamEventsResponse response) {
    if (index >= events.size()) {
      throw new IllegalStateException("more responses than requests: " + response);
    }
    AuditEvent sent = events.get(index);
    if (response.getRequestIndex() != index) {
      throw new IllegalStateException("response " + index + " has request_index " + response.getRequestIndex());
    }
    if (!response.hasAck()) {
      throw new IllegalStateException(sent.getId() + " was not stored: " + response.getError());
    }
    EventAck ack = response.getAck();
    if (!ack.getId().equals(sent.getId()) || ack.getSequence() != index + 1 || ack.getAlreadyStored()
        || !ack.hasReceiveTime()) {
      throw new IllegalStateException(
          "ack of " + sent.getId() + " (want sequence " + (index + 1) + ", first store): " + ack);
    }
  }
}
