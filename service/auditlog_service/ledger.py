"""The tenant ledger: outbox blocks merged into a gap-free hash chain, signed checkpoints.

Layout (the `ledger` collection, except outboxes and commits, which live beside the events they
cover):
- outbox `<T>/~o/<W>/<n>` (events collection): the ids a group of writer W (a process) is about
  to write for tenant T (packed, see pack_keys), inserted first in the group's ordered insert,
  so that every stored event is covered by an outbox; each event document records its outbox
  (`ob`).
- commit `<T>/c/<W>/<n>` (events collection; the ledger collection before 2026-12-04): what
  group n of W stored for T: per event its key, recorded form, filterable fields, and
  (co-browsing) slot and session sequence (see commit_entry). Written before the group's callers
  are answered: as the last document of the group's ordered insert when all of the group is in
  that one insert (see storage._GroupWrite._inline_commits), else after it; the first insert of
  the `_id` wins (see Sequencer for the others).
- placement `<T>/p/<W>/<n>`: where commit n of W landed (block, first sequence, hashes): a hint
  for GetEvent, written after the block (the block is the truth).
- writers `<T>/w/<k>`: the writers of T, k = 1, 2, ... (appended once per writer and tenant).
- blocks `<T>/b/<b>`: the ledger, b = 1, 2, ...: the commits it merged, in order (their
  entries, read from them, are its entries), the hash of each entry, the hash before them, and
  how far each writer's outboxes are consumed (of the writers quiet for a while, through the
  archive the block names). Racing sequencers lose cleanly on the unique `_id` and re-read.
  Blocks written before 2026-12-04 hold copies of their entries instead (see BlockEntries).
- archives `<T>/ca/<b>-<random>`: how far quiet writers were consumed when block b was made
  (and the archive before it): every process start adds a writer, so a block that named every
  writer ever would grow without end.
- checkpoints `<T>/cp/<k>`: signed (sequence, hash, time); anchors `<T>/a/<k>`: signed
  retention starts; `<T>/retention`: a tenant's retention.
- tenants `~t/<T>` and `~tl/<k>`: every tenant once, for sequencers to find them all.
No transactions, no `$inc`, no leases: every race is decided by a unique `_id`.
The entries of commits are stored packed, as one compressed BSON binary (see zipped_entries).
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import collections
import contextlib
import datetime as dt
import hashlib
import logging
import math
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bson
import zstandard
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from auditlog.ledger import (
    anchor_text,
    checkpoint_text,
    genesis_hash,
    key_id_of,
)
from auditlog.v1 import ledger_pb2

from . import _native, convert
from .convert import Document

log = logging.getLogger(__name__)

NUMBER_DIGITS = 12
# A block holds at most this many entries: one `_id` lookup reads hundreds of entries, and a
# block stays small enough for FerretDB to decode quickly.
MAX_BLOCK_ENTRIES = 500
# An outbox whose commit has not come for this long is resolved from the events themselves.
COMMIT_WAIT_S = 10.0
# Checkpoints read at once when an export or verification collects those of a range.
CHECKPOINT_READS = 64
# Commits kept from one block's reads for the next (more are dropped: re-read when needed).
MAX_READ_AHEAD = 1024
# A writer's commits read at once after the one a sequencer needs.
PREFETCH = 3
# Commits older than this when read mean a backlog: read ahead then, not for a writer that the
# ledger keeps up with (there, read-ahead finds nothing and costs a read per commit).
PREFETCH_AFTER_MS = 200
# Blocks written in one insert when a tenant has a backlog.
BLOCKS_PER_INSERT = 4
# A block that would name more writers than this moves those quiet for QUIET_WRITER_S into a
# new archive (when at least half as many are quiet): a block names the writers consumed since
# the last archive, and the archives, chained, the rest.
ARCHIVE_AFTER_WRITERS = 64
# A writer none of whose commits a sequencer has found for this long is quiet: the background
# worker's passes stop reading its next commit, and only sweeps (every few seconds) and RPCs
# look for one. Every process start adds a writer to each tenant it writes, and a pass read
# the next commit of each: after k restarts, k reads per pass of which none ever finds one.
QUIET_WRITER_S = 30.0
# Sweeps (and RPCs) look at the writers that may have something to sequence: this process's
# own; every writer whose process stopped beating, until a sweep finds nothing of it left (no
# commit, outbox or hole past what the ledger consumed): it is finished; and, for RPCs, the
# writers of live processes (a live process sequences its own commits, so sweeps leave them to
# it). A finished writer is looked at again when its process beats again or stops again (a
# process beats before it commits after a pause, see EventRepository.before_commit, so one
# that stalled, was taken for dead and then wrote is seen to), and, in case, this often.
LOOK_ANYWAY_S = 3600.0
DUPLICATE_KEY = 11000
# After losing a block to another sequencer, the background worker leaves the tenant to it this
# long, and again as long as the other one is seen writing blocks (it sequences every writer's
# commits, ours included); when it stops, for whatever reason, this one takes over.
YIELD_AFTER_LOSS_S = 0.25
# ... unless the blocks it writes pass over a commit of this process that has waited this long:
# then the other one is not looking at this writer (quiet to it, see QUIET_WRITER_S), and this
# one sequences the tenant itself.
OWN_COMMIT_PATIENCE_S = 1.0
# Blocks whose last sequence is remembered per tenant (for block_of's search without reads).
MAX_KNOWN_BLOCK_RANGES = 100_000
# Commits of this process kept for its own sequencer (the oldest go first when another
# process's sequencer consumes them and this one never asks).
MAX_OWN_COMMITS = 4096
# The fields that hold a commit's entries and an outbox's keys, compressed (see zipped_entries);
# and where those written from 2026-12-04 to 2026-12-05 hold them (zlib).
ZIPPED_ENTRIES = "entries_zstd"
ZIPPED_KEYS = "keys_zstd"
ZLIB_ENTRIES = "entries_zlib"
ZLIB_KEYS = "keys_zlib"
# An own commit kept in memory (LedgerStore.committed): its entries packed, uncompressed, and
# their chain input: each entry's session sequence (a big-endian u64) and digest, what the
# sequencer hashes (_native.chain_hashes), CHAIN_ENTRY_BYTES an entry.
PACKED_ENTRIES = "entries_packed"
CHAIN_INPUT = "chain"
CHAIN_ENTRY_BYTES = 40
# How old a tenant's writer list may be for the background sequencer (a new writer's first
# outboxes wait that much longer; RPCs that sequence read the list afresh).
WRITER_LIST_TTL_S = 0.25


def number(n: int) -> str:
    return f"{n:0{NUMBER_DIGITS}d}"


def outbox_id(tenant_id: str, writer: str, n: int) -> str:
    return f"{tenant_id}/~o/{writer}/{number(n)}"


def outbox_number(box: str) -> int:
    """n of an outbox `_id` `<T>/~o/<W>/<n>`."""
    return int(box.rsplit("/", 1)[1])


def commit_id(tenant_id: str, writer: str, n: int) -> str:
    return f"{tenant_id}/c/{writer}/{number(n)}"


def placement_id(tenant_id: str, writer: str, n: int) -> str:
    return f"{tenant_id}/p/{writer}/{number(n)}"


def pack_entries(entries: list[Document]) -> bytes:
    """Entries as one BSON document `{"e": [...]}`. FerretDB decodes one binary field far faster
    than hundreds of nested documents (measured on the dev database: a commit of 250 entries
    took 92 ms to read and 111 ms to update when nested), and nothing queries inside entries.
    Plain `bytes` are BSON binary (subtype 0) as they are; this module wraps no value in
    bson.Binary, which copies it (twice: 3 % of the server's CPU when a block was built)."""
    # Encoded natively (1.2 us an event of the server's CPU when PyMongo encoded them), unless
    # an entry holds a type it leaves to PyMongo.
    packed = _native.pack_entries(entries)
    return bson.encode({"e": entries}) if packed is None else packed


class _Zstd(threading.local):
    """This thread's Zstandard level-1 compressor and decompressor: one costs 8 µs to make (a
    group of a few unary events would pay it per event), and neither may be used by two threads
    at once."""

    def __init__(self) -> None:
        self.compressor = zstandard.ZstdCompressor(level=1)
        self.decompressor = zstandard.ZstdDecompressor()


_ZSTD = _Zstd()


def compress(data: bytes) -> bytes:
    """One Zstandard frame (with its content size, so decompress needs no limit)."""
    return _ZSTD.compressor.compress(data)


def decompress(data: bytes) -> bytes:
    return _ZSTD.decompressor.decompress(data)


def zipped_entries(entries: list[Document]) -> bytes:
    """What a commit stores under ZIPPED_ENTRIES: its packed entries, compressed. Every write
    of the dev database goes through one SQLite writer, so the bytes a commit makes it write
    bound the ledger's share of ingest. Zstandard at level 1 makes them 7 times fewer (248 ->
    34 bytes an event, general events) for 0.25 µs an event of the server's CPU, and 0.09 µs
    to read back; zlib at level 1, used before 2026-12-05, made 55 bytes for 1.15 µs, and 0.35
    to read back (bench/event_cost.py's "commit packing")."""
    return compress(pack_entries(entries))


def packed_entries(doc: Document) -> bytes | list[Document]:
    """The entries of a commit (or of a block of before 2026-12-04) as pack_entries made them
    (uncompressed, as this process keeps its own commits). Commits held them compressed with
    zlib from 2026-12-04 to 2026-12-05, and before that uncompressed under `entries` (a list
    in the oldest)."""
    packed_now = doc.get(PACKED_ENTRIES)
    if packed_now is not None:
        return bytes(packed_now)
    zipped = doc.get(ZIPPED_ENTRIES)
    if zipped is not None:
        return decompress(zipped)
    zipped = doc.get(ZLIB_ENTRIES)
    if zipped is not None:
        return zlib.decompress(zipped)
    packed = doc["entries"]
    return packed if isinstance(packed, list) else bytes(packed)


def complete_entry(entry: Document) -> Document:
    """An entry as read, completed in place with what commit_entry leaves out because it
    follows from the rest: the event document's `_id` (its key, unless in a session slot), the
    session sequence (0 outside sessions) and the digest of the recorded form."""
    if "d" not in entry:
        entry["d"] = hashlib.sha256(entry["r"]).digest()
    if "e" not in entry:
        entry["e"] = entry["k"]
    if "q" not in entry:
        entry["q"] = 0
    return entry


def _completed(entries: list[Document]) -> list[Document]:
    """The entries, each completed in place (complete_entry, in one native call)."""
    _native.complete_entries(entries)
    return entries


def entries_of(doc: Document) -> list[Document]:
    """The entries of a commit or block document, completed (complete_entry)."""
    packed = packed_entries(doc)
    if isinstance(packed, list):
        return packed  # written before entries were packed: they hold every field
    return _completed(bson.decode(packed)["e"])


def entries_chain(entries: list[Document]) -> bytes:
    """The chain input (see CHAIN_ENTRY_BYTES) of completed entries."""
    return b"".join(entry["q"].to_bytes(8, "big") + bytes(entry["d"]) for entry in entries)


def commit_chain(doc: Document) -> bytes:
    """The chain input of a commit's entries: an own commit's, kept with it; else read from
    its packed entries natively (decoding 1,000 entries into objects took 2.8-3.6 ms), or,
    laid out otherwise, from its entries decoded."""
    chain = doc.get(CHAIN_INPUT)
    if chain is not None:
        return bytes(chain)
    packed = packed_entries(doc)
    if not isinstance(packed, list):
        read = _native.packed_chain(packed)
        if read is not None:
            return read
    return entries_chain(entries_of(doc))


def pack_keys(keys: list[str]) -> bytes:
    """An outbox's event keys as one value, one key a line, compressed as commits are (keys
    share their tenant and most of a UUIDv7: 46 -> 19 bytes a key, for 0.1 µs): FerretDB
    stores an array of 1,000 strings at twice the CPU of one binary value (1.1-1.35 against
    0.4-0.6 µs a key), and ids and tenant ids never hold control characters."""
    return compress("\n".join(keys).encode())


def outbox_doc(box_id: str, keys: list[str], at: Any, **extra: Any) -> Document:
    """The outbox `box_id` naming `keys` (see the layout above)."""
    return {"_id": box_id, ZIPPED_KEYS: pack_keys(keys), "at": at, **extra}


def outbox_keys(outbox: Document) -> list[str]:
    """The event keys an outbox names (from 2026-12-04 to 2026-12-05 compressed with zlib;
    before that under `keys`, uncompressed, an array in the oldest)."""
    zipped = outbox.get(ZIPPED_KEYS)
    if zipped is not None:
        keys: bytes | list[str] = decompress(zipped)
    elif (zipped := outbox.get(ZLIB_KEYS)) is not None:
        keys = zlib.decompress(zipped)
    else:
        keys = outbox["keys"]
    if isinstance(keys, list):
        return keys
    text = bytes(keys).decode()
    return text.split("\n") if text else []


class PackedEntries:
    """The entries of one packed array (a commit's, or an older block's), each decoded when
    first asked for. A newest-first page looks at the last few of a block's hundreds: decoding
    all of 1,000 entries took 2.8-3.6 ms (and made 10,000 objects for the garbage collector),
    finding where each entry lies 0.4 ms in Python (0.02 natively, now). One at a time an entry
    costs twice as much, so a walk that goes on (a filter that matches little) has the rest
    decoded whole after DECODED_APART entries."""

    DECODED_APART = 100

    def __init__(self, packed: bytes | list[Document]) -> None:
        self._packed = b"" if isinstance(packed, list) else packed
        # Entries given as a list (a commit written before entries were packed) are the
        # document's: not to be changed.
        self.shared = isinstance(packed, list)
        starts = _entry_starts(self._packed) if self._packed else None
        self._starts = starts or []
        self._entries: list[Document | None]
        if isinstance(packed, list):
            self._entries = list(packed)
        elif starts is None:
            self._entries = list(_completed(bson.decode(self._packed)["e"]))
        else:
            self._entries = [None] * len(starts)
        self._decoded = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, index: int) -> Document:
        entry = self._entries[index]
        if entry is None:
            self._decoded += 1
            if self._decoded > self.DECODED_APART:
                return self.whole()[index]
            start = self._starts[index]
            size = int.from_bytes(self._packed[start : start + 4], "little")
            entry = self._entries[index] = complete_entry(
                bson.decode(self._packed[start : start + size])
            )
        return entry

    def whole(self) -> list[Document]:
        """Every entry (decoded at once: a walk through all of them)."""
        if self._packed and any(e is None for e in self._entries):
            self._entries = list(_completed(bson.decode(self._packed)["e"]))
        return self._entries  # type: ignore[return-value]


