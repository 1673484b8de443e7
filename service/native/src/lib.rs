//! auditlog_service._native: the write path's per-event work in one pass over each event's
//! serialization, and the ledger's per-entry work.
//!
//! - `Preparer.prepare` gives what convert.py's EventPreparer.prepare, to_document,
//!   recorded_event and sequence_position give for a serialized AuditEvent (the document,
//!   whether the client gave an occur time, the recorded form, where a session sequence goes),
//!   and, in BSON only (all they are made for), the ledger entry's filters and the document.
//!   It does that for events the Python rules would not change but to mask a sensitive input
//!   (they would: unknown or output-only fields, finer than millisecond times, -0.0, free-form
//!   data, an input marked masked) and declines every other event (None), which the rules
//!   then prepare.
//! - `Validator.valid` says whether validation.py's rules find nothing wrong with an event, for
//!   certain; when it cannot vouch, the rules are asked and name the violations.
//! - `slot_run` gives a session's run of a group: its events' slots and id claims.
//! - `commit_entries` gives a commit's ledger entries, completed, and packed.
//! - `chain_hashes`, `complete_entries`, `pack_entries` and `raw_document` do what
//!   auditlog.ledger.chain_hash, ledger.complete_entry, bson.encode and PyMongo's encoding of
//!   a document would, for many at once.
//!
//! Their results are byte for byte the Python ones: tests/unit/test_native_*.py compare the
//! two over every event type, over events that must be declined and over mutated bytes.

use std::collections::HashMap;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyList, PyString, PyTuple};
use sha2::{Digest, Sha256};

// Field kinds, as convert.native_preparer numbers them (_NATIVE_STRING ...). Any other kind (free-form data, a map,
// a packed list) is declined when present.
const STRING: u8 = 0;
const BOOL: u8 = 1;
const ENUM: u8 = 2;
const DOUBLE: u8 = 3;
const MESSAGE: u8 = 4;
const TIMESTAMP: u8 = 5;

/// Returns Ok(None) from the enclosing function (the event is declined) when the value is None.
macro_rules! or_decline {
    ($value:expr) => {
        match $value {
            Some(inner) => inner,
            None => return Ok(None),
        }
    };
}

enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
}

/// A protobuf wire-format reader that gives up (None) on anything malformed or not minimal:
/// the serializations it reads come from protobuf's own serializer, which writes neither.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn varint(&mut self) -> Option<u64> {
        let mut value: u64 = 0;
        let mut shift = 0;
        loop {
            let byte = *self.buf.get(self.pos)?;
            self.pos += 1;
            if shift == 63 && byte > 1 {
                return None;
            }
            value |= u64::from(byte & 0x7F) << shift;
            if byte < 0x80 {
                // A last byte of 0 after others is a longer encoding than needed.
                return if byte == 0 && shift > 0 {
                    None
                } else {
                    Some(value)
                };
            }
            shift += 7;
        }
    }

    /// The next field: its number and value.
    fn field(&mut self) -> Option<(u32, Wire<'a>)> {
        let tag = self.varint()?;
        let number = u32::try_from(tag >> 3).ok()?;
        let value = match tag & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                let bytes = self.buf.get(self.pos..self.pos + 8)?;
                self.pos += 8;
                Wire::Fixed64(u64::from_le_bytes(bytes.try_into().ok()?))
            }
            2 => {
                let length = usize::try_from(self.varint()?).ok()?;
                let end = self.pos.checked_add(length)?;
                let bytes = self.buf.get(self.pos..end)?;
                self.pos = end;
                Wire::Bytes(bytes)
            }
            _ => return None, // fixed32 and groups: no field of the contract has them
        };
        Some((number, value))
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7F) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A set string field, as bytes of text (empty: never written for a field without presence).
fn text(value: Wire<'_>) -> Option<&str> {
    match value {
        Wire::Bytes(bytes) if !bytes.is_empty() => std::str::from_utf8(bytes).ok(),
        _ => None,
    }
}

/// A Timestamp's seconds and nanos as protobuf writes one (seconds, then nanos below a second,
/// each only when not 0); None for anything else.
fn timestamp_parts(bytes: &[u8]) -> Option<(i64, i64)> {
    let mut reader = Reader::new(bytes);
    let (mut seconds, mut nanos, mut last) = (0i64, 0i64, 0u32);
    while !reader.done() {
        match reader.field()? {
            (1, Wire::Varint(value)) if last < 1 && value != 0 => {
                seconds = value as i64;
                last = 1;
            }
            (2, Wire::Varint(value)) if last < 2 && value != 0 && value < 1_000_000_000 => {
                nanos = value as i64;
                last = 2;
            }
            _ => return None,
        }
    }
    Some((seconds, nanos))
}

/// A Timestamp's whole milliseconds; None when it holds more than whole milliseconds (the
/// Python rules truncate it), a value out of range or a field it does not have.
fn timestamp_millis(bytes: &[u8]) -> Option<i64> {
    let (seconds, nanos) = timestamp_parts(bytes)?;
    if nanos % 1_000_000 != 0 {
        return None;
    }
    seconds.checked_mul(1000)?.checked_add(nanos / 1_000_000)
}

/// A Timestamp of `millis`, serialized.
fn timestamp_bytes(millis: i64) -> Vec<u8> {
    let (seconds, rest) = (millis.div_euclid(1000), millis.rem_euclid(1000));
    let mut out = Vec::with_capacity(16);
    if seconds != 0 {
        out.push(0x08);
        put_varint(&mut out, seconds as u64);
    }
    if rest != 0 {
        out.push(0x10);
        put_varint(&mut out, (rest * 1_000_000) as u64);
    }
    out
}

fn varint_size(value: u64) -> usize {
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

fn length_delimited(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    put_varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

// BSON, as PyMongo writes a document's dict: elements in the dict's order, strings (0x02),
// dates (0x09: milliseconds), doubles (0x01), booleans (0x08), documents (0x03), arrays (0x04).
fn bson_key(out: &mut Vec<u8>, kind: u8, key: &str) {
    out.push(kind);
    out.extend_from_slice(key.as_bytes());
    out.push(0);
}

fn bson_string(out: &mut Vec<u8>, key: &str, value: &str) {
    bson_key(out, 0x02, key);
    out.extend_from_slice(&(value.len() as i32 + 1).to_le_bytes());
    out.extend_from_slice(value.as_bytes());
    out.push(0);
}

/// An integer as PyMongo encodes a Python int: int32 where it fits, else int64.
fn bson_int(out: &mut Vec<u8>, key: &str, value: i64) {
    match i32::try_from(value) {
        Ok(small) => {
            bson_key(out, 0x10, key);
            out.extend_from_slice(&small.to_le_bytes());
        }
        Err(_) => {
            bson_key(out, 0x12, key);
            out.extend_from_slice(&value.to_le_bytes());
        }
    }
}

fn bson_date(out: &mut Vec<u8>, key: &str, millis: i64) {
    bson_key(out, 0x09, key);
    out.extend_from_slice(&millis.to_le_bytes());
}

/// Opens an embedded document or array: where its length goes (bson_close writes it).
fn bson_open(out: &mut Vec<u8>, kind: u8, key: &str) -> usize {
    bson_key(out, kind, key);
    out.extend_from_slice(&[0; 4]);
    out.len() - 4
}

fn bson_close(out: &mut Vec<u8>, at: usize) {
    out.push(0);
    let length = (out.len() - at) as i32;
    out[at..at + 4].copy_from_slice(&length.to_le_bytes());
}

/// A Python string and its text, for a document's key or value.
struct Name {
    py: Py<PyString>,
    text: String,
}

impl Name {
    fn new(py: Python<'_>, text: &str) -> Self {
        Name {
            py: PyString::intern(py, text).unbind(),
            text: text.to_string(),
        }
    }
}

struct FieldPlan {
    name: Name,
    kind: u8,
    repeated: bool,
    enum_names: HashMap<i64, Name>,
    message: usize,
}

struct PayloadPlan {
    name: Name,
    message: usize,
    type_string: Name,
    event_type: u64,
    cobrowse: bool,
    // Fields of the payload the document also carries at its top, when set.
    lifted: Vec<Name>,
    // The payload field naming the co-browsing session the event is about, if any.
    session_field: Option<Name>,
    // Whether its text is masked when sensitive (Masking).
    masked: bool,
}

/// How a sensitive input is masked (convert.EventPreparer.prepare): its text is replaced by the
/// mask and `masked` is set, and the fingerprint also hashes HMAC-SHA256(key, the text).
struct Masking {
    // The AuditEvent's field of that payload, and the payload's text, sensitive and masked.
    payload: u32,
    text: u32,
    sensitive: u32,
    masked: u32,
    mask: String,
    // SHA-256 having taken the key's inner and outer padded blocks (RFC 2104): each HMAC
    // starts from a copy.
    inner: Sha256,
    outer: Sha256,
}

impl Masking {
    fn new(row: MaskingRow) -> PyResult<Self> {
        let (payload, text, sensitive, masked, mask, key) = row;
        if [text, sensitive, masked]
            .iter()
            .any(|n| !(1..16).contains(n))
            || key.len() > 64
        {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "masking: payload fields numbered below 16 and a key of at most 64 bytes",
            ));
        }
        let mut block = [0u8; 64];
        block[..key.len()].copy_from_slice(&key);
        let padded = |pad: u8| {
            let mut hasher = Sha256::new();
            hasher.update(block.map(|byte| byte ^ pad));
            hasher
        };
        Ok(Masking {
            payload,
            text,
            sensitive,
            masked,
            mask,
            inner: padded(0x36),
            outer: padded(0x5c),
        })
    }

    /// The payload as stored and the digest of its secret when it is sensitive; Some(None) when
    /// it is not; None to decline (`masked` given, fields out of order or twice, text that is
    /// not UTF-8).
    fn masked(&self, payload: &[u8]) -> Option<Option<(Vec<u8>, [u8; 32])>> {
        let mut reader = Reader::new(payload);
        let mut last = 0u32;
        let mut kept: Vec<(u32, &[u8])> = Vec::new();
        let (mut text, mut sensitive): (&[u8], bool) = (b"", false);
        while !reader.done() {
            let start = reader.pos;
            let (number, value) = reader.field()?;
            if number <= last || number == self.masked {
                return None;
            }
            last = number;
            if number == self.text {
                let Wire::Bytes(bytes) = value else {
                    return None;
                };
                text = std::str::from_utf8(bytes).ok()?.as_bytes();
                continue;
            }
            // Any other encoding of true is left to message_doc, which declines it.
            sensitive |= number == self.sensitive && matches!(value, Wire::Varint(1));
            kept.push((number, &payload[start..reader.pos]));
        }
        if !sensitive {
            return Some(None);
        }
        let mut inner = self.inner.clone();
        inner.update(text);
        let mut outer = self.outer.clone();
        outer.update(inner.finalize());
        let secret: [u8; 32] = outer.finalize().into();
        let mut text_field = Vec::with_capacity(self.mask.len() + 2);
        length_delimited(&mut text_field, tag(self.text, 2), self.mask.as_bytes());
        let masked_field = [tag(self.masked, 0), 1];
        kept.push((self.text, &text_field));
        kept.push((self.masked, &masked_field));
        kept.sort_unstable_by_key(|(number, _)| *number);
        let mut out = Vec::with_capacity(payload.len() + text_field.len() + 2);
        for (_, field) in kept {
            out.extend_from_slice(field);
        }
        Some(Some((out, secret)))
    }
}

