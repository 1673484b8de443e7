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

Beside them (or alone), AUDITLOG_COUNT_COMMANDS=<folder> counts the database commands each
`auditlog serve` process sends, by command and collection, with the documents inserted and, for the
ledger's inserts, which records they carry (blocks, placements, checkpoints); each process
writes `<folder>/commands-<pid>.json` when it exits. That one leaves the server as deployed.

For example, unary LogEvent against the echo with the database write replaced by a timer:

    AUDITLOG_ABLATE=timer PYTHONPATH=bench/ablation .venv/bin/python -m bench.ingest \
        --paths unary --seconds 4 --rounds 3 --output scratch_unary_timer

Its results are about the server without those parts, never about the server as deployed.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

MODE = os.environ.get("AUDITLOG_ABLATE", "")
COUNT_INTO = os.environ.get("AUDITLOG_COUNT_COMMANDS", "")
# The ledger's records by the part of their `_id` after the tenant (see ledger.py's layout).
LEDGER_KINDS = (("/b/", "block"), ("/p/", "placement"), ("/cp/", "checkpoint"), ("/ca/", "archive"))


def _ablate() -> None:
    from auditlog_service import ingest, storage  # the server's own modules, patched in place

    delay_s = float(os.environ.get("AUDITLOG_ABLATE_MS", "6")) / 1000

    async def stored_after_timer(self: Any, writes: list[Any]) -> list[Any]:
        await asyncio.sleep(delay_s if MODE == "timer" else 0)
        return [storage.Stored(write.doc) for write in writes]

    async def stored_once_prepared(self: Any, event: Any, serialized: Any = None) -> Any:
        prepared = self.prepare_batch([event], [serialized])[0]
        stored = storage.Stored(prepared.doc)
        outcome = asyncio.get_running_loop().create_future()
        outcome.set_result(stored)
        return ingest.PendingEvent(prepared, outcome), stored

    if MODE in ("timer", "no-database"):
        storage.EventRepository.insert_events = stored_after_timer  # type: ignore[method-assign]
    elif MODE == "no-group":
        ingest.EventWriter.write = stored_once_prepared  # type: ignore[method-assign]
    else:
        raise SystemExit(f"AUDITLOG_ABLATE={MODE!r}: timer, no-database or no-group")


def _count_commands(folder: str) -> None:
    import atexit
    import json
    from collections import Counter
    from pathlib import Path

    from pymongo import monitoring

    commands: Counter[str] = Counter()
    documents: Counter[str] = Counter()

    def ledger_kind(doc: Any) -> str:
        _id = str(doc["_id"])
        return next((kind for part, kind in LEDGER_KINDS if part in _id), "other")

    class Counting(monitoring.CommandListener):
        def started(self, event: monitoring.CommandStartedEvent) -> None:
            target = event.command.get(event.command_name)
            name = f"{event.command_name} {target if isinstance(target, str) else ''}".strip()
            commands[name] += 1
            inserted = event.command.get("documents") if event.command_name == "insert" else None
            if inserted:
                documents[name] += len(inserted)
                if target == "ledger":
                    kinds = [ledger_kind(doc) for doc in inserted]
                    commands[f"insert ledger of {'+'.join(sorted(set(kinds)))}"] += 1
                    documents.update(f"ledger {kind}" for kind in kinds)

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
            pass

        def failed(self, event: monitoring.CommandFailedEvent) -> None:
            pass

    monitoring.register(Counting())

    def write() -> None:
        if not commands:  # `serve --help`, say
            return
        counts = {"commands": dict(commands.most_common()), "documents": dict(documents)}
        Path(folder, f"commands-{os.getpid()}.json").write_text(json.dumps(counts, indent=1))

    atexit.register(write)


if MODE or COUNT_INTO:
    try:
        import auditlog_service  # noqa: F401  (the server's package: absent in other processes)
    except ImportError:
        pass
    else:
        if MODE:
            _ablate()
        if COUNT_INTO and "serve" in sys.argv:  # the servers, not the bench's own process
            _count_commands(COUNT_INTO)