class BlockEntries:
    """A block's entries with their ledger hashes, in ledger order; None where the commit a
    block names is not stored (removed: the verifier reports the entries missing).

    A block names the commits it merged (`parts`: writer w, number n, c entries) and holds their
    hashes; the entries themselves stay in the commits, written once (a block that copied them
    made the ledger write each event's recorded form twice). Blocks written before that hold
    their entries, packed, hashes included."""

    def __init__(self, block: Document, commits: Mapping[str, Document] | None = None) -> None:
        self._hashes = b""
        self._parts: list[tuple[int, int, PackedEntries | None]] = []  # (offset, count, entries)
        if "entries" in block:
            packed = PackedEntries(packed_entries(block))
            self._parts.append((0, len(packed), packed))
            self._length = len(packed)
            return
        self._hashes = bytes(block["hashes"])
        commits = commits or {}
        offset = 0
        for part in block["parts"]:
            commit = commits.get(commit_id(block["t"], part["w"], part["n"]))
            entries = None if commit is None else PackedEntries(packed_entries(commit))
            self._parts.append((offset, part["c"], entries))
            offset += part["c"]
        self._length = offset

    def __len__(self) -> int:
        return self._length

    def _part(self, index: int) -> tuple[int, int, PackedEntries | None]:
        parts = self._parts
        k = bisect.bisect_right(parts, index, key=lambda part: part[0]) - 1
        return parts[k]

    def __getitem__(self, index: int) -> Document | None:
        if not 0 <= index < self._length:
            raise IndexError(index)
        offset, _, entries = self._part(index)
        i = index - offset
        if entries is None or i >= len(entries):
            return None
        return self._with_hash(entries[i], index)

    def whole(self) -> list[Document | None]:
        """Every entry, decoded at once."""
        out: list[Document | None] = []
        hashes = self._hashes
        for offset, count, entries in self._parts:
            listed: list[Document] = entries.whole()[:count] if entries is not None else []
            if hashes and listed:
                if entries is not None and entries.shared:
                    listed = [dict(entry) for entry in listed]
                for i, entry in enumerate(listed, offset):
                    entry["h"] = hashes[32 * i : 32 * i + 32]
            out += listed
            out += [None] * (count - len(listed))
        return out

    def _with_hash(self, entry: Document, index: int) -> Document:
        if not self._hashes:
            return entry
        # A copy: an entry of a list is its document's (see PackedEntries.shared).
        return {**entry, "h": self._hashes[32 * index : 32 * index + 32]}


def _entry_starts(packed: bytes) -> list[int] | None:
    """Where each entry document of pack_entries' `{"e": [...]}` starts; None if the bytes are
    laid out otherwise (then they are decoded whole). Found natively, by the walk that reads
    a commit's chain input (packed_chain)."""
    return _native.entry_starts(packed)


def writer_slot_id(tenant_id: str, k: int) -> str:
    return f"{tenant_id}/w/{number(k)}"


def block_id(tenant_id: str, b: int) -> str:
    return f"{tenant_id}/b/{number(b)}"


def checkpoint_id(tenant_id: str, k: int) -> str:
    return f"{tenant_id}/cp/{number(k)}"


def anchor_id(tenant_id: str, k: int) -> str:
    return f"{tenant_id}/a/{number(k)}"


def retention_id(tenant_id: str) -> str:
    return f"{tenant_id}/retention"