// ledger.filter_fields's short keys (the filters are made in BSON only).
const FILTER_TYPE: &str = "t";
const FILTER_OCCUR: &str = "o";
const FILTER_USER: &str = "u";
const FILTER_CUSTOMER: &str = "c";
const FILTER_CALL: &str = "l";
const FILTER_SESSION: &str = "s";
const FILTER_ACTOR: &str = "a";

/// The document's keys, made once (a dict's and BSON's alike).
struct Keys {
    id_key: Name,
    key: Name,
    id: Name,
    tenant_id: Name,
    type_: Name,
    occur_time: Name,
    receive_time: Name,
    fingerprint: Name,
    tenant_user_id: Name,
    cobrowse: Name,
    session_id: Name,
    actor: Name,
}

impl Keys {
    fn new(py: Python<'_>) -> Self {
        let name = |text: &str| Name::new(py, text);
        Keys {
            id_key: name("_id"),
            key: name("key"),
            id: name("id"),
            tenant_id: name("tenant_id"),
            type_: name("type"),
            occur_time: name("occur_time"),
            receive_time: name("receive_time"),
            fingerprint: name("fingerprint"),
            tenant_user_id: name("tenant_user_id"),
            cobrowse: name("cobrowse"),
            session_id: name("session_id"),
            actor: name("actor"),
        }
    }
}

/// The AuditEvent's own field numbers (convert.native_preparer passes them from the descriptor).
struct EventNumbers {
    id: u32,
    tenant_id: u32,
    tenant_user_id: u32,
    occur_time: u32,
    receive_time: u32,
    event_type: u32,
    cobrowse: u32,
}

impl EventNumbers {
    fn new(numbers: &HashMap<String, u32>) -> PyResult<Self> {
        let number = |key: &str| match numbers.get(key) {
            // tag() writes the AuditEvent's own tags as one byte.
            Some(&n) if (1..16).contains(&n) => Ok(n),
            _ => Err(pyo3::exceptions::PyValueError::new_err(format!(
                "{key}: no field number, or not below 16"
            ))),
        };
        Ok(EventNumbers {
            id: number("id")?,
            tenant_id: number("tenant_id")?,
            tenant_user_id: number("tenant_user_id")?,
            occur_time: number("occur_time")?,
            receive_time: number("receive_time")?,
            event_type: number("event_type")?,
            cobrowse: number("cobrowse")?,
        })
    }
}

struct Cobrowse<'a> {
    start: usize,
    end: usize,
    session_id: &'a str,
    actor: i64,
}

#[pyclass(frozen)]
struct Preparer {
    messages: Vec<HashMap<u32, FieldPlan>>,
    payloads: HashMap<u32, PayloadPlan>,
    numbers: EventNumbers,
    actor_names: HashMap<i64, Name>,
    keys: Keys,
    // DatetimeMS, and the function making a payload's time (convert.timestamp_to_datetime's
    // result from milliseconds).
    stored_time: Py<PyAny>,
    payload_time: Py<PyAny>,
    masking: Masking,
}

type FieldRow = (u32, String, u8, bool, HashMap<i64, String>, usize);
type PayloadRow = (
    String,
    usize,
    String,
    u64,
    bool,
    Vec<String>,
    Option<String>,
);
type MaskingRow = (u32, u32, u32, u32, String, Vec<u8>);

#[pymethods]
impl Preparer {
    /// `messages`: per message type, its fields as (number, name, kind, repeated, enum value
    /// names, message index); `payloads`: per payload field number, (name, message index, type
    /// string, event type, co-browsing, lifted field names, session field name); `numbers`: the
    /// AuditEvent's own fields by name; `masking`: the AuditEvent's field of the payload whose
    /// sensitive text is masked, that payload's text, sensitive and masked fields, the mask and
    /// the key of the secret's HMAC.
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        messages: Vec<Vec<FieldRow>>,
        payloads: HashMap<u32, PayloadRow>,
        numbers: HashMap<String, u32>,
        actor_names: HashMap<i64, String>,
        stored_time: Py<PyAny>,
        payload_time: Py<PyAny>,
        masking: MaskingRow,
    ) -> PyResult<Self> {
        let messages = messages
            .into_iter()
            .map(|fields| {
                fields
                    .into_iter()
                    .map(|(number, field, kind, repeated, enums, message)| {
                        let enum_names =
                            enums.iter().map(|(v, n)| (*v, Name::new(py, n))).collect();
                        let plan = FieldPlan {
                            name: Name::new(py, &field),
                            kind,
                            repeated,
                            enum_names,
                            message,
                        };
                        (number, plan)
                    })
                    .collect()
            })
            .collect();
        let masking = Masking::new(masking)?;
        let payloads = payloads
            .into_iter()
            .map(|(number, row)| {
                let (field, message, type_string, event_type, cobrowse, lifted, session) = row;
                let plan = PayloadPlan {
                    name: Name::new(py, &field),
                    message,
                    type_string: Name::new(py, &type_string),
                    event_type,
                    cobrowse,
                    lifted: lifted.iter().map(|n| Name::new(py, n)).collect(),
                    session_field: session.as_deref().map(|n| Name::new(py, n)),
                    masked: number == masking.payload,
                };
                (number, plan)
            })
            .collect();
        let numbers = EventNumbers::new(&numbers)?;
        let actor_names = actor_names
            .iter()
            .map(|(v, n)| (*v, Name::new(py, n)))
            .collect();
        Ok(Preparer {
            messages,
            payloads,
            numbers,
            actor_names,
            keys: Keys::new(py),
            stored_time,
            payload_time,
            masking,
        })
    }

    /// (document, occur time given, recorded form, sequence position, the ledger's filter
    /// fields as a BSON document, the document's BSON elements, a co-browsing event's (tenant,
    /// session) or None)
    /// of the serialized event,
    /// stored under `event_id` and received at `receive_time` (`receive_millis` its
    /// milliseconds); None when the Python rules must prepare it.
    fn prepare<'py>(
        &self,
        py: Python<'py>,
        serialized: &[u8],
        event_id: &Bound<'py, PyString>,
        receive_time: &Bound<'py, PyAny>,
        receive_millis: i64,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let Some(made) = self.prepared(
            py,
            serialized,
            EventId::Given(event_id),
            receive_time,
            receive_millis,
            false,
            &mut Shared::default(),
        )?
        else {
            return Ok(None);
        };
        let items: [Bound<'py, PyAny>; 7] = [
            made.doc.into_any(),
            PyBool::new(py, made.occur_given).to_owned().into_any(),
            made.recorded.into_any(),
            made.sequence_at.into_pyobject(py)?.into_any(),
            made.filters.into_any(),
            made.body.into_any(),
            made.session,
        ];
        Ok(Some(PyTuple::new(py, items)?))
    }

    /// What `prepare` makes of each serialized event of a batch received at `receive_time`,
    /// as an EventWrite (document, occur time given, recorded form, filter fields, BSON, the
    /// document's key count, session, sequence position), under the id it holds or else
    /// `new_id()`; None for each event it declines, whose indexes come second. `slim`: the
    /// documents leave out the payload, whose elements are in the BSON alone (the key count
    /// is the document's: what storage adds comes after it either way); nothing on the write
    /// path reads a payload from the document, and making its objects cost (in process, 1,000
    /// events, three pairs) 5.2-6.3 against 3.9-6.1 us a general event. Nor does it read the
    /// tenant's user, a co-browsing event's context and session id, or the ids lifted to the
    /// top for ListEvents (the filters have them as BSON): slim documents leave them out too,
    /// which took a batch's preparation, slots, raw documents and release from 2.85-2.89 to
    /// 2.63-2.75 us a co-browsing event and from 2.10-2.24 to 1.98-2.02 a general one (in
    /// process, 1,000 events, fastest of 60, five alternating pairs).
    #[pyo3(signature = (batch, receive_time, receive_millis, new_id, slim = false))]
    fn prepare_batch<'py>(
        &self,
        py: Python<'py>,
        batch: &Bound<'py, PyList>,
        receive_time: &Bound<'py, PyAny>,
        receive_millis: i64,
        new_id: &Bound<'py, PyAny>,
        slim: bool,
    ) -> PyResult<(Bound<'py, PyList>, Vec<usize>)> {
        let ready = PyList::empty(py);
        let mut declined = Vec::new();
        let mut shared = Shared::default();
        for (index, serialized) in batch.iter().enumerate() {
            let serialized = serialized.cast_into::<PyBytes>()?;
            let made = self.prepared(
                py,
                serialized.as_bytes(),
                EventId::Own(new_id),
                receive_time,
                receive_millis,
                slim,
                &mut shared,
            )?;
            let Some(made) = made else {
                declined.push(index);
                ready.append(py.None())?;
                continue;
            };
            let body_keys = made.doc.len();
            let session = (!made.session.is_none()).then(|| made.session.unbind());
            let write = EventWrite {
                doc: made.doc.unbind(),
                occur_time_given: made.occur_given,
                recorded: made.recorded.unbind(),
                filters: Some(made.filters.into_any().unbind()),
                body: Some(made.body.unbind()),
                body_keys,
                session,
                sequence_at: made.sequence_at,
            };
            ready.append(Bound::new(py, write)?)?;
        }
        Ok((ready, declined))
    }
}

/// The id an event is stored under: given, or its own (made by the function when it has none).
enum EventId<'a, 'py> {
    Given(&'a Bound<'py, PyString>),
    Own(&'a Bound<'py, PyAny>),
}

/// Objects the documents of a batch's events share, made once a batch: the tenant (made again
/// where it changes: a batch is mostly of one), each user id (where the documents hold it: not
/// slim ones), and each co-browsing session's id and (tenant, session) key (a batch often holds
/// a few users' and sessions' events interleaved). Each object not made for an event is one
/// fewer to free with its document.
#[derive(Default)]
struct Shared<'py> {
    tenant: Option<(String, Bound<'py, PyString>)>,
    users: HashMap<String, Bound<'py, PyString>>,
    // Of the tenant above: by session id, its string and the (tenant, session) key.
    sessions: HashMap<String, (Bound<'py, PyString>, Bound<'py, PyAny>)>,
}

