// Display names, seed type strings and categories of event types, read from the contract's enum options.
import { getOption, hasOption } from "@bufbuild/protobuf";
import type { DescEnumValue } from "@bufbuild/protobuf";
import { EventCategory, EventType, EventTypeSchema, event_type_info } from "./gen.js";

/** What the contract says about one EventType value (its `auditlog.v1.event_type_info` option). */
export interface EventTypeMeta {
  readonly type: EventType;
  /** The seed type string, e.g. "START_CALL": stable, used in URLs and exports. */
  readonly typeString: string;
  /** The name shown to people, e.g. "[Call] Start". */
  readonly displayName: string;
  readonly category: EventCategory;
}

function metaOf(value: DescEnumValue): EventTypeMeta | undefined {
  if (!hasOption(value, event_type_info)) return undefined;
  const info = getOption(value, event_type_info);
  return {
    type: value.number as EventType,
    typeString: info.typeString,
    displayName: info.displayName,
    category: info.category,
  };
}

/** Every event type that carries metadata (all but UNSPECIFIED), in the contract's order. */
export const EVENT_TYPES: readonly EventTypeMeta[] = EventTypeSchema.values
  .map(metaOf)
  .filter((m): m is EventTypeMeta => m !== undefined);

const byNumber = new Map(EVENT_TYPES.map((m) => [m.type as number, m]));
const byTypeString = new Map(EVENT_TYPES.map((m) => [m.typeString, m]));

/** The metadata of an event type, or undefined for UNSPECIFIED and numbers this build does not know. */
export function eventTypeMeta(type: EventType | number): EventTypeMeta | undefined {
  return byNumber.get(type);
}

/** The event type with this seed type string ("START_CALL"), or undefined. */
export function eventTypeFromString(typeString: string): EventType | undefined {
  return byTypeString.get(typeString)?.type;
}

/**
 * The display name of an event type; for a value the console does not know (a newer server), the
 * enum value name or the number, so that nothing is shown blank.
 */
export function displayName(type: EventType | number): string {
  const meta = byNumber.get(type);
  if (meta) return meta.displayName;
  const value = EventTypeSchema.values.find((v) => v.number === type);
  return value ? value.name : `Event type ${type}`;
}

/** The seed type string of an event type ("START_CALL"), or the enum number for an unknown one. */
export function typeString(type: EventType | number): string {
  return byNumber.get(type)?.typeString ?? String(type);
}

export function isCobrowseType(type: EventType | number): boolean {
  return byNumber.get(type)?.category === EventCategory.COBROWSE;
}
