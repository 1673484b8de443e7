"""`auditlog serve --workers 2`: one port, a killed worker restarted, SIGTERM stops them all."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from auditlog import bearer_interceptors
from auditlog.v1 import audit_event_pb2, service_pb2, service_pb2_grpc
from auditlog_service.devdb import free_port
from auditlog_service.workers import child_pids
from tests.conftest import EVENTS, token
from tests.integration.test_metrics import scrape, start_call, total
from tests.integration.test_tail import click
from tests.integration.test_tail_processes import (
    DEADLINE_S,
    StartService,
    start_service,  # noqa: F401 (a fixture: pytest looks for it in this module)
)


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Waits (bounded) until `condition` holds, polling."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while not condition():
        assert loop.time() < deadline, f"never: {what}"  # bound-ok: a deadline on a wait
        await asyncio.sleep(0.05)  # poll interval of a bounded wait on a process condition


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def log_on_new_connection(address: str, event: audit_event_pb2.AuditEvent) -> None:
    """LogEvent over a connection of its own: the kernel picks a worker per connection."""
    async with grpc.aio.insecure_channel(
        address,
        options=[("grpc.use_local_subchannel_pool", 1)],
        interceptors=bearer_interceptors(token()),
    ) as channel:
        stub = service_pb2_grpc.AuditLogServiceStub(channel)
        response = await stub.LogEvent(service_pb2.LogEventRequest(event=event), timeout=30)
        assert response.event.id


@pytest.mark.asyncio
async def test_a_killed_worker_is_restarted_and_sigterm_stops_every_worker(
    start_service: StartService,  # noqa: F811 (the fixture imported above)
    db: Any,
) -> None:
    metrics_port = free_port()
    service = await start_service("--workers", "2", "--metrics-listen", f"127.0.0.1:{metrics_port}")
    pid = service.process.pid
    await wait_until(lambda: len(child_pids(pid)) == 2, "two workers")
    first = child_pids(pid)

    logged = 0
    for number in range(6):
        await log_on_new_connection(service.address, start_call(number))
        logged += 1
    await log_on_new_connection(service.address, click(1))
    logged += 1

    victim = first[1]
    os.kill(victim, signal.SIGKILL)
    await wait_until(lambda: not alive(victim), "the killed worker reaped")
    await wait_until(
        lambda: len(child_pids(pid)) == 2 and victim not in child_pids(pid),
        "a new worker in the killed one's place",
    )
    (replacement,) = set(child_pids(pid)) - set(first)

    # Calls go on meanwhile; new connections are spread over the workers by the kernel, so the
    # replacement answers some once it listens (its lines in the access log say so).
    answered_by_replacement = re.compile(rf"pid {replacement}\] auditlog\.access: .*\"LogEvent\"")
    number = 100
    while not answered_by_replacement.search(service.log_tail(100_000)):
        assert service.process.returncode is None, service.log_tail()
        number += 1
        await log_on_new_connection(service.address, start_call(number))
        logged += 1

    # Every acknowledged event is stored once, and the metrics, summed over the workers (the
    # killed one included), counted each.
    assert await db.events.count_documents(EVENTS) == logged
    samples = await asyncio.to_thread(scrape, metrics_port)
    assert total(samples, "auditlog_events_stored_total") == logged
    assert total(samples, "auditlog_events_stored_total", type="CLICK") == 1
    assert total(samples, "auditlog_rpcs_total", method="LogEvent", code="OK") == logged
    assert total(samples, "auditlog_worker_restarts_total") == 1
    assert re.search(
        rf"worker \d \(pid {victim}\) was killed by SIGKILL", service.log_tail(100_000)
    )

    workers = child_pids(pid)
    assert await service.stop() == 0, service.log_tail()
    for worker in [*first, *workers]:
        assert not alive(worker), f"worker {worker} outlived its supervisor"