impl<'py> Shared<'py> {
    fn tenant(&mut self, py: Python<'py>, text: &str) -> Bound<'py, PyString> {
        match &self.tenant {
            Some((known, tenant)) if known == text => tenant.clone(),
            _ => {
                let tenant = PyString::new(py, text);
                self.tenant = Some((text.to_owned(), tenant.clone()));
                self.sessions.clear(); // their keys name the tenant
                tenant
            }
        }
    }

    fn user(&mut self, py: Python<'py>, text: &str) -> Bound<'py, PyString> {
        if let Some(user) = self.users.get(text) {
            return user.clone();
        }
        let user = PyString::new(py, text);
        self.users.insert(text.to_owned(), user.clone());
        user
    }

    /// The session id `text` of `tenant` (the string `tenant` gave), and its (tenant, session).
    fn session(
        &mut self,
        py: Python<'py>,
        tenant: &Bound<'py, PyString>,
        text: &str,
    ) -> PyResult<(Bound<'py, PyString>, Bound<'py, PyAny>)> {
        if let Some((session_id, key)) = self.sessions.get(text) {
            return Ok((session_id.clone(), key.clone()));
        }
        let session_id = PyString::new(py, text);
        let key = PyTuple::new(py, [tenant.clone(), session_id.clone()])?.into_any();
        self.sessions
            .insert(text.to_owned(), (session_id.clone(), key.clone()));
        Ok((session_id, key))
    }
}

/// What the preparer makes of an event (see Preparer.prepare).
struct Prepared<'py> {
    doc: Bound<'py, PyDict>,
    occur_given: bool,
    recorded: Bound<'py, PyBytes>,
    sequence_at: usize,
    filters: Bound<'py, PyBytes>,
    body: Bound<'py, PyBytes>,
    session: Bound<'py, PyAny>,
}

impl Preparer {
    #[allow(clippy::too_many_arguments)]
    fn prepared<'py>(
        &self,
        py: Python<'py>,
        serialized: &[u8],
        event_id: EventId<'_, 'py>,
        receive_time: &Bound<'py, PyAny>,
        receive_millis: i64,
        slim: bool,
        shared: &mut Shared<'py>,
    ) -> PyResult<Option<Prepared<'py>>> {
        let numbers = &self.numbers;
        let mut id_text = "";
        let mut reader = Reader::new(serialized);
        let mut last = 0u32;
        // The id's end, the end of tenant_id and tenant_user_id, and the content's rest.
        let (mut id_end, mut head_end) = (0usize, 0usize);
        let (mut tenant_id, mut tenant_user_id) = ("", "");
        let mut occur: Option<(usize, usize, i64)> = None;
        let mut cobrowse: Option<Cobrowse<'_>> = None;
        // The payload's plan and value, and its field's end.
        let mut payload: Option<(&PayloadPlan, &[u8], usize)> = None;
        while !reader.done() {
            let start = reader.pos;
            let (number, value) = or_decline!(reader.field());
            if number <= last {
                return Ok(None); // out of order, or twice: not protobuf's own serialization
            }
            last = number;
            if number == numbers.id {
                id_text = or_decline!(text(value));
                id_end = reader.pos;
                head_end = reader.pos;
            } else if number == numbers.tenant_id {
                tenant_id = or_decline!(text(value));
                head_end = reader.pos;
            } else if number == numbers.tenant_user_id {
                tenant_user_id = or_decline!(text(value));
                head_end = reader.pos;
            } else if number == numbers.occur_time {
                let Wire::Bytes(bytes) = value else {
                    return Ok(None);
                };
                occur = Some((start, reader.pos, or_decline!(timestamp_millis(bytes))));
            } else if number == numbers.cobrowse {
                let Wire::Bytes(bytes) = value else {
                    return Ok(None);
                };
                let (session_id, actor) = or_decline!(cobrowse_context(bytes));
                cobrowse = Some(Cobrowse {
                    start,
                    end: reader.pos,
                    session_id,
                    actor,
                });
            } else if let Some(plan) = self.payloads.get(&number) {
                let Wire::Bytes(bytes) = value else {
                    return Ok(None);
                };
                if payload.is_some() {
                    return Ok(None);
                }
                payload = Some((plan, bytes, reader.pos));
            } else {
                // receive_time, event_type, the sequences, ledger_hash (the server's to set)
                // or a field this contract does not know: the Python rules clear them.
                return Ok(None);
            }
        }
        let (plan, mut payload_bytes, payload_end) = or_decline!(payload);
        let rest_start = occur.map_or(head_end, |(_, end, _)| end);
        if occur.is_some_and(|(start, _, _)| start != head_end) {
            return Ok(None);
        }
        let head = &serialized[id_end..head_end];
        let mut rest = &serialized[rest_start..];
        // A sensitive input's payload is stored masked: the content's rest is rewritten with
        // it (the payload is the content's last field: its fields come in number order).
        let masked_rest;
        let mut secret = None;
        if plan.masked {
            if let Some((masked, digest)) = or_decline!(self.masking.masked(payload_bytes)) {
                if payload_end != serialized.len() {
                    return Ok(None);
                }
                // The payload field's tag, and its length written again for the new length.
                let value_at = payload_end - payload_bytes.len() - rest_start;
                let tag_end = value_at - varint_size(payload_bytes.len() as u64);
                let mut made = Vec::with_capacity(rest.len() + self.masking.mask.len() + 4);
                made.extend_from_slice(&rest[..tag_end]);
                put_varint(&mut made, masked.len() as u64);
                made.extend_from_slice(&masked);
                masked_rest = (made, masked);
                rest = &masked_rest.0;
                payload_bytes = &masked_rest.1;
                secret = Some(digest);
            }
        }
        let mut payload_bson = Vec::with_capacity(payload_bytes.len() + 64);
        // Without the payload's objects (`slim`), its document is only in the BSON.
        let payload_doc = or_decline!(self.message_doc(
            py,
            plan.message,
            payload_bytes,
            &mut payload_bson,
            !slim
        )?);
        // The payload's string field `name`, if set (as its document would hold it), from its
        // bytes: the same with the payload's objects made or not.
        let payload_text = |name: &Name| self.top_text(plan.message, payload_bytes, &name.text);

        let mut digest = Sha256::new();
        digest.update(head);
        digest.update(rest);
        if let Some(secret) = secret {
            digest.update(secret);
        }
        let fingerprint = hex(&digest.finalize());

        // The recorded form: the id, the content's head, the times and the type, its rest.
        let receive_ts = timestamp_bytes(receive_millis);
        let event_id = match event_id {
            EventId::Given(id) => id.clone(),
            EventId::Own(_) if !id_text.is_empty() => PyString::new(py, id_text),
            EventId::Own(new_id) => new_id.call0()?.cast_into::<PyString>()?,
        };
        let event_id_text = event_id.to_str()?;
        let mut recorded = Vec::with_capacity(serialized.len() + event_id_text.len() + 48);
        if !event_id_text.is_empty() {
            length_delimited(&mut recorded, tag(numbers.id, 2), event_id_text.as_bytes());
        }
        recorded.extend_from_slice(head);
        match occur {
            Some((start, end, _)) => recorded.extend_from_slice(&serialized[start..end]),
            None => length_delimited(&mut recorded, tag(numbers.occur_time, 2), &receive_ts),
        }
        length_delimited(&mut recorded, tag(numbers.receive_time, 2), &receive_ts);
        recorded.push(tag(numbers.event_type, 0));
        put_varint(&mut recorded, plan.event_type);
        let rest_at = recorded.len();
        recorded.extend_from_slice(rest);

        let keys = &self.keys;
        let mut sequence_at = 0usize;
        let mut context = None;
        if plan.cobrowse {
            // The context is the content's rest's first field; a session sequence follows it.
            let given = or_decline!(cobrowse);
            if given.start != rest_start {
                return Ok(None);
            }
            let actor = or_decline!(self.actor_names.get(&given.actor));
            sequence_at = rest_at + (given.end - given.start);
            context = Some((given.session_id, actor));
        }
        let tenant = shared.tenant(py, tenant_id);
        // The session a payload names takes the place of the context's (convert.to_document).
        // As text: a slim document holds neither it nor the lifted ids, which go to the BSON
        // and the filters alone (a string an id an event, made for nothing, before).
        let session = match &plan.session_field {
            Some(name) => payload_text(name),
            None => match context {
                Some((session_id, _)) if !session_id.is_empty() => Some(session_id),
                _ => None,
            },
        };
        let mut lifted = Vec::with_capacity(plan.lifted.len());
        for name in &plan.lifted {
            if let Some(value) = payload_text(name) {
                lifted.push((name, value));
            }
        }

        let key_text = format!("{tenant_id}/{event_id_text}");
        let key = PyString::new(py, &key_text);
        let occur_millis = occur.map_or(receive_millis, |(_, _, millis)| millis);
        let occur_time = match occur {
            Some((_, _, millis)) => self.stored_time.bind(py).call1((millis,))?,
            None => receive_time.clone(),
        };
        // Sized for what storage adds too (the outbox id; a co-browsing event's sequence and
        // run end): a dict grown item by item was made again at its 6th and 11th.
        let doc = presized_dict(py, if plan.cobrowse { 11 } else { 9 })?;
        doc.set_item(&keys.id_key.py, &key)?;
        doc.set_item(&keys.key.py, &key)?;
        doc.set_item(&keys.id.py, &event_id)?;
        doc.set_item(&keys.tenant_id.py, &tenant)?;
        doc.set_item(&keys.type_.py, &plan.type_string.py)?;
        doc.set_item(&keys.occur_time.py, occur_time)?;
        doc.set_item(&keys.receive_time.py, receive_time)?;
        doc.set_item(&keys.fingerprint.py, &fingerprint)?;
        if let Some(payload_doc) = &payload_doc {
            doc.set_item(&plan.name.py, payload_doc)?;
        }
        // The same document in BSON (its elements), in the same order.
        let mut body = Vec::with_capacity(payload_bson.len() + 2 * key_text.len() + 200);
        bson_string(&mut body, &keys.id_key.text, &key_text);
        bson_string(&mut body, &keys.key.text, &key_text);
        bson_string(&mut body, &keys.id.text, event_id_text);
        bson_string(&mut body, &keys.tenant_id.text, tenant_id);
        bson_string(&mut body, &keys.type_.text, &plan.type_string.text);
        bson_date(&mut body, &keys.occur_time.text, occur_millis);
        bson_date(&mut body, &keys.receive_time.text, receive_millis);
        bson_string(&mut body, &keys.fingerprint.text, &fingerprint);
        bson_key(&mut body, 0x03, &plan.name.text);
        body.extend_from_slice(&(payload_bson.len() as i32 + 5).to_le_bytes());
        body.extend_from_slice(&payload_bson);
        body.push(0);
        if !tenant_user_id.is_empty() {
            if !slim {
                doc.set_item(&keys.tenant_user_id.py, shared.user(py, tenant_user_id))?;
            }
            bson_string(&mut body, &keys.tenant_user_id.text, tenant_user_id);
        }
        // A co-browsing event's (tenant, session): what keeps its session's events in order.
        let mut session_key = py.None().into_bound(py);
        if let Some((session_id, actor)) = context {
            let (session_id_py, key) = shared.session(py, &tenant, session_id)?;
            if !slim {
                let inner = PyDict::new(py);
                inner.set_item(&keys.session_id.py, &session_id_py)?;
                inner.set_item(&keys.actor.py, &actor.py)?;
                doc.set_item(&keys.cobrowse.py, inner)?;
            }
            session_key = key;
            let at = bson_open(&mut body, 0x03, &keys.cobrowse.text);
            bson_string(&mut body, &keys.session_id.text, session_id);
            bson_string(&mut body, &keys.actor.text, &actor.text);
            bson_close(&mut body, at);
        }
        for &(name, value) in &lifted {
            if !slim {
                doc.set_item(&name.py, value)?;
            }
            bson_string(&mut body, &name.text, value);
        }
        if let Some(value) = session {
            if !slim {
                // The context's session id as the batch shares it; a payload's of its own.
                let value = match (&plan.session_field, context) {
                    (None, Some(_)) => shared.session(py, &tenant, value)?.0,
                    _ => PyString::new(py, value),
                };
                doc.set_item(&keys.session_id.py, value)?;
            }
            bson_string(&mut body, &keys.session_id.text, value);
        }

