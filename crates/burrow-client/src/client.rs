//! The embeddable client: open a database, write with SQL (captured), query, sync, inspect.

use crate::apply::{self, data_columns};
use crate::error::{Error, Result};
use crate::journal::Journal;
use crate::outbox::{self, UPLOAD_BYTES_MAX, UPLOAD_OPS_MAX};
use crate::recovery::{self, Recovery};
use crate::sql_value::sql_to_json;
use crate::transport::{Transport, TransportError};
use burrow_core::conflict::{CONFLICTS_TABLE, ConflictEntry, ConflictStatus, WHOLE_ROW};
use burrow_core::env::{Clock, SystemClock};
use burrow_core::{Cursor, Schema, Value};
use burrow_proto::convert::{op_to_wire, row_change_from_wire};
use burrow_proto::{PROTOCOL_VERSION, v1};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// A sync request on its way.
type InFlight<'a> = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = std::result::Result<
                    (v1::SyncResponse, crate::transport::TrafficStats),
                    crate::transport::TransportError,
                >,
            > + Send
            + 'a,
    >,
>;

/// Default upper bound on one downloaded page (uncompressed).
pub const PAGE_BYTES_MAX: u32 = 4 << 20;

/// A request carrying the bulk lane holds about this many seconds of upload.
pub const BULK_REQUEST_SECS: usize = 1;
/// The smallest bulk request (bytes), whatever the measured rate.
pub const BULK_REQUEST_BYTES_MIN: usize = 16 << 10;
/// The bulk request size before any upload rate is measured.
pub const BULK_REQUEST_BYTES_START: usize = 64 << 10;

/// Tunables of a client; `Default` is right for apps.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Source of time for op timestamps; `None` uses SQLite's clock in the triggers.
    pub clock: Option<Arc<dyn Clock>>,
    /// Most ops per upload request.
    pub upload_ops_max: usize,
    /// Most bytes per upload request.
    pub upload_bytes_max: usize,
    /// Largest page the client asks for.
    pub page_bytes_max: u32,
    /// The id a *new* database gets; `None` draws a UUIDv7. Ignored for an existing database,
    /// whose id never changes. (Deterministic runs set it.)
    pub client_id: Option<String>,
    /// What may sync on which network ([`Client::set_network`]).
    pub network_policy: crate::network::NetworkPolicy,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            clock: None,
            upload_ops_max: UPLOAD_OPS_MAX,
            upload_bytes_max: UPLOAD_BYTES_MAX,
            page_bytes_max: PAGE_BYTES_MAX,
            client_id: None,
            network_policy: crate::network::NetworkPolicy::default(),
        }
    }
}

/// A Burrow client database. Cheap to share behind an `Arc`; all methods take `&self`.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use burrow_client::Client;
/// use burrow_core::Schema;
/// let dir = tempfile::tempdir()?;
/// let schema = Schema::from_toml_str("version = 1\n[tables.notes.columns]\nbody = \"text\"\n")?;
/// let client = Client::open(dir.path().join("app.db"), &schema)?;
/// client.execute("INSERT INTO notes(id, body) VALUES ('n1', 'hello')")?;
/// assert_eq!(client.status()?.pending_ops, 1);
/// let rows = client.query_json("SELECT body FROM notes")?;
/// assert_eq!(rows[0]["body"], "hello");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Client {
    conn: Mutex<Connection>,
    /// A read-only connection for the app's queries ([`Client::query_json`]): in WAL mode it
    /// reads the last committed state while a sync applies a page through `conn`, so app
    /// reads never wait for sync.
    reader: Mutex<Connection>,
    schema: Schema,
    client_id: String,
    path: PathBuf,
    options: ClientOptions,
    /// The op journal beside the database; locked after `conn`, never before.
    journal: Mutex<Journal>,
    /// After a rebuild: pulls ask for this client's own writes until one from cursor 0 is
    /// complete (mirrors `_burrow_local.refetch_own`).
    refetch_own: AtomicBool,
    /// What the app last said about the network and battery.
    network: Mutex<crate::network::NetworkState>,
    /// The background runner's state ([`Client::run`]).
    run_status: Mutex<crate::runner::RunStatus>,
    /// Events for the app ([`Client::events`]).
    events: tokio::sync::broadcast::Sender<crate::runner::SyncEvent>,
    /// Wakes the runner for a retry (network back, new token).
    retry_wake: tokio::sync::Notify,
    /// Wakes the runner after a local write.
    write_wake: tokio::sync::Notify,
    /// The upload waiting for the server's answer, if any ([`Status::in_flight`]).
    in_flight: Mutex<Option<InFlightStatus>>,
    /// Measured upload bytes per second (sizes bulk requests).
    upload_rate: std::sync::atomic::AtomicU64,
    /// The fastest round trip of a small exchange, in ms (0 = none yet).
    round_trip_ms: std::sync::atomic::AtomicU64,
}

/// An upload on its way: what a status screen shows as "sending".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InFlightStatus {
    /// Ops in the request.
    pub ops: u64,
    /// Their approximate uncompressed size.
    pub bytes: u64,
    /// Ops per lane (`critical`, `normal`, `bulk`).
    pub by_lane: std::collections::BTreeMap<String, u64>,
    /// When the request was sent (RFC 3339, UTC).
    pub since: String,
}

impl InFlightStatus {
    fn of(batch: &outbox::Batch, now_ms: u64) -> InFlightStatus {
        InFlightStatus {
            ops: batch.op_count as u64,
            bytes: batch.bytes as u64,
            by_lane: batch
                .by_lane
                .iter()
                .map(|(lane, n)| (lane.as_str().to_string(), *n))
                .collect(),
            since: rfc3339_ms(now_ms),
        }
    }
}

/// Whether the server answered but refused an upload for now (overloaded, unavailable,
/// rate-limited, failing): a download may still succeed. Network failures and refused
/// tokens are not: a download would fail the same way.
fn upload_refused(e: &crate::transport::TransportError) -> bool {
    matches!(e, crate::transport::TransportError::Status { status, .. } if *status >= 500 || *status == 429 || *status == 413)
}

/// What one call to [`Client::execute`] captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ExecReport {
    /// Rows changed by the statements (SQLite's total_changes delta).
    pub rows_changed: u64,
    /// Ops captured into the outbox.
    pub ops_captured: u64,
}

