// Session review: one co-browsing session's events as a timeline, replayed, and followed live on demand.
import { h, replaceChildren, uid } from "../dom.js";
import type { Problem } from "../errors.js";
import { displayName } from "../event-types.js";
import { Actor, type AuditEvent } from "../gen.js";
import { actorLabel, formatTime, summary, toDate } from "../present.js";
import { type Route, sessionHash } from "../routes.js";
import { SessionFollower, type TailStatus } from "../tail.js";
import type { View, ViewContext } from "./context.js";
import { EventDetailsDialog } from "./details.js";

/** The form asking which session to review (Session review without an id). */
function sessionPicker(): HTMLElement {
  const inputId = uid("session-id");
  const input = h("input", { id: inputId, type: "text", name: "session", required: true, autocomplete: "off", spellcheck: "false" });
  return h(
    "section",
    { class: "page session-picker", "aria-labelledby": "session-picker-title" },
    h("h1", { id: "session-picker-title" }, "Session review"),
    h(
      "form",
      {
        onsubmit: (ev: Event) => {
          ev.preventDefault();
          const id = input.value.trim();
          if (id !== "") location.hash = sessionHash(id);
        },
      },
      h("div", { class: "field" }, h("label", { for: inputId }, "Session id"), input),
      h("button", { type: "submit", class: "primary" }, "Open session"),
    ),
    h("p", { class: "hint" }, "Or open a session from the Session column of the Activity Logs."),
  );
}

function seconds(ms: number): string {
  const s = Math.max(1, Math.round(ms / 1000));
  return `${s} s`;
}

export class SessionView implements View {
  readonly element: HTMLElement;
  private readonly follower: SessionFollower | undefined;
  private readonly timeline: HTMLOListElement | undefined;
  private readonly stateText = h("span", { class: "tail-state", role: "status", "aria-live": "polite" });
  private readonly stateDetail = h("span", { class: "tail-detail" });
  private readonly count = h("span", { class: "tail-count" });
  private readonly emptyNote = h("p", { class: "empty", hidden: true });
  private readonly alert = h("div", { class: "error", role: "alert", hidden: true });
  private readonly gapNote = h("p", { class: "warning", hidden: true });
  private readonly followSwitch: HTMLInputElement | undefined;
  private readonly dialog = new EventDetailsDialog();
  private events = 0;
  private caughtUp = false;

  constructor(
    private readonly ctx: ViewContext,
    readonly sessionId: string,
    follow: boolean,
  ) {
    if (sessionId === "") {
      this.element = sessionPicker();
      return;
    }
    const switchId = uid("follow");
    this.followSwitch = h("input", { id: switchId, type: "checkbox", role: "switch", checked: follow });
    this.followSwitch.addEventListener("change", () => this.setFollow(this.followSwitch?.checked ?? false));
    this.timeline = h("ol", { class: "timeline", "aria-label": "Session events" });
    this.element = h(
      "section",
      { class: "page session", "aria-labelledby": "session-title" },
      h("p", { class: "breadcrumb" }, h("a", { href: "#/events" }, "Activity Logs"), " › Session review"),
      h("h1", { id: "session-title" }, `Session ${sessionId}`),
      h(
        "div",
        { class: "tail-bar" },
        h("div", { class: "switch" }, this.followSwitch, h("label", { for: switchId }, "Follow live")),
        h("p", { class: "tail-status" }, "Stream: ", this.stateText, " ", this.stateDetail),
        this.count,
      ),
      h("p", { class: "legend" }, h("span", { class: "actor actor-agent" }, "Agent"), " actions on the left with a solid edge, ",
        h("span", { class: "actor actor-customer" }, "Customer"), " actions on the right with a dashed edge."),
      this.alert,
      this.gapNote,
      this.emptyNote,
      this.timeline,
      this.dialog.element,
    );
    this.follower = new SessionFollower(
      ctx.client,
      ctx.tenantId,
      sessionId,
      {
        onEvents: (events) => this.append(events),
        onStatus: (status) => this.showStatus(status),
        onCaughtUp: () => {
          this.caughtUp = true;
          this.syncEmpty();
        },
        onGap: (after, before) => {
          this.gapNote.hidden = false;
          this.gapNote.textContent = `Events #${after + 1n}–#${before - 1n} were not delivered by the server (a gap in the sequence).`;
        },
      },
      { follow },
    );
    this.follower.start();
  }