def filter_fields(doc: Document) -> Document:
    """What ListEvents filters on, kept in each ledger entry (short keys: entries add up)."""
    # Written out rather than a loop over (name, key) pairs: this runs for every event stored.
    fields: Document = {"t": doc["type"], "o": convert.datetime_to_millis(doc["occur_time"])}
    get = doc.get
    if value := get("tenant_user_id"):
        fields["u"] = value
    if value := get("customer_id"):
        fields["c"] = value
    if value := get("call_id"):
        fields["l"] = value
    if value := get("session_id"):
        fields["s"] = value
    if cobrowse := get("cobrowse"):
        fields["a"] = cobrowse["actor"]
    return fields


def commit_entry(
    doc: Document, recorded: bytes, filters: Document | bytes | None = None
) -> Document:
    """The ledger's record of one stored event (before it has a place in the ledger): its key,
    its recorded form (auditlog.ledger.recorded_form), what ListEvents filters on, and where
    it is stored when that is not its key: a co-browsing event's slot `e` and session sequence
    `q`. Nothing that follows from these is stored (complete_entry adds it when read): the
    digest of the recorded form and the `_id` of a general event made a commit 36 % bigger.
    Entries of older ledgers carry all of `e`, `q` and `d`, and field digests ("f", paths with
    ":" for ".") instead of the recorded form."""
    if filters is None:
        filters = filter_fields(doc)
    elif isinstance(filters, bytes):  # filter_fields's document in BSON (the native preparer's)
        filters = bson.decode(filters)
    entry: Document = {"k": doc["key"], "r": recorded, "x": filters}
    if doc["_id"] != doc["key"]:
        entry["e"] = doc["_id"]
        entry["q"] = doc["sequence"]
    return entry


def group_entries(writes: list[Any]) -> tuple[bytes, bytes]:
    """The entries of a commit of `writes` (storage.EventWrite, stored) packed as the commit
    stores them (pack_entries of commit_entry's), and their chain input (the sequencer's, see
    CHAIN_ENTRY_BYTES): in one native call that makes no entry objects (it asks filter_fields
    for the rules' events), unless a filter holds a value it leaves to PyMongo (then
    commit_entry, pack_entries and complete_entry)."""
    made = _native.commit_entries(writes, filter_fields)
    if made is not None:
        return made
    entries = [commit_entry(w.doc, w.recorded, w.filters) for w in writes]
    packed = pack_entries(entries)
    return packed, entries_chain(_completed(entries))


@dataclass(frozen=True, slots=True)
class Commit:
    """Commit n of a writer for a tenant: the entries of what a group stored (commit_entry),
    or, `repaired`, what a sequencer or settle found stored under its outbox; held as
    pack_entries packs them, with their chain input (see CHAIN_ENTRY_BYTES)."""

    tenant_id: str
    writer: str
    n: int
    packed: bytes
    chain: bytes
    at: Any
    repaired: bool = False

    @classmethod
    def of_entries(
        cls,
        tenant_id: str,
        writer: str,
        n: int,
        entries: list[Document],
        at: Any,
        repaired: bool = False,
    ) -> Commit:
        """A commit of entries made as commit_entry makes them (completed ones too)."""
        packed = pack_entries(entries)  # before completion adds to them, in place
        return cls(tenant_id, writer, n, packed, entries_chain(_completed(entries)), at, repaired)

    @property
    def id(self) -> str:
        return commit_id(self.tenant_id, self.writer, self.n)

    def doc(self) -> Document:
        """As inserted (into the events collection: a group's commit can then be the last
        document of the group's own ordered insert, see storage._GroupWrite)."""
        doc: Document = {"_id": self.id, "at": self.at}
        if self.repaired:
            doc["repaired"] = True
        doc[ZIPPED_ENTRIES] = compress(self.packed)
        return doc


# ---- signing -------------------------------------------------------------------------------


class LedgerSigner:
    """Signs checkpoints and anchors with an Ed25519 key; publishes the public keys."""

    def __init__(self, private_key: Ed25519PrivateKey, extra_public: Iterable[bytes] = ()) -> None:
        self._key = private_key
        raw = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.key_id = key_id_of(raw)
        self.public_keys = [raw, *[k for k in extra_public if k != raw]]

    @classmethod
    def from_file(cls, path: str, extra_public_file: str = "") -> LedgerSigner:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path}: the checkpoint signing key must be Ed25519")
        extra: list[bytes] = []
        if extra_public_file:
            for line in Path(extra_public_file).read_text().split():
                extra.append(base64.b64decode(line))
        return cls(key, extra)

    def verification_keys(self) -> list[ledger_pb2.VerificationKey]:
        return [
            ledger_pb2.VerificationKey(key_id=key_id_of(raw), algorithm="Ed25519", public_key=raw)
            for raw in self.public_keys
        ]

    def checkpoint(
        self, tenant_id: str, sequence: int, ledger_hash: bytes, when: dt.datetime
    ) -> ledger_pb2.Checkpoint:
        checkpoint = ledger_pb2.Checkpoint(
            tenant_id=tenant_id,
            ledger_sequence=sequence,
            ledger_hash=ledger_hash,
            key_id=self.key_id,
        )
        convert.datetime_to_timestamp(when, checkpoint.time)
        checkpoint.signature = self._key.sign(checkpoint_text(checkpoint))
        return checkpoint

    def anchor(
        self, tenant_id: str, first: int, previous: bytes, when: dt.datetime, reason: str
    ) -> ledger_pb2.RetentionAnchor:
        anchor = ledger_pb2.RetentionAnchor(
            tenant_id=tenant_id,
            first_sequence=first,
            previous_hash=previous,
            reason=reason,
            key_id=self.key_id,
        )
        convert.datetime_to_timestamp(when, anchor.time)
        anchor.signature = self._key.sign(anchor_text(anchor))
        return anchor