/// What one [`Client::sync`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    /// Requests sent.
    pub requests: u64,
    /// Ops uploaded (including re-sends).
    pub ops_sent: u64,
    /// Ops the server applied (possibly after resolving a conflict).
    pub ops_acked: u64,
    /// Ops the server refused; now in the rejected list.
    pub ops_rejected: u64,
    /// Ops whose fields lost a conflict (some or all).
    pub conflicts: u64,
    /// Row changes received.
    pub changes_received: u64,
    /// Ops settled (removed from the outbox).
    pub ops_settled: u64,
    /// Request bytes on the wire.
    pub bytes_up: u64,
    /// Response bytes on the wire.
    pub bytes_down: u64,
    /// The cursor after the sync.
    pub cursor: u64,
    /// Everything the network policy allows was uploaded and the download reached the head
    /// (false when [`Client::sync_once`] ran out of time).
    pub complete: bool,
    /// Ops still in the outbox afterwards (held back by the network policy or the deadline,
    /// or acknowledged and waiting for the cursor).
    pub ops_left: u64,
    /// Exchanges sent again at once because the connection broke mid-request
    /// ([`crate::TransportError::ConnectionLost`]); the attempt carried on instead of failing.
    pub resumed: u64,
}

/// Connection losses in a row (no exchange answered in between) after which a sync gives up
/// and the runner backs off: a link that breaks every request is down, not flaky.
pub const RESUMES_MAX: u32 = 3;

/// An op the server refused, kept for the app to inspect.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RejectedOp {
    /// The op's client sequence.
    pub client_seq: u64,
    /// Table.
    pub table: String,
    /// Row id.
    pub row_id: String,
    /// `insert`, `update` or `delete`.
    pub kind: String,
    /// The values the op carried (JSON object), if any.
    pub data: Option<serde_json::Value>,
    /// Stable reason code.
    pub code: String,
    /// Reason in words.
    pub message: String,
}

/// A local record of an op that lost (some of) its fields to a concurrent change (the values
/// are also in the server's conflict log and, for the devices involved, in
/// [`Client::conflicts`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LostWrite {
    /// The op's client sequence.
    pub client_seq: u64,
    /// Table.
    pub table: String,
    /// Row id.
    pub row_id: String,
    /// Columns that lost.
    pub lost_columns: Vec<String>,
    /// The server's explanation.
    pub message: String,
    /// The op's values (JSON object).
    pub data: Option<serde_json::Value>,
}

/// How the user resolves a manual conflict ([`Client::resolve`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    /// Keep the version at this index of the record's `versions`.
    Pick(usize),
    /// Store this value instead (for a whole-row conflict: a JSON object of columns).
    Value(serde_json::Value),
}

/// A JSON value as a value of `table.column`.
fn json_to_column(
    table: &burrow_core::Table,
    column: &str,
    v: &serde_json::Value,
) -> Result<Value> {
    let col = table
        .column(column)
        .ok_or_else(|| Error::Invalid(format!("{} has no column {column}", table.name)))?;
    let v = match (col.ty, v) {
        (burrow_core::ColumnType::Json, j) if !j.is_string() && !j.is_null() => {
            serde_json::Value::String(j.to_string())
        }
        (burrow_core::ColumnType::Bool, serde_json::Value::Bool(b)) => {
            serde_json::Value::from(i64::from(*b))
        }
        _ => v.clone(),
    };
    crate::sql_value::from_trigger_json(col.ty, &v).ok_or_else(|| {
        Error::Invalid(format!(
            "{v} is not a {} value for {}.{column}",
            col.ty, table.name
        ))
    })
}

/// A snapshot of the client's sync state, for a status screen.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    /// This device's stable id.
    pub client_id: String,
    /// Ops in the outbox (not yet acknowledged, or acknowledged but not yet settled).
    pub pending_ops: u64,
    /// Pending ops per lane: `critical`, `normal`, `bulk`.
    pub pending_by_lane: std::collections::BTreeMap<String, u64>,
    /// Approximate bytes still to upload (captured values, uncompressed).
    pub pending_bytes: u64,
    /// Approximate bytes still to upload per lane.
    pub pending_bytes_by_lane: std::collections::BTreeMap<String, u64>,
    /// The upload waiting for the server's answer right now, if any.
    pub in_flight: Option<InFlightStatus>,
    /// Every server change up to this sequence is applied locally.
    pub cursor: u64,
    /// Time of the last complete sync (RFC 3339, UTC), if any.
    pub last_sync_at: Option<String>,
    /// Number of ops the server refused.
    pub rejected_ops: u64,
    /// The refused ops with their reasons.
    pub rejected: Vec<RejectedOp>,
    /// Number of local ops that lost a conflict.
    pub conflicts: u64,
    /// Manual conflicts waiting for the user ([`Client::conflicts`], [`Client::resolve`]).
    pub open_conflicts: u64,
    /// What background sync is doing ([`Client::run`]): `idle`, `syncing`, `offline`,
    /// `backing_off` or `auth_required`.
    pub state: crate::runner::SyncState,
    /// When the next attempt is due while backing off (RFC 3339, UTC).
    pub next_retry_at: Option<String>,
    /// The network the app last reported.
    pub network: crate::network::NetworkState,
    /// The last sync error, cleared by a successful sync.
    pub last_error: Option<String>,
    /// Schema version of the database.
    pub schema_version: u32,
    /// The last automatic rebuild of a damaged database, if there was one.
    pub recovery: Option<Recovery>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Formats Unix milliseconds as RFC 3339 UTC (`2026-11-26T05:15:28.123Z`).
pub fn rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms % 1000
    )
}

fn kind_name(kind: i64) -> String {
    match burrow_core::OpKind::from_code(kind) {
        Some(burrow_core::OpKind::Insert) => "insert",
        Some(burrow_core::OpKind::Update) => "update",
        Some(burrow_core::OpKind::Delete) => "delete",
        None => "unknown",
    }
    .to_string()
}

impl Client {
    /// Opens (creating or migrating) the database at `path` for `schema`.
    ///
    /// Every open runs `PRAGMA quick_check`. A damaged database (or one whose file is gone
    /// while its op journal `<path>.journal` remains) is rebuilt: the damaged file is moved to
    /// `<path>.corrupt-<n>`, the pending ops are restored from the journal, and the next sync
    /// downloads everything again. [`Client::recovery`] tells what was done.
    pub fn open(path: impl AsRef<Path>, schema: &Schema) -> Result<Client> {
        Client::open_with(path, schema, None, ClientOptions::default())
    }

    /// Opens with explicit options; `schema_text` is stored for later opens without a schema
    /// (defaults to a canonical rendering when `None`).
    pub fn open_with(
        path: impl AsRef<Path>,
        schema: &Schema,
        schema_text: Option<&str>,
        options: ClientOptions,
    ) -> Result<Client> {
        let text = match schema_text {
            Some(t) => t.to_string(),
            None => schema.to_toml(),
        };
        Client::open_checked(
            path.as_ref(),
            recovery::Want::Schema {
                schema,
                text: &text,
            },
            options,
        )
    }

