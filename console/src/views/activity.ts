// Activity Logs: the tenant's events in a table, filtered and sorted from the URL, paged, with details and downloads.
import { h, replaceChildren, uid, download } from "../dom.js";
import { describeError, type Problem } from "../errors.js";
import { EVENT_TYPES, displayName } from "../event-types.js";
import { type ExportFormat, buildExport, exportFileName } from "../export.js";
import {
  type EventQuery,
  PAGE_SIZES,
  emptyQuery,
  fromLocalInputValue,
  isFiltered,
  sameQuery,
  toLocalInputValue,
} from "../filters.js";
import { Actor, type AuditEvent, EventCategory, type EventType, SortOrder } from "../gen.js";
import { EventPager, type Page } from "../paging.js";
import { actorLabel, browserTimeZone, customerOf, formatTime, sessionOf, summary, toDate } from "../present.js";
import { type Route, routeHash, sessionHash } from "../routes.js";
import type { View, ViewContext } from "./context.js";
import { EventDetailsDialog } from "./details.js";

const COLUMNS = ["Time", "Event", "Actor", "Tenant user", "Customer", "Session", "Summary"] as const;

interface FilterControls {
  form: HTMLFormElement;
  types: HTMLSelectElement;
  user: HTMLInputElement;
  customer: HTMLInputElement;
  call: HTMLInputElement;
  session: HTMLInputElement;
  actor: HTMLSelectElement;
  from: HTMLInputElement;
  to: HTMLInputElement;
  order: HTMLSelectElement;
  size: HTMLSelectElement;
}

function field(label: string, control: HTMLElement, hint?: string): HTMLElement {
  const id = control.id || uid("f");
  control.id = id;
  return h("div", { class: "field" }, h("label", { for: id }, label), control, hint ? h("p", { class: "hint" }, hint) : null);
}

function textInput(name: string): HTMLInputElement {
  return h("input", { type: "text", name, autocomplete: "off", spellcheck: "false" });
}

function filterForm(onApply: (query: EventQuery) => void, onClear: () => void): FilterControls {
  const types = h("select", { name: "types", multiple: true, size: 8 });
  for (const [category, label] of [
    [EventCategory.GENERAL, "Platform events"],
    [EventCategory.COBROWSE, "Co-browsing events"],
  ] as const) {
    const group = h("optgroup", { label });
    for (const meta of EVENT_TYPES.filter((m) => m.category === category)) {
      group.append(h("option", { value: meta.typeString }, meta.displayName));
    }
    types.append(group);
  }
  const actor = h(
    "select",
    { name: "actor" },
    h("option", { value: "" }, "Any"),
    h("option", { value: String(Actor.AGENT) }, "Agent"),
    h("option", { value: String(Actor.CUSTOMER) }, "Customer"),
  );
  const order = h(
    "select",
    { name: "order" },
    h("option", { value: String(SortOrder.NEWEST_FIRST) }, "Newest first"),
    h("option", { value: String(SortOrder.OLDEST_FIRST) }, "Oldest first"),
  );
  const size = h("select", { name: "size" }, ...PAGE_SIZES.map((n) => h("option", { value: String(n) }, String(n))));
  const from = h("input", { type: "datetime-local", name: "from", step: 1 });
  const to = h("input", { type: "datetime-local", name: "to", step: 1 });
  const controls = {
    types,
    user: textInput("user"),
    customer: textInput("customer"),
    call: textInput("call"),
    session: textInput("session"),
    actor,
    from,
    to,
    order,
    size,
  };
  const tz = browserTimeZone();
  const form = h(
    "form",
    {
      class: "filters",
      role: "search",
      "aria-label": "Filter events",
      onsubmit: (ev: Event) => {
        ev.preventDefault();
        onApply(readQuery(controls));
      },
    },
    h("div", { class: "field types" }, h("label", { for: (types.id = uid("types")) }, "Event types"), types,
      h("p", { class: "hint" }, "None selected: all types. Ctrl/⌘ or Shift to select several.")),
    h(
      "div",
      { class: "filter-grid" },
      field("Tenant user", controls.user),
      field("Customer", controls.customer),
      field("Call", controls.call),
      field("Session", controls.session),
      field("Actor", actor),
      field("From", from, `At or after, ${tz}`),
      field("To", to, `Before, ${tz}`),
      field("Sort order", order),
      field("Page size", size),
    ),
    h(
      "div",
      { class: "actions" },
      h("button", { type: "submit", class: "primary" }, "Apply filters"),
      h("button", { type: "button", onclick: onClear }, "Clear filters"),
    ),
  );
  return { form, ...controls };
}

