"""The browser transport of AuditLogService: Connect, gRPC-Web and gRPC over HTTP, a thin adapter.

The `connectrpc` ASGI application speaks the three protocols; this module maps every method of the
service descriptor to the AuditLogRpcs method of the same name (snake_case), so an RPC added there
is served here without a change. Per call, as on the gRPC port: the CallGuard checks the caller
before the request body is read, undecodable requests become INVALID_ARGUMENT with a BadRequest,
an AuditLogError ends the call with its google.rpc details (Connect error details, or
grpc-status-details-bin), a tail's cursor is also sent as the `auditlog-cursor` trailer, and one
access-log line is written. The same port serves the web console's static files and answers CORS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
import re
import socket
import ssl
import time
import weakref
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    MutableMapping,
)
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import grpc
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.method import IdempotencyLevel, MethodInfo, StreamType
from connectrpc.request import RequestContext
from connectrpc.server import ConnectASGIApplication, Endpoint
from google.protobuf import json_format
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass
from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig
from protobuf.wkt import Any as WireAny

from auditlog.v1 import service_pb2

from . import metrics
from .access import Call, CallGuard
from .config import TlsFiles
from .error_details import CURSOR_TRAILER, to_status
from .errors import AuditLogError
from .responses import SerializedResponse, response_bytes, response_message
from .rpcs import AuditLogRpcs, UnparsableRequest

log = logging.getLogger(__name__)

SERVICE = service_pb2.DESCRIPTOR.services_by_name["AuditLogService"]
RPC_PREFIX = f"/{SERVICE.full_name}/"

Scope = MutableMapping[str, Any]
Message_ = dict[str, Any]
Receive = Callable[[], Awaitable[Message_]]
Send = Callable[[Message_], Awaitable[None]]

# Request headers a browser may send cross-origin: the Connect and gRPC-Web protocol headers and the
# bearer token. Response headers and trailers it may read: the gRPC status and our tail cursor.
CORS_ALLOWED_HEADERS = (
    "authorization, content-type, connect-protocol-version, connect-timeout-ms, "
    "connect-accept-encoding, connect-content-encoding, content-encoding, accept-encoding, "
    "grpc-timeout, x-grpc-web, x-user-agent"
)
CORS_EXPOSED_HEADERS = (
    "grpc-status, grpc-message, grpc-status-details-bin, content-encoding, "
    f"connect-content-encoding, {CURSOR_TRAILER}, trailer-{CURSOR_TRAILER}"
)
CORS_MAX_AGE_S = 7200

# The console is same-origin JavaScript and CSS only: anything else (inline script, another
# origin's script, framing) has no business on this page, which holds a bearer token.
CONSOLE_SECURITY_HEADERS = (
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
        b"frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)

CONSOLE_NOT_BUILT = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Audit log console not built</title></head>
<body><h1>The audit log console is not built</h1>
<p>Build it once with <code>make setup</code> (or <code>cd console &amp;&amp; npm ci &amp;&amp;
npm run build</code>), then reload this page. The RPCs on this port work without it.</p>
</body></html>
"""


