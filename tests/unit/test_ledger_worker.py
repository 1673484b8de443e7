"""LedgerWorker: when it runs the sequencer for the tenants this process wrote."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from auditlog_service.ledger import LedgerWorker


class CountingSequencer:
    """A fake sequencer that records, at each pass, how many commits had been made by then."""

    def __init__(self) -> None:
        self.commits = 0
        self.passes: list[int] = []
        self.passed = asyncio.Event()
        self.heads: dict[str, Any] = {}
        self.store = SimpleNamespace(tenants=self._tenants)

    async def _tenants(self) -> list[str]:
        return []

    def yielding(self, tenant_id: str) -> bool:
        return False

    def waiting(self, tenant_id: str) -> bool:
        return False

    def checkpoint_due(self, tenant_id: str) -> None:
        return None

    async def sequence(self, tenant_id: str, **_: Any) -> Any:
        self.passes.append(self.commits)
        self.passed.set()
        return SimpleNamespace(block=len(self.passes))


async def commits_seen_by_the_first_pass(gather_s: float) -> int:
    sequencer = CountingSequencer()
    worker = LedgerWorker(sequencer, lambda within_s: [], sweep_s=3600, gather_s=gather_s)  # type: ignore[arg-type]
    worker.start()
    try:
        sequencer.commits = 1
        worker.committed("t")
        for _ in range(20):  # the worker wakes; without gathering it would pass now
            await asyncio.sleep(0)
        sequencer.commits = 2
        worker.committed("t")
        await sequencer.passed.wait()
        return sequencer.passes[0]
    finally:
        await worker.close()


@pytest.mark.asyncio
async def test_commits_that_follow_one_another_closely_are_sequenced_in_one_pass() -> None:
    assert await commits_seen_by_the_first_pass(gather_s=1.0) == 2
    assert await commits_seen_by_the_first_pass(gather_s=0) == 1  # what gathering avoids
