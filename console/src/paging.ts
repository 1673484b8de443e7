// AIP-132 paging of ListEvents for the Activity Logs table: the current page, and a stack of tokens to go back.
import type { AuditLogClient } from "./api.js";
import { type EventQuery, listRequest } from "./filters.js";
import type { AuditEvent } from "./gen.js";

/**
 * The page tokens of a walk through a list: the token of the page shown, the tokens of the pages
 * before it (a stack: going back pops), and the next page token the server gave with the page shown.
 */
export class PageTokens {
  private readonly before: string[] = [];
  /** The token the page shown was fetched with ("" for the first page). */
  current = "";
  /** The next_page_token that came with the page shown ("" on the last page). */
  next = "";

  /** 1 for the first page. */
  get pageNumber(): number {
    return this.before.length + 1;
  }
  get hasPrevious(): boolean {
    return this.before.length > 0;
  }
  get hasNext(): boolean {
    return this.next !== "";
  }
  /** The token of the page before the one shown. */
  get previousToken(): string | undefined {
    return this.before[this.before.length - 1];
  }

  /** The page fetched with `next` is now shown, and it came with `nextToken`. */
  advanced(nextToken: string): void {
    this.before.push(this.current);
    this.current = this.next;
    this.next = nextToken;
  }
  /** The page before is now shown, and it came with `nextToken`. */
  wentBack(nextToken: string): void {
    this.current = this.before.pop() ?? "";
    this.next = nextToken;
  }
  /** The first page is now shown, and it came with `nextToken`. */
  restarted(nextToken: string): void {
    this.before.length = 0;
    this.current = "";
    this.next = nextToken;
  }
}

/** One page of the Activity Logs table. */
export interface Page {
  events: AuditEvent[];
  pageNumber: number;
  hasPrevious: boolean;
  hasNext: boolean;
}

/**
 * Walks a query's pages forwards and backwards. A failed fetch leaves the walk where it was, so the
 * page shown and the buttons stay consistent; a newer fetch makes an older one's answer moot.
 */
export class EventPager {
  readonly tokens = new PageTokens();
  private events: AuditEvent[] = [];
  private generation = 0;
  private inflight: AbortController | undefined;

  constructor(
    private readonly client: AuditLogClient,
    readonly tenantId: string,
    readonly query: EventQuery,
    private readonly timeoutMs = 30_000,
  ) {}

  get page(): Page {
    return {
      events: this.events,
      pageNumber: this.tokens.pageNumber,
      hasPrevious: this.tokens.hasPrevious,
      hasNext: this.tokens.hasNext,
    };
  }

  /** Loads the first page. Resolves undefined when a newer fetch started meanwhile. */
  first(): Promise<Page | undefined> {
    return this.fetch("", (next) => this.tokens.restarted(next));
  }

  next(): Promise<Page | undefined> {
    if (!this.tokens.hasNext) return Promise.resolve(this.page);
    return this.fetch(this.tokens.next, (next) => this.tokens.advanced(next));
  }

  previous(): Promise<Page | undefined> {
    const token = this.tokens.previousToken;
    if (token === undefined) return Promise.resolve(this.page);
    return this.fetch(token, (next) => this.tokens.wentBack(next));
  }

  /** Abandons any fetch in flight (its promise resolves undefined). */
  cancel(): void {
    this.generation++;
    this.inflight?.abort();
    this.inflight = undefined;
  }

  private async fetch(token: string, commit: (nextToken: string) => void): Promise<Page | undefined> {
    this.cancel();
    const generation = this.generation;
    const controller = new AbortController();
    this.inflight = controller;
    try {
      const response = await this.client.listEvents(listRequest(this.tenantId, this.query, token), {
        signal: controller.signal,
        timeoutMs: this.timeoutMs,
      });
      if (generation !== this.generation) return undefined;
      commit(response.nextPageToken);
      this.events = response.events;
      return this.page;
    } catch (error) {
      if (generation !== this.generation) return undefined;
      throw error;
    } finally {
      if (this.inflight === controller) this.inflight = undefined;
    }
  }
}