        // What ListEvents filters on, as the ledger's entry keeps it (ledger.filter_fields), in
        // BSON: the entry is all it is made for (commit_entries copies it there).
        let mut filters = Vec::with_capacity(64 + tenant_user_id.len());
        filters.extend_from_slice(&[0; 4]);
        bson_string(&mut filters, FILTER_TYPE, &plan.type_string.text);
        bson_int(&mut filters, FILTER_OCCUR, occur_millis);
        if !tenant_user_id.is_empty() {
            bson_string(&mut filters, FILTER_USER, tenant_user_id);
        }
        for &(name, value) in &lifted {
            let key = match name.text.as_str() {
                "customer_id" => FILTER_CUSTOMER,
                "call_id" => FILTER_CALL,
                _ => continue,
            };
            bson_string(&mut filters, key, value);
        }
        if let Some(value) = session {
            bson_string(&mut filters, FILTER_SESSION, value);
        }
        if let Some((_, actor)) = context {
            bson_string(&mut filters, FILTER_ACTOR, &actor.text);
        }
        bson_close(&mut filters, 0);
        Ok(Some(Prepared {
            doc,
            occur_given: occur.is_some(),
            recorded: PyBytes::new(py, &recorded),
            sequence_at,
            filters: PyBytes::new(py, &filters),
            body: PyBytes::new(py, &body),
            session: session_key,
        }))
    }

    /// The document of a message of type `index` (convert._doc_function's), or None to
    /// decline; its elements in BSON are appended to `out`. Without `objects`, only its BSON
    /// is made (Some(None)): the document itself is then never made in Python.
    fn message_doc<'py>(
        &self,
        py: Python<'py>,
        index: usize,
        bytes: &[u8],
        out: &mut Vec<u8>,
        objects: bool,
    ) -> PyResult<Option<Option<Bound<'py, PyDict>>>> {
        let plan = &self.messages[index];
        let doc = objects.then(|| PyDict::new(py));
        let mut reader = Reader::new(bytes);
        let mut last = 0u32;
        // The list being filled (None without `objects`), and its BSON array: where its
        // length goes, and its items.
        let mut list: Option<(Option<Bound<'py, PyList>>, usize, usize)> = None;
        while !reader.done() {
            let (number, value) = or_decline!(reader.field());
            let field = or_decline!(plan.get(&number));
            if number < last || (number == last && !field.repeated) {
                return Ok(None);
            }
            if number != last {
                if let Some((_, at, _)) = list.take() {
                    bson_close(out, at);
                }
                if field.repeated {
                    let at = bson_open(out, 0x04, &field.name.text);
                    let items = match &doc {
                        Some(doc) => {
                            let items = PyList::empty(py);
                            doc.set_item(&field.name.py, &items)?;
                            Some(items)
                        }
                        None => None,
                    };
                    list = Some((items, at, 0));
                }
            }
            let position;
            let key = match &mut list {
                Some((_, _, count)) if field.repeated => {
                    position = count.to_string();
                    *count += 1;
                    position.as_str()
                }
                _ => field.name.text.as_str(),
            };
            // The item in Python, made only with `objects`.
            let item: Option<Bound<'py, PyAny>> = match (field.kind, value) {
                (STRING, Wire::Bytes(bytes)) => {
                    // A list may hold an empty string; a field without presence never does.
                    if bytes.is_empty() && !field.repeated {
                        return Ok(None);
                    }
                    let text = or_decline!(std::str::from_utf8(bytes).ok());
                    bson_string(out, key, text);
                    objects.then(|| PyString::new(py, text).into_any())
                }
                (BOOL, Wire::Varint(1)) => {
                    bson_key(out, 0x08, key);
                    out.push(1);
                    objects.then(|| PyBool::new(py, true).to_owned().into_any())
                }
                (ENUM, Wire::Varint(value)) if value != 0 => {
                    let name = or_decline!(field.enum_names.get(&(value as i64)));
                    bson_string(out, key, &name.text);
                    objects.then(|| name.py.bind(py).clone().into_any())
                }
                (DOUBLE, Wire::Fixed64(bits)) => {
                    let value = f64::from_bits(bits);
                    if value == 0.0 {
                        return Ok(None); // -0.0 is made 0.0, and 0.0 is never written
                    }
                    bson_key(out, 0x01, key);
                    out.extend_from_slice(&value.to_le_bytes());
                    objects.then(|| PyFloat::new(py, value).into_any())
                }
                (TIMESTAMP, Wire::Bytes(bytes)) => {
                    let millis = or_decline!(timestamp_millis(bytes));
                    bson_date(out, key, millis);
                    match objects {
                        true => Some(self.payload_time.bind(py).call1((millis,))?),
                        false => None,
                    }
                }
                (MESSAGE, Wire::Bytes(bytes)) => {
                    let at = bson_open(out, 0x03, key);
                    let inner =
                        or_decline!(self.message_doc(py, field.message, bytes, out, objects)?);
                    bson_close(out, at);
                    inner.map(Bound::into_any)
                }
                _ => return Ok(None),
            };
            if let Some(item) = item {
                match (&list, &doc) {
                    (Some((Some(items), _, _)), _) if field.repeated => items.append(item)?,
                    (_, Some(doc)) => doc.set_item(&field.name.py, item)?,
                    _ => {}
                }
            }
            last = number;
        }
        if let Some((_, at, _)) = list {
            bson_close(out, at);
        }
        Ok(Some(doc))
    }

    /// The text of the string field `name` of a message of type `index` (its top level), if
    /// it is set: what a payload's document would hold under that name.
    fn top_text<'a>(&self, index: usize, bytes: &'a [u8], name: &str) -> Option<&'a str> {
        let plan = &self.messages[index];
        let mut reader = Reader::new(bytes);
        while !reader.done() {
            let (number, value) = reader.field()?;
            let field = plan.get(&number)?;
            if field.name.text == name && field.kind == STRING && !field.repeated {
                return match value {
                    Wire::Bytes(bytes) => std::str::from_utf8(bytes).ok(),
                    _ => None,
                };
            }
        }
        None
    }
}

/// A CobrowseContext's session id and actor (1 and 2), or None to decline.
fn cobrowse_context(bytes: &[u8]) -> Option<(&str, i64)> {
    let mut reader = Reader::new(bytes);
    let (mut session_id, mut actor, mut last) = ("", 0i64, 0u32);
    while !reader.done() {
        let (number, value) = reader.field()?;
        if number <= last {
            return None;
        }
        match (number, value) {
            (1, value) => session_id = text(value)?,
            (2, Wire::Varint(value)) if value != 0 => actor = value as i64,
            _ => return None,
        }
        last = number;
    }
    Some((session_id, actor))
}

/// An empty dict with room for `items` without a resize.
fn presized_dict(py: Python<'_>, items: isize) -> PyResult<Bound<'_, PyDict>> {
    // SAFETY: _PyDict_NewPresized returns a new reference to a dict, or NULL with an
    // exception set, which from_owned_ptr_or_err returns as the error.
    unsafe {
        Bound::from_owned_ptr_or_err(py, pyo3::ffi::_PyDict_NewPresized(items))
            .map(|made| made.cast_into_unchecked::<PyDict>())
    }
}

fn tag(number: u32, wire_type: u8) -> u8 {
    // The AuditEvent's own fields are numbered below 16: their tags are one byte.
    ((number << 3) as u8) | wire_type
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0x0F)] as char);
    }
    out
}

/// Bytes of a ledger entry in a commit's chain input (ledger.CHAIN_ENTRY_BYTES): its session
/// sequence `q` as a big-endian u64, then the digest `d` of its recorded form.
const CHAIN_ENTRY_BYTES: usize = 40;

/// auditlog.ledger.chain_hash over ledger entries in turn: hash(n) = SHA-256(hash(n - 1),
/// n and the entry's session sequence `q` as big-endian u64s, the entry's digest `d`), from
/// `previous` and the sequence before the first entry, the entries given as a chain input
/// (CHAIN_ENTRY_BYTES each); the hash after each entry.
#[pyfunction]
fn chain_hashes<'py>(
    py: Python<'py>,
    previous: &[u8],
    sequence: u64,
    chain: &[u8],
) -> PyResult<Vec<Bound<'py, PyBytes>>> {
    if !chain.len().is_multiple_of(CHAIN_ENTRY_BYTES) {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "a chain input is 40 bytes an entry",
        ));
    }
    let mut running = previous.to_vec();
    let mut hashes = Vec::with_capacity(chain.len() / CHAIN_ENTRY_BYTES);
    for (n, entry) in chain.chunks_exact(CHAIN_ENTRY_BYTES).enumerate() {
        let mut hash = Sha256::new();
        hash.update(&running);
        hash.update((sequence + 1 + n as u64).to_be_bytes());
        hash.update(entry); // q, then d
        running = hash.finalize().to_vec();
        hashes.push(PyBytes::new(py, &running));
    }
    Ok(hashes)
}

/// The chain input (see chain_hashes) of entries packed as pack_entries packs them, completed
/// as ledger.complete_entry completes them (the digest of `r` where there is no `d`, `q` 0
/// where there is none), without decoding them into objects; None when the bytes are laid out
/// otherwise, or an entry's top-level element is of a type this does not read.
#[pyfunction]
fn packed_chain<'py>(py: Python<'py>, packed: &[u8]) -> Option<Bound<'py, PyBytes>> {
    chain_of_packed(packed).map(|chain| PyBytes::new(py, &chain))
}

fn le_i32_at(bytes: &[u8], at: usize) -> Option<usize> {
    let word: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
    usize::try_from(i32::from_le_bytes(word)).ok()
}

/// Where an element's name ends (its NUL), from the byte after the element's type.
fn bson_name_end(bytes: &[u8], from: usize) -> Option<usize> {
    Some(from + bytes.get(from..)?.iter().position(|&b| b == 0)?)
}

/// Where each entry document of pack_entries' `{"e": [...]}` starts (ledger._entry_starts),
/// or None when the bytes are laid out otherwise.
#[pyfunction]
fn entry_starts(packed: &[u8]) -> Option<Vec<usize>> {
    Some(
        packed_entry_spans(packed)?
            .into_iter()
            .map(|(start, _)| start)
            .collect(),
    )
}

/// Where each entry document of pack_entries' `{"e": [...]}` lies (start, end): the
/// document's length, the array "e" (its length, its entries keyed "0", "1", ..., its NUL),
/// the document's NUL. None when the bytes are laid out otherwise.
fn packed_entry_spans(packed: &[u8]) -> Option<Vec<(usize, usize)>> {
    if le_i32_at(packed, 0)? != packed.len() || packed.get(4..7)? != b"\x04e\x00" {
        return None;
    }
    let end = 7 + le_i32_at(packed, 7)?.checked_sub(1)?;
    if end + 2 != packed.len() {
        return None;
    }
    let mut spans = Vec::with_capacity(packed.len() / 128 + 1);
    let mut at = 11;
    while at < end {
        if packed[at] != 0x03 {
            return None;
        }
        let start = bson_name_end(packed, at + 1)? + 1;
        at = start + le_i32_at(packed, start)?;
        spans.push((start, at));
    }
    (at == end).then_some(spans)
}

fn chain_of_packed(packed: &[u8]) -> Option<Vec<u8>> {
    let spans = packed_entry_spans(packed)?;
    let mut chain = Vec::with_capacity(CHAIN_ENTRY_BYTES * spans.len());
    for (start, end) in spans {
        let (session_sequence, digest) = entry_chain_fields(&packed[start..end])?;
        chain.extend_from_slice(&session_sequence.to_be_bytes());
        chain.extend_from_slice(&digest);
    }
    Some(chain)
}

