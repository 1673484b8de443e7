"""Shared benchmark plumbing: a dev database, an in-process server, percentiles, result files."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from auditlog import AuditLogClient, bearer_interceptors
from auditlog.v1 import audit_event_pb2, enums_pb2, payloads_pb2
from auditlog_service import convert
from auditlog_service.config import Settings
from auditlog_service.convert import Document
from auditlog_service.devdb import FerretDB, free_port
from auditlog_service.devkeys import DEV_AUDIENCE, DEV_ISSUER, ensure_dev_keys
from auditlog_service.server import RunningServer, start_server
from auditlog_service.workers import child_pids

RESULTS = Path(__file__).resolve().parent / "results"

# Benchmarks run the service as in production, bearer tokens and all: one dev key per run.
BENCH_KEYS = ensure_dev_keys(Path(tempfile.mkdtemp(prefix="auditlog-bench-keys-")))
ALL_SCOPES = ["events:write", "events:read", "sessions:tail", "events:export", "tenant:admin"]


def bench_token(tenant: str = "*") -> str:
    return BENCH_KEYS.mint(tenant, ALL_SCOPES, ttl_s=24 * 3600, subject="bench")


def bench_client(target: str, **options: Any) -> AuditLogClient:
    """An SDK client with a platform token."""
    return AuditLogClient(target, token=bench_token(), **options)


def bench_channel(target: str, *, own_connection: bool = False) -> grpc.aio.Channel:
    """A raw channel whose calls carry a platform token.

    With `own_connection`, the channel gets a TCP connection of its own: channels with equal
    arguments share one otherwise, and a server's workers (SO_REUSEPORT) are given connections,
    not calls.
    """
    options = [("grpc.use_local_subchannel_pool", 1)] if own_connection else []
    return grpc.aio.insecure_channel(
        target, options=options, interceptors=bearer_interceptors(bench_token())
    )


# ---- events and the documents the service stores for them ------------------------------------


def cobrowse_event(tenant: str, session: str, index: int) -> audit_event_pb2.AuditEvent:
    """A co-browsing event of one of four kinds, by index."""
    event = audit_event_pb2.AuditEvent(
        id=str(uuid.uuid4()),
        tenant_id=tenant,
        tenant_user_id=f"agent-{index % 50}",
        cobrowse=audit_event_pb2.CobrowseContext(
            session_id=session,
            actor=enums_pb2.ACTOR_AGENT if index % 3 == 0 else enums_pb2.ACTOR_CUSTOMER,
        ),
    )
    kind = index % 4
    if kind == 0:
        event.click.element.CopyFrom(payloads_pb2.Element(name="Buy now", id=f"el-{index % 100}"))
    elif kind == 1:
        event.scroll.position.CopyFrom(payloads_pb2.ScrollPosition(top=index % 5000, left=0))
    elif kind == 2:
        event.input.text = f"value {index}"
        event.input.element.id = f"field-{index % 20}"
        event.input.sensitive = index % 10 == 2
    else:
        event.page_change.page_name = f"Product {index % 40}"
        event.page_change.url = f"https://shop.example/p/{index % 40}"
    return event


def general_event(tenant: str, index: int) -> audit_event_pb2.AuditEvent:
    """A general platform event of one of four kinds, by index."""
    event = audit_event_pb2.AuditEvent(
        id=str(uuid.uuid4()), tenant_id=tenant, tenant_user_id=f"agent-{index % 50}"
    )
    kind = index % 4
    customer = f"cust-{index % 997}"
    if kind == 0:
        event.start_call.call_id = f"call-{index}"
        event.start_call.customer_id = customer
    elif kind == 1:
        event.messenger_send.customer_id = customer
    elif kind == 2:
        event.logged_in.SetInParent()
    else:
        event.status_change.customer_id = customer
        event.status_change.previous_status = "Unresolved"
        event.status_change.status = "Done"
        event.status_change.message_id = f"msg-{index}"
    return event


# The service's conversion with a key of its own: fingerprints differ, sizes do not.
PREPARER = convert.EventPreparer("bench")


def event_document(
    event: audit_event_pb2.AuditEvent, receive_time: convert.StoredTime | dt.datetime
) -> Document:
    """The stored document of an event, by the service's own conversion."""
    prepared = PREPARER.prepare(event)
    return convert.to_document(prepared, event_id=prepared.event.id, receive_time=receive_time)


