// The sign-in page: paste a bearer token (kept in sessionStorage for this tab only).
import { decodeClaims, normaliseToken } from "../auth.js";
import { h, uid } from "../dom.js";

export interface SignInOptions {
  /** Why the person is here again (expired token, ...), shown as an alert. */
  message?: string;
  /** A token already given (a `#token=` link of a token for every tenant): only the tenant is missing. */
  token?: string;
  onSignIn(token: string, tenant: string | undefined): void;
}

export function signInView(options: SignInOptions): HTMLElement {
  const tokenId = uid("token");
  const tenantId = uid("tenant");
  const hintId = uid("token-hint");
  const error = h("p", { class: "error", role: "alert", hidden: true });
  const tokenInput = h("textarea", {
    id: tokenId,
    name: "token",
    rows: 5,
    required: true,
    autocomplete: "off",
    spellcheck: "false",
    "aria-describedby": hintId,
  });
  const tenantInput = h("input", { id: tenantId, name: "tenant", type: "text", autocomplete: "off" });
  const tenantField = h(
    "div",
    { class: "field", hidden: true },
    h("label", { for: tenantId }, "Tenant to read"),
    tenantInput,
    h("p", { class: "hint" }, "This token may act for every tenant (tenant “*”): name the tenant whose events to show."),
  );
  const syncTenantField = (): void => {
    const claims = decodeClaims(normaliseToken(tokenInput.value));
    tenantField.hidden = !(claims && (claims.tenant === undefined || claims.tenant === "*"));
  };
  tokenInput.addEventListener("input", syncTenantField);
  if (options.token) {
    tokenInput.value = options.token;
    syncTenantField();
  }

  function fail(text: string, focus: HTMLElement): void {
    error.textContent = text;
    error.hidden = false;
    focus.focus();
  }

  const form = h(
    "form",
    {
      class: "signin",
      "aria-labelledby": "signin-title",
      novalidate: true,
      onsubmit: (ev: Event) => {
        ev.preventDefault();
        const token = normaliseToken(tokenInput.value);
        if (token === "") return fail("Paste a bearer token to sign in.", tokenInput);
        const claims = decodeClaims(token);
        if (claims === undefined) return fail("This is not a JWT: a bearer token has three parts separated by dots.", tokenInput);
        const tenant = tenantInput.value.trim();
        if ((claims.tenant === undefined || claims.tenant === "*") && tenant === "") {
          tenantField.hidden = false;
          return fail("This token does not name one tenant: say which tenant to read.", tenantInput);
        }
        options.onSignIn(token, tenant === "" ? undefined : tenant);
      },
    },
    h("div", { class: "field" }, h("label", { for: tokenId }, "Bearer token"), tokenInput),
    h("p", { id: hintId, class: "hint" }, "A JWT from your identity provider. It stays in this browser tab and is sent only to this server."),
    tenantField,
    error,
    h("button", { type: "submit", class: "primary" }, "Sign in"),
  );

  const page = h(
    "section",
    { class: "page signin-page" },
    h("h1", { id: "signin-title" }, "Sign in"),
    options.message ? h("p", { class: "notice", role: "alert" }, options.message) : null,
    form,
  );
  queueMicrotask(() => (tenantField.hidden ? tokenInput : tenantInput).focus());
  return page;
}
