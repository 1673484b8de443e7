// The bearer token: JWT payload decoding (display only), sign-in links, sessionStorage keeping.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Session, type TokenStore, decodeClaims, normaliseToken, tokenFromHash } from "../src/auth.js";

function b64url(text: string): string {
  return Buffer.from(text, "utf8").toString("base64url");
}
function jwt(payload: object): string {
  return `${b64url('{"alg":"EdDSA","typ":"JWT"}')}.${b64url(JSON.stringify(payload))}.c2lnbmF0dXJl`;
}
function memoryStore(): TokenStore & { data: Map<string, string> } {
  const data = new Map<string, string>();
  return {
    data,
    getItem: (k) => data.get(k) ?? null,
    setItem: (k, v) => void data.set(k, v),
    removeItem: (k) => void data.delete(k),
  };
}

describe("JWT claims", () => {
  test("tenant, scopes, subject and expiry", () => {
    const claims = decodeClaims(jwt({ tenant: "acme", scope: "events:read  sessions:tail", sub: "admin-1", exp: 1714557600 }));
    assert.deepEqual(claims, {
      tenant: "acme",
      scopes: ["events:read", "sessions:tail"],
      subject: "admin-1",
      expires: new Date("2024-05-01T10:00:00Z"),
    });
  });

  test("UTF-8 and base64url characters in the payload", () => {
    assert.equal(decodeClaims(jwt({ tenant: "müller-ü>>?" }))?.tenant, "müller-ü>>?");
  });

  test("not a JWT", () => {
    assert.equal(decodeClaims("opaque-token"), undefined);
    assert.equal(decodeClaims("a.b.c"), undefined);
    assert.equal(decodeClaims(`x.${b64url("[1,2]")}.y`), undefined);
    assert.deepEqual(decodeClaims(`x.${b64url('{"scope":7}')}.y`), { scopes: [] });
  });

  test("pasted text is cleaned", () => {
    assert.equal(normaliseToken("  Bearer abc.def.ghi \n"), "abc.def.ghi");
  });
});

describe("sign-in links and the session", () => {
  test("#token=<jwt> signs in, with an optional tenant", () => {
    const token = jwt({ tenant: "acme" });
    assert.deepEqual(tokenFromHash(`#token=${token}`), { token });
    assert.deepEqual(tokenFromHash(`#token=${token}&tenant=t2`), { token, tenant: "t2" });
    assert.equal(tokenFromHash("#/events?token=x"), undefined);
    assert.equal(tokenFromHash("#token="), undefined);
  });

  test("the token's tenant wins; a '*' token needs one named", () => {
    const store = memoryStore();
    const session = new Session(store);
    assert.equal(session.token, undefined);
    session.signIn(jwt({ tenant: "acme", scope: "events:read" }), "other");
    assert.equal(session.tenantId, "acme");
    assert.equal(session.needsTenant, false);
    session.signIn(jwt({ tenant: "*" }), "t9");
    assert.equal(session.tenantId, "t9");
    assert.equal(session.needsTenant, true);
    session.signOut();
    assert.equal(session.token, undefined);
    assert.equal(store.data.size, 0);
  });
});
