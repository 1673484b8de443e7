"""rpcs.database_failures: what a database failure becomes in the service's errors."""

from __future__ import annotations

from pymongo.errors import ExecutionTimeout, OperationFailure, ServerSelectionTimeoutError

from auditlog_service.errors import (
    AuditLogError,
    DatabaseTimeout,
    DatabaseUnavailable,
    InvalidArgument,
    QueryTimeout,
)
from auditlog_service.rpcs import database_failures


def _raised(read: bool, error: Exception) -> Exception:
    """What leaves a database_failures block that raised `error`."""
    try:
        with database_failures(read=read):
            raise error
    except Exception as left:  # the test is about which exception leaves
        return left
    raise AssertionError("nothing was raised")


def test_nothing_happens_without_a_failure() -> None:
    for read in (True, False):
        with database_failures(read=read):
            pass


def test_an_outage_is_worded_for_a_write_or_a_read() -> None:
    outage = DatabaseUnavailable("ServerSelectionTimeoutError")
    assert _raised(False, outage) is outage
    as_read = _raised(True, outage)
    assert isinstance(as_read, DatabaseUnavailable)
    assert as_read is not outage
    assert as_read.message != outage.message
    assert isinstance(_raised(True, DatabaseTimeout("NetworkTimeout")), QueryTimeout)


def test_driver_errors_become_service_errors_with_their_cause() -> None:
    timeout = ExecutionTimeout("operation exceeded time limit")
    assert isinstance(_raised(False, timeout), DatabaseTimeout)
    assert isinstance(_raised(True, timeout), QueryTimeout)
    assert _raised(True, timeout).__cause__ is timeout
    no_server = ServerSelectionTimeoutError("no servers")
    assert type(_raised(False, no_server)) is DatabaseUnavailable
    # A failure the repository does not classify is still the database's, never internal.
    odd = OperationFailure("something else", code=2)
    assert type(_raised(False, odd)) is DatabaseUnavailable
    assert _raised(False, odd).__cause__ is odd


def test_other_errors_pass_untouched() -> None:
    for read in (True, False):
        for error in (InvalidArgument([]), KeyError("x"), AuditLogError("y")):
            assert _raised(read, error) is error