/// An entry's session sequence and recorded form's digest, read from its BSON.
fn entry_chain_fields(entry: &[u8]) -> Option<(u64, [u8; 32])> {
    let end = entry.len().checked_sub(1)?;
    let (mut session_sequence, mut recorded, mut digest) = (0u64, None, None);
    let mut at = 4;
    while at < end {
        let kind = entry[at];
        let value = bson_name_end(entry, at + 1)? + 1;
        let name = &entry[at + 1..value - 1];
        let size = match kind {
            0x01 | 0x09 | 0x11 | 0x12 => 8, // double, date, timestamp, int64
            0x10 => 4,
            0x08 => 1,
            0x0A => 0,
            0x02 => 4 + le_i32_at(entry, value)?,
            0x03 | 0x04 => le_i32_at(entry, value)?,
            0x05 => 5 + le_i32_at(entry, value)?,
            _ => return None,
        };
        let bytes = entry.get(value..value + size)?;
        match (name, kind) {
            (b"q", 0x10) => {
                session_sequence =
                    u64::try_from(i32::from_le_bytes(bytes.try_into().ok()?)).ok()?;
            }
            (b"q", 0x12) => {
                session_sequence =
                    u64::try_from(i64::from_le_bytes(bytes.try_into().ok()?)).ok()?;
            }
            // Binary of subtype 0, as this module and PyMongo write `bytes`.
            (b"r", 0x05) if bytes[4] == 0 => recorded = Some(&bytes[5..]),
            (b"d", 0x05) if bytes[4] == 0 => digest = Some(<[u8; 32]>::try_from(&bytes[5..]).ok()?),
            (b"q" | b"r" | b"d", _) => return None,
            _ => {}
        }
        at = value + size;
    }
    if at != end || entry[end] != 0 {
        return None;
    }
    let digest = match digest {
        Some(digest) => digest,
        None => Sha256::digest(recorded?).into(),
    };
    Some((session_sequence, digest))
}

/// ledger.complete_entry for each of `entries`, in place: the digest `d` of the recorded form
/// `r`, the document's `_id` `e` (its key `k`) and the session sequence `q` (0) where missing.
#[pyfunction]
fn complete_entries(py: Python<'_>, entries: &Bound<'_, PyList>) -> PyResult<()> {
    let keys = EntryKeys::new(py)?;
    for entry in entries.iter() {
        keys.complete(py, entry.cast::<PyDict>()?)?;
    }
    Ok(())
}

/// A ledger entry's keys, and the session sequence of an entry outside sessions.
struct EntryKeys<'py> {
    k: Bound<'py, PyString>,
    r: Bound<'py, PyString>,
    e: Bound<'py, PyString>,
    q: Bound<'py, PyString>,
    d: Bound<'py, PyString>,
    zero: Bound<'py, PyAny>,
}

impl<'py> EntryKeys<'py> {
    fn new(py: Python<'py>) -> PyResult<Self> {
        let name = |text: &str| PyString::intern(py, text);
        Ok(EntryKeys {
            k: name("k"),
            r: name("r"),
            e: name("e"),
            q: name("q"),
            d: name("d"),
            zero: 0u8.into_pyobject(py)?.into_any(),
        })
    }

    /// ledger.complete_entry of one entry, in place.
    fn complete(&self, py: Python<'py>, entry: &Bound<'py, PyDict>) -> PyResult<()> {
        if !entry.contains(&self.d)? {
            let recorded = or_key_error(entry.get_item(&self.r)?, "r")?;
            let digest = Sha256::digest(recorded.cast::<PyBytes>()?.as_bytes());
            entry.set_item(&self.d, PyBytes::new(py, &digest))?;
        }
        if !entry.contains(&self.e)? {
            entry.set_item(&self.e, or_key_error(entry.get_item(&self.k)?, "k")?)?;
        }
        if !entry.contains(&self.q)? {
            entry.set_item(&self.q, &self.zero)?;
        }
        Ok(())
    }
}

fn or_key_error<'py>(value: Option<Bound<'py, PyAny>>, key: &str) -> PyResult<Bound<'py, PyAny>> {
    value.ok_or_else(|| pyo3::exceptions::PyKeyError::new_err(key.to_string()))
}

/// One value in BSON as PyMongo encodes it (`key` its element's key), for the types a ledger
/// entry holds: str, bytes (binary, subtype 0), bool, int (int32 when it fits, else int64),
/// float, None, dict (str keys without NUL) and list. False for anything else: nothing of it
/// is of use then.
fn bson_value(out: &mut Vec<u8>, key: &str, value: &Bound<'_, PyAny>) -> PyResult<bool> {
    if let Ok(text) = value.cast_exact::<PyString>() {
        bson_string(out, key, &text.to_cow()?);
    } else if let Ok(bytes) = value.cast_exact::<PyBytes>() {
        let bytes = bytes.as_bytes();
        bson_key(out, 0x05, key);
        out.extend_from_slice(&(bytes.len() as i32).to_le_bytes());
        out.push(0);
        out.extend_from_slice(bytes);
    } else if let Ok(flag) = value.cast_exact::<PyBool>() {
        bson_key(out, 0x08, key);
        out.push(u8::from(flag.is_true()));
    } else if value.is_exact_instance_of::<pyo3::types::PyInt>() {
        let Ok(number) = value.extract::<i64>() else {
            return Ok(false);
        };
        bson_int(out, key, number);
    } else if let Ok(number) = value.cast_exact::<PyFloat>() {
        bson_key(out, 0x01, key);
        out.extend_from_slice(&number.value().to_le_bytes());
    } else if value.is_none() {
        bson_key(out, 0x0A, key);
    } else if let Ok(dict) = value.cast_exact::<PyDict>() {
        let at = bson_open(out, 0x03, key);
        for (name, item) in dict.iter() {
            let Ok(name) = name.cast_exact::<PyString>() else {
                return Ok(false);
            };
            let name = name.to_cow()?;
            if name.contains('\0') || !bson_value(out, &name, &item)? {
                return Ok(false);
            }
        }
        bson_close(out, at);
    } else if let Ok(list) = value.cast_exact::<PyList>() {
        let at = bson_open(out, 0x04, key);
        for (index, item) in list.iter().enumerate() {
            if !bson_value(out, &index.to_string(), &item)? {
                return Ok(false);
            }
        }
        bson_close(out, at);
    } else {
        return Ok(false);
    }
    Ok(true)
}

/// bson.encode({"e": entries}) (ledger.pack_entries), or None when an entry holds a type
/// bson_value leaves to PyMongo.
#[pyfunction]
fn pack_entries<'py>(
    py: Python<'py>,
    entries: &Bound<'py, PyList>,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let mut out = Vec::with_capacity(64 + 320 * entries.len());
    out.extend_from_slice(&[0; 4]);
    if !bson_value(&mut out, "e", entries.as_any())? {
        return Ok(None);
    }
    bson_close(&mut out, 0);
    Ok(Some(PyBytes::new(py, &out)))
}

/// The ledger's entries of the events `writes` (storage.EventWrite, as their documents are
/// stored), for one commit, in one pass, without making them as objects: (pack_entries of
/// the entries as ledger.commit_entry makes them, their chain input (see chain_hashes)), or
/// None when a filter's value is of a type bson_value leaves to PyMongo. An event without
/// filters (the rules prepared it) gets `filter_fields` of its document.
#[pyfunction]
fn commit_entries<'py>(
    py: Python<'py>,
    writes: &Bound<'py, PyList>,
    filter_fields: &Bound<'py, PyAny>,
) -> PyResult<Option<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)>> {
    let (id, key, sequence) = (
        intern!(py, "_id"),
        intern!(py, "key"),
        intern!(py, "sequence"),
    );
    let mut out = Vec::with_capacity(64 + 320 * writes.len());
    let mut chain = Vec::with_capacity(CHAIN_ENTRY_BYTES * writes.len());
    out.extend_from_slice(&[0; 4]);
    let array = bson_open(&mut out, 0x04, "e");
    for (index, write) in writes.iter().enumerate() {
        let write = write.cast::<EventWrite>()?.get();
        let doc = write.doc.bind(py);
        let filters = match &write.filters {
            Some(filters) => filters.bind(py).clone(),
            None => filter_fields.call1((doc,))?,
        };
        let recorded = write.recorded.bind(py);
        let event_key = or_key_error(doc.get_item(key)?, "key")?;
        // ledger.commit_entry, packed as it is made.
        let at = bson_open(&mut out, 0x03, &index.to_string());
        if !bson_value(&mut out, "k", &event_key)? || !bson_value(&mut out, "r", recorded)? {
            return Ok(None);
        }
        // Filters the preparer made are their BSON already (a document's).
        match filters.cast_exact::<PyBytes>() {
            Ok(made) => {
                bson_key(&mut out, 0x03, "x");
                out.extend_from_slice(made.as_bytes());
            }
            Err(_) if bson_value(&mut out, "x", &filters)? => {}
            Err(_) => return Ok(None),
        }
        // Where the event is stored when that is not its key: a co-browsing event's slot.
        let slot = or_key_error(doc.get_item(id)?, "_id")?;
        let mut session_sequence = 0u64;
        if slot.ne(&event_key)? {
            let at_sequence = or_key_error(doc.get_item(sequence)?, "sequence")?;
            session_sequence = at_sequence.extract()?;
            if !bson_value(&mut out, "e", &slot)? || !bson_value(&mut out, "q", &at_sequence)? {
                return Ok(None);
            }
        }
        bson_close(&mut out, at);
        chain.extend_from_slice(&session_sequence.to_be_bytes());
        chain.extend_from_slice(&Sha256::digest(recorded.as_bytes()));
    }
    bson_close(&mut out, array);
    bson_close(&mut out, 0);
    Ok(Some((PyBytes::new(py, &out), PyBytes::new(py, &chain))))
}

/// A document in BSON from its first `body_keys` elements as the preparer made them (`body`,
/// `_id` first) and the rest of `doc`'s items after them, with `_id` as `doc` has it now (a
/// co-browsing event's slot): what bson.encode(doc) gives, or None when an added value is of a
/// type bson_value leaves to PyMongo (convert.raw_document).
#[pyfunction]
fn raw_document<'py>(
    py: Python<'py>,
    body: &[u8],
    doc: &Bound<'py, PyDict>,
    body_keys: usize,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let mut out = Vec::new();
    Ok(raw_bytes(&mut out, body, doc, body_keys)?.then(|| PyBytes::new(py, &out)))
}

/// A document's BSON, sent as it is (convert.SentDocument): PyMongo's encoder copies `raw`
/// where `_type_marker` says raw BSON (101, RawBSONDocument's), and reads nothing else of it.
/// Made here, not by calling a Python class: one or two an event on the write path, each a
/// Python `__init__` call before (0.3 us in process).
#[pyclass(frozen, module = "auditlog_service._native")]
struct SentDocument {
    #[pyo3(get)]
    raw: Py<PyBytes>,
}

#[pymethods]
impl SentDocument {
    #[new]
    fn new(raw: Py<PyBytes>) -> Self {
        SentDocument { raw }
    }

    #[classattr]
    fn _type_marker() -> i32 {
        101
    }
}

fn sent_document<'py>(py: Python<'py>, raw: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    let raw = PyBytes::new(py, raw).unbind();
    Ok(Bound::new(py, SentDocument { raw })?.into_any())
}

/// One event to store (storage.EventWrite): its document, and what tells a retry of it from
/// an id clash; its recorded form, and where a co-browsing event's session sequence goes in
/// it. One an event, made by the preparer here rather than as two Python dataclasses (the
/// write and the prepared event around it: a Python `__init__` call each, 0.37 us in process,
/// and one more object an event to make, free and read through).
#[pyclass(frozen, get_all, module = "auditlog_service._native")]
struct EventWrite {
    doc: Py<PyDict>,
    // A retry that leaves occur_time to the server matches whatever time the first attempt got.
    occur_time_given: bool,
    // The event as stored, serialized: its recorded form (auditlog.ledger), which the ledger
    // records and responses carry (framed, with a co-browsing event's session sequence).
    recorded: Py<PyBytes>,
    // What the ledger's entry keeps for ListEvents's filters (ledger.filter_fields), when made
    // with the document: the native preparer makes it as BSON, which is all it is made for.
    filters: Option<Py<PyAny>>,
    // The document's elements in BSON, byte for byte what encoding `doc` gives, when made with
    // it (the native preparer does; an event is inserted from them, see raw_document).
    body: Option<Py<PyBytes>>,
    // How many of the dict's first keys the body holds (the ones storage adds come after them).
    body_keys: usize,
    // A co-browsing event's (tenant, session), else None: where its session's events are kept
    // in order, slotted and remembered (convert.session_key).
    session: Option<Py<PyAny>>,
    // Where in `recorded` a co-browsing event's session sequence goes
    // (convert.sequence_position); 0 for other events.
    sequence_at: usize,
}

