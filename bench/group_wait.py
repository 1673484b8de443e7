"""The group commit's tuned wait against a fixed one: unary LogEvent calls, closed and open loop.

`auditlog serve` tunes how long a group waits for more events while a trickle of small calls
arrives (group_commit.LingerTuner, up to `AUDITLOG_GROUP_COMMIT_LONGEST_DELAY_MS`). This bench
runs the same server code both ways, turns alternating, each turn a fresh server and database:

- fixed: `AUDITLOG_GROUP_COMMIT_LONGEST_DELAY_MS=0`, the shortest wait (1.5 ms) always;
- tuned: the default.

Two kinds of load, over 8 connections of their own, general events with ids of their own:

- closed loop (`--callers`): N callers, each sending its next call when the last is answered.
  What it shows: calls a second, and what the tuner's tries cost when waiting longer cannot pay
  (few callers cannot fill larger groups);
- open loop (`--rates`): calls started at a fixed rate whatever the answers, as independent
  clients do. What it shows: latency at a given load. A call's latency runs from when it was due,
  so that a late start (a busy client) counts against the server rather than hiding a queue.

A window starts after `--warm-up` seconds. Figures per turn: answered calls a second in the
window; p50 and p99 latency of the calls started (due) in the window, waited for after it; the
server's CPU in the window a call answered in it. Then the medians of each variant's turns.

    .venv/bin/python -m bench.group_wait [--callers 4,16,64] [--rates 1000,2000,2600]
        [--seconds 8] [--warm-up 3] [--alternations 2] [--output group_wait]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from auditlog.v1 import service_pb2, service_pb2_grpc
from bench.common import (
    ServerProcess,
    bench_channel,
    code_version,
    cpu_seconds,
    database,
    general_event,
    load_average,
    log,
    percentile,
    write_result,
)

VARIANTS = {"fixed": {"AUDITLOG_GROUP_COMMIT_LONGEST_DELAY_MS": "0"}, "tuned": {}}
CONNECTIONS = 8
CALL_TIMEOUT_S = 60.0


@dataclass
class Window:
    """Which calls a turn's figures count: those due (open loop) or started (closed loop) in
    [start, end) for latency, those answered in it for throughput. Times from one clock."""

    start: float
    end: float
    latencies_s: list[float] = field(default_factory=list)
    answered: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    def record(self, due: float, answered_at: float, code: str = "OK") -> None:
        if self.start <= due < self.end:
            if code == "OK":
                self.latencies_s.append(answered_at - due)
            else:
                self.errors[code] += 1
        if code == "OK" and self.start <= answered_at < self.end:
            self.answered += 1

    def figures(self, server_cpu_s: float) -> dict[str, Any]:
        seconds = self.end - self.start
        latencies = self.latencies_s or [math.nan]
        return {
            "calls_per_s": round(self.answered / seconds, 1),
            "p50_ms": round(1000 * statistics.median(latencies), 2),
            "p99_ms": round(1000 * percentile(latencies, 0.99), 2),
            "server_us_per_call": round(1e6 * server_cpu_s / max(1, self.answered), 1),
            "errors": dict(self.errors),
        }


def due_calls(elapsed_s: float, rate: float) -> int:
    """How many calls of an open loop at `rate` a second are due after `elapsed_s` (call i is
    due at i / rate, the first at 0)."""
    return 0 if elapsed_s < 0 else math.floor(elapsed_s * rate) + 1


def turn_order(variants: list[str], alternation: int) -> list[str]:
    """Variants in order, reversed every other alternation (A B, B A, ...), so that a drift of
    the machine's speed over the run weighs on both alike."""
    return variants if alternation % 2 == 0 else variants[::-1]


