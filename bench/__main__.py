"""`python -m bench [--full]` (`make bench`): the benchmarks with their baselines, then the plot."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

# name: (the module and its arguments at the default sizes, the same for --full)
STEPS = {
    # LogEvents, StreamEvents and unary LogEvent, each against its baseline.
    # Streams send 100 events per message, as the SDKs' stream helpers do under load.
    "ingest": ("bench.ingest --seconds 3 --stream-batch 100", "bench.ingest --stream-batch 100"),
    # Tail latency, 1,000 idle tails, streaming ingest; --full preloads 1,000,000 events. The
    # idle window stays 30 s: long enough to hold a fair share of the periodic work (beats,
    # tick reads, the safety prober's 2 probes a second, ledger sweeps every 5 s).
    "tail": (
        "bench.tail_bench --preload 20000 --latency-seconds 5 --output tail_bench_quick",
        "bench.tail_bench",
    ),
    # ListEvents first pages on one tenant of that many events.
    "list": (
        "bench.ledger_scale --list-only --events 20000",
        "bench.ledger_scale --list-only --events 1000000",
    ),
    # Ingest with the ledger against without it, one tenant against two, the ledger's lag.
    "ledger": ("bench.ledger_cost --seconds 5", "bench.ledger_cost"),
    # What each step of the batch path costs per event, in process, against its C floor.
    "steps": ("bench.event_cost", "bench.event_cost --repetitions 30"),
    # The stream path as a whole in process, warm caches against cold ones.
    "path": ("bench.stream_path", "bench.stream_path --repetitions 60"),
    # The database's own CPU per insert command and per document, and what it leaves for unary.
    "database": ("bench.database_cost", "bench.database_cost --rounds 5"),
    # Where the server's CPU goes under the batch and unary ingest loads (py-spy samples).
    "profile": ("bench.profile_ingest --seconds 5", "bench.profile_ingest --seconds 10"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true", help="the 1,000,000-event runs")
    parser.add_argument(
        "--only",
        type=lambda text: text.split(","),
        default=list(STEPS),
        help=f"comma-separated, of {','.join(STEPS)} (default all; the plot always)",
    )
    parser.add_argument(
        "--compare-workers", action="store_true", help="ingest: --workers 1 against 2 as well"
    )
    args = parser.parse_args()
    unknown = set(args.only) - set(STEPS)
    if unknown:
        parser.error(f"unknown steps {sorted(unknown)}; choose from {','.join(STEPS)}")
    took: dict[str, float] = {}
    failed = []
    for name in args.only:
        command = STEPS[name][1 if args.full else 0].split()
        if name == "ingest" and args.compare_workers:
            command.append("--compare-workers")
        print(f"== {name}: python -m {' '.join(command)}", flush=True)
        started = time.monotonic()
        # One process per benchmark, as each is run alone: its own event loop and database.
        if subprocess.run([sys.executable, "-m", *command], check=False).returncode != 0:
            failed.append(name)
        took[name] = time.monotonic() - started
    subprocess.run([sys.executable, "-m", "bench.plot"], check=True)
    print(
        "== took "
        + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in took.items())
        + f"; in all {sum(took.values()) / 60:.1f} min"
    )
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)} (the plot shows their earlier results)")


if __name__ == "__main__":
    main()
