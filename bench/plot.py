"""bench/results/summary.png: the benchmarks' ratios against goals, CPU per event, latencies."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Not bench.common's: importing that makes keys and loads the service, none of which a plot needs.
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Bar:
    label: str
    value: float
    goal: float | None = None
    before: float | None = None  # the same measure before issue 11's work
    lower_is_better: bool = False

    def meets_goal(self) -> bool:
        if self.goal is None:
            return True
        return self.value <= self.goal if self.lower_is_better else self.value >= self.goal


def load(folder: Path, name: str) -> dict[str, Any] | None:
    path = folder / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def commits_behind(code: str) -> int:
    """How many commits the history up to `code` holds (-1 when git does not know it): the
    later of two commits on one line has more."""
    try:
        answer = subprocess.run(
            ["git", "rev-list", "--count", code],
            capture_output=True,
            text=True,
            check=True,
            cwd=RESULTS,
        )
    except (OSError, subprocess.CalledProcessError):
        return -1
    return int(answer.stdout.strip())


def load_ingest(folder: Path, holding: str = "paths") -> dict[str, Any] | None:
    """The ingest run of the latest code with a `holding` section (`ingest.json`, or a run
    kept beside it as `ingest_<commit>.json`); else the run before issue 11's work."""
    runs = [
        run
        for path in folder.glob("ingest*.json")
        if path.stem == "ingest" or re.fullmatch(r"ingest_[0-9a-f]{7,40}", path.stem)
        if holding in (run := json.loads(path.read_text()))
    ]
    if not runs:
        return load(folder, "ingest_before")
    return max(runs, key=lambda run: commits_behind(str(run.get("code", ""))))


def sized(folder: Path, pattern: str) -> list[tuple[int, dict[str, Any]]]:
    """Result files named like `pattern` with a size in it, smallest first."""
    found = []
    for path in folder.glob("*.json"):
        match = re.fullmatch(pattern, path.stem)
        if match:
            found.append((int(match.group(1)), json.loads(path.read_text())))
    return sorted(found, key=lambda item: item[0])


def before_of(path: dict[str, Any]) -> dict[str, float]:
    """This bench's own run before the work when there is one, else issue 11's figures."""
    before: dict[str, float] = path.get("before_run") or path["before"]
    return before


def ratios(folder: Path) -> list[Bar]:
    bars = []
    ingest = load_ingest(folder)
    for path in (ingest or {}).get("paths", {}).values():
        before = before_of(path)
        against = "bare grpc.aio echo" if path["baseline"] == "echo" else "raw insert_many"
        bars.append(
            Bar(f"{path['label']} / {against}", path["ratio"], path["goal"], before["ratio"])
        )
        if "ratio_events_only" in path:
            bars.append(
                Bar(
                    f"{path['label']} / {against} of the event docs only",
                    path["ratio_events_only"],
                    path["goal"],
                    before.get("ratio_events_only"),
                )
            )
    for path in (load_ingest(folder, "workers") or {}).get("workers", {}).values():
        bars.append(Bar(f"{path['label']}: 2 workers / 1", path["ratio_2_to_1"]))
    cost = load(folder, "ledger_cost")
    if cost:
        bars.append(Bar("ledger on / off (ingest)", cost["ledger_vs_none"]["ratio"], 0.8))
        bars.append(
            Bar("2 replicas: one tenant / two (ingest)", cost["one_tenant_vs_two"]["ratio"], 0.9)
        )
    return bars


def cpu_per_event(folder: Path) -> list[Bar]:
    ingest = load_ingest(folder)
    bars = []
    for path in (ingest or {}).get("paths", {}).values():
        goal = 20.0 if path["rpc"] != "LogEvent" else None  # the goal is the batch path's
        cpu = path["sides"]["service"]["cpu_us_per_event"]["service"]
        bars.append(Bar(path["label"], cpu, goal, before_of(path)["service_cpu_us"], True))
    return bars


def latencies(folder: Path) -> list[tuple[Bar, Bar]]:
    """(p50, p99) pairs; a goal is on the p99."""
    pairs = []
    for tail in (load(folder, "tail_bench_quick"), load(folder, "tail_bench")):
        if tail is None or "latency" not in tail:
            continue
        events = tail["preload"]["events"]
        for key, label in (("same_process", "same process"), ("cross_process", "across processes")):
            case = tail["latency"][key]
            lat = case["ack_to_receipt"]
            name = f"ack -> tail, {label} ({events:,} preloaded)"
            p99 = Bar(name, lat["p99_ms"], case.get("goal_p99_ms"), lower_is_better=True)
            pairs.append((Bar(name, lat["p50_ms"]), p99))
    cost = load(folder, "ledger_cost")
    if cost:
        lag = cost["ledger_lag"]
        p99 = Bar("ledger lag", lag["p99_ms"], 1000.0, lower_is_better=True)
        pairs.append((Bar("ledger lag", lag["p50_ms"]), p99))
        tail_lag = cost["tail_lag"]
        name = "ack -> TailEvents"
        pairs.append((Bar(name, tail_lag["p50_ms"]), Bar(name, tail_lag["p99_ms"])))
    scales = sized(folder, r"ledger_scale_list_(\d+)")
    full = load(folder, "ledger_scale")
    if full:
        scales.append((full["args"]["events"], full))
    for events, scale in sorted(scales, key=lambda item: item[0]):
        for case, row in scale["list_first_page"].items():
            if "paged to the end" in case:
                continue  # every page of a rare customer: a sum of pages, not one call
            name = f"ListEvents first page, {case} ({events:,} events)"
            pairs.append((Bar(name, row["p50_ms"]), Bar(name, row["p99_ms"])))
    return pairs


