"""GroupCommitter groups concurrent submissions and answers each with its own result."""

from __future__ import annotations

import asyncio

import pytest

from auditlog_service.errors import AuditLogError, DatabaseUnavailable
from auditlog_service.group_commit import GroupCommitter


class RecordingWriter:
    """A fake database write that records the groups it was given."""

    def __init__(self) -> None:
        self.groups: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.started = asyncio.Event()

    async def write(self, items: list[int]) -> list[int | AuditLogError]:
        self.groups.append(list(items))
        self.started.set()
        await self.release.wait()
        return [item * 10 for item in items]


class BreaksOnce:
    """A fake database write that raises `error` on its `nth` call and stores the others."""

    def __init__(self, nth: int, error: Exception) -> None:
        self.nth = nth
        self.error = error
        self.writes = 0

    async def write(self, items: list[int]) -> list[int | AuditLogError]:
        self.writes += 1
        if self.writes == self.nth:
            raise self.error
        return list(items)


@pytest.mark.asyncio
async def test_concurrent_submissions_share_groups_and_get_their_own_results() -> None:
    writer = RecordingWriter()
    committer = GroupCommitter(writer.write, max_items=64, max_delay_s=0.001)
    results = await asyncio.gather(*(committer.submit(i) for i in range(200)))
    assert results == [i * 10 for i in range(200)]
    assert sorted(i for group in writer.groups for i in group) == list(range(200))
    assert max(len(g) for g in writer.groups) == 64
    assert len(writer.groups) <= 4, "200 concurrent items fit in four groups of 64"


