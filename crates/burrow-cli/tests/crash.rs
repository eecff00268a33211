//! Real-process crash tests (L4 of the testing design): the `burrow` binary is killed with
//! SIGKILL (`Child::kill` on Unix) at random moments, and what it left on disk is checked.
//!
//! - `client_survives_kill_9`: `burrow client workload` commits small transactions into
//!   `scans` and syncs every few of them to a `burrow serve` process; it is killed ≥ 100 times,
//!   each time 50–300 ms after it started, reusing the same database file. After each kill the
//!   file must pass `PRAGMA integrity_check`, every transaction reported `committed` must be
//!   there whole, none may be partly there, and the outbox must hold exactly the ops not yet
//!   acknowledged, as a contiguous tail of every op ever captured. At the end one sync must
//!   drain the outbox and a fresh client must download every row.
//! - `server_survives_kill_9`: one workload process keeps writing and syncing while the server
//!   is killed ≥ 10 times and restarted on the same data directory and port. After each kill
//!   the server's file must be intact and hold every row the client has seen acknowledged; at
//!   the end every committed row is on the server exactly once.
//!
//! The random schedule comes from a seed printed at the start; set `BURROW_CRASH_SEED` to
//! replay one.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod common;

use common::{BIN, SCHEMA, burrow, stdout};

/// Client kills in `client_survives_kill_9`.
const CLIENT_KILLS: u64 = 100;
/// Server kills in `server_survives_kill_9`.
const SERVER_KILLS: u64 = 12;