def snake_case(name: str) -> str:
    """`TailSession` -> `tail_session`: the AuditLogRpcs method of an RPC."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _connect_code(code: grpc.StatusCode) -> Code:
    return Code.CANCELED if code == grpc.StatusCode.CANCELLED else Code[code.name]


def _grpc_code_name(code: Code) -> str:
    """The access log names codes as gRPC does on the other port."""
    return "CANCELLED" if code == Code.CANCELED else code.name


def to_connect_error(error: AuditLogError) -> ConnectError:
    """The same google.rpc details as on the gRPC port, as Connect error details (passed through
    as Any: the bytes are google.protobuf's, connectrpc only frames them)."""
    status = to_status(error)
    details = [WireAny(type_url=d.type_url, value=d.value) for d in status.details]
    return ConnectError(_connect_code(error.code), error.message, details)


def _protocol(ctx: RequestContext[Any, Any]) -> str:
    content_type = ctx.request_headers.get("content-type", "")
    if content_type.startswith("application/grpc-web"):
        return "grpc-web"
    if content_type.startswith("application/grpc"):
        return "grpc"
    return "connect"


def _peer(ctx: RequestContext[Any, Any]) -> str:
    """The client address in the form the gRPC port logs it (ipv4:host:port, ipv6:[host]:port)."""
    address = ctx.client_address
    if not address:
        return "unknown"
    host, _, port = address.rpartition(":")
    return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{address}"


# ---- codecs ------------------------------------------------------------------------------------


class _LenientBinaryCodec:
    """google.protobuf binary; undecodable bytes reach the handler as UnparsableRequest, so the
    caller is answered INVALID_ARGUMENT with a BadRequest (after its token was checked)."""

    def name(self) -> str:
        return "proto"

    def encode(self, message: Message | SerializedResponse) -> bytes:
        return response_bytes(message)

    def decode(self, data: bytes | bytearray, message_class: type[Any]) -> Any:
        try:
            return message_class.FromString(bytes(data))
        except DecodeError as exc:
            return UnparsableRequest(message_class.DESCRIPTOR.full_name, str(exc))


class _LenientJsonCodec:
    """The protobuf JSON mapping (what `curl -d '{...}'` sends). Unknown fields are refused: a
    misspelt filter field would otherwise be dropped silently and widen the query."""

    def name(self) -> str:
        return "json"

    def encode(self, message: Message | SerializedResponse) -> bytes:
        return json_format.MessageToJson(response_message(message), indent=None).encode()

    def decode(self, data: bytes | bytearray, message_class: type[Any]) -> Any:
        message = message_class()
        try:
            json_format.Parse(bytes(data).decode("utf-8") or "{}", message)
        except (json_format.ParseError, ValueError) as exc:
            return UnparsableRequest(message_class.DESCRIPTOR.full_name, str(exc))
        return message


# ---- the RPCs ----------------------------------------------------------------------------------


@dataclass
class _CallStart:
    """What on_start hands to on_end: the call (None when refused) and when it began."""

    method: str
    call: Call | None
    peer: str
    protocol: str
    started: float


class _ClientNotReading(TimeoutError):
    """A stream's write waited longer than the slow-consumer bound: the client stopped reading."""


class _CallGuardInterceptor:
    """Checks the caller before the request body is read (a connectrpc metadata interceptor) and
    writes the access-log line when the call ends."""

    def __init__(self, guard: CallGuard, calls: weakref.WeakKeyDictionary[Any, Call]) -> None:
        self._guard = guard
        self._calls = calls

    async def on_start(self, ctx: RequestContext[Any, Any]) -> _CallStart:
        method = ctx.method.name
        start = _CallStart(method, None, _peer(ctx), _protocol(ctx), time.monotonic())
        timeout_ms = ctx.timeout_ms
        try:
            start.call = await self._guard.begin(
                method,
                ctx.request_headers.get("authorization"),
                start.peer,
                None if timeout_ms is None else timeout_ms / 1000,
            )
        except AuditLogError as error:
            # on_end is not called for a refused start: its log line is written here.
            self._guard.finish(
                method, None, start.peer, error.code.name, start.started, protocol=start.protocol
            )
            raise to_connect_error(error) from None
        self._calls[ctx] = start.call
        return start

    async def on_end(
        self, start: _CallStart, ctx: RequestContext[Any, Any], error: Exception | None, /
    ) -> None:
        if error is None:
            code = "OK"
        elif isinstance(error, ConnectError):
            code = _grpc_code_name(error.code)
        elif isinstance(error, _ClientNotReading):
            code = "RESOURCE_EXHAUSTED"
            metrics.slow_consumer_ended(start.method)
        else:
            code = "UNKNOWN"
        self._guard.finish(
            start.method, start.call, start.peer, code, start.started, protocol=start.protocol
        )


class _AuditLogConnectApp(ConnectASGIApplication[object]):
    """connectrpc's ASGI application with an endpoint per method of the service descriptor."""

    @property
    def path(self) -> str:
        return f"/{SERVICE.full_name}"


class ConnectTransport:
    """The endpoints of AuditLogService for connectrpc, each a thin call into AuditLogRpcs."""

    def __init__(self, rpcs: AuditLogRpcs, guard: CallGuard, *, read_max_bytes: int) -> None:
        self._rpcs = rpcs
        self._calls: weakref.WeakKeyDictionary[Any, Call] = weakref.WeakKeyDictionary()
        self._app = _AuditLogConnectApp(
            service=object(),
            endpoints=lambda _: self._endpoints(),
            interceptors=[_CallGuardInterceptor(guard, self._calls)],
            read_max_bytes=read_max_bytes,
            codecs=[_LenientBinaryCodec(), _LenientJsonCodec()],
        )

    @property
    def app(self) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
        return cast("Callable[[Scope, Receive, Send], Awaitable[None]]", self._app)

    def _call(self, ctx: RequestContext[Any, Any]) -> Call:
        return self._calls.pop(ctx)

    def _endpoints(self) -> Mapping[str, Any]:
        endpoints: dict[str, Any] = {}
        for method in SERVICE.methods:
            run = getattr(self._rpcs, snake_case(method.name), None)
            if run is None:
                continue  # in the contract but not implemented yet: 404, which is UNIMPLEMENTED
            endpoints[f"/{SERVICE.full_name}/{method.name}"] = self._endpoint(method, run)
        return endpoints

    def _endpoint(self, method: MethodDescriptor, run: Callable[..., Any]) -> Any:
        streams_in, streams_out = method.client_streaming, method.server_streaming
        stream_type = {
            (False, False): StreamType.UNARY,
            (False, True): StreamType.SERVER_STREAM,
            (True, False): StreamType.CLIENT_STREAM,
            (True, True): StreamType.BIDI_STREAM,
        }[(streams_in, streams_out)]
        idempotency = {
            method.GetOptions().NO_SIDE_EFFECTS: IdempotencyLevel.NO_SIDE_EFFECTS,
            method.GetOptions().IDEMPOTENT: IdempotencyLevel.IDEMPOTENT,
        }.get(method.GetOptions().idempotency_level, IdempotencyLevel.UNKNOWN)
        info: MethodInfo[Any, Any] = MethodInfo(
            name=method.name,
            service_name=SERVICE.full_name,
            # From the descriptor, not service_pb2: a message may live in any file of the contract.
            input=GetMessageClass(method.input_type),
            output=GetMessageClass(method.output_type),
            idempotency_level=idempotency,
            stream_type=stream_type,
        )
        if stream_type is StreamType.UNARY:
            return Endpoint.unary(info, self._unary(run))
        if stream_type is StreamType.SERVER_STREAM:
            return Endpoint.server_stream(info, self._server_stream(run))
        if stream_type is StreamType.CLIENT_STREAM:
            return Endpoint.client_stream(info, self._client_stream(run))
        return Endpoint.bidi_stream(info, self._bidi_stream(run))

    def _unary(
        self, run: Callable[[Call, Any], Awaitable[Any]]
    ) -> Callable[[Any, RequestContext[Any, Any]], Awaitable[Any]]:
        async def handle(request: Any, ctx: RequestContext[Any, Any]) -> Any:
            call = self._call(ctx)
            with _errors_as_connect(ctx):
                if isinstance(request, UnparsableRequest):
                    raise request.as_error()
                return await run(call, request)

        return handle

    def _server_stream(
        self, run: Callable[[Call, Any], AsyncGenerator[Any, None]]
    ) -> Callable[[Any, RequestContext[Any, Any]], AsyncIterator[Any]]:
        async def handle(request: Any, ctx: RequestContext[Any, Any]) -> AsyncIterator[Any]:
            call = self._call(ctx)
            with _errors_as_connect(ctx):
                if isinstance(request, UnparsableRequest):
                    raise request.as_error()
                # Closed explicitly: connectrpc closes this generator at its yield when the
                # client goes away, and the RPC's own cleanup (a tail slot) must run then.
                async with contextlib.aclosing(run(call, request)) as responses:
                    async for response in responses:
                        yield response

        return handle

    def _client_stream(
        self, run: Callable[[Call, AsyncIterator[Any]], Awaitable[Any]]
    ) -> Callable[[AsyncIterator[Any], RequestContext[Any, Any]], Awaitable[Any]]:
        async def handle(requests: AsyncIterator[Any], ctx: RequestContext[Any, Any]) -> Any:
            call = self._call(ctx)
            with _errors_as_connect(ctx):
                return await run(call, requests)

        return handle

    def _bidi_stream(
        self, run: Callable[[Call, AsyncIterator[Any]], AsyncGenerator[Any, None]]
    ) -> Callable[[AsyncIterator[Any], RequestContext[Any, Any]], AsyncIterator[Any]]:
        async def handle(
            requests: AsyncIterator[Any], ctx: RequestContext[Any, Any]
        ) -> AsyncIterator[Any]:
            call = self._call(ctx)
            with _errors_as_connect(ctx):
                async with contextlib.aclosing(run(call, requests)) as responses:
                    async for response in responses:
                        yield response

        return handle


@contextlib.contextmanager
def _errors_as_connect(ctx: RequestContext[Any, Any]) -> Any:
    """AuditLogErrors as Connect errors with details (and a tail's cursor as a trailer); any
    other failure is INTERNAL without its text, which is for the server's log only."""
    try:
        yield
    except AuditLogError as error:
        cursor = error.metadata.get("cursor", "")
        if cursor:
            ctx.response_trailers[CURSOR_TRAILER] = cursor
        raise to_connect_error(error) from None
    except ConnectError:
        raise
    except Exception:
        log.exception("%s failed", ctx.method.name)
        raise ConnectError(Code.INTERNAL, "internal error") from None


# ---- the HTTP application: RPCs, CORS, the console ---------------------------------------------


class BrowserApp:
    """The ASGI application of the HTTP port: the RPCs (with CORS for allowed origins) and the
    console's static files at `/`."""

    def __init__(
        self,
        rpc_app: Callable[[Scope, Receive, Send], Awaitable[None]],
        *,
        console_dir: Path,
        cors_origins: Iterable[str] = (),
        slow_consumer_timeout_s: float = 10.0,
        drain_limit_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self._rpc_app = rpc_app
        self._drain_limit_bytes = drain_limit_bytes
        self._console_dir = console_dir
        self._cors_origins = frozenset(o.strip().rstrip("/") for o in cors_origins if o.strip())
        self._slow_consumer_timeout_s = slow_consumer_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # no websockets here
        path: str = scope["path"]
        if path.startswith(RPC_PREFIX):
            await self._rpc(scope, receive, send)
        else:
            await self._console(scope, send)

    @staticmethod
    async def _lifespan(receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- RPCs

    def _allowed_origin(self, scope: Scope) -> str | None:
        origin = _header(scope, b"origin")
        if origin is None:
            return None
        if "*" in self._cors_origins or origin in self._cors_origins:
            return origin
        return None

    async def _rpc(self, scope: Scope, receive: Receive, send: Send) -> None:
        origin = self._allowed_origin(scope)
        if scope["method"] == "OPTIONS":
            await self._preflight(scope, origin, send)
            return
        cors: list[tuple[bytes, bytes]] = []
        if origin is not None:
            cors = [
                (b"access-control-allow-origin", origin.encode()),
                (b"access-control-expose-headers", CORS_EXPOSED_HEADERS.encode()),
                (b"vary", b"origin"),
            ]

        body_read = False

        async def receive_rpc() -> Message_:
            nonlocal body_read
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_read = True
            return message

        async def send_rpc(message: Message_) -> None:
            if message["type"] == "http.response.start" and cors:
                message = {**message, "headers": [*message.get("headers", ()), *cors]}
            if message["type"] == "http.response.body" and message.get("more_body"):
                # A stream message: a client that stops reading must not hold its call (and a
                # tail slot) forever. The tail resumes from the cursor it last received.
                try:
                    async with asyncio.timeout(self._slow_consumer_timeout_s):
                        await send(message)
                except TimeoutError:
                    raise _ClientNotReading(
                        f"the client did not read for {self._slow_consumer_timeout_s:g}s"
                    ) from None
                return
            if message["type"] == "http.response.body" and not body_read:
                # Refused before its body was read (no valid token): read what the client is
                # still sending, briefly, before the answer ends. An HTTP/1.1 server closes a
                # connection whose request is unfinished when the response ends, and a reset
                # under a client's write is reported as a network error instead of the status.
                await _drain_body(receive_rpc, self._drain_limit_bytes)
            await send(message)

        # A client that stopped reading was logged RESOURCE_EXHAUSTED; its connection is closed.
        with contextlib.suppress(_ClientNotReading):
            await self._rpc_app(scope, receive_rpc, send_rpc)

    async def _preflight(self, scope: Scope, origin: str | None, send: Send) -> None:
        if origin is None:
            # Not an allowed origin: no CORS headers, so the browser refuses the call.
            await _respond(send, 403, b"origin not allowed\n", b"text/plain; charset=utf-8")
            return
        headers = [
            (b"access-control-allow-origin", origin.encode()),
            (b"access-control-allow-methods", b"POST, GET"),
            (b"access-control-allow-headers", CORS_ALLOWED_HEADERS.encode()),
            (b"access-control-max-age", str(CORS_MAX_AGE_S).encode()),
            (b"vary", b"origin, access-control-request-method, access-control-request-headers"),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    # -- the console

    def _console_file(self, path: str) -> Path | None:
        """The file of dist/ a URL path names: `/` is index.html, `/assets/*` the bundle."""
        if path in ("/", "/index.html"):
            relative = "index.html"
        elif path.startswith("/assets/") and "/" not in path[len("/assets/") :]:
            name = path[len("/assets/") :]
            if not name or name.startswith(".") or "\\" in name or "\x00" in name:
                return None
            relative = f"assets/{name}"
        else:
            return None
        file = self._console_dir / relative
        return file if file.is_file() else None

    async def _console(self, scope: Scope, send: Send) -> None:
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            await _respond(send, 405, b"method not allowed\n", b"text/plain; charset=utf-8")
            return
        path: str = scope["path"]
        file = self._console_file(path)
        if file is None:
            if path in ("/", "/index.html") and not (self._console_dir / "index.html").is_file():
                body = CONSOLE_NOT_BUILT
                await _respond(
                    send, 200, body, b"text/html; charset=utf-8", CONSOLE_SECURITY_HEADERS,
                    head=method == "HEAD",
                )  # fmt: skip
                return
            await _respond(send, 404, b"not found\n", b"text/plain; charset=utf-8")
            return
        content_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        if content_type.startswith("text/") or content_type.endswith("javascript"):
            content_type += "; charset=utf-8"
        # Bundle files have content hashes in their names; index.html must be fetched anew.
        cache = (
            b"public, max-age=31536000, immutable" if path.startswith("/assets/") else b"no-cache"
        )
        await _respond(
            send,
            200,
            file.read_bytes(),
            content_type.encode(),
            (*CONSOLE_SECURITY_HEADERS, (b"cache-control", cache)),
            head=method == "HEAD",
        )


async def _drain_body(receive: Receive, limit_bytes: int, limit_s: float = 1.0) -> None:
    """Reads and drops the rest of a request body, up to a size and a time."""
    read = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(limit_s):
            while read <= limit_bytes:
                message = await receive()
                if message["type"] != "http.request":
                    return
                read += len(message.get("body", b""))
                if not message.get("more_body", False):
                    return


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return cast("bytes", value).decode("latin-1")
    return None


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    headers: Iterable[tuple[bytes, bytes]] = (),
    *,
    head: bool = False,
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"" if head else body})


# ---- the server --------------------------------------------------------------------------------


class BrowserServer:
    """The HTTP port on hypercorn (HTTP/1.1, and HTTP/2 with TLS or h2c for gRPC), in the same
    event loop as the gRPC server."""

    def __init__(self, app: BrowserApp, listen: str, tls: TlsFiles | None = None) -> None:
        self._app = app
        self._listen = listen
        self._tls = tls
        self._shutdown = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._config = HypercornConfig()
        self.port = 0

    def bind(self, *, reuse_port: bool = False) -> int:
        """Binds the port now (so that a busy port fails start-up at once); returns it.
        With `reuse_port`, workers of one supervisor share it (SO_REUSEPORT)."""
        host, _, port = self._listen.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((host, int(port)))
            # Listening from here on: a client connecting before the server task runs waits in
            # the backlog instead of being refused.
            sock.listen(1024)
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        config = self._config
        config.bind = [f"fd://{sock.detach()}"]
        config.accesslog = None  # the RPCs have their own access log
        config.errorlog = logging.getLogger("auditlog.http")
        config.include_server_header = False
        if self._tls is not None:
            config.certfile = self._tls.cert
            config.keyfile = self._tls.key
            if self._tls.client_ca:
                config.ca_certs = self._tls.client_ca
                config.verify_mode = ssl.CERT_REQUIRED
        return self.port

    def start(self) -> None:
        if not self.port:
            self.bind()
        self._task = asyncio.create_task(
            serve(self._app, self._config, shutdown_trigger=self._shutdown.wait),  # type: ignore[arg-type]
            name="http-server",
        )

    async def stop(self, grace_s: float) -> None:
        """Stops accepting, lets calls in flight finish for up to `grace_s`, then cancels them."""
        if self._task is None:
            return
        self._config.graceful_timeout = grace_s
        self._shutdown.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None


def default_console_dir() -> Path:
    """console/dist of the repository this package runs from."""
    return Path(__file__).resolve().parents[2] / "console" / "dist"
