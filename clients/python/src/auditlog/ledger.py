"""The tenant ledger's hashes and signatures, and a verifier that trusts nothing but the key.

The chain (see AuditEvent.ledger_hash in the contract):
    digest(e)  = SHA-256(deterministic serialization of e with sequence, ledger_sequence and
                 ledger_hash cleared)
    hash(n)    = SHA-256(hash(n - 1) || uint64be(n) || uint64be(e.sequence) || digest(e))
    hash(0)    = SHA-256("auditlog.v1 ledger\\n" || tenant_id)
Checkpoints and retention anchors are Ed25519 signatures over small texts (see Checkpoint and
RetentionAnchor in ledger.proto).

`LedgerVerifier` takes what an export yields (anchor, events with their ledger entries,
checkpoints) and reports every way the events and the ledger disagree: an event changed (and
which fields), removed, inserted, reordered, a gap, a truncated ledger, a forged checkpoint.
`verify_ledger` runs it over `ExportEvents` of a live service.

>>> report = await verify_ledger(client, "acme", keys)
>>> report.ok, report.events, [f.detail for f in report.findings]
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import hashlib
import struct
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf import timestamp_pb2

from auditlog.v1 import audit_event_pb2, ledger_pb2, service_pb2

AuditEvent = audit_event_pb2.AuditEvent
Kind = ledger_pb2.LedgerFindingKind
_PACK = struct.Struct(">QQ")
# Fields whose digest is recorded per event: the envelope's, and each field of the payload.
_NOT_HASHED = frozenset({"sequence", "ledger_sequence", "ledger_hash"})
FIELD_DIGEST_BYTES = 8
# Events per ExportEvents response that verification and export ask for (the most the service
# sends): a message costs both ends far more than an event in it.
EVENTS_PER_MESSAGE = 1000


def genesis_hash(tenant_id: str) -> bytes:
    """The hash the chain of a tenant starts from (hash(0))."""
    return hashlib.sha256(b"auditlog.v1 ledger\n" + tenant_id.encode()).digest()


def recorded_form(event: AuditEvent, *, map_free: bool = False) -> bytes:
    """The bytes the ledger records of an event: its deterministic serialization as stored,
    without its session and ledger positions (LedgerEntry.recorded_event).

    `map_free`: the caller knows that the event holds no map (a Struct is one), so that its
    plain serialization is the deterministic one: only the order of map entries can differ.
    The server knows it from the event's type, and saves half the serialization's cost.
    """
    positions = (event.sequence, event.ledger_sequence, event.ledger_hash)
    placed = any(positions)
    if placed:
        # Cleared for the serialization and set back (proto3: zero is absent), not a copy
        # without them: verification takes this for every event, and copying cost a tenth of
        # it.
        event.sequence, event.ledger_sequence, event.ledger_hash = 0, 0, b""
    try:
        return (
            event.SerializeToString() if map_free else event.SerializeToString(deterministic=True)
        )
    finally:
        if placed:
            event.sequence, event.ledger_sequence, event.ledger_hash = positions


def event_digest(event: AuditEvent) -> bytes:
    """digest(e): SHA-256 of the event's recorded form."""
    return hashlib.sha256(recorded_form(event)).digest()


def chain_hash(
    previous: bytes, ledger_sequence: int, session_sequence: int, digest: bytes
) -> bytes:
    """hash(n) from hash(n - 1)."""
    return hashlib.sha256(
        previous + _PACK.pack(ledger_sequence, session_sequence) + digest
    ).digest()


def _value_bytes(value: Any) -> bytes:
    if hasattr(value, "SerializeToString"):
        serialized: bytes = value.SerializeToString(deterministic=True)
        return serialized
    if isinstance(value, bytes):
        return value
    if hasattr(value, "__iter__") and not isinstance(value, str):
        return b"\x1f".join(_value_bytes(v) for v in value)
    return repr(value).encode()


def _digest(path: str, value: object) -> bytes:
    return hashlib.sha256(path.encode() + b"\0" + _value_bytes(value)).digest()[:FIELD_DIGEST_BYTES]


