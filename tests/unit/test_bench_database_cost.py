"""The database-cost bench reports CPU per insert command and turns each insert that carries a
group of unary calls into that group's share per call."""

from __future__ import annotations

from typing import Any

import bson

from bench.database_cost import documents, group_rows, markdown


def row(k: int, callers: int, database: float | None, client: float) -> dict[str, Any]:
    return {
        "documents": k,
        "callers": callers,
        "commands": 10,
        "database_us": database,
        "client_us": client,
    }


def test_an_insert_of_k_documents_is_a_group_of_k_minus_its_outbox_and_commit() -> None:
    rows = [row(1, 1, 500.0, 600.0), row(3, 1, 700.0, 650.0), row(12, 4, 1500.0, 700.0)]
    # One document cannot carry a group (an event, its outbox and its commit are three).
    assert group_rows(rows) == [(1, 1, 700.0, 650.0), (10, 4, 150.0, 70.0)]
    assert group_rows([row(12, 1, None, 700.0)]) == [(10, 1, None, 70.0)]


def test_documents_are_distinct_stored_events() -> None:
    decoded = [bson.decode(doc.raw) for doc in documents(3, 7)]
    assert len({doc["_id"] for doc in decoded}) == 3
    assert all(doc["tenant_id"] == "db-cost" and doc["type"] for doc in decoded)


def test_the_report_bounds_the_unary_ratio_by_group_size() -> None:
    data: dict[str, Any] = {
        "backend": "ferretdb-sqlite",
        "rounds": 1,
        "code": "0" * 40,
        "load_before": [0.0],
        "load_after": [0.0],
        "per_command": [row(1, 1, 500.0, 600.0), row(12, 4, 1600.0, 700.0)],
        "echo": {"echo": 1000.0, "echo_grouped": 1000.0, "service_database": 300.0},
    }
    text = markdown(data)
    assert "| 12 | 4 | 10 | 1,600 µs | 133 µs | 700 µs |" in text
    # A group of 10 costs the database 160 µs a call: 1,000 / (1,000 + 160).
    assert "| 10 | 4 | 160 µs | 70 µs | 0.86 |" in text
    unseen = [row(12, 1, None, 700.0)]
    text = markdown({**data, "per_command": unseen})
    assert "| 12 | 1 | 10 | - | - | 700 µs |" in text
    assert "A unary call's share" not in text