class Caller:
    """Sends LogEvent calls from a prepared pool, round-robin over the turn's connections."""

    def __init__(self, stubs: list[Any], requests: list[Any], window: Window) -> None:
        self._stubs = stubs
        self._requests = requests
        self._window = window
        self.sent = 0

    @property
    def exhausted(self) -> bool:
        return self.sent >= len(self._requests)

    def call(self, due: float) -> Coroutine[Any, Any, None]:
        """The next request's call, due at `due`, counted as sent at once (not when it runs)."""
        self.sent += 1
        return self._send(self.sent - 1, due)

    async def _send(self, index: int, due: float) -> None:
        stub = self._stubs[index % len(self._stubs)]
        try:
            await stub.LogEvent(self._requests[index], timeout=CALL_TIMEOUT_S)
            code = "OK"
        except grpc.aio.AioRpcError as error:
            code = error.code().name
        self._window.record(due, time.perf_counter(), code)


async def closed_loop(caller: Caller, callers: int, window: Window) -> bool:
    """`callers` callers until the window ends; True when the pool ran out before that."""

    async def one() -> None:
        while not caller.exhausted and time.perf_counter() < window.end:
            await caller.call(time.perf_counter())

    await asyncio.gather(*(one() for _ in range(callers)))
    return caller.exhausted


async def open_loop(caller: Caller, rate: float, started: float, window: Window) -> bool:
    """Calls due at `rate` a second from `started` until the window ends, each started when due
    (as soon as the loop gets to it); then waits for their answers. True when the pool ran
    out first."""
    calls: set[asyncio.Task[None]] = set()
    while (now := time.perf_counter()) < window.end and not caller.exhausted:
        while caller.sent < due_calls(now - started, rate) and not caller.exhausted:
            task = asyncio.create_task(caller.call(started + caller.sent / rate))
            calls.add(task)
            task.add_done_callback(calls.discard)
        await asyncio.sleep(min(0.001, 1 / rate))
    await asyncio.gather(*calls)
    return caller.exhausted


async def turn(
    uri: str, variant: str, load: tuple[str, float], requests: list[Any], args: Any, name: str
) -> dict[str, Any]:
    """One fresh server of `variant` under `load` for warm-up and window."""
    kind, amount = load
    server = ServerProcess(
        uri, name, args.logs / f"{name}.log", "--write-concern", "1", env=VARIANTS[variant]
    )
    try:
        await server.wait_serving()
        channels = [bench_channel(server.target, own_connection=True) for _ in range(CONNECTIONS)]
        stubs = [service_pb2_grpc.AuditLogServiceStub(channel) for channel in channels]
        started = time.perf_counter()
        window = Window(started + args.warm_up, started + args.warm_up + args.seconds)
        caller = Caller(stubs, requests, window)
        cpu: list[float] = []

        async def meter() -> None:
            for at in (window.start, window.end):
                await asyncio.sleep(max(0.0, at - time.perf_counter()))
                cpu.append(cpu_seconds(server.pid))

        metering = asyncio.create_task(meter())
        if kind == "callers":
            cut_short = await closed_loop(caller, int(amount), window)
        else:
            cut_short = await open_loop(caller, amount, started, window)
        await metering
        for channel in channels:
            await channel.close(None)
    finally:
        server.stop()
    figures = window.figures(cpu[1] - cpu[0])
    log(f"{kind} {amount:g} {variant}: {figures}{' (cut short)' if cut_short else ''}")
    return {"variant": variant, **figures, "cut_short": cut_short}


def loads_of(args: Any) -> list[tuple[str, float]]:
    return [("callers", float(n)) for n in args.callers] + [("rate", r) for r in args.rates]


def median_of(turns: list[dict[str, Any]], key: str) -> float:
    return round(float(statistics.median(t[key] for t in turns)), 2)


async def run(args: Any) -> dict[str, Any]:
    count = int(max([args.max_rate, *args.rates]) * (args.warm_up + args.seconds)) + 1
    log(f"preparing {count:,} LogEvent requests")
    requests = [service_pb2.LogEventRequest(event=general_event("t1", i)) for i in range(count)]
    results = []
    with database() as (uri, backend):
        for load in loads_of(args):
            turns = []
            for alternation in range(args.alternations):
                for variant in turn_order(args.variants, alternation):
                    name = f"gw_{variant}_{load[0]}{load[1]:g}_{alternation}"
                    turns.append(await turn(uri, variant, load, requests, args, name))
            medians = {
                variant: {
                    key: median_of([t for t in turns if t["variant"] == variant], key)
                    for key in ("calls_per_s", "p50_ms", "p99_ms", "server_us_per_call")
                }
                for variant in args.variants
            }
            results.append({"load": load[0], "amount": load[1], "turns": turns, "medians": medians})
    return {
        "command": " ".join(["python -m bench.group_wait", *sys.argv[1:]]),
        "code": code_version(),
        "backend": backend,
        "args": {
            key: (str(value) if isinstance(value, Path) else value)
            for key, value in vars(args).items()
        },
        "loads": results,
    }