#[pymethods]
impl EventWrite {
    #[new]
    #[pyo3(signature = (
        doc, occur_time_given, recorded, filters = None, body = None, body_keys = 0,
        session = None, sequence_at = 0
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        doc: Py<PyDict>,
        occur_time_given: bool,
        recorded: Py<PyBytes>,
        filters: Option<Py<PyAny>>,
        body: Option<Py<PyBytes>>,
        body_keys: usize,
        session: Option<Py<PyAny>>,
        sequence_at: usize,
    ) -> Self {
        EventWrite {
            doc,
            occur_time_given,
            recorded,
            filters,
            body,
            body_keys,
            session,
            sequence_at,
        }
    }
}

/// An event that is in the database (storage.Stored): its document, and whether it was there
/// before this call (an idempotent retry). One an event written, so made here rather than as
/// a Python dataclass (0.38 against 0.16 us to make one from Python in process), and read
/// here by the responses without attribute lookups.
#[pyclass(frozen, module = "auditlog_service._native")]
struct Stored {
    #[pyo3(get)]
    doc: Py<PyAny>,
    #[pyo3(get)]
    already_stored: bool,
}

#[pymethods]
impl Stored {
    #[new]
    #[pyo3(signature = (doc, already_stored = false))]
    fn new(doc: Py<PyAny>, already_stored: bool) -> Self {
        Stored {
            doc,
            already_stored,
        }
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let doc = self.doc.bind(py).repr()?;
        Ok(format!(
            "Stored(doc={doc}, already_stored={})",
            if self.already_stored { "True" } else { "False" }
        ))
    }
}

/// The documents to insert of the events `indexes` of `writes` (storage.EventWrite) that have
/// a body, by index: a SentDocument of what raw_document gives, or `whole(write)` where it
/// leaves an addition to PyMongo; an event without a body has none.
#[pyfunction]
fn raw_documents<'py>(
    py: Python<'py>,
    writes: &Bound<'py, PyList>,
    indexes: &Bound<'py, PyList>,
    whole: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let made = PyDict::new(py);
    let mut out = Vec::new();
    for index in indexes.iter() {
        let write = writes
            .get_item(index.extract()?)?
            .cast_into::<EventWrite>()?;
        if let Some(sent) = write_sent(py, &write, whole, &mut out)? {
            made.set_item(index, sent)?;
        }
    }
    Ok(made)
}

/// The document to send of a storage.EventWrite, from its body: a SentDocument of raw_bytes,
/// or `whole(write)` where raw_bytes leaves an addition to PyMongo (the document may leave out
/// what only its body holds: see Preparer.prepare_batch); None without a body. `out`: a buffer to make it in (one for a pass over many events: a new one
/// an event was an allocation, its growth and its release each).
fn write_sent<'py>(
    py: Python<'py>,
    write: &Bound<'py, EventWrite>,
    whole: &Bound<'py, PyAny>,
    out: &mut Vec<u8>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let made = write.get();
    let Some(body) = &made.body else {
        return Ok(None);
    };
    if raw_bytes(out, body.as_bytes(py), made.doc.bind(py), made.body_keys)? {
        Ok(Some(sent_document(py, out)?))
    } else {
        Ok(Some(whole.call1((write,))?))
    }
}

/// raw_document's BSON, made in `out` (cleared first); false where it leaves an addition to
/// PyMongo.
fn raw_bytes(
    out: &mut Vec<u8>,
    body: &[u8],
    doc: &Bound<'_, PyDict>,
    body_keys: usize,
) -> PyResult<bool> {
    // The body's first element: 0x02, "_id", NUL, the string's length, the string.
    let id_end = match body.get(..9) {
        Some([0x02, b'_', b'i', b'd', 0, a, b, c, d]) => {
            9 + i32::from_le_bytes([*a, *b, *c, *d]) as usize
        }
        _ => return Ok(false),
    };
    if body.len() < id_end {
        return Ok(false);
    }
    out.clear();
    out.reserve(body.len() + 96);
    out.extend_from_slice(&[0; 4]);
    let id = doc.get_item(intern!(doc.py(), "_id"))?;
    match id.as_ref().map(|id| id.cast_exact::<PyString>()) {
        Some(Ok(id)) => bson_string(out, "_id", &id.to_cow()?),
        _ => return Ok(false),
    }
    out.extend_from_slice(&body[id_end..]);
    for (key, value) in doc.iter().skip(body_keys) {
        let Ok(key) = key.cast_exact::<PyString>() else {
            return Ok(false);
        };
        let key = key.to_cow()?;
        if key.contains('\0') || !bson_value(out, &key, &value)? {
            return Ok(false);
        }
    }
    bson_close(out, 0);
    Ok(true)
}

/// A session's run of events in a group's first round (storage._GroupWrite._round), none of
/// whose ids is claimed yet: the events `indexes` of `writes` (storage.EventWrite) take the
/// session's slots from `first` on, in order (`prefix` and the sequence zero-padded to
/// `digits`: convert.slot_ids). Each document gets its slot's `_id`, its `sequence` and the
/// run's last slot `run_end`, in place; the run is each event's (index, "claim", its id claim
/// (convert.id_claim) as a SentDocument of its BSON), then (index, "event", the
/// document to send: as raw_documents makes it with `whole`, or the dict of an event without
/// a body).
#[pyfunction]
fn slot_run<'py>(
    py: Python<'py>,
    writes: &Bound<'py, PyList>,
    indexes: &Bound<'py, PyList>,
    prefix: &str,
    first: i64,
    digits: usize,
    whole: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyList>> {
    let name = |text: &str| PyString::intern(py, text);
    let (claim_role, event_role) = (name("claim"), name("event"));
    let (id, sequence, run_end, key, fingerprint) = (
        name("_id"),
        name("sequence"),
        name("run_end"),
        name("key"),
        name("fingerprint"),
    );
    let last = (first + indexes.len() as i64 - 1).into_pyobject(py)?;
    let run = PyList::empty(py);
    let mut claim = Vec::with_capacity(256);
    let mut sent_raw = Vec::with_capacity(1024);
    let mut slot = String::with_capacity(prefix.len() + digits + 4);
    for (offset, index) in indexes.iter().enumerate() {
        let write = writes
            .get_item(index.extract()?)?
            .cast_into::<EventWrite>()?;
        let doc = write.get().doc.bind(py);
        let at = first + offset as i64;
        slot_id(&mut slot, prefix, at, digits);
        doc.set_item(&id, &slot)?;
        doc.set_item(&sequence, at)?;
        doc.set_item(&run_end, &last)?;
        claim.clear();
        claim.extend_from_slice(&[0; 4]);
        let event_key = or_key_error(doc.get_item(&key)?, "key")?.cast_into::<PyString>()?;
        let digest = or_key_error(doc.get_item(&fingerprint)?, "fingerprint")?;
        let digest = digest.cast_into::<PyString>()?;
        bson_string(&mut claim, "_id", &event_key.to_cow()?);
        bson_string(&mut claim, "slot", &slot);
        bson_string(&mut claim, "fingerprint", &digest.to_cow()?);
        bson_key(&mut claim, 0x10, "gen");
        claim.extend_from_slice(&0i32.to_le_bytes());
        bson_close(&mut claim, 0);
        let made = sent_document(py, &claim)?;
        let claim_item = [index.clone(), claim_role.clone().into_any(), made];
        run.append(PyTuple::new(py, claim_item)?)?;
        let sent = match write_sent(py, &write, whole, &mut sent_raw)? {
            Some(sent) => sent,
            None => doc.clone().into_any(),
        };
        run.append(PyTuple::new(
            py,
            [index, event_role.clone().into_any(), sent],
        )?)?;
    }
    Ok(run)
}

/// `prefix` and `at` zero-padded to `digits` (what format!("{prefix}{at:0digits$}") gives),
/// in `slot`, reused across a run. With this and one buffer for the run's raw documents
/// (write_sent), slot_run took 0.56-0.63 us an event instead of 0.70 (in process, 1,000
/// co-browsing events, fastest of 300 passes, four alternating pairs).
fn slot_id(slot: &mut String, prefix: &str, at: i64, digits: usize) {
    slot.clear();
    slot.push_str(prefix);
    if at < 0 {
        slot.push_str(&format!("{at:0digits$}"));
        return;
    }
    let mut text = [0u8; 20];
    let (mut rest, mut from) = (at as u64, text.len());
    loop {
        from -= 1;
        text[from] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    for _ in (text.len() - from)..digits {
        slot.push('0');
    }
    slot.extend(text[from..].iter().map(|&digit| digit as char));
}

/// Whether `role` is the role `name` (the roles are interned strings, so mostly the very same
/// object).
fn is_role(role: &Bound<'_, PyAny>, name: &Bound<'_, PyString>) -> PyResult<bool> {
    Ok(role.is(name) || role.eq(name)?)
}

/// A round's events `pending` of `writes` (storage.EventWrite) split as storage._GroupWrite
///._round takes them: the general events as its insert's items, (index, "event", document),
/// and their indexes; each session's events' indexes in order, by session. Natively, as
/// batch_documents and note_stored: the round's loops over its events in Python were a
/// quarter of a co-browsing group write's CPU in process (cProfile, groups of 1,000, the
/// insert stubbed: 1.84 of 8.03 us an event).
/// A tenant of a group (mark_outboxes): its id, its outbox's, its writes and their keys.
type TenantFiling<'py> = (
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
    Bound<'py, PyList>,
    Bound<'py, PyList>,
);

/// A group's events filed under their tenants' outboxes (storage._GroupWrite), in one pass:
/// each document gets its tenant's outbox id as "ob" (`next_outbox(tenant)` names it, at the
/// tenant's first event); per tenant, in order of first appearance, its outbox, its writes and
/// their keys. Three passes in Python before (the tenants, the outbox ids, and the keys for the
/// outbox documents), each over a thousand documents no longer in a cache.
#[pyfunction]
fn mark_outboxes<'py>(
    py: Python<'py>,
    writes: &Bound<'py, PyList>,
    next_outbox: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyDict>, Bound<'py, PyDict>)> {
    let (tenant_key, key_key, outbox_key) = (
        intern!(py, "tenant_id"),
        intern!(py, "key"),
        intern!(py, "ob"),
    );
    let (outboxes, by_tenant, keys) = (PyDict::new(py), PyDict::new(py), PyDict::new(py));
    // The last event's tenant, its outbox, and its lists: a group is mostly of one tenant.
    let mut last: Option<TenantFiling<'py>> = None;
    for item in writes.iter() {
        let write = item.cast::<EventWrite>()?.get();
        let doc = write.doc.bind(py);
        let tenant = or_key_error(doc.get_item(tenant_key)?, "tenant_id")?;
        let same = match &last {
            Some((known, ..)) => known.is(&tenant) || known.eq(&tenant)?,
            None => false,
        };
        if !same {
            last = Some(match outboxes.get_item(&tenant)? {
                Some(box_id) => (
                    tenant.clone(),
                    box_id,
                    or_key_error(by_tenant.get_item(&tenant)?, "writes")?.cast_into::<PyList>()?,
                    or_key_error(keys.get_item(&tenant)?, "keys")?.cast_into::<PyList>()?,
                ),
                None => {
                    let box_id = next_outbox.call1((&tenant,))?;
                    let (its_writes, its_keys) = (PyList::empty(py), PyList::empty(py));
                    outboxes.set_item(&tenant, &box_id)?;
                    by_tenant.set_item(&tenant, &its_writes)?;
                    keys.set_item(&tenant, &its_keys)?;
                    (tenant.clone(), box_id, its_writes, its_keys)
                }
            });
        }
        let Some((_, box_id, its_writes, its_keys)) = &last else {
            unreachable!("set above");
        };
        doc.set_item(outbox_key, box_id)?;
        its_writes.append(&item)?;
        its_keys.append(or_key_error(doc.get_item(key_key)?, "key")?)?;
    }
    Ok((outboxes, by_tenant, keys))
}

