"""The `auditlog` command: serve, and log/get/list events against a running server."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
from google.protobuf import json_format

from auditlog import AuditLogClient, AuditLogError
from auditlog.v1 import audit_event_pb2, enums_pb2, service_pb2

from .config import SettingsError, add_settings_arguments, settings_from_args
from .devdb import PROJECT_ROOT
from .devkeys import DevKeys
from .event_types import REGISTRY
from .server import serve
from .textsafety import terminal_safe

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

    tail = client.tail_session(
        args.tenant,
        args.session,
        cursor=args.cursor or "",
        from_now=args.from_now,
        event_types=types,
        # Keep going across server restarts: a console watching a session should not give up.
        max_retries=args.max_retries,
        on_caught_up=announce_live,
    )
    async for event in tail:
        print(_as_json(event) if args.output == "jsonl" else _table_row(event), flush=True)
        if args.count and tail.last_sequence >= args.count:
            break


# The scope each client command needs, for a dev token minted on the fly.
_COMMAND_SCOPES = {"log": "events:write", "get": "events:read", "list": "events:read",
                   "tail": "sessions:tail"}  # fmt: skip


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
    return keys.mint(tenant, [_COMMAND_SCOPES[args.command]], ttl_s=3600, subject="auditlog-cli")


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

    tail_parser = client_parser("tail", "follow a co-browsing session live, one line per event")
    tail_parser.add_argument("--tenant", required=True)
    tail_parser.add_argument("--session", required=True)
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


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("AUDITLOG_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "serve":
        try:
            asyncio.run(serve(settings_from_args(args)))
        except SettingsError as error:
            sys.exit(f"auditlog serve: {error}")
        return
    if args.command == "token":
        sys.exit(_mint(args))
    sys.exit(asyncio.run(_client_command(args)))
