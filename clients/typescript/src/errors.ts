// google.rpc error details of the auditlog service (ErrorInfo, RetryInfo) and the RetryInfo delay of an error.
import { create, createFileRegistry, type Message } from "@bufbuild/protobuf";
import type { GenMessage } from "@bufbuild/protobuf/codegenv2";
import {
  type Duration,
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  FileDescriptorProtoSchema,
  file_google_protobuf_duration,
} from "@bufbuild/protobuf/wkt";
import { ConnectError } from "@connectrpc/connect";

/** google.rpc.RetryInfo: how long to wait before retrying (sent with RESOURCE_EXHAUSTED by rate limits). */
export type RetryInfo = Message<"google.rpc.RetryInfo"> & { retryDelay?: Duration };

/** google.rpc.ErrorInfo: why a call failed (`reason`), in `domain` "auditlog.v1", with `metadata`. */
export type ErrorInfo = Message<"google.rpc.ErrorInfo"> & {
  reason: string;
  domain: string;
  metadata: { [key: string]: string };
};

// The googleapis protos are not an npm package of this SDK's toolchain, and these two messages are
// all it needs: describe them here (same names, numbers and types as google/rpc/error_details.proto),
// so ConnectError.findDetails() can decode them.
const { STRING: TYPE_STRING, MESSAGE: TYPE_MESSAGE } = FieldDescriptorProto_Type;
const { OPTIONAL: LABEL_OPTIONAL, REPEATED: LABEL_REPEATED } = FieldDescriptorProto_Label;
const registry = createFileRegistry(
  create(FileDescriptorProtoSchema, {
    name: "google/rpc/error_details.proto",
    package: "google.rpc",
    dependency: ["google/protobuf/duration.proto"],
    syntax: "proto3",
    messageType: [
      {
        name: "ErrorInfo",
        field: [
          { name: "reason", jsonName: "reason", number: 1, type: TYPE_STRING, label: LABEL_OPTIONAL },
          { name: "domain", jsonName: "domain", number: 2, type: TYPE_STRING, label: LABEL_OPTIONAL },
          {
            name: "metadata",
            jsonName: "metadata",
            number: 3,
            type: TYPE_MESSAGE,
            label: LABEL_REPEATED,
            typeName: ".google.rpc.ErrorInfo.MetadataEntry",
          },
        ],
        nestedType: [
          {
            name: "MetadataEntry",
            field: [
              { name: "key", jsonName: "key", number: 1, type: TYPE_STRING, label: LABEL_OPTIONAL },
              { name: "value", jsonName: "value", number: 2, type: TYPE_STRING, label: LABEL_OPTIONAL },
            ],
            options: { mapEntry: true },
          },
        ],
      },
      {
        name: "RetryInfo",
        field: [
          {
            name: "retry_delay",
            jsonName: "retryDelay",
            number: 1,
            type: TYPE_MESSAGE,
            label: LABEL_OPTIONAL,
            typeName: ".google.protobuf.Duration",
          },
        ],
      },
    ],
  }),
  (name) => (name === "google/protobuf/duration.proto" ? file_google_protobuf_duration : undefined),
);

/** Descriptor of google.rpc.RetryInfo, for `connectError.findDetails(RetryInfoSchema)`. */
export const RetryInfoSchema = registry.getMessage("google.rpc.RetryInfo") as GenMessage<RetryInfo>;

/** Descriptor of google.rpc.ErrorInfo, for `connectError.findDetails(ErrorInfoSchema)`. */
export const ErrorInfoSchema = registry.getMessage("google.rpc.ErrorInfo") as GenMessage<ErrorInfo>;

/**
 * Returns the delay in milliseconds of the google.rpc.RetryInfo detail of an error (rate limits send
 * one with RESOURCE_EXHAUSTED), or undefined when it has none.
 */
export function retryDelayMs(error: unknown): number | undefined {
  if (!(error instanceof ConnectError)) {
    return undefined;
  }
  for (const info of error.findDetails(RetryInfoSchema)) {
    if (info.retryDelay) {
      return Math.max(0, Number(info.retryDelay.seconds) * 1000 + Math.floor(info.retryDelay.nanos / 1_000_000));
    }
  }
  return undefined;
}
