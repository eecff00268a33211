//! Fields whose value is merged from every writer rather than chosen among them: `counter`
//! columns (ops carry increments) and CRDT columns (`text`, `list`: ops carry loro updates).
//!
//! - **Counters.** The capture trigger records `NEW - OLD`. The visible value is the
//!   server-confirmed total in the shadow plus the increments still in the outbox that the
//!   shadow does not reflect yet.
//! - **CRDTs.** The trigger records the new plain value; before an op is uploaded, or before a
//!   download touches its row, it is *converted*: diffed against the field's local loro
//!   document (`_burrow_crdt`) into CRDT ops, whose update bytes replace the plain value in the
//!   outbox as `{"$crdt": "<hex>"}`. Converting in outbox order, always before remote updates
//!   are imported, keeps each diff against exactly the text the user edited. The visible value
//!   is the local document's value: server state merged with local edits.

use crate::error::{Error, Result};
use burrow_core::crdt::{self, CrdtDoc, CrdtKind};
use burrow_core::resolve::{ServerRow, add_increment, crdt_kind};
use burrow_core::{Column, Representation, Schema, Table, Value};
use rusqlite::{OptionalExtension, Transaction, params};

/// The key under which a converted CRDT update sits in an outbox op's JSON.
pub const CRDT_KEY: &str = "$crdt";

fn crdt_err(e: crdt::CrdtError) -> Error {
    Error::Corrupt(format!("CRDT document: {e}"))
}

/// Whether any column of the schema is a CRDT.
pub fn has_crdt(schema: &Schema) -> bool {
    schema
        .tables
        .values()
        .any(|t| t.columns.iter().any(|c| crdt_kind(&c.policy).is_some()))
}

/// The local document of a field and its peer id, if one exists.
fn load_doc(
    tx: &Transaction<'_>,
    table: &str,
    row_id: &str,
    col: &Column,
) -> Result<Option<(CrdtDoc, u64)>> {
    let Some(kind) = crdt_kind(&col.policy) else {
        return Ok(None);
    };
    let found: Option<(i64, Vec<u8>)> = tx
        .prepare_cached(
            "SELECT peer, doc FROM _burrow_crdt WHERE tbl = ?1 AND row_id = ?2 AND col = ?3",
        )?
        .query_row(params![table, row_id, col.name], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    found
        .map(|(peer, doc)| {
            CrdtDoc::load(kind, &doc, peer as u64)
                .map(|d| (d, peer as u64))
                .map_err(crdt_err)
        })
        .transpose()
}

/// Where a new document is born: converting the op with this outbox sequence, or importing
/// the server's document (then the local transaction counter at that moment).
#[derive(Debug, Clone, Copy)]
enum Birth {
    Op(i64),
    Import,
}

/// The local document of a field and its peer id, created (as a new peer) when missing.
fn doc_or_new(
    tx: &Transaction<'_>,
    table: &str,
    row_id: &str,
    col: &Column,
    kind: CrdtKind,
    birth: Birth,
) -> Result<(CrdtDoc, u64)> {
    if let Some(found) = load_doc(tx, table, row_id, col)? {
        return Ok(found);
    }
    // A fresh peer per document, from counters that only grow and survive a rebuild (op
    // sequences, the transaction counter), so a device never reuses loro op ids; never from
    // a clock, so a shifted device clock cannot change how concurrent edits interleave.
    let (client_id, local_tx): (String, i64) = tx.query_row(
        "SELECT client_id, tx FROM _burrow_local WHERE id = 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let (tag, n) = match birth {
        Birth::Op(seq) => ("op", seq),
        Birth::Import => ("tx", local_tx),
    };
    let peer = crdt::peer_id_for(
        &format!("{client_id}/{table}/{row_id}/{}/{tag}", col.name),
        n as u64,
    );
    Ok((CrdtDoc::new(kind, peer).map_err(crdt_err)?, peer))
}

fn save_doc(
    tx: &Transaction<'_>,
    table: &str,
    row_id: &str,
    col: &str,
    doc: &CrdtDoc,
    peer: u64,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO _burrow_crdt(tbl, row_id, col, peer, doc) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(tbl, row_id, col) DO UPDATE SET doc = excluded.doc",
    )?
    .execute(params![
        table,
        row_id,
        col,
        peer as i64,
        doc.export_all().map_err(crdt_err)?
    ])?;
    Ok(())
}

