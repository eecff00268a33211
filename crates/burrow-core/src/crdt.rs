//! CRDT text and list fields, backed by [loro](https://loro.dev).
//!
//! A column whose policy is `text` (a TEXT column) or `list` (a JSON-array column) keeps one
//! loro document per field. The app only ever reads and writes the plain value with SQL; the
//! client turns a new plain value into CRDT ops by diffing it against the document
//! ([`CrdtDoc::set_value`]) and ships the resulting update bytes. The server folds incoming
//! update bytes into its stored document with [`merge`]. Whatever the delivery order and however
//! many duplicates arrive, every replica ends with the same text / array.
//!
//! Each document has a single root container named `"v"`: a `LoroText` for [`CrdtKind::Text`],
//! a `LoroList` for [`CrdtKind::List`].
//!
//! # Bytes
//!
//! Update bytes ([`CrdtDoc::set_value`]) are plain loro update blobs. Stored bytes
//! ([`CrdtDoc::export_all`], [`merge`]) are a plain loro snapshot, except when the document holds
//! updates that arrived before the updates they depend on ("pending" in loro's terms). loro's
//! snapshot leaves those out, so Burrow then stores a small bundle: the 4-byte magic `brwb`
//! followed by `[u32 little-endian length][loro blob]` parts (the snapshot, then loro's export of
//! the pending updates). Every function of this module that takes bytes accepts both forms.
//!
//! # Lists
//!
//! List elements may be any JSON value. They are stored as native loro values (maps, lists,
//! strings, numbers...), so the materialized array is canonical: compact, object keys sorted,
//! integers that fit an `i64` kept exact and every other number an `f64`.
//!
//! # Untrusted bytes
//!
//! loro returns errors for most malformed input, but some crafted, checksum-valid bytes trip its
//! internal assertions (panics), or leave a document whose export it then refuses to load. So
//! every function that takes bytes does its work in a throwaway document under
//! `catch_unwind`, exports it and loads the export back, and only then keeps the result;
//! failures become [`CrdtError::Decode`]. The price is a few extra encode/decode passes per
//! import, which is small for per-field documents.
//!
//! # Determinism
//!
//! Nothing here reads the clock or draws randomness: timestamps are never recorded, and every
//! document gets an explicit peer id.

use loro::{
    ContainerID, ContainerType, ExportMode, ID, LoroDoc, LoroList, LoroValue, UpdateOptions,
};
use serde_json::Value as Json;

use crate::value::Value;

/// The name of the one root container of every field document.
const ROOT: &str = "v";

/// Magic prefix of a multi-blob bundle (a loro blob always starts with `loro`).
const BUNDLE_MAGIC: &[u8; 4] = b"brwb";

/// Above this many characters (old + new) a text edit is diffed line by line: loro's
/// character-level Myers diff is `O((N + M) * D)` and has no deterministic cut-off.
const CHAR_DIFF_MAX_CHARS: usize = 50_000;

/// Largest LCS table (cells) the list diff builds; beyond it the changed middle is replaced.
const LIST_LCS_MAX_CELLS: usize = 1 << 22;

/// Nesting deeper than this in a stored list element materializes as `null` (keeps the
/// recursive conversion's stack bounded whatever the bytes contain).
const MAX_JSON_DEPTH: usize = 200;

/// The peer id of documents that only import (the server's, and scratch copies). They never
/// author ops, so any value works; it is set so that no random default is ever in play.
const MERGE_PEER: u64 = 0;

/// Which CRDT a field holds; decided by the column's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrdtKind {
    /// Plain text (`text` policy): a loro text, merged character by character.
    Text,
    /// A JSON array (`list` policy): a loro list, merged element by element.
    List,
}

impl CrdtKind {
    fn container_type(self) -> ContainerType {
        match self {
            CrdtKind::Text => ContainerType::Text,
            CrdtKind::List => ContainerType::List,
        }
    }

    fn root(self) -> ContainerID {
        ContainerID::new_root(ROOT, self.container_type())
    }
}

/// Why CRDT bytes or a new value were refused.
#[derive(Debug, thiserror::Error)]
pub enum CrdtError {
    /// The bytes are not a loro update or snapshot (bad magic, checksum, truncated...).
    #[error("malformed CRDT bytes: {0}")]
    Decode(String),
    /// The bytes are well-formed but edit something other than this field's `"v"` container
    /// (e.g. a list update sent for a text field).
    #[error("CRDT bytes edit {found}, but a {expected:?} field only has the {expected:?} \"v\"")]
    WrongKind {
        /// The kind the field holds.
        expected: CrdtKind,
        /// The container the bytes edit.
        found: String,
    },
    /// A `list` field was given something other than a JSON array.
    #[error("a list field needs a JSON array: {0}")]
    NotAJsonArray(String),
    /// The new value's type does not fit the field (e.g. an integer for a text field).
    #[error("a {kind:?} field cannot hold a {got} value")]
    WrongValue {
        /// The kind the field holds.
        kind: CrdtKind,
        /// The supplied value's kind.
        got: &'static str,
    },
    /// loro refused an operation (an invalid peer id, an export failure...).
    #[error("loro: {0}")]
    Loro(String),
}

fn loro_err(e: impl std::fmt::Display) -> CrdtError {
    CrdtError::Loro(e.to_string())
}

fn decode_err(e: impl std::fmt::Display) -> CrdtError {
    CrdtError::Decode(e.to_string())
}

/// One field's CRDT document, as a device (or the server) holds it in memory.
pub struct CrdtDoc {
    kind: CrdtKind,
    doc: LoroDoc,
}

impl std::fmt::Debug for CrdtDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrdtDoc")
            .field("kind", &self.kind)
            .field("peer", &self.doc.peer_id())
            .field("value", &self.value())
            .finish()
    }
}

impl CrdtDoc {
    /// An empty document that authors its edits as `peer` (see [`peer_id_for`]); `peer` must
    /// not be `u64::MAX`, which loro reserves.
    pub fn new(kind: CrdtKind, peer: u64) -> Result<Self, CrdtError> {
        let doc = LoroDoc::new();
        doc.set_peer_id(peer).map_err(loro_err)?;
        Ok(CrdtDoc { kind, doc })
    }

    /// A document rebuilt from stored bytes (as [`CrdtDoc::export_all`] or [`merge`] produce them,
    /// or any update bytes), authoring further edits as `peer`. An empty slice gives an empty
    /// document, so a field that never had a value needs no special case.
    pub fn load(kind: CrdtKind, bytes: &[u8], peer: u64) -> Result<Self, CrdtError> {
        if bytes.is_empty() {
            return CrdtDoc::new(kind, peer);
        }
        let (doc, ()) = with_scratch(|doc| {
            import_parts(doc, bytes)?;
            rehearse(doc, kind).map(drop)
        })?;
        doc.set_peer_id(peer).map_err(loro_err)?;
        Ok(CrdtDoc { kind, doc })
    }

    /// The kind of CRDT this document holds.
    pub fn kind(&self) -> CrdtKind {
        self.kind
    }

