// Per-call credentials of the Java SDK: "authorization: Bearer <token>" from a TokenProvider.
package io.auditlog;

import io.grpc.CallCredentials;
import io.grpc.Metadata;
import io.grpc.Status;
import java.util.concurrent.Executor;

/**
 * Call credentials that send {@code authorization: Bearer <token>} with the token from a
 * {@link TokenProvider}, asked for every call. Attach them to a channel with
 * {@code CompositeChannelCredentials} (what {@link AuditLog#channel(ConnectOptions)} does) or to a
 * stub with {@code stub.withCallCredentials(...)}.
 *
 * <p>They are sent over plaintext channels too, which only a local development server should use:
 * there the token travels in the clear.
 */
public final class BearerTokenCredentials extends CallCredentials {
  /** The metadata key of the bearer token. */
  public static final Metadata.Key<String> AUTHORIZATION =
      Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);

  private final TokenProvider provider;

  public BearerTokenCredentials(TokenProvider provider) {
    this.provider = provider;
  }

  @Override
  public void applyRequestMetadata(RequestInfo requestInfo, Executor appExecutor, MetadataApplier applier) {
    // The provider may block (a refresh over the network), so never on the transport thread.
    appExecutor.execute(() -> {
      String token;
      try {
        token = provider.token();
      } catch (Exception e) {
        applier.fail(Status.UNAUTHENTICATED.withDescription("auditlog: token provider: " + e).withCause(e));
        return;
      }
      if (token == null || token.isEmpty()) {
        applier.fail(Status.UNAUTHENTICATED.withDescription("auditlog: token provider returned an empty token"));
        return;
      }
      Metadata headers = new Metadata();
      headers.put(AUTHORIZATION, "Bearer " + token);
      applier.apply(headers);
    });
  }
}