fn seed(test: &str) -> u64 {
    let seed = std::env::var("BURROW_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("{test}: BURROW_CRASH_SEED={seed}");
    seed
}

/// A `burrow serve` process, killed with SIGKILL when dropped.
struct Server {
    child: Option<common::Server>,
    data: PathBuf,
    schema: PathBuf,
    listen: String,
}

impl Server {
    /// Starts the server on a port the OS picks (so parallel tests never race for one); later
    /// restarts reuse that port, as the client keeps its URL.
    fn start(data: &Path, schema: &Path) -> Server {
        let (child, url) = common::spawn_server(&[
            "--data".as_ref(),
            data.as_os_str(),
            "--schema".as_ref(),
            schema.as_os_str(),
        ]);
        let listen = url.trim_start_matches("http://").to_string();
        Server {
            child: Some(child),
            data: data.to_path_buf(),
            schema: schema.to_path_buf(),
            listen,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.listen)
    }

    /// Starts the process (again) and waits until it accepts connections.
    fn restart(&mut self) {
        assert!(self.child.is_none());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut child = Command::new(BIN)
                .args(["serve", "--listen", &self.listen, "--data"])
                .arg(&self.data)
                .arg("--schema")
                .arg(&self.schema)
                .env_remove("BURROW_SECRET")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            loop {
                if std::net::TcpStream::connect(&self.listen).is_ok() {
                    self.child = Some(common::Server(child));
                    return;
                }
                if let Some(status) = child.try_wait().unwrap() {
                    // The port may still be held for a moment after a kill: try again.
                    assert!(Instant::now() < deadline, "server exits at start: {status}");
                    std::thread::sleep(Duration::from_millis(50));
                    break;
                }
                assert!(Instant::now() < deadline, "server did not start");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// SIGKILL, then reap.
    fn kill(&mut self) {
        let mut server = self.child.take().unwrap();
        server.0.kill().unwrap();
        server.0.wait().unwrap();
    }

    fn db(&self) -> PathBuf {
        self.data.join("burrow-server.db")
    }
}

fn token(data: &Path) -> String {
    let out = stdout(&burrow(&[
        "token",
        "--data",
        data.to_str().unwrap(),
        "--user",
        "crash",
        "--ttl",
        "1h",
    ]));
    out.trim().to_string()
}

/// A running `burrow client … workload` whose stdout and stderr are collected.
struct Workload {
    child: Child,
    out: JoinHandle<String>,
    err: JoinHandle<String>,
}

/// What a killed workload printed.
struct Printed {
    /// `(tx number, rows)` of every `committed` line.
    committed: Vec<(u64, u64)>,
    /// `synced` and `sync failed` lines.
    syncs: usize,
    /// The last line was `syncing`: killed during a sync.
    mid_sync: bool,
    status: ExitStatus,
    stderr: String,
}

impl Workload {
    /// Writes transactions of `rows` rows, syncing after every `sync_every` of them.
    fn spawn(
        db: &Path,
        schema: &Path,
        seed: u64,
        (rows, sync_every): (u64, u64),
        server: (&str, &str),
    ) -> Workload {
        let mut child = Command::new(BIN)
            .arg("client")
            .arg("--db")
            .arg(db)
            .arg("--schema")
            .arg(schema)
            .args(["workload", "--seed", &seed.to_string()])
            .args(["--tx-rows", &rows.to_string()])
            .args(["--sync-every", &sync_every.to_string()])
            .args(["--server", server.0, "--token", server.1])
            .env_remove("BURROW_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut o = child.stdout.take().unwrap();
        let mut e = child.stderr.take().unwrap();
        Workload {
            child,
            out: std::thread::spawn(move || {
                let mut s = String::new();
                let _ = o.read_to_string(&mut s);
                s
            }),
            err: std::thread::spawn(move || {
                let mut s = String::new();
                let _ = e.read_to_string(&mut s);
                s
            }),
        }
    }

    /// SIGKILL; returns what it printed. A workload that ended on its own is a failure.
    fn kill(mut self) -> Printed {
        let _ = self.child.kill();
        let status = self.child.wait().unwrap();
        let out = self.out.join().unwrap();
        let stderr = self.err.join().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(9),
            "the workload stopped on its own ({status}): {stderr}"
        );
        let mut committed = Vec::new();
        let mut syncs = 0;
        let mut mid_sync = false;
        for line in out.lines() {
            mid_sync = line == "syncing";
            let words: Vec<&str> = line.split(' ').collect();
            match words.as_slice() {
                ["committed", n, k] => committed.push((n.parse().unwrap(), k.parse().unwrap())),
                ["synced"] | ["sync", "failed"] => syncs += 1,
                ["syncing"] => {}
                _ => panic!("unexpected workload output {line:?}"),
            }
        }
        Printed {
            committed,
            syncs,
            mid_sync,
            status,
            stderr,
        }
    }
}

fn count(conn: &Connection, sql: &str) -> u64 {
    conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap() as u64
}

/// What `check_client` found in the database.
#[derive(Debug, Default)]
struct ClientState {
    /// Rows per transaction `(workload seed, tx number)`.
    txs: BTreeMap<(u64, u64), u64>,
    /// Rows in `scans`.
    rows: u64,
    /// Ops in the outbox.
    pending: u64,
}

/// Checks a client database left by a killed workload whose transactions have `rows` rows.
fn check_client(db: &Path, rows: u64) -> ClientState {
    let conn = Connection::open(db).unwrap();
    let ic: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ic, "ok", "integrity_check of {}", db.display());
    let installed: Option<String> = conn
        .query_row(
            "SELECT name FROM sqlite_master WHERE name = 'scans'",
            [],
            |r| r.get(0),
        )
        .optional()
        .unwrap();
    if installed.is_none() {
        // Killed before `open` committed the install transaction: nothing at all.
        return ClientState::default();
    }
    let mut state = ClientState::default();
    let mut stmt = conn.prepare("SELECT id, code FROM scans").unwrap();
    let mut q = stmt.query([]).unwrap();
    while let Some(r) = q.next().unwrap() {
        let id: String = r.get(0).unwrap();
        let code: String = r.get(1).unwrap();
        let parts: Vec<u64> = id
            .strip_prefix('w')
            .unwrap_or_else(|| panic!("foreign row {id}"))
            .split('-')
            .map(|p| p.parse().unwrap())
            .collect();
        let [seed, n, i] = parts[..] else {
            panic!("bad id {id}")
        };
        assert_eq!(code, n.to_string(), "row {id}");
        assert!(i < rows, "row {id}");
        *state.txs.entry((seed, n)).or_default() += 1;
        state.rows += 1;
    }
    for (tx, n) in &state.txs {
        assert_eq!(*n, rows, "transaction {tx:?} is partly visible");
    }
    // Local bookkeeping is never left mid-transaction.
    let (applying, clock_ms): (i64, Option<i64>) = conn
        .query_row(
            "SELECT applying, clock_ms FROM _burrow_local WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((applying, clock_ms), (0, None));
    // Every insert captured exactly one op: the outbox sequence counts every op ever written,
    // and only inserts of `scans` rows were ever written.
    let ops_ever: u64 = conn
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = '_burrow_outbox'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .optional()
        .unwrap()
        .unwrap_or(0) as u64;
    assert_eq!(ops_ever, state.rows, "ops captured vs rows inserted");
    // The outbox holds the not-yet-acknowledged ops: a contiguous tail of whole transactions,
    // none staged, rejected or waiting for the cursor (one writer: no conflicts).
    state.pending = count(&conn, "SELECT count(*) FROM _burrow_outbox");
    if state.pending > 0 {
        let (lo, hi): (i64, i64) = conn
            .query_row("SELECT min(seq), max(seq) FROM _burrow_outbox", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(hi as u64, ops_ever, "the newest op is pending");
        assert_eq!(
            (hi - lo + 1) as u64,
            state.pending,
            "pending ops are contiguous"
        );
    }
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM _burrow_outbox WHERE kind <> 1 OR tbl <> 'scans' \
             OR staged <> 0 OR ack_seq IS NOT NULL"
        ),
        0
    );
    let partial_groups = count(
        &conn,
        &format!(
            "SELECT count(*) FROM (SELECT tx FROM _burrow_outbox GROUP BY tx \
             HAVING count(*) <> {rows})"
        ),
    );
    assert_eq!(
        partial_groups, 0,
        "an outbox group is not a whole transaction"
    );
    assert_eq!(count(&conn, "SELECT count(*) FROM _burrow_rejected"), 0);
    assert_eq!(count(&conn, "SELECT count(*) FROM _burrow_lost"), 0);
    // Every row is either acknowledged (in the shadow) or pending (in the outbox), not both.
    let acked = count(
        &conn,
        "SELECT count(*) FROM _burrow_shadow WHERE tbl = 'scans'",
    );
    assert_eq!(acked + state.pending, state.rows, "shadow + outbox vs rows");
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM scans s WHERE EXISTS \
               (SELECT 1 FROM _burrow_shadow h WHERE h.tbl = 'scans' AND h.id = s.id) \
             = EXISTS (SELECT 1 FROM _burrow_outbox o WHERE o.tbl = 'scans' AND o.row_id = s.id)"
        ),
        0,
        "a row is in both or neither of shadow and outbox"
    );
    state
}

