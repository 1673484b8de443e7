// The AuditLogService client of the console: Connect over fetch, same origin, bearer token on every call.
import { Code, ConnectError, createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { AuditLogService } from "./gen.js";

export type AuditLogClient = Client<typeof AuditLogService>;

/** Adds `authorization: Bearer <token>`; a call without a token fails UNAUTHENTICATED without leaving the browser. */
export function bearerInterceptor(getToken: () => string | undefined): Interceptor {
  return (next) => async (req) => {
    const token = getToken();
    if (token === undefined || token === "") {
      throw new ConnectError("not signed in", Code.Unauthenticated);
    }
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
}

/**
 * Where the API is: the page's own origin (the server serves the console and the RPCs on one port),
 * unless the page says otherwise with <meta name="auditlog-api" content="https://...">.
 */
export function apiBaseUrl(doc: Document, origin: string): string {
  const meta = doc.querySelector<HTMLMetaElement>('meta[name="auditlog-api"]');
  const configured = meta?.content.trim();
  return configured ? configured : origin;
}

export function browserTransport(baseUrl: string, getToken: () => string | undefined): Transport {
  return createConnectTransport({
    baseUrl,
    // Binary protobuf: smaller pages, and no JSON-mapping differences between implementations.
    useBinaryFormat: true,
    interceptors: [bearerInterceptor(getToken)],
  });
}

export function auditLogClient(transport: Transport): AuditLogClient {
  return createClient(AuditLogService, transport);
}