def field_digests(event: AuditEvent) -> dict[str, bytes]:
    """Digests of the event's fields: the envelope's, and the payload's one by one, so that a
    verifier can say which field of an event differs from what the ledger recorded."""
    digests: dict[str, bytes] = {}
    payload = event.WhichOneof("payload")
    for descriptor, value in event.ListFields():
        name = descriptor.name
        if name in _NOT_HASHED:
            continue
        if name == payload:
            inner = value.ListFields()
            if not inner:
                digests[name] = _digest(name, b"")
            for sub, sub_value in inner:
                path = f"{name}.{sub.name}"
                digests[path] = _digest(path, sub_value)
        else:
            digests[name] = _digest(name, value)
    return digests


def differing_fields(recorded: Mapping[str, bytes], event: AuditEvent) -> list[str]:
    """The field paths whose digest differs (or that appear or vanish) between the two."""
    now = field_digests(event)
    return sorted(path for path in set(recorded) | set(now) if recorded.get(path) != now.get(path))


def changed_fields(entry: ledger_pb2.LedgerEntry, event: AuditEvent) -> list[str]:
    """The fields in which a stored event differs from what its ledger entry recorded: from the
    recorded event when its bytes are the ones the digest covers (so they cannot mislead), else
    from the field digests of older ledgers; empty when neither is at hand."""
    recorded = entry.recorded_event
    if recorded and hashlib.sha256(recorded).digest() == entry.event_digest:
        original = AuditEvent()
        original.ParseFromString(recorded)
        return differing_fields(field_digests(original), event)
    if entry.field_digests:
        return differing_fields(entry.field_digests, event)
    return []


# ---- signatures ----------------------------------------------------------------------------


def _time_text(ts: timestamp_pb2.Timestamp) -> str:
    when = dt.datetime.fromtimestamp(ts.seconds, dt.UTC) + dt.timedelta(
        milliseconds=ts.nanos // 1_000_000
    )
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def checkpoint_text(checkpoint: ledger_pb2.Checkpoint) -> bytes:
    """The exact bytes a checkpoint's signature covers."""
    return (
        "auditlog.v1 checkpoint\n"
        f"{checkpoint.tenant_id}\n"
        f"{checkpoint.ledger_sequence}\n"
        f"{base64.b64encode(checkpoint.ledger_hash).decode()}\n"
        f"{_time_text(checkpoint.time)}\n"
    ).encode()


def anchor_text(anchor: ledger_pb2.RetentionAnchor) -> bytes:
    """The exact bytes a retention anchor's signature covers."""
    return (
        "auditlog.v1 anchor\n"
        f"{anchor.tenant_id}\n"
        f"{anchor.first_sequence}\n"
        f"{base64.b64encode(anchor.previous_hash).decode()}\n"
        f"{_time_text(anchor.time)}\n"
        f"{anchor.reason}\n"
    ).encode()


def key_id_of(public_key: bytes) -> str:
    """A key's id: the first 16 hex digits of SHA-256 of the raw public key."""
    return hashlib.sha256(public_key).hexdigest()[:16]


class VerificationKeys:
    """The public keys to trust, by key id: from GetVerificationKeys or a keys file."""

    def __init__(self, keys: Iterable[ledger_pb2.VerificationKey]) -> None:
        self._keys: dict[str, Ed25519PublicKey] = {}
        for key in keys:
            if key.algorithm != "Ed25519" or key_id_of(key.public_key) != key.key_id:
                continue  # a key whose id does not match its bytes is not trusted
            self._keys[key.key_id] = Ed25519PublicKey.from_public_bytes(key.public_key)

    @classmethod
    def from_file(cls, path: str) -> VerificationKeys:
        """Keys from a file written by `auditlog keys` (a serialized
        GetVerificationKeysResponse, or its JSON form)."""
        from google.protobuf import json_format

        with open(path, "rb") as source:
            raw = source.read()
        response = service_pb2.GetVerificationKeysResponse()
        if raw.lstrip().startswith(b"{"):
            json_format.Parse(raw.decode(), response)
        else:
            response.ParseFromString(raw)
        return cls(response.keys)

    def __len__(self) -> int:
        return len(self._keys)

    def verifies(self, key_id: str, text: bytes, signature: bytes) -> bool:
        key = self._keys.get(key_id)
        if key is None:
            return False
        try:
            key.verify(signature, text)
        except InvalidSignature:
            return False
        return True


