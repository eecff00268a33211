//! Selective sync in the SQLite store (docs/sync-rules.md). Each row is filed under the
//! buckets the sync rules compute from its own columns (`bucket_rows`, indexed by
//! `(bucket, seq)`); parameter lookups read `lookup_index`; the bucket sets handed to clients
//! are kept by hash (`scopes`). A pull reads only the requester's buckets, merged in sequence
//! order, so serving a user costs in proportion to their rows and changes.
//!
//! A client's cursor names the set it holds (`scope`). When its grants differ, a scope change
//! runs in paged phases (`ScopeChange`): rows of buckets it lost (and held by no bucket it
//! keeps) are sent as evictions, then rows of new buckets up to the cursor are caught up whole,
//! then the delta continues. A change interrupted by new grants restarts from what the client
//! may hold.

use super::{PullRequest, ScopePosition, ScopeRequest};
use crate::error::StoreError;
use burrow_core::Value;
use burrow_core::hash::Fnv64;
use burrow_core::resolve::ServerRow;
use burrow_core::rules::{BucketKey, EvalContext, Lookup, LookupError, SyncRules};
use burrow_core::{RowChange, Schema};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashSet};

/// Tables of the selective-sync index.
pub(crate) const SCOPE_SQL: &str = "
CREATE TABLE IF NOT EXISTS bucket_rows (
  bucket TEXT NOT NULL,
  tbl TEXT NOT NULL,
  id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  removed INTEGER NOT NULL,
  added INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (bucket, tbl, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS bucket_rows_by_seq ON bucket_rows(bucket, seq);
CREATE INDEX IF NOT EXISTS bucket_rows_by_row ON bucket_rows(tbl, id);
CREATE TABLE IF NOT EXISTS lookup_index (
  tbl TEXT NOT NULL,
  col TEXT NOT NULL,
  value TEXT NOT NULL,
  id TEXT NOT NULL,
  PRIMARY KEY (tbl, col, value, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS lookup_index_by_row ON lookup_index(tbl, id);
CREATE TABLE IF NOT EXISTS scopes (hash INTEGER PRIMARY KEY, buckets TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS rows_by_tbl_seq ON rows(tbl, seq);
";

/// Brings a store created before `bucket_rows.added` existed up to date.
pub(crate) fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let has_added: bool = conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM pragma_table_info('bucket_rows') WHERE name = 'added')",
        [],
        |r| r.get(0),
    )?;
    if !has_added {
        conn.execute_batch(
            "ALTER TABLE bucket_rows ADD COLUMN added INTEGER NOT NULL DEFAULT 0;
             DELETE FROM meta WHERE key = 'rules_hash';",
        )?;
    }
    Ok(())
}

/// A value as `lookup_index` keys it, normalised by the column's type so a claim `'42'`
/// finds the integer 42. `None` for NULL and values that cannot match.
pub(crate) fn index_key(ty: Option<burrow_core::ColumnType>, v: &Value) -> Option<String> {
    use burrow_core::ColumnType as T;
    let numeric = |v: &Value| -> Option<String> {
        match v {
            Value::Integer(i) => Some(format!("n:{i}")),
            Value::Real(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                Some(format!("n:{}", *f as i64))
            }
            Value::Real(f) => Some(format!("n:{f}")),
            Value::Text(s) => {
                if let Ok(i) = s.trim().parse::<i64>() {
                    Some(format!("n:{i}"))
                } else {
                    s.trim().parse::<f64>().ok().map(|f| {
                        if f.fract() == 0.0 && f.abs() < 9.0e15 {
                            format!("n:{}", f as i64)
                        } else {
                            format!("n:{f}")
                        }
                    })
                }
            }
            Value::Bool(b) => Some(format!("n:{}", i64::from(*b))),
            _ => None,
        }
    };
    match (ty, v) {
        (_, Value::Null) => None,
        (Some(T::Integer | T::Real | T::Bool), v) => numeric(v),
        (_, Value::Text(s)) | (_, Value::Json(s)) => Some(format!("t:{s}")),
        (_, Value::Integer(i)) => Some(format!("t:{i}")),
        (_, Value::Real(f)) => Some(format!("t:{f}")),
        (_, Value::Bool(b)) => Some(format!("t:{b}")),
        (_, Value::Blob(b)) => Some(format!("x:{}", hex::encode(b))),
    }
}

/// A row's value of `column` (`id` included) as the rules see it.
fn row_value(row_id: &str, row: &ServerRow, column: &str) -> Option<Value> {
    if column == burrow_core::schema::ID_COLUMN {
        return Some(Value::Text(row_id.to_string()));
    }
    row.fields.get(column).map(|f| f.value.clone())
}

/// Files a row that just changed (at `seq`) under its buckets and lookup keys. A deleted row
/// stays in the buckets it was in (so holders receive the delete) and leaves the lookups.
#[allow(clippy::too_many_arguments)]
pub(crate) fn index_row(
    tx: &Connection,
    rules: &SyncRules,
    schema: &Schema,
    table: &str,
    row_id: &str,
    row: &ServerRow,
    seq: u64,
    touched: &mut Option<BTreeSet<String>>,
) -> Result<(), StoreError> {
    if rules.lookup_tables().contains(table) {
        // Anyone's grants may change: every live connection is poked.
        *touched = None;
    }
    let mut note = |b: &BucketKey| {
        if let Some(t) = touched.as_mut() {
            t.insert(b.0.clone());
        }
    };
    if row.deleted {
        for b in present_buckets(tx, table, row_id)? {
            note(&b);
        }
        tx.prepare_cached(
            "UPDATE bucket_rows SET seq = ?3 WHERE tbl = ?1 AND id = ?2 AND removed = 0",
        )?
        .execute(params![table, row_id, seq as i64])?;
    } else {
        let get = |c: &str| row_value(row_id, row, c);
        let new: BTreeSet<BucketKey> = rules.row_buckets(table, &get).into_iter().collect();
        let old = present_buckets(tx, table, row_id)?;
        for b in new.iter().chain(old.iter()) {
            note(b);
        }
        for b in &new {
            tx.prepare_cached(
                "INSERT INTO bucket_rows(bucket, tbl, id, seq, removed, added) VALUES (?1, ?2, ?3, ?4, 0, ?4)
                 ON CONFLICT(bucket, tbl, id) DO UPDATE SET seq = excluded.seq, removed = 0,
                   added = CASE WHEN bucket_rows.removed = 1 THEN excluded.seq ELSE bucket_rows.added END",
            )?
            .execute(params![b.0, table, row_id, seq as i64])?;
        }
        for b in old.iter().filter(|b| !new.contains(*b)) {
            tx.prepare_cached(
                "UPDATE bucket_rows SET seq = ?4, removed = 1 WHERE bucket = ?1 AND tbl = ?2 AND id = ?3",
            )?
            .execute(params![b.0, table, row_id, seq as i64])?;
        }
    }
    let columns = lookup_columns(rules, table);
    if !columns.is_empty() {
        tx.prepare_cached("DELETE FROM lookup_index WHERE tbl = ?1 AND id = ?2")?
            .execute(params![table, row_id])?;
        if !row.deleted {
            let t = schema.table(table);
            for c in columns {
                let ty = t.and_then(|t| t.column(&c)).map(|col| col.ty);
                let ty = if c == burrow_core::schema::ID_COLUMN {
                    Some(burrow_core::ColumnType::Text)
                } else {
                    ty
                };
                if let Some(key) = row_value(row_id, row, &c).and_then(|v| index_key(ty, &v)) {
                    tx.prepare_cached(
                        "INSERT OR IGNORE INTO lookup_index(tbl, col, value, id) VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(params![table, c, key, row_id])?;
                }
            }
        }
    }
    Ok(())
}

/// The columns of `table` that parameter lookups filter on.
fn lookup_columns(rules: &SyncRules, table: &str) -> BTreeSet<String> {
    rules
        .lookup_indexes()
        .iter()
        .filter(|(t, _)| t == table)
        .flat_map(|(_, cols)| cols.iter().cloned())
        .collect()
}

fn present_buckets(
    tx: &Connection,
    table: &str,
    row_id: &str,
) -> Result<BTreeSet<BucketKey>, StoreError> {
    let mut stmt = tx.prepare_cached(
        "SELECT bucket FROM bucket_rows WHERE tbl = ?1 AND id = ?2 AND removed = 0",
    )?;
    let rows = stmt.query_map(params![table, row_id], |r| r.get::<_, String>(0))?;
    let mut out = BTreeSet::new();
    for b in rows {
        out.insert(BucketKey(b?));
    }
    Ok(out)
}

/// A hash of the rules (and the schema they were checked against), to notice a change
/// between starts.
pub(crate) fn fingerprint(rules: &SyncRules) -> u64 {
    let mut h = Fnv64::new();
    h.update(format!("{rules:?}").as_bytes());
    h.finish()
}

/// The first op of `ops` (one local transaction's new ops, in order) that the write
/// permissions forbid, with the reason. Each op is judged against the row as the ops before
/// it in the transaction leave it.
pub(crate) fn check_permissions(
    tx: &Connection,
    rules: &SyncRules,
    schema: &Schema,
    claims: &burrow_core::ClaimSet,
    now_ms: u64,
    replica: u64,
    ops: &[&burrow_core::Op],
) -> Result<Option<(u64, burrow_core::rules::Denied)>, StoreError> {
    use burrow_core::OpKind;
    use burrow_core::rules::Action;
    let ctx = EvalContext { claims, now_ms };
    // The rows as this transaction leaves them so far: `None` = absent or deleted.
    let mut overlay: BTreeMap<(String, String), Option<BTreeMap<String, Value>>> = BTreeMap::new();
    for op in ops {
        if op.table == burrow_core::conflict::CONFLICTS_TABLE {
            if let Some(denied) = check_resolution(tx, rules, schema, &ctx, replica, op, &overlay)?
            {
                return Ok(Some((op.client_seq, denied)));
            }
            continue;
        }
        let key = (op.table.clone(), op.row_id.clone());
        let old: Option<BTreeMap<String, Value>> = match overlay.get(&key) {
            Some(v) => v.clone(),
            None => {
                let stored = super::sqlite::read_row(tx, &op.table, &op.row_id)?;
                if let Some(tomb) = stored.as_ref().filter(|r| r.deleted) {
                    // A tombstone: deleting it again changes nothing, and a write its author
                    // had not seen loses to the delete (default `delete_wins`) — no effect
                    // either, so nothing to judge. Otherwise the write starts a new life:
                    // judged as an insert.
                    let delete_wins = schema.table(&op.table).is_none_or(|t| {
                        t.on_delete_conflict == burrow_core::schema::DeleteConflict::DeleteWins
                    });
                    let unseen = op.base_seq < tomb.seq && tomb.replica != replica;
                    if op.kind == OpKind::Delete || (unseen && delete_wins) {
                        continue;
                    }
                }
                stored
                    .filter(|r| !r.deleted)
                    .map(|r| r.fields.into_iter().map(|(k, f)| (k, f.value)).collect())
            }
        };
        let (action, new) = match op.kind {
            OpKind::Delete => (Action::Delete, None),
            OpKind::Insert | OpKind::Update => {
                let mut new = old.clone().unwrap_or_default();
                let policy = |c: &str| {
                    schema
                        .table(&op.table)
                        .and_then(|t| t.column(c))
                        .map(|col| col.policy.clone())
                };
                for f in &op.fields {
                    let merged = match (policy(&f.column), new.get(&f.column), &f.value) {
                        (
                            Some(burrow_core::schema::Policy::Counter),
                            Some(Value::Integer(a)),
                            Value::Integer(d),
                        ) => Value::Integer(a.saturating_add(*d)),
                        _ => f.value.clone(),
                    };
                    new.insert(f.column.clone(), merged);
                }
                let action = if old.is_some() {
                    Action::Update
                } else {
                    Action::Insert
                };
                (action, Some(new))
            }
        };
        let columns: Vec<&str> = op.fields.iter().map(|f| f.column.as_str()).collect();
        let old_get = old.as_ref().map(|r| row_getter(&op.row_id, r));
        let new_get = new.as_ref().map(|r| row_getter(&op.row_id, r));
        let mut lookup = StoreLookup { conn: tx, schema };
        let verdict = rules.check_write(
            &ctx,
            &op.table,
            action,
            &columns,
            old_get
                .as_ref()
                .map(|f| f as &dyn Fn(&str) -> Option<Value>),
            new_get
                .as_ref()
                .map(|f| f as &dyn Fn(&str) -> Option<Value>),
            &mut lookup,
        );
        drop((old_get, new_get));
        if let Err(denied) = verdict {
            return Ok(Some((op.client_seq, denied)));
        }
        overlay.insert(key, new);
    }
    Ok(None)
}

/// A column getter over a row's values, with `id` as the row id (what rules read).
fn row_getter<'r>(
    row_id: &'r str,
    row: &'r BTreeMap<String, Value>,
) -> impl Fn(&str) -> Option<Value> + 'r {
    move |c: &str| {
        if c == burrow_core::schema::ID_COLUMN {
            Some(Value::Text(row_id.to_string()))
        } else {
            row.get(c).cloned()
        }
    }
}

/// Who may close an open conflict record: one of the devices involved in it, and — when its
/// row exists — only a user who may update the conflicted column of that row as the
/// transaction leaves it (the resolving transaction's own write is judged as a write).
/// Closing an unknown or already resolved record has no effect and is not judged.
#[allow(clippy::too_many_arguments)]
fn check_resolution(
    tx: &Connection,
    rules: &SyncRules,
    schema: &Schema,
    ctx: &EvalContext,
    replica: u64,
    op: &burrow_core::Op,
    overlay: &BTreeMap<(String, String), Option<BTreeMap<String, Value>>>,
) -> Result<Option<burrow_core::rules::Denied>, StoreError> {
    use burrow_core::conflict::ConflictStatus;
    let Some((entry, audience)) = super::conflict_log::read_entry(tx, &op.row_id)? else {
        return Ok(None);
    };
    if entry.status != ConflictStatus::Open {
        return Ok(None);
    }
    let pattern = super::conflict_log::audience_pattern(replica);
    if !audience.as_deref().is_some_and(|a| a.contains(&pattern)) {
        return Ok(Some(burrow_core::rules::Denied {
            code: "permission_denied",
            reason: format!(
                "closing conflict {} is not allowed: this device is not one of its devices",
                entry.id
            ),
        }));
    }
    let key = (entry.table.clone(), entry.row_id.clone());
    let row = match overlay.get(&key) {
        Some(r) => r.clone(),
        None => super::sqlite::read_row(tx, &entry.table, &entry.row_id)?
            .filter(|r| !r.deleted)
            .map(|r| r.fields.into_iter().map(|(k, f)| (k, f.value)).collect()),
    };
    let Some(row) = row else {
        return Ok(None);
    };
    let known = schema
        .table(&entry.table)
        .is_some_and(|t| t.column(&entry.column).is_some());
    let columns: Vec<&str> = if known {
        vec![entry.column.as_str()]
    } else {
        Vec::new()
    };
    let get = row_getter(&entry.row_id, &row);
    let mut lookup = StoreLookup { conn: tx, schema };
    match rules.check_write(
        ctx,
        &entry.table,
        burrow_core::rules::Action::Update,
        &columns,
        Some(&get),
        Some(&get),
        &mut lookup,
    ) {
        Ok(()) => Ok(None),
        Err(mut denied) => {
            denied.reason = format!("closing conflict {}: {}", entry.id, denied.reason);
            Ok(Some(denied))
        }
    }
}

/// Rebuilds the whole index when the rules changed since it was built (`meta.rules_hash`).
pub(crate) fn install(
    conn: &mut Connection,
    rules: &SyncRules,
    schema: &Schema,
    rules_hash: u64,
) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let current: Option<i64> = tx
        .query_row("SELECT value FROM meta WHERE key = 'rules_hash'", [], |r| {
            r.get(0)
        })
        .optional()?;
    if current == Some(rules_hash as i64) {
        return Ok(());
    }
    tx.execute_batch("DELETE FROM bucket_rows; DELETE FROM lookup_index;")?;
    let mut rows = Vec::new();
    {
        let mut stmt = tx.prepare(
            "SELECT tbl, id, seq, hlc, fields FROM rows WHERE deleted = 0 AND tbl NOT LIKE '\\_burrow%' ESCAPE '\\'",
        )?;
        let mut q = stmt.query([])?;
        while let Some(r) = q.next()? {
            let (table, id): (String, String) = (r.get(0)?, r.get(1)?);
            let seq = r.get::<_, i64>(2)? as u64;
            let hlc = r.get::<_, i64>(3)? as u64;
            let blob: Vec<u8> = r.get(4)?;
            let row = burrow_proto::convert::server_row_from_parts(false, seq, hlc, &blob)
                .map_err(|source| StoreError::Corrupt {
                    table: table.clone(),
                    row_id: id.clone(),
                    source,
                })?;
            rows.push((table, id, row));
        }
    }
    for (table, id, row) in &rows {
        index_row(&tx, rules, schema, table, id, row, row.seq, &mut None)?;
    }
    tx.execute(
        "INSERT INTO meta(key, value) VALUES ('rules_hash', ?1)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [rules_hash as i64],
    )?;
    tx.commit()?;
    Ok(())
}

