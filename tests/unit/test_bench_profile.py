"""The profile bench splits py-spy's stacks by thread and ranks the loop thread's functions, and
sums perf's shared objects by kind."""

from __future__ import annotations

import pytest

from bench.profile_ingest import (
    function_of,
    object_kinds,
    package_of,
    parse_perf_objects,
    parse_raw,
    top_entries,
)

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


PERF_REPORT = """\
# To display the perf.data header info, please use --header/--header-only options.
#
# Total Lost Samples: 0
#
# Samples: 2K of event 'cpu-clock:ppp'
# Event count (approx.): 4776776772
#
# Overhead       Samples  Shared Object
# ........  ............  ..........................
#
    51.00%          1020  libpython3.11.so.1.0
    19.50%           390  [kernel.kallsyms]
    16.50%           330  cygrpc.cpython-311-x86_64-linux-gnu.so
     7.50%           150  libc.so.6
     4.00%            80  _native.so
     1.00%            20  _asyncio.cpython-311-x86_64-linux-gnu.so
     0.30%             6  libstdc++.so.6.0.30
     0.20%             4  ld-linux-x86-64.so.2
"""


def test_perfs_report_gives_each_shared_objects_samples_and_leaves_comments_out() -> None:
    counts = parse_perf_objects(PERF_REPORT)
    assert counts["libpython3.11.so.1.0"] == 1020
    assert counts["[kernel.kallsyms]"] == 390
    assert sum(counts.values()) == 2000
    assert parse_perf_objects("# Samples: 0\n#\n") == {}


def test_shared_objects_are_summed_by_kind_largest_first() -> None:
    kinds = object_kinds(parse_perf_objects(PERF_REPORT))
    assert kinds[0] == ("the interpreter (libpython)", pytest.approx(0.51))
    as_dict = dict(kinds)
    assert as_dict["the kernel"] == pytest.approx(0.195)
    assert as_dict["gRPC's C and Cython (cygrpc)"] == pytest.approx(0.165)
    assert as_dict["the native write path (_native)"] == pytest.approx(0.04)
    # Objects of no named kind are summed as one row.
    assert as_dict["other"] == pytest.approx(0.005)
    assert sum(as_dict.values()) == pytest.approx(1.0)
    assert [share for _, share in kinds] == sorted((share for _, share in kinds), reverse=True)