  update(route: Route): boolean {
    if (route.view !== "session" || route.sessionId !== this.sessionId) return false;
    if (this.followSwitch && route.follow !== this.followSwitch.checked) {
      this.followSwitch.checked = route.follow;
      this.setFollow(route.follow);
    }
    return true;
  }

  destroy(): void {
    this.follower?.stop();
    this.dialog.close();
  }

  private setFollow(on: boolean): void {
    // Reflect the switch in the URL without a history entry, so a reload or a shared link keeps it.
    history.replaceState(null, "", sessionHash(this.sessionId, on));
    this.follower?.setFollow(on);
  }

  private showStatus(status: TailStatus): void {
    this.stateText.textContent = status.state;
    this.stateText.dataset["state"] = status.state;
    let detail = "";
    switch (status.state) {
      case "connecting":
        detail = "Replaying the session…";
        break;
      case "live":
        detail = "New events appear as they happen.";
        break;
      case "reconnecting":
        detail =
          `Connection lost${status.problem ? ` (${status.problem.message})` : ""}; ` +
          `resuming from the last event in ${seconds(status.retryInMs ?? 0)} (attempt ${status.attempt ?? 1}).`;
        break;
      case "stopped":
        detail =
          status.stopReason === "caught-up"
            ? "Replay complete. Switch on Follow live to see new events."
            : status.stopReason === "switched-off"
              ? "Not following."
              : "The stream stopped because of an error.";
        break;
    }
    this.stateDetail.textContent = detail;
    if (status.state === "stopped" && status.stopReason === "failed" && status.problem) {
      this.showProblem(status.problem);
    } else if (status.state === "live" || status.state === "connecting") {
      this.alert.hidden = true;
    }
    this.syncEmpty();
  }

  private showProblem(problem: Problem): void {
    if (problem.kind === "unauthenticated") {
      this.ctx.signedOut(problem);
      return;
    }
    replaceChildren(
      this.alert,
      h("p", {}, problem.message),
      problem.serverMessage ? h("p", { class: "server-message" }, `Server said: ${problem.serverMessage}`) : null,
      h("button", { type: "button", onclick: () => this.follower?.start() }, "Try again"),
    );
    this.alert.hidden = false;
  }

  private syncEmpty(): void {
    this.count.textContent = `${this.events} ${this.events === 1 ? "event" : "events"}`;
    if (this.events > 0) {
      this.emptyNote.hidden = true;
    } else if (this.caughtUp) {
      this.emptyNote.hidden = false;
      this.emptyNote.textContent = "No events in this session (yet).";
    } else {
      this.emptyNote.hidden = this.follower?.status.state !== "connecting";
      this.emptyNote.textContent = "Loading the session's events…";
    }
  }

  private append(events: AuditEvent[]): void {
    if (!this.timeline) return;
    const list = this.timeline;
    const atEnd = window.innerHeight + window.scrollY >= document.body.scrollHeight - 80;
    for (const event of events) list.append(this.item(event));
    this.events += events.length;
    this.syncEmpty();
    if (this.caughtUp && atEnd && this.follower?.following) list.lastElementChild?.scrollIntoView({ block: "nearest" });
  }

  private item(event: AuditEvent): HTMLLIElement {
    const actor = event.cobrowse?.actor ?? Actor.UNSPECIFIED;
    const who = actorLabel(actor) || "Unknown actor";
    const side = actor === Actor.CUSTOMER ? "customer" : actor === Actor.AGENT ? "agent" : "unknown";
    const date = toDate(event.occurTime);
    const details = h("button", { type: "button", class: "link", "aria-haspopup": "dialog", "aria-label": `Details of event #${event.sequence}` }, "Details");
    details.addEventListener("click", () => this.dialog.open(event, details));
    const name = event.eventType === 0 ? "(no type)" : displayName(event.eventType);
    return h(
      "li",
      { class: `tl-item tl-${side}`, "data-sequence": event.sequence.toString() },
      h(
        "div",
        { class: "tl-head" },
        h("span", { class: "tl-seq" }, `#${event.sequence}`),
        " ",
        h("span", { class: `actor actor-${side}` }, who),
        event.tenantUserId && actor === Actor.AGENT ? h("span", { class: "tl-user" }, ` ${event.tenantUserId}`) : null,
        " ",
        date ? h("time", { datetime: date.toISOString() }, formatTime(date)) : null,
      ),
      h("p", { class: "tl-name" }, name),
      h("p", { class: "tl-summary" }, summary(event) || name),
      details,
    );
  }
}
