"""TailSession latency over Connect (HTTP/1.1 server stream) against gRPC, in the same run.

One `auditlog serve` process (a fresh FerretDB, or MONGODB_URI) serves both ports. This process
opens, per session, one tail over gRPC (grpcio, HTTP/2, the gRPC port) and one over Connect (the
`connectrpc` Python client: HTTP/1.1, binary protobuf, one connection per stream, on the HTTP
port), each from now and caught up before the load. An open-loop writer then sends LogEvent at a
fixed rate over the sessions; every event is received by both tails, and its latency on each is
the time from the writer's send to that tail's receipt (both from `time.perf_counter()` in this
process). The comparison is the ratio Connect / gRPC of the same events' latencies.

Run: `.venv/bin/python -m bench.tail_over_connect` (defaults: 20 sessions, 50 events/s, 30 s);
while developing: `--seconds 5`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
from connectrpc.client import ConnectClient
from connectrpc.compat import google_protobuf_binary_codec
from connectrpc.method import IdempotencyLevel, MethodInfo, StreamType

from auditlog import bearer_interceptors, new_event_id
from auditlog.v1 import audit_event_pb2, enums_pb2, payloads_pb2, service_pb2, service_pb2_grpc
from auditlog_service.devdb import free_port
from bench.common import (
    ServerProcess,
    bench_token,
    code_version,
    cpu_pressure,
    database_process,
    load_average,
    percentile,
    write_result,
)

TENANT = "bench"
WARMUP_S = 3.0
TAIL_METHOD: MethodInfo[Any, Any] = MethodInfo(
    name="TailSession",
    service_name="auditlog.v1.AuditLogService",
    input=service_pb2.TailSessionRequest,
    output=service_pb2.TailSessionResponse,
    idempotency_level=IdempotencyLevel.NO_SIDE_EFFECTS,
    stream_type=StreamType.SERVER_STREAM,
)


class Receipts(dict[str, float]):
    """When each event reached one transport's tails; `complete` once `expected` have."""

    def __init__(self) -> None:
        super().__init__()
        self.expected = -1
        self.complete = asyncio.Event()

    def record(self, event_id: str, now: float) -> None:
        self.setdefault(event_id, now)
        if len(self) == self.expected:
            self.complete.set()


def click(session: str, event_id: str) -> audit_event_pb2.AuditEvent:
    return audit_event_pb2.AuditEvent(
        id=event_id,
        tenant_id=TENANT,
        cobrowse=audit_event_pb2.CobrowseContext(session_id=session, actor=enums_pb2.ACTOR_AGENT),
        click=payloads_pb2.ClickAttributes(element=payloads_pb2.Element(name="Buy now")),
    )


def tail_request(session: str) -> service_pb2.TailSessionRequest:
    return service_pb2.TailSessionRequest(tenant_id=TENANT, session_id=session, from_now=True)


async def consume(
    responses: AsyncIterator[service_pb2.TailSessionResponse],
    receipts: Receipts,
    caught_up: asyncio.Event,
) -> None:
    """Records when each event arrives; the caught_up marker says the tail is live."""
    async for response in responses:
        now = time.perf_counter()
        kind = response.WhichOneof("kind")
        if kind == "caught_up":
            caught_up.set()
        elif kind == "events":
            for event in response.events.events:
                receipts.record(event.id, now)


async def grpc_tail(
    channel: grpc.aio.Channel, session: str, receipts: Receipts, live: asyncio.Event
) -> None:
    stub = service_pb2_grpc.AuditLogServiceStub(channel)
    await consume(stub.TailSession(tail_request(session)), receipts, live)


async def connect_tail(
    client: ConnectClient, token: str, session: str, receipts: Receipts, live: asyncio.Event
) -> None:
    responses = client.execute_server_stream(
        request=tail_request(session),
        method=TAIL_METHOD,
        headers={"authorization": f"Bearer {token}"},
    )
    try:
        await consume(responses, receipts, live)
    finally:
        await responses.aclose()  # type: ignore[attr-defined]


async def log(writer: service_pb2_grpc.AuditLogServiceStub, request: Any, acks: Receipts) -> None:
    await writer.LogEvent(request)
    acks.record(request.event.id, time.perf_counter())


def distribution(latencies_s: list[float]) -> dict[str, float]:
    ms = sorted(x * 1000 for x in latencies_s)
    return {
        "p50_ms": round(percentile(ms, 0.50), 3),
        "p90_ms": round(percentile(ms, 0.90), 3),
        "p99_ms": round(percentile(ms, 0.99), 3),
        "max_ms": round(ms[-1], 3),
    }


