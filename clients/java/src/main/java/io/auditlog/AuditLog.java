// Small helpers of the Java SDK over the generated io.auditlog.v1 stubs: event ids, timestamps, EventType metadata, channels.
package io.auditlog;

import com.google.protobuf.Timestamp;
import io.auditlog.v1.EventType;
import io.auditlog.v1.EventTypeInfo;
import io.auditlog.v1.OptionsProto;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import java.security.SecureRandom;
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

  /** Opens a plaintext channel to "host:port"; shut it down when done. */
  public static ManagedChannel plaintextChannel(String address) {
    return Grpc.newChannelBuilder(address, InsecureChannelCredentials.create()).build();
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