function readQuery(c: Omit<FilterControls, "form">): EventQuery {
  const query = emptyQuery();
  const types: EventType[] = [];
  for (const option of c.types.selectedOptions) {
    const meta = EVENT_TYPES.find((m) => m.typeString === option.value);
    if (meta) types.push(meta.type);
  }
  query.eventTypes = types;
  query.tenantUserId = c.user.value.trim();
  query.customerId = c.customer.value.trim();
  query.callId = c.call.value.trim();
  query.sessionId = c.session.value.trim();
  query.actor = c.actor.value === "" ? Actor.UNSPECIFIED : (Number(c.actor.value) as Actor);
  const from = fromLocalInputValue(c.from.value);
  if (from) query.from = from;
  const to = fromLocalInputValue(c.to.value);
  if (to) query.to = to;
  query.order = Number(c.order.value) === SortOrder.OLDEST_FIRST ? SortOrder.OLDEST_FIRST : SortOrder.NEWEST_FIRST;
  query.pageSize = Number(c.size.value) || query.pageSize;
  return query;
}

function writeQuery(c: FilterControls, query: EventQuery): void {
  const selected = new Set(query.eventTypes.map((t) => EVENT_TYPES.find((m) => m.type === t)?.typeString));
  for (const option of c.types.options) option.selected = selected.has(option.value);
  c.user.value = query.tenantUserId;
  c.customer.value = query.customerId;
  c.call.value = query.callId;
  c.session.value = query.sessionId;
  c.actor.value = query.actor === Actor.UNSPECIFIED ? "" : String(query.actor);
  c.from.value = query.from ? toLocalInputValue(query.from) : "";
  c.to.value = query.to ? toLocalInputValue(query.to) : "";
  c.order.value = String(query.order);
  if (!PAGE_SIZES.includes(query.pageSize)) c.size.append(h("option", { value: String(query.pageSize) }, String(query.pageSize)));
  c.size.value = String(query.pageSize);
}

/** "Filters", or "Filters (3 active)". */
function filterSummaryText(query: EventQuery): string {
  const active = [
    query.eventTypes.length > 0,
    query.tenantUserId !== "",
    query.customerId !== "",
    query.callId !== "",
    query.sessionId !== "",
    query.actor !== Actor.UNSPECIFIED,
    query.from !== undefined,
    query.to !== undefined,
  ].filter(Boolean).length;
  return active === 0 ? "Filters" : `Filters (${active} active)`;
}

export class ActivityView implements View {
  readonly element: HTMLElement;
  private query: EventQuery;
  private pager: EventPager;
  private readonly controls: FilterControls;
  private readonly tbody: HTMLTableSectionElement;
  private readonly status: HTMLElement;
  private readonly alert: HTMLElement;
  private readonly prevButton: HTMLButtonElement;
  private readonly nextButton: HTMLButtonElement;
  private readonly pageLabel: HTMLElement;
  private readonly csvButton: HTMLButtonElement;
  private readonly jsonlButton: HTMLButtonElement;
  private readonly cancelDownload: HTMLButtonElement;
  private readonly downloadStatus: HTMLElement;
  private readonly dialog = new EventDetailsDialog();
  private readonly filterPanel: HTMLDetailsElement;
  private readonly filterSummary: HTMLElement;
  private downloadAbort: AbortController | undefined;
  private loading = false;

