"""Several server processes on one port: a supervisor that starts, restarts and stops them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter
from prometheus_client import multiprocess as prometheus_multiprocess

from . import metrics
from .config import Settings, check_settings
from .server import STOP_OVERRUN_S, resolve_dev_mode

log = logging.getLogger(__name__)

# Set by the supervisor for its workers only: the worker's number (0..N-1) and the read end of
# a pipe whose EOF tells the worker that the supervisor is gone.
WORKER_ENV = "AUDITLOG_WORKER"
SUPERVISOR_FD_ENV = "AUDITLOG_SUPERVISOR_FD"
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Restarts of a worker that keeps crashing wait longer each time, up to MAX_BACKOFF_S; a worker
# that ran STABLE_AFTER_S had started fine, and its next crash starts over at FIRST_BACKOFF_S.
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
STABLE_AFTER_S = 30.0
# A worker bounds its own stop at grace + STOP_OVERRUN_S; past that and this margin it is killed.
KILL_MARGIN_S = 5.0


def reserve(listen: str) -> tuple[str, socket.socket]:
    """Binds `listen` for the supervisor's lifetime and returns it with its port (a free one
    for port 0), so that every worker, restarted ones too, listens on the same port.

    The bind is made without SO_REUSEPORT, so a port that anyone else holds (another
    supervisor's workers included) fails here, loudly; then the socket is marked SO_REUSEPORT,
    which lets the workers bind beside it. It never listens, so it is never given connections.
    """
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    family, kind, proto, _, address = socket.getaddrinfo(
        host or "::", int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        # Not SO_REUSEPORT yet; SO_REUSEADDR only lets connections of an earlier run that are
        # still in TIME_WAIT not count (on Linux it never lets two sockets listen).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError as error:
        sock.close()
        raise OSError(f"cannot listen on {listen}: {error.strerror}") from error
    bound = sock.getsockname()[1]
    return (f"[{host}]" if ":" in host else host) + f":{bound}", sock


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc; Linux), e.g. a supervisor's workers."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        # The command name (in parentheses) may contain spaces: the fields follow its end.
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
            children.append(int(entry.name))
    return sorted(children)


@dataclass
class _Worker:
    number: int
    process: asyncio.subprocess.Process | None = None
    # How its last process ended (negative: by that signal), and whether that was at the stop.
    returncode: int | None = None
    stopped: bool = False


class Supervisor:
    """Runs `settings.workers` copies of `auditlog serve` and keeps them running.

    A worker that exits (crashes, or is killed) is started again after a backoff. SIGTERM or
    SIGINT stops them all: each gets SIGTERM (a graceful stop) and is killed only if it is still
    running well past its own bound. Each worker runs the `auditlog serve` command line it was
    given, with the reserved addresses and its number added.
    """

    def __init__(self, settings: Settings, argv: list[str]) -> None:
        self._settings = settings
        self._argv = argv
        self._stopping = asyncio.Event()
        self._killing = False
        self._workers = [_Worker(n) for n in range(settings.workers)]
        self._extra_args: list[str] = []
        self._metrics_dir: Path | None = None
        self._restarts: Counter | None = None
        self._supervisor_fd = -1

    async def run(self) -> int:
        """Serves until SIGTERM or SIGINT; 0 when every worker stopped gracefully."""
        settings = self._settings
        reserved: list[socket.socket] = []
        endpoint: metrics.MetricsEndpoint | None = None
        read_fd, write_fd = os.pipe()  # the write end is never inherited: EOF = supervisor gone
        self._supervisor_fd = read_fd
        try:
            listen, sock = reserve(settings.listen)
            reserved.append(sock)
            self._extra_args = ["--listen", listen]
            if settings.http_listen:
                http_listen, sock = reserve(settings.http_listen)
                reserved.append(sock)
                self._extra_args += ["--http-listen", http_listen]
            if settings.metrics_listen:
                endpoint = self._start_metrics()
            log.info(
                "supervisor: %d workers on %s%s",
                settings.workers,
                listen,
                f" and HTTP {self._extra_args[-1]}" if settings.http_listen else "",
            )
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stop_requested, sig)
            keepers = [asyncio.create_task(self._keep_running(w)) for w in self._workers]
            await self._stopping.wait()
            await self._stop_all(keepers)
        finally:
            os.close(write_fd)
            os.close(read_fd)
            for sock in reserved:
                sock.close()
            if endpoint is not None:
                await endpoint.stop()
            if self._metrics_dir is not None:
                shutil.rmtree(self._metrics_dir, ignore_errors=True)
        # Workers waiting to be restarted at the stop had nothing to stop.
        clean = all(w.returncode == 0 for w in self._workers if w.stopped)
        log.info("supervisor: all workers stopped%s", "" if clean else " (not all cleanly)")
        return 0 if clean else 1

    def _start_metrics(self) -> metrics.MetricsEndpoint:
        # Workers write their metrics to files here (prometheus-client's multiprocess mode);
        # the endpoint sums them, so Prometheus scrapes one target, whose counters keep
        # counting across worker restarts. A fresh folder: stale files would count twice.
        self._metrics_dir = Path(tempfile.mkdtemp(prefix="auditlog-metrics-"))
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry, path=str(self._metrics_dir))  # type: ignore[no-untyped-call]
        self._restarts = Counter(
            "auditlog_worker_restarts",
            "Workers the supervisor started again after they exited",
            registry=registry,
        )
        return metrics.start_endpoint(
            self._settings.metrics_listen,
            tls=self._settings.tls_files,
            registry=registry,
        )

    def _stop_requested(self, sig: signal.Signals) -> None:
        if not self._stopping.is_set():
            log.info("supervisor: %s, stopping the workers", sig.name)
            self._stopping.set()
        elif not self._killing:
            # Asked twice: no more waiting for graceful stops.
            log.warning("supervisor: %s again, killing the workers", sig.name)
            self._killing = True
            self._signal_all(signal.SIGKILL)

    def _signal_all(self, sig: signal.Signals) -> None:
        for worker in self._workers:
            if worker.process is not None and worker.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(sig)

    async def _spawn(self, worker: _Worker) -> asyncio.subprocess.Process:
        env = {
            **os.environ,
            WORKER_ENV: str(worker.number),
            SUPERVISOR_FD_ENV: str(self._supervisor_fd),
        }
        if self._metrics_dir is not None:
            env[MULTIPROC_DIR_ENV] = str(self._metrics_dir)
        command = [sys.executable, "-m", "auditlog_service", *self._argv, *self._extra_args]
        process = await asyncio.create_subprocess_exec(
            *command, env=env, stdin=asyncio.subprocess.DEVNULL, pass_fds=(self._supervisor_fd,)
        )
        log.info("supervisor: worker %d started (pid %d)", worker.number, process.pid)
        return process

    async def _keep_running(self, worker: _Worker) -> None:
        try:
            await self._restart_until_stopped(worker)
        except Exception:
            # Cannot start workers (e.g. out of file descriptors): stop rather than run short.
            log.exception("supervisor: worker %d cannot be started", worker.number)
            worker.returncode, worker.stopped = -1, True
            self._stopping.set()

    async def _restart_until_stopped(self, worker: _Worker) -> None:
        loop = asyncio.get_running_loop()
        backoff = 0.0
        while not self._stopping.is_set():
            process = worker.process = await self._spawn(worker)
            if self._stopping.is_set():
                process.send_signal(signal.SIGTERM)  # started while the others were stopped
            started = loop.time()
            worker.returncode = await process.wait()
            ran = loop.time() - started
            if self._metrics_dir is not None:
                # Its live gauges (open tails) end with it; its counters keep counting.
                prometheus_multiprocess.mark_process_dead(process.pid, str(self._metrics_dir))  # type: ignore[no-untyped-call]
            if self._stopping.is_set():
                worker.stopped = True
                return
            backoff = FIRST_BACKOFF_S if ran >= STABLE_AFTER_S else min(MAX_BACKOFF_S, backoff * 2)
            backoff = max(backoff, FIRST_BACKOFF_S)
            code = worker.returncode
            how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited {code}"
            log.warning(
                "supervisor: worker %d (pid %d) %s after %.1fs; restarting it in %gs",
                worker.number,
                process.pid,
                how,
                ran,
                backoff,
            )
            if self._restarts is not None:
                self._restarts.inc()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff)

    async def _stop_all(self, keepers: list[asyncio.Task[None]]) -> None:
        self._signal_all(signal.SIGTERM)
        bound = self._settings.shutdown_grace_s + STOP_OVERRUN_S + KILL_MARGIN_S
        _, late = await asyncio.wait(keepers, timeout=bound)
        if late:
            log.warning("supervisor: workers still running after %gs; killing them", bound)
            self._killing = True
            self._signal_all(signal.SIGKILL)
            await asyncio.wait(late)
        for keeper in keepers:
            keeper.result()


def supervise(settings: Settings, argv: list[str]) -> int:
    """`auditlog serve --workers N`: runs the supervisor until it is stopped; its exit code."""
    # Checked (and dev keys made) once here: a bad setting fails the command, not N workers
    # in a restart loop.
    settings = resolve_dev_mode(settings)
    check_settings(settings)
    return asyncio.run(Supervisor(settings, argv).run())
