"""The access-log line: the JSON that json.dumps makes of its fields, whatever they hold."""

from __future__ import annotations

import json
import logging
import re
import time

import pytest

from auditlog_service.access import Call, CallGuard, TenantLimits, _utc_stamp
from auditlog_service.auth import Principal


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "auditlog.access"]


@pytest.mark.parametrize(
    ("peer", "subject", "tenant", "protocol", "stored", "returned"),
    [
        ("ipv4:127.0.0.1:5555", "svc-ingest", "acme", "", 1, 0),
        ('ipv6:[::1]:1"\\x', 'a "quoted"\nsubject \u00e9\u4e2d', "t\u00fcrkiye", "grpc-web", 0, 7),
        ("unix:/tmp/s", "", "", "connect", 1000, 20),
    ],
)
def test_a_line_is_the_json_of_its_fields_in_order(
    caplog: pytest.LogCaptureFixture,
    peer: str,
    subject: str,
    tenant: str,
    protocol: str,
    stored: int,
    returned: int,
) -> None:
    guard = CallGuard(None, TenantLimits())  # type: ignore[arg-type]  # finish verifies nothing
    principal = Principal(subject, "*", frozenset({"write"}), 2e9)
    call = Call("LogEvents", principal, peer, started=time.monotonic() - 0.0123)
    call.tenant, call.events_stored, call.events_returned = tenant, stored, returned
    with caplog.at_level(logging.INFO, logger="auditlog.access"):
        guard.finish("LogEvents", call, peer, "OK", protocol=protocol)
    [line] = access_lines(caplog)
    fields = json.loads(line)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", fields["time"])
    assert fields["duration_ms"] >= 12.3  # bound-ok: it began 12.3 ms before; not a speed goal
    expected = {
        "time": fields["time"],
        "peer": peer,
        "method": "LogEvents",
        "code": "OK",
        "duration_ms": fields["duration_ms"],
        **({"protocol": protocol} if protocol else {}),
        "subject": subject,
        "token_tenant": "*",
        "tenant": tenant,
        **({"events_stored": stored} if stored else {}),
        **({"events_returned": returned} if returned else {}),
    }
    assert line == json.dumps(expected, separators=(",", ":"))


def test_a_refused_call_without_a_caller_has_no_caller_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    guard = CallGuard(None, TenantLimits())  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="auditlog.access"):
        guard.finish("GetEvent", None, "ipv4:10.0.0.1:1", "UNAUTHENTICATED", time.monotonic())
    [line] = access_lines(caplog)
    assert list(json.loads(line)) == ["time", "peer", "method", "code", "duration_ms"]


def test_no_line_when_the_access_log_is_off_or_below_the_level(
    caplog: pytest.LogCaptureFixture,
) -> None:
    off = CallGuard(None, TenantLimits(), access_log=False)  # type: ignore[arg-type]
    on = CallGuard(None, TenantLimits())  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="auditlog.access"):
        off.finish("GetEvent", None, "p", "OK", time.monotonic())
    with caplog.at_level(logging.WARNING, logger="auditlog.access"):
        on.finish("GetEvent", None, "p", "OK", time.monotonic())
    assert access_lines(caplog) == []


def test_stamps_are_utc_to_the_millisecond_across_seconds() -> None:
    for now in (1_765_000_000.0, 1_765_000_000.999, 1_765_000_001.25, 1_765_000_000.5):
        expected = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        assert _utc_stamp(now) == f"{expected}.{int(now * 1000) % 1000:03d}Z"
