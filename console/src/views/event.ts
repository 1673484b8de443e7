// One event by link (#/events/<id>?tenant=<tenant>): GetEvent for the tenant the link names.
import { h, replaceChildren } from "../dom.js";
import { describeError } from "../errors.js";
import { displayName } from "../event-types.js";
import { eventFields } from "../present.js";
import type { Route } from "../routes.js";
import type { View, ViewContext } from "./context.js";
import { rowsList } from "./details.js";

export class EventView implements View {
  readonly element: HTMLElement;
  private readonly body: HTMLElement;
  private readonly abort = new AbortController();

  constructor(
    private readonly ctx: ViewContext,
    eventId: string,
    tenantId: string,
  ) {
    this.body = h("div", {}, h("p", { role: "status" }, "Loading the event…"));
    this.element = h("section", { class: "event-page" }, h("h1", {}, `Event ${eventId}`), this.body);
    // The link's tenant, not the reader's: reading another tenant's event must fail on the server.
    void this.load(eventId, tenantId === "" ? ctx.tenantId : tenantId);
  }

  private async load(id: string, tenantId: string): Promise<void> {
    try {
      const { event } = await this.ctx.client.getEvent({ tenantId, id }, { signal: this.abort.signal });
      if (event === undefined) throw new Error("the server answered without an event");
      replaceChildren(this.body, h("p", { class: "details-name" }, displayName(event.eventType)), rowsList(eventFields(event)));
    } catch (cause) {
      if (this.abort.signal.aborted) return;
      const problem = describeError(cause, "read this event", tenantId);
      if (problem.kind === "unauthenticated") return this.ctx.signedOut(problem);
      replaceChildren(this.body, h("div", { class: "error", role: "alert" }, h("p", {}, problem.message)));
    }
  }

  update(_route: Route): boolean {
    return false;
  }

  destroy(): void {
    this.abort.abort();
  }
}