# ---- verification --------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    kind: int  # a LedgerFindingKind value
    ledger_sequence: int
    event_id: str = ""
    fields: tuple[str, ...] = ()
    detail: str = ""

    @property
    def kind_name(self) -> str:
        return Kind.Name(self.kind).removeprefix("LEDGER_FINDING_KIND_")  # type: ignore[arg-type]

    def to_proto(self) -> ledger_pb2.LedgerFinding:
        return ledger_pb2.LedgerFinding(
            kind=self.kind,  # type: ignore[arg-type]
            ledger_sequence=self.ledger_sequence,
            event_id=self.event_id,
            fields=self.fields,
            detail=self.detail,
        )


@dataclass
class VerifyReport:
    """What a verification found; `ok` when nothing."""

    tenant_id: str
    first_sequence: int = 0
    last_sequence: int = 0
    events: int = 0
    checkpoints: int = 0
    start: str = "the start of the ledger"
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict[str, object]:
        return {
            "tenant_id": self.tenant_id,
            "ok": self.ok,
            "first_sequence": self.first_sequence,
            "last_sequence": self.last_sequence,
            "events": self.events,
            "checkpoints": self.checkpoints,
            "start": self.start,
            "findings": [
                {
                    "kind": f.kind_name,
                    "ledger_sequence": f.ledger_sequence,
                    "event_id": f.event_id,
                    "fields": list(f.fields),
                    "detail": f.detail,
                }
                for f in self.findings
            ],
        }