/// Converts the plain CRDT values of pending ops (all rows, or one row) into loro updates, in
/// outbox order.
pub fn convert_pending(
    tx: &Transaction<'_>,
    schema: &Schema,
    row: Option<(&str, &str)>,
) -> Result<()> {
    if !has_crdt(schema) {
        return Ok(());
    }
    let mut pending: Vec<(i64, String, String, i64, String)> = Vec::new();
    {
        let mut stmt = tx.prepare_cached(
            "SELECT seq, tbl, row_id, kind, data FROM _burrow_outbox
             WHERE ack_seq IS NULL AND staged = 0 AND data IS NOT NULL
               AND (?1 IS NULL OR (tbl = ?1 AND row_id = ?2))
               AND tbl IN (SELECT value FROM json_each(?3))
             ORDER BY seq",
        )?;
        let (t, r) = row.map_or((None, None), |(t, r)| (Some(t), Some(r)));
        // Only tables with CRDT columns: this runs before every upload batch.
        let crdt_tables: Vec<&str> = schema
            .tables
            .values()
            .filter(|t| t.columns.iter().any(|c| crdt_kind(&c.policy).is_some()))
            .map(|t| t.name.as_str())
            .collect();
        let tables = serde_json::to_string(&crdt_tables).unwrap_or_default();
        let mut rows = stmt.query(params![t, r, tables])?;
        while let Some(r) = rows.next()? {
            pending.push((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?));
        }
    }
    for (seq, tname, row_id, op_kind, data) in pending {
        let Some(table) = schema.table(&tname) else {
            continue;
        };
        let mut obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&data)
            .map_err(|e| Error::Corrupt(format!("outbox data of op {seq}: {e}")))?;
        let mut changed = false;
        for col in &table.columns {
            let Some(kind) = crdt_kind(&col.policy) else {
                continue;
            };
            let Some(plain) = obj.get(&col.name) else {
                continue;
            };
            if plain.get(CRDT_KEY).is_some() {
                continue; // already converted
            }
            let new_value =
                crate::sql_value::from_trigger_json(col.ty, plain).ok_or_else(|| {
                    Error::Corrupt(format!(
                        "outbox data of op {seq}: bad value for {}",
                        col.name
                    ))
                })?;
            if op_kind == burrow_core::OpKind::Insert.code() {
                // An insert starts a new life of the row (the server starts a fresh document
                // for a row re-created after a delete): never continue an old document.
                tx.prepare_cached(
                    "DELETE FROM _burrow_crdt WHERE tbl = ?1 AND row_id = ?2 AND col = ?3",
                )?
                .execute(params![tname, row_id, col.name])?;
            }
            let (mut doc, peer) = doc_or_new(tx, &tname, &row_id, col, kind, Birth::Op(seq))?;
            match doc.set_value(&new_value).map_err(crdt_err)? {
                Some(update) => {
                    obj.insert(
                        col.name.clone(),
                        serde_json::json!({ CRDT_KEY: hex::encode(update) }),
                    );
                }
                // The document already holds this value: nothing to send for the column.
                None => {
                    obj.remove(&col.name);
                }
            }
            save_doc(tx, &tname, &row_id, &col.name, &doc, peer)?;
            changed = true;
        }
        if changed {
            tx.prepare_cached("UPDATE _burrow_outbox SET data = ?2 WHERE seq = ?1")?
                .execute(params![seq, serde_json::Value::Object(obj).to_string()])?;
        }
    }
    Ok(())
}

/// Decodes a converted CRDT value of an outbox op.
pub fn decode_crdt_json(v: &serde_json::Value) -> Option<Value> {
    let hexed = v.get(CRDT_KEY)?.as_str()?;
    hex::decode(hexed).ok().map(Value::Blob)
}

/// Merges server document bytes into the local document of a field (after converting the
/// row's pending edits) and returns the value to show.
pub fn import_server_doc(
    tx: &Transaction<'_>,
    table: &Table,
    row_id: &str,
    col: &Column,
    bytes: &[u8],
) -> Result<Value> {
    let Some(kind) = crdt_kind(&col.policy) else {
        return Ok(Value::Null);
    };
    let (mut doc, peer) = doc_or_new(tx, &table.name, row_id, col, kind, Birth::Import)?;
    doc.import(bytes).map_err(crdt_err)?;
    save_doc(tx, &table.name, row_id, &col.name, &doc, peer)?;
    Ok(doc.value())
}

/// Sum of the increments to a counter column still in the outbox and not yet reflected in a
/// shadow value confirmed at `shadow_seq`.
fn pending_increments(
    tx: &Transaction<'_>,
    table: &str,
    row_id: &str,
    col: &Column,
    shadow_seq: u64,
) -> Result<Value> {
    let mut stmt = tx.prepare_cached(
        "SELECT json_extract(data, '$.' || ?3) FROM _burrow_outbox
         WHERE tbl = ?1 AND row_id = ?2 AND data IS NOT NULL
           AND (ack_seq IS NULL OR ack_seq > ?4) AND json_type(data, '$.' || ?3) IS NOT NULL",
    )?;
    let mut rows = stmt.query(params![table, row_id, col.name, shadow_seq as i64])?;
    let mut sum = Value::Null;
    while let Some(r) = rows.next()? {
        let v = crate::sql_value::from_sql(col.ty, r.get_ref(0)?);
        sum = add_increment(&sum, &v);
    }
    Ok(sum)
}

/// The value a merged column should show, from the shadow row (`None`: no server state).
/// `None` for columns that are not merged.
pub fn visible_value(
    tx: &Transaction<'_>,
    table: &Table,
    row_id: &str,
    col: &Column,
    shadow: Option<&ServerRow>,
) -> Result<Option<Value>> {
    match col.policy.representation() {
        Representation::Plain => Ok(None),
        Representation::Increment => {
            let field = shadow.and_then(|s| s.fields.get(&col.name));
            let base = field.map_or(Value::Null, |f| f.value.clone());
            let seq = field.map_or(0, |f| f.version.seq);
            let pending = pending_increments(tx, &table.name, row_id, col, seq)?;
            Ok(Some(if pending == Value::Null {
                base
            } else {
                add_increment(&base, &pending)
            }))
        }
        Representation::Crdt => {
            if let Some((doc, _)) = load_doc(tx, &table.name, row_id, col)? {
                return Ok(Some(doc.value()));
            }
            let kind = crdt_kind(&col.policy).unwrap_or(CrdtKind::Text);
            Ok(Some(
                match shadow
                    .and_then(|s| s.fields.get(&col.name))
                    .map(|f| &f.value)
                {
                    Some(Value::Blob(b)) => crdt::materialize(kind, b).map_err(crdt_err)?,
                    _ => Value::Null,
                },
            ))
        }
    }
}