#[pyfunction]
fn split_pending<'py>(
    py: Python<'py>,
    writes: &Bound<'py, PyList>,
    pending: &Bound<'py, PyList>,
) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>, Bound<'py, PyDict>)> {
    let event_role = PyString::intern(py, "event").into_any();
    let (main, general, sessions) = (PyList::empty(py), PyList::empty(py), PyDict::new(py));
    for index in pending.iter() {
        let item = writes.get_item(index.extract()?)?;
        let write = item.cast::<EventWrite>()?.get();
        let Some(session) = &write.session else {
            let doc = write.doc.bind(py).clone().into_any();
            main.append(PyTuple::new(py, [index.clone(), event_role.clone(), doc])?)?;
            general.append(index)?;
            continue;
        };
        match sessions.get_item(session.bind(py))? {
            Some(indexes) => indexes.cast_into::<PyList>()?.append(index)?,
            None => sessions.set_item(session, PyList::new(py, [index])?)?,
        }
    }
    Ok((main, general, sessions))
}

/// What an insert of a round's `batch` of (index, role, item) sends: an event's document as
/// `raw` (convert.raw_documents) has it by index, else the item; each item that is a dict
/// (the ledger's outboxes and commits) as `encode` makes it, so that the insert finds only
/// BSON to send.
#[pyfunction]
fn batch_documents<'py>(
    py: Python<'py>,
    batch: &Bound<'py, PyList>,
    raw: &Bound<'py, PyDict>,
    encode: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyList>> {
    let event_role = PyString::intern(py, "event");
    let sent = PyList::empty(py);
    for entry in batch.iter() {
        let entry = entry.cast_into::<PyTuple>()?;
        let mut item = entry.get_item(2)?;
        if is_role(&entry.get_item(1)?, &event_role)? {
            if let Some(made) = raw.get_item(entry.get_item(0)?)? {
                item = made;
            }
        }
        if item.is_instance_of::<PyDict>() {
            item = encode.call1((item,))?;
        }
        sent.append(item)?;
    }
    Ok(sent)
}

/// The first `inserted` of a round's `batch` of (index, role, item) are in the database: each
/// event's outcome in `outcomes` is Stored(its document). Returns the indexes of the session
/// events stored, each session's last slot stored (its head now, by session), and the entries
/// of other roles than "event" and "claim", in order, for the caller (storage._GroupWrite
/// ._round, whose loop in Python this is).
#[pyfunction]
#[allow(clippy::type_complexity)]
fn note_stored<'py>(
    py: Python<'py>,
    batch: &Bound<'py, PyList>,
    inserted: usize,
    writes: &Bound<'py, PyList>,
    outcomes: &Bound<'py, PyList>,
) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyDict>, Bound<'py, PyList>)> {
    let (event_role, claim_role) = (PyString::intern(py, "event"), PyString::intern(py, "claim"));
    let sequence = intern!(py, "sequence");
    let (in_sessions, heads, others) = (PyList::empty(py), PyDict::new(py), PyList::empty(py));
    // A session's events come as a run: its head is noted when the run ends.
    let mut run: Option<(Bound<'py, PyAny>, Bound<'py, PyAny>)> = None;
    for entry in batch.iter().take(inserted) {
        let entry = entry.cast_into::<PyTuple>()?;
        let role = entry.get_item(1)?;
        if !is_role(&role, &event_role)? {
            if !is_role(&role, &claim_role)? {
                others.append(entry)?;
            }
            continue;
        }
        let index = entry.get_item(0)?;
        let item = writes.get_item(index.extract()?)?;
        let write = item.cast::<EventWrite>()?.get();
        let doc = write.doc.bind(py).clone().into_any();
        if let Some(session) = &write.session {
            let session = session.bind(py).clone();
            let head = or_key_error(doc.cast::<PyDict>()?.get_item(sequence)?, "sequence")?;
            if let Some((last, last_head)) = run.take() {
                if !last.is(&session) && !last.eq(&session)? {
                    heads.set_item(last, last_head)?;
                }
            }
            run = Some((session, head));
            in_sessions.append(&index)?;
        }
        let stored = Stored {
            doc: doc.unbind(),
            already_stored: false,
        };
        outcomes.set_item(index.extract()?, Bound::new(py, stored)?)?;
    }
    if let Some((last, head)) = run {
        heads.set_item(last, head)?;
    }
    Ok((in_sessions, heads, others))
}

/// LogEvents' results for `written`, (EventWrite, outcome) pairs of a whole batch, as
/// whole events (responses.log_events_response): each stored event's recorded form, with a
/// co-browsing event's session sequence at its place, framed as the result's event. None when
/// an outcome is not a Stored this call stored (an error, an earlier attempt's event), which
/// responses.py answers.
#[pyfunction]
fn stored_results<'py>(
    py: Python<'py>,
    written: &Bound<'py, PyList>,
    results_tag: &[u8],
    event_tag: &[u8],
    sequence_tag: &[u8],
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let mut out = Vec::new();
    let mut event = Vec::new();
    let mut result = Vec::new();
    for pair in written.iter() {
        let pair = pair.cast_into::<PyTuple>()?;
        let (pending, outcome) = (pair.get_item(0)?, pair.get_item(1)?);
        let (_, sequence) = or_decline!(stored_now(py, &outcome)?);
        let write = pending.cast::<EventWrite>()?.get();
        let recorded = write.recorded.as_bytes(py);
        event.clear();
        if sequence == 0 {
            event.extend_from_slice(recorded);
        } else {
            let at = write.sequence_at;
            let Some((head, rest)) = (at <= recorded.len()).then(|| recorded.split_at(at)) else {
                return Ok(None);
            };
            event.extend_from_slice(head);
            event.extend_from_slice(sequence_tag);
            put_varint(&mut event, sequence);
            event.extend_from_slice(rest);
        }
        result_field(&mut out, &mut result, (results_tag, event_tag), &event);
    }
    Ok(Some(PyBytes::new(py, &out)))
}

/// The acks of stored events as the results of a response (responses.AckWriter.result, one
/// after another): `outcomes` holds the outcomes, or (EventWrite, outcome) pairs when
/// `paired`; `tags` are the result's, the ack's, and the ack's id and sequence fields';
/// `received_field` is the ack's receive_time field for `received`. None when an outcome is not
/// a Stored this call stored with that very receive time, which responses.py answers.
#[pyfunction]
fn stored_acks<'py>(
    py: Python<'py>,
    outcomes: &Bound<'py, PyList>,
    paired: bool,
    tags: (&[u8], &[u8], &[u8], &[u8]),
    received: &Bound<'py, PyAny>,
    received_field: &[u8],
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let (result_tag, ack_tag, id_tag, sequence_tag) = tags;
    let mut out = Vec::new();
    let mut ack = Vec::new();
    let mut result = Vec::new();
    for item in outcomes.iter() {
        let outcome = if paired {
            item.cast_into::<PyTuple>()?.get_item(1)?
        } else {
            item
        };
        let (doc, sequence) = or_decline!(stored_now(py, &outcome)?);
        match doc.get_item(intern!(py, "receive_time"))? {
            Some(time) if time.is(received) => {}
            _ => return Ok(None),
        }
        let Some(id) = doc.get_item(intern!(py, "id"))? else {
            return Ok(None);
        };
        let id = id.cast_into::<PyString>()?;
        let id = id.to_cow()?;
        ack.clear();
        length_delimited_tag(&mut ack, id_tag, id.as_bytes());
        if sequence != 0 {
            ack.extend_from_slice(sequence_tag);
            put_varint(&mut ack, sequence);
        }
        ack.extend_from_slice(received_field);
        result_field(&mut out, &mut result, (result_tag, ack_tag), &ack);
    }
    Ok(Some(PyBytes::new(py, &out)))
}

/// The document and session sequence (0: none) of an outcome that is a Stored this call
/// stored; None for anything else (an error, an event stored before).
fn stored_now<'py>(
    py: Python<'py>,
    outcome: &Bound<'py, PyAny>,
) -> PyResult<Option<(Bound<'py, PyDict>, u64)>> {
    let Ok(outcome) = outcome.cast::<Stored>() else {
        return Ok(None);
    };
    let outcome = outcome.get();
    if outcome.already_stored {
        return Ok(None);
    }
    let doc = outcome.doc.bind(py).cast::<PyDict>()?.clone();
    let sequence = match doc.get_item(intern!(py, "sequence"))? {
        Some(value) => value.extract()?,
        None => 0,
    };
    Ok(Some((doc, sequence)))
}

/// A response's result (the field `tags.0`) holding `value` as its field `tags.1`; `scratch`
/// is reused for the result's bytes.
fn result_field(out: &mut Vec<u8>, scratch: &mut Vec<u8>, tags: (&[u8], &[u8]), value: &[u8]) {
    scratch.clear();
    length_delimited_tag(scratch, tags.1, value);
    length_delimited_tag(out, tags.0, scratch);
}

/// A length-delimited field whose tag is given serialized.
fn length_delimited_tag(out: &mut Vec<u8>, tag: &[u8], value: &[u8]) {
    out.extend_from_slice(tag);
    put_varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<Preparer>()?;
    module.add_class::<Validator>()?;
    module.add_class::<SentDocument>()?;
    module.add_class::<Stored>()?;
    module.add_class::<EventWrite>()?;
    module.add_function(wrap_pyfunction!(chain_hashes, module)?)?;
    module.add_function(wrap_pyfunction!(packed_chain, module)?)?;
    module.add_function(wrap_pyfunction!(entry_starts, module)?)?;
    module.add_function(wrap_pyfunction!(complete_entries, module)?)?;
    module.add_function(wrap_pyfunction!(pack_entries, module)?)?;
    module.add_function(wrap_pyfunction!(commit_entries, module)?)?;
    module.add_function(wrap_pyfunction!(stored_results, module)?)?;
    module.add_function(wrap_pyfunction!(stored_acks, module)?)?;
    module.add_function(wrap_pyfunction!(raw_document, module)?)?;
    module.add_function(wrap_pyfunction!(slot_run, module)?)?;
    module.add_function(wrap_pyfunction!(split_pending, module)?)?;
    module.add_function(wrap_pyfunction!(mark_outboxes, module)?)?;
    module.add_function(wrap_pyfunction!(batch_documents, module)?)?;
    module.add_function(wrap_pyfunction!(note_stored, module)?)?;
    module.add_function(wrap_pyfunction!(raw_documents, module)?)
}

// ---- validation ---------------------------------------------------------------------------

/// One check of validation.py's per-payload functions, on a field of the payload (by number).
enum Check {
    Identifier(u32, bool),
    PlainId(u32, bool),
    Text(u32, bool),
    IdList(u32),
    Enum(u32, Vec<i64>),
    // An Element: required, and its name and id fields.
    Element(u32, bool, u32, u32),
    // A ScrollPosition (required): its top and left fields.
    Position(u32, u32, u32),
    // A Conference (required): its id, title, start_time, end_time and extra fields.
    Conference(u32, [u32; 5]),
    // Free-form data: its checks are left to validation.py.
    FreeForm(u32),
    // At least one of a text field and an Element field.
    Either(u32, u32),
}