AUTH_SETTINGS = {
    "token_secret": BENCH_KEYS.token_secret,
    "jwks_file": str(BENCH_KEYS.jwks_file),
    "jwt_issuer": DEV_ISSUER,
    "jwt_audience": DEV_AUDIENCE,
    "checkpoint_key_file": str(BENCH_KEYS.checkpoint_key_file),
}
AUTH_ENV = {
    "AUDITLOG_TOKEN_SECRET": BENCH_KEYS.token_secret,
    "AUDITLOG_JWKS_FILE": str(BENCH_KEYS.jwks_file),
    "AUDITLOG_JWT_ISSUER": DEV_ISSUER,
    "AUDITLOG_JWT_AUDIENCE": DEV_AUDIENCE,
    "AUDITLOG_CHECKPOINT_KEY_FILE": str(BENCH_KEYS.checkpoint_key_file),
}


@contextlib.contextmanager
def database() -> Any:
    """MONGODB_URI when set, else a fresh FerretDB in a temporary folder."""
    uri = os.environ.get("MONGODB_URI")
    if uri:
        yield uri, "mongodb"
        return
    with tempfile.TemporaryDirectory(prefix="auditlog-bench-") as tmp:
        db = FerretDB(Path(tmp), free_port())
        db.start()
        try:
            yield db.uri, "ferretdb-sqlite"
        finally:
            db.stop()


@contextlib.asynccontextmanager
async def running_server(
    uri: str, database_name: str, **changes: Any
) -> AsyncIterator[RunningServer]:
    settings = replace(
        Settings(
            listen="127.0.0.1:0",
            http_listen="127.0.0.1:0",
            mongodb_uri=uri,
            database=database_name,
            write_concern="1",
        ),
        **{**AUTH_SETTINGS, **changes},
    )
    server = await start_server(settings)
    await server.ready()
    try:
        yield server
    finally:
        await server.stop(grace_s=1.0)


