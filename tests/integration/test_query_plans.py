"""On MongoDB proper, every ListEvents filter is served by an index (explain shows no COLLSCAN).

FerretDB v1 serves only `_id` lookups without a scan (see DESIGN.md), so these tests run only
when MONGODB_URI points at MongoDB; on FerretDB they are skipped.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from auditlog.v1 import enums_pb2, service_pb2
from auditlog_service.rpcs import list_query
from auditlog_service.server import RunningServer
from auditlog_service.storage import EventRepository
from tests.conftest import USING_FERRETDB

pytestmark = pytest.mark.skipif(
    USING_FERRETDB, reason="FerretDB v1 scans for every non-_id filter; needs MongoDB proper"
)

FILTERS = {
    "none": service_pb2.EventFilter(),
    "time": service_pb2.EventFilter(start_time={"seconds": 1_700_000_000}),
    "types": service_pb2.EventFilter(event_types=[enums_pb2.EVENT_TYPE_START_CALL]),
    "user": service_pb2.EventFilter(tenant_user_id="agent-1"),
    "customer": service_pb2.EventFilter(customer_id="cust-1"),
    "call": service_pb2.EventFilter(call_id="call-1"),
    "session": service_pb2.EventFilter(cobrowse_session_id="s-1"),
    "actor": service_pb2.EventFilter(actor=enums_pb2.ACTOR_AGENT),
}


def stages(plan: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(plan, dict):
        if "stage" in plan:
            found.add(plan["stage"])
        for value in plan.values():
            found |= stages(value)
    elif isinstance(plan, list):
        for item in plan:
            found |= stages(item)
    return found


@pytest.mark.asyncio
@pytest.mark.parametrize("name", list(FILTERS))
@pytest.mark.parametrize("with_token", [False, True])
async def test_list_filter_uses_an_index(
    server: RunningServer, name: str, with_token: bool
) -> None:
    request = service_pb2.ListEventsRequest(tenant_id="acme", filter=FILTERS[name])
    query, _ = list_query(request, server.settings.limits)
    if with_token:
        query.after = (dt.datetime(2026, 1, 1, tzinfo=dt.UTC), "acme/x")
    filt, sort = EventRepository.find_spec(query)
    plan = await server.repository.events.find(filt).sort(sort).limit(51).explain()
    winning = plan["queryPlanner"]["winningPlan"]
    assert "COLLSCAN" not in stages(winning), winning
    assert "IXSCAN" in stages(winning) or "EXPRESS_IXSCAN" in stages(winning), winning