def generate_signing_key(path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def public_key_of(signer: Ed25519PublicKey) -> bytes:
    return signer.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


# ---- documents <-> messages ----------------------------------------------------------------


def checkpoint_doc(checkpoint: ledger_pb2.Checkpoint) -> Document:
    return {
        "t": checkpoint.tenant_id,
        "seq": checkpoint.ledger_sequence,
        "hash": checkpoint.ledger_hash,
        "time": checkpoint.time.ToDatetime(dt.UTC),
        "key": checkpoint.key_id,
        "sig": checkpoint.signature,
    }


def checkpoint_of(doc: Document) -> ledger_pb2.Checkpoint:
    checkpoint = ledger_pb2.Checkpoint(
        tenant_id=doc["t"],
        ledger_sequence=doc["seq"],
        ledger_hash=bytes(doc["hash"]),
        key_id=doc["key"],
        signature=bytes(doc["sig"]),
    )
    convert.datetime_to_timestamp(doc["time"], checkpoint.time)
    return checkpoint


def anchor_doc(anchor: ledger_pb2.RetentionAnchor) -> Document:
    return {
        "t": anchor.tenant_id,
        "first": anchor.first_sequence,
        "prev": anchor.previous_hash,
        "time": anchor.time.ToDatetime(dt.UTC),
        "reason": anchor.reason,
        "key": anchor.key_id,
        "sig": anchor.signature,
    }


def anchor_of(doc: Document) -> ledger_pb2.RetentionAnchor:
    anchor = ledger_pb2.RetentionAnchor(
        tenant_id=doc["t"],
        first_sequence=doc["first"],
        previous_hash=bytes(doc["prev"]),
        reason=doc["reason"],
        key_id=doc["key"],
        signature=bytes(doc["sig"]),
    )
    convert.datetime_to_timestamp(doc["time"], anchor.time)
    return anchor


# ---- the store -------------------------------------------------------------------------------


@dataclass
class LedgerHead:
    """Where a tenant's ledger stands: its last block, sequence and hash, and how far each
    writer's outboxes are consumed."""

    tenant_id: str
    block: int = 0
    sequence: int = 0
    hash: bytes = b""
    recent: dict[str, int] = field(default_factory=dict)  # as the block itself says
    first: int = 1  # the first sequence still kept (after retention)
    archive: str = ""  # the `_id` of the archive the block names, if any
    archived: Mapping[str, int] = field(default_factory=dict)  # as the archives say (shared)

    @classmethod
    def empty(cls, tenant_id: str) -> LedgerHead:
        return cls(tenant_id, hash=genesis_hash(tenant_id))

    @property
    def consumed(self) -> Mapping[str, int]:
        """How far each writer's outboxes are consumed."""
        return collections.ChainMap(self.recent, self.archived)  # type: ignore[arg-type]


def _once_each(writers: list[str]) -> list[str]:
    """A writer listed twice (a registration retried after a lost answer) counts once."""
    return list(dict.fromkeys(writers))


class LedgerStore:
    """`_id` reads and unique inserts of the ledger's documents."""

    def __init__(
        self, ledger: AsyncCollection[Document], events: AsyncCollection[Document]
    ) -> None:
        self.ledger = ledger
        self.events = events
        self._writer_counts: dict[str, int] = {}
        self._tenant_count = 0
        self._tenant_names: list[str] = []  # the tenant list `~tl/<k>`, k = 1, 2, ... read so far
        self._registered: set[tuple[str, str]] = set()
        self._writer_names: dict[str, list[str]] = {}
        self._block_ranges: dict[str, dict[int, int]] = {}  # tenant -> block -> last sequence
        self._registering: dict[tuple[str, str], asyncio.Lock] = {}
        # Commits this process inserted, until its sequencer reads them: a commit never changes
        # once inserted, so the read need not go to the database (measured on unary LogEvent:
        # those reads were 14 % of the process's CPU).
        # Oldest first; an OrderedDict drops its oldest in constant time (a dict walks every
        # slot deleted before it).
        self._own_commits: collections.OrderedDict[str, Document] = collections.OrderedDict()
        # (tenant, writer) -> the last commit number this process inserted as that writer.
        self._own_last: dict[tuple[str, str], int] = {}
        # (tenant, writer) -> the last outbox number this process gave out as that writer.
        self._own_numbered: dict[tuple[str, str], int] = {}
        # tenant -> writer -> (number, when inserted on time.monotonic()) of the commits this
        # process inserted that no block is known to have consumed, oldest first.
        self._own_waiting: dict[str, dict[str, collections.deque[tuple[int, float]]]] = {}
        self._writers_read_at: dict[str, float] = {}  # tenant -> when its writer list was read
        # tenant -> the latest archive read and what its chain says (archives never change).
        self._archives: dict[str, tuple[str, dict[str, int]]] = {}

    async def get(self, _id: str) -> Document | None:
        """A document of the ledger collection (commits are not: see get_commit)."""
        doc: Document | None = await self.ledger.find_one({"_id": _id})
        return doc

    async def get_commit(self, cid: str, *, older_too: bool = True) -> Document | None:
        """A commit: this process's own from memory (taken: its sequencer asks once), else from
        the events collection; `older_too` also looks in the ledger collection, where commits
        were written before 2026-12-04. (The sequencer does not: an older commit it finds
        missing is resolved from its outbox and events like any other, COMMIT_WAIT_S later,
        which only happens once, at the upgrade; its commit polls stay one read.)"""
        own = self._own_commits.pop(cid, None)
        if own is not None:
            return own
        doc: Document | None = await self.events.find_one({"_id": cid})
        if doc is None and older_too:
            doc = await self.ledger.find_one({"_id": cid})
        return doc

    async def insert_commit(self, commit: Commit) -> None:
        """Inserts a commit; DuplicateKeyError when one is there already (the first commit of an
        `_id` wins: the writer's, or a resolution from the events)."""
        await self.events.insert_one(commit.doc())
        self.committed(commit)

    def committed(self, commit: Commit) -> None:
        """The commit is in the database (this process inserted it): kept for this process's
        sequencer."""
        if len(self._own_commits) >= MAX_OWN_COMMITS:
            self._own_commits.popitem(last=False)  # a sequencer elsewhere reads them
        # Kept as made: the sequencer hashes the chain input, readers decode what they read.
        self._own_commits[commit.id] = {
            "_id": commit.id,
            "at": commit.at,
            PACKED_ENTRIES: commit.packed,
            CHAIN_INPUT: commit.chain,
        }
        if not commit.repaired:
            # Groups commit concurrently: a later number may be in before an earlier one.
            key = (commit.tenant_id, commit.writer)
            self._own_last[key] = max(commit.n, self._own_last.get(key, 0))
            waiting = self._own_waiting.setdefault(commit.tenant_id, {})
            if commit.writer not in waiting:
                waiting[commit.writer] = collections.deque(maxlen=MAX_OWN_COMMITS)
            waiting[commit.writer].append((commit.n, time.monotonic()))

    def forget_consumed(self, head: LedgerHead) -> None:
        """Drops what this process remembers of its own commits that `head` consumed."""
        for writer, times in self._own_waiting.get(head.tenant_id, {}).items():
            done = head.consumed.get(writer, 0)
            while times and times[0][0] <= done:
                times.popleft()

    def own_waiting_since(self, tenant_id: str, writer: str, consumed: int) -> float | None:
        """When this process inserted its oldest commit as `writer` past `consumed` (on
        time.monotonic()); None when there is none. (What is left after forget_consumed is
        what no block has taken yet: a few commits.)"""
        times = self._own_waiting.get(tenant_id, {}).get(writer, ())
        return min((at for n, at in times if n > consumed), default=None)

    def numbered(self, tenant_id: str, writer: str, n: int) -> None:
        """This process gave out outbox n of `writer` (before writing it)."""
        key = (tenant_id, writer)
        self._own_numbered[key] = max(n, self._own_numbered.get(key, 0))

    def writes_as(self, tenant_id: str, writer: str) -> bool:
        """Whether this process has numbered an outbox as `writer` for the tenant."""
        return (tenant_id, writer) in self._own_numbered

    def numbered_past(self, tenant_id: str, writer: str, consumed: int) -> bool:
        """Whether this process gave out an outbox of `writer` past `consumed` (a writer is
        one process: none of its outboxes, commits or holes is past the last it numbered)."""
        return self._own_numbered.get((tenant_id, writer), 0) > consumed

    def own_writers(self, tenant_id: str) -> list[str]:
        """The writers this process has committed as for the tenant."""
        return list(self._own_waiting.get(tenant_id, {}))

    def unwritten_own_commit(self, tenant_id: str, writer: str, n: int) -> bool:
        """Whether n is past the last commit this process inserted as `writer` (so it is not
        there, short of a sequencer's repair after COMMIT_WAIT_S, which only sweeps look for)."""
        last = self._own_last.get((tenant_id, writer))
        return last is not None and n > last

    async def exists(self, _id: str) -> bool:
        return await self.ledger.find_one({"_id": _id}, {"_id": 1}) is not None

    async def last_number(self, prefix: str, known: int = 0) -> int:
        """The last n with `<prefix><n>` present, for n = 1, 2, ... without holes:
        exponential probe then binary search, O(log n) `_id` lookups."""
        low, step = known, 1
        while await self.exists(f"{prefix}{number(low + step)}"):
            low, step = low + step, step * 2
        high = low + step
        while high - low > 1:
            mid = (low + high) // 2
            if await self.exists(f"{prefix}{number(mid)}"):
                low = mid
            else:
                high = mid
        return low

    async def append(self, prefix: str, doc: Document, known: int = 0) -> int:
        """Inserts `doc` at the next free `<prefix><n>`; the unique `_id` settles races."""
        n = known + 1
        while True:
            try:
                await self.ledger.insert_one({"_id": f"{prefix}{number(n)}", **doc})
                return n
            except DuplicateKeyError:
                n = await self.last_number(prefix, n) + 1

    # ---- writers and tenants ---------------------------------------------------------------

    async def register_writer(self, tenant_id: str, writer: str) -> None:
        """Puts a writer on its tenant's list (once per process and tenant)."""
        key = (tenant_id, writer)
        if key in self._registered:
            return
        # Groups of one writer commit concurrently: one registers, the others wait for it (a
        # second append would list the writer twice).
        async with self._registering.setdefault(key, asyncio.Lock()):
            if key in self._registered:
                return
            try:
                await self.ledger.insert_one({"_id": f"~t/{tenant_id}", "t": tenant_id})
                await self.append("~tl/", {"t": tenant_id}, self._tenant_count)
            except DuplicateKeyError:
                pass  # the tenant is known already
            known = self._writer_counts.get(tenant_id, 0)
            await self.append(f"{tenant_id}/w/", {"w": writer}, known)
            self._registered.add(key)
            self._writers_read_at.pop(tenant_id, None)  # list it at the next look

    async def writers(self, tenant_id: str, *, fresh: bool = True) -> list[str]:
        """Every writer of the tenant, in the order they registered. Not `fresh`: the list as
        read less than WRITER_LIST_TTL_S ago, without a read (the background sequencer's passes,
        many per second on a busy tenant, each probed for a new writer before)."""
        names = self._writer_names.get(tenant_id)
        read_at = self._writers_read_at.get(tenant_id)
        if (
            not fresh
            and names is not None
            and read_at is not None
            and time.monotonic() - read_at < WRITER_LIST_TTL_S
        ):
            return _once_each(names)
        self._writers_read_at[tenant_id] = time.monotonic()
        return await self._read_writers(tenant_id)

    async def _read_writers(self, tenant_id: str) -> list[str]:
        """The list only grows: what was read once is not read again."""
        names = self._writer_names.setdefault(tenant_id, [])
        known = len(names)
        last = await self.last_number(f"{tenant_id}/w/", known)
        docs = await asyncio.gather(
            *(self.get(writer_slot_id(tenant_id, k)) for k in range(known + 1, last + 1))
        )
        for doc in docs:
            if doc is None:
                break  # not yet readable: read again next time
            names.append(doc["w"])
        self._writer_counts[tenant_id] = len(names)
        return _once_each(names)

    async def tenants(self) -> list[str]:
        """Every tenant (the list only grows: what was read once is not read again, so a look
        for new tenants is one lookup)."""
        names = self._tenant_names
        known = len(names)
        last = await self.last_number("~tl/", known)
        self._tenant_count = max(self._tenant_count, last)
        docs = await asyncio.gather(
            *(self.get(f"~tl/{number(k)}") for k in range(known + 1, last + 1))
        )
        for doc in docs:
            if doc is None:
                break  # not yet readable: read again next time
            names.append(doc["t"])
        return sorted(set(names))

    # ---- blocks ------------------------------------------------------------------------------

    async def block(self, tenant_id: str, b: int) -> Document | None:
        doc = await self.get(block_id(tenant_id, b))
        if doc is not None:
            ranges = self._block_ranges.setdefault(tenant_id, {})
            if len(ranges) > MAX_KNOWN_BLOCK_RANGES:
                ranges.clear()
            ranges[b] = doc["last"]
        return doc

    async def block_entries(self, block: Document) -> BlockEntries:
        """A block's entries, with the commits it names read in one query (those of this
        process still in memory without one)."""
        if "entries" in block:
            return BlockEntries(block)
        commits: dict[str, Document] = {}
        wanted: list[str] = []
        for part in block["parts"]:
            cid = commit_id(block["t"], part["w"], part["n"])
            own = self._own_commits.get(cid)
            if own is not None:
                commits[cid] = own
            else:
                wanted.append(cid)
        if wanted:
            async for doc in self.events.find({"_id": {"$in": wanted}}):
                commits[doc["_id"]] = doc
            older = [cid for cid in wanted if cid not in commits]
            if older:  # blocks of before 2026-12-04 name commits in the ledger collection
                async for doc in self.ledger.find({"_id": {"$in": older}}):
                    commits[doc["_id"]] = doc
        return BlockEntries(block, commits)

    async def _block_last(self, tenant_id: str, b: int) -> int | None:
        """A block's last sequence (None when removed): known ones without a read (a block
        never changes; retention only removes blocks before its anchor)."""
        known = self._block_ranges.get(tenant_id, {}).get(b)
        if known is not None:
            return known
        doc = await self.block(tenant_id, b)
        return None if doc is None else int(doc["last"])

    async def head(self, tenant_id: str, known: LedgerHead | None = None) -> LedgerHead:
        """The tenant's ledger head, read forward from a known one."""
        start = known.block if known is not None else 0
        last = await self.last_number(f"{tenant_id}/b/", start)
        if known is not None and last == known.block:
            return known
        if last == 0:
            return LedgerHead.empty(tenant_id)
        doc = await self.block(tenant_id, last)
        assert doc is not None
        archive = doc.get("arch", "")
        return LedgerHead(
            tenant_id,
            block=last,
            sequence=doc["last"],
            hash=bytes(doc["hash"]),
            recent=dict(doc["consumed"]),
            first=doc.get("kept", 1),
            archive=archive,
            archived=await self.archived(tenant_id, archive),
        )

    async def archived(self, tenant_id: str, archive: str) -> Mapping[str, int]:
        """How far the writers an archive (with those before it) names were consumed: read back
        to the archive read last, which a running process has (at start, the whole chain)."""
        if not archive:
            return {}
        known_id, known = self._archives.get(tenant_id, ("", {}))
        chain: list[Document] = []
        at = archive
        while at and at != known_id:
            doc = await self.get(at)
            if doc is None:
                raise PyMongoError(f"ledger archive {at} is missing")
            chain.append(doc)
            at = doc.get("prev", "")
        if not chain:
            return known
        merged = dict(known) if at else {}
        for doc in reversed(chain):
            merged.update(doc["consumed"])
        self._archives[tenant_id] = (archive, merged)
        return merged

    async def block_of(self, tenant_id: str, sequence: int, head: LedgerHead) -> int:
        """The block holding a ledger sequence (binary search over block numbers)."""
        low, high = 1, head.block
        while low < high:
            mid = (low + high) // 2
            last = await self._block_last(tenant_id, mid)
            # A removed block (retention) holds only what is before the anchor.
            if last is None or last < sequence:
                low = mid + 1
            else:
                high = mid
        return low

    # ---- checkpoints and anchors ---------------------------------------------------------------

    async def latest_checkpoint(
        self, tenant_id: str, at_sequence: int = 0
    ) -> ledger_pb2.Checkpoint | None:
        """The last checkpoint, or one at or before `at_sequence` (a binary search: checkpoints
        are numbered about in the order of their sequences; replicas signing at once may swap
        neighbours, and then the one found may be the earlier of the two)."""
        last = await self.last_number(f"{tenant_id}/cp/")
        if last == 0:
            return None
        doc = await self.get(checkpoint_id(tenant_id, last))
        if doc is None or not at_sequence or doc["seq"] <= at_sequence:
            return None if doc is None else checkpoint_of(doc)
        k = await self._first_checkpoint_past(tenant_id, at_sequence, last)
        doc = await self.get(checkpoint_id(tenant_id, k - 1)) if k > 1 else None
        return None if doc is None else checkpoint_of(doc)

    async def checkpoints_between(
        self, tenant_id: str, first: int, last: int
    ) -> list[ledger_pb2.Checkpoint]:
        """Checkpoints with first <= sequence <= last, oldest first."""
        count = await self.last_number(f"{tenant_id}/cp/")
        k = await self._first_checkpoint_past(tenant_id, first - 1, count)
        found: list[ledger_pb2.Checkpoint] = []
        for start in range(k, count + 1, CHECKPOINT_READS):
            numbers = range(start, min(start + CHECKPOINT_READS, count + 1))
            docs = [
                doc
                for doc in await asyncio.gather(
                    *(self.get(checkpoint_id(tenant_id, n)) for n in numbers)
                )
                if doc is not None
            ]
            found += [checkpoint_of(doc) for doc in docs if first <= doc["seq"] <= last]
            # Replicas append their checkpoints as they sign them, so neighbours may be out of
            # order: the reading stops after a whole read past `last`, not at the first.
            if all(doc["seq"] > last for doc in docs):
                break
        return sorted(found, key=lambda checkpoint: checkpoint.ledger_sequence)

    async def _first_checkpoint_past(self, tenant_id: str, sequence: int, count: int) -> int:
        """The number of the first of checkpoints 1..count whose sequence is past `sequence`
        (count + 1 when none is)."""
        low, high = 1, count + 1
        while low < high:
            mid = (low + high) // 2
            doc = await self.get(checkpoint_id(tenant_id, mid))
            if doc is not None and doc["seq"] <= sequence:
                low = mid + 1
            else:
                high = mid
        return low

    async def latest_anchor(self, tenant_id: str) -> ledger_pb2.RetentionAnchor | None:
        last = await self.last_number(f"{tenant_id}/a/")
        if last == 0:
            return None
        doc = await self.get(anchor_id(tenant_id, last))
        return None if doc is None else anchor_of(doc)


# ---- the sequencer -----------------------------------------------------------------------------


@dataclass
class _Pending:
    """One writer's next outbox, ready to be merged (its commit's entries, as their chain
    input: see CHAIN_ENTRY_BYTES)."""

    writer: str
    n: int
    at: dt.datetime
    chain: bytes
    repair: bool = False  # resolved from the events (no commit came)

    @property
    def count(self) -> int:
        return len(self.chain) // CHAIN_ENTRY_BYTES


# A block built, not yet written: its document, the head after it, and where each commit of it
# landed (first sequence, hashes).
_Block = tuple[Document, LedgerHead, list[tuple[_Pending, int, list[bytes]]]]


def placement_docs(tenant_id: str, blocks: list[_Block]) -> list[Document]:
    """Where each commit of the blocks landed: its block, first sequence and hashes.
    Inserted, not updated into the commit: on FerretDB an update rewrites the document."""
    return [
        {
            "_id": placement_id(tenant_id, item.writer, item.n),
            "b": head.block,
            "first": first,
            "h": b"".join(hashes),
        }
        for _, head, placed in blocks
        for item, first, hashes in placed
    ]


class Sequencer:
    """Merges a tenant's outboxes into ledger blocks; any replica may run it for any tenant.

    A step reads each writer's next outbox and its commit, orders what it found
    deterministically (outbox time, writer, number), and inserts the next block. A racing
    sequencer's insert of the same block number fails on the unique `_id`: it re-reads the
    head and tries again with what is left. An outbox whose commit does not come within
    COMMIT_WAIT_S (its writer died, or lost the database) is resolved from the events that
    name it (`ob`), and that resolution is inserted as its commit, so that a late writer finds
    it and re-files whatever it stored after it (see EventRepository.commit_group).
    """

    def __init__(
        self,
        store: LedgerStore,
        signer: LedgerSigner,
        *,
        checkpoint_every: int = 1000,
        checkpoint_interval_s: float = 60.0,
        resolve_orphan: Any = None,
        process_live: Callable[[str], bool] | None = None,
    ) -> None:
        self.store = store
        self.signer = signer
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval_s = checkpoint_interval_s
        # (tenant, outbox _id, keys) -> entries of the events stored under that outbox.
        self._resolve_orphan = resolve_orphan
        self.heads: dict[str, LedgerHead] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._first_seen: dict[str, float] = {}  # outbox _id -> when it was first seen uncommitted
        self._read_ahead: dict[str, _Pending] = {}  # commit _id -> what it holds
        self._yield_until: dict[str, float] = {}  # tenant -> when to sequence it in the background
        self._rivals: set[str] = set()  # tenants another sequencer was seen writing lately
        self._checkpointed: dict[str, tuple[int, float]] = {}
        self._checkpoint_numbers: dict[str, int] = {}  # tenant -> its last checkpoint's number here
        # (tenant, writer) -> when a commit of the writer was last found (or the writer first
        # seen), on time.monotonic(): see QUIET_WRITER_S.
        self._heard: dict[tuple[str, str], float] = {}
        # Whether a writer's process beats (None: every writer counts as live). See
        # LOOK_ANYWAY_S for what sweeps look at.
        self._process_live = process_live
        # (tenant, writer) -> when a sweep last looked at the writer (time.monotonic()).
        self._looked: dict[tuple[str, str], float] = {}
        # Writers of processes that stopped, of whom a sweep found nothing left to sequence:
        # writer -> its tenants.
        self._finished: dict[str, set[str]] = {}
        self._liveness_changes = 0  # processes seen to start or stop beating, so far
        self.on_block: Any = None  # called with (tenant, head) after a block is written here
        # Archives made with blocks not written yet, by `_id` (written in the blocks' insert).
        self._unwritten_archives: dict[str, Document] = {}
        self.stats: dict[str, int] = {"blocks": 0, "entries": 0, "lost": 0, "repairs": 0}

    def yielding(self, tenant_id: str) -> bool:
        """Whether another sequencer was seen writing this tenant's ledger a moment ago."""
        return time.monotonic() < self._yield_until.get(tenant_id, 0.0)

    def waiting(self, tenant_id: str) -> bool:
        """Whether a look at the tenant found an outbox (or a hole) past its known head whose
        commit has not come: its writer is still writing it, or it is resolved after
        COMMIT_WAIT_S. (An entry that a rival's block consumed meanwhile does not count.)"""
        prefix = f"{tenant_id}/~o/"
        head = self.heads.get(tenant_id)
        consumed = head.consumed if head is not None else {}
        for box in self._first_seen:
            if box.startswith(prefix):
                writer, n = box[len(prefix) :].rsplit("/", 1)
                if int(n) > consumed.get(writer, 0):
                    return True
        return False

    def checkpoint_due(self, tenant_id: str) -> float | None:
        """When (time.monotonic()) the tenant's known head is due for a checkpoint by time, or
        None when no checkpoint is due (its head signed, or not looked at here yet)."""
        head, done = self.heads.get(tenant_id), self._checkpointed.get(tenant_id)
        if head is None or done is None or head.sequence <= done[0]:
            return None
        return done[1] + self.checkpoint_interval_s

    def lock(self, tenant_id: str) -> asyncio.Lock:
        lock = self._locks.get(tenant_id)
        if lock is None:
            lock = self._locks[tenant_id] = asyncio.Lock()
        return lock

    async def current(self, tenant_id: str) -> LedgerHead:
        head = await self.store.head(tenant_id, self.heads.get(tenant_id))
        # Not under the tenant's lock: a block this process wrote while the read was out is
        # newer than what the read found, and a head must never move back (a tail that has
        # heard of the block would wait for its cache to catch up).
        latest = self.heads.get(tenant_id)
        if latest is not None and latest.block > head.block:
            return latest
        if latest is not None and head.block > latest.block:
            self._hear_advanced(latest, head)
        self.heads[tenant_id] = head
        self.store.forget_consumed(head)
        return head

    def _hear_advanced(self, before: LedgerHead, after: LedgerHead) -> None:
        """Writers whose commits another sequencer's blocks took are heard from: they are
        writing, and this sequencer's passes read them too. Heard only when this one took
        their commits itself, a writer whose own process sequenced them stayed quiet here, and
        two replicas writing one tenant each left the other's commits to the other: whoever
        lost a block race waited for its own commits (OWN_COMMIT_PATIENCE_S) while the winner
        wrote blocks without them (ledger lag p99 1.0-9.6 s through two replicas)."""
        now = time.monotonic()
        tenant_id = after.tenant_id
        for writer, n in after.recent.items():
            if n > before.consumed.get(writer, 0):
                self._heard[(tenant_id, writer)] = now

    async def sequence(
        self, tenant_id: str, *, probe_holes: bool = False, defer: bool = False
    ) -> LedgerHead:
        """Sequences everything of the tenant that is ready; the head afterwards.

        `probe_holes` also looks past a writer's missing outbox (see _void_hole): the
        background worker's periodic sweep does, not every call (it costs a read per writer).
        `defer` (the background worker) leaves the tenant to another sequencer that has written
        a block since the last look: one read instead of reading every writer's commits and
        losing the block race again.
        """
        async with self.lock(tenant_id):
            if defer and tenant_id in self._rivals:
                known = self.heads.get(tenant_id)
                head = await self.current(tenant_id)
                if (
                    known is not None
                    and head.block > known.block
                    and not self._passed_over(known, head)
                ):
                    self._yield_until[tenant_id] = time.monotonic() + YIELD_AFTER_LOSS_S
                    return head
                self._rivals.discard(tenant_id)  # it stopped, or skips us: this one takes over
            # The background worker trusts the head this process knows (it wrote it, or read it
            # just now): were there a block past it, the insert of that block's number would
            # fail on its `_id`, and that re-reads. A read per pass found nothing new almost
            # always (one `_id` probe per 250 events on a busy tenant, per 80 at unary load).
            known = self.heads.get(tenant_id)
            if defer and known is not None:
                head, head_read = known, False
            else:
                head, head_read = await self.current(tenant_id), True
            fresh = probe_holes or not defer
            while True:
                # With a backlog, several blocks go in one insert: the round trips per block,
                # not the entries, bound how fast a busy tenant is sequenced.
                blocks: list[_Block] = []
                following = head
                while len(blocks) < BLOCKS_PER_INSERT:
                    pending = await self._ready(tenant_id, following, probe_holes, fresh=fresh)
                    # One look past holes and at the writer list per call: under sustained
                    # load a call goes on for as long as commits keep coming, and a sweep's
                    # call then read the writer list and probed missing outboxes for every
                    # block (measured at unary load: 30 list reads a second, 70 % of the finds).
                    probe_holes = fresh = False
                    if not pending:
                        break
                    blocks.append(self._build_block(following, pending))
                    following = blocks[-1][1]
                if not blocks:
                    if not head_read:
                        # What is returned and what a checkpoint signs is the head as it is.
                        head = await self.current(tenant_id)
                    await self._maybe_checkpoint(head)
                    return head
                written = await self._write_blocks(blocks)
                if written == len(blocks):
                    # Its own block is the head: no read (a rival's block b + 1 would make the
                    # next insert fail on its `_id`, and that re-reads).
                    head, head_read = blocks[-1][1], True
                    if defer and len(blocks) < BLOCKS_PER_INSERT:
                        # No backlog: the commits that came during this insert wait for the
                        # worker's next pass, a gather later, and go into one block with those
                        # that follow them. Looking again at once wrote a block per 2.2 groups
                        # at unary load (347 block inserts beside 772 group inserts).
                        return head
                else:
                    pending = [item for _, _, placed in blocks[written:] for item, _, _ in placed]
                    self.stats["lost"] += 1  # another sequencer wrote it: re-read and go on
                    # What it did not take is read once only; and for a moment the background
                    # worker leaves this tenant to the other sequencer, which is evidently
                    # running: two sequencers of one tenant double its reads for nothing.
                    for item in pending:
                        self._read_ahead[commit_id(tenant_id, item.writer, item.n)] = item
                    self._yield_until[tenant_id] = time.monotonic() + YIELD_AFTER_LOSS_S
                    self._rivals.add(tenant_id)
                    head, head_read = await self.current(tenant_id), True
                    if defer:
                        return head

    def _passed_over(self, known: LedgerHead, head: LedgerHead) -> bool:
        """Whether the blocks another sequencer wrote from `known` to `head` took no commit
        of a writer of this process although one has waited OWN_COMMIT_PATIENCE_S: that
        sequencer takes this writer for quiet (it skips it until its next sweep)."""
        now = time.monotonic()
        for writer in self.store.own_writers(head.tenant_id):
            done = head.consumed.get(writer, 0)
            since = self.store.own_waiting_since(head.tenant_id, writer, done)
            if (
                since is not None
                and now - since >= OWN_COMMIT_PATIENCE_S
                and done == known.consumed.get(writer, 0)
            ):
                return True
        return False

    async def _ready(
        self, tenant_id: str, head: LedgerHead, probe_holes: bool = False, fresh: bool = True
    ) -> list[_Pending]:
        """The commits that go into the next block. `fresh`: the writer list read anew and
        every writer on it looked at (sweeps, RPCs); else the list as cached and the writers
        heard from lately."""
        writers = await self.store.writers(tenant_id, fresh=fresh)
        now = time.monotonic()
        if not fresh:
            # A background pass between sweeps: the writers heard from lately, and this
            # process's own (its commits are at hand without a read).
            writers = [
                w
                for w in writers
                if self.store.writes_as(tenant_id, w)
                or (
                    now - self._heard.setdefault((tenant_id, w), now) < QUIET_WRITER_S
                    and tenant_id not in self._finished.get(w, ())
                )
            ]
        elif self._process_live is not None:
            writers = [w for w in writers if self._worth_a_look(head, w, now, sweep=probe_holes)]
        # Only sweeps find writers finished (a background pass runs per group under load).
        dead = {w for w in writers if not self._alive(tenant_id, w)} if probe_holes else set()
        changes = self._liveness_changes
        found = await asyncio.gather(
            *(
                self._next_of(tenant_id, w, head.consumed.get(w, 0) + 1, probe_holes)
                for w in writers
            )
        )
        if probe_holes:
            # Dead before the look began, no process started or stopped beating during it, and
            # nothing of it past the head: nothing more will come from it.
            settled = changes == self._liveness_changes
            for w, item in zip(writers, found, strict=True):
                self._looked[(tenant_id, w)] = now
                box = outbox_id(tenant_id, w, head.consumed.get(w, 0) + 1)
                if settled and w in dead and item is None and box not in self._first_seen:
                    self._finished.setdefault(w, set()).add(tenant_id)
                elif w in self._finished:
                    self._finished[w].discard(tenant_id)
        pending: list[_Pending] = []
        total = 0
        # Each writer's outboxes are consumed in order; several of one writer per block.
        queue = [item for item in found if item is not None]
        while queue and total < MAX_BLOCK_ENTRIES:
            queue.sort(key=lambda p: (p.at, p.writer, p.n))
            item = queue.pop(0)
            pending.append(item)
            self._heard[(tenant_id, item.writer)] = now
            total += item.count
            following = await self._next_of(tenant_id, item.writer, item.n + 1)
            if following is not None:
                queue.append(following)
        # Commits read but left for the next block are not read again (commits never change).
        if len(self._read_ahead) > MAX_READ_AHEAD:
            self._read_ahead.clear()
        for item in queue:
            self._read_ahead[commit_id(tenant_id, item.writer, item.n)] = item
        return pending

    def liveness_changed(self, process_id: str) -> None:
        """The process started or stopped beating: whatever it wrote is looked at again."""
        self._liveness_changes += 1
        self._finished.pop(process_id, None)

    def _alive(self, tenant_id: str, writer: str) -> bool:
        """Whether the writer may still write: its process beats, or it is this process."""
        live = self._process_live
        return live is None or self.store.writes_as(tenant_id, writer) or live(writer)

    def _worth_a_look(self, head: LedgerHead, writer: str, now: float, *, sweep: bool) -> bool:
        """Whether a sweep (or an RPC's call) reads the writer's next commit: see
        LOOK_ANYWAY_S."""
        tenant_id = head.tenant_id
        key = (tenant_id, writer)
        if self.store.writes_as(tenant_id, writer):
            return self.store.numbered_past(tenant_id, writer, head.consumed.get(writer, 0))
        if sweep and now - self._looked.get(key, -math.inf) >= LOOK_ANYWAY_S:
            return True
        if outbox_id(tenant_id, writer, head.consumed.get(writer, 0) + 1) in self._first_seen:
            return True  # an outbox waiting for its commit, or a hole: see it through
        if self._alive(tenant_id, writer):
            return not sweep
        return tenant_id not in self._finished.get(writer, ())

    async def _next_of(
        self, tenant_id: str, writer: str, n: int, probe_holes: bool = False
    ) -> _Pending | None:
        """Outbox n of a writer with its commit's entries; None while there is none, or while
        its writer may still be committing it. The commit is read first: a committed outbox
        needs no other read."""
        cid = commit_id(tenant_id, writer, n)
        read_ahead = self._read_ahead.pop(cid, None)
        if read_ahead is not None:
            return read_ahead
        if not probe_holes and self.store.unwritten_own_commit(tenant_id, writer, n):
            return None  # this process's own writer has not committed it yet: nothing to read
        box_id = outbox_id(tenant_id, writer, n)
        commit = await self.store.get_commit(cid, older_too=False)
        if commit is not None:
            if time.time() * 1000 - convert.datetime_to_millis(commit["at"]) > PREFETCH_AFTER_MS:
                # The writer is ahead of the ledger: its next commits are likely there.
                await self._prefetch(tenant_id, writer, n)
            self._first_seen.pop(box_id, None)
            return _Pending(writer, n, commit["at"], commit_chain(commit))
        if not probe_holes and box_id not in self._first_seen:
            # A commit not there yet is the rule (its writer is busy with it); the sweeps look
            # into its outbox and start a dead writer's COMMIT_WAIT_S, not every pass.
            return None
        outbox = await self.store.events.find_one({"_id": box_id})
        if outbox is None:
            return await self._void_hole(tenant_id, writer, n) if probe_holes else None
        now = time.monotonic()
        first_seen = self._first_seen.setdefault(box_id, now)
        if now - first_seen < COMMIT_WAIT_S or self._resolve_orphan is None:
            return None  # its writer may still be writing it
        entries = await self._resolve_orphan(tenant_id, box_id, outbox_keys(outbox))
        at = outbox["at"]
        repaired = Commit.of_entries(tenant_id, writer, n, entries, at, repaired=True)
        chain = repaired.chain
        try:
            await self.store.insert_commit(repaired)
        except DuplicateKeyError:
            commit = await self.store.get_commit(cid)
            if commit is None:
                return None
            chain, at = commit_chain(commit), commit["at"]
        self._first_seen.pop(box_id, None)
        self.stats["repairs"] += 1
        return _Pending(writer, n, at, chain, repair=True)

    async def _prefetch(self, tenant_id: str, writer: str, n: int) -> None:
        """Reads the commits after n of a writer at once (a busy writer has several waiting:
        read one after the other, each would put a round trip into the ledger's lag)."""
        following = [
            (k, commit_id(tenant_id, writer, k))
            for k in range(n + 1, n + 1 + PREFETCH)
            if commit_id(tenant_id, writer, k) not in self._read_ahead
            and not self.store.unwritten_own_commit(tenant_id, writer, k)
        ]
        docs = await asyncio.gather(
            *(self.store.get_commit(cid, older_too=False) for _, cid in following)
        )
        for (k, cid), doc in zip(following, docs, strict=True):
            if doc is not None:
                self._read_ahead[cid] = _Pending(writer, k, doc["at"], commit_chain(doc))

    async def _void_hole(self, tenant_id: str, writer: str, n: int) -> _Pending | None:
        """Outbox n of a writer that is missing while a later one exists: a group that failed
        before its outbox was written, and whose writer died before it settled the number (see
        EventRepository.settle). After COMMIT_WAIT_S the number is claimed by an empty outbox
        and commit: a late insert of the real outbox then fails on the `_id`, and its writer
        files what it stored under another outbox (commit_group)."""
        later = await self.store.get_commit(commit_id(tenant_id, writer, n + 1), older_too=False)
        if later is None:
            later = await self.store.events.find_one({"_id": outbox_id(tenant_id, writer, n + 1)})
        if later is None:
            return None  # the writer's last outbox: nothing is missing
        box_id = outbox_id(tenant_id, writer, n)
        now = time.monotonic()
        if now - self._first_seen.setdefault(box_id, now) < COMMIT_WAIT_S:
            return None
        at = convert.now_millis()
        try:
            await self.store.events.insert_one(outbox_doc(box_id, [], at, void=True))
        except DuplicateKeyError:
            return None  # it came after all: taken like any other next time
        with contextlib.suppress(DuplicateKeyError):
            await self.store.insert_commit(Commit.of_entries(tenant_id, writer, n, [], at))
        self._first_seen.pop(box_id, None)
        self.stats["repairs"] += 1
        return await self._next_of(tenant_id, writer, n)

    def _build_block(self, head: LedgerHead, pending: list[_Pending]) -> _Block:
        """The block after `head` holding `pending`."""
        tenant_id = head.tenant_id
        parts: list[Document] = []
        running = head.hash
        sequence = head.sequence
        recent = dict(head.recent)
        placed: list[tuple[_Pending, int, list[bytes]]] = []
        for item in pending:
            first = sequence + 1
            hashes: list[bytes] = []
            if item.chain:
                # In one native call: auditlog.ledger.chain_hash for each entry.
                hashes = _native.chain_hashes(running, sequence, item.chain)
                running = hashes[-1]
                sequence += len(hashes)
            # The entries stay in the commit (see BlockEntries); the block names it.
            # Documents, not [writer, n, count]: FerretDB stores no nested arrays.
            parts.append({"w": item.writer, "n": item.n, "c": item.count})
            recent[item.writer] = item.n
            placed.append((item, first, hashes))
        b = head.block + 1
        archive, archived = head.archive, head.archived
        if len(recent) > ARCHIVE_AFTER_WRITERS:
            now = time.monotonic()
            quiet = {
                w: n
                for w, n in recent.items()
                if now - self._heard.get((tenant_id, w), -math.inf) >= QUIET_WRITER_S
            }
            if len(quiet) >= ARCHIVE_AFTER_WRITERS // 2:
                # A random `_id`: a rival making block b makes an archive of its own.
                archive = f"{tenant_id}/ca/{number(b)}-{uuid.uuid4().hex[:12]}"
                self._unwritten_archives[archive] = {
                    "_id": archive,
                    "prev": head.archive,
                    "consumed": quiet,
                }
                archived = {**archived, **quiet}
                recent = {w: n for w, n in recent.items() if w not in quiet}
        doc = {
            "_id": block_id(tenant_id, b),
            "t": tenant_id,
            "first": head.sequence + 1,
            "last": sequence,
            "prev": head.hash,
            "hash": running,
            "consumed": recent,
            "kept": head.first,
            "at": convert.now_millis(),
            "parts": parts,
            "hashes": b"".join(h for _, _, hashes in placed for h in hashes),
        }
        if archive:
            doc["arch"] = archive
        following = LedgerHead(
            tenant_id, b, sequence, running, recent, head.first, archive, archived
        )
        return doc, following, placed

    async def _write_blocks(self, blocks: list[_Block]) -> int:
        """Inserts consecutive blocks in one ordered insert; how many were written (the first
        that another sequencer wrote first stops it).

        Where each commit's events landed (placements, for GetEvent: a hint, the blocks are the
        truth) rides in the same insert, after the blocks: no round trip of its own, and none
        is written for a block that lost."""
        tenant_id = blocks[0][1].tenant_id
        placements = placement_docs(tenant_id, blocks)
        # The archives the blocks name go first (a block that loses leaves its archive unnamed).
        archives = [
            self._unwritten_archives.pop(doc["arch"])
            for doc, _, _ in blocks
            if doc.get("arch") in self._unwritten_archives
        ]
        unplaced: list[Document] = []
        try:
            await self.store.ledger.insert_many(
                archives + [doc for doc, _, _ in blocks] + placements, ordered=True
            )
            written = len(blocks)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors") or [{}]
            if exc.details.get("writeConcernErrors") or errors[0].get("code") != DUPLICATE_KEY:
                raise
            failed = errors[0]["index"] - len(archives)
            if failed < 0:
                raise  # an archive's random `_id` taken: not a race this code knows
            written = min(failed, len(blocks))
            if failed < len(blocks):
                unplaced = placement_docs(tenant_id, blocks[:written])
            else:  # every block is in; the placements after one already there are not
                unplaced = placements[failed - len(blocks) + 1 :]
        if written == 0:
            return 0
        new_head = blocks[written - 1][1]
        self.heads[tenant_id] = new_head
        self.store.forget_consumed(new_head)
        self.stats["blocks"] += written
        self.stats["entries"] += new_head.sequence - blocks[0][0]["first"] + 1
        try:
            await asyncio.gather(self._place(unplaced), self._maybe_checkpoint(new_head))
        finally:
            if self.on_block is not None:
                self.on_block(tenant_id, new_head)
        return written

    async def _place(self, placements: list[Document]) -> None:
        if placements:
            with contextlib.suppress(PyMongoError):
                await self.store.ledger.insert_many(placements, ordered=False)

    async def _maybe_checkpoint(self, head: LedgerHead) -> None:
        """Signs a checkpoint every `checkpoint_every` events or `checkpoint_interval_s`."""
        if head.sequence == 0:
            return
        tenant_id = head.tenant_id
        done = self._checkpointed.get(tenant_id)
        if done is None:
            latest = await self.store.latest_checkpoint(tenant_id)
            done = (latest.ledger_sequence if latest else 0, 0.0)
            self._checkpointed[tenant_id] = done
        last_sequence, last_time = done
        now = time.monotonic()
        if head.sequence <= last_sequence:
            return
        if (
            head.sequence - last_sequence < self.checkpoint_every
            and now - last_time < self.checkpoint_interval_s
            and last_time != 0.0
        ):
            return
        checkpoint = self.signer.checkpoint(
            tenant_id, head.sequence, head.hash, convert.now_millis()
        )
        # From the number of this process's last checkpoint: from 0, every append first failed
        # on checkpoint 1 and then probed O(log k) _ids for the next free number.
        self._checkpoint_numbers[tenant_id] = await self.store.append(
            f"{tenant_id}/cp/",
            checkpoint_doc(checkpoint),
            self._checkpoint_numbers.get(tenant_id, 0),
        )
        self._checkpointed[tenant_id] = (head.sequence, now)


# How long the worker waits, after a commit of this process woke it, before it sequences: the
# commits of the groups that follow go into the same block. Unary LogEvent, 64 callers (groups
# of 10-16 events): a block per group (3.0 inserts a group, with the events' and the commit's),
# 2.25 with 50 ms (20 ms: 2.5), and 11-20 % more calls a second in the same run. The ledger lag
# grows by as much (its goal: p99 <= 1 s).
GATHER_S = 0.05


class LedgerWorker:
    """Runs the sequencer in the background: `gather_s` after this process wrote a tenant; again
    every `interval_s` while a tenant's last pass left something to do (a rival sequencer at
    work, an outbox whose commit has not come, a failure); and in sweeps of every tenant (to
    merge the outboxes of writers that died, void their holes, and sign the checkpoint that
    is due by time). A tenant is swept every `sweep_s` while it is active (written here in the
    last minute, or found changed or unsettled); a sweep that finds it idle doubles its
    interval, up to `idle_sweep_max_s`, and a checkpoint due by time brings its sweep forward.
    So an idle process sends a lookup per `sweep_s` (for new tenants) and a few per tenant and
    `idle_sweep_max_s`, not a poll per tenant it wrote lately."""

    def __init__(
        self,
        sequencer: Sequencer,
        recently_written: Any,
        *,
        interval_s: float = 0.05,
        sweep_s: float = 5.0,
        idle_sweep_max_s: float = 60.0,
        gather_s: float = GATHER_S,
    ) -> None:
        self._gather_s = gather_s
        self._sequencer = sequencer
        self._recently_written = recently_written  # (within_s) -> iterable of tenant ids
        self._interval_s = interval_s
        self._sweep_s = sweep_s
        self._idle_sweep_max_s = idle_sweep_max_s
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._dirty: set[str] = set()
        self._unsettled: set[str] = set()  # looked at again after interval_s
        self._sweep_at: dict[str, float] = {}  # tenant -> when its next sweep is due (loop time)
        self._sweep_every: dict[str, float] = {}  # tenant -> its sweep interval now

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    def committed(self, tenant_id: str) -> None:
        """A group of this process committed events of the tenant."""
        self._dirty.add(tenant_id)
        self._wake.set()

    async def close(self, grace_s: float = 2.0) -> None:
        """Stops after the block being written; a long backlog is left to the next sequencer
        (sequencing resumes from the stored head), so a stop is not held up by it."""
        self._stop.set()
        self._wake.set()
        if self._task is None:
            return
        done, _ = await asyncio.wait([self._task], timeout=grace_s)
        if not done:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _timeout(self, now: float, listed_at: float) -> float:
        if self._unsettled:
            return self._interval_s
        due = min([listed_at + self._sweep_s, *self._sweep_at.values()])
        return min(max(due - now, 0.0), self._sweep_s)

    def _schedule(self, tenant_id: str, now: float, *, swept: bool, active: bool) -> None:
        """The tenant's next sweep: within `sweep_s` while active, later and later while idle,
        and no later than its checkpoint by time. Only a sweep puts the next one later (a
        tenant written without a pause is still swept every `sweep_s`: its holes are voided
        only by sweeps)."""
        every = self._sweep_s
        if not active:
            every = min(2 * self._sweep_every.get(tenant_id, self._sweep_s), self._idle_sweep_max_s)
        self._sweep_every[tenant_id] = every
        at = now + every
        if not swept and tenant_id in self._sweep_at:
            at = min(at, self._sweep_at[tenant_id])
        due = self._sequencer.checkpoint_due(tenant_id)
        if due is not None:  # on the monotonic clock, as the loop's time is
            at = min(at, now + max(due - time.monotonic(), 0.0) + 0.01)
        self._sweep_at[tenant_id] = at

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        listed_at = loop.time()
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._timeout(loop.time(), listed_at))
            if self._dirty and self._gather_s > 0 and not self._stop.is_set():
                # The commits of the groups that follow join the same pass (see GATHER_S).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self._gather_s)
            self._wake.clear()
            now = loop.time()
            if now - listed_at >= self._sweep_s:
                listed_at = now
                with contextlib.suppress(PyMongoError):
                    for tenant_id in await self._sequencer.store.tenants():
                        self._sweep_at.setdefault(tenant_id, now)
            swept = {t for t, at in self._sweep_at.items() if at <= now}
            tenants = self._dirty | self._unsettled | swept
            self._dirty.clear()
            self._unsettled.clear()
            active = set(self._recently_written(60.0)) if swept else set()
            for tenant_id in sorted(tenants):
                if self._stop.is_set():
                    return
                if self._sequencer.yielding(tenant_id):
                    self._unsettled.add(tenant_id)
                    continue
                before = self._sequencer.heads.get(tenant_id)
                try:
                    head = await self._sequencer.sequence(
                        tenant_id, probe_holes=tenant_id in swept, defer=True
                    )
                    changed = before is None or head.block != before.block
                    if self._sequencer.yielding(tenant_id) or self._sequencer.waiting(tenant_id):
                        self._unsettled.add(tenant_id)
                except PyMongoError as exc:
                    log.warning("sequencing %s failed, retrying: %r", tenant_id, exc)
                    self._unsettled.add(tenant_id)
                    changed = True
                except Exception:
                    log.exception("sequencing %s failed", tenant_id)
                    changed = True  # swept again within sweep_s
                busy = changed or tenant_id in self._unsettled or tenant_id in active
                if tenant_id in swept or tenant_id not in self._sweep_at or busy:
                    self._schedule(tenant_id, loop.time(), swept=tenant_id in swept, active=busy)