/// Parameter lookups answered from `lookup_index` and the rows.
pub(crate) struct StoreLookup<'a> {
    /// The transaction to read in.
    pub conn: &'a Connection,
    /// For column types.
    pub schema: &'a Schema,
}

impl Lookup for StoreLookup<'_> {
    fn lookup(
        &mut self,
        table: &str,
        column: &str,
        filters: &[(String, Value)],
    ) -> Result<Vec<Value>, LookupError> {
        let err = |e: rusqlite::Error| LookupError(e.to_string());
        let t = self.schema.table(table);
        let ty_of = |c: &str| {
            if c == burrow_core::schema::ID_COLUMN {
                Some(burrow_core::ColumnType::Text)
            } else {
                t.and_then(|t| t.column(c)).map(|col| col.ty)
            }
        };
        let mut ids: Option<BTreeSet<String>> = None;
        for (col, v) in filters {
            let Some(key) = index_key(ty_of(col), v) else {
                return Ok(Vec::new()); // NULL matches nothing
            };
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT id FROM lookup_index WHERE tbl = ?1 AND col = ?2 AND value = ?3",
                )
                .map_err(err)?;
            let found: BTreeSet<String> = stmt
                .query_map(params![table, col, key], |r| r.get::<_, String>(0))
                .map_err(err)?
                .collect::<Result<_, _>>()
                .map_err(err)?;
            ids = Some(match ids {
                None => found,
                Some(prev) => prev.intersection(&found).cloned().collect(),
            });
            if ids.as_ref().is_some_and(BTreeSet::is_empty) {
                return Ok(Vec::new());
            }
        }
        let ids: Vec<String> = match ids {
            Some(ids) => ids.into_iter().collect(),
            None => {
                // No filter: every live row of the table.
                let mut stmt = self
                    .conn
                    .prepare_cached("SELECT id FROM rows WHERE tbl = ?1 AND deleted = 0")
                    .map_err(err)?;
                stmt.query_map([table], |r| r.get::<_, String>(0))
                    .map_err(err)?
                    .collect::<Result<_, _>>()
                    .map_err(err)?
            }
        };
        if column == burrow_core::schema::ID_COLUMN {
            return Ok(ids.into_iter().map(Value::Text).collect());
        }
        let mut out = Vec::with_capacity(ids.len());
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, hlc, fields FROM rows WHERE tbl = ?1 AND id = ?2 AND deleted = 0",
            )
            .map_err(err)?;
        for id in ids {
            let raw: Option<(i64, i64, Vec<u8>)> = stmt
                .query_row(params![table, id], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()
                .map_err(err)?;
            if let Some((seq, hlc, blob)) = raw {
                let row = burrow_proto::convert::server_row_from_parts(
                    false, seq as u64, hlc as u64, &blob,
                )
                .map_err(|e| LookupError(e.to_string()))?;
                if let Some(v) = row.fields.get(column).filter(|v| v.value != Value::Null) {
                    out.push(v.value.clone());
                }
            }
        }
        Ok(out)
    }
}

