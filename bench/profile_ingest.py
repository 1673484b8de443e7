"""Where the server's CPU goes under ingest load: py-spy and perf samples of the server (issue 11).

For each path (default batch-general and unary, with bench.ingest's load), a fresh
`auditlog serve --write-concern 1` takes the path's callers after a warm-up; for unary, so does
bench.ingest's echo server (its baseline), so that the two can be read side by side. Over each
window, py-spy samples the server (attached by process id, so it needs ptrace rights: root, or
a kernel.yama.ptrace_scope of 0) and /proc gives each of its threads' CPU. The result names the
event loop thread's share of the server's CPU and the entries that hold most of that thread's
samples: by function (own time, and with what it calls) and by package, each in µs of CPU per
event (its share of the thread's samples times the thread's CPU per event).

Read with care: py-spy sees Python frames only, so the time of C code (BSON, zstd, hashlib,
protobuf, gRPC's Cython callbacks) counts as the own time of the Python line that called it, and
gRPC's completion callbacks show as the event loop's `Handle._run`. So where `perf` is on PATH
(and may attach: root, or a kernel.perf_event_paranoid of 1 or less), it samples the whole
server process over the same window too, and the result adds the server's CPU by shared object:
the interpreter, the native write path, gRPC's C, the kernel, libc, ... (on 2026-12-07, py-spy
gave co-browsing LogEvents' socket writes 4 µs an event where perf put all of the kernel at 4 %
of the server's CPU).

    .venv/bin/python -m bench.profile_ingest [--paths batch-general,unary] [--seconds 8]
        [--rate 200] [--output profile_ingest]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditlog.v1 import service_pb2_grpc
from bench.common import (
    ChildServer,
    ServerProcess,
    bench_channel,
    code_version,
    database_process,
    load_average,
    log,
    write_result,
)
from bench.ingest import (
    MAX_RATE,
    PATHS,
    RESULT_VIEWS,
    EchoProcess,
    PathSpec,
    Pool,
    measure,
    path_pools,
    service_event_loop,
    service_load,
)

PY_SPY = Path(sys.executable).with_name("py-spy")
PERF = shutil.which("perf")
# Frames at or above this share of the loop thread's samples are the thread's own entry points
# (the module, asyncio.run, run_forever): the same for every profile, left out of the tables.
ROOT_SHARE = 0.97
_LINE = re.compile(r":\d+\)$")
# The main thread's stacks start in the script's module, or in runpy's for `python -m`; those of
# other threads in threading's Thread._bootstrap, or, for threads that C code started (gRPC's),
# in whatever Python it called.
MAIN_ROOTS = ("<module> ", "_run_module_as_main ")
# perf's samples a second: enough for shares of a few percent over a window, little beside py-spy.
PERF_RATE = 499
# What a shared object's samples count as, by a part of its file name; the first match wins.
OBJECT_KINDS = (
    ("libpython", "the interpreter (libpython)"),
    ("_native", "the native write path (_native)"),
    ("cygrpc", "gRPC's C and Cython (cygrpc)"),
    ("[kernel", "the kernel"),
    ("libc.so", "libc (allocation, copies)"),
    ("_message", "protobuf (upb)"),
    ("backend_c", "Zstandard"),
    ("_cbson", "BSON (_cbson)"),
    ("_cmessage", "PyMongo's messages (_cmessage)"),
    ("_asyncio", "asyncio's C (futures, tasks)"),
)
# Samples by shared object, with their counts (`perf report`'s percentages are rounded).
PERF_REPORT_ARGS = ("report", "--stdio", "--sort", "dso", "--show-nr-samples")
_PERF_ROW = re.compile(r"^\s*[\d.]+%\s+(\d+)\s+(\S.*?)\s*$")


@dataclass
class Samples:
    """py-spy's raw (collapsed) stacks of one server, split into its event loop thread (the
    main thread) and every other thread."""

    loop: collections.Counter[tuple[str, ...]] = field(default_factory=collections.Counter)
    other: int = 0

    @property
    def loop_total(self) -> int:
        return sum(self.loop.values())


def function_of(frame: str) -> str:
    """A frame without its line number: `f (pkg/mod.py:12)` -> `f (pkg/mod.py)`."""
    return _LINE.sub(")", frame)


def package_of(frame: str) -> str:
    """The package (or, in this project, the module) a frame's code belongs to."""
    match = re.search(r"\(([^()]*?)(?::\d+)?\)$", frame)
    path = match.group(1) if match else frame
    top, _, rest = path.partition("/")
    if top in ("auditlog_service", "auditlog") and rest:
        return f"{top}.{rest.split('/')[0].removesuffix('.py')}"
    if not rest:
        return path.removesuffix(".py")  # a top-level module (selectors.py, uuid.py)
    return top


