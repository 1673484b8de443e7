"""Cross-language end-to-end test: Go, Java and TypeScript against one live server, Python checks.

One `auditlog serve` process on the session's database server. TypeScript tails a fresh
co-browsing session from the beginning; once it prints that it caught up, Java streams M
co-browsing events into that session over StreamEvents; meanwhile Go logs N general events. Python
then rebuilds every event from the shared spec (e2e/README.md) and checks with ListEvents that each
arrived exactly once with equal fields, whichever language wrote it, and that the tail saw
sequences 1..M in order with the events Java sent.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2, timestamp_pb2

from auditlog.v1 import audit_event_pb2, enums_pb2, payloads_pb2, service_pb2, service_pb2_grpc
from auditlog_service.devdb import PROJECT_ROOT, free_port, wait_for_serving
from auditlog_service.devkeys import DevTls, ensure_dev_tls
from tests.conftest import USING_FERRETDB, server_env, token

GENERAL_EVENTS = 28  # every general event type twice
COBROWSE_EVENTS = 200
# Bound of each build; cold runs fetch every toolchain's dependencies and compile the Java stubs.
STEP_TIMEOUT_S = 300.0
# Bound of each language program's run, and of the wait for the tail to catch up.
PROGRAM_TIMEOUT_S = 90.0
INPUT_MASK = "********"

GO_DIR = PROJECT_ROOT / "e2e" / "go"
JAVA_DIR = PROJECT_ROOT / "clients" / "java"
TS_DIR = PROJECT_ROOT / "clients" / "typescript"
AUDITLOG = str(Path(sys.executable).with_name("auditlog"))

MISSING_TOOLS = [t for t in ("go", "node", "npm", "mvn", "java") if shutil.which(t) is None]
pytestmark = pytest.mark.skipif(
    bool(MISSING_TOOLS), reason=f"the cross-language test needs {', '.join(MISSING_TOOLS)} on PATH"
)

Event = audit_event_pb2.AuditEvent


# ---- the shared spec (e2e/README.md), rebuilt in Python ----------------------------------------


@dataclass(frozen=True)
class Spec:
    tenant: str
    session: str
    base_ms: int


def ms(millis: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=millis // 1000, nanos=millis % 1000 * 1_000_000)


def struct(values: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out


def general_event(spec: Spec, i: int) -> Event:
    """General event i (1-based) as the server stores it: as Go sent it, plus its type."""
    event = Event(
        id=f"go-{i:04d}",
        tenant_id=spec.tenant,
        tenant_user_id=f"agent-{i % 5}",
        occur_time=ms(spec.base_ms + 1000 * i + i),
    )
    customer, call, role = f"cust-{i % 7}", f"call-{i}", f"role-{i % 3}"
    match (i - 1) % 14:
        case 0:
            event.start_call.MergeFrom(
                payloads_pb2.StartCallAttributes(call_id=call, customer_id=customer)
            )
        case 1:
            event.messenger_send.customer_id = customer
        case 2:
            event.live_view.cobrowse_session_id = spec.session
        case 3:
            event.logged_in.SetInParent()
        case 4:
            event.online_status_online.SetInParent()
        case 5:
            event.online_status_offline.SetInParent()
        case 6:
            event.status_change.MergeFrom(
                payloads_pb2.StatusChangeAttributes(
                    customer_id=customer,
                    previous_status="" if i % 2 == 0 else "Unresolved",
                    status="Done ✓",
                    message_id=f"msg-{i}",
                )
            )
        case 7:
            event.role_change.MergeFrom(
                payloads_pb2.RoleChangeAttributes(
                    role_name=role, affected_tenant_user_id=f"user-{i}"
                )
            )
        case 8:
            event.permission_change.MergeFrom(
                payloads_pb2.PermissionChangeAttributes(
                    role_name=role, permissions=[f"perm-{p}" for p in range(1, i % 4 + 2)]
                )
            )
        case 9:
            event.plugin_change.MergeFrom(
                payloads_pb2.PluginChangeAttributes(
                    plugin=f"plugin-{i}",
                    configuration=struct({"enabled": i % 2 == 1, "level": i, "name": f"p-{i}"}),
                )
            )
        case 10:
            event.settings_change.MergeFrom(
                payloads_pb2.SettingsChangeAttributes(
                    section="widget",
                    configuration=struct(
                        {
                            "color": f"c-{i}",
                            "size": 1.5 * i,
                            "tags": ["a", "b"],
                            "nested": {"k": i},
                        }
                    ),
                )
            )
        case 11:
            start = spec.base_ms + 3_600_000 * i
            event.meeting_change.MergeFrom(
                payloads_pb2.MeetingChangeAttributes(
                    action=enums_pb2.MEETING_ACTION_DELETE
                    if i % 2 == 0
                    else enums_pb2.MEETING_ACTION_CREATE_OR_UPDATE,
                    conference=payloads_pb2.Conference(
                        id=f"conf-{i}",
                        title=f"Meeting {i}",
                        start_time=ms(start),
                        end_time=ms(start + 1_800_000),
                        extra=struct({"room": f"r-{i}"}),
                    ),
                )
            )
        case 12:
            event.conference_agent.MergeFrom(
                payloads_pb2.ConferenceAgentAttributes(call_id=call, customer_id=customer)
            )
        case _:
            event.conference_recording.MergeFrom(
                payloads_pb2.ConferenceRecordingAttributes(
                    call_id=call,
                    customer_id=customer,
                    joined_agent_ids=["agent-1", "agent-2"],
                    tags=[f"t-{i}"],
                )
            )
    return with_type(event)


def cobrowse_event(spec: Spec, j: int) -> Event:
    """Co-browsing event j (1-based) as the server stores it: as Java sent it, plus its type,
    sequence j and, for a sensitive input, the mask."""
    agent = j % 3 == 0
    event = Event(
        id=f"java-{j:04d}",
        tenant_id=spec.tenant,
        tenant_user_id=f"agent-{j % 5}" if agent else "",
        occur_time=ms(spec.base_ms + 137 * j),
        cobrowse=audit_event_pb2.CobrowseContext(
            session_id=spec.session,
            actor=enums_pb2.ACTOR_AGENT if agent else enums_pb2.ACTOR_CUSTOMER,
        ),
        sequence=j,
    )
    even = j % 2 == 0
    match (j - 1) % 7:
        case 0:
            event.click.element.MergeFrom(payloads_pb2.Element(name=f"button-{j}", id=f"btn-{j}"))
        case 1:
            event.scroll.position.MergeFrom(
                payloads_pb2.ScrollPosition(top=12.5 * j, left=0.25 * (j % 4))
            )
            if even:
                event.scroll.element.id = f"panel-{j}"
        case 2:
            event.form.form.name = f"form-{j}"
        case 3:
            sensitive = j % 4 == 0
            event.input.MergeFrom(
                payloads_pb2.InputAttributes(
                    text=INPUT_MASK if sensitive else f"text-{j}",
                    element=payloads_pb2.Element(id=f"input-{j}"),
                    sensitive=sensitive,
                    masked=sensitive,
                )
            )
        case 4:
            event.page_change.MergeFrom(
                payloads_pb2.PageChangeAttributes(
                    page_name=f"Página {j} ✓", url=f"https://shop.example/p/{j}"
                )
            )
        case 5:
            event.selection.selected_text = f"selected {j}"
            if even:
                event.selection.element.name = f"para-{j}"
        case _:
            event.custom_event.event_type = f"custom-{j % 3}"
            event.custom_event.value.struct_value.update(
                {"n": j, "flags": [True, False], "label": f"v-{j}"}
            )
    return with_type(event)


def with_type(event: Event) -> Event:
    """Sets the event_type the server derives from the payload: the payload field's name in
    upper case (start_call -> EVENT_TYPE_START_CALL), but page_change -> EVENT_TYPE_PAGECHANGE."""
    field = event.WhichOneof("payload")
    assert field is not None
    name = "PAGECHANGE" if field == "page_change" else field.upper()
    event.event_type = enums_pb2.EventType.Value(f"EVENT_TYPE_{name}")
    return event


def millis(ts: timestamp_pb2.Timestamp) -> int:
    return ts.seconds * 1000 + ts.nanos // 1_000_000


def differences(got: Event, want: Event) -> str:
    """Empty when `got` is `want` apart from a present receive_time (and the ledger's fields);
    else the differing fields."""
    if not got.HasField("receive_time"):
        return f"{want.id}: no receive_time"
    stored = Event()
    stored.CopyFrom(got)
    stored.ClearField("receive_time")
    # The ledger's place is filled in once the event is sequenced, which a test cannot foresee.
    stored.ClearField("ledger_sequence")
    stored.ClearField("ledger_hash")
    if stored == want:
        return ""
    a, b = json_format.MessageToDict(stored), json_format.MessageToDict(want)
    fields = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    return f"{want.id}: " + "; ".join(f"{k} is {a.get(k)!r}, want {b.get(k)!r}" for k in fields)


# ---- processes ---------------------------------------------------------------------------------


def toolchain_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of tools/test-sdks: every cache in the project's ignored .tools folder."""
    tools = PROJECT_ROOT / ".tools"
    env = dict(os.environ)
    for name, value in (
        ("GOMODCACHE", str(tools / "gomodcache")),
        ("GOCACHE", str(tools / "gocache")),
        ("GOFLAGS", "-modcacherw"),
        ("GOTOOLCHAIN", "local"),
        ("npm_config_cache", str(tools / "npm-cache")),
    ):
        env.setdefault(name, value)
    env.update(extra)
    return env


class Program:
    """A child process in its own process group; its stderr (and stdout unless piped) in a log."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: dict[str, str],
        log_dir: Path,
        stdin: bool = False,
        stdout: bool = False,
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.log: IO[bytes] = self.log_path.open("wb")
        self.started = time.monotonic()
        self.ended: float | None = None
        self.process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout else self.log,
            stderr=self.log,
            start_new_session=True,
        )
        # Notes when the program ends, so that its run time is right whenever the test waits.
        self._waiter = threading.Thread(target=self._wait_for_exit, daemon=True)
        self._waiter.start()

    def _wait_for_exit(self) -> None:
        self.process.wait()
        self.ended = time.monotonic()

    @property
    def elapsed(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def check(self, timeout_s: float) -> None:
        """Waits for the program and fails the test unless it exits with status 0."""
        try:
            code = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.name} did not finish within {timeout_s:.0f}s\n{self.output()}")
        if code != 0:
            pytest.fail(f"{self.name} failed with exit status {code}\n{self.output()}")

    def kill(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def output(self, lines: int = 60) -> str:
        self.log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"--- {self.name} ({self.log_path}) ---\n" + "\n".join(text)

    def close(self) -> None:
        self.kill()
        self._waiter.join(10)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        self.log.close()


class LineReader:
    """Reads a program's stdout lines on a thread; `caught_up` is set by the tail's signal line."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.lines: list[str] = []
        self.caught_up = threading.Event()
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode()
            self.lines.append(line)
            if line.startswith('{"caughtUp"'):
                self.caught_up.set()


@pytest.fixture
def programs() -> Iterator[list[Program]]:
    """Every program the test starts; whatever still runs at the end is killed."""
    started: list[Program] = []
    try:
        yield started
    finally:
        for program in reversed(started):
            program.close()


@dataclass
class Builds:
    """The three builds, started in parallel with the server and waited on by the test."""

    programs: list[Program]
    go_binary: Path
    java_classpath: Path

    def wait(self) -> str:
        """Waits for every build; returns how long each took."""
        for build in self.programs:
            build.check(STEP_TIMEOUT_S)
        return ", ".join(f"{build.name} {build.elapsed:.1f}s" for build in self.programs)


def ensure_typescript_dependencies(env: dict[str, str]) -> None:
    """`npm ci` only when package-lock.json changed since the last install, as tools/test-sdks."""
    marker = TS_DIR / "node_modules" / ".installed"
    lock = TS_DIR / "package-lock.json"
    if marker.exists() and marker.stat().st_mtime >= lock.stat().st_mtime:
        return
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=TS_DIR, env=env, check=True, timeout=STEP_TIMEOUT_S,
    )  # fmt: skip
    marker.touch()