fn ids(db: &Path) -> BTreeSet<String> {
    let conn = Connection::open(db).unwrap();
    let mut stmt = conn.prepare("SELECT id FROM scans").unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

fn status(db: &Path) -> serde_json::Value {
    serde_json::from_str(&stdout(&burrow(&[
        "client",
        "--db",
        db.to_str().unwrap(),
        "status",
        "--json",
    ])))
    .unwrap()
}

fn sync(db: &Path, schema: Option<&Path>, url: &str, token: &str) {
    let mut args = vec!["client", "--db", db.to_str().unwrap()];
    if let Some(s) = schema {
        args.extend(["--schema", s.to_str().unwrap()]);
    }
    args.extend(["sync", "--server", url, "--token", token]);
    stdout(&burrow(&args));
}

/// The server holds each of `n` rows written by one client exactly once: one op record per op,
/// one change sequence per row, no conflicts and nothing staged.
fn check_server_exactly_once(server_db: &Path, n: u64) {
    let conn = Connection::open(server_db).unwrap();
    let ic: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ic, "ok");
    assert_eq!(
        count(&conn, "SELECT count(*) FROM rows WHERE tbl = 'scans'"),
        n
    );
    assert_eq!(count(&conn, "SELECT count(*) FROM ops"), n, "op records");
    assert_eq!(
        count(&conn, "SELECT value FROM meta WHERE key = 'head_seq'"),
        n,
        "one change sequence per op"
    );
    assert_eq!(count(&conn, "SELECT count(DISTINCT seq) FROM rows"), n);
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM rows WHERE tbl = '_burrow_conflicts'"
        ),
        0
    );
    assert_eq!(count(&conn, "SELECT count(*) FROM staged"), 0);
}

/// The final sync drains the outbox; a fresh device then downloads exactly the rows `db` has,
/// and the server holds each once.
fn check_final(
    (db, rows): (&Path, u64),
    schema: &Path,
    server: &Server,
    token: &str,
    reported: &[String],
) {
    let url = server.url();
    sync(db, None, &url, token);
    assert_eq!(status(db)["pending_ops"], 0, "the outbox drains");
    let state = check_client(db, rows).rows;
    let written = ids(db);
    assert_eq!(written.len() as u64, state);
    for id in reported {
        assert!(written.contains(id), "committed row {id} is lost");
    }
    let fresh = db.with_file_name("fresh.db");
    sync(&fresh, Some(schema), &url, token);
    assert_eq!(
        ids(&fresh),
        written,
        "the server holds every row, and only those"
    );
    check_server_exactly_once(&server.db(), state);
}

