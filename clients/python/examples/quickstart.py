"""The SDK in a nutshell: log a general and a co-browsing event, list with filters, tail a session.

Run against a server (``make run``): ``.venv/bin/python clients/python/examples/quickstart.py``;
``AUDITLOG_ADDR`` overrides the address.
"""

import asyncio
import datetime as dt
import os
import uuid

from auditlog import AuditLogClient, AuditLogError, event_type_info
from auditlog.v1.payloads_pb2 import ClickAttributes, Element, StartCallAttributes


async def main() -> None:
    async with AuditLogClient(os.environ.get("AUDITLOG_ADDR", "127.0.0.1:50051")) as client:
        # Log an event: the payload's type says which event it is (here START_CALL).
        call = await client.log_general(
            "acme", "agent-7", StartCallAttributes(call_id="call-1", customer_id="c-42")
        )
        print("stored", call.id, event_type_info(call.event_type).display_name)

        # Co-browsing events of one session get sequence numbers 1, 2, 3, ...
        session = f"cob-{uuid.uuid4().hex[:8]}"
        for button in ("pricing", "signup", "buy"):
            click = await client.log_cobrowse(
                "acme", session, "customer", ClickAttributes(element=Element(id=button))
            )
            print("click", click.sequence, "on", button)

        # List with filters, newest first.
        since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
        async for event in client.list_events(
            "acme", event_types=["START_CALL"], customer_id="c-42", start_time=since, limit=5
        ):
            print("listed", event.occur_time.ToJsonString(), event.id)

        # Tail the session: replay from its start, then live (here: stop after the third click).
        async for event in client.tail_session("acme", session):
            print("tailed", event.sequence, event.click.element.id)
            if event.sequence == 3:
                break

        # Errors carry the status code, a stable reason and the offending fields.
        try:
            await client.log_general("acme", "", StartCallAttributes(call_id="call-2"))
        except AuditLogError as error:
            print("rejected:", error.code.name, error.reason, error.field_violations)


if __name__ == "__main__":
    asyncio.run(main())
