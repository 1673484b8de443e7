// Makes AuditLogService calls with @connectrpc/connect-node over Connect, gRPC-Web and gRPC, and prints
// each answer as one JSON line, for tests/integration/test_connect_conformance.py to compare with
// the other clients' answers.
//
// stdin: {"baseUrl": "http://127.0.0.1:8080", "calls": [{"id", "protocol": "connect" | "grpc-web" | "grpc",
//          "method": "ListEvents", "token": "<JWT>" | null, "request": "<base64 protobuf>",
//          "stopAfter": "caughtUp" | null}]}
// stdout, per call: {"id", "code": "OK" | "INVALID_ARGUMENT" | ..., "message", "details": [{"type", "value"}],
//          "responses": ["<base64 protobuf>", ...], "cursorTrailer": "..." | null}
import { fromBinary, toBinary, type DescMessage, type DescMethodStreaming, type DescMethodUnary } from "@bufbuild/protobuf";
import { Code, ConnectError, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { AuditLogService } from "../src/gen/auditlog/v1/service_pb.js";

interface CallSpec {
  id: string;
  protocol: "connect" | "grpc-web" | "grpc";
  method: string;
  token: string | null;
  request: string;
  stopAfter: "caughtUp" | null;
}

interface Answer {
  id: string;
  code: string;
  message: string;
  details: { type: string; value: string }[];
  responses: string[];
  cursorTrailer: string | null;
}

const CURSOR_TRAILER = "auditlog-cursor";

function transportFor(protocol: CallSpec["protocol"], baseUrl: string): Transport {
  switch (protocol) {
    case "connect":
      return createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true });
    case "grpc-web":
      return createGrpcWebTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true });
    case "grpc":
      return createGrpcTransport({ baseUrl });
  }
}

/** `InvalidArgument` -> `INVALID_ARGUMENT`, as gRPC names codes (and CANCELLED with two Ls). */
function codeName(code: Code): string {
  if (code === Code.Canceled) return "CANCELLED";
  return Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

function base64(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("base64");
}

async function makeCall(spec: CallSpec, baseUrl: string): Promise<Answer> {
  const method = AuditLogService.methods.find((m) => m.name === spec.method);
  if (method === undefined) throw new Error(`no method ${spec.method}`);
  const transport = transportFor(spec.protocol, baseUrl);
  const header = new Headers();
  if (spec.token !== null) header.set("authorization", `Bearer ${spec.token}`);
  const input = fromBinary(method.input as DescMessage, Buffer.from(spec.request, "base64"));
  const answer: Answer = { id: spec.id, code: "OK", message: "", details: [], responses: [], cursorTrailer: null };
  const abort = new AbortController();
  try {
    if (method.methodKind === "unary") {
      const response = await transport.unary(method as DescMethodUnary, abort.signal, 30_000, header, input);
      answer.responses.push(base64(toBinary(method.output as DescMessage, response.message)));
    } else if (method.methodKind === "server_streaming") {
      const response = await transport.stream(method as DescMethodStreaming, abort.signal, undefined, header, (async function* () {
        yield input;
      })());
      for await (const message of response.message) {
        answer.responses.push(base64(toBinary(method.output as DescMessage, message)));
        if (spec.stopAfter === "caughtUp" && (message as { kind?: { case?: string } }).kind?.case === "caughtUp") {
          abort.abort();
          break;
        }
      }
    } else {
      throw new Error(`${spec.method}: only unary and server-streaming calls are made here`);
    }
  } catch (cause) {
    if (abort.signal.aborted) return answer; // we stopped the stream ourselves
    const error = ConnectError.from(cause);
    answer.code = codeName(error.code);
    answer.message = error.rawMessage;
    for (const detail of error.details) {
      if ("type" in detail) answer.details.push({ type: detail.type, value: base64(detail.value) });
    }
    answer.cursorTrailer = error.metadata.get(CURSOR_TRAILER);
  }
  return answer;
}

async function main(): Promise<void> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  const spec = JSON.parse(Buffer.concat(chunks).toString("utf8")) as { baseUrl: string; calls: CallSpec[] };
  for (const call of spec.calls) {
    process.stdout.write(`${JSON.stringify(await makeCall(call, spec.baseUrl))}\n`);
  }
}

await main();