/// The 64-bit name of a bucket set (0 is reserved for "nothing held").
pub(crate) fn scope_hash(buckets: &BTreeSet<BucketKey>) -> u64 {
    let mut h = Fnv64::new();
    for b in buckets {
        h.update(b.0.as_bytes());
        h.update(&[0]);
    }
    h.finish().max(1)
}

/// Loads a set handed out earlier; `None` when unknown.
fn load_scope(conn: &Connection, hash: u64) -> Result<Option<BTreeSet<BucketKey>>, StoreError> {
    let text: Option<String> = conn
        .prepare_cached("SELECT buckets FROM scopes WHERE hash = ?1")?
        .query_row([hash as i64], |r| r.get(0))
        .optional()?;
    Ok(text.map(|t| {
        t.split('\n')
            .filter(|s| !s.is_empty())
            .map(|s| BucketKey(s.to_string()))
            .collect()
    }))
}

/// Remembers a bucket set under its hash (idempotent).
pub(crate) fn save_scope(
    conn: &Connection,
    hash: u64,
    buckets: &BTreeSet<BucketKey>,
) -> Result<(), StoreError> {
    let text = buckets
        .iter()
        .map(|b| b.0.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    conn.prepare_cached("INSERT OR IGNORE INTO scopes(hash, buckets) VALUES (?1, ?2)")?
        .execute(params![hash as i64, text])?;
    Ok(())
}

/// A bucket set to remember, by its hash.
pub(crate) type NewScope = (u64, BTreeSet<BucketKey>);

/// What a scoped pull produced besides the page: the position to return, sets the writer
/// must remember, and refused subscriptions.
pub(crate) struct ScopedPull {
    pub changes: Vec<RowChange>,
    pub cursor: burrow_core::Cursor,
    pub more: bool,
    pub position: ScopePosition,
    /// Bucket sets the writer must remember before the client can name them.
    pub remember: Vec<NewScope>,
    pub grants: BTreeSet<BucketKey>,
    pub refused: Vec<(burrow_core::rules::Subscription, burrow_core::rules::Denied)>,
}

/// One entry of the merged bucket streams.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    seq: std::cmp::Reverse<u64>,
    tbl: std::cmp::Reverse<String>,
    id: std::cmp::Reverse<String>,
    removed: bool,
    /// The sequence at which the row (re-)entered the bucket.
    added: u64,
    source: usize,
}

