"""The gRPC (grpc.aio) transport of AuditLogService: a thin adapter over rpcs.AuditLogRpcs.

Per call: decode the request leniently (undecodable bytes become INVALID_ARGUMENT with details,
not a bare UNKNOWN), let the CallGuard check the caller, run the RPC, and end with the status of
any AuditLogError, its google.rpc details, and a tail's cursor as a trailer.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError
from grpc_status import rpc_status

from auditlog.v1 import service_pb2

from . import metrics
from .access import Call, CallGuard, failure_code
from .error_details import CURSOR_TRAILER, to_status
from .errors import AuditLogError, SlowConsumer
from .responses import SerializedResponse, response_bytes
from .rpcs import AuditLogRpcs, UnparsableRequest

Context = grpc.aio.ServicerContext[Any, Any]

SERVICE = service_pb2.DESCRIPTOR.services_by_name["AuditLogService"]


@dataclass(frozen=True)
class _Status(grpc.Status):
    """A grpc.Status with extra trailing metadata (the tail's resume cursor)."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


async def abort(context: Context, error: AuditLogError) -> NoReturn:
    """Ends the call with the error's status; a tail's cursor also goes in the trailers."""
    status = rpc_status.to_status(to_status(error))
    trailers = tuple(status.trailing_metadata)
    cursor = error.metadata.get("cursor", "")
    if cursor:
        trailers += ((CURSOR_TRAILER, cursor),)
    # abort_with_status exists on grpc.aio contexts; the grpc-stubs package predates it.
    await context.abort_with_status(  # type: ignore[attr-defined]
        _Status(status.code, status.details, trailers)
    )
    raise AssertionError("abort_with_status returned")  # pragma: no cover


def _lenient_parser(message_class: Any) -> Callable[[bytes], Any]:
    """A request deserializer that hands undecodable bytes to the handler instead of failing:
    gRPC answers a deserializer exception with a bare UNKNOWN."""

    def parse(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except DecodeError as exc:
            return UnparsableRequest(message_class.DESCRIPTOR.full_name, str(exc))

    return parse


async def _drain(requests: AsyncIterator[Any], limit_s: float = 1.0, most: int = 1000) -> None:
    """Reads and drops what a refused client still sends, up to a bound."""
    read = 0
    with contextlib.suppress(TimeoutError, grpc.aio.AioRpcError):
        async with asyncio.timeout(limit_s):
            async for _ in requests:
                read += 1
                if read >= most:
                    return


def rpc_name(method: str) -> str:
    """The AuditLogRpcs method of a contract method: LogEvents -> log_events."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", method).lower()


def _authorization(context: Context) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


class GrpcTransport:
    """The generic RPC handler of AuditLogService for a grpc.aio server."""

    def __init__(
        self, rpcs: AuditLogRpcs, guard: CallGuard, *, slow_consumer_timeout_s: float
    ) -> None:
        self._rpcs = rpcs
        self._guard = guard
        self._slow_consumer_timeout_s = slow_consumer_timeout_s

    async def _begin(self, method: str, peer: str, context: Context) -> Call:
        return await self._guard.begin(
            method, _authorization(context), peer, context.time_remaining()
        )

    async def _refuse(
        self,
        context: Context,
        error: AuditLogError,
        method: str,
        call: Call | None,
        peer: str,
        started: float | None = None,
    ) -> NoReturn:
        """Ends the call with the error's status, its access-log line written first: a client
        that looks for the line once it has the status finds it."""
        self._guard.finish(method, call, peer, failure_code(error), started)
        await abort(context, error)

    def _unary(
        self, method: str, run: Callable[[Call, Any], Awaitable[Any]]
    ) -> Callable[[Any, Context], Awaitable[Any]]:
        async def handle(request: Any, context: Context) -> Any:
            call: Call | None = None
            refused = False
            started = time.monotonic()
            peer = context.peer()
            try:
                # The caller first: an unauthenticated request is refused unread.
                call = await self._begin(method, peer, context)
                if isinstance(request, UnparsableRequest):
                    raise request.as_error()
                return await run(call, request)
            except AuditLogError as error:
                refused = True
                await self._refuse(context, error, method, call, peer, started)
            finally:
                if not refused:
                    self._guard.finish(method, call, peer, "OK", started)

        return handle

    async def _stream_events(
        self, requests: AsyncIterator[Any], context: Context
    ) -> AsyncIterator[SerializedResponse]:
        call: Call | None = None
        code: str | None = "OK"  # None: the line is written (_refuse)
        # Read now: after a client's cancel, context.peer() in the finally below crashes the
        # grpcio 1.85 aio server (a segfault; tests/integration/test_cancelled_calls.py).
        peer = context.peer()
        try:
            try:
                call = await self._begin("StreamEvents", peer, context)
            except AuditLogError:
                # Refused before anything was read: let a producer that is still sending finish
                # (briefly) first, since ending a call during a client's write makes some gRPC
                # client libraries report INTERNAL instead of the status.
                await _drain(requests)
                raise
            async for response in self._rpcs.stream_events(call, requests):
                yield response
        except AuditLogError as error:
            code = None
            await self._refuse(context, error, "StreamEvents", call, peer)
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        finally:
            if code is not None:
                self._guard.finish("StreamEvents", call, peer, code)

    async def _server_stream(self, method: str, request: Any, context: Context) -> None:
        # Written with context.write, not yield, so that a write that blocks on a client that
        # does not read can be bounded in time.
        call: Call | None = None
        code: str | None = "OK"  # None: the line is written (_refuse)
        cursor = ""
        peer = context.peer()  # not in the finally: see _stream_events
        try:
            call = await self._begin(method, peer, context)
            if isinstance(request, UnparsableRequest):
                raise request.as_error()
            async for response in getattr(self._rpcs, rpc_name(method))(call, request):
                try:
                    # asyncio.timeout, not wait_for: no task per write (a thousand idle tails
                    # each write a heartbeat per interval).
                    async with asyncio.timeout(self._slow_consumer_timeout_s):
                        await context.write(response)
                except TimeoutError:
                    error = SlowConsumer(
                        "the client did not read for "
                        f"{self._slow_consumer_timeout_s:g}s; resume from the cursor"
                    )
                    if cursor:
                        error.metadata["cursor"] = cursor
                    metrics.slow_consumer_ended(method)
                    raise error from None
                if response.DESCRIPTOR.fields_by_name.get("cursor") is not None:
                    cursor = response.cursor
        except AuditLogError as error:
            code = None
            await self._refuse(context, error, method, call, peer)
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        finally:
            if code is not None:
                self._guard.finish(method, call, peer, code)

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        rpcs = self._rpcs
        methods = {m.name: m for m in SERVICE.methods}
        # Responses go through response_bytes: some RPCs answer with bytes they put together.
        serialize = response_bytes

        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        # Every method of the contract, by kind; the RPC itself is rpcs.<snake_case name>.
        for name, method in methods.items():
            parse = _lenient_parser(getattr(service_pb2, method.input_type.name))
            if method.client_streaming:
                handlers[name] = grpc.stream_stream_rpc_method_handler(
                    self._stream_events, request_deserializer=parse, response_serializer=serialize
                )
            elif method.server_streaming:
                # A coroutine function, so grpc.aio treats the handler as one that writes itself.
                async def stream(request: Any, context: Context, name: str = name) -> None:
                    await self._server_stream(name, request, context)

                handlers[name] = grpc.unary_stream_rpc_method_handler(
                    stream, request_deserializer=parse, response_serializer=serialize
                )
            else:
                run: Callable[[Call, Any], Awaitable[Any]] = getattr(rpcs, rpc_name(name))
                handlers[name] = grpc.unary_unary_rpc_method_handler(
                    self._unary(name, run),
                    request_deserializer=parse,
                    response_serializer=serialize,
                )
        return grpc.method_handlers_generic_handler(SERVICE.full_name, handlers)