    /// Opens after a quick integrity check, rebuilding a damaged database (see
    /// `docs/design/corruption.md`), and opens the op journal.
    fn open_checked(
        path: &Path,
        want: recovery::Want<'_>,
        options: ClientOptions,
    ) -> Result<Client> {
        let fresh_id = match &options.client_id {
            Some(id) => id.clone(),
            None => uuid::Uuid::now_v7().to_string(),
        };
        let now_ms = match &options.clock {
            Some(c) => c.now_ms(),
            None => SystemClock.now_ms(),
        };
        let recovery::Opened {
            mut conn,
            schema,
            schema_text,
            client_id,
            rebuilt,
        } = recovery::open(path, want, &fresh_id, now_ms)?;
        let journal = Journal::open(&mut conn, path, &client_id, &schema_text, rebuilt)?;
        let refetch_own: bool = conn.query_row(
            "SELECT refetch_own FROM _burrow_local WHERE id = 1",
            [],
            |r| r.get(0),
        )?;
        let reader = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        reader.busy_timeout(std::time::Duration::from_secs(30))?;
        Ok(Client {
            conn: Mutex::new(conn),
            reader: Mutex::new(reader),
            schema,
            client_id,
            path: path.to_path_buf(),
            options,
            journal: Mutex::new(journal),
            refetch_own: AtomicBool::new(refetch_own),
            network: Mutex::new(crate::network::NetworkState::default()),
            run_status: Mutex::new(crate::runner::RunStatus::default()),
            events: tokio::sync::broadcast::channel(256).0,
            retry_wake: tokio::sync::Notify::new(),
            write_wake: tokio::sync::Notify::new(),
            in_flight: Mutex::new(None),
            upload_rate: std::sync::atomic::AtomicU64::new(0),
            round_trip_ms: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Opens an existing Burrow database with the schema stored in it.
    pub fn open_existing(path: impl AsRef<Path>) -> Result<Client> {
        Client::open_existing_with(path, ClientOptions::default())
    }

    /// Opens an existing Burrow database with explicit options.
    /// A damaged database is rebuilt with the schema its op journal holds.
    pub fn open_existing_with(path: impl AsRef<Path>, options: ClientOptions) -> Result<Client> {
        Client::open_checked(path.as_ref(), recovery::Want::Existing, options)
    }

    /// This device's stable id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The schema the database is at.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the options (e.g. to inject a clock after opening).
    pub fn set_options(&mut self, options: ClientOptions) {
        self.options = options;
    }

    /// Runs `f` in one write transaction whose changes to synced tables are captured as one
    /// local transaction (applied all-or-nothing on the server).
    pub fn write<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<(T, ExecReport)> {
        self.write_in(None, f)
    }

    /// [`Client::write`] with the upload lane of every op it captures set to `priority`
    /// instead of each table's default (e.g. a delivery confirmation that must overtake
    /// photos: `Priority::Critical`).
    pub fn write_with_priority<T>(
        &self,
        priority: burrow_core::Priority,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<(T, ExecReport)> {
        self.write_in(Some(priority), f)
    }

    fn write_in<T>(
        &self,
        priority: Option<burrow_core::Priority>,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<(T, ExecReport)> {
        self.write_local(|tx, _| {
            let my_tx: i64 =
                tx.query_row("SELECT tx FROM _burrow_local WHERE id = 1", [], |r| {
                    r.get(0)
                })?;
            let before = tx.total_changes();
            let out = f(tx)?;
            let all_changes = tx.total_changes().saturating_sub(before);
            if let Some(p) = priority {
                // After counting the app's changes: this is the library's own write.
                tx.execute(
                    "UPDATE _burrow_outbox SET lane = ?2 WHERE tx = ?1",
                    params![my_tx, p as i64],
                )?;
            }
            let ops_captured: i64 = tx.query_row(
                "SELECT count(*) FROM _burrow_outbox WHERE tx = ?1",
                [my_tx],
                |r| r.get(0),
            )?;
            // Each captured op made two writes of its own (clock update and outbox insert).
            let rows_changed = all_changes.saturating_sub(2 * ops_captured as u64);
            if ops_captured > 0 {
                self.emit(crate::runner::SyncEvent::Written {
                    ops: ops_captured as u64,
                });
            }
            Ok((
                out,
                ExecReport {
                    rows_changed,
                    ops_captured: ops_captured as u64,
                },
            ))
        })
    }

    /// Runs `f` in one write transaction whose captured ops form one local transaction (the
    /// body of [`Client::write`], and of the library's own multi-step writes); journals what
    /// was captured once committed.
    pub(crate) fn write_local<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>, &Schema) -> Result<T>,
    ) -> Result<T> {
        let mut conn = lock(&self.conn);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let clock_ms = self.options.clock.as_ref().map(|c| c.now_ms() as i64);
        tx.execute(
            "UPDATE _burrow_local SET tx = tx + 1, clock_ms = ?1 WHERE id = 1",
            [clock_ms],
        )?;
        let out = f(&tx, &self.schema)?;
        tx.execute(
            "UPDATE _burrow_local SET tx = tx + 1, clock_ms = NULL WHERE id = 1",
            [],
        )?;
        fail::fail_point!("client-write-before-commit", |_| Err(
            crate::error::injected("client-write-before-commit")
        ));
        tx.commit()?;
        // Journal what this transaction (and any other connection since) captured. The write
        // is committed either way; an op not journaled now is journaled by the next append.
        if let Err(e) = lock(&self.journal).append_pending(&mut conn) {
            tracing::warn!(error = %e, "could not append to the op journal; will retry");
        }
        self.write_wake.notify_one();
        fail::fail_point!("client-write-after-commit", |_| Err(
            crate::error::injected("client-write-after-commit")
        ));
        Ok(out)
    }

    /// Executes one or more `;`-separated statements in one local transaction.
    pub fn execute(&self, sql: &str) -> Result<ExecReport> {
        Ok(self.write(|tx| tx.execute_batch(sql))?.1)
    }

    /// Runs a read-only query and returns its rows as JSON objects (blobs as hex). It reads
    /// the last committed state through its own connection, so it never waits for a sync
    /// applying a page; writes go through [`Client::execute`] / [`Client::write`].
    pub fn query_json(&self, sql: &str) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
        let conn = lock(&self.reader);
        let mut stmt = conn.prepare(sql)?;
        let names: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let mut obj = serde_json::Map::new();
            for (i, n) in names.iter().enumerate() {
                obj.insert(n.clone(), sql_to_json(r.get_ref(i)?));
            }
            out.push(obj);
        }
        Ok(out)
    }

    /// Runs `f` with the connection for reads (do not write through it: use
    /// [`Client::write`] so the write is grouped into one local transaction).
    pub fn with_connection<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        f(&lock(&self.conn))
    }

