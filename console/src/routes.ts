// The console's places, in the URL hash (the server serves only "/"): #/events?<filter>,
// #/events/<id>?tenant=<tenant>, #/sessions/<id>.
import { type EventQuery, queryFromParams, queryToParams } from "./filters.js";

export type Route =
  | { view: "activity"; query: EventQuery }
  | { view: "session"; sessionId: string; follow: boolean }
  // One event by link. The link names its tenant, so a link shared across tenants is refused by the
  // server (PERMISSION_DENIED) instead of silently reading the same id in the reader's own tenant.
  | { view: "event"; eventId: string; tenantId: string };

/** Reads a route from `location.hash`; anything unknown is the Activity Logs view without filter. */
export function parseRoute(hash: string): Route {
  const raw = hash.startsWith("#") ? hash.slice(1) : hash;
  const q = raw.indexOf("?");
  const path = q < 0 ? raw : raw.slice(0, q);
  const params = new URLSearchParams(q < 0 ? "" : raw.slice(q + 1));
  const parts = path.split("/").filter((p) => p !== "");
  if (parts[0] === "events" && parts.length > 1) {
    return { view: "event", eventId: safeDecode(parts.slice(1).join("/")), tenantId: params.get("tenant") ?? "" };
  }
  if (parts[0] === "sessions") {
    return { view: "session", sessionId: safeDecode(parts.slice(1).join("/")), follow: params.get("follow") === "1" };
  }
  return { view: "activity", query: queryFromParams(params) };
}

function safeDecode(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    return "";
  }
}

/** The hash of a route, e.g. "#/events?types=START_CALL". */
export function routeHash(route: Route): string {
  if (route.view === "event") {
    const tenant = route.tenantId === "" ? "" : `?${new URLSearchParams({ tenant: route.tenantId }).toString()}`;
    return `#/events/${encodeURIComponent(route.eventId)}${tenant}`;
  }
  if (route.view === "session") {
    const id = route.sessionId === "" ? "" : `/${encodeURIComponent(route.sessionId)}`;
    return `#/sessions${id}${route.follow ? "?follow=1" : ""}`;
  }
  const params = queryToParams(route.query).toString();
  return `#/events${params ? `?${params}` : ""}`;
}

export function sessionHash(sessionId: string, follow = false): string {
  return routeHash({ view: "session", sessionId, follow });
}

export function eventHash(eventId: string, tenantId: string): string {
  return routeHash({ view: "event", eventId, tenantId });
}
