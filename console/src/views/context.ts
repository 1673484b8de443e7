// What every view gets from the console shell.
import type { Transport } from "@connectrpc/connect";
import type { AuditLogClient } from "../api.js";
import type { Session } from "../auth.js";
import type { Problem } from "../errors.js";
import type { Route } from "../routes.js";

export interface ViewContext {
  client: AuditLogClient;
  transport: Transport;
  session: Session;
  /** The tenant whose events the console reads. */
  tenantId: string;
  /** A call failed UNAUTHENTICATED: back to the sign-in page, saying why. */
  signedOut(problem: Problem): void;
}

export interface View {
  readonly element: HTMLElement;
  /** A new route of the same kind: take it in place (true), or ask for a new view (false). */
  update(route: Route): boolean;
  /** Leaving: close streams, cancel calls. */
  destroy(): void;
}
