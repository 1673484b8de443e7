"""The web console as a person uses it: Playwright and chromium against a real server and database.

One flow per test, each on a server and database of its own. The last test takes the README's
screenshots of the two views at 1280 px (into docs/screenshots/ with `make screenshots`).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from google.protobuf.timestamp_pb2 import Timestamp
from playwright.async_api import Browser, Locator, Page, expect

from auditlog import AuditLogClient
from auditlog.v1 import audit_event_pb2, enums_pb2, payloads_pb2, service_pb2
from auditlog_service.server import RunningServer, start_server
from tests.conftest import sdk, settings_for_test, stop_or_explain, token
from tests.event_samples import valid_event_of_each_type

Event = audit_event_pb2.AuditEvent
TENANT = "acme"
READER_SCOPES = ["events:read", "sessions:tail"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
# The README's pictures are rewritten only when asked (`make screenshots`): a test run leaves the
# working tree as it found it (a PNG's bytes vary with the renderer even when nothing changed).
UPDATE_SCREENSHOTS = os.environ.get("AUDITLOG_UPDATE_SCREENSHOTS") == "1"
BASE_SECONDS = 1_780_000_000  # 2026-05-28: fixed times, so the screenshots do not change


def console_url(server: RunningServer, hash_: str = "") -> str:
    return f"http://127.0.0.1:{server.http_port}/{hash_}"


def sign_in_link(server: RunningServer, scopes: list[str] | None = None, **claims: object) -> str:
    return console_url(server, f"#token={token(TENANT, scopes or READER_SCOPES, **claims)}")


def start_call(n: int, user: str, customer: str = "cust-1") -> Event:
    return Event(
        tenant_id=TENANT,
        tenant_user_id=user,
        occur_time=Timestamp(seconds=BASE_SECONDS + n),
        start_call=payloads_pb2.StartCallAttributes(call_id=f"call-{n}", customer_id=customer),
    )


def click(
    n: int, session: str = "cob-1", actor: enums_pb2.Actor.ValueType = enums_pb2.ACTOR_AGENT
) -> Event:
    return Event(
        tenant_id=TENANT,
        tenant_user_id="agent-7" if actor == enums_pb2.ACTOR_AGENT else "",
        occur_time=Timestamp(seconds=BASE_SECONDS + n),
        cobrowse=audit_event_pb2.CobrowseContext(session_id=session, actor=actor),
        click=payloads_pb2.ClickAttributes(element=payloads_pb2.Element(name=f"button {n}")),
    )


async def write(writer: AuditLogClient, events: list[Event]) -> list[Event]:
    stored: list[Event] = []
    for start in range(0, len(events), 100):
        response = await writer.log_events(events[start : start + 100])
        assert all(r.WhichOneof("result") == "event" for r in response.results)
        stored += [r.event for r in response.results]
    return stored


def rows(page: Page) -> Locator:
    return page.get_by_role("table", name="Activity log").locator("tbody tr")


def column(page: Page, name: str) -> Locator:
    return rows(page).locator(f'td[data-label="{name}"]')


@pytest_asyncio.fixture
async def writer(server: RunningServer) -> AsyncIterator[AuditLogClient]:
    async with sdk(f"127.0.0.1:{server.port}") as client:
        yield client


@pytest.mark.asyncio
async def test_sign_in_with_a_pasted_token(server: RunningServer, page: Page) -> None:
    await page.goto(console_url(server))
    await expect(page.get_by_role("heading", name="Sign in", level=1)).to_be_visible()
    await page.get_by_label("Bearer token").fill(token(TENANT, READER_SCOPES))
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Activity Logs", level=1)).to_be_visible()
    await expect(page.get_by_text(f"Tenant {TENANT}", exact=True)).to_be_visible()
    await expect(page.get_by_role("status")).to_have_text("No events yet for this tenant.")


@pytest.mark.asyncio
async def test_filter_by_type_and_user_shows_exactly_those_events(
    server: RunningServer, writer: AuditLogClient, page: Page
) -> None:
    users = ["agent-7", "agent-8"]
    await write(writer, [start_call(n, users[n % 2]) for n in range(6)])
    await write(writer, [click(10 + n) for n in range(4)])  # agent-7's clicks: another type
    await page.goto(sign_in_link(server))
    await expect(page.get_by_role("status")).to_have_text("Page 1: 10 events.")

    await page.get_by_label("Event types").select_option(["START_CALL"])
    await page.get_by_label("Tenant user").fill("agent-7")
    await page.get_by_role("button", name="Apply filters").click()

    await expect(page.get_by_role("status")).to_have_text("Page 1: 3 events.")
    await expect(column(page, "Event")).to_have_text(["[Call] Start"] * 3)
    await expect(column(page, "Tenant user")).to_have_text(["agent-7"] * 3)
    # Newest first: the start_calls of agent-7 are n = 4, 2, 0 (call-4, call-2, call-0).
    await expect(column(page, "Summary")).to_have_text(
        [re.compile(r"\bcall-4\b"), re.compile(r"\bcall-2\b"), re.compile(r"\bcall-0\b")]
    )
    # The filter is in the URL: a reload shows the same view.
    assert "types=START_CALL" in page.url
    assert "user=agent-7" in page.url
    await page.reload()
    await expect(page.get_by_role("status")).to_have_text("Page 1: 3 events.")


@pytest.mark.asyncio
async def test_paging_through_250_events_shows_each_once(
    server: RunningServer, writer: AuditLogClient, page: Page
) -> None:
    await write(writer, [click(n) for n in range(250)])
    await page.goto(sign_in_link(server))
    await page.goto(console_url(server, "#/events?size=100"))
    seen: list[str] = []
    for number, count, more in ((1, 100, True), (2, 100, True), (3, 50, False)):
        tail = ", more on the next page." if more else "."
        await expect(page.get_by_role("status")).to_have_text(
            f"Page {number}: {count} events{tail}"
        )
        seen += await column(page, "Summary").all_inner_texts()
        next_page = page.get_by_role("button", name="Next page")
        if more:
            await next_page.click()
        else:
            await expect(next_page).to_be_disabled()
    assert len(seen) == 250
    assert len(set(seen)) == 250, "an event was shown twice"
    assert {re.search(r"button (\d+)", s).group(1) for s in seen} == {  # type: ignore[union-attr]
        str(n) for n in range(250)
    }
    # And back: page 2 again is the same 100 events.
    await page.get_by_role("button", name="Previous page").click()
    await expect(page.get_by_role("status")).to_have_text(
        "Page 2: 100 events, more on the next page."
    )
    assert await column(page, "Summary").all_inner_texts() == seen[100:200]


@pytest.mark.asyncio
async def test_event_details_show_every_typed_field(
    server: RunningServer, writer: AuditLogClient, page: Page
) -> None:
    (stored,) = await write(writer, [start_call(1, "agent-7", customer="cust-42")])
    await page.goto(sign_in_link(server))
    opener = page.get_by_role("button", name="[Call] Start")
    await opener.click()
    dialog = page.get_by_role("dialog", name="Event details")
    await expect(dialog).to_be_visible()
    for text in (
        stored.id,
        "tenant_user_id",
        "agent-7",
        "start_call",
        "call_id",
        "call-1",
        "cust-42",
    ):
        await expect(dialog.get_by_text(text, exact=True).first).to_be_visible()
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    await expect(opener).to_be_focused()


@pytest.mark.asyncio
async def test_csv_download_is_what_the_api_lists(
    server: RunningServer, writer: AuditLogClient, page: Page, tmp_path: Path
) -> None:
    await write(writer, [start_call(n, f"agent-{n % 3}") for n in range(30)])
    await write(writer, [click(100 + n) for n in range(20)])
    await page.goto(sign_in_link(server, ["events:read", "events:export"]))
    await page.goto(console_url(server, "#/events?types=START_CALL"))
    await expect(page.get_by_role("status")).to_have_text("Page 1: 30 events.")
    async with page.expect_download() as info:
        await page.get_by_role("button", name="Download CSV").click()
    download = await info.value
    assert re.fullmatch(r"auditlog-acme-.+\.csv", download.suggested_filename)
    path = tmp_path / download.suggested_filename
    await download.save_as(path)
    records = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))

    listed = await writer.stub.ListEvents(
        service_pb2.ListEventsRequest(
            tenant_id=TENANT,
            page_size=1000,
            filter=service_pb2.EventFilter(event_types=[enums_pb2.EVENT_TYPE_START_CALL]),
        )
    )
    assert len(listed.events) == 30
    api = {e.id: e for e in listed.events}
    assert sorted(r["id"] for r in records) == sorted(api)
    for record in records:
        event = api[record["id"]]
        assert record["event_type"] == "START_CALL"
        assert record["display_name"] == "[Call] Start"
        assert record["tenant_user_id"] == event.tenant_user_id
        assert record["occur_time"] == event.occur_time.ToJsonString().replace("Z", ".000Z")
        assert record["payload_type"] == "start_call"
        assert f'"{event.start_call.call_id}"' in record["payload"]
    await expect(page.get_by_text("Downloaded 30 events as CSV.")).to_be_visible()


async def follow(page: Page, server: RunningServer, session: str) -> None:
    await page.goto(sign_in_link(server))
    await page.goto(console_url(server, f"#/sessions/{session}?follow=1"))
    await expect(page.get_by_role("heading", name=f"Session {session}", level=1)).to_be_visible()
    await expect(page.get_by_role("status")).to_have_text("live")


def timeline(page: Page) -> Locator:
    return page.get_by_role("list", name="Session events").get_by_role("listitem")


async def sequences(page: Page) -> list[int]:
    items = timeline(page)
    return [int(s) for s in await items.evaluate_all("els => els.map(e => e.dataset.sequence)")]


@pytest.mark.asyncio
async def test_following_a_session_shows_50_new_events_in_order(
    server: RunningServer, writer: AuditLogClient, page: Page
) -> None:
    await follow(page, server, "cob-live")
    await expect(page.get_by_text("No events in this session (yet).")).to_be_visible()
    # One at a time, as a co-browsing session produces them, while the page follows.
    actors = (enums_pb2.ACTOR_AGENT, enums_pb2.ACTOR_CUSTOMER)
    for n in range(50):
        await writer.log_event(click(n, "cob-live", actors[n % 2]))
    await expect(timeline(page)).to_have_count(50)
    assert await sequences(page) == list(range(1, 51))
    await expect(timeline(page).nth(0)).to_contain_text("Agent")
    await expect(timeline(page).nth(1)).to_contain_text("Customer")
    await expect(timeline(page).nth(49)).to_contain_text("button 49")
    await expect(page.get_by_role("status")).to_have_text("live")


@pytest_asyncio.fixture
async def restartable(mongodb_uri: str, database_name: str) -> AsyncIterator[list[RunningServer]]:
    """A server the test may stop and start again on the same HTTP port; the last one is
    stopped at the end."""
    servers = [await start_server(settings_for_test(mongodb_uri, database_name))]
    await servers[0].ready()
    try:
        yield servers
    finally:
        await stop_or_explain(servers[-1])


@pytest.mark.asyncio
async def test_a_followed_session_survives_a_server_restart(
    restartable: list[RunningServer], mongodb_uri: str, database_name: str, page: Page
) -> None:
    first = restartable[0]
    await follow(page, first, "cob-restart")
    async with sdk(f"127.0.0.1:{first.port}") as before:
        await write(before, [click(n, "cob-restart") for n in range(5)])
    await expect(timeline(page)).to_have_count(5)

    await stop_or_explain(first)
    await expect(page.get_by_role("status")).to_have_text("reconnecting")
    settings = settings_for_test(
        mongodb_uri, database_name, http_listen=f"127.0.0.1:{first.http_port}"
    )
    second = await start_server(settings)
    restartable.append(second)
    await second.ready()
    async with sdk(f"127.0.0.1:{second.port}") as after:
        await write(after, [click(5 + n, "cob-restart") for n in range(5)])

    await expect(timeline(page)).to_have_count(10)
    await expect(page.get_by_role("status")).to_have_text("live")
    assert await sequences(page) == list(range(1, 11))


@pytest.mark.asyncio
async def test_an_expired_token_shows_the_sign_in_page_again(
    server: RunningServer, page: Page
) -> None:
    await page.goto(sign_in_link(server, ttl_s=-120))
    await expect(page.get_by_role("heading", name="Sign in", level=1)).to_be_visible()
    await expect(page.get_by_role("alert")).to_contain_text(
        "You were signed out: the server did not accept your token (it expired at"
    )
    # Signing in again returns to the view the person was on.
    await page.get_by_label("Bearer token").fill(token(TENANT, READER_SCOPES))
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Activity Logs", level=1)).to_be_visible()


@pytest.mark.asyncio
async def test_a_link_to_another_tenants_event_is_a_permission_error(
    server: RunningServer, writer: AuditLogClient, page: Page
) -> None:
    secret = Event(
        tenant_id="globex",
        tenant_user_id="globex-admin",
        start_call=payloads_pb2.StartCallAttributes(call_id="globex-call", customer_id="g-1"),
    )
    stored = (await writer.log_event(secret)).event
    (own,) = await write(writer, [start_call(1, "agent-7")])
    await page.goto(sign_in_link(server))
    await expect(page.get_by_role("heading", name="Activity Logs", level=1)).to_be_visible()

    await page.goto(console_url(server, f"#/events/{stored.id}?tenant=globex"))
    await expect(page.get_by_role("alert")).to_have_text(
        'No permission to read this event for tenant "globex": your token is for another tenant'
        " or lacks the scope this needs."
    )
    await expect(page.get_by_text("globex-call")).to_have_count(0)
    await expect(page.get_by_text("globex-admin")).to_have_count(0)

    # The same kind of link to the reader's own event works.
    await page.goto(console_url(server, f"#/events/{own.id}?tenant={TENANT}"))
    await expect(page.get_by_text("call-1", exact=True)).to_be_visible()


@pytest.mark.asyncio
async def test_a_narrow_screen_filters_behind_a_disclosure(
    server: RunningServer, writer: AuditLogClient, browser: Browser
) -> None:
    await write(writer, [start_call(n, f"agent-{n % 2}") for n in range(4)])
    context = await browser.new_context(viewport={"width": 390, "height": 844}, timezone_id="UTC")
    try:
        page = await context.new_page()
        await page.goto(sign_in_link(server))
        await expect(page.get_by_role("status")).to_have_text("Page 1: 4 events.")
        # Closed at first on a phone, so the rows come first; one tap opens it.
        await expect(page.get_by_label("Tenant user")).to_be_hidden()
        await page.get_by_text("Filters", exact=True).click()
        await page.get_by_label("Tenant user").fill("agent-1")
        await page.get_by_role("button", name="Apply filters").click()
        await expect(page.get_by_role("status")).to_have_text("Page 1: 2 events.")
        await expect(column(page, "Tenant user")).to_have_text(["agent-1"] * 2)
        # Nothing wider than the screen: no sideways scrolling to read a row.
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390
    finally:
        await context.close()


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's header (its IHDR chunk)."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", path
    assert header[12:16] == b"IHDR", path
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


@pytest.mark.asyncio
async def test_zz_screenshots_of_the_two_views(
    server: RunningServer, writer: AuditLogClient, page: Page, tmp_path: Path
) -> None:
    """Last in the module: the README's tour pictures, at 1280 px (into docs/screenshots/ with
    AUDITLOG_UPDATE_SCREENSHOTS=1, else into a temporary folder)."""
    folder = SCREENSHOTS if UPDATE_SCREENSHOTS else tmp_path
    base = dt.datetime.fromtimestamp(BASE_SECONDS + 3600, dt.UTC)
    samples = valid_event_of_each_type(TENANT, base_time=base)
    # A fixed session id: the pictures change only when the console does.
    session = "cob-7f3a-checkout"
    for sample in samples.values():
        if sample.HasField("cobrowse"):
            sample.cobrowse.session_id = session
    samples["live_view"].live_view.cobrowse_session_id = session
    samples["start_call"].start_call.call_id = "call-7f3a"
    samples["conference_agent"].conference_agent.call_id = "call-7f3a"
    samples["conference_recording"].conference_recording.call_id = "call-7f3a"
    samples["input"].input.sensitive = True
    # The ledger lists newest first in its own order: the varied samples last, so on top.
    await write(writer, [start_call(n, f"agent-{n % 3}", f"cust-{n}") for n in range(8)])
    await write(writer, list(samples.values()))

    await page.goto(sign_in_link(server))
    await expect(page.get_by_role("status")).to_have_text(re.compile(r"^Page 1: \d+ events"))
    folder.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=folder / "activity-logs.png", full_page=False)

    await page.goto(console_url(server, f"#/sessions/{session}?follow=1"))
    await expect(page.get_by_role("status")).to_have_text("live")
    await expect(timeline(page)).to_have_count(7)  # the seven co-browsing events
    await page.screenshot(path=folder / "session-review.png", full_page=False)
    for name in ("activity-logs.png", "session-review.png"):
        assert png_size(folder / name)[0] == 1280
