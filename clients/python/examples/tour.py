"""The README tour with the Python SDK: log a START_CALL and a CLICK, then list them."""

import asyncio

from auditlog import AuditLogClient, event_type_info
from auditlog.v1 import audit_event_pb2, enums_pb2, payloads_pb2


async def main() -> None:
    # AUDITLOG_ADDR, AUDITLOG_TOKEN (`make run` prints one) and, for TLS, AUDITLOG_TLS_CA.
    async with AuditLogClient.from_env() as client:
        call = await client.log_event(
            audit_event_pb2.AuditEvent(
                tenant_id="acme",
                tenant_user_id="agent-7",
                start_call=payloads_pb2.StartCallAttributes(call_id="call-1", customer_id="c-42"),
            )
        )
        click = await client.log_event(
            audit_event_pb2.AuditEvent(
                tenant_id="acme",
                cobrowse=audit_event_pb2.CobrowseContext(
                    session_id="cob-1", actor=enums_pb2.ACTOR_CUSTOMER
                ),
                click=payloads_pb2.ClickAttributes(
                    element=payloads_pb2.Element(name="Buy now", id="buy")
                ),
            )
        )
        print("stored", call.event.id, "and click #", click.event.sequence)
        async for event in client.list_events("acme", limit=10):
            info = event_type_info(event.event_type)
            print(event.occur_time.ToJsonString(), info.type_string, info.display_name, event.id)


if __name__ == "__main__":
    asyncio.run(main())
