//! Applying what the server sends: row changes into the shadow and the visible app tables
//! (pending local ops stay visible on top: the rebase), op outcomes into the outbox, and the
//! settling of acknowledged ops once the cursor covers their results.

use crate::ddl::q;
use crate::error::{Error, Result};
use crate::sql_value::SqlParam;
use burrow_core::conflict::{CONFLICTS_TABLE, ConflictEntry};
use burrow_core::resolve::{FieldVersion, ServerRow, StoredField, crdt_kind};
use burrow_core::{Hlc, RowChange, Schema, Table, Value};
use burrow_proto::convert::{server_row_from_parts, stored_fields_to_bytes};
use rusqlite::{OptionalExtension, Transaction, params};
use std::collections::{BTreeMap, BTreeSet};

/// Columns of a row that local ops still override.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Mask {
    /// A local delete is pending: the row stays deleted locally.
    pub all: bool,
    /// Columns with pending local values.
    pub columns: BTreeSet<String>,
}

impl Mask {
    /// Whether nothing is masked.
    pub fn is_empty(&self) -> bool {
        !self.all && self.columns.is_empty()
    }
}

/// Columns set by an op's trigger JSON.
pub fn data_columns(data: Option<&str>) -> Result<BTreeSet<String>> {
    let Some(data) = data else {
        return Ok(BTreeSet::new());
    };
    let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(data)
        .map_err(|e| Error::Corrupt(format!("outbox data is not a JSON object: {e}")))?;
    Ok(v.into_iter().map(|(k, _)| k).collect())
}

/// What the outbox (pending and acknowledged-but-unsettled ops) masks for one row.
pub fn row_mask(tx: &Transaction<'_>, table: &str, row_id: &str) -> Result<Mask> {
    let mut stmt = tx.prepare_cached(
        "SELECT kind, data FROM _burrow_outbox WHERE tbl = ?1 AND row_id = ?2 ORDER BY seq",
    )?;
    let mut rows = stmt.query(params![table, row_id])?;
    let mut mask = Mask::default();
    while let Some(r) = rows.next()? {
        let kind: i64 = r.get(0)?;
        let data: Option<String> = r.get(1)?;
        if kind == burrow_core::OpKind::Delete.code() {
            mask.all = true;
        } else {
            // A later insert after a pending delete brings the row back locally.
            if kind == burrow_core::OpKind::Insert.code() {
                mask.all = false;
            }
            mask.columns.extend(data_columns(data.as_deref())?);
        }
    }
    Ok(mask)
}

