// The console's places, in the URL hash (the server serves only "/"): #/events?<filter>, #/sessions/<id>.
import { type EventQuery, queryFromParams, queryToParams } from "./filters.js";

export type Route =
  | { view: "activity"; query: EventQuery }
  | { view: "session"; sessionId: string; follow: boolean };

/** Reads a route from `location.hash`; anything unknown is the Activity Logs view without filter. */
export function parseRoute(hash: string): Route {
  const raw = hash.startsWith("#") ? hash.slice(1) : hash;
  const q = raw.indexOf("?");
  const path = q < 0 ? raw : raw.slice(0, q);
  const params = new URLSearchParams(q < 0 ? "" : raw.slice(q + 1));
  const parts = path.split("/").filter((p) => p !== "");
  if (parts[0] === "sessions") {
    let sessionId = "";
    try {
      sessionId = decodeURIComponent(parts.slice(1).join("/"));
    } catch {
      sessionId = "";
    }
    return { view: "session", sessionId, follow: params.get("follow") === "1" };
  }
  return { view: "activity", query: queryFromParams(params) };
}

/** The hash of a route, e.g. "#/events?types=START_CALL". */
export function routeHash(route: Route): string {
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