    /// Merges update or snapshot bytes from elsewhere. Importing bytes already seen is a no-op,
    /// and updates may arrive in any order: ones whose dependencies are missing wait inside the
    /// document (and inside [`CrdtDoc::export_all`]) until the dependencies arrive.
    ///
    /// Copy-on-write: the import happens in a copy of the document, which is also exported and
    /// read once, and replaces this one only if all of that succeeded. loro panics on some
    /// crafted (checksum-valid) bytes, and a panic leaves a loro document unusable (poisoned
    /// locks, and a panic again when it is dropped); in the copy such a panic is caught and
    /// reported as [`CrdtError::Decode`], and this document stays as it was.
    pub fn import(&mut self, bytes: &[u8]) -> Result<(), CrdtError> {
        let own = export_all(&self.doc)?;
        let kind = self.kind;
        let (doc, ()) = with_scratch(|doc| {
            import_parts(doc, &own)?;
            import_parts(doc, bytes)?;
            rehearse(doc, kind).map(drop)
        })?;
        doc.set_peer_id(self.doc.peer_id()).map_err(loro_err)?;
        self.doc = doc;
        Ok(())
    }

    /// Everything the document knows, for storage and for sending to devices: a loro snapshot
    /// (full history plus state, so it imports into a document with divergent history and
    /// loads fast), bundled with any still-pending updates (see the module docs).
    pub fn export_all(&self) -> Result<Vec<u8>, CrdtError> {
        export_all(&self.doc)
    }

    /// The current value: [`Value::Text`] for a text field, [`Value::Json`] holding a compact
    /// JSON array for a list field. An empty document is `""` / `[]`, never `NULL`.
    pub fn value(&self) -> Value {
        value_of(&self.doc, self.kind)
    }

    /// Makes `new` the document's value by diffing it against the current value and applying
    /// only the difference as CRDT ops, so concurrent edits elsewhere merge instead of being
    /// overwritten. Returns the update bytes of exactly those new ops, or `None` when `new`
    /// already is the value.
    ///
    /// Text fields take [`Value::Text`]; list fields take a JSON array as [`Value::Json`] (or
    /// [`Value::Text`]); [`Value::Null`] means empty for both.
    pub fn set_value(&mut self, new: &Value) -> Result<Option<Vec<u8>>, CrdtError> {
        let before = self.doc.oplog_vv();
        match self.kind {
            CrdtKind::Text => self.set_text(new)?,
            CrdtKind::List => self.set_list(new)?,
        }
        self.doc.commit();
        if self.doc.oplog_vv() == before {
            return Ok(None);
        }
        let update = self
            .doc
            .export(ExportMode::updates(&before))
            .map_err(loro_err)?;
        Ok(Some(update))
    }

    fn set_text(&mut self, new: &Value) -> Result<(), CrdtError> {
        let new = match new {
            Value::Null => "",
            Value::Text(s) => s.as_str(),
            other => {
                return Err(CrdtError::WrongValue {
                    kind: self.kind,
                    got: other.kind_name(),
                });
            }
        };
        let text = self.doc.get_text(ROOT);
        let old = text.to_string();
        if old == new {
            return Ok(());
        }
        let options = UpdateOptions {
            timeout_ms: None,
            use_refined_diff: true,
        };
        let chars = old.chars().count() + new.chars().count();
        if chars > CHAR_DIFF_MAX_CHARS {
            text.update_by_line(new, options).map_err(loro_err)?;
        } else {
            text.update(new, options).map_err(loro_err)?;
        }
        if text.to_string() != new {
            return Err(CrdtError::Loro(
                "the text diff did not reproduce the new text".into(),
            ));
        }
        Ok(())
    }

    fn set_list(&mut self, new: &Value) -> Result<(), CrdtError> {
        let new: Vec<LoroValue> = match new {
            Value::Null => Vec::new(),
            Value::Json(s) | Value::Text(s) => parse_array(s)?,
            other => {
                return Err(CrdtError::WrongValue {
                    kind: self.kind,
                    got: other.kind_name(),
                });
            }
        };
        let list = self.doc.get_list(ROOT);
        let old: Vec<LoroValue> = match list.get_deep_value() {
            LoroValue::List(items) => items.iter().cloned().collect(),
            _ => Vec::new(),
        };
        // Compare elements by their canonical JSON text: equal iff equal as JSON values.
        let old_keys: Vec<String> = old.iter().map(canonical_json).collect();
        let new_keys: Vec<String> = new.iter().map(canonical_json).collect();
        if old_keys == new_keys {
            return Ok(());
        }
        let (a, b) = intern(&old_keys, &new_keys);
        let script = diff_lists(&a, &b);
        apply_script(&list, &script, &new)?;
        let now: Vec<String> = match list.get_deep_value() {
            LoroValue::List(items) => items.iter().map(canonical_json).collect(),
            _ => Vec::new(),
        };
        if now != new_keys {
            return Err(CrdtError::Loro(
                "the list diff did not reproduce the new array".into(),
            ));
        }
        Ok(())
    }
}

/// A device's loro peer id for its local documents: FNV-1a of `"{client_id}#{epoch}"`. The
/// epoch lets a device that lost its local state start a fresh peer instead of reusing op ids.
/// Never `u64::MAX`, which loro reserves.
pub fn peer_id_for(client_id: &str, epoch: u64) -> u64 {
    let h = crate::hash::fnv1a64(format!("{client_id}#{epoch}").as_bytes());
    h.min(u64::MAX - 1)
}

/// Server side: merges `update` into the stored document bytes `current` (`None` when the field
/// has no document yet) and returns the new stored bytes (as [`CrdtDoc::export_all`] makes them)
/// with the materialized value. Never authors ops. Fails with [`CrdtError::WrongKind`] when the
/// ops `update` applies edit anything but this field's `"v"` container, and with
/// [`CrdtError::Decode`] on malformed bytes (including bytes that make loro panic).
pub fn merge(
    kind: CrdtKind,
    current: Option<&[u8]>,
    update: &[u8],
) -> Result<(Vec<u8>, Value), CrdtError> {
    let (_, merged) = with_scratch(|doc| {
        import_parts(doc, current.unwrap_or_default())?;
        let before = doc.oplog_vv();
        let mut ranges = Vec::new();
        for part in split_bundle(update)? {
            let meta = LoroDoc::decode_import_blob_meta(part, true).map_err(decode_err)?;
            ranges.push((meta.partial_start_vv, meta.partial_end_vv));
            doc.import(part).map_err(decode_err)?;
        }
        let after = doc.oplog_vv();
        // Check the ops this update brought in, not older pending ones it happened to unblock.
        for (start_vv, end_vv) in &ranges {
            let spans = end_vv.iter().filter_map(|(peer, end)| {
                let start = start_vv.get(peer).copied().unwrap_or(0);
                let lo = start.max(before.get(peer).copied().unwrap_or(0));
                let hi = (*end).min(after.get(peer).copied().unwrap_or(0));
                (lo < hi).then_some((*peer, lo, hi))
            });
            check_containers(doc, kind, spans)?;
        }
        let bytes = rehearse(doc, kind)?;
        Ok((bytes, value_of(doc, kind)))
    })?;
    Ok(merged)
}