/// Reads the shadow (last server-confirmed state) of a row; a tombstone comes back with
/// `deleted` set, so later stale writes cannot resurrect it.
pub fn read_shadow(tx: &Transaction<'_>, table: &str, row_id: &str) -> Result<Option<ServerRow>> {
    let raw: Option<(i64, bool, Vec<u8>)> = tx
        .prepare_cached(
            "SELECT seq, deleted, fields FROM _burrow_shadow WHERE tbl = ?1 AND id = ?2",
        )?
        .query_row(params![table, row_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    raw.map(|(seq, deleted, blob)| {
        server_row_from_parts(deleted, seq as u64, 0, &blob)
            .map_err(|e| Error::Corrupt(format!("shadow row {table}/{row_id}: {e}")))
    })
    .transpose()
}

/// The live shadow row, if any (a tombstone counts as none).
fn live_shadow(tx: &Transaction<'_>, table: &str, row_id: &str) -> Result<Option<ServerRow>> {
    Ok(read_shadow(tx, table, row_id)?.filter(|r| !r.deleted))
}

fn write_shadow(tx: &Transaction<'_>, table: &str, row_id: &str, row: &ServerRow) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO _burrow_shadow(tbl, id, seq, deleted, fields) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(tbl, id) DO UPDATE SET seq = excluded.seq, deleted = excluded.deleted,
           fields = excluded.fields",
    )?
    .execute(params![
        table,
        row_id,
        row.seq as i64,
        row.deleted,
        stored_fields_to_bytes(row)
    ])?;
    Ok(())
}

/// Records that the server deleted the row at `seq`.
fn write_tombstone(tx: &Transaction<'_>, table: &str, row_id: &str, seq: u64) -> Result<()> {
    let tomb = ServerRow {
        deleted: true,
        seq,
        ..ServerRow::default()
    };
    write_shadow(tx, table, row_id, &tomb)
}

pub(crate) fn delete_visible(tx: &Transaction<'_>, table: &Table, row_id: &str) -> Result<()> {
    tx.prepare_cached(&format!("DELETE FROM {} WHERE \"id\" = ?1", q(&table.name)))?
        .execute([row_id])?;
    Ok(())
}

/// Appends `name` quoted as an SQL identifier.
fn push_ident(sql: &mut String, name: &str) {
    sql.push('"');
    for ch in name.chars() {
        if ch == '"' {
            sql.push('"');
        }
        sql.push(ch);
    }
    sql.push('"');
}

fn bind<'a>(row_id: &'a &'a str, values: &'a [SqlParam<'a>]) -> Vec<&'a dyn rusqlite::ToSql> {
    let mut params: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(values.len() + 1);
    params.push(row_id);
    params.extend(values.iter().map(|p| p as &dyn rusqlite::ToSql));
    params
}

/// `UPDATE` of some columns of an existing visible row; returns rows changed (0 or 1).
pub(crate) fn update_visible(
    tx: &Transaction<'_>,
    table: &Table,
    row_id: &str,
    values: &[(&str, &Value)],
) -> Result<usize> {
    if values.is_empty() {
        return Ok(0);
    }
    let mut sql = String::with_capacity(64 + values.len() * 24);
    sql.push_str("UPDATE ");
    push_ident(&mut sql, &table.name);
    sql.push_str(" SET ");
    for (i, (c, _)) in values.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        push_ident(&mut sql, c);
        sql.push_str(&format!(" = ?{}", i + 2));
    }
    sql.push_str(" WHERE \"id\" = ?1");
    let wrapped: Vec<SqlParam<'_>> = values.iter().map(|(_, v)| SqlParam(v)).collect();
    Ok(tx
        .prepare_cached(&sql)?
        .execute(bind(&row_id, &wrapped).as_slice())?)
}

/// Inserts the visible row with `values`; if it exists, sets those columns (an upsert).
pub(crate) fn upsert_visible(
    tx: &Transaction<'_>,
    table: &Table,
    row_id: &str,
    values: &[(&str, &Value)],
) -> Result<()> {
    let mut sql = String::with_capacity(96 + values.len() * 40);
    sql.push_str("INSERT INTO ");
    push_ident(&mut sql, &table.name);
    sql.push_str(" (\"id\"");
    for (c, _) in values {
        sql.push_str(", ");
        push_ident(&mut sql, c);
    }
    sql.push_str(") VALUES (?1");
    for i in 0..values.len() {
        sql.push_str(&format!(", ?{}", i + 2));
    }
    sql.push_str(") ON CONFLICT(\"id\") DO ");
    if values.is_empty() {
        sql.push_str("NOTHING");
    } else {
        sql.push_str("UPDATE SET ");
        for (i, (c, _)) in values.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            push_ident(&mut sql, c);
            sql.push_str(" = excluded.");
            push_ident(&mut sql, c);
        }
    }
    let wrapped: Vec<SqlParam<'_>> = values.iter().map(|(_, v)| SqlParam(v)).collect();
    tx.prepare_cached(&sql)?
        .execute(bind(&row_id, &wrapped).as_slice())?;
    Ok(())
}

/// Sets `values` on the visible row; when the row does not exist, inserts it with `all`.
fn write_columns(
    tx: &Transaction<'_>,
    table: &Table,
    row_id: &str,
    values: &[(&str, &Value)],
    all: &[(&str, &Value)],
) -> Result<()> {
    if update_visible(tx, table, row_id, values)? == 0 {
        upsert_visible(tx, table, row_id, all)?;
    }
    Ok(())
}

