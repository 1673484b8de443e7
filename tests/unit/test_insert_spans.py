"""Splitting an insert into commands that fit the server's limits on one message and one batch."""

from __future__ import annotations

from auditlog_service.storage import INSERT_MARGIN_BYTES, insert_spans

LIMIT = INSERT_MARGIN_BYTES + 1000  # 1,000 bytes of documents a command


def test_documents_that_fit_go_in_one_command() -> None:
    assert insert_spans([100] * 10, LIMIT, 100) == [(0, 10)]
    assert insert_spans([], LIMIT, 100) == []


def test_a_command_takes_documents_until_the_next_would_pass_the_byte_limit() -> None:
    assert insert_spans([400, 400, 200, 1, 999, 500], LIMIT, 100) == [(0, 3), (3, 5), (5, 6)]


def test_a_command_takes_at_most_the_batch_limit_of_documents() -> None:
    assert insert_spans([1] * 7, LIMIT, 3) == [(0, 3), (3, 6), (6, 7)]


def test_a_document_over_the_limit_goes_alone() -> None:
    assert insert_spans([10, 5000, 10], LIMIT, 100) == [(0, 1), (1, 2), (2, 3)]
