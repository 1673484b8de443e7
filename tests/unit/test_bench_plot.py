"""The summary plot draws the ingest run of the latest code, wherever that run is kept."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bench import plot

ORDER = {"a" * 40: 10, "b" * 40: 11}  # b is the later commit


def write(folder: Path, name: str, data: dict[str, object]) -> None:
    (folder / f"{name}.json").write_text(json.dumps(data))


def test_the_ingest_run_of_the_latest_commit_is_drawn_and_workers_from_the_latest_with_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plot, "commits_behind", lambda code: ORDER.get(code, -1))
    older, newer = "a" * 40, "b" * 40
    write(tmp_path, "ingest_before", {"code": "c" * 40, "paths": {}})
    write(tmp_path, "ingest", {"code": older, "paths": {}, "workers": {}})
    write(tmp_path, "ingest_bbbbbbb", {"code": newer, "paths": {}})
    # Not a run of a commit's name: a scratch file is never drawn.
    write(tmp_path, "ingest_scratch", {"code": newer, "paths": {}, "workers": {}})
    latest = plot.load_ingest(tmp_path)
    assert latest is not None
    assert latest["code"] == newer
    assert "workers" not in latest
    with_workers = plot.load_ingest(tmp_path, "workers")
    assert with_workers is not None
    assert with_workers["code"] == older


def test_without_a_run_after_the_work_the_run_before_is_drawn(tmp_path: Path) -> None:
    write(tmp_path, "ingest_before", {"code": "c" * 40, "paths": {"x": {}}})
    before = plot.load_ingest(tmp_path)
    assert before is not None
    assert before["paths"] == {"x": {}}


def test_a_later_commit_counts_more_commits_behind_it_and_an_unknown_one_none() -> None:
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=plot.RESULTS
    ).stdout.strip()
    assert plot.commits_behind(head) >= 1
    assert plot.commits_behind("f" * 40) == -1
