// What a failed call means for the person using the console: Connect code + google.rpc details -> a message.
import { create, createFileRegistry, type Message } from "@bufbuild/protobuf";
import type { GenMessage } from "@bufbuild/protobuf/codegenv2";
import { FieldDescriptorProto_Label, FieldDescriptorProto_Type, FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorInfoSchema, retryDelayMs } from "../../clients/typescript/src/errors.js";

/** google.rpc.BadRequest (only what the console reads of it). */
export type BadRequest = Message<"google.rpc.BadRequest"> & {
  fieldViolations: (Message<"google.rpc.BadRequest.FieldViolation"> & { field: string; description: string })[];
};

// The SDK describes ErrorInfo and RetryInfo; BadRequest is described here the same way (same names,
// numbers and types as google/rpc/error_details.proto) so that findDetails() can decode it.
const { STRING, MESSAGE } = FieldDescriptorProto_Type;
const { OPTIONAL, REPEATED } = FieldDescriptorProto_Label;
const registry = createFileRegistry(
  create(FileDescriptorProtoSchema, {
    name: "auditlog/console/google_rpc_bad_request.proto",
    package: "google.rpc",
    syntax: "proto3",
    messageType: [
      {
        name: "BadRequest",
        field: [
          {
            name: "field_violations",
            jsonName: "fieldViolations",
            number: 1,
            type: MESSAGE,
            label: REPEATED,
            typeName: ".google.rpc.BadRequest.FieldViolation",
          },
        ],
        nestedType: [
          {
            name: "FieldViolation",
            field: [
              { name: "field", jsonName: "field", number: 1, type: STRING, label: OPTIONAL },
              { name: "description", jsonName: "description", number: 2, type: STRING, label: OPTIONAL },
            ],
          },
        ],
      },
    ],
  }),
  () => undefined,
);
export const BadRequestSchema = registry.getMessage("google.rpc.BadRequest") as GenMessage<BadRequest>;

/** The families of failure the console treats differently. */
export type ProblemKind =
  | "unauthenticated"
  | "permission"
  | "unavailable"
  | "rate-limited"
  | "invalid"
  | "timeout"
  | "not-found"
  | "other";

/** A failed call, said for people. */
export interface Problem {
  kind: ProblemKind;
  code: Code;
  /** The ErrorReason name from the ErrorInfo detail (domain auditlog.v1), e.g. "INVALID_PAGE_TOKEN". */
  reason?: string;
  /** One sentence saying what happened and what to do. */
  message: string;
  /** The server's own message, for the curious. */
  serverMessage: string;
  /** BadRequest field violations, "field: description". */
  violations: string[];
  /** RetryInfo delay, when the server sent one. */
  retryAfterMs?: number;
}

const AUDITLOG_DOMAIN = "auditlog.v1";

/** The ErrorReason of an error (without the ERROR_REASON_ prefix), from its ErrorInfo detail. */
export function errorReason(error: ConnectError): string | undefined {
  for (const info of error.findDetails(ErrorInfoSchema)) {
    if (info.domain === AUDITLOG_DOMAIN && info.reason !== "") return info.reason.replace(/^ERROR_REASON_/, "");
  }
  return undefined;
}

function isNetworkFailure(error: ConnectError): boolean {
  // fetch() rejects with a TypeError when the server cannot be reached; Connect wraps it as UNKNOWN.
  return error.code === Code.Unknown && error.cause instanceof TypeError;
}

function seconds(ms: number): string {
  const s = Math.max(1, Math.ceil(ms / 1000));
  return s === 1 ? "1 second" : `${s} seconds`;
}

/** Turns anything a call threw into a Problem. `what` names the action, e.g. "list events". */
export function describeError(cause: unknown, what: string, tenant?: string): Problem {
  const error = ConnectError.from(cause);
  const reason = errorReason(error);
  const violations = error
    .findDetails(BadRequestSchema)
    .flatMap((br) => br.fieldViolations.map((v) => (v.field ? `${v.field}: ${v.description}` : v.description)));
  const retryAfterMs = retryDelayMs(error);
  const base = { code: error.code, serverMessage: error.rawMessage, violations };
  const withReason = reason === undefined ? base : { ...base, reason };
  const withRetry = retryAfterMs === undefined ? withReason : { ...withReason, retryAfterMs };
  const forTenant = tenant ? ` for tenant "${tenant}"` : "";
  switch (error.code) {
    case Code.Unauthenticated:
      return {
        ...withRetry,
        kind: "unauthenticated",
        message: "The server did not accept your token (it is missing, expired or not valid). Sign in again with a fresh token.",
      };
    case Code.PermissionDenied:
      return {
        ...withRetry,
        kind: "permission",
        message: `No permission to ${what}${forTenant}: your token is for another tenant or lacks the scope this needs.`,
      };
    case Code.Unavailable:
      return {
        ...withRetry,
        kind: "unavailable",
        message:
          reason === "DATABASE_UNAVAILABLE"
            ? `Could not ${what}: the server cannot reach its database. Try again in a moment.`
            : `Could not ${what}: the audit-log server is unavailable. Try again in a moment.`,
      };
    case Code.ResourceExhausted:
      return {
        ...withRetry,
        kind: "rate-limited",
        message:
          `Could not ${what}: too many requests (rate limit).` +
          (retryAfterMs !== undefined ? ` Try again in ${seconds(retryAfterMs)}.` : " Try again shortly."),
      };
    case Code.InvalidArgument:
      return {
        ...withRetry,
        kind: "invalid",
        message:
          reason === "INVALID_PAGE_TOKEN"
            ? "The page token is no longer valid for this filter; start again from the first page."
            : `The server rejected the request to ${what}` + (violations.length > 0 ? `: ${violations.join("; ")}` : `: ${error.rawMessage}`),
      };
    case Code.DeadlineExceeded:
      return {
        ...withRetry,
        kind: "timeout",
        message: `Could not ${what} in time: narrow the filter or the time range, or try again.`,
      };
    case Code.NotFound:
      return { ...withRetry, kind: "not-found", message: `Could not ${what}: not found (${error.rawMessage}).` };
    default:
      if (isNetworkFailure(error)) {
        return {
          ...withRetry,
          kind: "unavailable",
          message: `Could not ${what}: the audit-log server cannot be reached (network error or server down).`,
        };
      }
      return { ...withRetry, kind: "other", message: `Could not ${what}: ${error.rawMessage || Code[error.code]}.` };
  }
}

