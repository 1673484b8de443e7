"""Types of the native write path (service/native/src/lib.rs, built by `make setup`)."""

from collections.abc import Callable
from typing import Any

class Preparer:
    def __init__(
        self,
        messages: list[list[tuple[int, str, int, bool, dict[int, str], int]]],
        payloads: dict[int, tuple[str, int, str, int, bool, list[str], str | None]],
        numbers: dict[str, int],
        actor_names: dict[int, str],
        stored_time: Callable[[int], Any],
        payload_time: Callable[[int], Any],
        masking: tuple[int, int, int, int, str, bytes],
    ) -> None: ...
    def prepare(
        self, serialized: bytes, event_id: str, receive_time: Any, receive_millis: int
    ) -> tuple[dict[str, Any], bool, bytes, int, bytes, bytes, tuple[str, str] | None] | None: ...
    def prepare_batch(
        self,
        batch: list[bytes],
        receive_time: Any,
        receive_millis: int,
        new_id: Callable[[], str],
        slim: bool = False,
    ) -> tuple[list[EventWrite | None], list[int]]: ...

class SentDocument:
    _type_marker: int
    def __init__(self, raw: bytes) -> None: ...
    @property
    def raw(self) -> bytes: ...

class EventWrite:
    def __init__(
        self,
        doc: dict[str, Any],
        occur_time_given: bool,
        recorded: bytes,
        filters: dict[str, Any] | bytes | None = None,
        body: bytes | None = None,
        body_keys: int = 0,
        session: tuple[str, str] | None = None,
        sequence_at: int = 0,
    ) -> None: ...
    @property
    def doc(self) -> dict[str, Any]: ...
    @property
    def occur_time_given(self) -> bool: ...
    @property
    def recorded(self) -> bytes: ...
    @property
    def filters(self) -> dict[str, Any] | bytes | None: ...
    @property
    def body(self) -> bytes | None: ...
    @property
    def body_keys(self) -> int: ...
    @property
    def session(self) -> tuple[str, str] | None: ...
    @property
    def sequence_at(self) -> int: ...

class Stored:
    def __init__(self, doc: dict[str, Any], already_stored: bool = False) -> None: ...
    @property
    def doc(self) -> dict[str, Any]: ...
    @property
    def already_stored(self) -> bool: ...

class Validator:
    def __init__(
        self,
        limits: tuple[int, int, int, int],
        numbers: dict[str, int],
        actors: list[int],
        payloads: dict[int, tuple[bool, list[tuple[str, int, bool, list[int]]]]],
    ) -> None: ...
    def valid(self, serialized: bytes) -> bool: ...
    def valid_each(self, batch: list[bytes]) -> list[bool]: ...

def chain_hashes(previous: bytes, sequence: int, chain: bytes) -> list[bytes]: ...
def packed_chain(packed: bytes) -> bytes | None: ...
def entry_starts(packed: bytes) -> list[int] | None: ...
def complete_entries(entries: list[dict[str, Any]]) -> None: ...
def pack_entries(entries: list[dict[str, Any]]) -> bytes | None: ...
def commit_entries(
    writes: list[Any], filter_fields: Callable[[dict[str, Any]], dict[str, Any]]
) -> tuple[bytes, bytes] | None: ...
def raw_document(body: bytes, doc: dict[str, Any], body_keys: int) -> bytes | None: ...
def raw_documents(
    writes: list[Any], indexes: list[int], whole: Callable[[Any], SentDocument]
) -> dict[int, SentDocument]: ...
def slot_run(
    writes: list[Any],
    indexes: list[int],
    prefix: str,
    first: int,
    digits: int,
    whole: Callable[[Any], SentDocument],
) -> list[tuple[int, str, Any]]: ...
def split_pending(
    writes: list[Any], pending: list[int]
) -> tuple[list[tuple[int, str, Any]], list[int], dict[tuple[str, str], list[int]]]: ...
def mark_outboxes(
    writes: list[Any], next_outbox: Callable[[str], str]
) -> tuple[dict[str, str], dict[str, list[Any]], dict[str, list[str]]]: ...
def batch_documents(
    batch: list[tuple[int, str, Any]],
    raw: dict[int, SentDocument],
    encode: Callable[[dict[str, Any]], SentDocument],
) -> list[Any]: ...
def note_stored(
    batch: list[tuple[int, str, Any]], inserted: int, writes: list[Any], outcomes: list[Any]
) -> tuple[list[int], dict[tuple[str, str], int], list[tuple[int, str, Any]]]: ...
def stored_results(
    written: list[tuple[Any, Any]],
    results_tag: bytes,
    event_tag: bytes,
    sequence_tag: bytes,
) -> bytes | None: ...
def stored_acks(
    outcomes: list[Any],
    paired: bool,
    tags: tuple[bytes, bytes, bytes, bytes],
    received: Any,
    received_field: bytes,
) -> bytes | None: ...
