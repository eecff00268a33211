//! The conflict log of the SQLite store. Each record is a row of the reserved table
//! `_burrow_conflicts` in `rows`, so it syncs like any row — but only to the devices involved
//! (`rows.audience`). Open `manual` conflicts are indexed by field in `open_conflicts`, so a
//! further concurrent write joins the open record instead of starting another.

use crate::error::StoreError;
use burrow_core::conflict::{
    CONFLICTS_TABLE, ConflictEntry, ConflictStatus, ConflictVersion, WHOLE_ROW,
};
use burrow_core::resolve::{ConflictRecord, FieldVersion, ServerRow, StoredField};
use burrow_core::{Hlc, Op, Value};
use burrow_proto::convert::{server_row_from_parts, stored_fields_to_bytes};
use rusqlite::{OptionalExtension, Transaction, params};

/// Tables and columns the conflict log adds to the store (idempotent).
pub const CONFLICT_LOG_SQL: &str = "
CREATE TABLE IF NOT EXISTS open_conflicts (
  tbl TEXT NOT NULL,
  row_id TEXT NOT NULL,
  col TEXT NOT NULL,
  conflict_id TEXT NOT NULL,
  PRIMARY KEY (tbl, row_id, col)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS clients_by_replica ON clients(replica);
INSERT OR IGNORE INTO meta(key, value) VALUES ('conflict_id', 0);
";

/// Adds `rows.audience` to a store created before the conflict log synced.
pub fn migrate(conn: &rusqlite::Connection) -> Result<(), StoreError> {
    let has: bool = conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM pragma_table_info('rows') WHERE name = 'audience')",
        [],
        |r| r.get(0),
    )?;
    if !has {
        conn.execute_batch("ALTER TABLE rows ADD COLUMN audience TEXT")?;
    }
    conn.execute_batch(CONFLICT_LOG_SQL)?;
    Ok(())
}

/// Who wrote, as the uploading request knows it.
pub struct Uploader<'a> {
    /// The uploading device.
    pub client_id: &'a str,
    /// Its user.
    pub user_id: &'a str,
    /// Its replica tag.
    pub replica: u64,
    /// Server time now.
    pub now_ms: u64,
}

fn author(
    tx: &Transaction<'_>,
    replica: u64,
    up: &Uploader<'_>,
) -> Result<(Option<String>, Option<String>), StoreError> {
    if replica == 0 {
        return Ok((None, None));
    }
    if replica == up.replica {
        return Ok((Some(up.client_id.to_string()), Some(up.user_id.to_string())));
    }
    Ok(tx
        .prepare_cached("SELECT client_id, user_id FROM clients WHERE replica = ?1")?
        .query_row([replica as i64], |r| Ok((Some(r.get(0)?), Some(r.get(1)?))))
        .optional()?
        .unwrap_or((None, None)))
}

fn version(
    tx: &Transaction<'_>,
    value: &Value,
    v: FieldVersion,
    deleted: bool,
    won: bool,
    up: &Uploader<'_>,
) -> Result<ConflictVersion, StoreError> {
    let (client, user) = author(tx, v.replica, up)?;
    Ok(ConflictVersion {
        value: if deleted {
            serde_json::Value::Null
        } else {
            value.to_json()
        },
        deleted,
        client,
        user,
        time_ms: v.hlc.ms(),
        seq: v.seq,
        won,
    })
}

fn audience_of(replicas: impl IntoIterator<Item = u64>, old: Option<&str>) -> String {
    let mut set: std::collections::BTreeSet<u64> = old
        .unwrap_or("")
        .split(',')
        .filter_map(|s| s.parse().ok())
        .collect();
    set.extend(replicas.into_iter().filter(|r| *r != 0));
    let mut out = String::from(",");
    for r in set {
        out.push_str(&r.to_string());
        out.push(',');
    }
    out
}

/// The audience pattern a pull matches for a replica.
pub fn audience_pattern(replica: u64) -> String {
    format!(",{replica},")
}

