"""The `auditlog` command: serve, and log/get/list events against a running server."""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from auditlog import AuditLogClient, AuditLogError
from auditlog.ledger import VerificationKeys, verify_export_file, verify_ledger
from auditlog.v1 import audit_event_pb2, enums_pb2, ledger_pb2, service_pb2

from .config import SettingsError, add_settings_arguments, settings_from_args
from .devdb import PROJECT_ROOT
from .devkeys import DevKeys
from .event_types import REGISTRY
from .server import run_on_loop, serve
from .textsafety import spreadsheet_safe, terminal_safe
from .workers import SUPERVISOR_FD_ENV, WORKER_ENV, supervise

DEFAULT_ADDR = os.environ.get("AUDITLOG_ADDR", "127.0.0.1:50051")


def _event_from_args(args: argparse.Namespace) -> audit_event_pb2.AuditEvent:
    if args.json is not None:
        text = sys.stdin.read() if args.json == "-" else args.json
        return json_format.Parse(text, audit_event_pb2.AuditEvent())
    if args.type is None or args.tenant is None:
        raise SystemExit("log: give --json, or --tenant and --type (with --data for its payload)")
    spec = REGISTRY.by_type_string(args.type.upper())
    event = audit_event_pb2.AuditEvent(tenant_id=args.tenant, tenant_user_id=args.user or "")
    if args.id:
        event.id = args.id
    if args.session:
        event.cobrowse.session_id = args.session
        event.cobrowse.actor = enums_pb2.Actor.Value(f"ACTOR_{args.actor.upper()}")
    json_format.ParseDict(json.loads(args.data or "{}"), getattr(event, spec.payload_field))
    getattr(event, spec.payload_field).SetInParent()
    return event


def _as_json(event: audit_event_pb2.AuditEvent) -> str:
    return json.dumps(json_format.MessageToDict(event, preserving_proto_field_name=True))


def _table_row(event: audit_event_pb2.AuditEvent) -> str:
    spec = REGISTRY.by_event_type(event.event_type)
    payload = json_format.MessageToDict(
        getattr(event, spec.payload_field), preserving_proto_field_name=True
    )
    who = event.tenant_user_id or "-"
    if event.HasField("cobrowse"):
        actor = enums_pb2.Actor.Name(event.cobrowse.actor).removeprefix("ACTOR_").lower()
        who = f"{actor}:{event.tenant_user_id or '-'} {event.cobrowse.session_id}#{event.sequence}"
    when = event.occur_time.ToDatetime(dt.UTC).isoformat(timespec="milliseconds")
    # Stored text reaches a terminal here: escapes in it must not drive the terminal.
    return terminal_safe(f"{when}  {spec.display_name:<30} {who:<28} {json.dumps(payload)}")


def _filter_from_args(args: argparse.Namespace) -> service_pb2.EventFilter:
    filt = service_pb2.EventFilter(
        tenant_user_id=args.user or "",
        customer_id=args.customer or "",
        call_id=args.call or "",
        cobrowse_session_id=args.session or "",
    )
    for name in args.type or []:
        filt.event_types.append(REGISTRY.by_type_string(name.upper()).event_type)  # type: ignore[arg-type]
    if args.actor:
        filt.actor = enums_pb2.Actor.Value(f"ACTOR_{args.actor.upper()}")
    if args.since:
        filt.start_time.FromDatetime(dt.datetime.fromisoformat(args.since))
    if args.until:
        filt.end_time.FromDatetime(dt.datetime.fromisoformat(args.until))
    return filt


async def _tail(client: AuditLogClient, args: argparse.Namespace) -> None:
    types = [REGISTRY.by_type_string(name.upper()).event_type for name in args.type or []]

    def announce_live(head: int) -> None:
        # Said when replay reaches the head, not when the next event arrives: on an idle
        # session that may be never.
        if not args.quiet:
            print(f"-- live (head {head}) --", file=sys.stderr, flush=True)

    common: dict[str, Any] = {
        "cursor": args.cursor or "",
        "from_now": args.from_now,
        "event_types": types,
        # Keep going across server restarts: a console watching a session should not give up.
        "max_retries": args.max_retries,
        "on_caught_up": announce_live,
    }
    # Without --session, the tenant's whole ledger: every event, in ledger order.
    tail = (
        client.tail_session(args.tenant, args.session, **common)
        if args.session
        else client.tail_events(args.tenant, **common)
    )
    async for event in tail:
        print(_as_json(event) if args.output == "jsonl" else _table_row(event), flush=True)
        if args.count and tail.last_sequence >= args.count:
            break


