// Small helpers of the Java SDK over the generated io.auditlog.v1 stubs: event ids, timestamps, EventType metadata,
// channels with bearer tokens and TLS, and the RetryInfo delay of an error.
package io.auditlog;

import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.Timestamp;
import com.google.rpc.RetryInfo;
import io.auditlog.v1.EventType;
import io.auditlog.v1.EventTypeInfo;
import io.auditlog.v1.OptionsProto;
import io.grpc.CallCredentials;
import io.grpc.ChannelCredentials;
import io.grpc.CompositeChannelCredentials;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.TlsChannelCredentials;
import io.grpc.protobuf.StatusProto;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.security.SecureRandom;
import java.time.Duration;
import java.time.Instant;
import java.util.Optional;
import java.util.UUID;

/** Static helpers for calling auditlog.v1.AuditLogService from Java. */
public final class AuditLog {
  /** The default server address, as in every auditlog SDK. */
  public static final String DEFAULT_ADDRESS = "127.0.0.1:50051";

  private static final SecureRandom RANDOM = new SecureRandom();

  private AuditLog() {}

  /** Returns $AUDITLOG_ADDR, or 127.0.0.1:50051 when it is unset or empty. */
  public static String addressFromEnv() {
    String addr = System.getenv("AUDITLOG_ADDR");
    return addr == null || addr.isEmpty() ? DEFAULT_ADDRESS : addr;
  }

  /** Opens a plaintext channel to "host:port", without a token; shut it down when done. */
  public static ManagedChannel plaintextChannel(String address) {
    return Grpc.newChannelBuilder(address, InsecureChannelCredentials.create()).build();
  }

  /**
   * Opens a channel as {@code options} say: TLS (and mTLS) when {@code options.tls()} is set, and
   * {@code authorization: Bearer <token>} on every call when {@code options.token()} is set. Shut
   * it down when done.
   *
   * @throws UncheckedIOException when a certificate or key file cannot be read
   */
  public static ManagedChannel channel(ConnectOptions options) {
    String address = options.address() == null || options.address().isEmpty() ? DEFAULT_ADDRESS : options.address();
    ChannelCredentials credentials = options.tls() == null
        ? InsecureChannelCredentials.create()
        : tlsCredentials(options.tls());
    if (options.token() != null) {
      credentials = CompositeChannelCredentials.create(credentials, bearerToken(options.token()));
    }
    ManagedChannelBuilder<?> builder = Grpc.newChannelBuilder(address, credentials);
    if (options.tls() != null && options.tls().serverName() != null) {
      // The authority is both the name verified in the server certificate and the SNI.
      builder.overrideAuthority(options.tls().serverName());
    }
    return builder.build();
  }

  /**
   * Opens the channel the AUDITLOG_* environment describes ({@link ConnectOptions#fromEnv()}): the
   * one every example and test uses.
   */
  public static ManagedChannel channelFromEnv() {
    return channel(ConnectOptions.fromEnv());
  }

  /** Call credentials sending the provider's token as a bearer token on every call. */
  public static CallCredentials bearerToken(TokenProvider provider) {
    return new BearerTokenCredentials(provider);
  }

  /**
   * TLS channel credentials: the server verified against {@code tls.caFile()} (the JDK's roots when
   * null), and the client certificate of {@code tls.certFile()} / {@code tls.keyFile()} presented
   * when set. The server-name override is the channel's authority: see {@link #channel}.
   *
   * @throws UncheckedIOException when a file cannot be read
   */
  public static ChannelCredentials tlsCredentials(ConnectOptions.Tls tls) {
    TlsChannelCredentials.Builder builder = TlsChannelCredentials.newBuilder();
    try {
      if (tls.caFile() != null) {
        builder.trustManager(tls.caFile().toFile());
      }
      if (tls.certFile() != null) {
        builder.keyManager(tls.certFile().toFile(), tls.keyFile().toFile());
      }
    } catch (IOException e) {
      throw new UncheckedIOException("auditlog: TLS files: " + e.getMessage(), e);
    }
    return builder.build();
  }

  /**
   * Returns the delay of the google.rpc.RetryInfo detail of a gRPC error (rate limits send one with
   * RESOURCE_EXHAUSTED); empty when {@code error} carries none.
   */
  public static Optional<Duration> retryDelay(Throwable error) {
    com.google.rpc.Status status = error == null ? null : StatusProto.fromThrowable(error);
    if (status == null) {
      return Optional.empty();
    }
    for (Any detail : status.getDetailsList()) {
      if (detail.is(RetryInfo.class)) {
        try {
          RetryInfo info = detail.unpack(RetryInfo.class);
          if (info.hasRetryDelay()) {
            Duration delay = Duration.ofSeconds(info.getRetryDelay().getSeconds(), info.getRetryDelay().getNanos());
            return Optional.of(delay.isNegative() ? Duration.ZERO : delay);
          }
        } catch (InvalidProtocolBufferException e) {
          return Optional.empty();
        }
      }
    }
    return Optional.empty();
  }

  /**
   * Returns a new UUIDv7 (time-ordered, random tail) to use as AuditEvent.id, so that a retried
   * LogEvent stores the event once.
   */
  public static String newEventId() {
    byte[] b = new byte[16];
    RANDOM.nextBytes(b);
    long ms = System.currentTimeMillis();
    for (int i = 5; i >= 0; i--) {
      b[i] = (byte) ms;
      ms >>>= 8;
    }
    b[6] = (byte) (0x70 | (b[6] & 0x0f)); // version 7
    b[8] = (byte) (0x80 | (b[8] & 0x3f)); // RFC 9562 variant
    long msb = 0;
    long lsb = 0;
    for (int i = 0; i < 8; i++) {
      msb = (msb << 8) | (b[i] & 0xff);
      lsb = (lsb << 8) | (b[i + 8] & 0xff);
    }
    return new UUID(msb, lsb).toString();
  }

  /** Converts an Instant to a google.protobuf.Timestamp. */
  public static Timestamp timestamp(Instant instant) {
    return Timestamp.newBuilder().setSeconds(instant.getEpochSecond()).setNanos(instant.getNano()).build();
  }

  /** Converts a google.protobuf.Timestamp to an Instant. */
  public static Instant instant(Timestamp timestamp) {
    return Instant.ofEpochSecond(timestamp.getSeconds(), timestamp.getNanos());
  }

  /**
   * Returns the auditlog.v1.event_type_info option of an EventType value (seed type string, display
   * name, category); empty for EVENT_TYPE_UNSPECIFIED and for values this SDK does not know.
   */
  public static Optional<EventTypeInfo> typeInfo(EventType type) {
    if (type == EventType.UNRECOGNIZED) {
      return Optional.empty();
    }
    var options = type.getValueDescriptor().getOptions();
    if (!options.hasExtension(OptionsProto.eventTypeInfo)) {
      return Optional.empty();
    }
    return Optional.of(options.getExtension(OptionsProto.eventTypeInfo));
  }
}