  constructor(
    private readonly ctx: ViewContext,
    query: EventQuery,
  ) {
    this.query = query;
    this.pager = new EventPager(ctx.client, ctx.tenantId, query);
    this.controls = filterForm(
      (q) => this.apply(q),
      () => this.apply(emptyQuery()),
    );
    writeQuery(this.controls, query);
    // Open on wide screens; on a phone the form would fill the first screen, so it starts closed.
    const narrow = typeof matchMedia === "function" && matchMedia("(max-width: 720px)").matches;
    this.filterSummary = h("summary", {}, filterSummaryText(query));
    this.filterPanel = h("details", { class: "filter-panel", open: !narrow }, this.filterSummary, this.controls.form);

    // Explicit roles: narrow screens show the rows as cards (CSS display), which must not turn the
    // table into plain boxes for assistive technology.
    this.tbody = h("tbody", { role: "rowgroup" });
    const table = h(
      "table",
      { class: "events", role: "table" },
      h("caption", {}, "Activity log"),
      h("thead", { role: "rowgroup" }, h("tr", { role: "row" }, ...COLUMNS.map((c) => h("th", { scope: "col", role: "columnheader" }, c)))),
      this.tbody,
    );
    this.status = h("p", { class: "status", role: "status", "aria-live": "polite" });
    this.alert = h("div", { class: "error", role: "alert", hidden: true });
    this.prevButton = h("button", { type: "button", onclick: () => void this.go("previous") }, "Previous page");
    this.nextButton = h("button", { type: "button", onclick: () => void this.go("next") }, "Next page");
    this.pageLabel = h("span", { class: "page-number" });
    this.csvButton = h("button", { type: "button", onclick: () => void this.download("csv") }, "Download CSV");
    this.jsonlButton = h("button", { type: "button", onclick: () => void this.download("jsonl") }, "Download JSONL");
    this.cancelDownload = h("button", { type: "button", hidden: true, onclick: () => this.downloadAbort?.abort() }, "Cancel download");
    this.downloadStatus = h("span", { class: "download-status", "aria-live": "polite" });

    this.element = h(
      "section",
      { class: "page activity", "aria-labelledby": "activity-title" },
      h("h1", { id: "activity-title" }, "Activity Logs"),
      h("p", { class: "subtitle" }, `Tenant ${ctx.tenantId} · times in ${browserTimeZone()}`),
      this.filterPanel,
      h(
        "div",
        { class: "toolbar" },
        h("div", { class: "downloads", role: "group", "aria-label": "Download the filtered events" },
          this.csvButton, this.jsonlButton, this.cancelDownload, this.downloadStatus),
      ),
      this.alert,
      this.status,
      h("div", { class: "table-wrap" }, table),
      h("nav", { class: "pager", "aria-label": "Pages" }, this.prevButton, this.pageLabel, this.nextButton),
      this.dialog.element,
    );
    void this.load("first");
  }

  update(route: Route): boolean {
    if (route.view !== "activity") return false;
    writeQuery(this.controls, route.query);
    this.filterSummary.textContent = filterSummaryText(route.query);
    if (!sameQuery(route.query, this.query)) {
      this.query = route.query;
      this.pager.cancel();
      this.pager = new EventPager(this.ctx.client, this.ctx.tenantId, route.query);
      void this.load("first");
    }
    return true;
  }

  destroy(): void {
    this.pager.cancel();
    this.downloadAbort?.abort();
    this.dialog.close();
  }

  private apply(query: EventQuery): void {
    const hash = routeHash({ view: "activity", query });
    if (location.hash === hash) {
      // Same filter: reload from the first page.
      this.pager.cancel();
      this.pager = new EventPager(this.ctx.client, this.ctx.tenantId, query);
      void this.load("first");
    } else {
      location.hash = hash; // the shell routes it back to update()
    }
  }

  private async go(direction: "next" | "previous"): Promise<void> {
    await this.load(direction);
    // The pressed button was disabled while loading, which drops focus: give it back (or to the other
    // button when there is no page further that way).
    const pressed = direction === "next" ? this.nextButton : this.prevButton;
    const other = direction === "next" ? this.prevButton : this.nextButton;
    (pressed.disabled ? other : pressed).focus();
  }

  private async load(which: "first" | "next" | "previous"): Promise<void> {
    this.loading = true;
    this.syncButtons();
    this.alert.hidden = true;
    this.status.textContent = "Loading events…";
    this.element.setAttribute("aria-busy", "true");
    try {
      const page = await (which === "first" ? this.pager.first() : which === "next" ? this.pager.next() : this.pager.previous());
      if (page === undefined) return; // overtaken by a newer load
      this.render(page);
    } catch (cause) {
      this.showProblem(describeError(cause, "list events", this.ctx.tenantId), which);
    } finally {
      this.loading = false;
      this.element.removeAttribute("aria-busy");
      this.syncButtons();
    }
  }