struct PayloadChecks {
    cobrowse: bool,
    checks: Vec<Check>,
}

/// A message's fields as read (unknown ones too: the checks skip them, as validation.py does).
struct Fields<'a>(Vec<(u32, Wire<'a>)>);

impl<'a> Fields<'a> {
    fn read(bytes: &'a [u8]) -> Option<Self> {
        let mut reader = Reader::new(bytes);
        let mut fields = Vec::with_capacity(8);
        while !reader.done() {
            fields.push(reader.field()?);
        }
        Some(Fields(fields))
    }

    /// The field's value when set once; Some(None) when unset; None when set twice (protobuf
    /// writes a field once: these bytes are not its own serialization).
    fn one(&self, number: u32) -> Option<Option<&Wire<'a>>> {
        let mut found = None;
        for (n, value) in &self.0 {
            if *n == number {
                if found.is_some() {
                    return None;
                }
                found = Some(value);
            }
        }
        Some(found)
    }

    /// A string field's text ("" when unset), or None when it is not a string.
    fn text(&self, number: u32) -> Option<&'a str> {
        match self.one(number)? {
            None => Some(""),
            Some(Wire::Bytes(bytes)) => std::str::from_utf8(bytes).ok(),
            Some(_) => None,
        }
    }

    /// A message field's bytes (None inside when unset), or None when it is not a message.
    fn message(&self, number: u32) -> Option<Option<&'a [u8]>> {
        match self.one(number)? {
            None => Some(None),
            Some(Wire::Bytes(bytes)) => Some(Some(bytes)),
            Some(_) => None,
        }
    }

    fn varint(&self, number: u32) -> Option<u64> {
        match self.one(number)? {
            None => Some(0),
            Some(Wire::Varint(value)) => Some(*value),
            Some(_) => None,
        }
    }

    fn double(&self, number: u32) -> Option<f64> {
        match self.one(number)? {
            None => Some(0.0),
            Some(Wire::Fixed64(bits)) => Some(f64::from_bits(*bits)),
            Some(_) => None,
        }
    }
}

/// Characters in a string (what Python's len counts).
fn characters(text: &str) -> usize {
    if text.is_ascii() {
        text.len()
    } else {
        text.chars().count()
    }
}

/// Non-ASCII characters an id may hold for certain: blocks with no control, format or separator
/// character (validation.id_character_problem's categories) in any Unicode version. Others are
/// left to validation.py, which asks Python's Unicode database.
fn plainly_allowed(c: char) -> bool {
    matches!(
        u32::from(c),
        0xA0..=0xAC
            | 0xAE..=0x02FF
            | 0x0370..=0x052F
            | 0x2010..=0x2027
            | 0x2030..=0x205E
            | 0x20A0..=0x20CF
            | 0x2100..=0x2BFF
            | 0x3001..=0x9FFF
            | 0xAC00..=0xD7A3
            | 0x1F300..=0x1FAFF
    )
}

/// C0 but tab, LF and CR; DEL and C1 (validation._TEXT_CONTROL).
fn text_control(c: char) -> bool {
    matches!(u32::from(c), 0x00..=0x08 | 0x0B | 0x0C | 0x0E..=0x1F | 0x7F..=0x9F)
}

/// validation._IDENTIFIER.
fn identifier_form(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'-'))
}

/// validation._Checker.timestamp, on a serialized Timestamp: its parts when in range.
fn valid_time(bytes: &[u8]) -> Option<(i64, i64)> {
    let (seconds, nanos) = timestamp_parts(bytes)?;
    (0..=253_402_300_799)
        .contains(&seconds)
        .then_some((seconds, nanos))
}

#[pyclass(frozen)]
struct Validator {
    max_id: usize,
    max_text: usize,
    max_items: usize,
    max_event_bytes: usize,
    numbers: EventNumbers,
    actors: Vec<i64>,
    payloads: HashMap<u32, PayloadChecks>,
}

type CheckRow = (String, u32, bool, Vec<i64>);

#[pymethods]
impl Validator {
    /// `limits`: the longest id and text, the most list items and the largest event;
    /// `numbers`: the AuditEvent's own fields by name; `actors`: the Actor values;
    /// `payloads`: per payload field number, (co-browsing, its checks as (kind, field number,
    /// required, further numbers)).
    #[new]
    fn new(
        limits: (usize, usize, usize, usize),
        numbers: HashMap<String, u32>,
        actors: Vec<i64>,
        payloads: HashMap<u32, (bool, Vec<CheckRow>)>,
    ) -> PyResult<Self> {
        let bad = |text: String| pyo3::exceptions::PyValueError::new_err(text);
        let mut plans = HashMap::new();
        for (number, (cobrowse, rows)) in payloads {
            let mut checks = Vec::with_capacity(rows.len());
            for (kind, field, required, more) in rows {
                let at = |i: usize| -> PyResult<u32> {
                    let value = more
                        .get(i)
                        .ok_or_else(|| bad(format!("{kind}: too few numbers")))?;
                    u32::try_from(*value).map_err(|_| bad(format!("{kind}: {value}")))
                };
                checks.push(match kind.as_str() {
                    "identifier" => Check::Identifier(field, required),
                    "plain_id" => Check::PlainId(field, required),
                    "text" => Check::Text(field, required),
                    "id_list" => Check::IdList(field),
                    "enum" => Check::Enum(field, more.clone()),
                    "element" => Check::Element(field, required, at(0)?, at(1)?),
                    "position" => Check::Position(field, at(0)?, at(1)?),
                    "conference" => {
                        Check::Conference(field, [at(0)?, at(1)?, at(2)?, at(3)?, at(4)?])
                    }
                    "free_form" => Check::FreeForm(field),
                    "either" => Check::Either(field, at(0)?),
                    _ => return Err(bad(format!("unknown check {kind}"))),
                });
            }
            plans.insert(number, PayloadChecks { cobrowse, checks });
        }
        Ok(Validator {
            max_id: limits.0,
            max_text: limits.1,
            max_items: limits.2,
            max_event_bytes: limits.3,
            numbers: EventNumbers::new(&numbers)?,
            actors,
            payloads: plans,
        })
    }

    /// Whether validation.validate_event finds nothing wrong with the serialized event, for
    /// certain; False when it may (it is then asked).
    fn valid(&self, serialized: &[u8]) -> bool {
        self.check(serialized).unwrap_or(false)
    }

    /// `valid` of each serialized event of a batch, in one call.
    fn valid_each(&self, batch: &Bound<'_, PyList>) -> PyResult<Vec<bool>> {
        batch
            .iter()
            .map(|item| Ok(self.valid(item.cast_into::<PyBytes>()?.as_bytes())))
            .collect()
    }
}

impl Validator {
    fn check(&self, serialized: &[u8]) -> Option<bool> {
        if serialized.len() > self.max_event_bytes {
            return None;
        }
        let fields = Fields::read(serialized)?;
        let numbers = &self.numbers;
        let mut payload = None;
        for (number, value) in &fields.0 {
            if let Some(plan) = self.payloads.get(number) {
                let Wire::Bytes(bytes) = value else {
                    return None;
                };
                if payload.is_some() {
                    return None;
                }
                payload = Some((plan, *bytes));
            }
        }
        let (plan, payload_bytes) = payload?;
        let ok = self.identifier(fields.text(numbers.id)?, false)
            && self.identifier(fields.text(numbers.tenant_id)?, true)
            && self.identifier(fields.text(numbers.tenant_user_id)?, !plan.cobrowse);
        if !ok {
            return None;
        }
        if let Some(time) = fields.message(numbers.occur_time)? {
            valid_time(time)?;
        }
        match (plan.cobrowse, fields.message(numbers.cobrowse)?) {
            (true, Some(context)) => {
                let (session_id, actor) = cobrowse_context(context)?;
                if !self.identifier(session_id, true) || !self.actors.contains(&actor) {
                    return None;
                }
            }
            (false, None) => {}
            _ => return None,
        }
        let payload = Fields::read(payload_bytes)?;
        for check in &plan.checks {
            if !self.passes(check, &payload)? {
                return None;
            }
        }
        Some(true)
    }

    fn identifier(&self, text: &str, required: bool) -> bool {
        if text.is_empty() {
            return !required;
        }
        text.len() <= self.max_id && identifier_form(text)
    }

    fn plain_id(&self, text: &str, required: bool) -> bool {
        if text.is_empty() {
            return !required;
        }
        let printable_ascii = text.bytes().all(|b| (0x20..0x7F).contains(&b));
        characters(text) <= self.max_id
            && (printable_ascii
                || text
                    .chars()
                    .all(|c| c.is_ascii_graphic() || c == ' ' || plainly_allowed(c)))
    }

    fn text(&self, text: &str, required: bool) -> bool {
        if text.is_empty() {
            return !required;
        }
        characters(text) <= self.max_text && !text.chars().any(text_control)
    }

    fn element(&self, bytes: Option<&[u8]>, required: bool, name: u32, id: u32) -> Option<bool> {
        let Some(bytes) = bytes else {
            return Some(!required);
        };
        let element = Fields::read(bytes)?;
        let (name, id) = (element.text(name)?, element.text(id)?);
        Some(
            !(name.is_empty() && id.is_empty())
                && self.plain_id(name, false)
                && self.plain_id(id, false),
        )
    }

    fn passes(&self, check: &Check, payload: &Fields<'_>) -> Option<bool> {
        Some(match check {
            Check::Identifier(field, required) => self.identifier(payload.text(*field)?, *required),
            Check::PlainId(field, required) => self.plain_id(payload.text(*field)?, *required),
            Check::Text(field, required) => self.text(payload.text(*field)?, *required),
            Check::IdList(field) => {
                let mut count = 0;
                for (number, value) in &payload.0 {
                    if number == field {
                        let Wire::Bytes(bytes) = value else {
                            return None;
                        };
                        count += 1;
                        if !self.plain_id(std::str::from_utf8(bytes).ok()?, true) {
                            return Some(false);
                        }
                    }
                }
                count <= self.max_items
            }
            Check::Enum(field, values) => {
                let value = payload.varint(*field)? as i64;
                value != 0 && values.contains(&value)
            }
            Check::Element(field, required, name, id) => {
                self.element(payload.message(*field)?, *required, *name, *id)?
            }
            Check::Position(field, top, left) => match payload.message(*field)? {
                None => false,
                Some(bytes) => {
                    let position = Fields::read(bytes)?;
                    position.double(*top)?.is_finite() && position.double(*left)?.is_finite()
                }
            },
            Check::Conference(field, [id, title, start, end, extra]) => {
                let Some(bytes) = payload.message(*field)? else {
                    return Some(false);
                };
                let conference = Fields::read(bytes)?;
                if conference.message(*extra)?.is_some()
                    || !self.plain_id(conference.text(*id)?, true)
                    || !self.text(conference.text(*title)?, false)
                {
                    return Some(false);
                }
                let start = conference.message(*start)?.map(valid_time);
                let end = conference.message(*end)?.map(valid_time);
                match (start, end) {
                    (Some(None), _) | (_, Some(None)) => false,
                    (Some(Some(start)), Some(Some(end))) => end >= start,
                    _ => true,
                }
            }
            Check::FreeForm(field) => payload.message(*field)?.is_none(),
            Check::Either(text, element) => {
                !payload.text(*text)?.is_empty() || payload.message(*element)?.is_some()
            }
        })
    }
}