def parse_raw(text: str) -> Samples:
    """py-spy's `--format raw` output: one `frame;frame;...;frame count` line per stack."""
    samples = Samples()
    for line in text.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = tuple(stack.split(";"))
        if frames[0].startswith(MAIN_ROOTS):
            samples.loop[frames] += int(count)
        else:
            samples.other += int(count)
    return samples


def top_entries(samples: Samples, most: int) -> dict[str, list[tuple[str, float]]]:
    """The loop thread's heaviest functions by own time and with callees, and its packages by
    own time; each with its share of the thread's samples."""
    total = samples.loop_total
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    packages: collections.Counter[str] = collections.Counter()
    for frames, count in samples.loop.items():
        own[function_of(frames[-1])] += count
        packages[package_of(frames[-1])] += count
        for name in {function_of(frame) for frame in frames}:  # once per stack: recursion
            inclusive[name] += count
    if not total:
        return {"own": [], "inclusive": [], "packages": []}

    def shares(counter: collections.Counter[str], skip_roots: bool = False) -> list[Any]:
        ranked = [(name, count / total) for name, count in counter.most_common()]
        if skip_roots:
            ranked = [(name, share) for name, share in ranked if share < ROOT_SHARE]
        return ranked[:most]

    return {
        "own": shares(own),
        "inclusive": shares(inclusive, skip_roots=True),
        "packages": shares(packages),
    }


def parse_perf_objects(report: str) -> dict[str, int]:
    """`perf report --sort dso --show-nr-samples --stdio`: each shared object's samples."""
    counts: dict[str, int] = {}
    for line in report.splitlines():
        row = _PERF_ROW.match(line)
        if row:
            counts[row.group(2)] = counts.get(row.group(2), 0) + int(row.group(1))
    return counts


def object_kinds(counts: dict[str, int]) -> list[tuple[str, float]]:
    """The shares of the samples by kind of shared object (OBJECT_KINDS, else "other"),
    largest first (from the counts: perf's percentages are rounded)."""
    total = sum(counts.values())
    kinds: dict[str, float] = {}
    for name, count in counts.items():
        kind = next((label for part, label in OBJECT_KINDS if part in name), "other")
        kinds[kind] = kinds.get(kind, 0.0) + count / total
    return sorted(kinds.items(), key=lambda item: -item[1])


