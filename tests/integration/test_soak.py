"""A short SIGKILL soak (bench/soak.py has the long one): two replicas killed in turn under
load; every acknowledged event stored once at its sequence, every session and tail 1..N."""

from __future__ import annotations

import argparse
import os

import pytest

from bench.soak import passed, run

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("MONGODB_URI")),
    reason="runs its own FerretDB so that the data of the replicas' kills stays its own",
)


@pytest.mark.asyncio
@pytest.mark.timeout(240)
async def test_replicas_killed_in_turn_lose_and_duplicate_nothing() -> None:
    result = await run(argparse.Namespace(seconds=24.0, kill_every=8.0, writers=6, sessions=6))
    assert result["kills"] >= 2
    assert result["acknowledged"] > 0
    assert passed(result), result
