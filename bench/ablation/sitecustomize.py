"""Ablations of `auditlog serve`: parts of its write path left out, to attribute its CPU (issue 11).

Not a test and never deployed: with this folder first on PYTHONPATH, every Python process of
the run imports it at start-up, and AUDITLOG_ABLATE says what the server leaves out (a
process that imports no auditlog_service is left alone):

- `timer`: the repository answers each group as stored after a timer of AUDITLOG_ABLATE_MS
  milliseconds (default 6, about a group's write to FerretDB under unary load), without the
  database: what the request path, the group commit and the waits cost without PyMongo and the
  ledger's records;
- `no-database`: the same at once;
- `no-group`: LogEvent's writer answers each event as stored once prepared, without the group
  commit or the database.

For example, unary LogEvent against the echo with the database write replaced by a timer:

    AUDITLOG_ABLATE=timer PYTHONPATH=bench/ablation .venv/bin/python -m bench.ingest \
        --paths unary --seconds 4 --rounds 3 --output scratch_unary_timer

Its results are about the server without those parts, never about the server as deployed.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

MODE = os.environ.get("AUDITLOG_ABLATE", "")


def _ablate() -> None:
    from auditlog_service import ingest, storage  # the server's own modules, patched in place

    delay_s = float(os.environ.get("AUDITLOG_ABLATE_MS", "6")) / 1000

    async def stored_after_timer(self: Any, writes: list[Any]) -> list[Any]:
        await asyncio.sleep(delay_s if MODE == "timer" else 0)
        return [storage.Stored(write.doc) for write in writes]

    async def stored_once_prepared(self: Any, event: Any, serialized: Any = None) -> Any:
        prepared = self.prepare_batch([event], [serialized])[0]
        return prepared, storage.Stored(prepared.write.doc)

    if MODE in ("timer", "no-database"):
        storage.EventRepository.insert_events = stored_after_timer  # type: ignore[method-assign]
    elif MODE == "no-group":
        ingest.EventWriter.write = stored_once_prepared  # type: ignore[method-assign]
    else:
        raise SystemExit(f"AUDITLOG_ABLATE={MODE!r}: timer, no-database or no-group")


if MODE:
    try:
        import auditlog_service  # noqa: F401  (the server's package: absent in other processes)
    except ImportError:
        pass
    else:
        _ablate()
