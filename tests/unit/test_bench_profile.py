"""The profile bench splits py-spy's stacks by thread and ranks the loop thread's functions."""

from __future__ import annotations

import pytest

from bench.profile_ingest import function_of, package_of, parse_raw, top_entries

ROOT = "<module> (auditlog:6);run (asyncio/runners.py:190);Handle._run (asyncio/events.py:80)"
RAW = "\n".join(
    [
        # 6 samples in the writer, 4 of them in one line of BSON encoding called from it.
        f"{ROOT};write (auditlog_service/storage.py:10);encode (bson/__init__.py:1082) 4",
        f"{ROOT};write (auditlog_service/storage.py:12) 2",
        # The same function at another line: one function, two lines.
        f"{ROOT};prepare (auditlog_service/convert.py:5);prepare (auditlog_service/convert.py:9) 3",
        f"{ROOT};recorded_form (auditlog/ledger.py:58) 1",
        # Another thread: counted apart, never ranked.
        "Thread._bootstrap (threading.py:1002);_worker (concurrent/futures/thread.py:81) 7",
        "not a stack line",
    ]
)


def test_stacks_are_split_into_the_loop_thread_and_the_others() -> None:
    samples = parse_raw(RAW)
    assert samples.loop_total == 10
    assert samples.other == 7


def test_functions_rank_by_own_time_and_with_callees_without_the_roots() -> None:
    top = top_entries(parse_raw(RAW), most=10)
    own = dict(top["own"])
    assert own["encode (bson/__init__.py)"] == pytest.approx(0.4)
    assert own["write (auditlog_service/storage.py)"] == pytest.approx(0.2)
    inclusive = dict(top["inclusive"])
    assert inclusive["write (auditlog_service/storage.py)"] == pytest.approx(0.6)
    # A function on a stack twice (recursion, or two of its lines) counts once per sample.
    assert inclusive["prepare (auditlog_service/convert.py)"] == pytest.approx(0.3)
    # Every stack passes through the roots: they say nothing and are left out.
    assert "Handle._run (asyncio/events.py)" not in inclusive
    assert top["inclusive"][0][0] == "write (auditlog_service/storage.py)"
    assert len(top_entries(parse_raw(RAW), most=2)["own"]) == 2


def test_packages_name_this_projects_modules_and_other_top_level_packages() -> None:
    packages = dict(top_entries(parse_raw(RAW), most=10)["packages"])
    assert packages == pytest.approx(
        {
            "bson": 0.4,
            "auditlog_service.convert": 0.3,
            "auditlog_service.storage": 0.2,
            "auditlog.ledger": 0.1,
        }
    )
    assert package_of("EpollSelector.select (selectors.py:468)") == "selectors"
    assert package_of("_do_batched_op_msg (pymongo/message.py:691)") == "pymongo"
    assert function_of("f (a/b.py:12)") == "f (a/b.py)"


def test_the_main_thread_of_python_m_is_the_loop_thread_and_one_started_by_c_code_is_not() -> None:
    samples = parse_raw(
        "_run_module_as_main (<frozen runpy>:198);main (bench/ingest.py:880) 5\n"
        "Thread._bootstrap (threading.py:1002);Thread.run (threading.py:982) 2\n"
        # A thread that C code started (gRPC's), in a Python callback.
        "_handle_callback (grpc/_cython/cygrpc.pyx:12) 3"
    )
    assert (samples.loop_total, samples.other) == (5, 5)


def test_no_loop_samples_give_empty_tables() -> None:
    top = top_entries(parse_raw("Thread._bootstrap (threading.py:1002) 3"), most=5)
    assert top == {"own": [], "inclusive": [], "packages": []}