  private showProblem(problem: Problem, which: "first" | "next" | "previous"): void {
    if (problem.kind === "unauthenticated") {
      this.ctx.signedOut(problem);
      return;
    }
    if (which === "first") {
      // Rows of an earlier query must not stand under this query's error.
      replaceChildren(this.tbody);
      this.status.textContent = "No events shown.";
    } else {
      this.status.textContent = `Still showing page ${this.pager.page.pageNumber}.`;
    }
    const retry = h("button", { type: "button", onclick: () => void this.load(which) }, "Try again");
    const restart =
      problem.reason === "INVALID_PAGE_TOKEN"
        ? h("button", { type: "button", onclick: () => void this.load("first") }, "First page")
        : null;
    replaceChildren(
      this.alert,
      h("p", {}, problem.message),
      problem.violations.length > 1 ? h("ul", {}, ...problem.violations.map((v) => h("li", {}, v))) : null,
      problem.serverMessage && problem.kind !== "invalid" ? h("p", { class: "server-message" }, `Server said: ${problem.serverMessage}`) : null,
      h("div", { class: "actions" }, retry, restart),
    );
    this.alert.hidden = false;
  }

  private syncButtons(): void {
    const page = this.pager.page;
    this.prevButton.disabled = this.loading || !page.hasPrevious;
    this.nextButton.disabled = this.loading || !page.hasNext;
    this.pageLabel.textContent = `Page ${page.pageNumber}`;
  }

  private render(page: Page): void {
    const rows = page.events.map((event) => this.row(event));
    replaceChildren(this.tbody, ...rows);
    if (page.events.length === 0) {
      this.status.textContent =
        page.pageNumber > 1
          ? "No more events."
          : isFiltered(this.query)
            ? "No events match these filters."
            : "No events yet for this tenant.";
    } else {
      const n = page.events.length;
      this.status.textContent = `Page ${page.pageNumber}: ${n} ${n === 1 ? "event" : "events"}${page.hasNext ? ", more on the next page" : ""}.`;
    }
  }

  private row(event: AuditEvent): HTMLTableRowElement {
    const date = toDate(event.occurTime);
    const session = sessionOf(event);
    const open = h("button", { type: "button", class: "link", "aria-haspopup": "dialog" }, event.eventType === 0 ? "(no type)" : displayName(event.eventType));
    open.addEventListener("click", () => this.dialog.open(event, open));
    const actor = actorLabel(event.cobrowse?.actor);
    const cells: (Node | string)[] = [
      date ? h("time", { datetime: date.toISOString() }, formatTime(date)) : "",
      open,
      actor ? h("span", { class: `actor actor-${actor.toLowerCase()}` }, actor) : "",
      event.tenantUserId,
      customerOf(event),
      session ? h("a", { href: sessionHash(session) }, session) : "",
      summary(event),
    ];
    return h("tr", { role: "row" }, ...cells.map((c, i) => h("td", { role: "cell", "data-label": COLUMNS[i] ?? "" }, c)));
  }

  private async download(format: ExportFormat): Promise<void> {
    if (this.downloadAbort) return;
    const controller = new AbortController();
    this.downloadAbort = controller;
    this.csvButton.disabled = this.jsonlButton.disabled = true;
    this.cancelDownload.hidden = false;
    this.downloadStatus.textContent = "Preparing download…";
    try {
      const { parts, count } = await buildExport(format, this.ctx.transport, this.ctx.tenantId, this.query, {
        signal: controller.signal,
        onProgress: (n) => {
          this.downloadStatus.textContent = `Downloading… ${n.toLocaleString()} events`;
        },
      });
      const type = format === "csv" ? "text/csv;charset=utf-8" : "application/x-ndjson;charset=utf-8";
      download(parts, type, exportFileName(this.ctx.tenantId, format, new Date()));
      this.downloadStatus.textContent = `Downloaded ${count.toLocaleString()} ${count === 1 ? "event" : "events"} as ${format.toUpperCase()}.`;
    } catch (cause) {
      if (controller.signal.aborted) {
        this.downloadStatus.textContent = "Download cancelled.";
      } else {
        const problem = describeError(cause, "download events", this.ctx.tenantId);
        if (problem.kind === "unauthenticated") return this.ctx.signedOut(problem);
        this.downloadStatus.textContent = `Download failed. ${problem.message}`;
      }
    } finally {
      this.downloadAbort = undefined;
      this.csvButton.disabled = this.jsonlButton.disabled = false;
      this.cancelDownload.hidden = true;
    }
  }
}
