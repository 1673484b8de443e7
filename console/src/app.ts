// The console shell: sign-in state, header, and the hash router that swaps the views.
import type { Transport } from "@connectrpc/connect";
import { type AuditLogClient, auditLogClient } from "./api.js";
import { Session, tokenFromHash } from "./auth.js";
import { h, replaceChildren } from "./dom.js";
import type { Problem } from "./errors.js";
import { formatTime } from "./present.js";
import { parseRoute, routeHash, type Route } from "./routes.js";
import { ActivityView } from "./views/activity.js";
import type { View, ViewContext } from "./views/context.js";
import { EventView } from "./views/event.js";
import { SessionView } from "./views/session.js";
import { signInView } from "./views/signin.js";

export class ConsoleApp {
  private readonly client: AuditLogClient;
  private view: View | undefined;
  private signInMessage: string | undefined;
  /** The Activity Logs view last shown, filter included, for the header link back to it. */
  private lastActivityHash = "#/events";
  private readonly header: HTMLElement;
  private readonly main: HTMLElement;

  constructor(
    private readonly root: HTMLElement,
    private readonly transport: Transport,
    private readonly session: Session,
  ) {
    this.client = auditLogClient(transport);
    this.header = h("header", { class: "top" });
    this.main = h("main", { id: "main", tabindex: -1 });
    const skip = h("a", { class: "skip", href: "#main" }, "Skip to content");
    // The hash is the router's: move focus without navigating.
    skip.addEventListener("click", (ev) => {
      ev.preventDefault();
      this.main.focus();
    });
    replaceChildren(root, skip, this.header, this.main);
    window.addEventListener("hashchange", () => this.route());
  }

  start(): void {
    this.route();
  }

  private route(): void {
    // A sign-in link (#token=...): store the token and take it out of the address bar and history.
    const link = tokenFromHash(location.hash);
    if (link) {
      this.session.signIn(link.token, link.tenant);
      this.signInMessage = undefined;
      // Another token may mean another tenant or scopes: start the views afresh.
      this.view?.destroy();
      this.view = undefined;
      history.replaceState(null, "", `${location.pathname}${location.search}#/events`);
    }
    if (this.session.token === undefined || (this.session.needsTenant && this.session.tenantId === "")) {
      this.showSignIn();
      return;
    }
    const route = parseRoute(location.hash);
    if (route.view === "activity") this.lastActivityHash = routeHash(route);
    this.renderHeader(route);
    if (this.view?.update(route)) return;
    this.view?.destroy();
    const ctx: ViewContext = {
      client: this.client,
      transport: this.transport,
      session: this.session,
      tenantId: this.session.tenantId,
      signedOut: (problem) => this.signedOut(problem),
    };
    const first = this.view === undefined;
    this.view =
      route.view === "session"
        ? new SessionView(ctx, route.sessionId, route.follow)
        : route.view === "event"
          ? new EventView(ctx, route.eventId, route.tenantId)
          : new ActivityView(ctx, route.query);
    replaceChildren(this.main, this.view.element);
    // A new view is a new page for screen readers and keyboards: start them at its top (not on the
    // first load, where the browser does that already).
    if (!first) this.main.focus({ preventScroll: false });
    document.title =
      route.view === "session"
        ? `Session ${route.sessionId || "review"} · Audit log`
        : route.view === "event"
          ? `Event ${route.eventId} · Audit log`
          : "Activity Logs · Audit log";
  }

  private renderHeader(route: Route | undefined): void {
    const claims = this.session.claims;
    const nav = route
      ? h(
          "nav",
          { "aria-label": "Console" },
          h("a", { href: this.lastActivityHash, "aria-current": route.view === "activity" ? "page" : null }, "Activity Logs"),
          h("a", { href: "#/sessions", "aria-current": route.view === "session" ? "page" : null }, "Session review"),
        )
      : null;
    const who = route
      ? h(
          "div",
          { class: "who" },
          h("span", {}, "Tenant ", h("strong", {}, this.session.tenantId)),
          claims?.scopes.length ? h("span", { class: "scopes" }, `Scopes: ${claims.scopes.join(" ")}`) : null,
          h("button", { type: "button", onclick: () => this.signOut() }, "Sign out"),
        )
      : null;
    replaceChildren(this.header, h("p", { class: "brand" }, "Audit log console"), nav, who);
  }

  private showSignIn(): void {
    this.view?.destroy();
    this.view = undefined;
    this.renderHeader(undefined);
    document.title = "Sign in · Audit log";
    const page = signInView({
      ...(this.signInMessage ? { message: this.signInMessage } : {}),
      ...(this.session.token ? { token: this.session.token } : {}),
      onSignIn: (token, tenant) => {
        this.session.signIn(token, tenant);
        this.signInMessage = undefined;
        this.route();
      },
    });
    replaceChildren(this.main, page);
  }

  private signOut(): void {
    this.session.signOut();
    this.signInMessage = "You signed out.";
    this.showSignIn();
  }

  /** A call failed UNAUTHENTICATED: drop the token and say why on the sign-in page; the URL stays, so signing in returns here. */
  private signedOut(problem: Problem): void {
    const expires = this.session.claims?.expires;
    let message = "You were signed out: the server did not accept your token";
    if (expires !== undefined && expires.getTime() <= Date.now()) {
      message += ` (it expired at ${formatTime(expires)})`;
    } else if (problem.serverMessage) {
      message += ` (${problem.serverMessage})`;
    }
    message += ". Paste a new token to continue.";
    this.session.signOut();
    this.signInMessage = message;
    this.showSignIn();
  }
}