class LedgerVerifier:
    """Recomputes a tenant's chain from exported items, in ledger order.

    Two checks at each entry: the ledger's own chain (its recorded digests and hashes, which
    checkpoints signed by a trusted key vouch for), and the event as stored against the digest
    the ledger recorded for it. An entry the chain does not vouch for was inserted or edited in
    the ledger; an event whose digest differs was changed (its field digests say where), or sits
    at another event's place (reordered); a missing one was removed.
    """

    # How far back a changed event is looked for among recorded digests (reorder detection).
    REORDER_WINDOW = 10_000

    def __init__(self, tenant_id: str, keys: VerificationKeys) -> None:
        self.report = VerifyReport(tenant_id)
        self._keys = keys
        self._hash = genesis_hash(tenant_id)
        self._next = 1
        self._pending_checkpoints: dict[int, ledger_pb2.Checkpoint] = {}
        self._hashes: dict[int, bytes] = {}  # ledger sequence -> chain hash, for checkpoints
        # Recent windows, oldest first: OrderedDict drops its oldest in constant time (a dict
        # skips every slot deleted before it first, which took a quarter of verification's CPU).
        # recorded digest -> sequence
        self._recorded: collections.OrderedDict[bytes, int] = collections.OrderedDict()
        # sequence -> (recorded digest, stored digest) of each changed event
        self._mismatched: collections.OrderedDict[int, tuple[bytes, bytes]] = (
            collections.OrderedDict()
        )

    def _find(self, kind: int, sequence: int, detail: str, **extra: object) -> None:
        if any(f.kind == kind and f.ledger_sequence == sequence for f in self.report.findings):
            return  # seen by another check already (a truncation two checkpoints vouch for)
        self.report.findings.append(Finding(kind, sequence, detail=detail, **extra))  # type: ignore[arg-type]

    def anchor(self, anchor: ledger_pb2.RetentionAnchor) -> None:
        """The export starts at a retention anchor: the chain continues from its hash."""
        if not self._keys.verifies(anchor.key_id, anchor_text(anchor), anchor.signature):
            self._find(
                Kind.LEDGER_FINDING_KIND_CHECKPOINT_FORGED,
                anchor.first_sequence,
                "the retention anchor's signature does not verify with the published keys",
            )
            return
        self._hash = anchor.previous_hash
        self._next = anchor.first_sequence
        self.report.start = (
            f"retention anchor at sequence {anchor.first_sequence} ({anchor.reason}), "
            f"signed {_time_text(anchor.time)}"
        )

    def start_at(self, sequence: int, previous_hash: bytes) -> None:
        """Verify a range: start after `sequence - 1`, whose hash a checkpoint vouched for."""
        self._next, self._hash = sequence, previous_hash

    def event(self, exported: service_pb2.ExportedEvent) -> None:
        entry = exported.entry
        n = entry.ledger_sequence
        if not self.report.first_sequence:
            self.report.first_sequence = n
        if n != self._next:
            if n > self._next:
                self._find(
                    Kind.LEDGER_FINDING_KIND_SEQUENCE_GAP,
                    self._next,
                    f"the ledger jumps from {self._next - 1} to {n}",
                )
            else:
                self._find(
                    Kind.LEDGER_FINDING_KIND_EVENT_INSERTED,
                    n,
                    f"sequence {n} repeats (expected {self._next})",
                    event_id=entry.event_id,
                )
        expected = chain_hash(self._hash, n, entry.session_sequence, entry.event_digest)
        if expected != entry.ledger_hash:
            self._find(
                Kind.LEDGER_FINDING_KIND_EVENT_INSERTED,
                n,
                "the ledger entry does not follow from the one before it (inserted or edited "
                "in the ledger)",
                event_id=entry.event_id,
            )
        # Continue from what the ledger says, so that one bad entry is one finding.
        self._hash = entry.ledger_hash
        self._hashes[n] = entry.ledger_hash
        self._next = n + 1
        self.report.last_sequence = n
        self.report.events += 1
        self._remember(entry.event_digest, n)
        if not exported.HasField("event"):
            self._find(
                Kind.LEDGER_FINDING_KIND_EVENT_REMOVED,
                n,
                f"event {entry.event_id} is in the ledger but no longer stored",
                event_id=entry.event_id,
            )
        else:
            self._check_event(exported.event, entry)
        self._settle_checkpoints()

    def _remember(self, digest: bytes, sequence: int) -> None:
        self._recorded[digest] = sequence
        if len(self._recorded) > self.REORDER_WINDOW:
            self._recorded.popitem(last=False)
        if len(self._mismatched) > self.REORDER_WINDOW:
            self._mismatched.popitem(last=False)

    def _reordered(self, here: int, there: int) -> None:
        self.report.findings = [
            f
            for f in self.report.findings
            if not (
                f.kind == Kind.LEDGER_FINDING_KIND_EVENT_CHANGED
                and f.ledger_sequence in (here, there)
            )
        ]
        self._find(
            Kind.LEDGER_FINDING_KIND_EVENTS_REORDERED,
            min(here, there),
            f"the events recorded at {min(here, there)} and {max(here, there)} are stored at each "
            "other's places",
        )

    def _check_event(self, event: AuditEvent, entry: ledger_pb2.LedgerEntry) -> None:
        n = entry.ledger_sequence
        digest = event_digest(event)
        if digest == entry.event_digest and event.sequence == entry.session_sequence:
            return
        # Two events stored at each other's places: the one recorded where this one is stored
        # holds what the ledger recorded here.
        other = self._recorded.get(digest)
        if other is not None and self._mismatched.get(other, (b"", b""))[1] == entry.event_digest:
            del self._mismatched[other]
            self._reordered(other, n)
            return
        self._mismatched[n] = (entry.event_digest, digest)
        fields = changed_fields(entry, event)
        if event.sequence != entry.session_sequence:
            fields.append("sequence")
        self._find(
            Kind.LEDGER_FINDING_KIND_EVENT_CHANGED,
            n,
            f"event {entry.event_id} differs from what the ledger recorded"
            + (f" in {', '.join(fields)}" if fields else ""),
            event_id=entry.event_id,
            fields=tuple(fields),
        )

    def checkpoint(self, checkpoint: ledger_pb2.Checkpoint) -> None:
        if not self._keys.verifies(
            checkpoint.key_id, checkpoint_text(checkpoint), checkpoint.signature
        ):
            self._find(
                Kind.LEDGER_FINDING_KIND_CHECKPOINT_FORGED,
                checkpoint.ledger_sequence,
                f"the checkpoint at {checkpoint.ledger_sequence} does not verify with the "
                "published keys",
            )
            return
        self._pending_checkpoints[checkpoint.ledger_sequence] = checkpoint
        self._settle_checkpoints()

    def _settle_checkpoints(self) -> None:
        if not self._pending_checkpoints:
            return  # almost always, once per event
        for sequence in sorted(self._pending_checkpoints):
            chained = self._hashes.get(sequence)
            if chained is None:
                if sequence < self._next:
                    # Before the range verified here (an export from a cursor): trusted as is.
                    del self._pending_checkpoints[sequence]
                continue
            checkpoint = self._pending_checkpoints.pop(sequence)
            if chained != checkpoint.ledger_hash:
                self._find(
                    Kind.LEDGER_FINDING_KIND_CHECKPOINT_MISMATCH,
                    sequence,
                    f"the ledger's hash at {sequence} differs from the signed checkpoint's: "
                    "entries up to there were inserted, removed or edited",
                )
            else:
                self.report.checkpoints += 1

    def finish(self, *latest: ledger_pb2.Checkpoint | None) -> VerifyReport:
        """Ends the verification. `latest`: the newest signed checkpoint, if known, and any a
        witness saved earlier (`auditlog checkpoint`): a ledger that ends before one was
        truncated. Without a checkpoint past it, a cut of the ledger's end together with its
        events cannot be told from a ledger that never went further."""
        for checkpoint in latest:
            if checkpoint is None or not checkpoint.ledger_sequence:
                continue
            if not self._keys.verifies(
                checkpoint.key_id, checkpoint_text(checkpoint), checkpoint.signature
            ):
                self._find(
                    Kind.LEDGER_FINDING_KIND_CHECKPOINT_FORGED,
                    checkpoint.ledger_sequence,
                    "a checkpoint given to compare with does not verify with the keys",
                )
            elif checkpoint.ledger_sequence >= self._next:
                self._find(
                    Kind.LEDGER_FINDING_KIND_LEDGER_TRUNCATED,
                    self._next,
                    f"the ledger ends at {self._next - 1} but a signed checkpoint vouches for "
                    f"{checkpoint.ledger_sequence}",
                )
            elif checkpoint.ledger_sequence in self._hashes and (
                self._hashes[checkpoint.ledger_sequence] != checkpoint.ledger_hash
            ):
                self._find(
                    Kind.LEDGER_FINDING_KIND_CHECKPOINT_MISMATCH,
                    checkpoint.ledger_sequence,
                    "a signed checkpoint given to compare with vouches for another chain: "
                    "entries up to there were rewritten",
                )
        for sequence in sorted(self._pending_checkpoints):
            if sequence >= self._next:
                self._find(
                    Kind.LEDGER_FINDING_KIND_LEDGER_TRUNCATED,
                    self._next,
                    f"the ledger ends at {self._next - 1} but a signed checkpoint vouches for "
                    f"{sequence}",
                )
        self._pending_checkpoints.clear()
        return self.report