class Progress:
    """A one-line progress bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._shown = sys.stderr.isatty()
        self._last = 0.0

    def update(self, done: int, total: int) -> None:
        if not self._shown or time.monotonic() - self._last < 0.2:
            return
        self._last = time.monotonic()
        share = f" ({100 * done / total:.0f} %)" if total else ""
        print(f"\r{self._what} {done:,} of {total:,}{share}", end="", file=sys.stderr, flush=True)

    def done(self, message: str) -> None:
        if self._shown:
            print("\r" + " " * 60 + "\r", end="", file=sys.stderr)
        print(message, file=sys.stderr)


def _keys(client: AuditLogClient, args: argparse.Namespace) -> VerificationKeys | None:
    return VerificationKeys.from_file(args.keys) if args.keys else None


async def _verify(client: AuditLogClient, args: argparse.Namespace) -> int:
    progress = Progress("verified")
    witnesses = [
        json_format.Parse(Path(path).read_text(), ledger_pb2.Checkpoint())  # noqa: ASYNC240
        for path in args.witness
    ]
    if args.file:
        if not args.keys:
            raise SystemExit("verify --file needs --keys: an export is verified against the key")
        report = verify_export_file(
            args.file, args.tenant, VerificationKeys.from_file(args.keys), witnesses
        )
    else:
        report = await verify_ledger(
            client,
            args.tenant,
            _keys(client, args),
            from_sequence=args.from_sequence,
            to_sequence=args.to_sequence,
            progress=progress.update,
            witnesses=witnesses,
        )
    if args.output == "json":
        progress.done("")
        print(json.dumps(report.to_dict(), indent=2))
    else:
        progress.done(
            f"{report.events:,} events ({report.first_sequence}..{report.last_sequence}) and "
            f"{report.checkpoints} checkpoints verified from {report.start}"
        )
        for finding in report.findings:
            fields = f" [{', '.join(finding.fields)}]" if finding.fields else ""
            print(
                terminal_safe(
                    f"{finding.kind_name} at {finding.ledger_sequence}: {finding.detail}{fields}"
                )
            )
        print(
            "OK: the ledger verifies" if report.ok else f"FAILED: {len(report.findings)} findings"
        )
    return 0 if report.ok else 2


CSV_COLUMNS = [
    "ledger_sequence", "id", "tenant_id", "event_type", "display_name", "occur_time",
    "receive_time", "tenant_user_id", "session_id", "actor", "sequence", "ledger_hash", "payload",
]  # fmt: skip


def csv_row(event: audit_event_pb2.AuditEvent) -> list[str]:
    """One event as CSV cells: the common fields, the display name, the payload as JSON."""
    spec = REGISTRY.by_event_type(event.event_type)
    payload = json_format.MessageToDict(
        getattr(event, spec.payload_field), preserving_proto_field_name=True
    )
    actor = (
        enums_pb2.Actor.Name(event.cobrowse.actor).removeprefix("ACTOR_")
        if event.HasField("cobrowse")
        else ""
    )
    cells = [
        str(event.ledger_sequence),
        event.id,
        event.tenant_id,
        spec.type_string,
        spec.display_name,
        event.occur_time.ToJsonString(),
        event.receive_time.ToJsonString(),
        event.tenant_user_id,
        event.cobrowse.session_id,
        actor,
        str(event.sequence) if event.sequence else "",
        event.ledger_hash.hex(),
        json.dumps(payload, ensure_ascii=False, sort_keys=True),
    ]
    return [spreadsheet_safe(cell) for cell in cells]


async def _export(client: AuditLogClient, args: argparse.Namespace) -> int:
    head = (await client.stub.GetCheckpoint(
        service_pb2.GetCheckpointRequest(tenant_id=args.tenant)
    )).head_sequence  # fmt: skip
    progress = Progress("exported")
    writer = csv.writer(sys.stdout) if args.format == "csv" else None
    if writer is not None:
        writer.writerow(CSV_COLUMNS)
    events = 0
    cursor = ""
    try:
        items = client.export_events(
            args.tenant, filter=_filter_from_args(args), cursor=args.cursor or ""
        )
        async for item in items:  # one per line: a batch's events one by one
            cursor = item.cursor
            kind = item.WhichOneof("item")
            if writer is not None:
                if kind == "event" and item.event.HasField("event"):
                    writer.writerow(csv_row(item.event.event))
            else:
                # Every item, checkpoints and anchor included: the file verifies on its own
                # (`auditlog verify --file`).
                print(
                    json_format.MessageToJson(item, preserving_proto_field_name=True, indent=None)
                )
            if kind == "event":
                events += 1
                progress.update(item.event.entry.ledger_sequence, head)
    except AuditLogError as error:
        progress.done(f"export stopped: {error.code.name}; resume with --cursor {cursor}")
        return 1
    progress.done(f"{events:,} events exported; resume with --cursor {cursor}")
    return 0


async def _retention(client: AuditLogClient, args: argparse.Namespace) -> int:
    if args.days is not None:
        request = service_pb2.SetRetentionRequest(tenant_id=args.tenant)
        request.retention.FromTimedelta(dt.timedelta(days=args.days))
        await client.stub.SetRetention(request)
    answer = await client.stub.GetRetention(service_pb2.GetRetentionRequest(tenant_id=args.tenant))
    days = answer.retention.ToTimedelta().total_seconds() / 86_400
    print(f"retention: {'forever' if days == 0 else f'{days:g} days'}")
    if answer.HasField("anchor"):
        print(f"the ledger starts at {answer.anchor.first_sequence}: {answer.anchor.reason}")
    return 0


# The scope each client command needs, for a dev token minted on the fly.
_COMMAND_SCOPES = {"log": "events:write", "get": "events:read", "list": "events:read",
                   "tail": "sessions:tail", "verify": "events:export", "export": "events:export",
                   "retention": "tenant:admin", "keys": "events:read",
                   "checkpoint": "events:read"}  # fmt: skip


def _dev_keys() -> DevKeys | None:
    folder = Path(os.environ.get("AUDITLOG_DEV_DIR", PROJECT_ROOT / ".data" / "dev"))
    keys = DevKeys(folder)
    return keys if (folder / "jwt-signing-key.pem").exists() else None


def _is_local(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


def _token_for(args: argparse.Namespace) -> str | None:
    """AUDITLOG_TOKEN; else, against a server on this machine, a short-lived dev token from the
    dev key of `make run` (so the tour needs no token); else none."""
    given = os.environ.get("AUDITLOG_TOKEN")
    if given:
        return given
    keys = _dev_keys()
    if keys is None or not _is_local(args.addr):
        return None
    tenant = getattr(args, "tenant", None) or "*"
    scopes = [_COMMAND_SCOPES[args.command]]
    if args.command in ("verify", "retention", "tail"):
        scopes.append("events:read")  # they also read checkpoints, retention, the ledger
    return keys.mint(tenant, scopes, ttl_s=3600, subject="auditlog-cli")


def _credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    ca = args.tls_ca or os.environ.get("AUDITLOG_TLS_CA")
    if not ca:
        return None
    cert, key = os.environ.get("AUDITLOG_TLS_CERT"), os.environ.get("AUDITLOG_TLS_KEY")
    return grpc.ssl_channel_credentials(
        root_certificates=Path(ca).read_bytes(),
        private_key=Path(key).read_bytes() if key else None,
        certificate_chain=Path(cert).read_bytes() if cert else None,
    )


def _mint(args: argparse.Namespace) -> int:
    keys = _dev_keys()
    if keys is None:
        print(
            "error: no dev key (run `make run` once); production tokens come from the "
            "platform's token issuer, not from this command",
            file=sys.stderr,
        )
        return 1
    scopes = args.scope or sorted(set(_COMMAND_SCOPES.values()))
    print(keys.mint(args.tenant, scopes, ttl_s=args.ttl, subject=args.subject))
    return 0


async def _client_command(args: argparse.Namespace) -> int:
    async with AuditLogClient(
        args.addr, token=_token_for(args), credentials=_credentials(args)
    ) as client:
        try:
            if args.command == "log":
                response = await client.log_event(_event_from_args(args))
                print(_as_json(response.event))
            elif args.command == "get":
                print(_as_json(await client.get_event(args.tenant, args.id)))
            elif args.command == "tail":
                await _tail(client, args)
            elif args.command == "verify":
                return await _verify(client, args)
            elif args.command == "export":
                return await _export(client, args)
            elif args.command == "retention":
                return await _retention(client, args)
            elif args.command == "keys":
                keys = await client.stub.GetVerificationKeys(
                    service_pb2.GetVerificationKeysRequest()
                )
                print(json_format.MessageToJson(keys, preserving_proto_field_name=True))
            elif args.command == "checkpoint":
                answer = await client.stub.GetCheckpoint(
                    service_pb2.GetCheckpointRequest(tenant_id=args.tenant)
                )
                if not answer.HasField("checkpoint"):
                    print("no checkpoint signed yet", file=sys.stderr)
                    return 1
                print(
                    json_format.MessageToJson(answer.checkpoint, preserving_proto_field_name=True)
                )
            elif args.command == "list":
                async for event in client.list_events(
                    args.tenant,
                    filter=_filter_from_args(args),
                    oldest_first=args.oldest_first,
                    limit=args.limit,
                ):
                    print(_as_json(event) if args.output == "jsonl" else _table_row(event))
        except AuditLogError as error:
            print(f"error: {error}", file=sys.stderr)
            for field, why in error.field_violations:
                print(f"  {field}: {why}", file=sys.stderr)
            return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="auditlog", description="auditlog service and client")
    commands = parser.add_subparsers(dest="command", required=True)

    serve_parser = commands.add_parser("serve", help="run the gRPC server")
    add_settings_arguments(serve_parser)

    def client_parser(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--addr", default=DEFAULT_ADDR, help="server host:port (AUDITLOG_ADDR)")
        sub.add_argument("--tls-ca", help="CA (PEM) of a TLS server (AUDITLOG_TLS_CA)")
        return sub

    log_parser = client_parser("log", "log one event")
    log_parser.add_argument("--json", help="the AuditEvent as proto JSON ('-' reads stdin)")
    log_parser.add_argument("--tenant")
    log_parser.add_argument("--user", help="acting tenant user id")
    log_parser.add_argument("--type", help="seed type string, e.g. START_CALL or CLICK")
    log_parser.add_argument("--data", help='payload as JSON, e.g. \'{"call_id": "c1"}\'')
    log_parser.add_argument("--id", help="idempotency key (default: a new UUID)")
    log_parser.add_argument("--session", help="co-browsing session id")
    log_parser.add_argument("--actor", default="customer", choices=["agent", "customer"])

    get_parser = client_parser("get", "show one event")
    get_parser.add_argument("--tenant", required=True)
    get_parser.add_argument("--id", required=True)

    tail_parser = client_parser(
        "tail", "follow a co-browsing session (or, without --session, the whole tenant) live"
    )
    tail_parser.add_argument("--tenant", required=True)
    tail_parser.add_argument("--session", help="the session (default: every event of the tenant)")
    tail_parser.add_argument("--from-now", action="store_true", help="skip the replay")
    tail_parser.add_argument("--cursor", help="resume after this cursor")
    tail_parser.add_argument("--type", action="append", help="seed type string (repeatable)")
    tail_parser.add_argument("--output", choices=["table", "jsonl"], default="table")
    tail_parser.add_argument(
        "--count", type=int, default=0, help="stop after this sequence (0: never)"
    )
    tail_parser.add_argument(
        "--max-retries", type=int, default=1_000_000, help="reconnects in a row before giving up"
    )
    tail_parser.add_argument("--quiet", action="store_true", help="no status lines on stderr")

    token_parser = commands.add_parser(
        "token", help="mint a dev token from the dev key of `make run` (never for production)"
    )
    token_parser.add_argument("--tenant", required=True, help='tenant id, or "*" for all')
    token_parser.add_argument(
        "--scope", action="append", help="scope (repeatable; default: read, write and tail)"
    )
    token_parser.add_argument("--ttl", type=float, default=3600.0, help="seconds (3600)")
    token_parser.add_argument("--subject", default="dev", help="the token's subject")

    verify_parser = client_parser(
        "verify", "verify a tenant's ledger: every hash, the chain, the signed checkpoints"
    )
    verify_parser.add_argument("--tenant", required=True)
    verify_parser.add_argument(
        "--keys", help="public keys file (`auditlog keys`): trust only these, not the server"
    )
    verify_parser.add_argument("--file", help="verify an export file (jsonl) offline instead")
    verify_parser.add_argument("--from", dest="from_sequence", type=int, default=0)
    verify_parser.add_argument("--to", dest="to_sequence", type=int, default=0)
    verify_parser.add_argument("--output", choices=["text", "json"], default="text")
    verify_parser.add_argument(
        "--witness",
        action="append",
        default=[],
        help="a checkpoint saved earlier with `auditlog checkpoint` (repeatable)",
    )

    export_parser = client_parser("export", "export a tenant's events in ledger order")
    export_parser.add_argument("--tenant", required=True)
    export_parser.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    export_parser.add_argument("--cursor", help="resume after this cursor")
    for name in ("--user", "--customer", "--call", "--session", "--since", "--until"):
        export_parser.add_argument(name)
    export_parser.add_argument("--type", action="append")
    export_parser.add_argument("--actor", choices=["agent", "customer"])

    retention_parser = client_parser("retention", "show (or set, with --days) a tenant's retention")
    retention_parser.add_argument("--tenant", required=True)
    retention_parser.add_argument(
        "--days", type=float, help="keep events this many days (0: forever)"
    )

    client_parser("keys", "print the public keys checkpoints are signed with (JSON)")
    checkpoint_parser = client_parser(
        "checkpoint",
        "print the tenant's newest signed checkpoint (JSON): keep it elsewhere, and verify "
        "--witness proves later that the ledger was not cut before it",
    )
    checkpoint_parser.add_argument("--tenant", required=True)

    list_parser = client_parser("list", "list events, newest first")
    list_parser.add_argument("--tenant", required=True)
    list_parser.add_argument("--type", action="append", help="seed type string (repeatable)")
    list_parser.add_argument("--user")
    list_parser.add_argument("--customer")
    list_parser.add_argument("--call")
    list_parser.add_argument("--session")
    list_parser.add_argument("--actor", choices=["agent", "customer"])
    list_parser.add_argument("--since", help="ISO time, inclusive")
    list_parser.add_argument("--until", help="ISO time, exclusive")
    list_parser.add_argument("--oldest-first", action="store_true")
    list_parser.add_argument("--limit", type=int, default=100)
    list_parser.add_argument("--output", choices=["table", "jsonl"], default="table")
    return parser


# Options whose values are opaque tokens: base64url, so one in 64 starts with "-".
_TOKEN_OPTIONS = ("--cursor",)


def joined_token_values(argv: list[str]) -> list[str]:
    """`--cursor X` as `--cursor=X`: argparse takes a value that starts with "-" for an option."""
    joined: list[str] = []
    arguments = iter(argv)
    for argument in arguments:
        if argument in _TOKEN_OPTIONS:
            value = next(arguments, None)
            joined.append(argument if value is None else f"{argument}={value}")
        else:
            joined.append(argument)
    return joined


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(joined_token_values(argv))
    # Set only in the processes a supervisor (workers.py) started.
    worker = os.environ.get(WORKER_ENV)
    supervisor_fd = os.environ.get(SUPERVISOR_FD_ENV)
    who = "" if worker is None else f"[worker {worker} pid %(process)d] "
    logging.basicConfig(
        level=os.environ.get("AUDITLOG_LOG_LEVEL", "INFO"),
        format=f"%(asctime)s %(levelname)s {who}%(name)s: %(message)s",
    )
    if args.command == "serve":
        try:
            settings = settings_from_args(args)
            if worker is None and settings.workers > 1:
                try:
                    sys.exit(supervise(settings, argv))
                except OSError as error:  # a port that cannot be reserved
                    sys.exit(f"auditlog serve: {error}")
            serving = serve(
                settings,
                worker=None if worker is None else int(worker),
                supervisor_fd=None if supervisor_fd is None else int(supervisor_fd),
            )
            run_on_loop(settings.event_loop, serving)
        except SettingsError as error:
            sys.exit(f"auditlog serve: {error}")
        return
    if args.command == "token":
        sys.exit(_mint(args))
    sys.exit(asyncio.run(_client_command(args)))
