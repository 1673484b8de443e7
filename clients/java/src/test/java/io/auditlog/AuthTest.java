// Offline tests of bearer tokens, TLS/mTLS, the AUDITLOG_* environment, RetryInfo and the resuming tail, each
// against a stub AuditLogService served by the test on an ephemeral port (TLS from src/test/resources/tls).
package io.auditlog;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.Any;
import com.google.rpc.Code;
import com.google.rpc.ErrorInfo;
import com.google.rpc.RetryInfo;
import io.auditlog.v1.AuditEvent;
import io.auditlog.v1.AuditLogServiceGrpc;
import io.auditlog.v1.LogEventRequest;
import io.auditlog.v1.LogEventResponse;
import io.auditlog.v1.TailEventBatch;
import io.auditlog.v1.TailSessionRequest;
import io.auditlog.v1.TailSessionResponse;
import io.grpc.Grpc;
import io.grpc.InsecureServerCredentials;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.Server;
import io.grpc.ServerCall;
import io.grpc.ServerCallHandler;
import io.grpc.ServerCredentials;
import io.grpc.ServerInterceptor;
import io.grpc.ServerInterceptors;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.TlsServerCredentials;
import io.grpc.protobuf.StatusProto;
import io.grpc.stub.StreamObserver;
import java.net.URISyntaxException;
import java.nio.file.Path;
import java.security.cert.Certificate;
import java.security.cert.X509Certificate;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import javax.net.ssl.SSLPeerUnverifiedException;
import javax.net.ssl.SSLSession;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

class AuthTest {
  /** Serves TailSession for one call of the stub (calls count from 1). */
  interface TailHandler {
    void serve(int call, TailSessionRequest request, StreamObserver<TailSessionResponse> out);
  }

  /** A stub AuditLogService recording what each call carried. */
  static final class Stub extends AuditLogServiceGrpc.AuditLogServiceImplBase {
    final List<String> auth = Collections.synchronizedList(new ArrayList<>());
    final List<String> clientNames = Collections.synchronizedList(new ArrayList<>());
    final List<String> tailCursors = Collections.synchronizedList(new ArrayList<>());
    volatile TailHandler tail;

    @Override
    public void logEvent(LogEventRequest request, StreamObserver<LogEventResponse> out) {
      out.onNext(LogEventResponse.newBuilder().setEvent(request.getEvent()).build());
      out.onCompleted();
    }

    @Override
    public void tailSession(TailSessionRequest request, StreamObserver<TailSessionResponse> out) {
      tailCursors.add(request.hasCursor() ? request.getCursor() : "");
      tail.serve(tailCursors.size(), request, out);
    }

    /** Records the authorization header and the verified client certificate of every call. */
    ServerInterceptor recorder() {
      return new ServerInterceptor() {
        @Override
        public <Q, R> ServerCall.Listener<Q> interceptCall(ServerCall<Q, R> call, Metadata headers,
            ServerCallHandler<Q, R> next) {
          String value = headers.get(BearerTokenCredentials.AUTHORIZATION);
          auth.add(value == null ? "" : value);
          SSLSession session = call.getAttributes().get(Grpc.TRANSPORT_ATTR_SSL_SESSION);
          if (session != null) {
            try {
              Certificate[] peer = session.getPeerCertificates();
              clientNames.add(((X509Certificate) peer[0]).getSubjectX500Principal().getName());
            } catch (SSLPeerUnverifiedException e) {
              // no client certificate
            }
          }
          return next.startCall(call, headers);
        }
      };
    }
  }

  private final List<Server> servers = new ArrayList<>();
  private final List<ManagedChannel> channels = new ArrayList<>();