/// One row out of [`Merge`]: `(seq, tbl, id, present, added)`.
type MergedRow = (u64, String, String, bool, u64);

/// Streams `(seq, tbl, id, removed)` of several buckets merged in sequence order.
struct Merge<'c> {
    rows: Vec<rusqlite::Rows<'c>>,
    heap: BinaryHeap<Entry>,
}

impl<'c> Merge<'c> {
    fn new(mut rows: Vec<rusqlite::Rows<'c>>) -> Result<Merge<'c>, StoreError> {
        let mut heap = BinaryHeap::new();
        for (i, r) in rows.iter_mut().enumerate() {
            if let Some(e) = next_entry(r, i)? {
                heap.push(e);
            }
        }
        Ok(Merge { rows, heap })
    }

    /// The next row: `(seq, tbl, id, present in any stream at this seq, the latest sequence
    /// at which it entered one of the streams' buckets while present)`.
    fn next(&mut self) -> Result<Option<MergedRow>, StoreError> {
        let Some(first) = self.heap.pop() else {
            return Ok(None);
        };
        self.advance(first.source)?;
        let (seq, tbl, id) = (first.seq.0, first.tbl.0, first.id.0);
        let mut present = !first.removed;
        let mut added = if first.removed { 0 } else { first.added };
        while self
            .heap
            .peek()
            .is_some_and(|e| e.seq.0 == seq && e.tbl.0 == tbl && e.id.0 == id)
        {
            if let Some(e) = self.heap.pop() {
                present |= !e.removed;
                if !e.removed {
                    added = added.max(e.added);
                }
                self.advance(e.source)?;
            }
        }
        Ok(Some((seq, tbl, id, present, added)))
    }

    fn advance(&mut self, i: usize) -> Result<(), StoreError> {
        if let Some(r) = self.rows.get_mut(i)
            && let Some(e) = next_entry(r, i)?
        {
            self.heap.push(e);
        }
        Ok(())
    }
}

fn next_entry(rows: &mut rusqlite::Rows<'_>, source: usize) -> Result<Option<Entry>, StoreError> {
    Ok(match rows.next()? {
        Some(r) => Some(Entry {
            seq: std::cmp::Reverse(r.get::<_, i64>(0)? as u64),
            tbl: std::cmp::Reverse(r.get(1)?),
            id: std::cmp::Reverse(r.get(2)?),
            removed: r.get(3)?,
            added: r.get::<_, i64>(4)? as u64,
            source,
        }),
        None => None,
    })
}

/// Reads the stored row and builds its change (`None`: nothing to send).
type RowReader<'r> =
    dyn FnMut(&str, &str, u64, Option<u64>) -> Result<Option<RowChange>, StoreError> + 'r;

/// A pull restricted to the requester's grants.
pub(crate) fn pull_scoped(
    tx: &Connection,
    req: &PullRequest,
    scope: &ScopeRequest,
    head: u64,
    read_change: &mut RowReader<'_>,
    schema: &Schema,
) -> Result<ScopedPull, StoreError> {
    let ctx = EvalContext {
        claims: &scope.claims,
        now_ms: scope.now_ms,
    };
    let mut lookup = StoreLookup { conn: tx, schema };
    let mut allowed = Vec::new();
    let mut refused = Vec::new();
    for s in &scope.subscriptions {
        match scope.rules.check_subscription(&ctx, s, &mut lookup) {
            Ok(()) => allowed.push(s.clone()),
            Err(denied) => refused.push((s.clone(), denied)),
        }
    }
    let grants = scope
        .rules
        .grants(&ctx, &allowed, &mut lookup)
        .map_err(|e| StoreError::Rules(e.0))?;
    let g_hash = scope_hash(&grants);
    let pos = scope.position;
    let cursor = req.cursor;
    let mut changes = Vec::new();
    let mut bytes = 0usize;
    let mut remember: Vec<NewScope> = Vec::new();
    // Rows the writer just wrote but may not read leave its device (never held through a
    // bucket, they would stay forever).
    {
        let granted: HashSet<&str> = grants.iter().map(|b| b.0.as_str()).collect();
        let mut seen = HashSet::new();
        for (tbl, id) in &scope.written {
            if seen.insert((tbl, id)) && !held_elsewhere(tx, tbl, id, &granted)? {
                changes.push(evicted(tbl.clone(), id.clone(), head));
            }
        }
    }
    let mut change = ScopeChange::resume(tx, &pos, &grants, g_hash, cursor.after)?;
    let page_full = |bytes: usize, n: usize| bytes >= req.page_bytes_max || n >= req.page_rows_max;
    // The sequence at which a phase of the scope change filled the page, if one did.
    let mut paused_at = None;
    if change.phase == Phase::Evict {
        let lost: Vec<&BucketKey> = change.partial.difference(&grants).collect();
        paused_at = evictions(
            tx,
            &lost,
            &grants,
            cursor.after,
            change.from,
            &page_full,
            &mut bytes,
            &mut changes,
        )?;
        if paused_at.is_none() {
            change.evicted(&grants, cursor.after);
        }
    }
    if paused_at.is_none() && change.phase == Phase::CatchUp {
        paused_at = catch_up(
            tx,
            &change,
            &page_full,
            &mut bytes,
            &mut changes,
            read_change,
        )?;
    }
    if let Some(last) = paused_at {
        // The client comes back for the rest of this phase before anything else.
        let position = change.position(last, g_hash, &mut remember);
        return Ok(ScopedPull {
            changes,
            cursor,
            more: true,
            position,
            remember,
            grants,
            refused,
        });
    }
    // The client now holds `grants` up to its cursor: continue with the delta.
    if pos.scope != g_hash {
        remember.push((g_hash, grants.clone()));
    }
    // The delta: every granted bucket (plus the requester's conflict records) after `after`.
    let keys: Vec<&BucketKey> = grants.iter().collect();
    let mut stmts = Vec::with_capacity(keys.len() + 1);
    for _ in &keys {
        stmts.push(tx.prepare(
            "SELECT seq, tbl, id, removed, added FROM bucket_rows
             WHERE bucket = ?1 AND seq > ?2 ORDER BY seq, tbl, id",
        )?);
    }
    stmts.push(tx.prepare(
        "SELECT seq, tbl, id, 0, 0 FROM rows
         WHERE tbl = ?1 AND seq > ?2 AND (audience IS NULL OR instr(audience, ?3) > 0) ORDER BY seq, tbl, id",
    )?);
    let mut streams = Vec::with_capacity(stmts.len());
    let n = stmts.len();
    for (i, stmt) in stmts.iter_mut().enumerate() {
        if i + 1 < n {
            streams.push(stmt.query(params![keys[i].0, cursor.after as i64])?);
        } else {
            streams.push(stmt.query(params![
                burrow_core::conflict::CONFLICTS_TABLE,
                cursor.after as i64,
                super::conflict_log::audience_pattern(req.audience)
            ])?);
        }
    }
    let mut merge = Merge::new(streams)?;
    let mut last = cursor.after;
    let mut more = false;
    let granted: HashSet<&str> = grants.iter().map(|b| b.0.as_str()).collect();
    while let Some((seq, tbl, id, present, added)) = merge.next()? {
        if bytes >= req.page_bytes_max || changes.len() >= req.page_rows_max {
            more = true;
            break;
        }
        last = seq;
        if present {
            // A row that entered one of the client's buckets since its cursor may be new to
            // it: all its fields go.
            let since = if added > cursor.since {
                0
            } else {
                cursor.since
            };
            if let Some(c) = read_change(&tbl, &id, since, req.exclude_replica)? {
                bytes += change_size(&c);
                changes.push(c);
            }
        } else if !held_elsewhere(tx, &tbl, &id, &granted)? {
            changes.push(evicted(tbl, id, seq));
        }
    }
    let page_cursor = if more {
        burrow_core::Cursor {
            since: cursor.since,
            after: last,
        }
    } else {
        burrow_core::Cursor::at(head.max(last))
    };
    Ok(ScopedPull {
        changes,
        cursor: page_cursor,
        more,
        position: ScopePosition {
            scope: g_hash,
            catchup_after: 0,
            catchup_target: 0,
        },
        remember,
        grants,
        refused,
    })
}

fn change_size(c: &RowChange) -> usize {
    c.table.len()
        + c.row_id.len()
        + 16
        + c.fields
            .iter()
            .map(|f| f.column.len() + f.value.approx_size() + 8)
            .sum::<usize>()
}

fn evicted(table: String, row_id: String, seq: u64) -> RowChange {
    RowChange {
        table,
        row_id,
        seq,
        deleted: false,
        fields: Vec::new(),
        hlc: burrow_core::Hlc(0),
        evicted: true,
    }
}

/// Whether the row is (live) in a bucket of `granted`.
fn held_elsewhere(
    tx: &Connection,
    table: &str,
    row_id: &str,
    granted: &HashSet<&str>,
) -> Result<bool, StoreError> {
    Ok(present_buckets(tx, table, row_id)?
        .iter()
        .any(|b| granted.contains(b.0.as_str())))
}

/// The catch-up phase of a scope change: every row of the buckets it works towards
/// (`change.partial`) past `change.from`, whole (the delta would send rows past the cursor
/// with only the fields changed since it, and has passed the others). Returns the sequence
/// at which the page filled, or `None` when the catch-up is done.
fn catch_up(
    tx: &Connection,
    change: &ScopeChange,
    page_full: &dyn Fn(usize, usize) -> bool,
    bytes: &mut usize,
    out: &mut Vec<RowChange>,
    read_change: &mut RowReader<'_>,
) -> Result<Option<u64>, StoreError> {
    let keys: Vec<&BucketKey> = change.partial.iter().collect();
    let mut stmts = Vec::with_capacity(keys.len());
    for _ in &keys {
        stmts.push(tx.prepare(
            "SELECT seq, tbl, id, removed, added FROM bucket_rows
             WHERE bucket = ?1 AND seq > ?2 AND removed = 0 ORDER BY seq, tbl, id",
        )?);
    }
    let mut streams = Vec::with_capacity(keys.len());
    for (stmt, key) in stmts.iter_mut().zip(&keys) {
        streams.push(stmt.query(params![key.0, change.from as i64])?);
    }
    let mut merge = Merge::new(streams)?;
    let mut last = change.from;
    while let Some((seq, tbl, id, _, _)) = merge.next()? {
        if page_full(*bytes, out.len()) {
            return Ok(Some(last));
        }
        last = seq;
        if let Some(c) = read_change(&tbl, &id, 0, None)?.filter(|c| !c.deleted) {
            *bytes += change_size(&c);
            out.push(c);
        }
    }
    Ok(None)
}

/// Rows of buckets the client held but lost, unless a bucket it keeps holds them: the rows
/// in them now, and those that left them after the client's cursor `after` (it still has
/// them). Pages through the lost buckets' index entries after `from`; returns the sequence to
/// continue after when the page filled up (`None`: every eviction is in `out`).
#[allow(clippy::too_many_arguments)]
fn evictions(
    tx: &Connection,
    lost: &[&BucketKey],
    grants: &BTreeSet<BucketKey>,
    after: u64,
    from: u64,
    page_full: &dyn Fn(usize, usize) -> bool,
    bytes: &mut usize,
    out: &mut Vec<RowChange>,
) -> Result<Option<u64>, StoreError> {
    let granted: HashSet<&str> = grants.iter().map(|b| b.0.as_str()).collect();
    let mut stmts = Vec::with_capacity(lost.len());
    for _ in lost {
        stmts.push(tx.prepare_cached(
            "SELECT seq, tbl, id, removed, added FROM bucket_rows
             WHERE bucket = ?1 AND seq > ?2 AND (removed = 0 OR seq > ?3) ORDER BY seq, tbl, id",
        )?);
    }
    let mut streams = Vec::with_capacity(lost.len());
    for (stmt, key) in stmts.iter_mut().zip(lost) {
        streams.push(stmt.query(params![key.0, from as i64, after as i64])?);
    }
    let mut merge = Merge::new(streams)?;
    let mut seen: HashSet<(String, String)> = HashSet::new();
    let mut last = from;
    while let Some((seq, tbl, id, _, _)) = merge.next()? {
        if page_full(*bytes, out.len()) {
            return Ok(Some(last));
        }
        last = seq;
        if seen.contains(&(tbl.clone(), id.clone())) || held_elsewhere(tx, &tbl, &id, &granted)? {
            continue;
        }
        let change = evicted(tbl.clone(), id.clone(), seq);
        *bytes += change_size(&change);
        out.push(change);
        seen.insert((tbl, id));
    }
    Ok(None)
}

/// The step of a scope change a pull is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The client holds its complete set: plain delta.
    Delta,
    /// Evicting the rows of `partial` buckets that are not granted.
    Evict,
    /// Sending every row of the `partial` buckets (granted, not held completely) whole.
    CatchUp,
}