#[test]
fn client_survives_kill_9() {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed("client_survives_kill_9"));
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.toml");
    std::fs::write(&schema, SCHEMA).unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &schema);
    let token = token(&data);
    let db = dir.path().join("client.db");
    const ROWS: u64 = 4;
    let mut reported: Vec<String> = Vec::new();
    let (mut syncs, mut empty_runs, mut mid_sync, mut unanswered) = (0, 0, 0, 0);
    let mut state = ClientState::default();
    for run in 0..CLIENT_KILLS {
        let w = Workload::spawn(&db, &schema, run, (ROWS, 3), (&server.url(), &token));
        std::thread::sleep(Duration::from_millis(rng.random_range(50..=300)));
        let printed = w.kill();
        syncs += printed.syncs;
        mid_sync += usize::from(printed.mid_sync);
        if printed.committed.is_empty() {
            empty_runs += 1;
        }
        for (n, k) in &printed.committed {
            assert_eq!(*k, ROWS);
            reported.extend((0..ROWS).map(|i| format!("w{run}-{n}-{i}")));
        }
        let before = state.rows;
        state = check_client(&db, ROWS);
        assert!(state.rows >= before, "rows disappeared after kill {run}");
        for (n, _) in &printed.committed {
            assert_eq!(
                state.txs.get(&(run, *n)),
                Some(&ROWS),
                "kill {run}: committed transaction {n} is not all there ({}; {})",
                printed.status,
                printed.stderr
            );
        }
        // What the client holds as acknowledged is on the server; the server may hold more
        // (killed after the server's commit, before the client recorded the answer): those
        // ops are sent again and must be deduplicated (checked at the end).
        let acked = state.rows - state.pending;
        let server_ops = count(
            &Connection::open_with_flags(server.db(), OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap(),
            "SELECT count(*) FROM ops",
        );
        assert!(
            server_ops >= acked,
            "kill {run}: acknowledged ops not on the server"
        );
        assert!(
            server_ops <= state.rows,
            "kill {run}: the server has ops never written"
        );
        unanswered += usize::from(server_ops > acked);
    }
    let kills_took = started.elapsed();
    check_final((&db, ROWS), &schema, &server, &token, &reported);
    eprintln!(
        "client_survives_kill_9: {CLIENT_KILLS} kills in {:.1?} ({empty_runs} before any \
         commit, {mid_sync} during a sync, {unanswered} after the server committed ops the client \
         had not recorded), {} transactions reported committed, {} rows, \
         {} pending at the last kill, {syncs} syncs finished; total {:.1?}",
        kills_took,
        reported.len() as u64 / ROWS,
        state.rows,
        state.pending,
        started.elapsed()
    );
}

#[test]
fn server_survives_kill_9() {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed("server_survives_kill_9"));
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.toml");
    std::fs::write(&schema, SCHEMA).unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data, &schema);
    let token = token(&data);
    let db = dir.path().join("client.db");
    const ROWS: u64 = 3;
    // Sync after every transaction, so the kills land in the middle of uploads.
    let w = Workload::spawn(&db, &schema, 0, (ROWS, 1), (&server.url(), &token));
    let mut acked_at_kills = Vec::new();
    for kill in 0..SERVER_KILLS {
        std::thread::sleep(Duration::from_millis(rng.random_range(100..=500)));
        server.kill();
        // Every row the client holds as acknowledged (in its shadow) survived the crash.
        let acked: BTreeSet<String> = {
            let c = Connection::open(&db).unwrap();
            let mut s = c
                .prepare("SELECT id FROM _burrow_shadow WHERE tbl = 'scans'")
                .unwrap();
            s.query_map([], |r| r.get(0))
                .unwrap()
                .map(|r| r.unwrap())
                .collect()
        };
        {
            let c = Connection::open(server.db()).unwrap();
            let ic: String = c
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .unwrap();
            assert_eq!(ic, "ok", "server store after kill {kill}");
            let mut s = c
                .prepare("SELECT id FROM rows WHERE tbl = 'scans'")
                .unwrap();
            let on_server: BTreeSet<String> = s
                .query_map([], |r| r.get(0))
                .unwrap()
                .map(|r| r.unwrap())
                .collect();
            let lost: Vec<&String> = acked.difference(&on_server).collect();
            assert!(
                lost.is_empty(),
                "kill {kill}: acknowledged rows lost: {lost:?}"
            );
            let head = count(&c, "SELECT value FROM meta WHERE key = 'head_seq'");
            let max_seq = count(&c, "SELECT coalesce(max(seq), 0) FROM rows");
            assert_eq!(head, max_seq, "head_seq matches the rows after kill {kill}");
        }
        acked_at_kills.push(acked.len());
        std::thread::sleep(Duration::from_millis(rng.random_range(0..=200)));
        server.restart();
    }
    std::thread::sleep(Duration::from_millis(300));
    let printed = w.kill();
    let reported: Vec<String> = printed
        .committed
        .iter()
        .flat_map(|(n, k)| (0..*k).map(move |i| format!("w0-{n}-{i}")))
        .collect();
    check_final((&db, ROWS), &schema, &server, &token, &reported);
    eprintln!(
        "server_survives_kill_9: {SERVER_KILLS} kills, {} transactions committed, {} sync \
         attempts, rows acknowledged at each kill {acked_at_kills:?}; total {:.1?}",
        printed.committed.len(),
        printed.syncs,
        started.elapsed()
    );
}