/// Writes the shadow's values into the visible row for the columns `only` (all when `None`),
/// skipping masked columns. Used after migrations and when settling ops.
pub fn write_visible(
    tx: &Transaction<'_>,
    table: &Table,
    row_id: &str,
    shadow: &ServerRow,
    only: Option<&BTreeSet<String>>,
) -> Result<()> {
    let mask = row_mask(tx, &table.name, row_id)?;
    if mask.all {
        return Ok(());
    }
    let null = Value::Null;
    let mut merged_values: Vec<(&str, Value)> = Vec::new();
    for c in table.columns.iter().filter(|c| c.policy.is_merged()) {
        if only.is_none_or(|o| o.contains(&c.name))
            && let Some(v) = crate::merged::visible_value(tx, table, row_id, c, Some(shadow))?
        {
            merged_values.push((c.name.as_str(), v));
        }
    }
    let pick = |c: &&burrow_core::Column| !mask.columns.contains(&c.name) && !c.policy.is_merged();
    let mut values: Vec<(&str, &Value)> = table
        .columns
        .iter()
        .filter(pick)
        .filter(|c| only.is_none_or(|o| o.contains(&c.name)))
        .map(|c| {
            (
                c.name.as_str(),
                shadow
                    .fields
                    .get(&c.name)
                    .map(|f| &f.value)
                    .unwrap_or(&null),
            )
        })
        .collect();
    let mut all: Vec<(&str, &Value)> = table
        .columns
        .iter()
        .filter(pick)
        .filter_map(|c| {
            shadow
                .fields
                .get(&c.name)
                .map(|f| (c.name.as_str(), &f.value))
        })
        .collect();
    for (c, v) in &merged_values {
        values.push((c, v));
        all.push((c, v));
    }
    write_columns(tx, table, row_id, &values, &all)
}

/// Applies one downloaded row change: merges it into the shadow (a field only moves forward
/// in sequence) and shows it in the app table except where local ops are pending.
pub fn apply_change(
    tx: &Transaction<'_>,
    schema: &Schema,
    change: &RowChange,
    outbox_empty: bool,
) -> Result<()> {
    if change.table == CONFLICTS_TABLE {
        return store_conflict_record(tx, change);
    }
    let table = schema.table(&change.table);
    if change.evicted {
        // The row left this user's scope: forget it (no tombstone: it may come back), keep
        // pending ops on it (they upload, or come back rejected with the reason).
        tx.prepare_cached("DELETE FROM _burrow_shadow WHERE tbl = ?1 AND id = ?2")?
            .execute(params![change.table, change.row_id])?;
        tx.prepare_cached("DELETE FROM _burrow_crdt WHERE tbl = ?1 AND row_id = ?2")?
            .execute(params![change.table, change.row_id])?;
        if let Some(t) = table {
            delete_visible(tx, t, &change.row_id)?;
        }
        return Ok(());
    }
    let shadow = read_shadow(tx, &change.table, &change.row_id)?;
    if shadow.as_ref().is_some_and(|s| s.seq > change.seq) {
        return Ok(()); // older than what this device already holds
    }
    if change.deleted {
        write_tombstone(tx, &change.table, &change.row_id, change.seq)?;
        if row_mask(tx, &change.table, &change.row_id)?.is_empty() {
            // The row's life ended: a re-created row starts fresh CRDT documents.
            tx.prepare_cached("DELETE FROM _burrow_crdt WHERE tbl = ?1 AND row_id = ?2")?
                .execute(params![change.table, change.row_id])?;
        }
        if let Some(t) = table {
            delete_visible(tx, t, &change.row_id)?;
        }
        return Ok(());
    }
    // A tombstone at or after this change wins; a newer live change re-creates the row.
    if shadow
        .as_ref()
        .is_some_and(|s| s.deleted && s.seq >= change.seq)
    {
        return Ok(());
    }
    let shadow = shadow.filter(|s| !s.deleted);
    let known_before = shadow.is_some();
    let mut row = shadow.unwrap_or_default();
    let mut changed: Vec<&str> = Vec::new();
    for f in &change.fields {
        let newer = row
            .fields
            .get(&f.column)
            .is_none_or(|cur| f.seq > cur.version.seq);
        if newer {
            row.fields.insert(
                f.column.clone(),
                StoredField {
                    value: f.value.clone(),
                    version: FieldVersion {
                        seq: f.seq,
                        hlc: Hlc::ZERO,
                        replica: 0,
                    },
                    rank: Value::Null,
                },
            );
            changed.push(&f.column);
        }
    }
    row.seq = row.seq.max(change.seq);
    write_shadow(tx, &change.table, &change.row_id, &row)?;
    let Some(table) = table else { return Ok(()) };
    // Merged columns show server state combined with pending local edits, whatever the mask.
    let merged_values = merged_visible(tx, schema, table, &change.row_id, &row, &changed)?;
    let mask = if outbox_empty {
        Mask::default()
    } else {
        row_mask(tx, &table.name, &change.row_id)?
    };
    if mask.all {
        return Ok(());
    }
    let visible = |c: &str| {
        table.column(c).is_some_and(|col| !col.policy.is_merged()) && !mask.columns.contains(c)
    };
    let mut values: Vec<(&str, &Value)> = changed
        .iter()
        .filter(|c| visible(c))
        .filter_map(|c| row.fields.get(*c).map(|f| (*c, &f.value)))
        .collect();
    let mut all: Vec<(&str, &Value)> = row
        .fields
        .iter()
        .filter(|(c, _)| visible(c))
        .map(|(c, f)| (c.as_str(), &f.value))
        .collect();
    for (c, v) in &merged_values {
        values.push((c, v));
        all.push((c, v));
    }
    if known_before {
        write_columns(tx, table, &change.row_id, &values, &all)
    } else {
        // A row new to this device: one upsert (it exists locally only if the app created it).
        upsert_visible(tx, table, &change.row_id, &all)
    }
}