@pytest.fixture
def builds(programs: list[Program], tmp_path: Path) -> Builds:
    """Starts the builds: vet and compile the Go writer; compile the Java SDK and write its runtime
    classpath (the pom pins exec:java's mainClass to the example, so the streamer runs on `java`);
    type-check the TypeScript tail."""
    env = toolchain_env({})
    ensure_typescript_dependencies(env)
    go_binary = tmp_path / "e2e-go"
    classpath = tmp_path / "java.classpath"
    maven = ["mvn", "-B", "-q", "-ntp", f"-Dmaven.repo.local={PROJECT_ROOT / '.tools' / 'm2'}"]
    commands = [
        ("go-build", ["sh", "-c", f"go vet . && go build -o '{go_binary}' ."], GO_DIR),
        (
            "java-build",
            [*maven, "-Dstyle.color=never", "compile",
             "org.apache.maven.plugins:maven-dependency-plugin:2.8:build-classpath",
             f"-Dmdep.outputFile={classpath}", "-Dmdep.includeScope=runtime"],
            JAVA_DIR,
        ),
        ("typescript-check", ["node_modules/.bin/tsc", "--noEmit", "-p", "e2e"], TS_DIR),
    ]  # fmt: skip
    for name, argv, cwd in commands:
        programs.append(Program(name, argv, cwd=cwd, env=env, log_dir=tmp_path))
    return Builds(programs[-len(commands) :], go_binary, classpath)


