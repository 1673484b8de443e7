"""The cost of authentication on unary LogEvent: req/s with token checks on vs off, same run.

One in-process server; 64 concurrent LogEvent callers for a few seconds per run, alternating
"on" (every call carries a JWT that the CallGuard verifies, from its cache after the first) and
"off" (the guard's verifier replaced by one that accepts any call as a platform service: the
price of everything else stays). Median of the runs; the ratio is what to read.

    .venv/bin/python -m bench.auth_cost [--seconds 5] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from auditlog.v1 import audit_event_pb2, payloads_pb2, service_pb2, service_pb2_grpc
from auditlog_service.auth import ANY_TENANT, Principal
from bench.common import bench_channel, code_version, database, running_server, write_result

CONCURRENCY = 64


class AcceptEveryone:
    """Stands in for TokenVerifier when measuring what verification costs."""

    async def verify(self, authorization: str | None) -> Principal:
        return Principal("bench", ANY_TENANT, frozenset({"events:write"}), time.time() + 3600)


def event(number: int) -> audit_event_pb2.AuditEvent:
    return audit_event_pb2.AuditEvent(
        tenant_id="bench",
        tenant_user_id=f"agent-{number % 7}",
        start_call=payloads_pb2.StartCallAttributes(call_id=f"c-{number}", customer_id="x"),
    )


async def blast(stub: Any, seconds: float) -> float:
    done = 0
    deadline = time.perf_counter() + seconds

    async def caller(offset: int) -> None:
        nonlocal done
        number = offset
        while time.perf_counter() < deadline:
            await stub.LogEvent(service_pb2.LogEventRequest(event=event(number)))
            number += CONCURRENCY
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(caller(n) for n in range(CONCURRENCY)))
    return done / (time.perf_counter() - started)


async def run(args: argparse.Namespace) -> None:
    rates: dict[str, list[float]] = {"on": [], "off": []}
    with database() as (uri, backend):
        async with running_server(uri, "auth_cost") as server:
            guard: Any = server.rpcs._guard
            verifier = guard._verifier
            async with bench_channel(f"127.0.0.1:{server.port}") as channel:
                stub = service_pb2_grpc.AuditLogServiceStub(channel)
                await blast(stub, 1.0)  # warm-up: connections, caches, the first token check
                for _ in range(args.runs):
                    for mode in ("on", "off"):
                        guard._verifier = verifier if mode == "on" else AcceptEveryone()
                        rates[mode].append(await blast(stub, args.seconds))
                        print(mode, round(rates[mode][-1], 1), flush=True)
            guard._verifier = verifier
    on, off = statistics.median(rates["on"]), statistics.median(rates["off"])
    ratio = round(on / off, 3)
    markdown = "\n".join(
        [
            "# Authentication cost on unary LogEvent",
            "",
            f"{backend}, one in-process server, {CONCURRENCY} concurrent callers, "
            f"{args.runs} alternating runs of {args.seconds:g} s each, code {code_version()[:12]}.",
            "",
            "| token checks | req/s (median) | runs |",
            "|---|---:|---|",
            f"| on | {on:,.1f} | {', '.join(f'{r:,.0f}' for r in rates['on'])} |",
            f"| off | {off:,.1f} | {', '.join(f'{r:,.0f}' for r in rates['off'])} |",
            "",
            f"With authentication on, LogEvent runs at **{ratio}x** the rate without it "
            f"(goal: at least 0.9, i.e. at most 10 % slower).",
            "",
        ]
    )
    write_result(
        "auth_cost",
        {"backend": backend, "args": vars(args), "rates": rates, "ratio_on_vs_off": ratio},
        markdown,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
