// What the Java SDK needs to open a channel (address, token, TLS), and how it reads them from the AUDITLOG_* environment.
package io.auditlog;

import java.nio.file.Path;
import java.util.Map;

/**
 * How to reach an auditlog server: {@link AuditLog#channel(ConnectOptions)} opens a channel from it.
 *
 * @param address "host:port"; {@link AuditLog#DEFAULT_ADDRESS} when null or empty
 * @param token sent as a bearer token on every call when not null
 * @param tls TLS settings; null means plaintext (local development only)
 */
public record ConnectOptions(String address, TokenProvider token, Tls tls) {
  /** The environment variables every example, live test and end-to-end program reads. */
  public static final String ENV_ADDR = "AUDITLOG_ADDR";
  public static final String ENV_TOKEN = "AUDITLOG_TOKEN";
  public static final String ENV_TLS_CA = "AUDITLOG_TLS_CA";
  public static final String ENV_TLS_CERT = "AUDITLOG_TLS_CERT";
  public static final String ENV_TLS_KEY = "AUDITLOG_TLS_KEY";
  public static final String ENV_TLS_SERVER_NAME = "AUDITLOG_TLS_SERVER_NAME";

  /**
   * How to verify the server and, for mTLS, which certificate to present (PEM files).
   *
   * @param caFile CA certificates that may sign the server's certificate; null means the JDK's roots
   * @param serverName name to verify in the server certificate instead of the address's host; null for none
   * @param certFile client certificate for mTLS (with keyFile), or null
   * @param keyFile PKCS#8 private key of certFile, or null
   */
  public record Tls(Path caFile, String serverName, Path certFile, Path keyFile) {
    public Tls {
      if ((certFile == null) != (keyFile == null)) {
        throw new IllegalArgumentException("auditlog: TLS client certificate: set both certFile and keyFile, or neither");
      }
    }

    /** TLS verified against the CA certificates in caFile, without a client certificate. */
    public static Tls withCa(Path caFile) {
      return new Tls(caFile, null, null, null);
    }
  }

  /** Options for a plaintext channel to address, with a token when token is not null. */
  public static ConnectOptions plaintext(String address, TokenProvider token) {
    return new ConnectOptions(address, token, null);
  }

  /** Reads the options from the process environment: see {@link #fromEnv(Map)}. */
  public static ConnectOptions fromEnv() {
    return fromEnv(System.getenv());
  }

  /**
   * Reads the options from AUDITLOG_ADDR, AUDITLOG_TOKEN, AUDITLOG_TLS_CA, AUDITLOG_TLS_CERT,
   * AUDITLOG_TLS_KEY and AUDITLOG_TLS_SERVER_NAME. Without AUDITLOG_TLS_CA the channel is
   * plaintext; without AUDITLOG_TOKEN no token is sent.
   */
  public static ConnectOptions fromEnv(Map<String, String> env) {
    String address = get(env, ENV_ADDR);
    String token = get(env, ENV_TOKEN);
    TokenProvider provider = token == null ? null : TokenProvider.of(token);
    String ca = get(env, ENV_TLS_CA);
    String cert = get(env, ENV_TLS_CERT);
    String key = get(env, ENV_TLS_KEY);
    String serverName = get(env, ENV_TLS_SERVER_NAME);
    if (ca == null) {
      // Falling back to plaintext when a client certificate was asked for would send what the
      // caller meant to protect in the clear; say so instead.
      if (cert != null || key != null || serverName != null) {
        throw new IllegalArgumentException("auditlog: " + ENV_TLS_CERT + ", " + ENV_TLS_KEY + " and "
            + ENV_TLS_SERVER_NAME + " need " + ENV_TLS_CA + " (TLS)");
      }
      return new ConnectOptions(address, provider, null);
    }
    return new ConnectOptions(address, provider, new Tls(
        Path.of(ca), serverName, cert == null ? null : Path.of(cert), key == null ? null : Path.of(key)));
  }

  private static String get(Map<String, String> env, String name) {
    String value = env.get(name);
    return value == null || value.isEmpty() ? null : value;
  }
}
