// The bearer token: kept in sessionStorage, taken from a `#token=` link, decoded for display only.

/** The claims the console shows or uses. Nothing here is verified: the server checks the token. */
export interface TokenClaims {
  /** The tenant the token acts for; "*" for platform tokens that may name any tenant. */
  tenant?: string;
  /** Space-separated scopes, split. */
  scopes: string[];
  subject?: string;
  /** Expiry, as a Date, when the token has an `exp` claim. */
  expires?: Date;
}

const TOKEN_KEY = "auditlog.console.token";
const TENANT_KEY = "auditlog.console.tenant";

/** Storage the console keeps the token in: sessionStorage in the browser, a Map in tests. */
export interface TokenStore {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** Decodes base64url (no padding needed) into a string; throws on bad input. */
function decodeBase64Url(part: string): string {
  const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
  const padded = b64 + "=".repeat((4 - (b64.length % 4)) % 4);
  const binary = atob(padded);
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
}

/**
 * Reads the payload of a JWT without verifying it (display and request defaults only).
 * Returns undefined when the text is not a JWT with a JSON object payload.
 */
export function decodeClaims(token: string): TokenClaims | undefined {
  const parts = token.split(".");
  if (parts.length !== 3 || parts[1] === undefined || parts[1] === "") return undefined;
  let payload: unknown;
  try {
    payload = JSON.parse(decodeBase64Url(parts[1]));
  } catch {
    return undefined;
  }
  if (typeof payload !== "object" || payload === null || Array.isArray(payload)) return undefined;
  const record = payload as Record<string, unknown>;
  const claims: TokenClaims = { scopes: [] };
  if (typeof record["tenant"] === "string") claims.tenant = record["tenant"];
  if (typeof record["scope"] === "string") claims.scopes = record["scope"].split(" ").filter((s) => s !== "");
  if (typeof record["sub"] === "string") claims.subject = record["sub"];
  if (typeof record["exp"] === "number" && Number.isFinite(record["exp"])) claims.expires = new Date(record["exp"] * 1000);
  return claims;
}

/** Cleans pasted text: trims, and drops a leading "Bearer " that people copy along. */
export function normaliseToken(text: string): string {
  return text.trim().replace(/^bearer\s+/i, "").trim();
}

/** The signed-in state: the token, and the tenant the console reads (the token's, or one chosen for "*"). */
export class Session {
  constructor(private readonly store: TokenStore) {}

  get token(): string | undefined {
    return this.store.getItem(TOKEN_KEY) ?? undefined;
  }

  get claims(): TokenClaims | undefined {
    const token = this.token;
    return token === undefined ? undefined : decodeClaims(token);
  }

  /** The tenant of requests: the token's tenant claim unless it is "*" (then the one typed at sign-in). */
  get tenantId(): string {
    const claimed = this.claims?.tenant;
    if (claimed !== undefined && claimed !== "" && claimed !== "*") return claimed;
    return this.store.getItem(TENANT_KEY) ?? "";
  }

  /** True when the token does not name one tenant, so the person has to say which one to read. */
  get needsTenant(): boolean {
    const claimed = this.claims?.tenant;
    return claimed === undefined || claimed === "" || claimed === "*";
  }

  signIn(token: string, tenant?: string): void {
    this.store.setItem(TOKEN_KEY, normaliseToken(token));
    if (tenant !== undefined && tenant.trim() !== "") this.store.setItem(TENANT_KEY, tenant.trim());
    else this.store.removeItem(TENANT_KEY);
  }

  signOut(): void {
    this.store.removeItem(TOKEN_KEY);
    this.store.removeItem(TENANT_KEY);
  }
}

/**
 * If a URL hash is a sign-in link (`#token=<jwt>`, optionally `&tenant=..`), returns the token and
 * tenant; the caller stores them and replaces the hash so that the token leaves the address bar and
 * the history.
 */
export function tokenFromHash(hash: string): { token: string; tenant?: string } | undefined {
  const raw = hash.startsWith("#") ? hash.slice(1) : hash;
  if (!raw.startsWith("token=")) return undefined;
  const params = new URLSearchParams(raw);
  const token = normaliseToken(params.get("token") ?? "");
  if (token === "") return undefined;
  const tenant = params.get("tenant") ?? undefined;
  return tenant ? { token, tenant } : { token };
}