/// The plain value (text / JSON array, as [`CrdtDoc::value`]) of stored document bytes.
pub fn materialize(kind: CrdtKind, bytes: &[u8]) -> Result<Value, CrdtError> {
    let (_, value) = with_scratch(|doc| {
        import_parts(doc, bytes)?;
        Ok(value_of(doc, kind))
    })?;
    Ok(value)
}

/// Checks that `bytes` are a loro update or snapshot (or a bundle of them) whose ops only edit
/// this field's `"v"` container of the right kind, so the server can refuse a malformed upload
/// with a clear error. Never panics on arbitrary bytes: a loro panic is caught and reported as
/// [`CrdtError::Decode`].
///
/// The check runs on an empty document, so ops that depend on history missing from `bytes`
/// (an incremental update) are decoded but their containers cannot be inspected here; [`merge`]
/// checks those against the stored document.
pub fn validate(kind: CrdtKind, bytes: &[u8]) -> Result<(), CrdtError> {
    if bytes.is_empty() {
        return Err(CrdtError::Decode("empty bytes".into()));
    }
    with_scratch(|doc| {
        for part in split_bundle(bytes)? {
            LoroDoc::decode_import_blob_meta(part, true).map_err(decode_err)?;
        }
        import_parts(doc, bytes)?;
        let vv = doc.oplog_vv();
        check_containers(doc, kind, vv.iter().map(|(peer, end)| (*peer, 0, *end)))?;
        rehearse(doc, kind).map(drop)
    })?;
    Ok(())
}

/// Imports every loro blob of `bytes` (nothing for an empty slice).
fn import_parts(doc: &LoroDoc, bytes: &[u8]) -> Result<(), CrdtError> {
    if bytes.is_empty() {
        return Ok(());
    }
    for part in split_bundle(bytes)? {
        doc.import(part).map_err(decode_err)?;
    }
    Ok(())
}

/// Exports `doc` and loads the export into another document, checking it has the same value,
/// and returns the export. Crafted bytes can make loro panic on export, or export bytes that it
/// then refuses to load; this makes that happen now, inside [`with_scratch`], and not later
/// with a document or stored bytes that are kept.
fn rehearse(doc: &LoroDoc, kind: CrdtKind) -> Result<Vec<u8>, CrdtError> {
    let bytes = export_all(doc)?;
    let value = value_of(doc, kind);
    let (_, reloaded) = with_scratch(|copy| {
        import_parts(copy, &bytes)?;
        Ok(value_of(copy, kind))
    })?;
    if reloaded != value {
        return Err(CrdtError::Decode(
            "these bytes leave a document whose export does not load back the same".into(),
        ));
    }
    Ok(bytes)
}

/// Runs `f` on a fresh document that never authors ops and returns the document with the
/// result. A panic inside `f` becomes [`CrdtError::Decode`]: loro asserts internally and some
/// crafted (checksum-valid) bytes reach those asserts, so all work on untrusted bytes goes
/// through here.
///
/// A document that panicked has poisoned locks, and dropping it panics again (aborting the
/// process if that happens while unwinding). So the document is leaked instead of dropped when
/// `f` panicked or when a final commit (which takes the same locks as dropping) panics.
fn with_scratch<T>(
    f: impl FnOnce(&LoroDoc) -> Result<T, CrdtError>,
) -> Result<(LoroDoc, T), CrdtError> {
    let doc = LoroDoc::new();
    doc.set_peer_id(MERGE_PEER).map_err(loro_err)?;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&doc)));
    let healthy = outcome.is_ok()
        && std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| doc.commit())).is_ok();
    let kept = if healthy {
        Some(doc)
    } else {
        std::mem::forget(doc);
        None
    };
    match (outcome, kept) {
        (Ok(Ok(out)), Some(doc)) => Ok((doc, out)),
        (Ok(Ok(_)), None) => Err(CrdtError::Decode("loro panicked on these bytes".into())),
        (Ok(Err(e)), _) => Err(e),
        (Err(payload), _) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(CrdtError::Decode(format!(
                "loro panicked on these bytes: {msg}"
            )))
        }
    }
}

/// Fails unless every op in the `(peer, start, end)` counter spans edits `kind`'s root `"v"`.
fn check_containers(
    doc: &LoroDoc,
    kind: CrdtKind,
    spans: impl Iterator<Item = (u64, i32, i32)>,
) -> Result<(), CrdtError> {
    let expected = kind.root();
    for (peer, start, end) in spans {
        let Ok(len) = usize::try_from(end.saturating_sub(start)) else {
            continue;
        };
        if len == 0 {
            continue;
        }
        let containers = doc
            .try_get_changed_containers_in(ID::new(peer, start), len)
            .map_err(decode_err)?;
        if let Some(found) = containers.iter().find(|c| **c != expected) {
            return Err(CrdtError::WrongKind {
                expected: kind,
                found: found.to_string(),
            });
        }
    }
    Ok(())
}

fn export_all(doc: &LoroDoc) -> Result<Vec<u8>, CrdtError> {
    let snapshot = doc.export(ExportMode::Snapshot).map_err(loro_err)?;
    match doc.export_pending_updates().map_err(loro_err)? {
        None => Ok(snapshot),
        Some(pending) => bundle(&[&snapshot, &pending]),
    }
}

fn value_of(doc: &LoroDoc, kind: CrdtKind) -> Value {
    match kind {
        CrdtKind::Text => Value::Text(doc.get_text(ROOT).to_string()),
        CrdtKind::List => Value::Json(list_json(&doc.get_list(ROOT))),
    }
}

fn list_json(list: &LoroList) -> String {
    let items = match list.get_deep_value() {
        LoroValue::List(items) => items.iter().map(|v| to_json(v, 1)).collect(),
        _ => Vec::new(),
    };
    Json::Array(items).to_string()
}

// ---- bundles ----

fn bundle(parts: &[&[u8]]) -> Result<Vec<u8>, CrdtError> {
    let mut out = Vec::with_capacity(4 + parts.iter().map(|p| p.len() + 4).sum::<usize>());
    out.extend_from_slice(BUNDLE_MAGIC);
    for part in parts {
        let len = u32::try_from(part.len())
            .map_err(|_| CrdtError::Loro("a CRDT blob is larger than 4 GiB".into()))?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(part);
    }
    Ok(out)
}

/// The loro blobs in `bytes`: itself, or the parts of a bundle.
fn split_bundle(bytes: &[u8]) -> Result<Vec<&[u8]>, CrdtError> {
    let Some(mut rest) = bytes.strip_prefix(BUNDLE_MAGIC.as_slice()) else {
        return Ok(vec![bytes]);
    };
    let mut parts = Vec::new();
    while !rest.is_empty() {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(CrdtError::Decode("truncated bundle part length".into()));
        };
        let len = usize::try_from(u32::from_le_bytes(*len))
            .map_err(|_| CrdtError::Decode("bundle part too large".into()))?;
        if len == 0 || len > tail.len() {
            return Err(CrdtError::Decode("bad bundle part length".into()));
        }
        let (part, tail) = tail.split_at(len);
        parts.push(part);
        rest = tail;
    }
    if parts.is_empty() {
        return Err(CrdtError::Decode("empty bundle".into()));
    }
    Ok(parts)
}

// ---- JSON <-> loro values ----

