//! Opening a database safely: a quick integrity check, and when the file is damaged (or gone
//! while its op journal remains), an automatic rebuild. The pending ops are salvaged from the
//! op journal and from whatever of the damaged file's outbox is still readable; a fresh
//! database is created with the same client id and schema; the ops go back into the outbox
//! with their original numbers and are shown in the app tables again; and the next pull starts
//! from cursor 0 and asks the server for this client's own writes too. The damaged file is
//! kept as `<db>.corrupt-<n>`. Policy and reasons: `docs/design/corruption.md`.

use crate::apply;
use crate::error::{Error, Result};
use crate::journal::{self, Floors, JournalOp};
use crate::open;
use burrow_core::{OpKind, Schema, Value};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What an automatic rebuild of a damaged database did; kept in `_burrow_local.recovery`
/// until the next rebuild and shown by [`crate::Client::status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovery {
    /// When the database was rebuilt (Unix milliseconds, the client's clock).
    pub at_ms: u64,
    /// Why: what SQLite reported, or that the file was missing while its journal remained.
    pub reason: String,
    /// Where the damaged file was moved (`<db>.corrupt-<n>`, with its `-wal` and `-shm`),
    /// if there was a file.
    pub damaged_file: Option<String>,
    /// Pending ops read from the op journal.
    pub ops_from_journal: u64,
    /// Pending ops read from the damaged file's outbox that the journal did not hold.
    pub ops_from_damaged_db: u64,
    /// Ops put back into the outbox (`ops_from_journal + ops_from_damaged_db`).
    pub ops_restored: u64,
    /// Rows of the damaged outbox that were unreadable or not valid ops, and were dropped.
    pub ops_dropped: u64,
    /// Whether the journal was read whole (no torn, garbled or checksum-failing records).
    pub journal_clean: bool,
    /// Whether the database kept its client id. It does whenever the journal (or the damaged
    /// file) shows which op numbers the id already used; otherwise a new id is drawn, so no
    /// new op can reuse a number the server knows.
    pub client_id_kept: bool,
    /// The first pull from cursor 0 (which also downloads this client's own writes) has not
    /// completed yet.
    #[serde(default)]
    pub awaiting_full_pull: bool,
}

/// What the caller opens with.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Want<'a> {
    /// [`crate::Client::open_with`]: create or migrate to this schema.
    Schema {
        /// The schema.
        schema: &'a Schema,
        /// Its text, stored in the database.
        text: &'a str,
    },
    /// [`crate::Client::open_existing_with`]: the schema stored in the database.
    Existing,
}

/// A database ready for the client.
#[derive(Debug)]
pub(crate) struct Opened {
    pub conn: Connection,
    pub schema: Schema,
    pub schema_text: String,
    pub client_id: String,
    /// The database was rebuilt just now.
    pub rebuilt: bool,
}

enum Inspection {
    Ready {
        schema: Schema,
        text: String,
        client_id: String,
    },
    NoState,
    Damaged(String),
}

fn journal_has_header(db: &Path) -> Result<bool> {
    Ok(journal::read(&journal::path_for(db))?.is_some_and(|c| c.header.is_some()))
}

/// Opens (creating, migrating, or rebuilding) the database at `path`.
pub(crate) fn open(path: &Path, want: Want<'_>, fresh_id: &str, now_ms: u64) -> Result<Opened> {
    if !path.exists() {
        if journal_has_header(path)? {
            let reason = "the database file is missing but its op journal remains";
            return rebuild(path, want, fresh_id, reason, now_ms);
        }
        if matches!(want, Want::Existing) {
            return Err(Error::NotInitialized(path.display().to_string()));
        }
    }
    let mut conn = match open::connect(path) {
        Ok(c) => c,
        Err(e) if e.is_corruption() => {
            return rebuild(path, want, fresh_id, &e.to_string(), now_ms);
        }
        Err(e) => return Err(e),
    };
    let reason = match inspect(&mut conn, path, want, fresh_id) {
        Ok(Inspection::Ready {
            schema,
            text,
            client_id,
        }) => {
            return Ok(Opened {
                conn,
                schema,
                schema_text: text,
                client_id,
                rebuilt: false,
            });
        }
        Ok(Inspection::NoState) => {
            if !journal_has_header(path)? {
                return Err(Error::NotInitialized(path.display().to_string()));
            }
            "the database holds no Burrow state but its op journal does".to_string()
        }
        Ok(Inspection::Damaged(reason)) => reason,
        Err(e) if e.is_corruption() => e.to_string(),
        Err(e) => return Err(e),
    };
    // Never let closing the damaged file checkpoint its WAL into it.
    let _ = conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true);
    drop(conn);
    rebuild(path, want, fresh_id, &reason, now_ms)
}