    /// The current cursor.
    pub fn cursor(&self) -> Result<Cursor> {
        let conn = lock(&self.conn);
        let (since, after): (i64, i64) = conn.query_row(
            "SELECT cursor_since, cursor_after FROM _burrow_local WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(Cursor {
            since: since as u64,
            after: after as u64,
        })
    }

    /// Tells the client what network it has (and whether the battery is low): `Offline`
    /// stops every attempt ([`Error::Offline`]), `Metered` uploads only the lanes the
    /// [`crate::NetworkPolicy`] allows there (critical by default) and downloads in small
    /// pages. Takes effect at the next sync.
    pub fn set_network(&self, state: crate::network::NetworkState) {
        let was = std::mem::replace(&mut *lock(&self.network), state);
        if was.network != state.network && state.network != crate::network::Network::Offline {
            // The network came back (or changed): an immediate attempt.
            self.retry_now();
        }
    }

    pub(crate) fn events_tx(&self) -> &tokio::sync::broadcast::Sender<crate::runner::SyncEvent> {
        &self.events
    }

    pub(crate) fn emit(&self, event: crate::runner::SyncEvent) {
        // No subscriber is fine: events are for whoever listens.
        let _ = self.events.send(event);
    }

    pub(crate) fn retry_notify(&self) -> &tokio::sync::Notify {
        &self.retry_wake
    }

    pub(crate) fn write_notify(&self) -> &tokio::sync::Notify {
        &self.write_wake
    }

    /// Sets the runner's state; whether it changed.
    pub(crate) fn replace_run_status(&self, new: crate::runner::RunStatus) -> bool {
        let mut cur = lock(&self.run_status);
        let changed = cur.state != new.state || cur.next_retry_at_ms != new.next_retry_at_ms;
        *cur = new;
        changed
    }

    /// What the app last reported (default: unmetered, battery fine).
    pub fn network(&self) -> crate::network::NetworkState {
        *lock(&self.network)
    }

    /// The time ops are stamped with (the injected clock, or the system clock).
    pub(crate) fn now_ms(&self) -> u64 {
        match &self.options.clock {
            Some(c) => c.now_ms(),
            None => SystemClock.now_ms(),
        }
    }

    /// Uploads every pending op and downloads to the server's head, committing progress as it
    /// goes. On error, what was done stays done and the rest is retried next time.
    pub async fn sync<T: Transport>(&self, transport: &T) -> Result<SyncReport> {
        self.sync_until(transport, None).await
    }

    /// Syncs as much as fits before `deadline_ms` (on the client's clock), for OS background
    /// windows (iOS BGTask, Android WorkManager): no request starts after the deadline, and
    /// everything answered so far stays applied. The report says what is left
    /// (`complete`, `ops_left`); the next call carries on.
    ///
    /// ```no_run
    /// # async fn f(client: &burrow_client::Client, t: &burrow_client::HttpTransport, now_ms: u64)
    /// # -> burrow_client::Result<()> {
    /// let report = client.sync_once(t, now_ms + 25_000).await?; // a 30 s BGTask, with margin
    /// if !report.complete {
    ///     // schedule another background window; `report.ops_left` ops still wait
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn sync_once<T: Transport>(
        &self,
        transport: &T,
        deadline_ms: u64,
    ) -> Result<SyncReport> {
        self.sync_until(transport, Some(deadline_ms)).await
    }

    async fn sync_until<T: Transport>(
        &self,
        transport: &T,
        deadline_ms: Option<u64>,
    ) -> Result<SyncReport> {
        let result = self.sync_inner(transport, deadline_ms).await;
        let mut conn = lock(&self.conn);
        match &result {
            Ok(_) => conn.execute(
                "UPDATE _burrow_local SET last_sync_at_ms = ?1, last_error = NULL WHERE id = 1",
                [self.now_ms() as i64],
            )?,
            Err(e) => conn.execute(
                "UPDATE _burrow_local SET last_error = ?1 WHERE id = 1",
                [e.to_string()],
            )?,
        };
        // Drop acknowledged ops from the journal (the old file stays whole if this fails).
        if let Err(e) = lock(&self.journal).compact_if_stale(&mut conn) {
            tracing::warn!(error = %e, "could not compact the op journal");
        }
        result
    }

    /// The stored cursor as the wire carries it (with the selective-sync position).
    fn wire_cursor(&self) -> Result<v1::Cursor> {
        let conn = lock(&self.conn);
        Ok(conn.query_row(
            "SELECT l.cursor_since, l.cursor_after, s.scope, s.catchup_after, s.catchup_target
             FROM _burrow_local l, _burrow_scope s WHERE l.id = 1 AND s.id = 1",
            [],
            |r| {
                Ok(v1::Cursor {
                    since: r.get::<_, i64>(0)? as u64,
                    after: r.get::<_, i64>(1)? as u64,
                    scope: r.get::<_, i64>(2)? as u64,
                    catchup_after: r.get::<_, i64>(3)? as u64,
                    catchup_target: r.get::<_, i64>(4)? as u64,
                })
            },
        )?)
    }

    fn request(
        &self,
        batch: &outbox::Batch,
        cursor: v1::Cursor,
        subscriptions: &[v1::Subscription],
    ) -> v1::SyncRequest {
        v1::SyncRequest {
            protocol_version: PROTOCOL_VERSION,
            schema_version: self.schema.version,
            client_id: self.client_id.clone(),
            device_time_ms: self.now_ms(),
            upload: batch
                .txs
                .iter()
                .map(|t| v1::LocalTx {
                    tx_id: t.tx,
                    ops: t.ops.iter().map(op_to_wire).collect(),
                    more_parts: t.more_parts,
                })
                .collect(),
            cursor: Some(cursor),
            subscriptions: subscriptions.to_vec(),
            page_bytes_max: self
                .options
                .network_policy
                .page_bytes_max(self.network(), self.options.page_bytes_max),
            download: true,
            include_own_changes: self.refetch_own.load(Ordering::SeqCst),
        }
    }

    async fn sync_inner<T: Transport>(
        &self,
        transport: &T,
        deadline_ms: Option<u64>,
    ) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        let network = self.network();
        let Some(allowed) = self.options.network_policy.allowed_lanes(network) else {
            return Err(Error::Offline);
        };
        // A sync owes the server every op queued when it started; writes made meanwhile go
        // along while it runs but do not keep it running (the app may write forever).
        // The subscriptions this sync asks for (verdicts are recorded for these only).
        let subs = self.wire_subscriptions();
        let owed_through = self.with_connection(|c| {
            Ok(c.query_row(
                "SELECT coalesce(max(seq), 0) FROM _burrow_outbox",
                [],
                |r| r.get::<_, i64>(0),
            )?)
        })?;
        // While a multi-page download is applied, the next page is already requested.
        let mut prefetch: Option<InFlight<'_>> = None;
        // Connection losses since the last answered exchange.
        let mut lost_in_a_row = 0;
        loop {
            let prefetched = prefetch.is_some();
            let (batch, in_flight) = match prefetch.take() {
                Some(f) => (outbox::Batch::default(), f),
                None if deadline_ms.is_some_and(|d| self.now_ms() >= d) => {
                    // Out of time: stop before starting another request.
                    report.ops_left = self.pending_ops()?;
                    report.cursor = self.cursor()?.since;
                    return Ok(report);
                }
                None => {
                    let mut conn = lock(&self.conn);
                    let batch = outbox::read_batch(
                        &mut conn,
                        &self.schema,
                        outbox::BatchLimits {
                            ops_max: self.options.upload_ops_max,
                            bytes_max: self.options.upload_bytes_max,
                            bulk_bytes_max: self.bulk_bytes_max(),
                        },
                        &allowed,
                        Some(&mut lock(&self.journal)),
                    )?;
                    if let Some(u) = &batch.unsendable {
                        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                        tx.execute("UPDATE _burrow_local SET applying = 1 WHERE id = 1", [])?;
                        report.ops_rejected +=
                            self.reject_with_transaction(&tx, u.seq, u.code, &u.reason)?;
                        tx.execute("UPDATE _burrow_local SET applying = 0 WHERE id = 1", [])?;
                        tx.commit()?;
                        continue;
                    }
                    drop(conn);
                    let req = self.request(&batch, self.wire_cursor()?, &subs);
                    let f: InFlight<'_> = Box::pin(transport.sync(req));
                    (batch, f)
                }
            };
            let sent_at = self.now_ms();
            if batch.op_count > 0 {
                self.set_in_flight(Some(InFlightStatus::of(&batch, sent_at)));
            }
            let answer = in_flight.await;
            if batch.op_count > 0 {
                self.set_in_flight(None);
            }
            if let Ok((_, traffic)) = &answer {
                self.note_exchange(traffic, self.now_ms().saturating_sub(sent_at));
            }
            let (resp, traffic) = match answer {
                Ok(answer) => answer,
                Err(e) if batch.op_count > 0 && upload_refused(&e) => {
                    // Downloads never wait for uploads: the server answered but refused this
                    // upload (busy, 503, …); pull what it has before backing off.
                    self.pull_only(transport, deadline_ms, &mut report, &subs)
                        .await;
                    return Err(e.into());
                }
                Err(TransportError::ConnectionLost(why))
                    if lost_in_a_row < RESUMES_MAX
                        && deadline_ms.is_none_or(|d| self.now_ms() < d) =>
                {
                    // Resume: the ops are still in the outbox and the cursor is where the last
                    // applied page left it, so the loop sends the same exchange again (the
                    // server deduplicates ops it already applied).
                    lost_in_a_row += 1;
                    report.resumed += 1;
                    tracing::debug!(%why, lost_in_a_row, "connection lost mid-sync; resuming");
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            lost_in_a_row = 0;
            fail::fail_point!("client-sync-before-apply", |_| Err(crate::error::injected(
                "client-sync-before-apply"
            )));
            report.requests += 1;
            report.ops_sent += batch.op_count as u64;
            report.bytes_up += traffic.bytes_up;
            report.bytes_down += traffic.bytes_down;
            let more = resp.more;
            if let (true, Some(c)) = (more, resp.cursor) {
                let next = self.request(&outbox::Batch::default(), c, &subs);
                let mut f: InFlight<'_> = Box::pin(transport.sync(next));
                // Poll once so the request is on its way while this page is applied.
                let early =
                    std::future::poll_fn(|cx| std::task::Poll::Ready(f.as_mut().poll(cx))).await;
                prefetch = Some(match early {
                    std::task::Poll::Ready(done) => Box::pin(std::future::ready(done)),
                    std::task::Poll::Pending => f,
                });
            }
            let answered = self.apply_response(resp, &mut report, &subs)?;
            if batch.op_count > 0 && answered == 0 {
                return Err(Error::Protocol(
                    "the server answered none of the uploaded ops".into(),
                ));
            }
            // Done at the last page once nothing owed is left unanswered (held parts of a large
            // transaction count as unanswered), or when a round found nothing at all to send.
            // (A prefetched page carries no uploads: the outbox is read again after it.)
            if !more && !prefetched && (batch.is_empty() || !self.owes_ops(owed_through)?) {
                break;
            }
        }
        report.complete = true;
        report.ops_left = self.pending_ops()?;
        report.cursor = self.cursor()?.since;
        Ok(report)
    }

    /// Downloads to the head without uploading (after the server refused an upload), page by
    /// page, each applied with its cursor. Best effort: a failure ends it quietly, since the
    /// caller reports the upload's error.
    async fn pull_only<T: Transport>(
        &self,
        transport: &T,
        deadline_ms: Option<u64>,
        report: &mut SyncReport,
        subs: &[v1::Subscription],
    ) {
        loop {
            if deadline_ms.is_some_and(|d| self.now_ms() >= d) {
                return;
            }
            let Ok(cursor) = self.wire_cursor() else {
                return;
            };
            let req = self.request(&outbox::Batch::default(), cursor, subs);
            let (resp, traffic) = match transport.sync(req).await {
                Ok(answer) => answer,
                Err(e) => {
                    tracing::debug!(error = %e, "download after a refused upload failed");
                    return;
                }
            };
            report.requests += 1;
            report.bytes_up += traffic.bytes_up;
            report.bytes_down += traffic.bytes_down;
            let more = resp.more;
            if let Err(e) = self.apply_response(resp, report, subs) {
                tracing::warn!(error = %e, "could not apply a download after a refused upload");
                return;
            }
            if !more {
                return;
            }
        }
    }

    /// Learns the link from one exchange: small ones give the round trip (the fastest seen),
    /// large uploads the upload rate net of it (an exponential average; 0 = not yet known).
    fn note_exchange(&self, traffic: &crate::transport::TrafficStats, elapsed_ms: u64) {
        if traffic.bytes_up < 2048 && traffic.bytes_down < 2048 {
            let rtt = self.round_trip_ms.load(Ordering::Relaxed);
            if rtt == 0 || elapsed_ms < rtt {
                self.round_trip_ms
                    .store(elapsed_ms.max(1), Ordering::Relaxed);
            }
            return;
        }
        if traffic.bytes_up < BULK_REQUEST_BYTES_MIN as u64 {
            return; // too small to say anything about bandwidth
        }
        let rtt = self.round_trip_ms.load(Ordering::Relaxed);
        let sending = elapsed_ms.saturating_sub(rtt).max(1);
        let rate = traffic.bytes_up.saturating_mul(1000) / sending;
        let old = self.upload_rate.load(Ordering::Relaxed);
        let new = if old == 0 { rate } else { (old + rate) / 2 };
        self.upload_rate.store(new, Ordering::Relaxed);
    }

    /// How many bytes a request carrying the bulk lane may hold: about
    /// [`BULK_REQUEST_SECS`] of upload at the measured rate, so a critical op written during
    /// a bulk upload waits little; small until a rate is measured.
    fn bulk_bytes_max(&self) -> usize {
        let rate = self.upload_rate.load(Ordering::Relaxed) as usize;
        let fit = if rate == 0 {
            BULK_REQUEST_BYTES_START
        } else {
            rate.saturating_mul(BULK_REQUEST_SECS)
        };
        fit.clamp(BULK_REQUEST_BYTES_MIN, self.options.upload_bytes_max.max(1))
    }

    fn set_in_flight(&self, status: Option<InFlightStatus>) {
        *lock(&self.in_flight) = status;
    }

    /// Ops in the outbox (unanswered, or acknowledged but not yet settled).
    fn pending_ops(&self) -> Result<u64> {
        self.with_connection(|c| {
            Ok(c.query_row("SELECT count(*) FROM _burrow_outbox", [], |r| {
                r.get::<_, i64>(0)
            })? as u64)
        })
    }

    /// Whether ops up to `seq` still wait for the server's answer.
    fn owes_ops(&self, seq: i64) -> Result<bool> {
        self.with_connection(|c| {
            Ok(c.query_row(
                "SELECT EXISTS(SELECT 1 FROM _burrow_outbox WHERE seq <= ?1 AND ack_seq IS NULL)",
                [seq],
                |r| r.get(0),
            )?)
        })
    }

    fn reject_locally(
        &self,
        tx: &rusqlite::Transaction<'_>,
        seq: u64,
        code: &str,
        message: &str,
    ) -> Result<bool> {
        let Some(row) = outbox::reject(tx, seq, code, message, self.now_ms())? else {
            return Ok(false);
        };
        if row.table == CONFLICTS_TABLE {
            self.reopen_conflict(tx, &row.row_id)?;
        }
        if let Some(table) = self.schema.table(&row.table) {
            let cols = if row.kind == burrow_core::OpKind::Delete.code() {
                None
            } else {
                Some(data_columns(row.data.as_deref())?)
            };
            apply::restore_visible(tx, table, &row.row_id, cols.as_ref())?;
        }
        Ok(true)
    }

    /// The server refused this device's closing of conflict `id` (e.g. write permissions): the
    /// record shows open again, unless a download already brought the server's resolution.
    fn reopen_conflict(&self, tx: &rusqlite::Transaction<'_>, id: &str) -> Result<()> {
        let Some(mut e) = local_record(tx, id)? else {
            return Ok(());
        };
        if e.status != ConflictStatus::Resolved
            || e.resolved_by.as_deref() != Some(self.client_id.as_str())
        {
            return Ok(());
        }
        e.status = ConflictStatus::Open;
        e.resolution = None;
        e.resolved_by = None;
        set_local_record(tx, &e)?;
        Ok(())
    }

    /// Shows conflict `id` closed by this device (its closing `data`, `{"status", "resolution"}`,
    /// is queued again).
    pub(crate) fn mark_closed(
        &self,
        tx: &rusqlite::Transaction<'_>,
        id: &str,
        data: Option<&str>,
    ) -> Result<()> {
        let Some(mut e) = local_record(tx, id)? else {
            return Ok(());
        };
        if e.status != ConflictStatus::Open {
            return Ok(());
        }
        let resolution = data
            .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
            .and_then(|v| v.get("resolution").cloned());
        e.status = ConflictStatus::Resolved;
        e.resolution = resolution;
        e.resolved_by = Some(self.client_id.clone());
        set_local_record(tx, &e)?;
        Ok(())
    }

    /// Rejects op `seq` and every other op of its local transaction still queued (they must
    /// not apply without it). Returns how many ops left the outbox.
    fn reject_with_transaction(
        &self,
        tx: &rusqlite::Transaction<'_>,
        seq: u64,
        code: &str,
        message: &str,
    ) -> Result<u64> {
        self.reject_with_transaction_as(tx, seq, code, message, &Default::default())
    }

    /// [`Self::reject_with_transaction`], where an op listed in `own_reasons` (refused for
    /// its own reason in the same answer) keeps that reason instead of
    /// `transaction_rejected`.
    fn reject_with_transaction_as(
        &self,
        tx: &rusqlite::Transaction<'_>,
        seq: u64,
        code: &str,
        message: &str,
        own_reasons: &std::collections::HashMap<u64, (&str, &str)>,
    ) -> Result<u64> {
        let siblings = outbox::siblings(tx, seq)?;
        let mut n = 0;
        let (code, message) = own_reasons.get(&seq).copied().unwrap_or((code, message));
        if self.reject_locally(tx, seq, code, message)? {
            n += 1;
        }
        let why = format!("op {seq} of the same transaction was rejected: {message}");
        for s in siblings {
            let (c, m) = own_reasons
                .get(&s)
                .copied()
                .unwrap_or(("transaction_rejected", why.as_str()));
            if self.reject_locally(tx, s, c, m)? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Applies one response in one local transaction: outcomes, the changes page, the cursor,
    /// and settling. Returns how many uploaded ops got an outcome.
    fn apply_response(
        &self,
        resp: v1::SyncResponse,
        report: &mut SyncReport,
        sent: &[v1::Subscription],
    ) -> Result<u64> {
        let mut conn = lock(&self.conn);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("UPDATE _burrow_local SET applying = 1 WHERE id = 1", [])?;
        // An op refused for its own reason keeps that reason even when a sibling's refusal
        // drags it along first.
        let own_reasons: std::collections::HashMap<u64, (&str, &str)> = resp
            .outcomes
            .iter()
            .filter(|o| {
                o.kind == v1::OutcomeKind::Rejected as i32 && o.code != "transaction_rejected"
            })
            .map(|o| (o.client_seq, (o.code.as_str(), o.message.as_str())))
            .collect();
        let mut answered = 0;
        for o in &resp.outcomes {
            answered += 1;
            match v1::OutcomeKind::try_from(o.kind) {
                Ok(kind @ (v1::OutcomeKind::Applied | v1::OutcomeKind::Conflict)) => {
                    let Some(own) = apply::record_own_result(
                        &tx,
                        &self.schema,
                        o.client_seq,
                        o.seq,
                        &o.lost_columns,
                    )?
                    else {
                        continue; // already handled (a duplicate outcome)
                    };
                    report.ops_acked += 1;
                    if o.lost_columns.is_empty() && own.merged {
                        // Counter/CRDT values come back merged by download: keep the op
                        // (acknowledged) until the cursor covers its change.
                        outbox::acknowledge(&tx, o.client_seq, resp.ack_seq)?;
                    } else if o.lost_columns.is_empty() {
                        // The server holds exactly this op's values (now in the shadow): done.
                        outbox::remove(&tx, o.client_seq)?;
                        report.ops_settled += 1;
                        if let Some(table) = self.schema.table(&own.table) {
                            if own.restore_all {
                                apply::restore_visible(&tx, table, &own.row_id, None)?;
                            } else if !own.stale_columns.is_empty() {
                                apply::restore_visible(
                                    &tx,
                                    table,
                                    &own.row_id,
                                    Some(&own.stale_columns),
                                )?;
                            }
                        }
                    } else {
                        // Lost fields: the winners are shown once the cursor covers ack_seq.
                        outbox::acknowledge(&tx, o.client_seq, resp.ack_seq)?;
                        debug_assert_eq!(kind, v1::OutcomeKind::Conflict);
                        report.conflicts += 1;
                        tx.execute(
                            "INSERT INTO _burrow_lost(client_seq, tbl, row_id, lost_columns, message, data, at_ms)
                             SELECT seq, tbl, row_id, ?2, ?3, data, ?4 FROM _burrow_outbox WHERE seq = ?1",
                            params![o.client_seq as i64, o.lost_columns.join(","), o.message, self.now_ms() as i64],
                        )?;
                    }
                }
                Ok(v1::OutcomeKind::Rejected) => {
                    report.ops_rejected += self.reject_with_transaction_as(
                        &tx,
                        o.client_seq,
                        &o.code,
                        &o.message,
                        &own_reasons,
                    )?;
                }
                Ok(v1::OutcomeKind::Staged) => outbox::mark_staged(&tx, o.client_seq)?,
                _ => {
                    return Err(Error::Protocol(format!(
                        "unknown outcome kind {} for op {}",
                        o.kind, o.client_seq
                    )));
                }
            }
        }
        let outbox_empty: bool =
            !tx.query_row("SELECT EXISTS(SELECT 1 FROM _burrow_outbox)", [], |r| {
                r.get(0)
            })?;
        let mut max_hlc = 0u64;
        let mut refetched = false;
        for change in resp.changes {
            let change = row_change_from_wire(change);
            max_hlc = max_hlc.max(change.hlc.0);
            apply::apply_change(&tx, &self.schema, &change, outbox_empty)?;
            report.changes_received += 1;
        }
        if let Some(c) = resp.cursor {
            if c.after < c.since {
                return Err(Error::Protocol(format!("cursor {c:?} goes backwards")));
            }
            let old: (i64,) = tx.query_row(
                "SELECT cursor_since FROM _burrow_local WHERE id = 1",
                [],
                |r| Ok((r.get(0)?,)),
            )?;
            if (c.since as i64) < old.0 {
                return Err(Error::Protocol(format!(
                    "server cursor {} is behind the local cursor {}",
                    c.since, old.0
                )));
            }
            tx.execute(
                "UPDATE _burrow_local SET cursor_since = ?1, cursor_after = ?2, hlc = max(hlc, ?3) WHERE id = 1",
                params![c.since as i64, c.after as i64, max_hlc as i64],
            )?;
            tx.execute(
                "UPDATE _burrow_scope SET scope = ?1, catchup_after = ?2, catchup_target = ?3 WHERE id = 1",
                params![c.scope as i64, c.catchup_after as i64, c.catchup_target as i64],
            )?;
            crate::subscriptions::record_verdicts(&tx, sent, &resp.subscription_errors)?;
            if c.after == c.since {
                report.ops_settled += apply::settle(&tx, &self.schema, c.since)?;
                if self.refetch_own.load(Ordering::SeqCst) {
                    // The pull from cursor 0 after a rebuild is complete.
                    tx.execute("UPDATE _burrow_local SET refetch_own = 0 WHERE id = 1", [])?;
                    refetched = true;
                }
            }
        }
        fail::fail_point!("client-apply-before-commit", |_| Err(
            crate::error::injected("client-apply-before-commit")
        ));
        tx.execute("UPDATE _burrow_local SET applying = 0 WHERE id = 1", [])?;
        tx.commit()?;
        if refetched {
            self.refetch_own.store(false, Ordering::SeqCst);
        }
        Ok(answered)
    }

    /// A status snapshot.
    pub fn status(&self) -> Result<Status> {
        let conn = lock(&self.conn);
        let (since, last_sync, last_error, schema_version): (i64, Option<i64>, Option<String>, u32) =
            conn.query_row(
                "SELECT cursor_since, last_sync_at_ms, last_error, schema_version FROM _burrow_local WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?;
        let recovery = Self::recovery_on(&conn)?;
        let mut pending_by_lane = std::collections::BTreeMap::new();
        let mut pending_bytes_by_lane = std::collections::BTreeMap::new();
        let (mut pending, mut pending_bytes) = (0u64, 0u64);
        {
            // Bytes: what is left to send (acknowledged ops only wait for the cursor).
            let mut stmt = conn.prepare(
                "SELECT lane, count(*),
                        sum(CASE WHEN ack_seq IS NULL
                            THEN coalesce(length(data), 0) + length(row_id) + length(tbl) + 16
                            ELSE 0 END)
                 FROM _burrow_outbox GROUP BY lane",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let lane = burrow_core::Priority::from_i64(r.get(0)?)
                    .as_str()
                    .to_string();
                let n = r.get::<_, i64>(1)? as u64;
                let bytes = r.get::<_, Option<i64>>(2)?.unwrap_or(0) as u64;
                pending += n;
                pending_bytes += bytes;
                pending_by_lane.insert(lane.clone(), n);
                pending_bytes_by_lane.insert(lane, bytes);
            }
        }
        let rejected = Self::rejected_ops_on(&conn)?;
        let run = *lock(&self.run_status);
        let conflicts: i64 =
            conn.query_row("SELECT count(*) FROM _burrow_lost", [], |r| r.get(0))?;
        let open_conflicts: i64 = conn.query_row(
            "SELECT count(*) FROM _burrow_conflicts WHERE status = 'open'",
            [],
            |r| r.get(0),
        )?;
        Ok(Status {
            client_id: self.client_id.clone(),
            pending_ops: pending,
            pending_by_lane,
            pending_bytes,
            pending_bytes_by_lane,
            in_flight: lock(&self.in_flight).clone(),
            cursor: since as u64,
            last_sync_at: last_sync.map(|ms| rfc3339_ms(ms as u64)),
            rejected_ops: rejected.len() as u64,
            rejected,
            conflicts: conflicts as u64,
            open_conflicts: open_conflicts as u64,
            state: run.state,
            next_retry_at: run.next_retry_at_ms.map(rfc3339_ms),
            network: self.network(),
            last_error,
            schema_version,
            recovery,
        })
    }

    fn recovery_on(conn: &Connection) -> Result<Option<Recovery>> {
        let (json, refetch): (Option<String>, bool) = conn.query_row(
            "SELECT recovery, refetch_own FROM _burrow_local WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(recovery::read_record(json.as_deref(), refetch))
    }

    /// The last automatic rebuild of this database after damage, if there was one (also in
    /// [`Status::recovery`]).
    pub fn recovery(&self) -> Result<Option<Recovery>> {
        Self::recovery_on(&lock(&self.conn))
    }

    fn rejected_ops_on(conn: &Connection) -> Result<Vec<RejectedOp>> {
        let mut stmt = conn.prepare(
            "SELECT seq, tbl, row_id, kind, data, code, message FROM _burrow_rejected ORDER BY seq",
        )?;
        let rows = stmt.query_map([], |r| {
            let data: Option<String> = r.get(4)?;
            Ok(RejectedOp {
                client_seq: r.get::<_, i64>(0)? as u64,
                table: r.get(1)?,
                row_id: r.get(2)?,
                kind: kind_name(r.get(3)?),
                data: data.and_then(|d| serde_json::from_str(&d).ok()),
                code: r.get(5)?,
                message: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The ops the server refused, oldest first.
    pub fn rejected_ops(&self) -> Result<Vec<RejectedOp>> {
        Self::rejected_ops_on(&lock(&self.conn))
    }

    /// Local ops that lost (some of) their fields to concurrent changes, oldest first.
    pub fn lost_writes(&self) -> Result<Vec<LostWrite>> {
        let conn = lock(&self.conn);
        let mut stmt = conn.prepare(
            "SELECT client_seq, tbl, row_id, lost_columns, message, data FROM _burrow_lost ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            let lost: String = r.get(3)?;
            let data: Option<String> = r.get(5)?;
            Ok(LostWrite {
                client_seq: r.get::<_, i64>(0)? as u64,
                table: r.get(1)?,
                row_id: r.get(2)?,
                lost_columns: lost
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
                message: r.get(4)?,
                data: data.and_then(|d| serde_json::from_str(&d).ok()),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The conflict records this device is involved in (synced from the server's conflict
    /// log), oldest first: values its writes overwrote or lost, and manual conflicts
    /// (`status` open until someone resolves them with [`Client::resolve`]).
    pub fn conflicts(&self) -> Result<Vec<ConflictEntry>> {
        let conn = lock(&self.conn);
        let mut stmt = conn.prepare("SELECT record FROM _burrow_conflicts ORDER BY seq, id")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for json in rows {
            let json = json?;
            out.push(
                serde_json::from_str(&json)
                    .map_err(|e| Error::Corrupt(format!("conflict record: {e}")))?,
            );
        }
        Ok(out)
    }

    /// Resolves an open manual conflict by choosing one of its versions or supplying a merged
    /// value. The choice is written to the row as an ordinary captured op, together (in the
    /// same local transaction) with an op that closes the conflict on the server and so on
    /// every device involved. Returns the value written.
    ///
    /// ```no_run
    /// # fn f(client: &burrow_client::Client) -> burrow_client::Result<()> {
    /// use burrow_client::Resolution;
    /// for c in client.conflicts()? {
    ///     if c.status == burrow_core::conflict::ConflictStatus::Open {
    ///         client.resolve(&c.id, Resolution::Pick(0))?;
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn resolve(&self, id: &str, resolution: Resolution) -> Result<serde_json::Value> {
        let entry = self
            .conflicts()?
            .into_iter()
            .find(|c| c.id == id)
            .ok_or_else(|| Error::Invalid(format!("no conflict {id} on this device")))?;
        if entry.status != ConflictStatus::Open {
            return Err(Error::Invalid(format!(
                "conflict {id} is {}, not open",
                entry.status.as_str()
            )));
        }
        let table = self.schema.table(&entry.table).ok_or_else(|| {
            Error::Invalid(format!(
                "conflict {id}: table {} is not in the schema",
                entry.table
            ))
        })?;
        let (value, delete) = match resolution {
            Resolution::Pick(i) => {
                let v = entry.versions.get(i).ok_or_else(|| {
                    Error::Invalid(format!(
                        "conflict {id} has versions 0..{}, not {i}",
                        entry.versions.len()
                    ))
                })?;
                (v.value.clone(), v.deleted)
            }
            Resolution::Value(v) => (v, false),
        };
        let row_level = entry.column == WHOLE_ROW;
        let mut assignments: Vec<(String, Value)> = Vec::new();
        if row_level && !delete {
            let serde_json::Value::Object(obj) = &value else {
                return Err(Error::Invalid(format!(
                    "conflict {id} is about the whole row: the value must be a JSON object of its columns"
                )));
            };
            for (c, v) in obj {
                assignments.push((c.clone(), json_to_column(table, c, v)?));
            }
        } else if !row_level {
            assignments.push((
                entry.column.clone(),
                json_to_column(table, &entry.column, &value)?,
            ));
        }
        let close = serde_json::json!({ "status": "resolved", "resolution": value }).to_string();
        let values: Vec<(&str, &Value)> =
            assignments.iter().map(|(c, v)| (c.as_str(), v)).collect();
        self.write_local(|tx, _| {
            // Written with capture on: the choice is an ordinary op of this local transaction.
            if delete {
                apply::delete_visible(tx, table, &entry.row_id)?;
            } else if row_level {
                apply::upsert_visible(tx, table, &entry.row_id, &values)?;
            } else {
                // A field: only where the row still exists here (a resolution never
                // re-creates a row deleted since).
                apply::update_visible(tx, table, &entry.row_id, &values)?;
            }
            outbox::append_op(
                tx,
                CONFLICTS_TABLE,
                &entry.id,
                burrow_core::OpKind::Update.code(),
                Some(&close),
                table.priority,
                self.now_ms(),
            )?;
            self.mark_closed(tx, &entry.id, Some(&close))?;
            Ok(())
        })?;
        Ok(value)
    }

    /// A hash of the visible synced tables (table, id and every column, in key order), equal
    /// on two devices exactly when they hold the same data.
    pub fn state_hash(&self) -> Result<String> {
        let conn = lock(&self.conn);
        let mut h = burrow_core::hash::Fnv64::new();
        let mut feed = |bytes: &[u8]| h.update(bytes);
        for t in self.schema.tables.values() {
            feed(t.name.as_bytes());
            let cols: Vec<String> = t.columns.iter().map(|c| crate::ddl::q(&c.name)).collect();
            let sql = format!(
                "SELECT \"id\", {} FROM {} ORDER BY \"id\"",
                cols.join(", "),
                crate::ddl::q(&t.name)
            );
            let mut stmt = conn.prepare(&sql)?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                for i in 0..=cols.len() {
                    feed(sql_to_json(r.get_ref(i)?).to_string().as_bytes());
                    feed(&[0]);
                }
            }
        }
        Ok(format!("{:016x}", h.finish()))
    }
}

/// This device's copy of conflict record `id`, if it holds one.
pub(crate) fn local_record(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
) -> Result<Option<ConflictEntry>> {
    let record: Option<String> = tx
        .query_row(
            "SELECT record FROM _burrow_conflicts WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .optional()?;
    Ok(record.and_then(|r| serde_json::from_str(&r).ok()))
}

/// Stores this device's view of a conflict record (status and the record itself).
fn set_local_record(tx: &rusqlite::Transaction<'_>, e: &ConflictEntry) -> Result<()> {
    tx.execute(
        "UPDATE _burrow_conflicts SET status = ?2, record = ?3 WHERE id = ?1",
        params![
            e.id,
            e.status.as_str(),
            serde_json::to_string(e).map_err(|err| Error::Corrupt(err.to_string()))?
        ],
    )?;
    Ok(())
}