@pytest.fixture
def tls(tmp_path: Path) -> DevTls:
    return ensure_dev_tls(tmp_path / "tls")


@pytest.fixture
def server_address(mongodb_uri: str, tmp_path: Path, tls: DevTls) -> Iterator[str]:
    """One `auditlog serve` process on a database of its own, with TLS and bearer tokens on as in
    production; its log is server.log in tmp_path."""
    address = f"localhost:{free_port()}"
    env = {**os.environ, "AUDITLOG_LOG_LEVEL": "WARNING", **server_env()}
    if USING_FERRETDB:
        env["AUDITLOG_WRITE_CONCERN"] = "1"
    # Lists in occur-time order, which the checks below compare to the spec (the ledger's order
    # is the order of arrival from four programs at once).
    env["AUDITLOG_LIST_FROM"] = "index"
    with (tmp_path / "server.log").open("wb") as log:
        server = subprocess.Popen(
            [AUDITLOG, "serve", "--listen", address, "--mongodb-uri", mongodb_uri,
             "--database", f"e2e_{uuid.uuid4().hex[:12]}", "--tls-cert", str(tls.server_cert),
             "--tls-key", str(tls.server_key)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for_serving(address, timeout_s=60, ca_file=tls.ca_file)
        yield address
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# ---- the test ----------------------------------------------------------------------------------


@pytest.mark.timeout(900)  # a cold run fetches every toolchain's dependencies first
def test_go_java_typescript_python(
    builds: Builds, server_address: str, programs: list[Program], tmp_path: Path, tls: DevTls
) -> None:
    started = time.monotonic()
    run_id = uuid.uuid4().hex[:10]
    spec = Spec(
        tenant=f"e2e-{run_id}",
        session=f"session-{run_id}",
        base_ms=int(time.time()) * 1000,
    )
    env = toolchain_env(
        {
            "AUDITLOG_ADDR": server_address,
            "AUDITLOG_TOKEN": token(),
            "AUDITLOG_TLS_CA": str(tls.ca_file),
            "E2E_TENANT": spec.tenant,
            "E2E_SESSION": spec.session,
            "E2E_BASE_MS": str(spec.base_ms),
            "E2E_GENERAL_EVENTS": str(GENERAL_EVENTS),
            "E2E_COBROWSE_EVENTS": str(COBROWSE_EVENTS),
            "E2E_TIMEOUT_MS": str(int(PROGRAM_TIMEOUT_S * 1000)),
        }
    )

    def start(name: str, argv: Sequence[str], cwd: Path, **kw: bool) -> Program:
        program = Program(name, argv, cwd=cwd, env=env, log_dir=tmp_path, **kw)
        programs.append(program)
        return program

    build_times = builds.wait()
    build_wait_s = time.monotonic() - started

    # The tail first; Java connects, then waits on stdin until the tail caught up; Go alongside.
    tail = start(
        "typescript-tail", ["node", "--import", "tsx", "e2e/tail-session.ts"], TS_DIR, stdout=True
    )
    assert tail.process.stdout is not None
    tail_lines = LineReader(tail.process.stdout)
    classpath = f"{JAVA_DIR / 'target' / 'classes'}:{builds.java_classpath.read_text().strip()}"
    java = start(
        "java-streamer",
        ["java", "-cp", classpath, "io.auditlog.e2e.CobrowseStreamer", "--wait-for-start"],
        JAVA_DIR,
        stdin=True,
    )
    go = start("go-writer", [str(builds.go_binary)], GO_DIR)

    deadline = time.monotonic() + PROGRAM_TIMEOUT_S
    while not tail_lines.caught_up.wait(0.05):
        if tail.process.poll() is not None or time.monotonic() > deadline:
            tail.kill()
            pytest.fail(f"the TypeScript tail did not catch up\n{tail.output()}")
    assert java.process.stdin is not None
    with contextlib.suppress(BrokenPipeError):  # Java failed already: its check says why
        java.process.stdin.write(b"start\n")
        java.process.stdin.close()

    for program in (go, java, tail):
        program.check(PROGRAM_TIMEOUT_S)
    tail_lines.thread.join(10)
    programs_done = time.monotonic()

    general = {e.id: e for e in (general_event(spec, i) for i in range(1, GENERAL_EVENTS + 1))}
    cobrowse = [cobrowse_event(spec, j) for j in range(1, COBROWSE_EVENTS + 1)]
    check_tail(tail_lines.lines, cobrowse)
    credentials = grpc.composite_channel_credentials(
        grpc.ssl_channel_credentials(tls.ca_file.read_bytes()),
        grpc.access_token_call_credentials(token()),
    )
    with grpc.secure_channel(server_address, credentials) as channel:
        check_stored(service_pb2_grpc.AuditLogServiceStub(channel), spec, general, cobrowse)
    print(
        f"\ne2e: builds ({build_times}; waited {build_wait_s:.1f}s); "
        f"go {go.elapsed:.1f}s, java {java.elapsed:.1f}s, typescript {tail.elapsed:.1f}s; "
        f"checks {time.monotonic() - programs_done:.1f}s"
    )


def check_tail(lines: list[str], cobrowse: list[Event]) -> None:
    """The tail caught up on an empty session, then saw Java's events 1..M in order, once each,
    equal to the spec."""
    messages = [json.loads(line) for line in lines]
    assert messages, "the TypeScript tail printed nothing"
    assert messages[0] == {"caughtUp": {"headSequence": "0"}}, messages[0]
    tailed = [json_format.ParseDict(m["event"], Event()) for m in messages[1:]]
    assert [e.sequence for e in tailed] == list(range(1, len(cobrowse) + 1))
    assert [e.id for e in tailed] == [e.id for e in cobrowse]
    problems = [
        p for got, want in zip(tailed, cobrowse, strict=True) if (p := differences(got, want))
    ]
    assert not problems, f"{len(problems)} tailed events differ:\n" + "\n".join(problems[:5])


def list_all(
    stub: service_pb2_grpc.AuditLogServiceStub, request: service_pb2.ListEventsRequest
) -> list[Event]:
    events: list[Event] = []
    while True:
        page = stub.ListEvents(request, timeout=30)
        events.extend(page.events)
        if not page.next_page_token:
            return events
        request.page_token = page.next_page_token


def check_stored(
    stub: service_pb2_grpc.AuditLogServiceStub,
    spec: Spec,
    general: dict[str, Event],
    cobrowse: list[Event],
) -> None:
    """ListEvents has every event exactly once, equal to the spec, in (occur_time, id) order."""
    expected = {**general, **{e.id: e for e in cobrowse}}
    listed = list_all(
        stub,
        service_pb2.ListEventsRequest(
            tenant_id=spec.tenant, order=enums_pb2.SORT_ORDER_OLDEST_FIRST, page_size=100
        ),
    )
    ids = [e.id for e in listed]
    duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)
    assert not duplicates, f"listed more than once: {duplicates}"
    missing, unexpected = sorted(set(expected) - set(ids)), sorted(set(ids) - set(expected))
    assert (missing, unexpected) == ([], []), "(missing ids, unexpected ids)"
    problems = [p for e in listed if (p := differences(e, expected[e.id]))]
    assert not problems, f"{len(problems)} events differ from the spec:\n" + "\n".join(problems[:5])
    by_time = sorted(expected.values(), key=lambda e: (millis(e.occur_time), e.id))
    assert ids == [e.id for e in by_time], "ListEvents(OLDEST_FIRST) is not in occur_time order"

    # The session filter: Java's events and Go's LIVE_VIEW joins of the session, newest first.
    in_session = list_all(
        stub,
        service_pb2.ListEventsRequest(
            tenant_id=spec.tenant,
            filter=service_pb2.EventFilter(cobrowse_session_id=spec.session),
            page_size=1000,
        ),
    )
    joins = [e for e in general.values() if e.HasField("live_view")]
    want = sorted([*cobrowse, *joins], key=lambda e: (millis(e.occur_time), e.id), reverse=True)
    assert [e.id for e in in_session] == [e.id for e in want]
    # The actor filter: the agent's co-browsing events only.
    by_agent = list_all(
        stub,
        service_pb2.ListEventsRequest(
            tenant_id=spec.tenant,
            filter=service_pb2.EventFilter(actor=enums_pb2.ACTOR_AGENT),
            order=enums_pb2.SORT_ORDER_OLDEST_FIRST,
            page_size=1000,
        ),
    )
    agent_events = [e.id for e in cobrowse if e.cobrowse.actor == enums_pb2.ACTOR_AGENT]
    assert [e.id for e in by_agent] == agent_events