fn inspect(
    conn: &mut Connection,
    path: &Path,
    want: Want<'_>,
    fresh_id: &str,
) -> Result<Inspection> {
    if let Some(problem) = open::quick_check(conn)? {
        return Ok(Inspection::Damaged(problem));
    }
    // The journal is read before the state is looked at again: a client opening the same new
    // file concurrently commits its state before it writes its journal.
    if open::stored_state(conn)?.is_none()
        && (matches!(want, Want::Existing) || journal_has_header(path)?)
        && open::stored_state(conn)?.is_none()
    {
        return Ok(Inspection::NoState);
    }
    if let Want::Schema { schema, text } = want {
        open::install(conn, schema, text, fresh_id)?;
    }
    let Some((text, client_id)) = open::stored_state(conn)? else {
        return Ok(Inspection::NoState);
    };
    let schema = match want {
        Want::Schema { schema, .. } => schema.clone(),
        Want::Existing => Schema::from_toml_str(&text)?,
    };
    Ok(Inspection::Ready {
        schema,
        text,
        client_id,
    })
}

/// What could still be read from a damaged file.
#[derive(Debug, Default)]
struct Salvage {
    client_id: Option<String>,
    schema_text: Option<String>,
    /// Set when both `_burrow_local` and `sqlite_sequence` were readable.
    floors: Option<Floors>,
    ops: BTreeMap<i64, JournalOp>,
    unreadable: u64,
}

/// Reads what it can from the damaged database at `path`, read-only, never failing.
fn salvage(path: &Path) -> Salvage {
    let mut s = Salvage::default();
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let Ok(conn) = Connection::open_with_flags(path, flags) else {
        return s;
    };
    let _ = conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true);
    let local: Option<(String, String, i64, i64)> = conn
        .query_row(
            "SELECT client_id, schema_text, tx, hlc FROM _burrow_local WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .ok();
    let seq: Option<i64> = conn
        .query_row(
            "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = '_burrow_outbox'), 0)",
            [],
            |r| r.get(0),
        )
        .ok();
    if let Some((id, text, tx, hlc)) = local {
        s.client_id = Some(id);
        s.schema_text = Some(text);
        s.floors = seq.map(|seq| Floors { seq, tx, hlc });
    }
    // Scan forwards, then (if a damaged page stopped the scan) backwards: rows on the far
    // side of the damage are still reachable from the other end of the b-tree.
    for order in ["ASC", "DESC"] {
        let sql = format!(
            "SELECT {} FROM _burrow_outbox ORDER BY seq {order}",
            journal::OUTBOX_COLUMNS
        );
        let Ok(mut stmt) = conn.prepare(&sql) else {
            break;
        };
        let Ok(mut rows) = stmt.query([]) else {
            continue;
        };
        let complete = loop {
            match rows.next() {
                Ok(Some(r)) => match journal::op_from_row(r) {
                    Ok(op) => {
                        s.ops.entry(op.seq).or_insert(op);
                    }
                    Err(_) => s.unreadable += 1,
                },
                Ok(None) => break true,
                Err(_) => break false,
            }
        };
        if complete {
            break;
        }
    }
    s
}

/// Whether a row salvaged from a damaged outbox is a plausible op of `schema`.
fn plausible(schema: &Schema, op: &JournalOp) -> bool {
    let Some(kind) = OpKind::from_code(op.kind) else {
        return false;
    };
    if op.seq <= 0 || op.tx <= 0 || op.hlc < 0 || op.row_id.is_empty() {
        return false;
    }
    if schema.table(&op.tbl).is_none() {
        return false;
    }
    match kind {
        OpKind::Delete => op.data.is_none(),
        _ => {
            op.data.is_some()
                && crate::outbox::decode_fields(schema, op.tbl.clone(), op.data.clone()).is_ok()
        }
    }
}

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|source| Error::Io {
        path: from.display().to_string(),
        source,
    })
}