fn parse_array(s: &str) -> Result<Vec<LoroValue>, CrdtError> {
    match serde_json::from_str::<Json>(s) {
        Ok(Json::Array(items)) => Ok(items.iter().map(from_json).collect()),
        Ok(other) => Err(CrdtError::NotAJsonArray(format!(
            "got a JSON {}",
            json_type_name(&other)
        ))),
        Err(e) => Err(CrdtError::NotAJsonArray(e.to_string())),
    }
}

fn json_type_name(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

/// JSON to a loro value. Recursion is bounded by serde_json's parser (depth 128).
fn from_json(v: &Json) -> LoroValue {
    match v {
        Json::Null => LoroValue::Null,
        Json::Bool(b) => LoroValue::Bool(*b),
        Json::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => LoroValue::I64(i),
            (None, Some(f)) => LoroValue::Double(f),
            (None, None) => LoroValue::Null,
        },
        Json::String(s) => LoroValue::String(s.as_str().into()),
        Json::Array(items) => LoroValue::List(items.iter().map(from_json).collect()),
        Json::Object(map) => {
            LoroValue::Map(map.iter().map(|(k, v)| (k.clone(), from_json(v))).collect())
        }
    }
}

/// A loro value as JSON: object keys sorted, non-finite floats and anything nested deeper than
/// [`MAX_JSON_DEPTH`] as `null`, binaries as arrays of byte values.
fn to_json(v: &LoroValue, depth: usize) -> Json {
    if depth > MAX_JSON_DEPTH {
        return Json::Null;
    }
    match v {
        LoroValue::Null | LoroValue::Container(_) => Json::Null,
        LoroValue::Bool(b) => Json::Bool(*b),
        LoroValue::I64(i) => Json::from(*i),
        LoroValue::Double(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        LoroValue::String(s) => Json::String(s.to_string()),
        LoroValue::Binary(b) => Json::Array(b.iter().map(|x| Json::from(*x)).collect()),
        LoroValue::List(items) => {
            Json::Array(items.iter().map(|x| to_json(x, depth + 1)).collect())
        }
        LoroValue::Map(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let mut out = serde_json::Map::new();
            for k in keys {
                if let Some(x) = map.get(k) {
                    out.insert(k.clone(), to_json(x, depth + 1));
                }
            }
            Json::Object(out)
        }
    }
}

fn canonical_json(v: &LoroValue) -> String {
    to_json(v, 1).to_string()
}

// ---- list diff ----

/// One step of an edit script turning the old list into the new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Edit {
    /// Keep the next old element.
    Keep,
    /// Delete the next old element.
    Delete,
    /// Insert the new element with this index.
    Insert(usize),
}

/// Maps equal keys to equal small integers so the LCS compares `u32`s.
fn intern(old: &[String], new: &[String]) -> (Vec<u32>, Vec<u32>) {
    let mut ids = std::collections::HashMap::<&str, u32>::new();
    let mut out = [Vec::with_capacity(old.len()), Vec::with_capacity(new.len())];
    for (side, keys) in [old, new].into_iter().enumerate() {
        for key in keys {
            let next = u32::try_from(ids.len()).unwrap_or(u32::MAX);
            out[side].push(*ids.entry(key.as_str()).or_insert(next));
        }
    }
    let [a, b] = out;
    (a, b)
}

