"""The `auditlog` command logs, gets and lists events against a running server."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from auditlog_service.server import RunningServer

AUDITLOG = str(Path(sys.executable).with_name("auditlog"))


async def run_cli(server: RunningServer, *args: str, stdin: str = "") -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        AUDITLOG,
        *args,
        "--addr",
        f"127.0.0.1:{server.port}",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
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
    assert json.loads(out) == call

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