/// SQLite's files beside a database: a WAL, its index, a rollback journal.
const SQLITE_SIDECARS: [&str; 3] = ["-wal", "-shm", "-journal"];

/// Moves the database and its `-wal` / `-shm` / `-journal` to `<db>.corrupt-<n>` (the first
/// free `n`).
fn move_aside(path: &Path) -> Result<PathBuf> {
    let mut n = 1u32;
    let target = loop {
        let t = sidecar(path, &format!(".corrupt-{n}"));
        let taken = t.exists() || SQLITE_SIDECARS.iter().any(|s| sidecar(&t, s).exists());
        if !taken {
            break t;
        }
        n += 1;
    };
    // These first: a WAL or a hot rollback journal left beside a new file at `path` would be
    // replayed into it.
    for suffix in SQLITE_SIDECARS {
        let from = sidecar(path, suffix);
        if from.exists() {
            rename(&from, &sidecar(&target, suffix))?;
        }
    }
    rename(path, &target)?;
    journal::sync_dir(path);
    Ok(target)
}

/// Rebuilds the database at `path` from its journal and what the damaged file still holds.
fn rebuild(
    path: &Path,
    want: Want<'_>,
    fresh_id: &str,
    reason: &str,
    now_ms: u64,
) -> Result<Opened> {
    let jpath = journal::path_for(path);
    let contents = journal::read(&jpath)?;
    let exists = path.exists();
    let salvaged = if exists {
        salvage(path)
    } else {
        Salvage::default()
    };
    // The schema: the caller's, else the journal's, else the damaged file's. Nothing is
    // touched on disk before this is settled.
    let (schema, text) = match want {
        Want::Schema { schema, text } => (schema.clone(), text.to_string()),
        Want::Existing => {
            let candidates = [
                contents
                    .as_ref()
                    .and_then(|c| c.header.as_ref())
                    .map(|h| h.schema_text.clone()),
                salvaged.schema_text.clone(),
            ];
            candidates
                .into_iter()
                .flatten()
                .find_map(|t| Schema::from_toml_str(&t).ok().map(|s| (s, t)))
                .ok_or_else(|| Error::Unrecoverable {
                    path: path.display().to_string(),
                    reason: reason.to_string(),
                })?
        }
    };
    // A journal naming another client id than the damaged file is not this database's.
    let foreign = matches!(
        (contents.as_ref().and_then(|c| c.header.as_ref()), &salvaged.client_id),
        (Some(h), Some(id)) if &h.client_id != id
    );
    let contents = if foreign { None } else { contents };
    let header = contents.as_ref().and_then(|c| c.header.clone());
    let (client_id, kept) = match (&header, &salvaged.client_id, &salvaged.floors) {
        (Some(h), _, _) => (h.client_id.clone(), true),
        (None, Some(id), Some(_)) => (id.clone(), true),
        _ => (fresh_id.to_string(), false),
    };
    let mut ops: BTreeMap<i64, JournalOp> =
        contents.as_ref().map(|c| c.ops.clone()).unwrap_or_default();
    let ops_from_journal = ops.len() as u64;
    let mut ops_from_damaged_db = 0u64;
    let mut ops_dropped = salvaged.unreadable;
    for (seq, op) in salvaged.ops {
        if ops.contains_key(&seq) {
            continue; // the journal's copy is checksummed
        }
        if plausible(&schema, &op) {
            ops.insert(seq, op);
            ops_from_damaged_db += 1;
        } else {
            ops_dropped += 1;
        }
    }
    let mut floors = Floors::default();
    if let Some(c) = &contents {
        floors = floors.max(c.floors);
    }
    if let Some(f) = salvaged.floors {
        floors = floors.max(f);
    }
    for op in ops.values() {
        floors = floors.max(Floors {
            seq: op.seq,
            tx: op.tx,
            hlc: op.hlc,
        });
    }
    let damaged_file = if exists {
        Some(move_aside(path)?)
    } else {
        None
    };
    if foreign && jpath.exists() {
        let keep = sidecar(damaged_file.as_deref().unwrap_or(path), ".foreign.journal");
        rename(&jpath, &keep)?;
    }
    let record = Recovery {
        at_ms: now_ms,
        reason: reason.to_string(),
        damaged_file: damaged_file.map(|p| p.display().to_string()),
        ops_from_journal,
        ops_from_damaged_db,
        ops_restored: ops.len() as u64,
        ops_dropped,
        journal_clean: contents.as_ref().is_some_and(|c| c.is_clean()),
        client_id_kept: kept,
        awaiting_full_pull: kept,
    };
    tracing::warn!(
        path = %path.display(),
        reason,
        ops_restored = record.ops_restored,
        "damaged client database rebuilt"
    );
    let mut conn = open::connect(path)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let client_id = open::install_in(&tx, &schema, &text, &client_id)?;
    restore(&tx, &schema, &ops, floors, &record)?;
    tx.commit()?;
    Ok(Opened {
        conn,
        schema,
        schema_text: text,
        client_id,
        rebuilt: true,
    })
}