/// The values to show for the merged columns among `changed` (a counter: the shadow total
/// plus pending increments; a CRDT: the local document after importing the server's).
fn merged_visible<'c>(
    tx: &Transaction<'_>,
    schema: &Schema,
    table: &Table,
    row_id: &str,
    row: &ServerRow,
    changed: &[&'c str],
) -> Result<Vec<(&'c str, Value)>> {
    let mut out = Vec::new();
    let mut converted = false;
    for c in changed {
        let Some(col) = table.column(c).filter(|col| col.policy.is_merged()) else {
            continue;
        };
        let value = match (crdt_kind(&col.policy), row.fields.get(*c).map(|f| &f.value)) {
            (Some(_), Some(Value::Blob(bytes))) => {
                if !converted {
                    // Pending edits are diffed against the text the user saw, before merging.
                    crate::merged::convert_pending(tx, schema, Some((&table.name, row_id)))?;
                    converted = true;
                }
                crate::merged::import_server_doc(tx, table, row_id, col, bytes)?
            }
            _ => crate::merged::visible_value(tx, table, row_id, col, Some(row))?
                .unwrap_or(Value::Null),
        };
        out.push((*c, value));
    }
    Ok(out)
}

/// Keeps a conflict record the server sent in `_burrow_conflicts`.
fn store_conflict_record(tx: &Transaction<'_>, change: &RowChange) -> Result<()> {
    if change.deleted {
        tx.prepare_cached("DELETE FROM _burrow_conflicts WHERE id = ?1")?
            .execute([&change.row_id])?;
        return Ok(());
    }
    let Some(e) = ConflictEntry::from_fields(
        &change.row_id,
        change.seq,
        change.fields.iter().map(|f| (f.column.as_str(), &f.value)),
    ) else {
        return Err(Error::Protocol(format!(
            "conflict record {} is malformed",
            change.row_id
        )));
    };
    tx.prepare_cached(
        "INSERT INTO _burrow_conflicts(id, seq, status, tbl, row_id, col, record)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, status = excluded.status,
           record = excluded.record WHERE excluded.seq >= _burrow_conflicts.seq",
    )?
    .execute(params![
        e.id,
        e.seq as i64,
        e.status.as_str(),
        e.table,
        e.row_id,
        e.column,
        serde_json::to_string(&e).map_err(|err| Error::Corrupt(err.to_string()))?
    ])?;
    Ok(())
}