  @AfterEach
  void stop() throws InterruptedException {
    for (ManagedChannel channel : channels) {
      channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
    for (Server server : servers) {
      server.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
  }

  private static Path pem(String name) {
    try {
      return Path.of(AuthTest.class.getResource("/tls/" + name).toURI());
    } catch (URISyntaxException e) {
      throw new IllegalStateException(e);
    }
  }

  /** Starts stub on an ephemeral loopback port and returns "127.0.0.1:port". */
  private String serve(Stub stub, ServerCredentials credentials) throws Exception {
    Server server = Grpc.newServerBuilderForPort(0, credentials)
        .addService(ServerInterceptors.intercept(stub, stub.recorder()))
        .build()
        .start();
    servers.add(server);
    return "127.0.0.1:" + server.getPort();
  }

  private static ServerCredentials tlsServer(boolean mutual) throws Exception {
    TlsServerCredentials.Builder builder = TlsServerCredentials.newBuilder()
        .keyManager(pem("server.pem").toFile(), pem("server.key").toFile());
    if (mutual) {
      builder.trustManager(pem("ca.pem").toFile()).clientAuth(TlsServerCredentials.ClientAuth.REQUIRE);
    }
    return builder.build();
  }

  private ManagedChannel open(ConnectOptions options) {
    ManagedChannel channel = AuditLog.channel(options);
    channels.add(channel);
    return channel;
  }

  private static void logOne(ManagedChannel channel) {
    // A bound on a hung call, not a speed assertion.
    AuditLogServiceGrpc.newBlockingStub(channel).withDeadlineAfter(10, TimeUnit.SECONDS).logEvent(
        LogEventRequest.newBuilder()
            .setEvent(AuditEvent.newBuilder().setId(AuditLog.newEventId()).setTenantId("acme"))
            .build());
  }

  /** "token-1", "token-2", ...: one per call. */
  private static TokenProvider countingTokens(AtomicInteger issued) {
    return () -> "token-" + issued.incrementAndGet();
  }

  @Test
  void tokenProviderIsAskedForEveryCallOverPlaintext() throws Exception {
    Stub stub = new Stub();
    String address = serve(stub, InsecureServerCredentials.create());
    AtomicInteger issued = new AtomicInteger();
    ManagedChannel channel = open(ConnectOptions.plaintext(address, countingTokens(issued)));
    for (int i = 0; i < 3; i++) {
      logOne(channel);
    }
    assertEquals(List.of("Bearer token-1", "Bearer token-2", "Bearer token-3"), stub.auth);
    assertEquals(3, issued.get());
  }

  @Test
  void noTokenSendsNoAuthorization() throws Exception {
    Stub stub = new Stub();
    String address = serve(stub, InsecureServerCredentials.create());
    logOne(open(ConnectOptions.plaintext(address, null)));
    logOne(open(ConnectOptions.plaintext(address, TokenProvider.of("static-token"))));
    assertEquals(List.of("", "Bearer static-token"), stub.auth);
  }

  @Test
  void failingTokenProviderIsUnauthenticated() throws Exception {
    Stub stub = new Stub();
    String address = serve(stub, InsecureServerCredentials.create());
    ManagedChannel channel = open(ConnectOptions.plaintext(address, () -> {
      throw new IllegalStateException("identity provider down");
    }));
    StatusRuntimeException e = assertThrows(StatusRuntimeException.class, () -> logOne(channel));
    assertEquals(Status.Code.UNAUTHENTICATED, e.getStatus().getCode());
    assertTrue(e.getStatus().getDescription().contains("identity provider down"), e.getStatus().toString());
    assertTrue(stub.auth.isEmpty());
  }

  @Test
  void tlsWithTheRightCaWorksAndOtherClientsAreRefused() throws Exception {
    Stub stub = new Stub();
    String address = serve(stub, tlsServer(false));
    logOne(open(new ConnectOptions(address, TokenProvider.of("tls-token"), ConnectOptions.Tls.withCa(pem("ca.pem")))));
    // The certificate names localhost and 127.0.0.1: an override is verified too.
    logOne(open(new ConnectOptions(address, null, new ConnectOptions.Tls(pem("ca.pem"), "localhost", null, null))));
    assertEquals(List.of("Bearer tls-token", ""), stub.auth);

    for (ConnectOptions refused : List.of(
        ConnectOptions.plaintext(address, TokenProvider.of("leaked")),
        new ConnectOptions(address, null, ConnectOptions.Tls.withCa(pem("other-ca.pem"))),
        new ConnectOptions(address, null, new ConnectOptions.Tls(pem("ca.pem"), "auditlog.invalid", null, null)),
        new ConnectOptions(address, null, new ConnectOptions.Tls(null, null, null, null)))) {
      StatusRuntimeException e = assertThrows(StatusRuntimeException.class, () -> logOne(open(refused)),
          refused.toString());
      assertEquals(Status.Code.UNAVAILABLE, e.getStatus().getCode(), refused + ": " + e);
    }
    assertEquals(2, stub.auth.size(), "a refused client reached the service");
  }

  @Test
  void mutualTlsPresentsTheClientCertificateFromTheEnvironment() throws Exception {
    Stub stub = new Stub();
    String address = serve(stub, tlsServer(true));
    Map<String, String> env = Map.of(
        "AUDITLOG_ADDR", address, "AUDITLOG_TOKEN", "env-token", "AUDITLOG_TLS_CA", pem("ca.pem").toString());
    assertThrows(StatusRuntimeException.class, () -> logOne(open(ConnectOptions.fromEnv(env))));
    assertTrue(stub.auth.isEmpty());

    var withCert = new java.util.HashMap<>(env);
    withCert.put("AUDITLOG_TLS_CERT", pem("client.pem").toString());
    withCert.put("AUDITLOG_TLS_KEY", pem("client.key").toString());
    logOne(open(ConnectOptions.fromEnv(withCert)));
    assertEquals(List.of("Bearer env-token"), stub.auth);
    assertEquals(List.of("CN=sdk-test-client"), stub.clientNames);
  }

  @Test
  void optionsFromEnvironment() throws Exception {
    ConnectOptions none = ConnectOptions.fromEnv(Map.of());
    assertNull(none.address());
    assertNull(none.token());
    assertNull(none.tls());
    // A client certificate without a CA must not quietly become a plaintext channel.
    assertThrows(IllegalArgumentException.class,
        () -> ConnectOptions.fromEnv(Map.of("AUDITLOG_TLS_CERT", "c.pem", "AUDITLOG_TLS_KEY", "c.key")));
    ConnectOptions all = ConnectOptions.fromEnv(Map.of("AUDITLOG_ADDR", "auditlog:443", "AUDITLOG_TOKEN", "t",
        "AUDITLOG_TLS_CA", "ca.pem", "AUDITLOG_TLS_CERT", "c.pem", "AUDITLOG_TLS_KEY", "c.key",
        "AUDITLOG_TLS_SERVER_NAME", "auditlog.internal"));
    assertEquals("auditlog:443", all.address());
    assertEquals("t", all.token().token());
    assertEquals(new ConnectOptions.Tls(Path.of("ca.pem"), "auditlog.internal", Path.of("c.pem"), Path.of("c.key")),
        all.tls());
  }

  private static StatusRuntimeException rateLimited(Duration delay, String cursor) {
    Metadata trailers = new Metadata();
    if (cursor != null) {
      trailers.put(SessionTail.CURSOR_TRAILER, cursor);
    }
    return StatusProto.toStatusRuntimeException(com.google.rpc.Status.newBuilder()
        .setCode(Code.RESOURCE_EXHAUSTED_VALUE)
        .setMessage("rate limited")
        .addDetails(Any.pack(ErrorInfo.newBuilder().setReason("RATE_LIMITED").setDomain("auditlog.v1").build()))
        .addDetails(Any.pack(RetryInfo.newBuilder().setRetryDelay(com.google.protobuf.Duration.newBuilder()
            .setSeconds(delay.getSeconds()).setNanos(delay.getNano())).build()))
        .build(), trailers);
  }

  private static StatusRuntimeException unauthenticated(String cursor) {
    Metadata trailers = new Metadata();
    if (cursor != null) {
      trailers.put(SessionTail.CURSOR_TRAILER, cursor);
    }
    return Status.UNAUTHENTICATED.withDescription("token expired").asRuntimeException(trailers);
  }

  private static void send(StreamObserver<TailSessionResponse> out, long... sequences) {
    for (long s : sequences) {
      out.onNext(TailSessionResponse.newBuilder().setCursor("c" + s)
          .setEvents(TailEventBatch.newBuilder().addEvents(
              AuditEvent.newBuilder().setId("e" + s).setTenantId("acme").setSequence(s)))
          .build());
    }
  }

  @Test
  void retryDelayIsReadFromTheErrorReceivedOverTheWire() throws Exception {
    assertTrue(AuditLog.retryDelay(new IllegalStateException("plain")).isEmpty());
    assertTrue(AuditLog.retryDelay(Status.RESOURCE_EXHAUSTED.asRuntimeException()).isEmpty());
    Stub stub = new Stub();
    stub.tail = (call, request, out) -> out.onError(rateLimited(Duration.ofMillis(1500), null));
    ManagedChannel channel = open(ConnectOptions.plaintext(serve(stub, InsecureServerCredentials.create()), null));
    StatusRuntimeException e = assertThrows(StatusRuntimeException.class, () -> AuditLogServiceGrpc
        .newBlockingStub(channel).withDeadlineAfter(10, TimeUnit.SECONDS)
        .tailSession(TailSessionRequest.newBuilder().setTenantId("acme").setSessionId("s").build()).hasNext());
    assertEquals(Status.Code.RESOURCE_EXHAUSTED, e.getStatus().getCode());
    assertEquals(Duration.ofMillis(1500), AuditLog.retryDelay(e).orElseThrow());
    assertEquals(Duration.ofMillis(1500), AuditLog.retryDelay(new RuntimeException("wrapped", e)).orElseThrow());
  }

  /** What a SessionTail returned, the waits it reported, and how it ended. */
  record TailRun(List<Long> sequences, List<Duration> waits, SessionTail tail, StatusRuntimeException error) {}

  private TailRun tailAll(ManagedChannel channel, SessionTail.Options options) {
    List<Long> sequences = new ArrayList<>();
    List<Duration> waits = new ArrayList<>();
    // A bound on a hung test, not a speed assertion.
    var stub = AuditLogServiceGrpc.newBlockingStub(channel).withDeadlineAfter(20, TimeUnit.SECONDS);
    SessionTail tail = new SessionTail(stub,
        TailSessionRequest.newBuilder().setTenantId("acme").setSessionId("s").setFromBeginning(true).build(),
        options.onRetry((error, wait) -> waits.add(wait)));
    try (tail) {
      while (tail.hasNext()) {
        for (AuditEvent event : tail.next().getEvents().getEventsList()) {
          sequences.add(event.getSequence());
        }
      }
      return new TailRun(sequences, waits, tail, null);
    } catch (StatusRuntimeException e) {
      return new TailRun(sequences, waits, tail, e);
    }
  }

  @Test
  void sessionTailWaitsTheRetryInfoDelayResumesFromTheCursorAndSkipsDuplicates() throws Exception {
    Stub stub = new Stub();
    stub.tail = (call, request, out) -> {
      switch (call) {
        case 1 -> out.onError(rateLimited(Duration.ofMillis(30), null)); // before the first message
        case 2 -> {
          send(out, 1, 2);
          out.onError(rateLimited(Duration.ofMillis(20), "c2"));
        }
        default -> { // a replay overlapping what was already delivered, then the end
          send(out, 2, 3);
          out.onCompleted();
        }
      }
    };
    ManagedChannel channel = open(ConnectOptions.plaintext(serve(stub, InsecureServerCredentials.create()), null));
    TailRun run = tailAll(channel,
        // The server's delay must be used, never the backoff.
        new SessionTail.Options().backoff(Duration.ofHours(1), Duration.ofHours(1)));
    assertNull(run.error());
    assertEquals(List.of(1L, 2L, 3L), run.sequences());
    assertEquals(List.of(Duration.ofMillis(30), Duration.ofMillis(20)), run.waits());
    assertEquals(List.of("", "", "c2"), stub.tailCursors);
    assertEquals(2, run.tail().resumes());
    assertEquals("c3", run.tail().cursor());
  }

  @Test
  void sessionTailGivesUpAfterMaxRetries() throws Exception {
    Stub stub = new Stub();
    stub.tail = (call, request, out) -> out.onError(rateLimited(Duration.ofMillis(1), null));
    ManagedChannel channel = open(ConnectOptions.plaintext(serve(stub, InsecureServerCredentials.create()), null));
    TailRun run = tailAll(channel, new SessionTail.Options().maxRetries(3));
    assertEquals(Status.Code.RESOURCE_EXHAUSTED, run.error().getStatus().getCode());
    assertEquals(3, run.tail().resumes());
    assertEquals(4, stub.tailCursors.size());
  }

  @Test
  void sessionTailRenewsAnExpiredTokenAndResumesFromTheTrailerCursor() throws Exception {
    Stub stub = new Stub();
    stub.tail = (call, request, out) -> {
      String sent = stub.auth.get(stub.auth.size() - 1);
      if (!sent.equals("Bearer token-" + call)) {
        out.onError(Status.UNAUTHENTICATED.withDescription("call " + call + ": " + sent).asRuntimeException());
      } else if (call == 1) { // the token expires after one event
        send(out, 1);
        out.onError(unauthenticated("c1"));
      } else {
        send(out, 2);
        out.onCompleted();
      }
    };
    AtomicInteger issued = new AtomicInteger();
    ManagedChannel channel = open(ConnectOptions.plaintext(serve(stub, InsecureServerCredentials.create()),
        countingTokens(issued)));
    TailRun run = tailAll(channel, new SessionTail.Options());
    assertNull(run.error());
    assertEquals(List.of(1L, 2L), run.sequences());
    assertEquals(2, issued.get());
    assertEquals(List.of("", "c1"), stub.tailCursors);
    assertEquals(List.of(Duration.ZERO), run.waits());
    assertEquals(1, run.tail().resumes());
  }

  @Test
  void sessionTailReportsATokenRefusedAgainBeforeAnyMessage() throws Exception {
    Stub stub = new Stub();
    stub.tail = (call, request, out) -> {
      if (call == 1) {
        send(out, 1);
        out.onError(unauthenticated("c1"));
      } else {
        out.onError(unauthenticated(null)); // no cursor: nothing to resume
      }
    };
    AtomicInteger issued = new AtomicInteger();
    ManagedChannel channel = open(ConnectOptions.plaintext(serve(stub, InsecureServerCredentials.create()),
        countingTokens(issued)));
    TailRun run = tailAll(channel, new SessionTail.Options());
    assertEquals(Status.Code.UNAUTHENTICATED, run.error().getStatus().getCode());
    assertEquals(List.of(1L), run.sequences());
    assertEquals(2, issued.get());
    assertEquals(1, run.tail().resumes());
  }

  @Test
  void closingTheTailEndsTheIteration() throws Exception {
    Stub stub = new Stub();
    stub.tail = (call, request, out) -> send(out, 1); // and then stays open, as a live tail does
    ManagedChannel channel = open(ConnectOptions.plaintext(serve(stub, InsecureServerCredentials.create()), null));
    SessionTail tail = new SessionTail(AuditLogServiceGrpc.newBlockingStub(channel),
        TailSessionRequest.newBuilder().setTenantId("acme").setSessionId("s").build(), new SessionTail.Options());
    assertTrue(tail.hasNext());
    assertEquals(1, tail.next().getEvents().getEvents(0).getSequence());
    tail.close();
    assertFalse(tail.hasNext());
    assertEquals(1, stub.tailCursors.size());
  }
}
