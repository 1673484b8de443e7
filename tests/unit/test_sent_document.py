"""convert.SentDocument: PyMongo sends it byte for byte as it sends a RawBSONDocument."""

from __future__ import annotations

from typing import Any

import bson
import pytest
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo.message import _op_msg

from auditlog_service.convert import SentDocument

DOCS = [
    {"_id": "t/ev-1", "n": 1, "text": "é\x00-free " * 20, "nested": {"a": [1, 2.5, None]}},
    {"_id": "t/ev-2", "n": 2**40, "flag": True},
    {"_id": "t/" + "x" * 300},
]


def _insert_message(documents: list[Any]) -> bytes:
    command = {"insert": "events", "ordered": True, "documents": documents, "$db": "auditlog"}
    _, message, _, _ = _op_msg(0, command, "auditlog", None, CodecOptions())
    # The header's request id (bytes 4-8) differs from one message to the next.
    return bytes(message[:4] + message[8:])


@pytest.mark.parametrize("doc", DOCS)
def test_a_sent_document_encodes_as_its_bytes_alone_and_inside_another(doc: dict[str, Any]) -> None:
    raw = bson.encode(doc)
    assert bson.encode(SentDocument(raw)) == raw
    inside = bson.encode({"documents": [SentDocument(raw)]})
    assert inside == bson.encode({"documents": [doc]})


def test_an_insert_of_sent_documents_is_the_insert_of_raw_documents() -> None:
    raws = [bson.encode(doc) for doc in DOCS]
    sent = _insert_message([SentDocument(raw) for raw in raws])
    assert sent == _insert_message([RawBSONDocument(raw) for raw in raws])
    assert sent == _insert_message(list(DOCS))
    # Each document's bytes are in the message as they are.
    assert all(raw in sent for raw in raws)


def test_a_sent_document_is_no_mapping() -> None:
    # Nothing reads a document being sent: a field lookup fails instead of decoding it.
    sent = SentDocument(bson.encode(DOCS[0]))
    with pytest.raises(TypeError):
        sent["_id"]  # type: ignore[index]