/// The conflict record `id` and its audience (the devices involved), if it exists.
pub(super) fn read_entry(
    tx: &rusqlite::Connection,
    id: &str,
) -> Result<Option<(ConflictEntry, Option<String>)>, StoreError> {
    let raw: Option<(i64, Vec<u8>, Option<String>)> = tx
        .prepare_cached("SELECT seq, fields, audience FROM rows WHERE tbl = ?1 AND id = ?2")?
        .query_row(params![CONFLICTS_TABLE, id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let Some((seq, blob, audience)) = raw else {
        return Ok(None);
    };
    let row = server_row_from_parts(false, seq as u64, 0, &blob).map_err(|source| {
        StoreError::Corrupt {
            table: CONFLICTS_TABLE.into(),
            row_id: id.into(),
            source,
        }
    })?;
    Ok(ConflictEntry::from_fields(
        id,
        seq as u64,
        row.fields.iter().map(|(c, f)| (c.as_str(), &f.value)),
    )
    .map(|e| (e, audience)))
}

fn write_entry(tx: &Transaction<'_>, e: &ConflictEntry, audience: &str) -> Result<(), StoreError> {
    let version = FieldVersion {
        seq: e.seq,
        hlc: Hlc::from_ms(e.at_ms),
        replica: 0,
    };
    let row = ServerRow {
        deleted: false,
        seq: e.seq,
        hlc: version.hlc,
        replica: 0,
        fields: e
            .to_fields()
            .into_iter()
            .map(|f| {
                (
                    f.column,
                    StoredField {
                        value: f.value,
                        version,
                        rank: Value::Null,
                    },
                )
            })
            .collect(),
    };
    tx.prepare_cached(
        "INSERT INTO rows(tbl, id, seq, deleted, hlc, replica, fields, audience) VALUES (?1, ?2, ?3, 0, ?4, 0, ?5, ?6)
         ON CONFLICT(tbl, id) DO UPDATE SET seq = excluded.seq, hlc = excluded.hlc,
           fields = excluded.fields, audience = excluded.audience",
    )?
    .execute(params![
        CONFLICTS_TABLE,
        e.id,
        e.seq as i64,
        row.hlc.0 as i64,
        stored_fields_to_bytes(&row),
        audience
    ])?;
    Ok(())
}

fn next_id(tx: &Transaction<'_>) -> Result<String, StoreError> {
    let n: i64 = tx.query_row(
        "UPDATE meta SET value = value + 1 WHERE key = 'conflict_id' RETURNING value",
        [],
        |r| r.get(0),
    )?;
    Ok(format!("c{n}"))
}

/// Records one losing or overwritten value at a new sequence (`*head + 1`). A `manual` record
/// joins the open conflict of its field, if any.
pub fn record(
    tx: &Transaction<'_>,
    head: &mut u64,
    op: &Op,
    c: &ConflictRecord,
    up: &Uploader<'_>,
) -> Result<(), StoreError> {
    let row_level = c.column == WHOLE_ROW;
    let winner_deleted = c.reason == "deleted";
    let loser_deleted = row_level && c.reason == "update_wins";
    let merged = c.winner_version.replica == 0 && !winner_deleted;
    let winner = version(tx, &c.winner, c.winner_version, winner_deleted, true, up)?;
    let loser = version(tx, &c.loser, c.loser_version, loser_deleted, false, up)?;
    *head += 1;
    let seq = *head;
    let replicas = [
        c.winner_version.replica,
        c.loser_version.replica,
        up.replica,
    ];
    if c.manual {
        let open: Option<String> = tx
            .prepare_cached("SELECT conflict_id FROM open_conflicts WHERE tbl = ?1 AND row_id = ?2 AND col = ?3")?
            .query_row(params![op.table, op.row_id, c.column], |r| r.get(0))
            .optional()?;
        if let Some((mut e, audience)) = match &open {
            Some(id) => read_entry(tx, id)?,
            None => None,
        } {
            let same = |a: &ConflictVersion, b: &ConflictVersion| {
                a.client == b.client
                    && a.time_ms == b.time_ms
                    && a.deleted == b.deleted
                    && a.value == b.value
            };
            for v in &mut e.versions {
                v.won = false;
            }
            for v in [winner, loser] {
                match e.versions.iter_mut().find(|x| same(x, &v)) {
                    Some(x) => {
                        x.won |= v.won;
                        x.seq = x.seq.max(v.seq);
                    }
                    None => e.versions.push(v),
                }
            }
            e.seq = seq;
            e.at_ms = up.now_ms;
            return write_entry(tx, &e, &audience_of(replicas, audience.as_deref()));
        }
    }
    let e = ConflictEntry {
        id: next_id(tx)?,
        table: op.table.clone(),
        row_id: op.row_id.clone(),
        column: c.column.clone(),
        reason: c.reason.clone(),
        status: if c.manual {
            ConflictStatus::Open
        } else {
            ConflictStatus::Auto
        },
        versions: if merged {
            vec![loser]
        } else {
            vec![winner, loser]
        },
        merged: merged.then(|| c.winner.to_json()),
        resolution: None,
        resolved_by: None,
        at_ms: up.now_ms,
        seq,
    };
    if c.manual {
        tx.prepare_cached(
            "INSERT OR REPLACE INTO open_conflicts(tbl, row_id, col, conflict_id) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![op.table, op.row_id, c.column, e.id])?;
    }
    write_entry(tx, &e, &audience_of(replicas, None))
}

/// Applies a resolution op (an update of a `_burrow_conflicts` row setting `status =
/// "resolved"` and `resolution`): closes the open conflict on every device at a new
/// sequence. Returns that sequence, or 0 when the conflict was not open (already resolved
/// elsewhere, or unknown): nothing changes then.
pub fn resolve(
    tx: &Transaction<'_>,
    head: &mut u64,
    op: &Op,
    up: &Uploader<'_>,
) -> Result<u64, StoreError> {
    let Some((mut e, audience)) = read_entry(tx, &op.row_id)? else {
        return Ok(0);
    };
    if e.status != ConflictStatus::Open {
        return Ok(0);
    }
    let resolution = op
        .fields
        .iter()
        .find(|f| f.column == "resolution")
        .map(|f| f.value.to_json());
    *head += 1;
    e.seq = *head;
    e.status = ConflictStatus::Resolved;
    e.resolution = resolution;
    e.resolved_by = Some(up.client_id.to_string());
    e.at_ms = up.now_ms;
    tx.prepare_cached("DELETE FROM open_conflicts WHERE conflict_id = ?1")?
        .execute([&e.id])?;
    write_entry(tx, &e, &audience_of([up.replica], audience.as_deref()))?;
    Ok(e.seq)
}

/// The most recent `limit` records, oldest first.
pub fn list(conn: &rusqlite::Connection, limit: usize) -> Result<Vec<ConflictEntry>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT id, seq, fields FROM (SELECT id, seq, fields FROM rows WHERE tbl = ?1
           ORDER BY seq DESC LIMIT ?2) ORDER BY seq",
    )?;
    let mut rows = stmt.query(params![
        CONFLICTS_TABLE,
        limit.min(i64::MAX as usize) as i64
    ])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let id: String = r.get(0)?;
        let seq = r.get::<_, i64>(1)? as u64;
        let blob: Vec<u8> = r.get(2)?;
        let row =
            server_row_from_parts(false, seq, 0, &blob).map_err(|source| StoreError::Corrupt {
                table: CONFLICTS_TABLE.into(),
                row_id: id.clone(),
                source,
            })?;
        if let Some(e) = ConflictEntry::from_fields(
            &id,
            seq,
            row.fields.iter().map(|(c, f)| (c.as_str(), &f.value)),
        ) {
            out.push(e);
        }
    }
    Ok(out)
}