@pytest.mark.asyncio
async def test_a_batch_split_over_several_groups_is_answered_once_in_its_own_order() -> None:
    writer = RecordingWriter()
    writer.release.clear()
    committer = GroupCommitter(writer.write, max_items=4, max_delay_s=0)
    single = asyncio.ensure_future(committer.submit(100))
    await writer.started.wait()  # [100] is in flight; the batch waits for it
    batch = committer.submit_batch(list(range(10)))
    writer.release.set()
    assert await batch == [i * 10 for i in range(10)]
    assert await single == 1000
    assert writer.groups == [[100], [0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert await committer.submit_many([]) == []


@pytest.mark.asyncio
async def test_a_batch_is_failed_whole_when_one_of_its_groups_breaks() -> None:
    second_breaks = BreaksOnce(2, KeyError("bug"))
    committer = GroupCommitter(second_breaks.write, max_items=3, max_delay_s=0)
    with pytest.raises(KeyError):
        await committer.submit_many(list(range(7)))
    await committer.drain()
    assert second_breaks.writes == 3, "the groups after the broken one are still written"


@pytest.mark.asyncio
async def test_items_arriving_during_a_write_form_the_next_group() -> None:
    writer = RecordingWriter()
    writer.release.clear()
    committer = GroupCommitter(writer.write, max_items=100, max_delay_s=0)
    first = asyncio.ensure_future(committer.submit(1))
    await writer.started.wait()  # the first write has started and is blocked
    later = [asyncio.ensure_future(committer.submit(i)) for i in range(2, 12)]
    await asyncio.sleep(0)
    writer.release.set()
    assert await first == 10
    assert [await f for f in later] == [i * 10 for i in range(2, 12)]
    assert writer.groups == [[1], list(range(2, 12))]


@pytest.mark.asyncio
async def test_a_failed_group_reports_the_error_to_each_member_and_the_next_group_runs() -> None:
    flaky = BreaksOnce(1, DatabaseUnavailable("down"))
    committer = GroupCommitter(flaky.write, max_items=10, max_delay_s=0)
    first = await asyncio.gather(*(committer.submit(i) for i in range(3)))
    assert all(isinstance(r, DatabaseUnavailable) for r in first)
    assert await committer.submit(7) == 7


@pytest.mark.asyncio
async def test_a_cancelled_caller_does_not_cancel_the_shared_write() -> None:
    writer = RecordingWriter()
    writer.release.clear()
    committer = GroupCommitter(writer.write, max_items=10, max_delay_s=0)
    impatient = asyncio.ensure_future(committer.submit(1))
    patient = asyncio.ensure_future(committer.submit(2))
    await writer.started.wait()
    impatient.cancel()
    writer.release.set()
    assert await patient == 20
    await committer.drain()
    assert writer.groups == [[1, 2]]
    assert committer.idle


@pytest.mark.asyncio
async def test_a_bug_in_write_reaches_every_waiter() -> None:
    async def broken(items: list[int]) -> list[int | AuditLogError]:
        raise KeyError("bug")

    committer = GroupCommitter(broken, max_items=10, max_delay_s=0)
    with pytest.raises(KeyError):
        await committer.submit(1)


class GatedWriter:
    """A fake write that holds every group until told, recording what was in flight together."""

    def __init__(self) -> None:
        self.groups: list[list[str]] = []
        self.gates: list[asyncio.Event] = []
        self.in_flight_at_start: list[int] = []  # groups not yet released when each started
        self.started = asyncio.Condition()

    async def write(self, items: list[str]) -> list[str | AuditLogError]:
        gate = asyncio.Event()
        self.in_flight_at_start.append(sum(not g.is_set() for g in self.gates))
        self.groups.append(list(items))
        self.gates.append(gate)
        async with self.started:
            self.started.notify_all()
        await gate.wait()
        return [item.upper() for item in items]

    async def wait_for_groups(self, count: int) -> None:
        async with self.started:
            await self.started.wait_for(lambda: len(self.groups) >= count)


def session(item: str) -> str | None:
    return item.split(":")[0] if ":" in item else None


@pytest.mark.asyncio
async def test_groups_of_other_sessions_are_written_while_one_is_in_flight() -> None:
    writer = GatedWriter()
    committer = GroupCommitter(
        writer.write, max_items=10, max_delay_s=0, max_in_flight=2, key=session
    )
    first = [asyncio.ensure_future(committer.submit(i)) for i in ("s1:a", "s1:b")]
    await writer.wait_for_groups(1)
    second = [asyncio.ensure_future(committer.submit(i)) for i in ("s2:c", "general")]
    await writer.wait_for_groups(2)  # written while the first group is still in flight
    assert writer.groups == [["s1:a", "s1:b"], ["s2:c", "general"]]
    for gate in writer.gates:
        gate.set()
    assert [await f for f in first + second] == ["S1:A", "S1:B", "S2:C", "GENERAL"]


@pytest.mark.asyncio
async def test_a_sessions_later_events_wait_for_its_group_in_flight_and_keep_their_order() -> None:
    writer = GatedWriter()
    committer = GroupCommitter(
        writer.write, max_items=10, max_delay_s=0, max_in_flight=4, key=session
    )
    first = asyncio.ensure_future(committer.submit("s1:a"))
    await writer.wait_for_groups(1)
    later = [asyncio.ensure_future(committer.submit(i)) for i in ("s1:b", "s2:x", "s1:c")]
    await writer.wait_for_groups(2)
    # s1's later events are held back (in order) while s1:a is in flight; s2 goes ahead.
    assert writer.groups[1] == ["s2:x"]
    writer.gates[0].set()
    await writer.wait_for_groups(3)
    assert writer.groups[2] == ["s1:b", "s1:c"]
    for gate in writer.gates:
        gate.set()
    assert await first == "S1:A"
    assert [await f for f in later] == ["S1:B", "S2:X", "S1:C"]


async def turns_of_the_loop(count: int = 10) -> None:
    """Lets ready tasks run (no time passes): enough for the scheduler to start a group, as
    the first of the two tests below shows by waiting this way for one."""
    for _ in range(count):
        await asyncio.sleep(0)


async def group_a_in_flight(
    parallel_min_items: int,
) -> tuple[GatedWriter, GroupCommitter[str, str], asyncio.Future[str | AuditLogError]]:
    """A committer of two groups in flight, its first group ["a"] held in flight."""
    writer = GatedWriter()
    committer: GroupCommitter[str, str] = GroupCommitter(
        writer.write,
        max_items=10,
        max_delay_s=0,
        max_in_flight=2,
        parallel_min_items=parallel_min_items,
    )
    first = asyncio.ensure_future(committer.submit("a"))
    await writer.wait_for_groups(1)
    return writer, committer, first


@pytest.mark.asyncio
async def test_enough_waiting_items_go_out_beside_the_group_in_flight() -> None:
    writer, committer, first = await group_a_in_flight(parallel_min_items=3)
    later = [committer.submit_nowait(i) for i in ("b", "c", "d")]
    await turns_of_the_loop()
    assert writer.groups == [["a"], ["b", "c", "d"]]
    assert writer.in_flight_at_start == [0, 1]
    for gate in writer.gates:
        gate.set()
    assert [await f for f in [first, *later]] == ["A", "B", "C", "D"]


@pytest.mark.asyncio
async def test_fewer_waiting_items_wait_for_the_group_in_flight_then_go_out_together() -> None:
    writer, committer, first = await group_a_in_flight(parallel_min_items=4)
    later = [committer.submit_nowait(i) for i in ("b", "c")]
    await turns_of_the_loop()
    assert writer.groups == [["a"]], "two waiting, under four: no second group yet"
    later.append(committer.submit_nowait("d"))
    writer.gates[0].set()
    await writer.wait_for_groups(2)
    assert writer.groups == [["a"], ["b", "c", "d"]]
    writer.gates[1].set()
    assert [await f for f in [first, *later]] == ["A", "B", "C", "D"]


@pytest.mark.asyncio
async def test_items_coming_one_by_one_go_out_beside_the_group_in_flight_at_the_threshold() -> None:
    writer, committer, first = await group_a_in_flight(parallel_min_items=3)
    later = []
    for item in ("b", "c"):
        later.append(committer.submit_nowait(item))
        await turns_of_the_loop()
        assert writer.groups == [["a"]], f"under three waiting after {item}"
    later.append(committer.submit_nowait("d"))
    await turns_of_the_loop()
    assert writer.groups == [["a"], ["b", "c", "d"]]
    for gate in writer.gates:
        gate.set()
    assert [await f for f in [first, *later]] == ["A", "B", "C", "D"]


async def s1_a_in_flight(
    max_items: int,
) -> tuple[GatedWriter, GroupCommitter[str, str], asyncio.Future[str | AuditLogError]]:
    """A committer of four groups in flight by session, its first group ["s1:a"] held."""
    writer = GatedWriter()
    committer: GroupCommitter[str, str] = GroupCommitter(
        writer.write, max_items=max_items, max_delay_s=0, max_in_flight=4, key=session
    )
    first = committer.submit_nowait("s1:a")
    await writer.wait_for_groups(1)
    return writer, committer, first


@pytest.mark.asyncio
async def test_an_item_of_a_free_session_goes_out_while_the_waiting_ones_sessions_are_busy() -> (
    None
):
    writer = GatedWriter()
    committer = GroupCommitter(
        writer.write, max_items=10, max_delay_s=0, max_in_flight=4, key=session
    )
    first = asyncio.ensure_future(committer.submit("s1:a"))
    await writer.wait_for_groups(1)
    held = committer.submit_nowait("s1:b")
    await turns_of_the_loop()
    assert writer.groups == [["s1:a"]], "s1 is in flight: s1:b waits"
    free = committer.submit_nowait("s2:x")
    await turns_of_the_loop()
    assert writer.groups == [["s1:a"], ["s2:x"]], "s2 is free: s2:x goes out now"
    writer.gates[0].set()
    await writer.wait_for_groups(3)
    assert writer.groups[2] == ["s1:b"]
    for gate in writer.gates:
        gate.set()
    assert [await f for f in (first, held, free)] == ["S1:A", "S1:B", "S2:X"]


@pytest.mark.asyncio
async def test_items_held_behind_busy_sessions_go_out_in_order_as_each_session_frees() -> None:
    # The queue's front is looked at once while nothing in flight ends (the committer then
    # remembers it is blocked); what ends decides what goes next, in order, session by session.
    writer, committer, first = await s1_a_in_flight(max_items=10)
    held = [committer.submit_nowait(i) for i in ("s1:b", "s1:c")]
    await turns_of_the_loop()
    free = committer.submit_nowait("s2:x")
    await writer.wait_for_groups(2)
    assert writer.groups == [["s1:a"], ["s2:x"]]
    held.append(committer.submit_nowait("s2:y"))  # behind s2:x, in flight
    held.append(committer.submit_nowait("s1:d"))  # behind s1:b and s1:c
    await turns_of_the_loop()
    assert len(writer.groups) == 2, "every waiting item's session is in flight"
    writer.gates[0].set()  # s1 frees: its held items go, s2:y still waits
    await writer.wait_for_groups(3)
    assert writer.groups[2] == ["s1:b", "s1:c", "s1:d"]
    writer.gates[1].set()  # s2 frees
    await writer.wait_for_groups(4)
    assert writer.groups[3] == ["s2:y"]
    for gate in writer.gates:
        gate.set()
    answers = [await f for f in (first, free, *held)]
    assert answers == ["S1:A", "S2:X", "S1:B", "S1:C", "S2:Y", "S1:D"]


@pytest.mark.asyncio
async def test_items_a_full_group_left_behind_go_out_beside_it() -> None:
    writer, committer, first = await s1_a_in_flight(max_items=2)
    later = committer.submit_batch(["s1:b", "g1", "g2", "g3"])
    await writer.wait_for_groups(3)  # none of the groups in flight has ended
    assert writer.groups == [["s1:a"], ["g1", "g2"], ["g3"]]
    for gate in writer.gates:
        gate.set()
    await writer.wait_for_groups(4)
    writer.gates[3].set()
    assert writer.groups[3] == ["s1:b"]
    assert [await first, await later] == ["S1:A", ["S1:B", "G1", "G2", "G3"]]


@pytest.mark.asyncio
async def test_batches_go_whole_wait_whole_or_item_by_item_as_their_sessions_are_busy() -> None:
    # Three batches queued while s1 is in flight: one of a free session (more than a group
    # holds), one of s1 only, one mixed. A batch whose keys are all free goes whole (or as
    # much as fits), one whose keys are all busy waits whole, a mixed one is looked at item by
    # item; the order within each session holds throughout.
    writer, committer, first = await s1_a_in_flight(max_items=3)
    free = committer.submit_batch(["s2:a", "s2:b", "s2:c", "s2:d"])
    held = committer.submit_batch(["s1:b", "s1:c"])
    mixed = committer.submit_batch(["s3:a", "g1", "s1:d", "s3:b"])
    await writer.wait_for_groups(3)
    # s2:d waits for s2's group, s1's items for s1's; the rest of the mixed batch goes.
    assert writer.groups[1:] == [["s2:a", "s2:b", "s2:c"], ["s3:a", "g1", "s3:b"]]
    writer.gates[0].set()  # s1 frees: its items go in order; s2:d still waits for s2
    await writer.wait_for_groups(4)
    assert writer.groups[3] == ["s1:b", "s1:c", "s1:d"]
    writer.gates[1].set()
    await writer.wait_for_groups(5)
    assert writer.groups[4] == ["s2:d"]
    for gate in writer.gates:
        gate.set()
    answers = [await first, await free, await held, await mixed]
    assert answers == [
        "S1:A",
        ["S2:A", "S2:B", "S2:C", "S2:D"],
        ["S1:B", "S1:C"],
        ["S3:A", "G1", "S1:D", "S3:B"],
    ]


def two_in_flight_by_session(max_items: int) -> tuple[GatedWriter, GroupCommitter[str, str]]:
    writer = GatedWriter()
    committer: GroupCommitter[str, str] = GroupCommitter(
        writer.write,
        max_items=max_items,
        max_delay_s=0,
        max_in_flight=2,
        parallel_min_items=1,
        key=session,
    )
    return writer, committer


@pytest.mark.asyncio
async def test_streams_of_many_sessions_queued_beyond_a_group_go_out_in_two_groups() -> None:
    # Messages of two streams (sessions s1, s2 and s3, s4) queued in turn, more than a group
    # holds: the first group takes half of the sessions waiting, so that the other half goes
    # beside it, instead of one group of every session that leaves the next nothing to take.
    writer, committer = two_in_flight_by_session(max_items=4)
    batches = [
        committer.submit_batch(items)
        for items in (["s1:1", "s2:1"], ["s3:1", "s4:1"], ["s1:2", "s2:2"], ["s3:2", "s4:2"])
    ]
    await writer.wait_for_groups(1)
    await turns_of_the_loop()
    assert writer.groups == [["s1:1", "s2:1", "s1:2", "s2:2"], ["s3:1", "s4:1", "s3:2", "s4:2"]]
    assert writer.in_flight_at_start == [0, 1]
    for gate in writer.gates:
        gate.set()
    assert [await b for b in batches] == [
        ["S1:1", "S2:1"],
        ["S3:1", "S4:1"],
        ["S1:2", "S2:2"],
        ["S3:2", "S4:2"],
    ]


@pytest.mark.asyncio
async def test_a_group_past_half_the_sessions_still_takes_more_of_its_own_sessions() -> None:
    # The first message already holds three of the four sessions waiting: the group keeps
    # taking what comes of those three, and only a new session is left for the group beside.
    writer, committer = two_in_flight_by_session(max_items=5)
    batches = [
        committer.submit_batch(items)
        for items in (["s1:1", "s2:1", "s3:1"], ["s1:2", "s2:2"], ["s4:1"])
    ]
    await writer.wait_for_groups(1)
    await turns_of_the_loop()
    assert writer.groups == [["s1:1", "s2:1", "s3:1", "s1:2", "s2:2"], ["s4:1"]]
    assert writer.in_flight_at_start == [0, 1]
    for gate in writer.gates:
        gate.set()
    assert [await b for b in batches] == [["S1:1", "S2:1", "S3:1"], ["S1:2", "S2:2"], ["S4:1"]]


@pytest.mark.asyncio
async def test_a_queue_a_group_holds_goes_whole_in_one_group() -> None:
    # No more waiting than a group holds: one group of every session, as before.
    writer, committer = two_in_flight_by_session(max_items=4)
    batches = [committer.submit_batch(items) for items in (["s1:1", "s2:1"], ["s3:1", "s4:1"])]
    await writer.wait_for_groups(1)
    await turns_of_the_loop()
    assert writer.groups == [["s1:1", "s2:1", "s3:1", "s4:1"]]
    writer.gates[0].set()
    assert [await b for b in batches] == [["S1:1", "S2:1"], ["S3:1", "S4:1"]]
