// The "Event details" dialog: every typed field of one event, walked with reflection.
import { toJsonString } from "@bufbuild/protobuf";
import { h, replaceChildren } from "../dom.js";
import { displayName } from "../event-types.js";
import { type AuditEvent, AuditEventSchema } from "../gen.js";
import { type FieldRow, eventFields, sessionOf } from "../present.js";
import { eventHash, sessionHash } from "../routes.js";

/** Every field of an event as nested definition lists (the dialog and the event page). */
export function rowsList(rows: FieldRow[]): HTMLDListElement {
  const dl = h("dl", { class: "fields" });
  for (const row of rows) {
    let value: HTMLElement;
    switch (row.kind) {
      case "message":
      case "list":
        value = h("dd", {}, rowsList(row.children ?? []));
        break;
      case "json":
        value = h("dd", {}, h("pre", { class: "json" }, row.value));
        break;
      case "masked":
        value = h("dd", { class: "masked" }, h("span", { class: "badge" }, "masked"), " ", h("span", { class: "mask" }, row.value || "(empty)"));
        break;
      case "empty":
        value = h("dd", { class: "empty" }, row.value || "(empty)");
        break;
      default:
        value = h("dd", {}, row.value);
    }
    dl.append(h("dt", {}, row.name), value);
  }
  return dl;
}

/** A modal dialog for event details; open() shows an event, Escape or "Close" closes it and focus goes back. */
export class EventDetailsDialog {
  readonly element: HTMLDialogElement;
  private readonly body: HTMLElement;
  private opener: HTMLElement | null = null;

  constructor() {
    this.body = h("div", { class: "dialog-body" });
    const close = h("button", { type: "button", class: "close", onclick: () => this.close() }, "Close");
    this.element = h(
      "dialog",
      { class: "details", "aria-labelledby": "details-title" },
      h("header", {}, h("h2", { id: "details-title" }, "Event details"), close),
      this.body,
    );
    // Escape closes a modal dialog by itself ("cancel" then "close"); give focus back either way.
    this.element.addEventListener("close", () => {
      this.opener?.focus();
      this.opener = null;
    });
    // A click on the backdrop (outside the dialog box) closes it too.
    this.element.addEventListener("click", (ev) => {
      if (ev.target === this.element) this.close();
    });
  }

  open(event: AuditEvent, opener: HTMLElement | null): void {
    this.opener = opener;
    const session = sessionOf(event);
    replaceChildren(
      this.body,
      h("p", { class: "details-name" }, event.eventType === 0 ? "(no type)" : displayName(event.eventType)),
      session ? h("p", {}, h("a", { href: sessionHash(session), onclick: () => this.close() }, `Review session ${session}`)) : null,
      h("p", {}, h("a", { href: eventHash(event.id, event.tenantId), onclick: () => this.close() }, "Link to this event")),
      rowsList(eventFields(event)),
      h("details", {}, h("summary", {}, "JSON"), h("pre", { class: "json" }, toJsonString(AuditEventSchema, event, { prettySpaces: 2 }))),
    );
    if (!this.element.open) this.element.showModal();
    this.element.querySelector<HTMLButtonElement>("button.close")?.focus();
  }

  close(): void {
    if (this.element.open) this.element.close();
  }
}
