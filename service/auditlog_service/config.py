"""Service settings: one typed object, read from the environment and command-line flags."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace

from .validation import Limits

DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_HTTP_LISTEN = "127.0.0.1:8080"
DEFAULT_MONGODB_URI = "mongodb://127.0.0.1:27017/"


@dataclass(frozen=True)
class TlsFiles:
    """The service's TLS, the same on every port: certificate (chain), key, and the client CA
    whose certificates clients must present (mTLS), all PEM files."""

    cert: str
    key: str
    client_ca: str = ""


@dataclass(frozen=True)
class Settings:
    """Everything the server can be told; each field has an AUDITLOG_* environment variable."""

    listen: str = DEFAULT_LISTEN
    # The HTTP port for browsers: Connect, gRPC-Web and gRPC over HTTP, and the web console at
    # "/". Empty: no HTTP port. TLS, mTLS and the plaintext rule are the gRPC port's.
    http_listen: str = DEFAULT_HTTP_LISTEN
    # Server processes on the listen addresses (SO_REUSEPORT), under a supervisor that restarts
    # a crashed one and stops all on SIGTERM. 1: this process serves, no supervisor.
    workers: int = 1
    # host:port of the Prometheus endpoint (/metrics); empty: no metrics. With several workers
    # the supervisor serves it, summed over the workers. TLS and the plaintext rule as above.
    metrics_listen: str = ""
    # The event loop of `auditlog serve`: "asyncio", or "uvloop" (about 10 % less CPU per unary
    # call in bench/results/workers*.md; the test suite runs in-process servers on asyncio).
    event_loop: str = "asyncio"
    # Origins (scheme://host[:port], comma-separated, or "*") whose pages may call the HTTP port
    # from a browser (CORS). The console served by the port itself needs none.
    cors_origins: str = ""
    # The built console (index.html, assets/); empty: console/dist of this repository.
    console_dir: str = ""
    mongodb_uri: str = DEFAULT_MONGODB_URI
    database: str = "auditlog"
    # MongoDB write concern "w": 1, "majority", ... An event is acknowledged only after this.
    write_concern: str = "majority"
    # Server selection / socket timeouts: how long an RPC waits for an unreachable database
    # before it fails with UNAVAILABLE.
    mongodb_timeout_ms: int = 3000
    # Group commit of concurrent LogEvent calls, batches and streams: a group is what waits, up
    # to this many events (a LogEvents batch of 1,000 is one group, one unordered insert of its
    # general events).
    group_commit_max_events: int = 1000
    # How long a group waits for more, once. Tried and dropped (2026-12-04): waiting again while
    # each wait brought more calls, up to 10 ms, when the process had used 0.6 of a core or
    # more over the last 0.1 s. Each group costs the server about 1.4 ms of CPU of its own
    # (0.55 of it the ledger's), so larger groups should let a busy server take more unary
    # calls; but with 8, 16 and 32 closed-loop callers it took 14-30 % fewer calls a second
    # (latency p50 6.2 -> 7.1, 8.2 -> 11.5, 14 -> 17 ms), and at 64 callers +15 % in one run
    # and -19 % in another. Callers that wait for their answer bring the next call only after
    # it, so the waiting mostly adds to their latency.
    group_commit_max_delay_ms: float = 1.5
    # The longest that wait may become for a trickle of small calls (fewer than
    # group_commit_parallel_min_events waiting): group_commit.LingerTuner steps to twice, four
    # times ... the wait above while the event loop is hardly ever idle, and back once it idles
    # (metric auditlog_group_commit_wait_seconds). Less than twice the wait above: the wait
    # stays fixed.
    group_commit_longest_delay_ms: float = 12.0
    # Groups written at once; a session's events are never in two of them. A further group
    # starts beside one in flight only when this many events wait (large batches and streams);
    # fewer wait for the group in flight and go out together. Unary LogEvent, 64 concurrent
    # callers: with a second group at any size, groups of 6.3 events and 941 calls/s; with one
    # in flight (what this amounts to there), 12-16 events and 1,519 (server CPU per call 998
    # -> 634 µs). 100 or 300 here: the same for streams of 100-event messages within the noise
    # (0.43-0.51 of raw either way). With more waiting than a group holds, a group takes half
    # of the sessions waiting, so that a second goes beside it (see group_commit.GroupCommitter).
    group_commit_in_flight: int = 2
    group_commit_parallel_min_events: int = 100
    # Key that signs page tokens and cursors. Replicas behind one load balancer must share it.
    # Required outside dev mode.
    token_secret: str = ""
    # Dev mode (`make run`): secrets, a JWT signing key and its JWKS are made up in dev_dir, and
    # reflection is on. Never for production.
    dev: bool = False
    dev_dir: str = ".data/dev"
    # Bearer JWTs: verified against a JWKS file or URL (one is required), issuer and audience
    # required, a small clock leeway.
    jwks_file: str = ""
    jwks_url: str = ""
    jwt_issuer: str = ""
    jwt_audience: str = "auditlog"
    jwt_leeway_s: float = 30.0
    # TLS (PEM files). With a client CA, clients must present a certificate it signed (mTLS).
    # Without TLS the server listens in plaintext only on a loopback address, unless insecure.
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    insecure: bool = False
    # Server reflection: "on", "off", or "" (on in dev mode only).
    reflection: str = ""
    # Per-tenant limits (0: none): RPCs and events a second (token buckets with bursts), and
    # open tails per server process.
    tenant_rpcs_per_s: float = 0.0
    tenant_rpc_burst: float = 0.0
    tenant_events_per_s: float = 0.0
    tenant_event_burst: float = 0.0
    tenant_max_tails: int = 0
    # One JSON line per RPC on the "auditlog.access" logger.
    access_log: bool = True
    # The tenant ledger: the Ed25519 key (PEM) that signs checkpoints and retention anchors
    # (required outside dev mode), public keys of earlier keys (one base64 key a line), and how
    # often a checkpoint is signed per active tenant.
    checkpoint_key_file: str = ""
    checkpoint_public_keys_file: str = ""
    checkpoint_every_events: int = 1000
    checkpoint_interval_s: float = 60.0
    # How long events are kept when a tenant has no retention of its own (0: forever), and how
    # often the retention job runs.
    retention_days: float = 0.0
    retention_interval_s: float = 600.0
    # The tenant ledger on (the default) or off. Off exists to measure what the ledger costs
    # (bench/ledger_cost.py): no ledger_sequence, no ledger RPCs, no retention.
    ledger: bool = True
    # ListEvents from the ledger ("ledger"), from indexes ("index"), or by backend ("auto":
    # the ledger on FerretDB, which would scan and sort the collection for any other filter).
    list_from: str = "auto"
    shutdown_grace_s: float = 5.0
    health_check_interval_s: float = 1.0
    max_receive_message_bytes: int = 32 * 1024 * 1024
    # Live tails (TailSession).
    max_tails: int = 1000
    tail_heartbeat_interval_s: float = 10.0
    tail_slow_consumer_timeout_s: float = 10.0
    tail_safety_probe_interval_s: float = 60.0
    # A read (GetEvent, ListEvents) gets the call's deadline, capped at this: a query that runs
    # longer ends as DEADLINE_EXCEEDED instead of holding a connection until the socket timeout.
    max_read_time_s: float = 10.0
    limits: Limits = field(default_factory=Limits)

    @property
    def write_concern_w(self) -> int | str:
        return int(self.write_concern) if self.write_concern.isdigit() else self.write_concern

    @property
    def reflection_enabled(self) -> bool:
        return self.reflection == "on" or (self.reflection == "" and self.dev)

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert or self.tls_key)

    @property
    def tls_files(self) -> TlsFiles | None:
        return TlsFiles(self.tls_cert, self.tls_key, self.tls_client_ca) if self.tls else None


class SettingsError(ValueError):
    """The settings cannot run a server (a missing secret, a half TLS setup, ...)."""


def check_settings(settings: Settings) -> None:
    """Refuses what would be unsafe or cannot work, with what to do about it."""
    if not settings.token_secret:
        raise SettingsError(
            "AUDITLOG_TOKEN_SECRET is required (it signs page tokens and cursors; every replica "
            "must have the same); for local development run with --dev"
        )
    if not settings.jwks_file and not settings.jwks_url:
        raise SettingsError(
            "AUDITLOG_JWKS_FILE or AUDITLOG_JWKS_URL is required (the keys that verify bearer "
            "tokens); for local development run with --dev"
        )
    if not settings.jwt_issuer:
        raise SettingsError("AUDITLOG_JWT_ISSUER is required (the issuer tokens must name)")
    if not settings.checkpoint_key_file:
        raise SettingsError(
            "AUDITLOG_CHECKPOINT_KEY_FILE is required (the Ed25519 key that signs ledger "
            "checkpoints); for local development run with --dev"
        )
    if settings.list_from not in ("auto", "ledger", "index"):
        raise SettingsError("AUDITLOG_LIST_FROM must be auto, ledger or index")
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise SettingsError("TLS needs both --tls-cert and --tls-key")
    if settings.tls_client_ca and not settings.tls:
        raise SettingsError("--tls-client-ca needs --tls-cert and --tls-key")
    if settings.event_loop not in ("asyncio", "uvloop"):
        raise SettingsError("AUDITLOG_EVENT_LOOP must be asyncio or uvloop")
    if settings.workers < 1:
        raise SettingsError("--workers must be at least 1")
    for flag, address in (
        ("--listen", settings.listen),
        ("--http-listen", settings.http_listen),
        ("--metrics-listen", settings.metrics_listen),
    ):
        if not address:
            continue
        host = address.rsplit(":", 1)[0].strip("[]")
        if not settings.tls and not settings.insecure and not _is_loopback(host):
            raise SettingsError(
                f"refusing to serve plaintext on {address} ({flag}): give --tls-cert/--tls-key, "
                "listen on a loopback address, or pass --insecure"
            )
    for origin in settings.cors_origin_list:
        if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin.rstrip("/")):
            raise SettingsError(
                f"AUDITLOG_CORS_ORIGINS: {origin!r} is not an origin (scheme://host[:port])"
            )


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_ENV_PREFIX = "AUDITLOG_"
# Environment names that users already know from other MongoDB tools.
_ENV_ALIASES = {"mongodb_uri": "MONGODB_URI"}


def _convert(value: str, like: object) -> object:
    if isinstance(like, bool):
        return value.lower() in ("1", "true", "yes", "on")
    if isinstance(like, int):
        return int(value)
    if isinstance(like, float):
        return float(value)
    return value


def settings_from_env(env: Mapping[str, str], base: Settings | None = None) -> Settings:
    """Settings with every field overridden by its environment variable, when set."""
    settings = base or Settings()
    changes: dict[str, object] = {}
    for f in fields(Settings):
        if f.name == "limits":
            continue
        name = _ENV_ALIASES.get(f.name, _ENV_PREFIX + f.name.upper())
        if name in env:
            changes[f.name] = _convert(env[name], getattr(settings, f.name))
    limit_changes: dict[str, object] = {}
    for f in fields(Limits):
        name = _ENV_PREFIX + f.name.upper()
        if name in env:
            limit_changes[f.name] = int(env[name])
    if limit_changes:
        changes["limits"] = replace(settings.limits, **limit_changes)  # type: ignore[arg-type]
    return replace(settings, **changes)  # type: ignore[arg-type]


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags for the settings people change most; the rest come from the environment."""
    parser.add_argument("--listen", help=f"host:port to serve on (default {DEFAULT_LISTEN})")
    parser.add_argument(
        "--http-listen",
        help=f"host:port of the HTTP port for browsers and the console (default "
        f"{DEFAULT_HTTP_LISTEN}; empty: none)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="server processes on the same ports (SO_REUSEPORT) under a supervisor (default 1)",
    )
    parser.add_argument(
        "--metrics-listen",
        help="host:port of a Prometheus endpoint at /metrics (default: none)",
    )
    parser.add_argument(
        "--event-loop", choices=["asyncio", "uvloop"], help="event loop (default asyncio)"
    )
    parser.add_argument(
        "--dev",
        action="store_true",
        default=None,
        help="dev mode: make up secrets and a JWT key in .data/dev (never in production)",
    )
    parser.add_argument("--tls-cert", help="PEM certificate (chain) to serve TLS with")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    parser.add_argument("--tls-client-ca", help="PEM CA: require client certificates it signed")
    parser.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="allow plaintext on a non-loopback address (behind a TLS-terminating proxy only)",
    )
    parser.add_argument("--jwks-file", help="JWKS file of the keys that verify bearer tokens")
    parser.add_argument("--mongodb-uri", help="MongoDB connection string (env MONGODB_URI)")
    parser.add_argument("--database", help="database name (default auditlog)")
    parser.add_argument("--write-concern", help='MongoDB write concern w: 1, "majority", ...')
    parser.add_argument("--max-batch-events", type=int, help="LogEvents batch limit (1000)")


def settings_from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Settings:
    settings = settings_from_env(os.environ if env is None else env)
    changes: dict[str, object] = {}
    for name in (
        "listen",
        "http_listen",
        "workers",
        "metrics_listen",
        "event_loop",
        "mongodb_uri",
        "database",
        "write_concern",
        "dev",
        "tls_cert",
        "tls_key",
        "tls_client_ca",
        "insecure",
        "jwks_file",
    ):
        value = getattr(args, name, None)
        if value is not None:
            changes[name] = value
    if getattr(args, "max_batch_events", None) is not None:
        changes["limits"] = replace(settings.limits, max_batch_events=args.max_batch_events)
    return replace(settings, **changes)  # type: ignore[arg-type]


def parse_settings(argv: Sequence[str], env: Mapping[str, str] | None = None) -> Settings:
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser)
    return settings_from_args(parser.parse_args(list(argv)), env)