def log(message: str) -> None:
    """A progress line with the time of day."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary_ms(samples_s: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples_s]
    return {
        "p50_ms": round(statistics.median(ms), 3),
        "p99_ms": round(percentile(ms, 0.99), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


def write_result(name: str, data: dict[str, Any], markdown: str) -> None:
    (RESULTS / name).parent.mkdir(parents=True, exist_ok=True)  # a name may have folders
    data = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, **data}
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown)
    print(markdown)


# ---- helpers for benchmarks that run the service as separate OS processes --------------------


@contextlib.contextmanager
def database_process() -> Any:
    """Like database(), also yielding the FerretDB process id (None for MONGODB_URI)."""
    uri = os.environ.get("MONGODB_URI")
    if uri:
        yield uri, "mongodb", None
        return
    with tempfile.TemporaryDirectory(prefix="auditlog-bench-") as tmp:
        db = FerretDB(Path(tmp), free_port())
        db.start()
        try:
            assert db.process is not None
            yield db.uri, "ferretdb-sqlite", db.process.pid
        finally:
            db.stop()


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (from /proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MB (VmRSS from /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise ValueError(f"no VmRSS for process {pid}")


def cache_writer(mib: int) -> Callable[[], None]:
    """A function that writes a byte of every cache line of an `mib` MiB buffer, pushing out
    what the caches held (this machine's last-level cache is 32 MiB), as what runs between a
    server's steps does; with 0, one that does nothing. The buffer is made here, once."""
    if not mib:
        return lambda: None
    buffer = bytearray(mib << 20)
    lines = bytes(len(buffer) // 64)

    def write_over() -> None:
        buffer[::64] = lines

    return write_over


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(value, 2) for value in os.getloadavg()]


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, theirs, ...), from /proc (Linux)."""
    found, todo = [], [pid]
    while todo:
        children = child_pids(todo.pop())
        found += children
        todo += children
    return sorted(found)


class CpuMeter:
    """CPU share of named processes over a window, in % of one core; `cpu_s` has the seconds.

    A name in `trees` counts its process and every process below it (a supervisor and its
    workers): a worker started during the window counts with all its CPU, one that ended
    during it without any.
    """

    def __init__(self, pids: dict[str, int | None], trees: Collection[str] = ()) -> None:
        self._pids = {name: pid for name, pid in pids.items() if pid is not None}
        self._trees = set(trees)
        self._start: dict[str, dict[int, float]] = {}
        self._started_at = 0.0
        self.cpu_s: dict[str, float] = {}
        self.elapsed_s = 0.0

    def _read(self) -> dict[str, dict[int, float]]:
        used: dict[str, dict[int, float]] = {}
        for name, pid in self._pids.items():
            used[name] = {pid: cpu_seconds(pid)}
            for child in descendants(pid) if name in self._trees else []:
                with contextlib.suppress(OSError):  # ended meanwhile
                    used[name][child] = cpu_seconds(child)
        return used

    def start(self) -> None:
        self._started_at = time.perf_counter()
        self._start = self._read()

    def stop(self) -> dict[str, float]:
        self.elapsed_s = time.perf_counter() - self._started_at
        now = self._read()
        self.cpu_s = {
            name: sum(used - self._start[name].get(pid, 0.0) for pid, used in now[name].items())
            for name in self._pids
        }
        return {name: round(100 * used / self.elapsed_s, 2) for name, used in self.cpu_s.items()}


AUDITLOG = str(Path(sys.executable).with_name("auditlog"))


class ChildServer:
    """A gRPC server as a child process (`command`, which listens on `port`), for
    cross-process measurements: its CPU and memory are its own."""

    def __init__(
        self, command: list[str], port: int, log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.port = port
        self.target = f"127.0.0.1:{port}"
        env = {
            **os.environ,
            "AUDITLOG_LOG_LEVEL": os.environ.get("AUDITLOG_LOG_LEVEL", "WARNING"),
            **(env or {}),
        }
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self.pid = self.process.pid

    async def wait_serving(self, timeout_s: float = 120.0) -> None:
        """Waits for the health status SERVING (the database answered, the indexes exist)."""
        async with grpc.aio.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            call = stub.Watch(
                health_pb2.HealthCheckRequest(service=""), wait_for_ready=True, timeout=timeout_s
            )
            async for response in call:
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    call.cancel()
                    return
                if self.process.poll() is not None:
                    break
        raise RuntimeError(f"server on {self.target} exited with {self.process.returncode}")

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class ServerProcess(ChildServer):
    """`auditlog serve` as a child process on a free port."""

    def __init__(
        self,
        uri: str,
        database_name: str,
        log_path: Path,
        *extra: str,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        port = port or free_port()
        command = [
            AUDITLOG,
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--mongodb-uri",
            uri,
            "--database",
            database_name,
            *extra,
        ]
        env = {
            # An ephemeral HTTP port: with the default 8080, a second replica could not start.
            "AUDITLOG_HTTP_LISTEN": "127.0.0.1:0",
            **AUTH_ENV,
            **(env or {}),
        }
        super().__init__(command, port, log_path, env)


@contextlib.asynccontextmanager
async def served_process(
    uri: str, database_name: str, log_path: Path, *extra: str, env: dict[str, str] | None = None
) -> AsyncIterator[ServerProcess]:
    """`auditlog serve` in a process of its own, as deployed (write concern 1), until the end."""
    server = ServerProcess(uri, database_name, log_path, "--write-concern", "1", *extra, env=env)
    try:
        await server.wait_serving()
        yield server
    finally:
        server.stop()


def serve_flags() -> str:
    """`auditlog serve --help`: which flags this checkout's server takes."""
    return subprocess.run(
        [AUDITLOG, "serve", "--help"], capture_output=True, text=True, check=True
    ).stdout


def cpu_pressure() -> dict[str, float] | None:
    """The share of time some runnable task waited for a CPU (Linux PSI), in %, if available."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return None
    values = dict(item.split("=") for item in line.split()[1:])
    return {key: float(values[key]) for key in ("avg10", "avg60", "avg300")}


def code_version() -> str:
    """The commit of the code being measured (a COMMIT file stands in outside a git checkout)."""
    root = Path(__file__).resolve().parents[1]
    try:
        return subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        marker = root / "COMMIT"
        return marker.read_text().strip() if marker.exists() else "unknown"