async def verify_ledger(
    client: object,
    tenant_id: str,
    keys: VerificationKeys | None = None,
    *,
    from_sequence: int = 0,
    to_sequence: int = 0,
    progress: Callable[[int, int], None] | None = None,
    witnesses: Iterable[ledger_pb2.Checkpoint] = (),
) -> VerifyReport:
    """Verify a tenant's ledger through a live service, trusting only `keys` (default: the keys
    the service publishes; pass keys from a file to trust nothing it says).

    `client` is an AuditLogClient. A range starts at the signed checkpoint at or before
    `from_sequence` (the checkpoint vouches for the hash the chain continues from).
    `progress(done, total)` is called as events are verified. `witnesses`: checkpoints saved
    earlier, outside the service (`auditlog checkpoint`), that the ledger must still contain.
    """
    stub = client.stub  # type: ignore[attr-defined]
    if keys is None:
        keys = VerificationKeys(
            (await stub.GetVerificationKeys(service_pb2.GetVerificationKeysRequest())).keys
        )
    latest = await stub.GetCheckpoint(service_pb2.GetCheckpointRequest(tenant_id=tenant_id))
    total = to_sequence or latest.head_sequence
    verifier = LedgerVerifier(tenant_id, keys)
    request = service_pb2.ExportEventsRequest(
        tenant_id=tenant_id, to_sequence=to_sequence, events_per_message=EVENTS_PER_MESSAGE
    )
    if from_sequence > 1:
        start = await stub.GetCheckpoint(
            service_pb2.GetCheckpointRequest(tenant_id=tenant_id, at_sequence=from_sequence - 1)
        )
        if start.HasField("checkpoint"):
            checkpoint = start.checkpoint
            if not keys.verifies(
                checkpoint.key_id, checkpoint_text(checkpoint), checkpoint.signature
            ):
                verifier.report.findings.append(
                    Finding(
                        Kind.LEDGER_FINDING_KIND_CHECKPOINT_FORGED,
                        checkpoint.ledger_sequence,
                        detail="the checkpoint the range starts from does not verify",
                    )
                )
                return verifier.report
            verifier.start_at(checkpoint.ledger_sequence + 1, checkpoint.ledger_hash)
            verifier.report.start = (
                f"the signed checkpoint at sequence {checkpoint.ledger_sequence}"
            )
            request.from_sequence = checkpoint.ledger_sequence + 1
    items: AsyncIterator[service_pb2.ExportEventsResponse] = stub.ExportEvents(request)
    async for item in items:
        _feed(verifier, item)
        if progress is not None:
            kind = item.WhichOneof("item")
            if kind == "batch":
                progress(item.batch.events[-1].entry.ledger_sequence, total)
            elif kind == "event":
                progress(item.event.entry.ledger_sequence, total)
    newest = latest.checkpoint if latest.HasField("checkpoint") else None
    if to_sequence and newest is not None and newest.ledger_sequence > to_sequence:
        newest = None  # a range ending before the newest checkpoint is not truncated
    return verifier.finish(newest, *witnesses)