/// Puts the salvaged ops back with their numbers, shows their values, continues every counter
/// above what was used, and stores the recovery record (in the caller's transaction).
fn restore(
    tx: &rusqlite::Transaction<'_>,
    schema: &Schema,
    ops: &BTreeMap<i64, JournalOp>,
    floors: Floors,
    record: &Recovery,
) -> Result<()> {
    tx.execute("UPDATE _burrow_local SET applying = 1 WHERE id = 1", [])?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO _burrow_outbox(seq, tx, tbl, row_id, kind, data, hlc, base_seq, lane)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        for op in ops.values() {
            insert.execute(params![
                op.seq,
                op.tx,
                op.tbl,
                op.row_id,
                op.kind,
                op.data,
                op.hlc,
                op.base_seq,
                op.lane
            ])?;
            if let Err(e) = show(tx, schema, op) {
                tracing::warn!(seq = op.seq, error = %e, "a restored op could not be shown");
            }
        }
    }
    let bumped = tx.execute(
        "UPDATE sqlite_sequence SET seq = max(seq, ?1) WHERE name = '_burrow_outbox'",
        [floors.seq],
    )?;
    if bumped == 0 {
        tx.execute(
            "INSERT INTO sqlite_sequence(name, seq) VALUES ('_burrow_outbox', ?1)",
            [floors.seq],
        )?;
    }
    let json = serde_json::to_string(record)
        .map_err(|e| Error::Corrupt(format!("cannot encode the recovery record: {e}")))?;
    tx.execute(
        "UPDATE _burrow_local SET tx = max(tx, ?1 + 1), hlc = max(hlc, ?2), cursor_since = 0,
           cursor_after = 0, recovery = ?3, refetch_own = ?4, applying = 0 WHERE id = 1",
        params![floors.tx, floors.hlc, json, record.client_id_kept],
    )?;
    Ok(())
}

/// Shows a restored op's values in its app table, as the app saw them before the damage.
fn show(tx: &rusqlite::Transaction<'_>, schema: &Schema, op: &JournalOp) -> Result<()> {
    let Some(table) = schema.table(&op.tbl) else {
        return Ok(());
    };
    match OpKind::from_code(op.kind) {
        Some(OpKind::Delete) => apply::delete_visible(tx, table, &op.row_id),
        Some(OpKind::Insert | OpKind::Update) => {
            let Some(data) = op.data.as_deref() else {
                return Ok(());
            };
            let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(data)
                .map_err(|e| Error::Corrupt(format!("data of op {}: {e}", op.seq)))?;
            let values: Vec<(String, Value)> = obj
                .iter()
                .filter_map(|(c, v)| {
                    let col = table.column(c)?;
                    Some((c.clone(), crate::sql_value::from_trigger_json(col.ty, v)?))
                })
                .collect();
            let refs: Vec<(&str, &Value)> = values.iter().map(|(c, v)| (c.as_str(), v)).collect();
            apply::upsert_visible(tx, table, &op.row_id, &refs)
        }
        None => Ok(()),
    }
}

/// The stored recovery record, with `awaiting_full_pull` from the database.
pub(crate) fn read_record(json: Option<&str>, refetch_own: bool) -> Option<Recovery> {
    let mut r: Recovery = serde_json::from_str(json?).ok()?;
    r.awaiting_full_pull = refetch_own;
    Some(r)
}