async def measure(args: argparse.Namespace, grpc_target: str, http_url: str) -> dict[str, Any]:
    token = bench_token(TENANT)
    sessions = [f"cob-{uuid.uuid4().hex[:8]}" for _ in range(args.sessions)]
    receipts = {"grpc": Receipts(), "connect": Receipts()}
    lives: list[asyncio.Event] = []
    tails: list[asyncio.Task[None]] = []
    async with contextlib.AsyncExitStack() as stack:
        channel = await stack.enter_async_context(
            grpc.aio.insecure_channel(grpc_target, interceptors=bearer_interceptors(token))
        )
        # No compression either way: gRPC sends none by default, and a browser sends none.
        connect = await stack.enter_async_context(
            ConnectClient(
                http_url,
                codec=google_protobuf_binary_codec(),
                accept_compression=[],
                send_compression=None,
            )
        )
        for session in sessions:
            for transport, start in (
                ("grpc", lambda s, r, e: grpc_tail(channel, s, r, e)),
                ("connect", lambda s, r, e: connect_tail(connect, token, s, r, e)),
            ):
                live = asyncio.Event()
                lives.append(live)
                opener: Callable[..., Any] = start
                tails.append(asyncio.create_task(opener(session, receipts[transport], live)))
        await asyncio.wait_for(asyncio.gather(*(live.wait() for live in lives)), 60)

        writer = service_pb2_grpc.AuditLogServiceStub(channel)
        sent: dict[str, float] = {}
        acks = Receipts()
        total = int(args.rate * args.seconds)
        for got in receipts.values():
            got.expected = total
        interval = 1 / args.rate
        begin = time.perf_counter()
        writes: list[asyncio.Task[Any]] = []
        for n in range(total):
            # Open loop: each write at its scheduled time, whether or not earlier ones finished.
            delay = begin + n * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            event_id = new_event_id()
            sent[event_id] = time.perf_counter()
            request = service_pb2.LogEventRequest(
                event=click(sessions[n % len(sessions)], event_id)
            )
            writes.append(asyncio.create_task(log(writer, request, acks)))
        await asyncio.gather(*writes)
        # Every event reaches both tails; a bounded wait for the last ones, then we count.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                for got in receipts.values():
                    await got.complete.wait()
        for task in tails:
            task.cancel()
        await asyncio.gather(*tails, return_exceptions=True)

    counted = [i for i, t in sent.items() if t - begin >= WARMUP_S]
    result: dict[str, Any] = {
        "events": total,
        "counted": len(counted),
        "send_to_ack": distribution([acks[i] - sent[i] for i in counted]),
    }
    for transport, got in receipts.items():
        latencies = [got[i] - sent[i] for i in counted if i in got]
        result[transport] = {
            **distribution(latencies),
            # The tail's own part: from the write's ack to the receipt (negative when the tail
            # was woken by the write before the writer saw its ack).
            "ack_to_receipt": distribution([got[i] - acks[i] for i in counted if i in got]),
            "missing": sum(1 for i in sent if i not in got),
        }
    ratio = {
        key: round(result["connect"][key] / result["grpc"][key], 2) for key in ("p50_ms", "p99_ms")
    }
    result["connect_over_grpc"] = ratio
    return result


def markdown(args: argparse.Namespace, result: dict[str, Any], meta: dict[str, Any]) -> str:
    rows = "\n".join(
        f"| {name} | {r['p50_ms']} ms | {r['p90_ms']} ms | {r['p99_ms']} ms | {r['max_ms']} ms "
        f"| {r['ack_to_receipt']['p50_ms']} / {r['ack_to_receipt']['p99_ms']} ms | {r['missing']} |"
        for name, r in (
            ("gRPC (grpcio, HTTP/2, gRPC port)", result["grpc"]),
            ("Connect (connectrpc client, HTTP/1.1, HTTP port)", result["connect"]),
        )
    )
    ratio = result["connect_over_grpc"]
    return f"""# TailSession over Connect vs gRPC ({meta["database"]})

Command: `python -m bench.tail_over_connect --sessions {args.sessions} --rate {args.rate:g} \
--seconds {args.seconds:g}` (code at commit {meta["commit"][:12]})

- Machine: {meta["cpus"]} CPUs; load average before {meta["load_before"]}, after \
{meta["load_after"]}; CPU pressure before {meta["pressure_before"]}, after \
{meta["pressure_after"]}.
- One `auditlog serve` process serves both ports; this process is the writer and both kinds of
  client. Per session one gRPC tail and one Connect tail, from now, caught up before the load.
- Latency: the writer's send of LogEvent -> the tail's receipt of the event, the same events on
  both transports; the first {WARMUP_S:g} s are warm-up, not counted. No compression either way.

| transport | p50 | p90 | p99 | max | ack -> receipt p50 / p99 | missing |
|---|---:|---:|---:|---:|---:|---:|
{rows}

{result["events"]:,} events at {args.rate:g} events/s over {args.sessions} sessions, \
{result["counted"]:,} counted. The writer's send -> ack (the same for both): p50 \
{result["send_to_ack"]["p50_ms"]} ms, p99 {result["send_to_ack"]["p99_ms"]} ms.

**Connect / gRPC (send -> receipt): p50 x{ratio["p50_ms"]}, p99 x{ratio["p99_ms"]}.** At 100
events/s this machine's write path saturates (send -> ack p50 in the hundreds of ms) and both
transports wait alike; `--rate` sets the load.
"""


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--rate", type=float, default=50.0, help="events/s")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    with database_process() as (uri, kind, _db_pid), tempfile.TemporaryDirectory() as tmp:
        http_port = free_port()
        server = ServerProcess(
            uri,
            f"bench_{uuid.uuid4().hex[:8]}",
            Path(tmp) / "server.log",
            "--http-listen",
            f"127.0.0.1:{http_port}",
        )
        try:
            await server.wait_serving()
            meta: dict[str, Any] = {
                "database": kind,
                "commit": code_version(),
                "load_before": load_average(),
                "pressure_before": cpu_pressure(),
            }
            result = await measure(args, server.target, f"http://127.0.0.1:{http_port}")
            meta["load_after"] = load_average()
            meta["pressure_after"] = cpu_pressure()
            meta["cpus"] = os.cpu_count()
        finally:
            server.stop()
    write_result(
        "tail_over_connect",
        {"args": vars(args), **meta, **result},
        markdown(args, result, meta),
    )


if __name__ == "__main__":
    asyncio.run(main())
