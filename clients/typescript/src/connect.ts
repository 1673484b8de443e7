// Connections of the TypeScript SDK: bearer tokens (a Connect interceptor), TLS/mTLS, and the AUDITLOG_* environment.
import { readFileSync } from "node:fs";
import type { SecureClientSessionOptions } from "node:http2";
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { AuditLogService } from "./gen/auditlog/v1/service_pb.js";

/** The default server address, as in every auditlog SDK. */
export const DEFAULT_ADDRESS = "127.0.0.1:50051";

/** A typed client of auditlog.v1.AuditLogService. */
export type AuditLogClient = Client<typeof AuditLogService>;

/** A client and the HTTP/2 connection under it. */
export interface AuditLogConnection {
  /** The service client: `await conn.client.logEvent({ event })`. */
  readonly client: AuditLogClient;
  /** Closes the HTTP/2 connection; calls in flight fail. */
  close(): void;
}

/**
 * A bearer token, or a function returning the current one. A function is called for every call
 * (and every resume of a SessionTail), so one that caches a token and renews it before it expires
 * keeps a long-lived client authenticated; keep it cheap, it runs on the call path.
 */
export type TokenProvider = string | (() => string | Promise<string>);

/** How to verify the server and, for mTLS, which certificate to present. Paths are PEM files. */
export interface TlsOptions {
  /** CA certificates that may sign the server's certificate; Node's root store when unset. */
  caFile?: string;
  /** Name to verify in the server certificate (and to send as SNI) instead of the address's host. */
  serverName?: string;
  /** Client certificate for mTLS, with keyFile. */
  certFile?: string;
  /** Private key of certFile. */
  keyFile?: string;
}

/** What connectAuditLog needs. */
export interface ConnectOptions {
  /** "host:port", or a full "http://" / "https://" URL; DEFAULT_ADDRESS when unset. */
  address?: string;
  /** Sent as "authorization: Bearer <token>" on every call when set. */
  token?: TokenProvider;
  /**
   * TLS settings; true means TLS with Node's root store. Without them (and without an "https://"
   * address) the connection is plaintext, for a local development server only.
   */
  tls?: TlsOptions | true;
  /** More Connect interceptors, run after the token one. */
  interceptors?: Interceptor[];
}

/** The environment variables every example, live test and end-to-end program reads. */
export const ENV = {
  addr: "AUDITLOG_ADDR",
  token: "AUDITLOG_TOKEN",
  tlsCa: "AUDITLOG_TLS_CA",
  tlsCert: "AUDITLOG_TLS_CERT",
  tlsKey: "AUDITLOG_TLS_KEY",
  tlsServerName: "AUDITLOG_TLS_SERVER_NAME",
} as const;

/**
 * A Connect interceptor that sets "authorization: Bearer <token>" on every call, asking `token` for
 * it each time. A failing or empty provider fails the call with UNAUTHENTICATED.
 */
export function bearerTokenInterceptor(token: TokenProvider): Interceptor {
  return (next) => async (req) => {
    let value: string;
    try {
      value = typeof token === "function" ? await token() : token;
    } catch (cause) {
      throw new ConnectError(`auditlog: token provider: ${String(cause)}`, Code.Unauthenticated, undefined, undefined, cause);
    }
    if (!value) {
      throw new ConnectError("auditlog: token provider returned an empty token", Code.Unauthenticated);
    }
    req.header.set("authorization", `Bearer ${value}`);
    return next(req);
  };
}

/** Node's http2/TLS options for `tls`: what Http2SessionManager passes to http2.connect. */
export function tlsSessionOptions(tls: TlsOptions): SecureClientSessionOptions {
  if (!tls.certFile !== !tls.keyFile) {
    throw new Error("auditlog: TLS client certificate: set both certFile and keyFile, or neither");
  }
  return {
    ...(tls.caFile ? { ca: readFileSync(tls.caFile) } : {}),
    ...(tls.certFile ? { cert: readFileSync(tls.certFile) } : {}),
    ...(tls.keyFile ? { key: readFileSync(tls.keyFile) } : {}),
    ...(tls.serverName ? { servername: tls.serverName } : {}),
    minVersion: "TLSv1.2",
  };
}

/**
 * Reads ConnectOptions from AUDITLOG_ADDR, AUDITLOG_TOKEN, AUDITLOG_TLS_CA, AUDITLOG_TLS_CERT,
 * AUDITLOG_TLS_KEY and AUDITLOG_TLS_SERVER_NAME. Without AUDITLOG_TLS_CA the connection is
 * plaintext; without AUDITLOG_TOKEN no token is sent.
 */
export function optionsFromEnv(env: NodeJS.ProcessEnv = process.env): ConnectOptions {
  const options: ConnectOptions = { address: env[ENV.addr] || DEFAULT_ADDRESS };
  const token = env[ENV.token];
  if (token) options.token = token;
  const caFile = env[ENV.tlsCa];
  const certFile = env[ENV.tlsCert];
  const keyFile = env[ENV.tlsKey];
  const serverName = env[ENV.tlsServerName];
  if (!caFile) {
    // Falling back to plaintext when a client certificate was asked for would send what the
    // caller meant to protect in the clear; say so instead.
    if (certFile || keyFile || serverName) {
      throw new Error(`auditlog: ${ENV.tlsCert}, ${ENV.tlsKey} and ${ENV.tlsServerName} need ${ENV.tlsCa} (TLS)`);
    }
    return options;
  }
  options.tls = {
    caFile,
    ...(certFile ? { certFile } : {}),
    ...(keyFile ? { keyFile } : {}),
    ...(serverName ? { serverName } : {}),
  };
  return options;
}

/**
 * Connects to an auditlog server over gRPC (HTTP/2). Given an address ("host:port" for plaintext, or
 * an "http://" / "https://" URL), it connects there without a token. Given ConnectOptions, it adds
 * the token and TLS settings. Without an argument, everything comes from the AUDITLOG_* environment
 * (optionsFromEnv).
 */
export function connectAuditLog(options: string | ConnectOptions = optionsFromEnv()): AuditLogConnection {
  const o: ConnectOptions = typeof options === "string" ? { address: options } : options;
  const address = o.address || DEFAULT_ADDRESS;
  const scheme = /^(https?):\/\//.exec(address)?.[1];
  if (scheme === "http" && o.tls) {
    throw new Error(`auditlog: TLS options given for a plaintext address ${address}`);
  }
  const secure = scheme === "https" || o.tls !== undefined;
  const baseUrl = scheme ? address : `${secure ? "https" : "http"}://${address}`;
  const nodeOptions = typeof o.tls === "object" ? tlsSessionOptions(o.tls) : undefined;
  const sessionManager = new Http2SessionManager(baseUrl, undefined, nodeOptions);
  const interceptors = [...(o.token !== undefined ? [bearerTokenInterceptor(o.token)] : []), ...(o.interceptors ?? [])];
  const transport = createGrpcTransport({ baseUrl, sessionManager, interceptors });
  return { client: createClient(AuditLogService, transport), close: () => sessionManager.abort() };
}

/** connectAuditLog(optionsFromEnv()): the connection every example and test uses. */
export function connectFromEnv(env: NodeJS.ProcessEnv = process.env): AuditLogConnection {
  return connectAuditLog(optionsFromEnv(env));
}