/// Where a scope change stands. The client holds `complete` completely up to its cursor, and
/// may hold some rows of `partial` (a catch-up or an eviction was under way). The position
/// names both: `scope` is the hash of `complete`, `catchup_target` the key of the phase
/// record (`phase_key`: the phase, the grants it works towards and `partial`), and
/// `catchup_after` how far the phase got. When the grants change mid-way the record no longer
/// matches and the change restarts from what the client may hold: nothing is left behind
/// (rows of a bucket whose catch-up was cut short) and nothing is missed (a bucket evicted
/// part-way and granted again is caught up whole).
struct ScopeChange {
    phase: Phase,
    complete: BTreeSet<BucketKey>,
    partial: BTreeSet<BucketKey>,
    from: u64,
}

impl ScopeChange {
    /// The change the client's position `pos` is in, towards `grants`.
    fn resume(
        tx: &Connection,
        pos: &ScopePosition,
        grants: &BTreeSet<BucketKey>,
        g_hash: u64,
        after: u64,
    ) -> Result<ScopeChange, StoreError> {
        // An unknown set (never handed out here) is treated as empty: the catch-up then
        // resends the client's whole scope, which is safe.
        let held = if pos.scope == 0 {
            BTreeSet::new()
        } else {
            load_scope(tx, pos.scope)?.unwrap_or_default()
        };
        let record = if pos.catchup_target == 0 {
            None
        } else {
            load_scope(tx, pos.catchup_target)?
        };
        if let Some(partial) = &record {
            for phase in [Phase::Evict, Phase::CatchUp] {
                if pos.catchup_target == phase_key(phase, g_hash, partial) {
                    return Ok(ScopeChange {
                        phase,
                        complete: held,
                        partial: partial.clone(),
                        from: pos.catchup_after,
                    });
                }
            }
        }
        // A new change (or the grants changed during one).
        let complete: BTreeSet<BucketKey> = held.intersection(grants).cloned().collect();
        let partial: BTreeSet<BucketKey> = held
            .union(&record.unwrap_or_default())
            .filter(|b| !complete.contains(*b))
            .cloned()
            .collect();
        let mut change = ScopeChange {
            phase: Phase::Evict,
            complete,
            partial,
            from: 0,
        };
        if change.partial.iter().all(|b| grants.contains(b)) {
            change.evicted(grants, after);
        }
        Ok(change)
    }

