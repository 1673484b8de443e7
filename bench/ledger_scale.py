"""The tenant ledger at scale: ListEvents pages, verify, export, on a tenant of many events.

One server process (`auditlog serve`, as deployed) on a fresh database; N events of one tenant
(half general events over 50 customers plus one rare customer with exactly 10 events, half
clicks over 100 sessions) are logged in batches of 1,000 by 4 writers. Then:
- ListEvents first page (page size 50), newest first, 20 calls each: no filter, a type filter
  (START_CALL), and the rare customer paged to the end (every call timed, all 10 found?);
- `verify_ledger` through the API: time and events/s;
- `auditlog export` (the CLI, a process of its own) as JSONL and as CSV: time; the JSONL export
  resumed from the cursor of its middle event equals the first half plus the rest, and its
  events equal what ListEvents (oldest first) pages out; `auditlog verify --file` checks the
  export offline with only the public keys file (`auditlog keys`).

    .venv/bin/python -m bench.ledger_scale [--events 100000] [--list-only]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from auditlog.ledger import verify_ledger
from auditlog.v1 import audit_event_pb2, enums_pb2, payloads_pb2, service_pb2
from bench.common import (
    CpuMeter,
    bench_client,
    bench_token,
    code_version,
    database_process,
    load_average,
    served_process,
    summary_ms,
    write_result,
)

Event = audit_event_pb2.AuditEvent
TENANT = "scale"
RARE = "cust-rare"
AUDITLOG = str(Path(sys.executable).with_name("auditlog"))


def events_of(writer: int, start: int, count: int, total: int) -> list[Event]:
    events = []
    for n in range(start, start + count):
        number = writer * total + n
        event_id = f"w{writer}-{n:07d}"
        if n % 2:
            customer = RARE if writer == 0 and n < 20 else f"cust-{number % 50}"
            events.append(
                Event(
                    id=event_id,
                    tenant_id=TENANT,
                    tenant_user_id=f"agent-{number % 7}",
                    start_call=payloads_pb2.StartCallAttributes(
                        call_id=f"call-{number}", customer_id=customer
                    ),
                )
            )
        else:
            events.append(
                Event(
                    id=event_id,
                    tenant_id=TENANT,
                    tenant_user_id=f"agent-{number % 7}",
                    cobrowse=audit_event_pb2.CobrowseContext(
                        session_id=f"s-{writer}-{n % 25}", actor=enums_pb2.ACTOR_CUSTOMER
                    ),
                    click=payloads_pb2.ClickAttributes(element=payloads_pb2.Element(id="buy")),
                )
            )
    return events


async def ingest(client: Any, total: int, writers: int = 4) -> float:
    per_writer = total // writers
    started = time.perf_counter()

    async def write(writer: int) -> None:
        for start in range(0, per_writer, 1000):
            batch = events_of(writer, start, min(1000, per_writer - start), per_writer)
            response = await client.log_events(batch, timeout_s=300)
            assert all(r.WhichOneof("result") != "error" for r in response.results)

    await asyncio.gather(*(write(w) for w in range(writers)))
    return time.perf_counter() - started


async def first_pages(client: Any, samples: int) -> dict[str, Any]:
    cases = {
        "no filter": service_pb2.EventFilter(),
        "type START_CALL": service_pb2.EventFilter(event_types=[enums_pb2.EVENT_TYPE_START_CALL]),
    }
    result: dict[str, Any] = {}
    for name, filt in cases.items():
        times = []
        for _ in range(samples):
            began = time.perf_counter()
            page = await client.list_page(
                service_pb2.ListEventsRequest(tenant_id=TENANT, filter=filt, page_size=50)
            )
            times.append(time.perf_counter() - began)
        result[name] = {**summary_ms(times), "events_on_page": len(page.events)}
    # The rare customer, paged to the end: every call timed.
    calls, found = [], 0
    request = service_pb2.ListEventsRequest(
        tenant_id=TENANT, filter=service_pb2.EventFilter(customer_id=RARE), page_size=50
    )
    while True:
        began = time.perf_counter()
        page = await client.list_page(request)
        calls.append(time.perf_counter() - began)
        found += len(page.events)
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    result[f"customer {RARE} (10 events), paged to the end"] = {
        **summary_ms(calls),
        "calls": len(calls),
        "max_ms": round(max(calls) * 1000, 1),
        "found": found,
    }
    return result


async def cli(env: dict[str, str], *argv: str, out: Path | None = None) -> float:
    """Runs the CLI to its end (a process of its own: the server shares this event loop)."""
    began = time.perf_counter()
    target = out or Path(os.devnull)
    with target.open("wb") as stdout:  # opening a local file: no wait worth a thread
        process = await asyncio.create_subprocess_exec(AUDITLOG, *argv, env=env, stdout=stdout)
        code = await process.wait()
    if code != 0:
        raise RuntimeError(f"auditlog {' '.join(argv)} exited {code}")
    return time.perf_counter() - began


def exported_ids(path: Path) -> list[str]:
    ids = []
    for line in path.read_text().splitlines():
        item = json.loads(line)
        if "event" in item:
            ids.append(item["event"]["entry"]["event_id"])
    return ids


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"args": vars(args)}
    with database_process() as (uri, backend, db_pid), tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        result["backend"] = backend
        # The server in a process of its own, as deployed: a verifier or exporter is a client.
        async with served_process(
            uri, "ledger_scale", tmp / "server.log", env={"AUDITLOG_MAX_READ_TIME_S": "60"}
        ) as server:
            address = server.target
            async with bench_client(address) as client:
                took = await ingest(client, args.events)
                result["ingest"] = {
                    "seconds": round(took, 1),
                    "events_per_s": round(args.events / took),
                }
                began = time.perf_counter()
                checkpoint = await client.stub.GetCheckpoint(
                    service_pb2.GetCheckpointRequest(tenant_id=TENANT), timeout=600
                )
                result["sequenced_after_ingest_s"] = round(time.perf_counter() - began, 1)
                result["head"] = checkpoint.head_sequence
                print("ingested", result, flush=True)
                result["list_first_page"] = await first_pages(client, args.samples)
                print(result["list_first_page"], flush=True)
                if args.list_only:
                    return result

                meter = CpuMeter({"verifier": os.getpid(), "server": server.pid, "db": db_pid})
                meter.start()
                began = time.perf_counter()
                report = await verify_ledger(client, TENANT)
                took = time.perf_counter() - began
                meter.stop()
                result["verify"] = {
                    "ok": report.ok,
                    "events": report.events,
                    "seconds": round(took, 1),
                    "events_per_s": round(report.events / took),
                    "cpu_us_per_event": {
                        name: round(used / max(report.events, 1) * 1e6)
                        for name, used in meter.cpu_s.items()
                    },
                }
                print(result["verify"], flush=True)

                listed: list[str] = []
                request = service_pb2.ListEventsRequest(
                    tenant_id=TENANT, order=enums_pb2.SORT_ORDER_OLDEST_FIRST, page_size=1000
                )
                while True:
                    page = await client.list_page(request, timeout_s=120)
                    listed += [e.id for e in page.events]
                    if not page.next_page_token:
                        break
                    request.page_token = page.next_page_token

            env = {**os.environ, "AUDITLOG_ADDR": address, "AUDITLOG_TOKEN": bench_token()}
            jsonl, csv_file, rest = tmp / "export.jsonl", tmp / "export.csv", tmp / "rest.jsonl"
            keys = tmp / "keys.json"
            export: dict[str, Any] = {
                "jsonl_seconds": round(await cli(env, "export", "--tenant", TENANT, out=jsonl), 1),
                "csv_seconds": round(
                    await cli(env, "export", "--tenant", TENANT, "--format", "csv", out=csv_file),
                    1,
                ),
            }
            lines = jsonl.read_text().splitlines()
            events = [i for i, line in enumerate(lines) if '"event"' in line]
            middle = events[len(events) // 2]
            cursor = json.loads(lines[middle])["cursor"]
            await cli(env, "export", "--tenant", TENANT, "--cursor", cursor, out=rest)
            first_half = [
                json.loads(line)["event"]["entry"]["event_id"]
                for line in lines[: middle + 1]
                if '"event"' in line
            ]
            whole = exported_ids(jsonl)
            export.update(
                {
                    "events": len(whole),
                    "csv_rows": len(csv_file.read_text().splitlines()) - 1,
                    "resumed_equals_whole": first_half + exported_ids(rest) == whole,
                    "equals_list_events": whole == listed,
                }
            )
            await cli(env, "keys", out=keys)
            began = time.perf_counter()
            # Offline: no server address, no token; the export file and the keys file only.
            verify_out = tmp / "verify.txt"
            try:
                await cli(
                    {"PATH": os.environ.get("PATH", "")},
                    "verify", "--tenant", TENANT, "--file", str(jsonl), "--keys", str(keys),
                    out=verify_out,
                )  # fmt: skip
                verified = True
            except RuntimeError:
                verified = False
            export["offline_verify"] = {
                "ok": verified,
                "seconds": round(time.perf_counter() - began, 1),
                "says": verify_out.read_text().strip().splitlines()[-1:],
            }
            result["export"] = export
            print(export, flush=True)
    return result


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# The tenant ledger at scale",
        "",
        f"{result['backend']}, {result['args']['events']:,} events of one tenant, code "
        f"{code_version()[:12]}, load {load_average()}.",
        "",
        f"Ingest: {result['ingest']['events_per_s']:,} events/s; GetCheckpoint right after "
        f"(sequences everything acknowledged) took {result['sequenced_after_ingest_s']} s; "
        f"head {result['head']:,}.",
        "",
        "| ListEvents, page size 50, newest first | p50 ms | p99 ms | notes |",
        "|---|---:|---:|---|",
    ]
    for name, row in result["list_first_page"].items():
        notes = ", ".join(f"{k} {v}" for k, v in row.items() if k not in ("p50_ms", "p99_ms"))
        lines.append(f"| {name} | {row['p50_ms']} | {row['p99_ms']} | {notes} |")
    if "verify" not in result:
        return "\n".join(lines) + "\n"
    verify = result["verify"]
    export = result["export"]
    lines += [
        "",
        f"Verify through the API (this process, a client of the server process): "
        f"ok={verify['ok']}, {verify['events']:,} events in {verify['seconds']} s = "
        f"**{verify['events_per_s']:,} events/s** (goal 20,000/s); CPU per event: "
        + ", ".join(f"{k} {v} µs" for k, v in verify.get("cpu_us_per_event", {}).items())
        + ".",
        "",
        f"Export (the CLI): JSONL {export['jsonl_seconds']} s, CSV {export['csv_seconds']} s for "
        f"{export['events']:,} events ({export['csv_rows']:,} CSV rows); resumed from the middle "
        f"equals the whole: {export['resumed_equals_whole']}; equals ListEvents (oldest first): "
        f"{export['equals_list_events']}; offline verify with only the keys file: "
        f"{export['offline_verify']}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument(
        "--list-only", action="store_true", help="ListEvents pages only (for the 1,000,000 run)"
    )
    args = parser.parse_args()
    result = asyncio.run(run(args))
    name = "ledger_scale" + (f"_list_{args.events}" if args.list_only else "")
    write_result(name, result, markdown(result))


if __name__ == "__main__":
    main()
