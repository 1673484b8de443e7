"""A busy service logging audit events without waiting for them: BatchingLogger.

Run against a server (``make run``): ``.venv/bin/python clients/python/examples/batching.py``;
``AUDITLOG_ADDR`` overrides the address.
"""

import asyncio
import os
import sys

from auditlog import AuditLogClient, BatchingLogger, DeliveryFailure, cobrowse_event, general_event
from auditlog.v1.audit_event_pb2 import AuditEvent
from auditlog.v1.payloads_pb2 import ClickAttributes, Element, MessengerSendAttributes


def report(event: AuditEvent, failure: DeliveryFailure) -> None:
    """Called once for each event that was not delivered (never silently dropped)."""
    print(
        f"not delivered: {event.id} {failure.code.name} {failure.reason} {failure.message}"
        f" (maybe stored: {failure.maybe_stored})",
        file=sys.stderr,
    )


async def main() -> None:
    async with (
        AuditLogClient(os.environ.get("AUDITLOG_ADDR", "127.0.0.1:50051")) as client,
        BatchingLogger(client, on_undelivered=report) as logger,
    ):
        for n in range(1000):
            # log() returns at once: the events go out in batches in the background.
            logger.log(
                general_event("acme", "agent-7", MessengerSendAttributes(customer_id=f"c-{n % 10}"))
            )
            logger.log(
                cobrowse_event(
                    "acme", "cob-batch", "customer", ClickAttributes(element=Element(id=f"b-{n}"))
                )
            )
        await logger.flush()  # optional here: leaving the block flushes too
        print(
            f"logged {logger.logged}: delivered {logger.delivered}, undelivered "
            f"{logger.undelivered}, dropped {logger.dropped_queue_full}, "
            f"batch retries {logger.retried_batches}"
        )


if __name__ == "__main__":
    asyncio.run(main())