    /// The evictions are done: catch up what is granted but not held completely (not for a
    /// client at cursor 0, whose delta sends everything whole).
    fn evicted(&mut self, grants: &BTreeSet<BucketKey>, after: u64) {
        self.partial = grants.difference(&self.complete).cloned().collect();
        self.from = 0;
        self.phase = if after > 0 && !self.partial.is_empty() {
            Phase::CatchUp
        } else {
            Phase::Delta
        };
    }

    /// The position of a page that stopped after `last`; the sets it names go to `remember`.
    fn position(&self, last: u64, g_hash: u64, remember: &mut Vec<NewScope>) -> ScopePosition {
        let scope = scope_hash(&self.complete);
        let key = phase_key(self.phase, g_hash, &self.partial);
        remember.push((scope, self.complete.clone()));
        remember.push((key, self.partial.clone()));
        ScopePosition {
            scope,
            catchup_after: last,
            catchup_target: key,
        }
    }
}

/// The key of a scope change's phase record: domain-separated from [`scope_hash`], and
/// different for every phase, target grants and partial set.
fn phase_key(phase: Phase, g_hash: u64, partial: &BTreeSet<BucketKey>) -> u64 {
    let mut h = Fnv64::new();
    h.update(match phase {
        Phase::Evict => b"evict\0",
        Phase::CatchUp => b"catch\0",
        Phase::Delta => b"delta\0",
    });
    h.update(&g_hash.to_le_bytes());
    for b in partial {
        h.update(b.0.as_bytes());
        h.update(&[0]);
    }
    h.finish().max(1)
}