def draw(folder: Path, output: Path) -> None:
    # Imported here: matplotlib is the `bench` extra, and nothing else needs it.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratio_bars, cpu_bars, latency_pairs = ratios(folder), cpu_per_event(folder), latencies(folder)
    rows = [len(rows) for rows in (ratio_bars, cpu_bars, latency_pairs) if rows]
    if not rows:
        raise SystemExit(f"no results to plot in {folder}")
    figure, axes = plt.subplots(
        len(rows),
        1,
        figsize=(11, 1.5 + 0.32 * sum(rows) + 1.2 * len(rows)),
        gridspec_kw={"height_ratios": [max(r, 2) for r in rows]},
        squeeze=False,
    )
    boxes = iter(axes[:, 0])
    if ratio_bars:
        bars_panel(
            next(boxes),
            ratio_bars,
            "throughput ratios (higher is better); goals 0.8 and 0.9 dashed",
            lines=(0.8, 0.9),
        )
    if cpu_bars:
        bars_panel(
            next(boxes),
            cpu_bars,
            "ingest: service CPU per event, µs, log scale (lower is better); batch goal 20 µs",
            lines=(20.0,),
            log=True,
        )
    if latency_pairs:
        latency_panel(next(boxes), latency_pairs)
    ingest = load_ingest(folder)
    if ingest:
        figure.suptitle(
            f"auditlog benchmarks ({ingest.get('backend')}, {ingest.get('machine_cpus')} CPUs; "
            f"ingest at {ingest.get('code', '')[:12]}, load {ingest.get('load_before')}); "
            "open markers: before issue 11's work\n"
            "each row from its bench/results/<name>.json as last written: see the .md beside it "
            "for when, where and how",
            fontsize=10,
        )
    figure.tight_layout()
    figure.savefig(output, dpi=110)
    plt.close(figure)


def bars_panel(
    axis: Any, bars: list[Bar], title: str, lines: tuple[float, ...], log: bool = False
) -> None:
    positions = range(len(bars))
    met = [
        "tab:grey" if b.goal is None else "tab:green" if b.meets_goal() else "tab:red" for b in bars
    ]
    axis.barh(positions, [b.value for b in bars], color=met, alpha=0.8)
    for y, bar in zip(positions, bars, strict=True):
        axis.annotate(
            f"{bar.value:g}", (bar.value, y), xytext=(3, 0), textcoords="offset points",
            va="center", fontsize=8,
        )  # fmt: skip
        if bar.before is not None:
            axis.plot(bar.before, y, marker="o", mfc="none", mec="black", ms=6)
        if bar.goal is not None:
            axis.plot(bar.goal, y, marker="|", color="black", ms=14, mew=2)
    for x in lines:
        axis.axvline(x, color="grey", linestyle="--", linewidth=1)
    if log:
        axis.set_xscale("log")
    axis.set_yticks(list(positions), [b.label for b in bars], fontsize=8)
    axis.invert_yaxis()
    axis.set_title(title, fontsize=9, loc="left")
    axis.margins(x=0.12)


def latency_panel(axis: Any, pairs: list[tuple[Bar, Bar]]) -> None:
    positions = range(len(pairs))
    p50 = [max(a.value, 0.01) for a, _ in pairs]  # a log axis: nothing at or below zero
    p99 = [max(b.value, 0.01) for _, b in pairs]
    colours = ["tab:blue" if high.meets_goal() else "tab:red" for _, high in pairs]
    axis.barh(positions, p99, color=colours, alpha=0.35)
    axis.barh(positions, p50, color=colours, alpha=0.9, height=0.4)
    for y, (_, high) in zip(positions, pairs, strict=True):
        axis.annotate(
            f"p99 {high.value:g}", (max(high.value, 0.01), y), xytext=(3, 0),
            textcoords="offset points", va="center", fontsize=8,
        )  # fmt: skip
        if high.goal is not None:
            axis.plot(high.goal, y, marker="|", color="black", ms=14, mew=2)
    axis.set_xscale("log")
    axis.margins(x=0.15)
    axis.set_yticks(list(positions), [a.label for a, _ in pairs], fontsize=8)
    axis.invert_yaxis()
    axis.set_title(
        "latencies, ms (log scale): p50 dark, p99 light; | marks a p99 goal, red misses it",
        fontsize=9,
        loc="left",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the .json files")
    parser.add_argument("--output", type=Path, help="default: <results>/summary.png")
    args = parser.parse_args()
    output = args.output or args.results / "summary.png"
    draw(args.results, output)
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