/// Restores the visible row to the server-confirmed state for `columns` (all when `None`)
/// after the ops that overrode them left the outbox.
pub fn restore_visible(
    tx: &Transaction<'_>,
    table: &Table,
    row_id: &str,
    columns: Option<&BTreeSet<String>>,
) -> Result<()> {
    match live_shadow(tx, &table.name, row_id)? {
        Some(shadow) => write_visible(tx, table, row_id, &shadow, columns),
        None => {
            if row_mask(tx, &table.name, row_id)?.is_empty() {
                delete_visible(tx, table, row_id)
            } else if row_shown(tx, table, row_id)? {
                // The server holds no such row, but later pending ops on it remain: show what
                // they will make of it (their values, NULL for the rest), as the server will.
                write_visible(tx, table, row_id, &ServerRow::default(), columns)
            } else {
                // Not shown (it left this device's scope): pending ops do not bring it back.
                Ok(())
            }
        }
    }
}

/// What the client learnt from the server's verdict on one of its own ops.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnResult {
    /// Table of the op.
    pub table: String,
    /// Row of the op.
    pub row_id: String,
    /// Columns whose value in the shadow is newer than the op's own change (a later change
    /// from elsewhere already arrived): the visible row must show the shadow for them.
    pub stale_columns: BTreeSet<String>,
    /// The whole row is newer in the shadow (deleted or re-created since): show the shadow.
    pub restore_all: bool,
    /// The op set merged columns (counters, CRDTs): their server value arrives by download,
    /// so the op stays (acknowledged) until the cursor covers its change.
    pub merged: bool,
}

/// Whether the app table holds the row.
fn row_visible(tx: &Transaction<'_>, schema: &Schema, table: &str, row_id: &str) -> Result<bool> {
    match schema.table(table) {
        Some(t) => row_shown(tx, t, row_id),
        None => Ok(false),
    }
}

/// Whether the app table `table` holds the row.
fn row_shown(tx: &Transaction<'_>, table: &Table, row_id: &str) -> Result<bool> {
    Ok(tx
        .prepare_cached(&format!(
            "SELECT EXISTS(SELECT 1 FROM {} WHERE \"id\" = ?1)",
            crate::ddl::q(&table.name)
        ))?
        .query_row([row_id], |r| r.get(0))?)
}

