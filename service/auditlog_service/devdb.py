"""The dev/CI database: a FerretDB process on SQLite, for make run, the tests and bench."""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FERRETDB_BIN = PROJECT_ROOT / ".tools" / "bin" / "ferretdb"
# Go's garbage collector target for FerretDB (unless GOGC is set): 400 collects a quarter as
# often as Go's default 100. Measured here with 1,000-event LogEvents and the ledger: FerretDB's
# CPU per event 151-166 -> 127-145 us, verification reads 194-272 -> 161-165 us per event; its
# peak memory 72 -> 135-155 MB. 200 and 800 did no better than 400.
FERRETDB_GOGC = "400"


def free_port() -> int:
    """A port free now, for a process started a little later, taken from below the kernel's
    ephemeral range. A port from bind(0) goes back to that range when released, where any
    process's next bind(0) (a test server's own listeners) or outgoing connection may take it
    before the process meant for it starts; FerretDB then cannot listen, and whatever took the
    port answers its clients instead (the likely cause of a test that once found its database
    "connection closed" for 30 s)."""
    first, _ = _ephemeral_range()
    for _ in range(200):
        port = random.randrange(max(1024, first - 10_000), first)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use
            return port
    with socket.socket() as sock:  # below the range is crowded: an ephemeral one after all
        sock.bind(("127.0.0.1", 0))
        ephemeral: int = sock.getsockname()[1]
        return ephemeral


def _ephemeral_range() -> tuple[int, int]:
    try:
        first, last = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(first), int(last)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


@dataclass
class FerretDB:
    """One FerretDB process with its own data and state folders and port."""

    data_dir: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def command(self) -> list[str]:
        return [
            str(FERRETDB_BIN),
            "--telemetry=disable",  # nothing may leave the machine
            "--debug-addr=-",  # its default fixed port would collide with a second instance
            f"--state-dir={self.data_dir / 'state'}",
            f"--listen-addr=127.0.0.1:{self.port}",
            "--handler=sqlite",
            # WAL without an fsync per commit (SQLite's synchronous=NORMAL): a commit survives a
            # crash of FerretDB, not of the machine. Fine for a dev/CI database, and it halves
            # the cost of a write (1.2 -> 0.5 ms per insert here); production runs MongoDB.
            # Statement journals in memory: those of the ledger's large inserts spilled to
            # temporary files (11 % of FerretDB's CPU taking in events, in pprof); its CPU per
            # event 180 -> 172 and 195 -> 189 us in two runs of 8 alternating rounds.
            f"--sqlite-url=file:{self.data_dir / 'sqlite'}/"
            "?_pragma=synchronous(normal)&_pragma=temp_store(memory)",
            "--log-level=warn",
        ]

    def start(self, timeout_s: float = 30.0) -> None:
        if not FERRETDB_BIN.exists():
            raise FileNotFoundError(f"{FERRETDB_BIN} is missing: run `make setup` first")
        (self.data_dir / "state").mkdir(parents=True, exist_ok=True)
        (self.data_dir / "sqlite").mkdir(parents=True, exist_ok=True)
        with (self.data_dir / "ferretdb.log").open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={"GOGC": FERRETDB_GOGC, **os.environ},
            )
        self.wait_until_listening(timeout_s)

    def wait_until_listening(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"FerretDB exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)  # polling a port that is not open yet; no event to wait on
        raise TimeoutError(f"FerretDB did not listen on {self.port} within {timeout_s}s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def remove_data(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)


def wait_for_serving(address: str, timeout_s: float = 60.0, ca_file: Path | None = None) -> None:
    """Blocks until the gRPC health service at `address` reports SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout_s
    channel = (
        grpc.secure_channel(address, grpc.ssl_channel_credentials(ca_file.read_bytes()))
        if ca_file
        else grpc.insecure_channel(address)
    )
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                response = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)  # polling the health service; it has no push for "now serving"
    raise TimeoutError(f"auditlog at {address} did not become SERVING within {timeout_s}s")


def with_server(command: list[str]) -> int:
    """Runs `command` against a fresh server (and database) of its own, with TLS and tokens on,
    as in production: AUDITLOG_ADDR, AUDITLOG_TOKEN (a platform token with every scope) and
    AUDITLOG_TLS_CA tell the command's SDK how to reach it."""
    from .devkeys import DEV_AUDIENCE, DEV_ISSUER, ensure_dev_keys, ensure_dev_tls

    with tempfile.TemporaryDirectory(prefix="auditlog-live-") as tmp:
        db = None
        uri = os.environ.get("MONGODB_URI")
        if not uri:
            db = FerretDB(Path(tmp) / "db", free_port())
            db.start()
            uri = db.uri
        keys = ensure_dev_keys(Path(tmp) / "keys")
        tls = ensure_dev_tls(Path(tmp) / "tls")
        address = f"localhost:{free_port()}"
        scopes = ["events:write", "events:read", "sessions:tail", "events:export", "tenant:admin"]
        env = {
            **os.environ,
            "MONGODB_URI": uri,
            "AUDITLOG_ADDR": address,
            "AUDITLOG_TOKEN": keys.mint("*", scopes, ttl_s=4 * 3600, subject="sdk-tests"),
            "AUDITLOG_TLS_CA": str(tls.ca_file),
        }
        server_env = {
            **env,
            "AUDITLOG_LOG_LEVEL": "WARNING",
            "AUDITLOG_TOKEN_SECRET": keys.token_secret,
            "AUDITLOG_JWKS_FILE": str(keys.jwks_file),
            "AUDITLOG_JWT_ISSUER": DEV_ISSUER,
            "AUDITLOG_JWT_AUDIENCE": DEV_AUDIENCE,
            "AUDITLOG_CHECKPOINT_KEY_FILE": str(keys.checkpoint_key_file),
            # The SDK tests use the gRPC port; the HTTP port must not need 8080 to be free.
            "AUDITLOG_HTTP_LISTEN": "127.0.0.1:0",
        }
        if db is not None:
            server_env.setdefault("AUDITLOG_WRITE_CONCERN", "1")
        server = subprocess.Popen(
            [str(Path(sys.executable).with_name("auditlog")), "serve", "--listen", address,
             "--database", f"live_{os.getpid()}", "--tls-cert", str(tls.server_cert),
             "--tls-key", str(tls.server_key)],
            env=server_env,
        )  # fmt: skip
        try:
            wait_for_serving(address, ca_file=tls.ca_file)
            return subprocess.call(command, env=env)
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
            if db is not None:
                db.stop()


def main(argv: list[str] | None = None) -> None:
    """`run`: FerretDB in the foreground; `with-server -- CMD`: CMD against a live server."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("action", choices=["run", "command", "with-server"])
    parser.add_argument("--dir", default=str(PROJECT_ROOT / ".data" / "dev"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("DEVDB_PORT", "27017")))
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.action == "with-server":
        rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
        sys.exit(with_server(rest))
    db = FerretDB(Path(args.dir), args.port)
    if args.action == "command":
        print(" ".join(db.command()))
        return
    # Block the stop signals before starting, so that sigwait receives them instead of the default
    # handler killing us without stopping FerretDB.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    db.start()
    print(f"FerretDB listening on {db.uri} (data in {args.dir})", flush=True)
    try:
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
    finally:
        db.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
