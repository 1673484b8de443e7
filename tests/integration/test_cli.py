"""The `auditlog` command logs, gets and lists events against a running server."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from auditlog.v1 import audit_event_pb2, enums_pb2, payloads_pb2
from auditlog_service.devdb import free_port
from auditlog_service.server import RunningServer, start_server
from tests.conftest import sdk, settings_for_test, token

AUDITLOG = str(Path(sys.executable).with_name("auditlog"))
# The CLI reads its bearer token from AUDITLOG_TOKEN, as every SDK example does.
CLI_ENV = {**os.environ, "AUDITLOG_TOKEN": token()}


async def run_cli(server: RunningServer, *args: str, stdin: str = "") -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        AUDITLOG,
        *args,
        "--addr",
        f"127.0.0.1:{server.port}",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=CLI_ENV,
    )
    out, err = await process.communicate(stdin.encode())
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.asyncio
async def test_log_get_and_list_from_the_command_line(server: RunningServer) -> None:
    code, out, err = await run_cli(
        server, "log", "--tenant", "acme", "--user", "agent-7", "--type", "START_CALL",
        "--data", '{"call_id": "call-1", "customer_id": "cust-42"}',
    )  # fmt: skip
    assert code == 0, err
    call = json.loads(out)
    assert call["event_type"] == "EVENT_TYPE_START_CALL"
    assert call["start_call"] == {"call_id": "call-1", "customer_id": "cust-42"}

    click_json = json.dumps(
        {
            "tenant_id": "acme",
            "cobrowse": {"session_id": "cob-1", "actor": "ACTOR_CUSTOMER"},
            "click": {"element": {"name": "Buy now", "id": "buy"}},
        }
    )
    code, out, err = await run_cli(server, "log", "--json", "-", stdin=click_json)
    assert code == 0, err
    click = json.loads(out)
    assert click["sequence"] == "1"

    code, out, err = await run_cli(server, "get", "--tenant", "acme", "--id", call["id"])
    assert code == 0, err
    got = json.loads(out)
    # Read back, the event also has its place in the tenant's ledger (sequenced since).
    assert got.pop("ledger_sequence") == "1"
    assert len(got.pop("ledger_hash")) == 44  # 32 bytes in base64
    assert got == call

    code, out, err = await run_cli(server, "list", "--tenant", "acme", "--output", "jsonl")
    assert code == 0, err
    assert [json.loads(line)["id"] for line in out.splitlines()] == [click["id"], call["id"]]

    code, out, err = await run_cli(server, "list", "--tenant", "acme", "--type", "CLICK")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 1
    assert "Clicked on element" in lines[0]
    assert "cob-1#1" in lines[0]


@pytest.mark.asyncio
async def test_bad_input_prints_the_field_and_fails(server: RunningServer) -> None:
    code, out, err = await run_cli(
        server, "log", "--tenant", "acme", "--type", "START_CALL", "--data", "{}"
    )
    assert code == 1
    assert out == ""
    assert "INVALID_ARGUMENT" in err
    assert "event.start_call.call_id: required" in err


async def read_lines(stream: asyncio.StreamReader, count: int) -> list[str]:
    lines = []
    for _ in range(count):
        line = await asyncio.wait_for(stream.readline(), 60)
        assert line, "the tail command ended early"
        lines.append(line.decode())
    return lines


@pytest.mark.asyncio
async def test_tail_prints_events_live_and_keeps_going_across_a_server_restart(
    mongodb_uri: str, database_name: str
) -> None:
    port = free_port()
    settings = settings_for_test(mongodb_uri, database_name, listen=f"127.0.0.1:{port}")
    first = await start_server(settings)
    await first.ready()
    async with sdk(f"127.0.0.1:{port}") as writer:
        await writer.log_events([click(n) for n in range(3)])
    process = await asyncio.create_subprocess_exec(
        AUDITLOG, "tail", "--addr", f"127.0.0.1:{port}", "--tenant", "acme",
        "--session", "cob-9", "--output", "jsonl", "--count", "6", "--quiet",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=CLI_ENV,
    )  # fmt: skip
    assert process.stdout is not None
    lines = await read_lines(process.stdout, 3)
    await first.stop(grace_s=1.0)
    second = await start_server(settings)
    await second.ready()
    try:
        async with sdk(f"127.0.0.1:{port}") as writer:
            await writer.log_events([click(n) for n in range(3, 6)])
        lines += await read_lines(process.stdout, 3)
        assert await asyncio.wait_for(process.wait(), 60) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await second.stop(grace_s=1.0)
    assert [json.loads(line)["sequence"] for line in lines] == ["1", "2", "3", "4", "5", "6"]


@pytest.mark.asyncio
async def test_tail_says_it_is_live_when_replay_ends_on_an_idle_session(
    server: RunningServer,
) -> None:
    async with sdk(f"127.0.0.1:{server.port}") as writer:
        await writer.log_events([click(n) for n in range(2)])
    process = await asyncio.create_subprocess_exec(
        AUDITLOG, "tail", "--addr", f"127.0.0.1:{server.port}", "--tenant", "acme",
        "--session", "cob-9", "--output", "jsonl",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=CLI_ENV,
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        lines = await read_lines(process.stdout, 2)
        # Nothing else is written to the session: the marker must come from the end of replay.
        marker = await read_lines(process.stderr, 1)
    finally:
        process.kill()
        await process.wait()
    assert [json.loads(line)["sequence"] for line in lines] == ["1", "2"]
    assert marker == ["-- live (head 2) --\n"]


@pytest.mark.asyncio
async def test_the_table_shows_stored_text_without_terminal_escapes(server: RunningServer) -> None:
    code, out, err = await run_cli(
        server, "log", "--tenant", "acme", "--user", "agent-7", "--type", "STATUS_CHANGE",
        "--data", '{"customer_id": "c-1", "status": "Done \u202egnp.exe"}',
    )  # fmt: skip
    assert code == 0, err
    code, out, err = await run_cli(server, "list", "--tenant", "acme")
    assert code == 0, err
    assert "\u202e" not in out
    assert "\x1b" not in out


def click(number: int) -> audit_event_pb2.AuditEvent:
    return audit_event_pb2.AuditEvent(
        tenant_id="acme",
        cobrowse=audit_event_pb2.CobrowseContext(session_id="cob-9", actor=enums_pb2.ACTOR_AGENT),
        click=payloads_pb2.ClickAttributes(element=payloads_pb2.Element(id=f"el-{number}")),
    )