def perf_report(data: Path) -> dict[str, Any]:
    """The recording's shares by kind of shared object, or why there are none."""
    report = subprocess.run(
        [str(PERF), *PERF_REPORT_ARGS, "--input", str(data)],
        capture_output=True,
        text=True,
        check=False,
    )
    counts = parse_perf_objects(report.stdout)
    if not counts:
        return {"error": (report.stderr.strip() or "no samples")[-300:]}
    return {"samples": sum(counts.values()), "kinds": object_kinds(counts)}


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """CPU seconds of each thread of a process, with its name."""
    tick = os.sysconf("SC_CLK_TCK")
    threads: dict[int, tuple[str, float]] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue  # ended meanwhile
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        threads[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return threads


def read_samples(raw: Path, errors: bytes) -> Samples:
    if not raw.exists():
        raise SystemExit(f"py-spy wrote no samples ({PY_SPY}): {errors.decode().strip()[-500:]}")
    return parse_raw(raw.read_text())


async def sample_server(
    server: ChildServer, spec: PathSpec, pool: Pool, warm: Pool, args: argparse.Namespace, raw: Path
) -> dict[str, Any]:
    """The path's load on a running server after a warm-up, py-spy (and perf, where there is
    one) sampling it over the window."""
    await server.wait_serving()
    channels = [bench_channel(server.target, own_connection=True) for _ in range(spec.connections)]
    stubs = [service_pb2_grpc.AuditLogServiceStub(channel) for channel in channels]
    try:
        await measure(service_load(spec, stubs, warm.requests), args.warm_up, {})
        spy = await asyncio.create_subprocess_exec(
            str(PY_SPY),
            *("record", "--pid", str(server.pid), "--rate", str(args.rate)),
            *("--format", "raw", "--output", str(raw), "--nonblocking"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        perf_data = raw.with_suffix(".perf")
        perf = None
        if PERF is not None:
            perf = await asyncio.create_subprocess_exec(
                PERF,
                *("record", "--freq", str(PERF_RATE), "--pid", str(server.pid)),
                *("--output", str(perf_data), "--quiet"),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
        before = thread_cpu(server.pid)
        window = await measure(
            service_load(spec, stubs, pool.requests), args.seconds, {"server": server.pid}
        )
        after = thread_cpu(server.pid)
        for recorder in (spy, perf):
            if recorder is not None and recorder.returncode is None:
                recorder.send_signal(signal.SIGINT)  # both write what they have on Ctrl-C
        _, errors = await spy.communicate()
        perf_errors = b"" if perf is None else (await perf.communicate())[1]
    finally:
        for channel in channels:
            await channel.close(None)
    samples = read_samples(raw, errors)
    events = window["events"]
    threads = {
        tid: (thread_name, used - before.get(tid, (thread_name, 0.0))[1])
        for tid, (thread_name, used) in after.items()
    }
    loop_cpu_s = threads.get(server.pid, ("", 0.0))[1]
    if perf is None:
        perf_result: dict[str, Any] = {"error": "perf is not on PATH"}
    elif perf_data.exists():
        perf_result = perf_report(perf_data)
    else:
        perf_result = {"error": perf_errors.decode(errors="replace").strip()[-300:] or "no output"}
    return {
        "events": events,
        "events_per_s": window["events_per_s"],
        "seconds": window["seconds"],
        "server_cpu_us_per_event": window["cpu_us_per_event"]["server"],
        "loop_thread_cpu_us_per_event": round(loop_cpu_s * 1e6 / events, 1) if events else None,
        "threads_cpu_s": {
            f"{thread_name} {tid}": round(used, 3)
            for tid, (thread_name, used) in sorted(threads.items(), key=lambda t: -t[1][1])
            if used > 0
        },
        "samples": {"loop_thread": samples.loop_total, "other_threads": samples.other},
        "top": top_entries(samples, args.most),
        "perf": perf_result,
    }


async def profile_path(
    uri: str, name: str, args: argparse.Namespace, log_dir: Path
) -> dict[str, Any]:
    """The service under the path's load; for unary LogEvent also the echo server that
    bench.ingest compares it with, so that the two profiles can be read side by side."""
    spec = PATHS[name]
    _, pool, warm = path_pools(spec, args)
    database = f"profile_{name}_{os.getpid()}".replace("-", "_")
    result: dict[str, Any] = {"label": spec.label, "servers": {}}
    service = ServerProcess(uri, database, log_dir / f"{database}.log", "--write-concern", "1")
    try:
        raw = log_dir / f"{database}.raw"
        result["servers"]["service"] = await sample_server(service, spec, pool, warm, args, raw)
    finally:
        service.stop()
    if spec.rpc == "LogEvent":
        echo = EchoProcess(log_dir / "echo.log")
        try:
            raw = log_dir / f"{database}_echo.raw"
            result["servers"]["echo"] = await sample_server(echo, spec, pool, warm, args, raw)
        finally:
            echo.stop()
    return result


def table(
    rows: list[tuple[str, float]],
    per_event_us: float | None,
    title: str,
    share_of: str = "the loop's samples",
    code: bool = True,
) -> list[str]:
    """Rows of (name, share) as a table, with each share times `per_event_us`; `code` names are
    Python's (functions, modules), shown as code."""
    lines = [f"| {title} | share of {share_of} | µs per event |", "|---|---:|---:|"]
    for name, share in rows:
        us = f"{share * per_event_us:.1f}" if per_event_us else "-"
        shown = f"`{name}`" if code else name
        lines.append(f"| {shown} | {share:.1%} | {us} |")
    return lines


def perf_table(profile: dict[str, Any]) -> list[str]:
    """The server's CPU by kind of shared object, in µs per event of the whole process."""
    perf = profile.get("perf") or {"error": "not recorded"}
    if "error" in perf:
        return [f"perf: none ({perf['error']})."]
    title = f"shared object (perf, {perf['samples']:,} samples of the whole process)"
    return table(
        perf["kinds"], profile["server_cpu_us_per_event"], title, "the server's CPU", code=False
    )


def markdown(data: dict[str, Any]) -> str:
    lines = [
        "# Where the server's CPU goes under ingest load (py-spy and perf)",
        "",
        f"{data['backend']}, {os.cpu_count()} CPUs, write concern 1, {data['args']['seconds']:g} s "
        f"window per path after {data['args']['warm_up']:g} s of warm-up, py-spy at "
        f"{data['args']['rate']} samples/s on the server (attached by pid); event loop "
        f"{data['event_loop']}; code {data['code']}; load average before {data['load_before']}, "
        f"after {data['load_after']}. Command: `{data['command']}`.",
        "",
        "py-spy sees Python frames only: C code (BSON, zstd, hashlib, protobuf, gRPC's Cython "
        "callbacks) counts as the own time of the Python line that called it; gRPC's completion "
        "callbacks show as the event loop's `Handle._run`. µs per event: a row's share of the "
        "loop thread's samples times that thread's CPU per event (from /proc). The first table "
        f"of each server is perf's ({PERF_RATE} samples/s of the whole process, every thread, C "
        "code and the kernel included), where `perf` is on PATH: its rows times the server's "
        "CPU per event.",
    ]
    for name, path in data["paths"].items():
        for server, profile in path["servers"].items():
            per_event = profile["loop_thread_cpu_us_per_event"]
            lines += [
                "",
                f"## {name}: {path['label']} ({server})",
                "",
                f"{profile['events']:,} events in {profile['seconds']} s "
                f"({profile['events_per_s']:,.0f}/s); server CPU "
                f"{profile['server_cpu_us_per_event']} µs per event, of which the event loop "
                f"thread {per_event} µs. Threads (CPU s over the window): "
                + ", ".join(f"{k} {v}" for k, v in profile["threads_cpu_s"].items())
                + f". Samples: loop thread {profile['samples']['loop_thread']:,}, other threads "
                f"{profile['samples']['other_threads']:,} (py-spy takes a thread waiting on a "
                "lock in Python code for active; /proc says what they used).",
                "",
                *perf_table(profile),
                "",
                *table(profile["top"]["packages"], per_event, "package or module (own time)"),
                "",
                *table(profile["top"]["own"], per_event, "function (own time)"),
                "",
                *table(profile["top"]["inclusive"], per_event, "function (with callees)"),
            ]
    return "\n".join(lines) + "\n"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    if not PY_SPY.exists():
        raise SystemExit(f"{PY_SPY} is missing: `make setup` installs it (the bench extra)")
    data: dict[str, Any] = {
        "args": vars(args),
        "code": code_version(),
        "event_loop": service_event_loop(),
        "load_before": load_average(),
        "command": " ".join(["python -m bench.profile_ingest", *sys.argv[1:]]),
        "paths": {},
    }
    with (
        database_process() as (uri, backend, _),
        tempfile.TemporaryDirectory(prefix="auditlog-profile-") as tmp,
    ):
        data["backend"] = backend
        for name in args.paths:
            started = time.perf_counter()
            data["paths"][name] = await profile_path(uri, name, args, Path(tmp))
            log(f"{name}: profiled in {time.perf_counter() - started:.0f} s")
    data["load_after"] = load_average()
    return data


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--paths",
        type=lambda text: text.split(","),
        default=["batch-general", "unary"],
        help=f"comma-separated, of {','.join(PATHS)}",
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="sampled window per path")
    parser.add_argument("--warm-up", type=float, default=2.0, help="unsampled seconds first")
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples a second")
    parser.add_argument("--most", type=int, default=15, help="rows per table")
    parser.add_argument("--stream-batch", type=int, default=100, help="events per message")
    parser.add_argument("--max-rate", type=float, default=MAX_RATE, help="events/s to build")
    parser.add_argument(
        "--result-view",
        choices=list(RESULT_VIEWS),
        default="default",
        help="what LogEvents results carry, as in bench.ingest",
    )
    parser.add_argument("--output", default="profile_ingest", help="bench/results/<output>")
    args = parser.parse_args()
    unknown = set(args.paths) - set(PATHS)
    if unknown:
        parser.error(f"unknown paths {sorted(unknown)}; choose from {','.join(PATHS)}")
    data = asyncio.run(run(args))
    write_result(args.output, data, markdown(data))


if __name__ == "__main__":
    main()
