"""Shared benchmark plumbing: a dev database, an in-process server, percentiles, result files."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import tempfile
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from auditlog_service.config import Settings
from auditlog_service.devdb import FerretDB, free_port
from auditlog_service.server import RunningServer, start_server

RESULTS = Path(__file__).resolve().parent / "results"


@contextlib.contextmanager
def database() -> Any:
    """MONGODB_URI when set, else a fresh FerretDB in a temporary folder."""
    uri = os.environ.get("MONGODB_URI")
    if uri:
        yield uri, "mongodb"
        return
    with tempfile.TemporaryDirectory(prefix="auditlog-bench-") as tmp:
        db = FerretDB(Path(tmp), free_port())
        db.start()
        try:
            yield db.uri, "ferretdb-sqlite"
        finally:
            db.stop()


@contextlib.asynccontextmanager
async def running_server(
    uri: str, database_name: str, **changes: Any
) -> AsyncIterator[RunningServer]:
    settings = replace(
        Settings(listen="127.0.0.1:0", mongodb_uri=uri, database=database_name, write_concern="1"),
        **changes,
    )
    server = await start_server(settings)
    await server.ready()
    try:
        yield server
    finally:
        await server.stop(grace_s=1.0)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary_ms(samples_s: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples_s]
    return {
        "p50_ms": round(statistics.median(ms), 3),
        "p99_ms": round(percentile(ms, 0.99), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


def write_result(name: str, data: dict[str, Any], markdown: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, **data}
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown)
    print(markdown)
