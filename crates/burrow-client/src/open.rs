//! Opening a client database: pragmas, internal tables, app tables, triggers, and in-place
//! schema migrations.

use crate::ddl;
use crate::error::{Error, Result};
use burrow_core::Schema;
use burrow_core::resolve::ServerRow;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::path::Path;
use std::time::Duration;

/// How long a connection waits for another writer before failing with `SQLITE_BUSY`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Opens `path` with the pragmas every Burrow connection uses.
pub fn connect(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    conn.set_prepared_statement_cache_capacity(256);
    Ok(conn)
}

/// Runs `PRAGMA quick_check`: `None` when the database is sound, else what is wrong. Fails
/// with `SQLITE_CORRUPT` / `SQLITE_NOTADB` when SQLite cannot even read the file.
pub fn quick_check(conn: &Connection) -> Result<Option<String>> {
    let mut stmt = conn.prepare("PRAGMA quick_check(20)")?;
    let problems: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<_>>()?;
    if problems.len() == 1 && problems[0] == "ok" {
        return Ok(None);
    }
    let mut text = problems.join("; ");
    if text.len() > 500 {
        let cut = (0..=500)
            .rev()
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        text.truncate(cut);
        text.push_str(" …");
    }
    Ok(Some(format!("quick_check: {text}")))
}

/// The schema text and client id stored in an initialised database, if any.
pub fn stored_state(conn: &Connection) -> Result<Option<(String, String)>> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_burrow_local')",
        [],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(None);
    }
    Ok(conn
        .query_row(
            "SELECT schema_text, client_id FROM _burrow_local WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

fn table_columns(conn: &Connection, table: &str) -> Result<Vec<String>> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_info({})", ddl::q(table)))?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(1))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(names)
}

/// Creates or migrates everything `schema` needs, in one transaction. `schema_text` is the
/// file's text, stored so later opens can compare against it. Returns the client id.
pub fn install(
    conn: &mut Connection,
    schema: &Schema,
    schema_text: &str,
    new_client_id: &str,
) -> Result<String> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let client_id = install_in(&tx, schema, schema_text, new_client_id)?;
    tx.commit()?;
    Ok(client_id)
}

/// [`install`] inside the caller's transaction (the caller commits).
pub fn install_in(
    tx: &rusqlite::Transaction<'_>,
    schema: &Schema,
    schema_text: &str,
    new_client_id: &str,
) -> Result<String> {
    let stored = stored_state(tx)?;
    let (client_id, old_schema) = match &stored {
        Some((text, id)) => (id.clone(), Some(Schema::from_toml_str(text)?)),
        None => (new_client_id.to_string(), None),
    };
    let diff = match &old_schema {
        Some(old) => {
            let diff = schema.migration_from(old)?;
            if schema.version == old.version {
                return Ok(client_id); // nothing to do
            }
            Some(diff)
        }
        None => None,
    };
    if table_columns(tx, "_burrow_conflicts")?
        .iter()
        .any(|c| c == "client_seq")
    {
        tx.execute_batch(ddl::RENAME_OLD_CONFLICTS)?;
    }
    tx.execute_batch(ddl::INTERNAL_TABLES)?;
    for t in schema.tables.values() {
        let existing = table_columns(tx, &t.name)?;
        if existing.is_empty() {
            tx.execute_batch(&ddl::create_table(t))?;
        } else {
            for c in &t.columns {
                if !existing.iter().any(|e| e == &c.name) {
                    tx.execute_batch(&format!(
                        "ALTER TABLE {} ADD COLUMN {}",
                        ddl::q(&t.name),
                        ddl::column_def(c)
                    ))?;
                }
            }
        }
        tx.execute_batch(&ddl::drop_triggers(t))?;
        tx.execute_batch(&ddl::create_triggers(t))?;
    }
    if stored.is_none() {
        tx.execute(
            "INSERT INTO _burrow_local(id, client_id, schema_version, schema_text) VALUES (1, ?1, ?2, ?3)",
            params![client_id, schema.version, schema_text],
        )?;
    } else {
        tx.execute(
            "UPDATE _burrow_local SET schema_version = ?1, schema_text = ?2 WHERE id = 1",
            params![schema.version, schema_text],
        )?;
    }
    if let Some(diff) = diff.filter(|d| !d.is_empty()) {
        fill_from_shadow(tx, schema, &diff)?;
    }
    Ok(client_id)
}

/// After an upgrade, fills new tables and columns from the values the server already sent
/// (the shadow keeps fields this app version did not know), so no re-download is needed.
fn fill_from_shadow(
    tx: &rusqlite::Transaction<'_>,
    schema: &Schema,
    diff: &burrow_core::schema::SchemaDiff,
) -> Result<()> {
    let mut touched: Vec<&str> = diff.added_tables.iter().map(String::as_str).collect();
    for (t, _) in &diff.added_columns {
        if !touched.contains(&t.as_str()) {
            touched.push(t);
        }
    }
    tx.execute("UPDATE _burrow_local SET applying = 1 WHERE id = 1", [])?;
    for tname in touched {
        let Some(table) = schema.table(tname) else {
            continue;
        };
        let mut stmt = tx
            .prepare("SELECT id, seq, fields FROM _burrow_shadow WHERE tbl = ?1 AND deleted = 0")?;
        let rows: Vec<(String, i64, Vec<u8>)> = stmt
            .query_map([tname], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (id, seq, blob) in rows {
            let row: ServerRow =
                burrow_proto::convert::server_row_from_parts(false, seq as u64, 0, &blob)
                    .map_err(|e| Error::Corrupt(format!("shadow row {tname}/{id}: {e}")))?;
            crate::apply::write_visible(tx, table, &id, &row, None)?;
        }
    }
    tx.execute("UPDATE _burrow_local SET applying = 0 WHERE id = 1", [])?;
    Ok(())
}