/// A minimal (LCS-based) edit script from `a` to `b`: the common prefix and suffix are kept, the
/// middle is aligned with an LCS table, or replaced wholesale when the table would be too big.
fn diff_lists(a: &[u32], b: &[u32]) -> Vec<Edit> {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let am = &a[prefix..a.len() - suffix];
    let bm = &b[prefix..b.len() - suffix];
    let mut script = vec![Edit::Keep; prefix];
    let (n, m) = (am.len(), bm.len());
    if n.saturating_mul(m) > LIST_LCS_MAX_CELLS || n == 0 || m == 0 {
        script.extend(std::iter::repeat_n(Edit::Delete, n));
        script.extend((0..m).map(|j| Edit::Insert(prefix + j)));
    } else {
        // lcs[i * (m + 1) + j] = LCS length of am[i..] and bm[j..].
        let w = m + 1;
        let mut lcs = vec![0u32; (n + 1) * w];
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                lcs[i * w + j] = if am[i] == bm[j] {
                    lcs[(i + 1) * w + j + 1] + 1
                } else {
                    lcs[(i + 1) * w + j].max(lcs[i * w + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < n || j < m {
            if i < n && j < m && am[i] == bm[j] {
                script.push(Edit::Keep);
                i += 1;
                j += 1;
            } else if i < n && (j == m || lcs[(i + 1) * w + j] >= lcs[i * w + j + 1]) {
                script.push(Edit::Delete);
                i += 1;
            } else {
                script.push(Edit::Insert(prefix + j));
                j += 1;
            }
        }
    }
    script.extend(std::iter::repeat_n(Edit::Keep, suffix));
    script
}

/// Applies an edit script to `list`, batching runs of deletes.
fn apply_script(list: &LoroList, script: &[Edit], new: &[LoroValue]) -> Result<(), CrdtError> {
    let mut pos = 0usize;
    let mut k = 0usize;
    while k < script.len() {
        match script[k] {
            Edit::Keep => {
                pos += 1;
                k += 1;
            }
            Edit::Delete => {
                let run = script[k..]
                    .iter()
                    .take_while(|e| **e == Edit::Delete)
                    .count();
                list.delete(pos, run).map_err(loro_err)?;
                k += run;
            }
            Edit::Insert(j) => {
                let item = new
                    .get(j)
                    .cloned()
                    .ok_or_else(|| CrdtError::Loro("list diff index out of range".into()))?;
                list.insert(pos, item).map_err(loro_err)?;
                pos += 1;
                k += 1;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text(s: &str) -> Value {
        Value::Text(s.to_string())
    }

    fn json(s: &str) -> Value {
        Value::Json(s.to_string())
    }

    /// XXH32, to re-seal mutated loro blobs so fuzzing gets past the checksum.
    fn xxh32(data: &[u8], seed: u32) -> u32 {
        const P1: u32 = 0x9E37_79B1;
        const P2: u32 = 0x85EB_CA77;
        const P3: u32 = 0xC2B2_AE3D;
        const P4: u32 = 0x27D4_EB2F;
        const P5: u32 = 0x1656_67B1;
        let rd = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let round = |acc: u32, input: u32| {
            acc.wrapping_add(input.wrapping_mul(P2))
                .rotate_left(13)
                .wrapping_mul(P1)
        };
        let mut rest = data;
        let mut h = if data.len() >= 16 {
            let mut v = [
                seed.wrapping_add(P1).wrapping_add(P2),
                seed.wrapping_add(P2),
                seed,
                seed.wrapping_sub(P1),
            ];
            while rest.len() >= 16 {
                for (i, lane) in v.iter_mut().enumerate() {
                    *lane = round(*lane, rd(&rest[i * 4..]));
                }
                rest = &rest[16..];
            }
            v[0].rotate_left(1)
                .wrapping_add(v[1].rotate_left(7))
                .wrapping_add(v[2].rotate_left(12))
                .wrapping_add(v[3].rotate_left(18))
        } else {
            seed.wrapping_add(P5)
        };
        h = h.wrapping_add(data.len() as u32);
        while rest.len() >= 4 {
            h = h.wrapping_add(rd(rest).wrapping_mul(P3));
            h = h.rotate_left(17).wrapping_mul(P4);
            rest = &rest[4..];
        }
        for b in rest {
            h = h.wrapping_add(u32::from(*b).wrapping_mul(P5));
            h = h.rotate_left(11).wrapping_mul(P1);
        }
        h ^= h >> 15;
        h = h.wrapping_mul(P2);
        h ^= h >> 13;
        h = h.wrapping_mul(P3);
        h ^= h >> 16;
        h
    }

    /// Recomputes a fast-mode loro blob's checksum after its body was changed.
    fn reseal(blob: &mut [u8]) {
        if blob.len() >= 22 && &blob[..4] == b"loro" {
            let sum = xxh32(&blob[20..], u32::from_le_bytes(*b"LORO"));
            blob[16..20].copy_from_slice(&sum.to_le_bytes());
        }
    }

    #[test]
    fn reseal_matches_loros_checksum() {
        let mut doc = CrdtDoc::new(CrdtKind::Text, 1).unwrap();
        let update = doc.set_value(&text("hello")).unwrap().unwrap();
        let mut copy = update.clone();
        copy[16..20].fill(0);
        reseal(&mut copy);
        assert_eq!(copy, update);
    }

    #[test]
    fn text_set_value_round_trips() {
        let mut doc = CrdtDoc::new(CrdtKind::Text, 7).unwrap();
        assert_eq!(doc.value(), text(""));
        for s in [
            "hello",
            "héllo wörld 😀👍🏽 你好世界",
            "你好 world 🎉🎉 — ÿ\u{0301}",
            "\n\ttabs\r\nand lines\n",
            "",
            "x",
        ] {
            doc.set_value(&text(s)).unwrap();
            assert_eq!(doc.value(), text(s));
            let again = CrdtDoc::load(CrdtKind::Text, &doc.export_all().unwrap(), 8).unwrap();
            assert_eq!(again.value(), text(s));
        }
        assert_eq!(doc.set_value(&text("x")).unwrap(), None);
        assert!(doc.set_value(&Value::Null).unwrap().is_some());
        assert_eq!(doc.value(), text(""));
        assert_eq!(doc.set_value(&Value::Null).unwrap(), None);
        assert!(matches!(
            doc.set_value(&Value::Integer(3)),
            Err(CrdtError::WrongValue { .. })
        ));
    }

    #[test]
    fn list_set_value_round_trips() {
        let mut doc = CrdtDoc::new(CrdtKind::List, 7).unwrap();
        assert_eq!(doc.value(), json("[]"));
        for s in [
            r#"[1,"a",{"a":1,"b":[true,null]},2.5,[1,[2]],"😀 你好",-7,null,false]"#,
            r#"[1,{"a":1,"b":[true,null]},"new",2.5,[1,[2]],"😀 你好",-7,null,false,1e300]"#,
            r#"[{"a":{"b":{"c":[]}}},{},[],""]"#,
            r#"["x","x","x","y","x"]"#,
            r#"["x","y","x","x"]"#,
            "[]",
            r#"[9223372036854775807,-9223372036854775808,0.5]"#,
        ] {
            doc.set_value(&json(s)).unwrap();
            let expected: Json = serde_json::from_str(s).unwrap();
            let got = match doc.value() {
                Value::Json(j) => j,
                other => panic!("{other:?}"),
            };
            assert_eq!(serde_json::from_str::<Json>(&got).unwrap(), expected);
            assert_eq!(got, expected.to_string(), "compact and canonical");
            let again = CrdtDoc::load(CrdtKind::List, &doc.export_all().unwrap(), 8).unwrap();
            assert_eq!(again.value(), doc.value());
        }
        // Canonical form: keys sorted, whitespace dropped; equal JSON is no change.
        doc.set_value(&json(r#"[ {"b": 1, "a": 2} ]"#)).unwrap();
        assert_eq!(doc.value(), json(r#"[{"a":2,"b":1}]"#));
        assert_eq!(doc.set_value(&json(r#"[{"a":2,"b":1}]"#)).unwrap(), None);
        assert_eq!(doc.set_value(&text(r#"[{"b":1,"a":2}]"#)).unwrap(), None);
        assert!(doc.set_value(&Value::Null).unwrap().is_some());
        assert_eq!(doc.value(), json("[]"));
        assert!(matches!(
            doc.set_value(&json(r#"{"a":1}"#)),
            Err(CrdtError::NotAJsonArray(_))
        ));
        assert!(matches!(
            doc.set_value(&json("[1,")),
            Err(CrdtError::NotAJsonArray(_))
        ));
        assert!(matches!(
            doc.set_value(&Value::Real(1.0)),
            Err(CrdtError::WrongValue { .. })
        ));
    }

    #[test]
    fn list_diff_touches_only_the_changed_elements() {
        let mut doc = CrdtDoc::new(CrdtKind::List, 1).unwrap();
        let items: Vec<String> = (0..100).map(|i| format!("\"item {i}\"")).collect();
        doc.set_value(&json(&format!("[{}]", items.join(","))))
            .unwrap();
        let mut changed = items.clone();
        changed[50] = "\"changed\"".into();
        changed.remove(10);
        let update = doc
            .set_value(&json(&format!("[{}]", changed.join(","))))
            .unwrap()
            .unwrap();
        let whole = doc.export_all().unwrap();
        eprintln!(
            "list: update {} bytes for 2 edits of 100 items, stored {} bytes",
            update.len(),
            whole.len()
        );
        assert!(update.len() < 200, "{}", update.len());
    }

    #[test]
    fn diff_lists_is_a_minimal_script() {
        let cases: &[(&[u32], &[u32])] = &[
            (&[], &[]),
            (&[1, 2, 3], &[]),
            (&[], &[1, 2]),
            (&[1, 2, 3], &[1, 3]),
            (&[1, 2, 3], &[3, 2, 1]),
            (&[1, 2, 3, 4, 5], &[1, 9, 3, 8, 5]),
        ];
        for (a, b) in cases {
            let script = diff_lists(a, b);
            let mut out = Vec::new();
            let mut i = 0;
            for e in &script {
                match e {
                    Edit::Keep => {
                        out.push(a[i]);
                        i += 1;
                    }
                    Edit::Delete => i += 1,
                    Edit::Insert(j) => out.push(b[*j]),
                }
            }
            assert_eq!(i, a.len());
            assert_eq!(&out, b);
        }
        let keeps = diff_lists(&[1, 2, 3, 4, 5], &[1, 9, 3, 8, 5])
            .iter()
            .filter(|e| **e == Edit::Keep)
            .count();
        assert_eq!(keeps, 3);
    }

    fn shared(kind: CrdtKind, v: &Value) -> Vec<u8> {
        let mut base = CrdtDoc::new(kind, 100).unwrap();
        base.set_value(v).unwrap();
        base.export_all().unwrap()
    }

    /// A and B edit offline from `base`; returns the value every replica converges to, checking
    /// both devices, both import orders on fresh replicas, and the server.
    fn converge(kind: CrdtKind, base: &Value, a_new: &Value, b_new: &Value) -> Value {
        let start = shared(kind, base);
        let mut a = CrdtDoc::load(kind, &start, 1).unwrap();
        let mut b = CrdtDoc::load(kind, &start, 2).unwrap();
        let ua = a.set_value(a_new).unwrap().unwrap();
        let ub = b.set_value(b_new).unwrap().unwrap();
        a.import(&ub).unwrap();
        b.import(&ua).unwrap();
        assert_eq!(a.value(), b.value());
        let mut c = CrdtDoc::load(kind, &start, 3).unwrap();
        c.import(&ub).unwrap();
        c.import(&ua).unwrap();
        assert_eq!(c.value(), a.value());
        let (s1, _) = merge(kind, Some(&start), &ub).unwrap();
        let (s2, v) = merge(kind, Some(&s1), &ua).unwrap();
        assert_eq!(v, a.value());
        assert_eq!(materialize(kind, &s2).unwrap(), v);
        a.value()
    }

    #[test]
    fn concurrent_text_edits_both_survive() {
        let v = converge(
            CrdtKind::Text,
            &text("hello world"),
            &text(">> hello world"),
            &text("hello world!!"),
        );
        assert_eq!(v, text(">> hello world!!"));

        let Value::Text(v) = converge(
            CrdtKind::Text,
            &text("hello world"),
            &text("hello big world"),
            &text("hello small world"),
        ) else {
            panic!()
        };
        assert!(v.contains("big") && v.contains("small"), "{v}");
        assert!(v.starts_with("hello ") && v.ends_with(" world"), "{v}");

        // One deletes a word while the other edits inside it.
        let Value::Text(v) = converge(
            CrdtKind::Text,
            &text("one two three"),
            &text("one three"),
            &text("one twoo three 😀"),
        ) else {
            panic!()
        };
        // The diffs were "one t[wo t]hree" and "one two[o] three": the inserted 'o' survives.
        assert_eq!(v, "one tohree 😀");
    }

    #[test]
    fn concurrent_list_inserts_both_survive_in_a_deterministic_order() {
        let v = converge(
            CrdtKind::List,
            &json("[1,2,3]"),
            &json(r#"[1,"a",2,3]"#),
            &json(r#"[1,{"b":true},2,3]"#),
        );
        let Value::Json(s) = &v else { panic!() };
        let arr: Vec<Json> = serde_json::from_str(s).unwrap();
        assert_eq!(arr.len(), 5);
        assert!(arr.contains(&Json::from("a")));
        assert!(arr.contains(&serde_json::json!({"b": true})));
        assert_eq!(arr[0], Json::from(1));
        assert_eq!(arr[3..], [Json::from(2), Json::from(3)]);

        // Both append, one deletes the head.
        let v = converge(
            CrdtKind::List,
            &json(r#"["x","y"]"#),
            &json(r#"["y","a"]"#),
            &json(r#"["x","y","b"]"#),
        );
        let Value::Json(s) = &v else { panic!() };
        assert!(s == r#"["y","a","b"]"# || s == r#"["y","b","a"]"#, "{s}");
    }

    #[derive(Debug, Clone)]
    enum Step {
        Insert {
            pos: usize,
            what: String,
        },
        Delete {
            pos: usize,
            len: usize,
        },
        Sync {
            from: usize,
            start: usize,
            count: usize,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (any::<usize>(), "[ab c😀]{1,4}")
                .prop_map(|(pos, what)| Step::Insert { pos, what }),
            2 => (any::<usize>(), 1usize..4).prop_map(|(pos, len)| Step::Delete { pos, len }),
            1 => (any::<usize>(), any::<usize>(), any::<usize>())
                .prop_map(|(from, start, count)| Step::Sync { from, start, count }),
        ]
    }

    /// The value after applying an insert/delete to `current`, as the app would write it.
    fn edited(kind: CrdtKind, current: &Value, step: &Step) -> Option<Value> {
        match kind {
            CrdtKind::Text => {
                let Value::Text(s) = current else { panic!() };
                let mut chars: Vec<char> = s.chars().collect();
                match step {
                    Step::Insert { pos, what } => {
                        let at = pos % (chars.len() + 1);
                        chars.splice(at..at, what.chars());
                    }
                    Step::Delete { pos, len } => {
                        if chars.is_empty() {
                            return None;
                        }
                        let at = pos % chars.len();
                        let end = (at + len).min(chars.len());
                        chars.drain(at..end);
                    }
                    Step::Sync { .. } => return None,
                }
                Some(Value::Text(chars.into_iter().collect()))
            }
            CrdtKind::List => {
                let Value::Json(s) = current else { panic!() };
                let mut items: Vec<Json> = serde_json::from_str(s).unwrap();
                match step {
                    Step::Insert { pos, what } => {
                        let at = pos % (items.len() + 1);
                        let new: Vec<Json> = what
                            .chars()
                            .enumerate()
                            .map(|(i, c)| match i % 3 {
                                0 => Json::from(c.to_string()),
                                1 => serde_json::json!({ "k": c.to_string(), "n": i }),
                                _ => Json::from(u32::from(c) % 7),
                            })
                            .collect();
                        items.splice(at..at, new);
                    }
                    Step::Delete { pos, len } => {
                        if items.is_empty() {
                            return None;
                        }
                        let at = pos % items.len();
                        let end = (at + len).min(items.len());
                        items.drain(at..end);
                    }
                    Step::Sync { .. } => return None,
                }
                Some(Value::Json(Json::Array(items).to_string()))
            }
        }
    }

    /// A deterministic shuffle with duplicates driven by `seed`.
    fn delivery<T: Clone>(items: &[T], seed: u64, dups: usize) -> Vec<T> {
        let mut state = seed | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut out: Vec<T> = items.to_vec();
        for _ in 0..dups.min(items.len() * 2) {
            if items.is_empty() {
                break;
            }
            let pick = (next() % items.len() as u64) as usize;
            out.push(items[pick].clone());
        }
        for i in (1..out.len()).rev() {
            let j = (next() % (i as u64 + 1)) as usize;
            out.swap(i, j);
        }
        out
    }

    fn run_convergence(
        kind: CrdtKind,
        peers: usize,
        steps: &[(usize, Step)],
        seeds: &[u64],
        dups: usize,
    ) {
        let mut docs: Vec<CrdtDoc> = (0..peers)
            .map(|p| CrdtDoc::new(kind, peer_id_for(&format!("client-{p}"), 0)).unwrap())
            .collect();
        let mut blobs: Vec<Vec<Vec<u8>>> = vec![Vec::new(); peers];
        for (who, step) in steps {
            let p = who % peers;
            if let Step::Sync { from, start, count } = step {
                let from = from % peers;
                let theirs = blobs[from].clone();
                if theirs.is_empty() {
                    continue;
                }
                for k in 0..(count % (theirs.len() + 1)) {
                    docs[p].import(&theirs[(start + k) % theirs.len()]).unwrap();
                }
                continue;
            }
            let Some(new) = edited(kind, &docs[p].value(), step) else {
                continue;
            };
            if let Some(update) = docs[p].set_value(&new).unwrap() {
                blobs[p].push(update);
            }
            assert_eq!(docs[p].value(), new);
        }
        let all: Vec<Vec<u8>> = blobs.into_iter().flatten().collect();
        for (i, doc) in docs.iter_mut().enumerate() {
            for blob in delivery(&all, seeds[i % seeds.len()], dups) {
                doc.import(&blob).unwrap();
            }
        }
        let mut server: Option<Vec<u8>> = None;
        let mut served = None;
        for blob in delivery(&all, seeds[seeds.len() - 1] ^ 0xdead_beef, dups) {
            validate(kind, &blob).unwrap();
            let (state, value) = merge(kind, server.as_deref(), &blob).unwrap();
            server = Some(state);
            served = Some(value);
        }
        let expected = docs[0].value();
        for doc in &docs {
            assert_eq!(doc.value(), expected);
        }
        if let Some(state) = server {
            assert_eq!(served, Some(expected.clone()));
            assert_eq!(materialize(kind, &state).unwrap(), expected);
            validate(kind, &state).unwrap();
            let fresh = CrdtDoc::load(kind, &state, 99).unwrap();
            assert_eq!(fresh.value(), expected);
            // A device's full export also brings a late device up to date.
            let from_device = docs[0].export_all().unwrap();
            assert_eq!(materialize(kind, &from_device).unwrap(), expected);
        }
    }

    proptest! {
        // CRDT_PROPTEST_CASES=N runs longer (e.g. as a soak).
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("CRDT_PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(96)
        ))]

        #[test]
        fn text_replicas_converge(
            peers in 2usize..=4,
            steps in prop::collection::vec((any::<usize>(), step()), 1..40),
            seeds in prop::collection::vec(any::<u64>(), 5),
            dups in 0usize..8,
        ) {
            run_convergence(CrdtKind::Text, peers, &steps, &seeds, dups);
        }

        #[test]
        fn list_replicas_converge(
            peers in 2usize..=4,
            steps in prop::collection::vec((any::<usize>(), step()), 1..40),
            seeds in prop::collection::vec(any::<u64>(), 5),
            dups in 0usize..8,
        ) {
            run_convergence(CrdtKind::List, peers, &steps, &seeds, dups);
        }

        #[test]
        fn text_set_value_is_exact(values in prop::collection::vec(any::<String>(), 1..6)) {
            let mut doc = CrdtDoc::new(CrdtKind::Text, 5).unwrap();
            for v in values {
                doc.set_value(&Value::Text(v.clone())).unwrap();
                prop_assert_eq!(doc.value(), Value::Text(v));
            }
        }

        #[test]
        fn validate_rejects_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            for kind in [CrdtKind::Text, CrdtKind::List] {
                prop_assert!(validate(kind, &bytes).is_err());
                let mut prefixed = b"loro".to_vec();
                prefixed.extend_from_slice(&bytes);
                prop_assert!(validate(kind, &prefixed).is_err());
                let mut bundled = BUNDLE_MAGIC.to_vec();
                bundled.extend_from_slice(&bytes);
                prop_assert!(validate(kind, &bundled).is_err());
                prop_assert!(materialize(kind, &bytes).is_err() || bytes.is_empty());
                prop_assert!(merge(kind, None, &bytes).is_err());
            }
        }

        /// Mutated real blobs with a valid checksum reach deep into loro's decoders (several
        /// loro asserts fire on them); every entry point must turn that into an error, keep the
        /// documents it returns usable, and never abort.
        #[test]
        fn mutated_blobs_do_not_panic(
            which in any::<usize>(),
            edits in prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..4),
        ) {
            let corpus = fuzz_corpus();
            let (kind, blob) = &corpus[which % corpus.len()];
            let kind = *kind;
            let mut blob = blob.clone();
            for (pos, byte, op) in edits {
                if blob.len() <= 22 || blob.starts_with(BUNDLE_MAGIC) {
                    break;
                }
                let at = 22 + pos % (blob.len() - 22);
                match op {
                    0 => blob[at] = byte,
                    1 => blob.insert(at, byte),
                    _ => { blob.remove(at); }
                }
            }
            reseal(&mut blob);
            let same_kind: Vec<&Vec<u8>> =
                corpus.iter().filter(|(k, _)| *k == kind).map(|(_, b)| b).collect();
            let base = same_kind[0];
            let _ = validate(kind, &blob);
            let _ = materialize(kind, &blob);
            if let Ok((mut state, _)) = merge(kind, Some(base), &blob) {
                for other in &same_kind {
                    if let Ok((next, _)) = merge(kind, Some(&state), other) {
                        state = next;
                    }
                }
                let _ = materialize(kind, &state);
            }
            let mut doc = CrdtDoc::load(kind, base, 77).unwrap();
            let before = doc.value();
            match doc.import(&blob) {
                Err(_) => prop_assert_eq!(doc.value(), before),
                Ok(()) => {
                    for other in &same_kind {
                        let _ = doc.import(other);
                    }
                    let new = match kind {
                        CrdtKind::Text => text("zz"),
                        CrdtKind::List => json("[1]"),
                    };
                    doc.set_value(&new).unwrap();
                    prop_assert_eq!(doc.value(), new);
                    let again = CrdtDoc::load(kind, &doc.export_all().unwrap(), 78).unwrap();
                    prop_assert_eq!(again.value(), doc.value());
                }
            }
        }
    }

    /// Real blobs of both kinds: updates, snapshots, concurrent edits and a pending bundle.
    fn fuzz_corpus() -> Vec<(CrdtKind, Vec<u8>)> {
        let mut out = Vec::new();
        for kind in [CrdtKind::Text, CrdtKind::List] {
            let values = match kind {
                CrdtKind::Text => ["hello wörld 😀", "hello, wörld 😀!", "Yhello😀", "h"].map(text),
                CrdtKind::List => [
                    r#"[1,"a",{"k":[1,2.5,null]},true]"#,
                    r#"[1,{"k":[1,2.5,null]},"b"]"#,
                    r#"[2.5,1,{"k":[1,{"b":2}]},"s"]"#,
                    "[false]",
                ]
                .map(json),
            };
            let mut docs: Vec<CrdtDoc> = (0..3)
                .map(|p| CrdtDoc::new(kind, p + 10).unwrap())
                .collect();
            let mut updates = Vec::new();
            for (i, v) in values.iter().enumerate() {
                if let Some(u) = docs[i % 3].set_value(v).unwrap() {
                    docs[(i + 1) % 3].import(&u).unwrap();
                    updates.push(u);
                }
            }
            let snapshot = docs[1].export_all().unwrap();
            out.push((kind, snapshot));
            let (pending, _) = merge(kind, None, updates.last().unwrap()).unwrap();
            assert!(pending.starts_with(BUNDLE_MAGIC));
            out.push((kind, pending));
            out.extend(updates.into_iter().map(|u| (kind, u)));
            out.push((kind, docs[2].export_all().unwrap()));
        }
        out
    }

    #[test]
    fn importing_twice_is_a_no_op() {
        for (kind, v1, v2) in [
            (CrdtKind::Text, text("hello"), text("hello there")),
            (CrdtKind::List, json("[1,2]"), json(r#"[1,"x",2]"#)),
        ] {
            let mut a = CrdtDoc::new(kind, 1).unwrap();
            let u1 = a.set_value(&v1).unwrap().unwrap();
            let u2 = a.set_value(&v2).unwrap().unwrap();
            let mut b = CrdtDoc::new(kind, 2).unwrap();
            b.import(&u1).unwrap();
            b.import(&u2).unwrap();
            let once = b.value();
            b.import(&u2).unwrap();
            b.import(&u1).unwrap();
            b.import(&a.export_all().unwrap()).unwrap();
            assert_eq!(b.value(), once);
            assert_eq!(b.value(), v2);

            let (s1, v) = merge(kind, None, &u1).unwrap();
            let (s2, v_once) = merge(kind, Some(&s1), &u2).unwrap();
            let (s3, v_twice) = merge(kind, Some(&s2), &u2).unwrap();
            let (s4, v_thrice) = merge(kind, Some(&s3), &u1).unwrap();
            assert_eq!(v, v1);
            assert_eq!(v_once, v2);
            assert_eq!(v_twice, v_once);
            assert_eq!(v_thrice, v_once);
            assert_eq!(
                s3, s2,
                "a duplicate merge leaves the stored bytes unchanged"
            );
            assert_eq!(s4, s2);
        }
    }

    #[test]
    fn out_of_order_updates_wait_in_the_stored_bytes() {
        let mut a = CrdtDoc::new(CrdtKind::Text, 1).unwrap();
        let u1 = a.set_value(&text("ab")).unwrap().unwrap();
        let u2 = a.set_value(&text("abc")).unwrap().unwrap();
        let u3 = a.set_value(&text("xabc")).unwrap().unwrap();
        let (s, v) = merge(CrdtKind::Text, None, &u3).unwrap();
        assert_eq!(v, text(""));
        assert!(s.starts_with(BUNDLE_MAGIC), "pending ops are kept");
        let (s, v) = merge(CrdtKind::Text, Some(&s), &u2).unwrap();
        assert_eq!(v, text(""));
        let mut late = CrdtDoc::load(CrdtKind::Text, &s, 5).unwrap();
        let (s, v) = merge(CrdtKind::Text, Some(&s), &u1).unwrap();
        assert_eq!(v, text("xabc"));
        assert!(
            s.starts_with(b"loro"),
            "nothing pending any more: a plain snapshot"
        );
        late.import(&u1).unwrap();
        assert_eq!(late.value(), text("xabc"));
        assert_eq!(late.export_all().unwrap()[..4], *b"loro");
    }

    #[test]
    fn validate_checks_the_container_kind() {
        let mut l = CrdtDoc::new(CrdtKind::List, 1).unwrap();
        let list_update = l.set_value(&json("[1,2]")).unwrap().unwrap();
        let mut t = CrdtDoc::new(CrdtKind::Text, 2).unwrap();
        let text_update = t.set_value(&text("hi")).unwrap().unwrap();
        validate(CrdtKind::List, &list_update).unwrap();
        validate(CrdtKind::Text, &text_update).unwrap();
        validate(CrdtKind::Text, &t.export_all().unwrap()).unwrap();
        assert!(matches!(
            validate(CrdtKind::Text, &list_update),
            Err(CrdtError::WrongKind { .. })
        ));
        assert!(matches!(
            validate(CrdtKind::List, &text_update),
            Err(CrdtError::WrongKind { .. })
        ));
        assert!(matches!(
            merge(CrdtKind::Text, None, &list_update),
            Err(CrdtError::WrongKind { .. })
        ));
        assert!(matches!(
            validate(CrdtKind::Text, b""),
            Err(CrdtError::Decode(_))
        ));

        // Another container name is refused too.
        let raw = LoroDoc::new();
        raw.set_peer_id(3).unwrap();
        raw.get_text("other").insert(0, "x").unwrap();
        let other = raw.export(ExportMode::all_updates()).unwrap();
        assert!(matches!(
            validate(CrdtKind::Text, &other),
            Err(CrdtError::WrongKind { .. })
        ));

        // An incremental list op on top of a text doc: its deps are missing from the bytes, so
        // validate cannot see it, but merge against the stored doc refuses it.
        let stored = t.export_all().unwrap();
        let raw = LoroDoc::new();
        raw.set_peer_id(4).unwrap();
        raw.import(&stored).unwrap();
        let before = raw.oplog_vv();
        raw.get_list(ROOT).insert(0, 1).unwrap();
        raw.commit();
        let sneaky = raw.export(ExportMode::updates(&before)).unwrap();
        assert!(validate(CrdtKind::Text, &sneaky).is_ok());
        assert!(matches!(
            merge(CrdtKind::Text, Some(&stored), &sneaky),
            Err(CrdtError::WrongKind { .. })
        ));
    }

    #[test]
    fn a_one_character_edit_is_small() {
        let base: String = (0..200)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let mut doc = CrdtDoc::new(CrdtKind::Text, peer_id_for("device", 1)).unwrap();
        let first = doc.set_value(&Value::Text(base.clone())).unwrap().unwrap();
        let mut edited = base.clone();
        edited.insert(100, 'X');
        let update = doc.set_value(&Value::Text(edited)).unwrap().unwrap();
        let stored = doc.export_all().unwrap();
        let all_updates = doc.doc.export(ExportMode::all_updates()).unwrap();
        eprintln!(
            "text: one-char edit of a 200-char text = {} bytes (initial insert {}, snapshot {}, \
             all updates {})",
            update.len(),
            first.len(),
            stored.len(),
            all_updates.len()
        );
        assert!(update.len() < 200, "{}", update.len());
    }

    #[test]
    fn large_texts_fall_back_to_a_line_diff() {
        let lines: Vec<String> = (0..3000).map(|i| format!("line number {i}")).collect();
        let mut doc = CrdtDoc::new(CrdtKind::Text, 1).unwrap();
        doc.set_value(&Value::Text(lines.join("\n"))).unwrap();
        let mut changed = lines.clone();
        changed[1500] = "a changed line".into();
        let v = Value::Text(changed.join("\n"));
        let update = doc.set_value(&v).unwrap().unwrap();
        assert_eq!(doc.value(), v);
        assert!(update.len() < 400, "{}", update.len());
    }

    #[test]
    fn peer_ids_are_stable_and_valid() {
        assert_eq!(peer_id_for("abc", 3), crate::hash::fnv1a64(b"abc#3"));
        assert_ne!(peer_id_for("abc", 3), peer_id_for("abc", 4));
        assert!(CrdtDoc::new(CrdtKind::Text, u64::MAX).is_err());
    }

    #[test]
    fn bundles_round_trip_and_reject_garbage() {
        let b = bundle(&[b"loroA", b"loroBC"]).unwrap();
        assert_eq!(
            split_bundle(&b).unwrap(),
            vec![&b"loroA"[..], &b"loroBC"[..]]
        );
        assert!(split_bundle(BUNDLE_MAGIC).is_err());
        assert!(split_bundle(&b[..b.len() - 1]).is_err());
        assert_eq!(split_bundle(b"loro").unwrap(), vec![&b"loro"[..]]);
    }
}