def load_label(load: dict[str, Any]) -> str:
    if load["load"] == "callers":
        return f"{load['amount']:g} closed-loop callers"
    return f"{load['amount']:,.0f} calls/s, open loop"


def markdown(data: dict[str, Any]) -> str:
    args = data["args"]
    lines = [
        "# Group commit wait: tuned against fixed (unary LogEvent, A/B)",
        "",
        f"{data['backend']}, write concern 1, code {data['code'][:12]}; turns alternate "
        f"({', '.join(args['variants'])}, then reversed), {args['alternations']} of each "
        f"variant per load, each a fresh `auditlog serve` and database; {args['warm_up']:g} s "
        f"warm-up, {args['seconds']:g} s window; {CONNECTIONS} connections; load average "
        f"before {data['load_before']}, after {data['load_after']}. fixed: "
        "`AUDITLOG_GROUP_COMMIT_LONGEST_DELAY_MS=0`; tuned: the default. Command: "
        f"`{data['command']}`.",
        "",
        "| load | variant | calls/s (turns) | p50 ms | p99 ms | server CPU µs a call |",
        "|---|---|---|---|---|---|",
    ]
    for load in data["loads"]:
        for variant in args["variants"]:
            turns = [t for t in load["turns"] if t["variant"] == variant]
            median = load["medians"][variant]

            def cells(key: str, turns: list[dict[str, Any]] = turns, places: int = 1) -> str:
                return ", ".join(f"{t[key]:,.{places}f}" for t in turns)

            notes = [f"{n} {code}" for t in turns for code, n in t["errors"].items()]
            notes += ["cut short" for t in turns if t["cut_short"]]
            lines.append(
                f"| {load_label(load)} | {variant} | **{median['calls_per_s']:,.0f}** "
                f"({cells('calls_per_s', places=0)}){' ' + '; '.join(notes) if notes else ''} "
                f"| {cells('p50_ms')} | {cells('p99_ms')} "
                f"| {cells('server_us_per_call', places=0)} |"
            )
    lines += [
        "",
        "Latency: of the calls due (open loop) or started (closed loop) in the window, from "
        "when they were due. Calls/s: answered in the window. Bold: the median of the turns.",
        "",
    ]
    return "\n".join(lines)


def numbers(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--callers", type=numbers, default=[4.0, 16.0, 64.0])
    parser.add_argument("--rates", type=numbers, default=[1000.0, 2000.0, 2600.0])
    parser.add_argument("--variants", type=lambda t: t.split(","), default=list(VARIANTS))
    parser.add_argument("--seconds", type=float, default=8.0, help="window per turn")
    parser.add_argument("--warm-up", type=float, default=3.0, help="unmeasured seconds per turn")
    parser.add_argument("--alternations", type=int, default=2)
    parser.add_argument(
        "--max-rate",
        type=float,
        default=5000.0,
        help="closed loop: requests prepared per second of a turn (they run out above it)",
    )
    parser.add_argument("--output", default="group_wait", help="bench/results/<output>.json/.md")
    args = parser.parse_args()
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {','.join(VARIANTS)}")
    args.callers = [int(n) for n in args.callers]
    args.logs = Path(tempfile.mkdtemp(prefix="auditlog-group-wait-"))
    before = load_average()
    data = {**asyncio.run(run(args)), "load_before": before, "load_after": load_average()}
    write_result(args.output, data, markdown(data))


if __name__ == "__main__":
    main()
