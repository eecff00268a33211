//! Poison ops: an op the server refused permanently sits in `_burrow_rejected` with its reason
//! and blocks nothing. The app can inspect it ([`Client::rejected_ops`]), send it again — as
//! it was or edited — ([`Client::retry_rejected`]), or drop it ([`Client::discard_rejected`]).

use crate::apply;
use crate::client::Client;
use crate::error::{Error, Result};
use burrow_core::conflict::CONFLICTS_TABLE;
use burrow_core::{OpKind, Value};

impl Client {
    /// Queues a refused op again, as a new op at the end of the outbox, with its original
    /// values or with `data` (a JSON object of columns, checked against the schema) instead,
    /// and shows those values in the row again. The other refused ops of its local
    /// transaction go with it, unchanged, in one new local transaction. Returns the new op's
    /// sequence.
    ///
    /// ```no_run
    /// # fn f(client: &burrow_client::Client) -> burrow_client::Result<()> {
    /// for op in client.rejected_ops()? {
    ///     if op.code == "wrong_type" {
    ///         let fixed = serde_json::json!({ "pieces": 3 });
    ///         client.retry_rejected(op.client_seq, fixed.as_object().cloned())?;
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn retry_rejected(
        &self,
        seq: u64,
        data: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<u64> {
        self.write_local(|tx, schema| {
            // The op and the rest of its refused local transaction go again together, in
            // their order, as one new local transaction (all-or-nothing as before).
            type Rejected = (i64, String, String, i64, Option<String>);
            let group: Vec<Rejected> = {
                let mut stmt = tx.prepare(
                    "SELECT seq, tbl, row_id, kind, data FROM _burrow_rejected
                     WHERE tx = (SELECT tx FROM _burrow_rejected WHERE seq = ?1) ORDER BY seq",
                )?;
                let rows = stmt.query_map([seq as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            if !group.iter().any(|(s, ..)| *s as u64 == seq) {
                return Err(Error::Invalid(format!("no rejected op {seq}")));
            }
            let mut edit = data;
            let mut new_seq = 0;
            for (old_seq, tname, row_id, kind, old_data) in group {
                let is_retried = old_seq as u64 == seq;
                // A refused closing of a conflict is closed again; any other op shows again.
                let table = if tname == CONFLICTS_TABLE {
                    None
                } else {
                    Some(schema.table(&tname).ok_or_else(|| {
                        Error::Invalid(format!(
                            "rejected op {old_seq}: table {tname} is not in the schema"
                        ))
                    })?)
                };
                let is_delete = kind == OpKind::Delete.code();
                if table.is_some() && is_retried && is_delete && edit.is_some() {
                    return Err(Error::Invalid(format!(
                        "rejected op {seq} is a delete: it carries no values to edit"
                    )));
                }
                let data = take_edit(is_retried, &mut edit, old_data);
                let fields = crate::outbox::decode_fields(schema, tname.clone(), data.clone())
                    .map_err(|why| Error::Invalid(format!("rejected op {old_seq}: {why}")))?;
                let priority = match table {
                    Some(t) => t.priority,
                    None => conflicted_priority(tx, schema, &row_id)?,
                };
                let appended = crate::outbox::append_op(
                    tx,
                    &tname,
                    &row_id,
                    kind,
                    data.as_deref(),
                    priority,
                    self.now_ms(),
                )?;
                if is_retried {
                    new_seq = appended;
                }
                tx.execute("DELETE FROM _burrow_rejected WHERE seq = ?1", [old_seq])?;
                match table {
                    Some(t) => show_again(tx, t, &row_id, is_delete, &fields)?,
                    None => self.mark_closed(tx, &row_id, data.as_deref())?,
                }
            }
            Ok(new_seq)
        })
    }

    /// Drops a refused op for good (the row already shows the server's values).
    pub fn discard_rejected(&self, seq: u64) -> Result<()> {
        self.write_local(|tx, _| {
            let n = tx.execute("DELETE FROM _burrow_rejected WHERE seq = ?1", [seq as i64])?;
            if n == 0 {
                return Err(Error::Invalid(format!("no rejected op {seq}")));
            }
            Ok(())
        })
    }
}

/// The upload lane of a conflict's closing: its conflicted table's (normal when the record is
/// gone or its table unknown).
fn conflicted_priority(
    tx: &rusqlite::Transaction<'_>,
    schema: &burrow_core::Schema,
    conflict_id: &str,
) -> Result<burrow_core::Priority> {
    Ok(crate::client::local_record(tx, conflict_id)?
        .and_then(|e| schema.table(&e.table).map(|t| t.priority))
        .unwrap_or(burrow_core::Priority::Normal))
}

/// The data a re-queued op carries: the app's edit for the retried op itself (taken from
/// `edit`), its original data otherwise.
fn take_edit(
    is_retried: bool,
    edit: &mut Option<serde_json::Map<String, serde_json::Value>>,
    old_data: Option<String>,
) -> Option<String> {
    match edit.take_if(|_| is_retried) {
        Some(obj) => Some(serde_json::Value::Object(obj).to_string()),
        None => old_data,
    }
}

/// Shows a re-queued op's values in the row again (its rejection had restored the server's).
fn show_again(
    tx: &rusqlite::Transaction<'_>,
    table: &burrow_core::Table,
    row_id: &str,
    is_delete: bool,
    fields: &[burrow_core::FieldValue],
) -> Result<()> {
    tx.execute("UPDATE _burrow_local SET applying = 1 WHERE id = 1", [])?;
    if is_delete {
        apply::delete_visible(tx, table, row_id)?;
    } else {
        let merged = |f: &&burrow_core::FieldValue| {
            table
                .column(&f.column)
                .is_some_and(|c| c.policy.is_merged())
        };
        let plain: Vec<(&str, &Value)> = fields
            .iter()
            .filter(|f| !merged(f))
            .map(|f| (f.column.as_str(), &f.value))
            .collect();
        apply::upsert_visible(tx, table, row_id, &plain)?;
        let merged: std::collections::BTreeSet<String> = fields
            .iter()
            .filter(merged)
            .map(|f| f.column.clone())
            .collect();
        if !merged.is_empty() {
            apply::restore_visible(tx, table, row_id, Some(&merged))?;
        }
    }
    tx.execute("UPDATE _burrow_local SET applying = 0 WHERE id = 1", [])?;
    Ok(())
}