def single_items(
    response: service_pb2.ExportEventsResponse,
) -> Iterator[service_pb2.ExportEventsResponse]:
    """An ExportEvents response as single items: a batch as one `event` item per event, with
    that event's cursor (the shape of one line of an export file)."""
    if response.WhichOneof("item") != "batch":
        yield response
        return
    for exported in response.batch.events:
        item = service_pb2.ExportEventsResponse(cursor=exported.cursor)
        item.event.CopyFrom(exported)
        item.event.ClearField("cursor")
        yield item


def _feed(verifier: LedgerVerifier, item: service_pb2.ExportEventsResponse) -> None:
    kind = item.WhichOneof("item")
    if kind == "anchor":
        verifier.anchor(item.anchor)
    elif kind == "checkpoint":
        verifier.checkpoint(item.checkpoint)
    elif kind == "event":
        verifier.event(item.event)
    elif kind == "batch":
        for exported in item.batch.events:
            verifier.event(exported)


def verify_export_file(
    path: str,
    tenant_id: str,
    keys: VerificationKeys,
    witnesses: Iterable[ledger_pb2.Checkpoint] = (),
) -> VerifyReport:
    """Verify an export written by `auditlog export --format jsonl` offline: with nothing but
    the file and the public keys. Each line is an ExportEventsResponse in JSON."""
    from google.protobuf import json_format

    verifier = LedgerVerifier(tenant_id, keys)
    newest: ledger_pb2.Checkpoint | None = None
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            if not line.strip():
                continue
            item = json_format.Parse(line, service_pb2.ExportEventsResponse())
            _feed(verifier, item)
            if item.WhichOneof("item") == "checkpoint":
                newest = item.checkpoint
    return verifier.finish(newest, *witnesses)
