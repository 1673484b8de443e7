// The bearer token source of the Java SDK: a fixed token, or a function asked on every call.
package io.auditlog;

/**
 * Returns the bearer token to send on one call. It is asked for every call (and every resume of a
 * {@link SessionTail}), on gRPC's application executor, so one that caches a token and renews it
 * before it expires keeps a long-lived channel authenticated; keep it cheap.
 */
@FunctionalInterface
public interface TokenProvider {
  /** The current token; throwing (or returning an empty token) fails the call with UNAUTHENTICATED. */
  String token() throws Exception;

  /** A provider that always returns {@code token}. */
  static TokenProvider of(String token) {
    return () -> token;
  }
}