/// Records in the shadow the values an op made on the server: its columns except `lost`, at
/// sequence `change_seq` (never over a newer field). A delete leaves a tombstone.
/// Returns `None` when the op is no longer in the outbox (or was only staged).
pub fn record_own_result(
    tx: &Transaction<'_>,
    schema: &Schema,
    client_seq: u64,
    change_seq: u64,
    lost: &[String],
) -> Result<Option<OwnResult>> {
    type OutboxRow = (String, String, i64, Option<String>, Option<i64>);
    let found: Option<OutboxRow> = tx
        .prepare_cached(
            "SELECT tbl, row_id, kind, data, ack_seq FROM _burrow_outbox WHERE seq = ?1",
        )?
        .query_row([client_seq as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    let Some((table, row_id, kind, data, ack_seq)) = found else {
        return Ok(None);
    };
    if ack_seq.is_some() {
        return Ok(None);
    }
    let mut own = OwnResult {
        table,
        row_id,
        stale_columns: BTreeSet::new(),
        restore_all: false,
        merged: false,
    };
    let shadow = read_shadow(tx, &own.table, &own.row_id)?;
    let shadow_seq = shadow.as_ref().map_or(0, |s| s.seq);
    if kind == burrow_core::OpKind::Delete.code() {
        if !lost.is_empty() {
            own.restore_all = true; // the delete lost to a concurrent update (update_wins)
        } else if shadow_seq > change_seq && shadow.as_ref().is_some_and(|s| !s.deleted) {
            own.restore_all = true; // re-created elsewhere after this delete
        } else {
            write_tombstone(tx, &own.table, &own.row_id, change_seq.max(shadow_seq))?;
        }
        return Ok(Some(own));
    }
    if change_seq == 0 {
        return Ok(Some(own));
    }
    if shadow.is_none() && !row_visible(tx, schema, &own.table, &own.row_id)? {
        // A write to a row this device does not show: it left the device's scope (evicted),
        // or a later local delete hides it. Applied on the server, not held here (a pending
        // delete records its tombstone when answered).
        return Ok(Some(own));
    }
    if shadow
        .as_ref()
        .is_some_and(|s| s.deleted && s.seq > change_seq)
    {
        own.restore_all = true; // deleted after this write: the write must not resurrect it
        return Ok(Some(own));
    }
    let Some(t) = schema.table(&own.table) else {
        return Ok(Some(own));
    };
    let obj: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(data.as_deref().unwrap_or("{}"))
            .map_err(|e| Error::Corrupt(format!("outbox data of op {client_seq}: {e}")))?;
    let mut row = shadow.filter(|s| !s.deleted).unwrap_or_default();
    for (column, json) in obj {
        if lost.contains(&column) {
            continue;
        }
        let Some(col) = t.column(&column) else {
            continue;
        };
        if col.policy.is_merged() {
            own.merged = true;
            continue; // the server's merged value arrives by download
        }
        let newer_known = row
            .fields
            .get(&column)
            .is_some_and(|f| f.version.seq > change_seq);
        if newer_known {
            own.stale_columns.insert(column);
            continue;
        }
        let value = crate::sql_value::from_trigger_json(col.ty, &json).ok_or_else(|| {
            Error::Corrupt(format!(
                "outbox data of op {client_seq}: bad value for {column}"
            ))
        })?;
        row.fields.insert(
            column,
            StoredField {
                value,
                version: FieldVersion {
                    seq: change_seq,
                    hlc: Hlc::ZERO,
                    replica: 0,
                },
                rank: Value::Null,
            },
        );
    }
    row.seq = row.seq.max(change_seq);
    write_shadow(tx, &own.table, &own.row_id, &row)?;
    Ok(Some(own))
}

/// Removes acknowledged ops whose results the cursor now covers, and shows the server's
/// resolved values for the fields they had overridden. Returns how many ops settled.
pub fn settle(tx: &Transaction<'_>, schema: &Schema, applied_through: u64) -> Result<u64> {
    let mut touched: BTreeMap<(String, String), Option<BTreeSet<String>>> = BTreeMap::new();
    let mut count = 0;
    {
        let mut stmt = tx.prepare_cached(
            "SELECT tbl, row_id, kind, data FROM _burrow_outbox
             WHERE ack_seq IS NOT NULL AND ack_seq <= ?1",
        )?;
        let mut rows = stmt.query([applied_through as i64])?;
        while let Some(r) = rows.next()? {
            count += 1;
            let key: (String, String) = (r.get(0)?, r.get(1)?);
            let kind: i64 = r.get(2)?;
            let data: Option<String> = r.get(3)?;
            let entry = touched.entry(key).or_insert_with(|| Some(BTreeSet::new()));
            if kind == burrow_core::OpKind::Delete.code() {
                *entry = None;
            } else if let Some(cols) = entry {
                cols.extend(data_columns(data.as_deref())?);
            }
        }
    }
    if count == 0 {
        return Ok(0);
    }
    tx.prepare_cached("DELETE FROM _burrow_outbox WHERE ack_seq IS NOT NULL AND ack_seq <= ?1")?
        .execute([applied_through as i64])?;
    for ((tname, row_id), cols) in touched {
        if let Some(table) = schema.table(&tname) {
            restore_visible(tx, table, &row_id, cols.as_ref())?;
        }
    }
    Ok(count)
}
