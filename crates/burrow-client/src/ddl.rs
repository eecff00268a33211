//! SQL the client installs: internal `_burrow_*` tables, the app's synced tables and the
//! capture triggers. Triggers use only SQLite built-ins (no library-registered functions), so
//! writes through any connection — the app's ORM, Python's `sqlite3`, the `sqlite3` shell —
//! are captured in the same transaction as the write.

use burrow_core::{Column, ColumnType, Representation, Table};

/// Internal tables; documented in `docs/schema.md`.
pub const INTERNAL_TABLES: &str = "
CREATE TABLE IF NOT EXISTS _burrow_local (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  client_id TEXT NOT NULL,
  hlc INTEGER NOT NULL DEFAULT 0,
  tx INTEGER NOT NULL DEFAULT 1,
  applying INTEGER NOT NULL DEFAULT 0,
  clock_ms INTEGER,
  cursor_since INTEGER NOT NULL DEFAULT 0,
  cursor_after INTEGER NOT NULL DEFAULT 0,
  last_sync_at_ms INTEGER,
  last_error TEXT,
  schema_version INTEGER NOT NULL,
  schema_text TEXT NOT NULL,
  recovery TEXT,
  refetch_own INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS _burrow_outbox (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  tx INTEGER NOT NULL,
  tbl TEXT NOT NULL,
  row_id TEXT NOT NULL,
  kind INTEGER NOT NULL,
  data TEXT,
  hlc INTEGER NOT NULL,
  base_seq INTEGER NOT NULL DEFAULT 0,
  lane INTEGER NOT NULL DEFAULT 1,
  staged INTEGER NOT NULL DEFAULT 0,
  ack_seq INTEGER
);
CREATE INDEX IF NOT EXISTS _burrow_outbox_by_row ON _burrow_outbox(tbl, row_id);
CREATE INDEX IF NOT EXISTS _burrow_outbox_by_tx ON _burrow_outbox(tx);
CREATE TABLE IF NOT EXISTS _burrow_shadow (
  tbl TEXT NOT NULL,
  id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  deleted INTEGER NOT NULL DEFAULT 0,
  fields BLOB NOT NULL,
  PRIMARY KEY (tbl, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _burrow_rejected (
  seq INTEGER PRIMARY KEY,
  tx INTEGER NOT NULL,
  tbl TEXT NOT NULL,
  row_id TEXT NOT NULL,
  kind INTEGER NOT NULL,
  data TEXT,
  hlc INTEGER NOT NULL,
  code TEXT NOT NULL,
  message TEXT NOT NULL,
  rejected_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS _burrow_lost (
  id INTEGER PRIMARY KEY,
  client_seq INTEGER NOT NULL,
  tbl TEXT NOT NULL,
  row_id TEXT NOT NULL,
  lost_columns TEXT NOT NULL,
  message TEXT NOT NULL,
  data TEXT,
  at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS _burrow_conflicts (
  id TEXT PRIMARY KEY,
  seq INTEGER NOT NULL,
  status TEXT NOT NULL,
  tbl TEXT NOT NULL,
  row_id TEXT NOT NULL,
  col TEXT NOT NULL,
  record TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _burrow_scope (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  scope INTEGER NOT NULL DEFAULT 0,
  catchup_after INTEGER NOT NULL DEFAULT 0,
  catchup_target INTEGER NOT NULL DEFAULT 0
);
INSERT OR IGNORE INTO _burrow_scope(id) VALUES (1);
CREATE TABLE IF NOT EXISTS _burrow_subscriptions (
  stream TEXT NOT NULL,
  params TEXT NOT NULL,
  status TEXT NOT NULL DEFAULT 'pending',
  code TEXT,
  reason TEXT,
  PRIMARY KEY (stream, params)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _burrow_crdt (
  tbl TEXT NOT NULL,
  row_id TEXT NOT NULL,
  col TEXT NOT NULL,
  peer INTEGER NOT NULL,
  doc BLOB NOT NULL,
  PRIMARY KEY (tbl, row_id, col)
) WITHOUT ROWID;
";

/// Renames the table of lost writes a database created before conflict records synced kept
/// under the name `_burrow_conflicts` (run before [`INTERNAL_TABLES`]).
pub const RENAME_OLD_CONFLICTS: &str = "ALTER TABLE _burrow_conflicts RENAME TO _burrow_lost";

/// Quotes an identifier for SQL (names are validated, quoting guards keywords).
pub fn q(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Milliseconds since the Unix epoch, in SQL, from SQLite's own clock.
pub const SQL_NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";

/// A UUIDv7-shaped, time-ordered id from SQL built-ins (the default of every `id`).
pub fn sql_uuid_v7() -> String {
    format!(
        "lower(printf('%08x-%04x-7%03x-%04x-%012x', ({now} >> 16), ({now} & 65535), \
         (random() & 4095), ((random() & 16383) | 32768), (random() & 281474976710655)))",
        now = SQL_NOW_MS
    )
}

fn type_affinity(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Text | ColumnType::Json => "TEXT",
        ColumnType::Integer | ColumnType::Bool => "INTEGER",
        ColumnType::Real => "REAL",
        ColumnType::Blob => "BLOB",
    }
}

fn type_check(c: &Column) -> String {
    let n = q(&c.name);
    match c.ty {
        ColumnType::Text => format!("CHECK (typeof({n}) IN ('text', 'null'))"),
        ColumnType::Integer => format!("CHECK (typeof({n}) IN ('integer', 'null'))"),
        ColumnType::Real => format!("CHECK (typeof({n}) IN ('real', 'integer', 'null'))"),
        ColumnType::Bool => format!("CHECK ({n} IS NULL OR {n} IN (0, 1))"),
        ColumnType::Blob => format!("CHECK (typeof({n}) IN ('blob', 'null'))"),
        ColumnType::Json => {
            format!("CHECK ({n} IS NULL OR (typeof({n}) = 'text' AND json_valid({n})))")
        }
    }
}

/// The column definition used by CREATE TABLE and ALTER TABLE ADD COLUMN.
pub fn column_def(c: &Column) -> String {
    format!("{} {} {}", q(&c.name), type_affinity(c.ty), type_check(c))
}

/// `CREATE TABLE` for an app table.
pub fn create_table(t: &Table) -> String {
    let mut cols = vec![format!(
        "\"id\" TEXT PRIMARY KEY NOT NULL DEFAULT ({})",
        sql_uuid_v7()
    )];
    cols.extend(t.columns.iter().map(column_def));
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\n  {}\n)",
        q(&t.name),
        cols.join(",\n  ")
    )
}

/// How a column's new value is written into the op's JSON: blobs as hex (JSON cannot hold
/// bytes), everything else as is.
fn json_value(c: &Column, row: &str) -> String {
    let v = format!("{row}.{}", q(&c.name));
    match c.ty {
        ColumnType::Blob => format!("CASE WHEN {v} IS NULL THEN NULL ELSE hex({v}) END"),
        // `|| ''` drops the JSON subtype a value from json_insert() & co. carries, which would
        // make json_object() embed it as JSON instead of as the column's text.
        ColumnType::Json => format!("({v} || '')"),
        _ => v,
    }
}

/// Columns per nested JSON call, well under SQLite's default limit of 127 arguments.
const JSON_ARGS_CHUNK: usize = 50;

/// The increment an update made to a `counter` column (`NEW - OLD`, NULL counting as 0).
fn json_increment(c: &Column) -> String {
    let n = q(&c.name);
    format!("(coalesce(NEW.{n}, 0) - coalesce(OLD.{n}, 0))")
}

/// `json_object(...)` of all columns of `NEW`, nested in `json_insert` calls when wide. With
/// `increments`, counter columns hold `NEW - OLD` (an update's increment) instead of `NEW`.
fn json_of_new(t: &Table, increments: bool) -> String {
    let pairs: Vec<String> = t
        .columns
        .iter()
        .map(|c| {
            let v = if increments && c.policy.representation() == Representation::Increment {
                json_increment(c)
            } else {
                json_value(c, "NEW")
            };
            format!("'{}', {}", c.name, v)
        })
        .collect();
    let mut chunks = pairs.chunks(JSON_ARGS_CHUNK);
    let mut expr = format!(
        "json_object({})",
        chunks.next().unwrap_or_default().join(", ")
    );
    for chunk in chunks {
        let paths: Vec<String> = chunk
            .iter()
            .map(|p| {
                let (name, value) = p.split_once(", ").unwrap_or((p, "NULL"));
                format!("'$.{}', {}", name.trim_matches('\''), value)
            })
            .collect();
        expr = format!("json_insert({expr}, {})", paths.join(", "));
    }
    expr
}

/// The JSON of only the columns whose value changed (`NEW` vs `OLD`).
fn json_of_changed(t: &Table) -> String {
    let paths: Vec<String> = t
        .columns
        .iter()
        .map(|c| {
            // A `max_by` column's op carries its ranking column as the writer saw it.
            let unchanged: Vec<String> = std::iter::once(c)
                .chain(t.columns.iter().filter(|m| {
                    matches!(&m.policy, burrow_core::Policy::MaxBy { column } if column == &c.name)
                }))
                .map(|x| format!("NEW.{n} IS OLD.{n}", n = q(&x.name)))
                .collect();
            format!(
                "CASE WHEN {} THEN '$.{}' ELSE '$._burrow_none' END",
                unchanged.join(" AND "),
                c.name
            )
        })
        .collect();
    let mut expr = json_of_new(t, true);
    for chunk in paths.chunks(JSON_ARGS_CHUNK) {
        expr = format!("json_remove({expr}, {})", chunk.join(", "));
    }
    expr
}

fn trigger_name(kind: &str, table: &str) -> String {
    q(&format!("_burrow_{kind}_{table}"))
}

/// Statements that advance the HLC and append one op; shared by the three triggers.
fn capture_body(t: &Table, kind: i64, data: &str, row: &str) -> String {
    format!(
        "UPDATE _burrow_local SET hlc = max(hlc + 1, coalesce(clock_ms, {now}) * 65536);
  INSERT INTO _burrow_outbox(tx, tbl, row_id, kind, data, hlc, base_seq, lane)
  SELECT l.tx, '{name}', {row}.\"id\", {kind}, {data}, l.hlc, l.cursor_since, {lane}
  FROM _burrow_local l;",
        now = SQL_NOW_MS,
        name = t.name,
        lane = t.priority as i64,
    )
}

/// Drops the capture triggers of a table (before re-creating them on a schema change).
pub fn drop_triggers(t: &Table) -> String {
    ["ins", "upd", "del", "pk"]
        .iter()
        .map(|k| format!("DROP TRIGGER IF EXISTS {};", trigger_name(k, &t.name)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The capture triggers of a table. They do nothing while the library applies downloaded
/// changes (`_burrow_local.applying = 1` inside the apply transaction).
pub fn create_triggers(t: &Table) -> String {
    let name = q(&t.name);
    let not_applying = "(SELECT applying FROM _burrow_local) = 0";
    let any_changed: Vec<String> = t
        .columns
        .iter()
        .map(|c| format!("NEW.{n} IS NOT OLD.{n}", n = q(&c.name)))
        .collect();
    format!(
        "CREATE TRIGGER {pk} BEFORE UPDATE OF \"id\" ON {name}
WHEN NEW.\"id\" IS NOT OLD.\"id\"
BEGIN
  SELECT RAISE(ABORT, 'burrow: the id of a synced row cannot change; delete and insert instead');
END;
CREATE TRIGGER {ins} AFTER INSERT ON {name} WHEN {not_applying}
BEGIN
  {ins_body}
END;
CREATE TRIGGER {upd} AFTER UPDATE ON {name} WHEN {not_applying} AND ({any_changed})
BEGIN
  {upd_body}
END;
CREATE TRIGGER {del} AFTER DELETE ON {name} WHEN {not_applying}
BEGIN
  {del_body}
END;",
        pk = trigger_name("pk", &t.name),
        ins = trigger_name("ins", &t.name),
        upd = trigger_name("upd", &t.name),
        del = trigger_name("del", &t.name),
        any_changed = any_changed.join(" OR "),
        ins_body = capture_body(t, 1, &json_of_new(t, false), "NEW"),
        upd_body = capture_body(t, 2, &json_of_changed(t), "NEW"),
        del_body = capture_body(t, 3, "NULL", "OLD"),
    )
}
