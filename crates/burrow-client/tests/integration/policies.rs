//! Conflict policies end to end (issue #4): two or three devices against a real server over
//! loopback HTTP, each device with its own manual clock so the tests decide which write is
//! "later". Every test checks the final visible values on every device and that the devices
//! hold the same data (`state_hash`).
//!
//! Time model: each device's clock is a [`ManualClock`]. A write at `t` happens at device time
//! `base + t + skew`, where `base` is ten minutes before the test started (real time, since
//! the server uses the system clock). Right before a sync the device clock is set to the real
//! time plus its skew, so the server measures the device's offset as `skew` and corrects the
//! write's time back to `base + t`.

use burrow_client::{Client, ClientOptions, HttpTransport, Resolution, SyncReport};
use burrow_core::conflict::{ConflictEntry, ConflictStatus, WHOLE_ROW};
use burrow_core::env::{Clock, ManualClock, SystemClock};
use burrow_core::{Schema, Value};
use burrow_server::resolver::{CustomChoice, CustomInput, CustomResolver};
use burrow_server::{RunningServer, ServerConfig, ServerStore};
use serde_json::{Value as Json, json};
use std::collections::BTreeMap;
use std::sync::Arc;

const SCHEMA: &str = r#"
version = 1
[tables.items]
[tables.items.columns]
qty = { type = "integer", policy = "counter" }
weight = { type = "real", policy = "counter" }
notes = { type = "text", policy = "text" }
checklist = { type = "json", policy = "list" }
approved = { type = "bool", policy = "prefer", claim = "role", value = "manager" }
reading = { type = "real", policy = "max_by", column = "measured_at" }
measured_at = { type = "integer", policy = "max" }
phase = { type = "text", policy = "order", order = ["created", "loaded", "in_transit", "delivered"] }
low = { type = "integer", policy = "min" }
high = { type = "integer", policy = "max" }
pick = { type = "text", policy = "manual" }
report = { type = "text", policy = "custom:longest" }
label = "text"
[tables.jobs]
on_delete_conflict = "update_wins"
[tables.jobs.columns]
title = "text"
tech = "text"
[tables.visits]
on_delete_conflict = "manual"
[tables.visits.columns]
note = "text"
"#;

fn schema() -> Schema {
    Schema::from_toml_str(SCHEMA).unwrap()
}

/// `custom:longest`: the longer text wins; equal lengths: the lexicographically larger. A
/// total order on the values, so the outcome does not depend on arrival order.
#[derive(Debug)]
struct Longest;

impl CustomResolver for Longest {
    fn resolve(&self, input: &CustomInput<'_>) -> CustomChoice {
        fn key(v: &Value) -> (usize, &str) {
            match v {
                Value::Text(s) => (s.chars().count(), s.as_str()),
                _ => (0, ""),
            }
        }
        if key(input.incoming) > key(&input.current.value) {
            CustomChoice::TakeIncoming
        } else {
            CustomChoice::KeepCurrent
        }
    }
}

fn real_now_ms() -> u64 {
    SystemClock.now_ms()
}

struct PEnv {
    dir: tempfile::TempDir,
    server: RunningServer,
    secret: Vec<u8>,
    /// Real time ten minutes before the test started: write times are `base + t`.
    base_ms: u64,
}

impl PEnv {
    async fn start() -> PEnv {
        PEnv::start_with_rules(None).await
    }

    /// A server with sync rules and write permissions (`burrow.toml` text).
    async fn start_with_rules(rules: Option<&str>) -> PEnv {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig::new(dir.path().join("server"), schema());
        config.rules =
            rules.map(|r| Arc::new(burrow_core::rules::SyncRules::parse(r, &schema()).unwrap()));
        config.secret = Some(b"policies-secret".to_vec());
        config.register_resolver("longest", Longest);
        let secret = config.secret.clone().unwrap();
        let server = burrow_server::spawn(config, "127.0.0.1:0").await.unwrap();
        PEnv {
            dir,
            server,
            secret,
            base_ms: real_now_ms() - 600_000,
        }
    }

    /// A token for `user` with claim `role` (none when `role` is empty).
    fn token(&self, user: &str, role: &str) -> String {
        let mut extra = BTreeMap::new();
        if !role.is_empty() {
            extra.insert("role".to_string(), json!(role));
        }
        burrow_server::auth::mint(&self.secret, user, extra, real_now_ms() / 1000, 3600).unwrap()
    }

    /// A device `name` (client id `dev-NAME`) of `user` with role `role`, whose clock is
    /// `skew_ms` ahead of real time.
    fn device(&self, name: &str, user: &str, role: &str, skew_ms: i64) -> Device {
        let start = (self.base_ms as i64 + skew_ms) as u64;
        let clock = Arc::new(ManualClock::new(start));
        let client = Client::open_with(
            self.dir.path().join(format!("{name}.db")),
            &schema(),
            None,
            ClientOptions {
                clock: Some(clock.clone() as Arc<dyn Clock>),
                client_id: Some(format!("dev-{name}")),
                ..Default::default()
            },
        )
        .unwrap();
        let transport = HttpTransport::new(&self.server.url(), &self.token(user, role)).unwrap();
        Device {
            client,
            clock,
            base_ms: self.base_ms,
            skew_ms,
            transport,
        }
    }

    async fn server_conflicts(&self) -> Vec<ConflictEntry> {
        self.server.store().conflicts(1000).await.unwrap()
    }
}

struct Device {
    client: Client,
    clock: Arc<ManualClock>,
    base_ms: u64,
    skew_ms: i64,
    transport: HttpTransport,
}

impl Device {
    fn id(&self) -> &str {
        self.client.client_id()
    }

    /// Sets the device clock to write time `t` (ms after the test's base time).
    fn at(&self, t_ms: u64) {
        self.clock
            .set((self.base_ms as i64 + t_ms as i64 + self.skew_ms) as u64);
    }

    /// Runs `sql` (one local transaction) at write time `t`.
    fn exec_at(&self, t_ms: u64, sql: &str) {
        self.at(t_ms);
        self.client.execute(sql).unwrap();
    }

    /// Syncs with the device clock at real time (plus its skew).
    async fn sync(&self) -> SyncReport {
        self.clock.set((real_now_ms() as i64 + self.skew_ms) as u64);
        self.client.sync(&self.transport).await.unwrap()
    }

    fn rows(&self, sql: &str) -> Vec<Json> {
        self.client
            .query_json(sql)
            .unwrap()
            .into_iter()
            .map(Json::Object)
            .collect()
    }

    fn conflicts(&self) -> Vec<ConflictEntry> {
        self.client.conflicts().unwrap()
    }

    /// The one conflict record of `column`.
    fn conflict_of(&self, column: &str) -> ConflictEntry {
        let mut found: Vec<ConflictEntry> = self
            .conflicts()
            .into_iter()
            .filter(|c| c.column == column)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{}: one conflict record of {column}: {found:#?}",
            self.id()
        );
        found.remove(0)
    }

    fn open_conflicts(&self) -> u64 {
        self.client.status().unwrap().open_conflicts
    }

    fn pending(&self) -> u64 {
        self.client.status().unwrap().pending_ops
    }
}

/// Every device shows `expected` for `sql`, and all hold the same data.
fn assert_all(devices: &[&Device], sql: &str, expected: &[Json], what: &str) {
    for d in devices {
        assert_eq!(d.rows(sql), expected, "{what}: {} shows", d.id());
    }
    let hashes: Vec<String> = devices
        .iter()
        .map(|d| d.client.state_hash().unwrap())
        .collect();
    assert!(
        hashes.windows(2).all(|w| w[0] == w[1]),
        "{what}: state hashes differ: {hashes:?}"
    );
}

/// A server and two drivers' devices, `a` and `b`, that share the row `insert` creates.
async fn two_drivers(insert: &str) -> (PEnv, Device, Device) {
    let env = PEnv::start().await;
    let a = env.device("a", "ann", "driver", 0);
    let b = env.device("b", "bob", "driver", 0);
    shared(&a, &b, insert).await;
    (env, a, b)
}

/// [`race`] with `a` first, or `b` first.
async fn race_ordered(a: &Device, b: &Device, a_first: bool) {
    if a_first {
        race(a, b).await;
    } else {
        race(b, a).await;
    }
}

/// Both devices upload in this order, then the first downloads what the second uploaded.
async fn race(first: &Device, second: &Device) {
    first.sync().await;
    second.sync().await;
    first.sync().await;
}

/// `a` creates a row at time 0 and both devices download it.
async fn shared(a: &Device, b: &Device, sql: &str) {
    a.exec_at(0, sql);
    a.sync().await;
    b.sync().await;
}

#[tokio::test]
async fn counters_add_up_concurrent_increments_without_conflicts() {
    let (env, a, b) =
        two_drivers("INSERT INTO items(id, qty, weight) VALUES ('i1', 10, 1.5)").await;
    let sql = "SELECT qty, weight FROM items";
    assert_all(
        &[&a, &b],
        sql,
        &[json!({"qty": 10, "weight": 1.5})],
        "start",
    );

    a.exec_at(
        100,
        "UPDATE items SET qty = qty + 5, weight = weight + 0.25",
    );
    b.exec_at(110, "UPDATE items SET qty = qty + 3");
    b.exec_at(120, "UPDATE items SET qty = qty + 2, weight = weight + 0.5");
    assert_eq!(
        a.rows(sql),
        [json!({"qty": 15, "weight": 1.75})],
        "a offline"
    );
    assert_eq!(
        b.rows(sql),
        [json!({"qty": 15, "weight": 2.0})],
        "b offline"
    );

    a.sync().await;
    assert_eq!(
        a.rows(sql),
        [json!({"qty": 15, "weight": 1.75})],
        "a after its own upload"
    );
    b.sync().await;
    assert_eq!(
        b.rows(sql),
        [json!({"qty": 20, "weight": 2.25})],
        "b after uploading on top of a's increments"
    );
    a.sync().await;
    assert_all(
        &[&a, &b],
        sql,
        &[json!({"qty": 20, "weight": 2.25})],
        "increments add up",
    );
    assert!(a.conflicts().is_empty(), "{:?}", a.conflicts());
    assert!(b.conflicts().is_empty(), "{:?}", b.conflicts());
    assert!(a.client.lost_writes().unwrap().is_empty());
    assert!(b.client.lost_writes().unwrap().is_empty());
    assert!(env.server_conflicts().await.is_empty());
    assert_eq!(a.pending() + b.pending(), 0);

    // A later increment on one device is still an increment.
    b.exec_at(200, "UPDATE items SET qty = qty - 1");
    b.sync().await;
    a.sync().await;
    assert_all(
        &[&a, &b],
        sql,
        &[json!({"qty": 19, "weight": 2.25})],
        "decrement",
    );
}

#[tokio::test]
async fn concurrent_text_edits_merge_as_a_crdt() {
    let (env, a, b) =
        two_drivers("INSERT INTO items(id, notes) VALUES ('i1', 'The pump is fine.')").await;
    a.exec_at(100, "UPDATE items SET notes = 'Note: The pump is fine.'");
    b.exec_at(
        110,
        "UPDATE items SET notes = 'The pump is fine. Check the valve.'",
    );
    race(&a, &b).await;
    let sql = "SELECT notes FROM items";
    let merged = json!({"notes": "Note: The pump is fine. Check the valve."});
    assert_all(
        &[&a, &b],
        sql,
        std::slice::from_ref(&merged),
        "both edits kept",
    );
    assert!(a.conflicts().is_empty() && b.conflicts().is_empty());
    assert!(env.server_conflicts().await.is_empty());

    // A device that syncs from scratch materializes the same text.
    let c = env.device("c", "cat", "driver", 0);
    c.sync().await;
    assert_all(&[&a, &b, &c], sql, &[merged], "fresh device");

    // A later edit on top of the merged text is a plain diff of it.
    c.exec_at(
        200,
        "UPDATE items SET notes = 'Note: The pump is fine. Check the valve!'",
    );
    c.sync().await;
    a.sync().await;
    b.sync().await;
    assert_all(
        &[&a, &b, &c],
        sql,
        &[json!({"notes": "Note: The pump is fine. Check the valve!"})],
        "later edit",
    );
    assert_eq!(a.pending() + b.pending() + c.pending(), 0);
}

#[tokio::test]
async fn concurrent_list_inserts_both_survive_in_one_order() {
    let (env, a, b) =
        two_drivers(r#"INSERT INTO items(id, checklist) VALUES ('i1', '["a","b"]')"#).await;
    a.exec_at(100, r#"UPDATE items SET checklist = '["x","a","b"]'"#);
    b.exec_at(110, r#"UPDATE items SET checklist = '["a","b","y"]'"#);
    race(&a, &b).await;
    let list = |d: &Device| -> Json {
        let rows = d.rows("SELECT checklist FROM items");
        let text = rows[0]["checklist"].as_str().unwrap().to_string();
        serde_json::from_str(&text).unwrap()
    };
    assert_eq!(list(&a), json!(["x", "a", "b", "y"]), "a");
    assert_eq!(list(&b), json!(["x", "a", "b", "y"]), "b");
    assert_all(
        &[&a, &b],
        "SELECT checklist FROM items",
        &b.rows("SELECT checklist FROM items"),
        "same text",
    );
    assert!(env.server_conflicts().await.is_empty());
}

#[tokio::test]
async fn prefer_lets_the_manager_win_and_only_a_manager_change_it() {
    for manager_first in [true, false] {
        let what = format!("manager_first={manager_first}");
        let env = PEnv::start().await;
        let a = env.device("a", "ann", "driver", 0);
        let m = env.device("m", "max", "manager", 0);
        shared(&a, &m, "INSERT INTO items(id, label) VALUES ('i1', 'x')").await;
        // The manager approves first; the driver's refusal is later (LWW would pick it).
        m.exec_at(100, "UPDATE items SET approved = 1");
        a.exec_at(200, "UPDATE items SET approved = 0");
        if manager_first {
            race(&m, &a).await;
        } else {
            race(&a, &m).await;
        }
        let sql = "SELECT approved FROM items";
        assert_all(&[&a, &m], sql, &[json!({"approved": 1})], &what);
        for d in [&a, &m] {
            let c = d.conflict_of("approved");
            assert_eq!(c.reason, "prefer", "{what}");
            assert_eq!(c.status, ConflictStatus::Auto, "{what}");
            let w = c.winner().unwrap();
            assert_eq!(w.value, json!(true), "{what}: {c:?}");
            assert_eq!(w.client.as_deref(), Some(m.id()), "{what}");
            assert_eq!(w.user.as_deref(), Some("max"), "{what}");
            let l: Vec<_> = c.losers().collect();
            assert_eq!(l.len(), 1, "{what}: {c:?}");
            assert_eq!(l[0].value, json!(false), "{what}");
            assert_eq!(l[0].client.as_deref(), Some(a.id()), "{what}");
        }
        let logged = env.server_conflicts().await;
        assert_eq!(logged.len(), 1, "{what}: {logged:?}");

        // The driver, having seen the approval, tries to withdraw it: a rule judges every
        // write, so the approval stands and the refused value is logged (nothing lost).
        a.exec_at(300, "UPDATE items SET approved = 0");
        a.sync().await;
        m.sync().await;
        a.sync().await;
        assert_all(&[&a, &m], sql, &[json!({"approved": 1})], &what);
        assert_eq!(
            env.server_conflicts().await.len(),
            2,
            "{what}: the refused withdrawal is logged"
        );
        assert!(
            a.client
                .lost_writes()
                .unwrap()
                .iter()
                .any(|l| l.lost_columns == ["approved"]),
            "{what}: the driver's device keeps its lost write"
        );
        // The manager may withdraw it (preferred over preferred: an ordinary edit).
        m.exec_at(400, "UPDATE items SET approved = 0");
        m.sync().await;
        a.sync().await;
        assert_all(&[&a, &m], sql, &[json!({"approved": 0})], &what);
        assert_eq!(
            env.server_conflicts().await.len(),
            2,
            "{what}: no new conflict"
        );
        assert_eq!(a.pending() + m.pending(), 0, "{what}");
    }
}

#[tokio::test]
async fn max_by_keeps_the_value_with_the_larger_measurement_time() {
    for a_first in [true, false] {
        let what = format!("a_first={a_first}");
        let (_env, a, b) = two_drivers("INSERT INTO items(id, label) VALUES ('i1', 'x')").await;
        // a writes later (LWW would keep 5.0) but its reading is older.
        b.exec_at(100, "UPDATE items SET reading = 9.0, measured_at = 200");
        a.exec_at(300, "UPDATE items SET reading = 5.0, measured_at = 100");
        race_ordered(&a, &b, a_first).await;
        assert_all(
            &[&a, &b],
            "SELECT reading, measured_at FROM items",
            &[json!({"reading": 9.0, "measured_at": 200})],
            &what,
        );
        for d in [&a, &b] {
            let c = d.conflict_of("reading");
            assert_eq!(c.reason, "max_by", "{what}");
            assert_eq!(c.winner().unwrap().value, json!(9.0), "{what}");
            assert_eq!(c.winner().unwrap().client.as_deref(), Some(b.id()));
            let c = d.conflict_of("measured_at");
            assert_eq!(c.reason, "max", "{what}");
            assert_eq!(c.winner().unwrap().value, json!(200), "{what}");
        }
    }
}

#[tokio::test]
async fn order_keeps_the_value_furthest_along() {
    for a_first in [true, false] {
        let what = format!("a_first={a_first}");
        let (_env, a, b) =
            two_drivers("INSERT INTO items(id, phase) VALUES ('i1', 'created')").await;
        a.exec_at(100, "UPDATE items SET phase = 'delivered'");
        b.exec_at(200, "UPDATE items SET phase = 'loaded'");
        race_ordered(&a, &b, a_first).await;
        assert_all(
            &[&a, &b],
            "SELECT phase FROM items",
            &[json!({"phase": "delivered"})],
            &what,
        );
        for d in [&a, &b] {
            let c = d.conflict_of("phase");
            assert_eq!(c.reason, "order", "{what}");
            assert_eq!(c.losers().next().unwrap().value, json!("loaded"), "{what}");
        }
    }
}

#[tokio::test]
async fn min_and_max_win_regardless_of_time() {
    for a_first in [true, false] {
        let what = format!("a_first={a_first}");
        let (_env, a, b) =
            two_drivers("INSERT INTO items(id, low, high) VALUES ('i1', 5, 5)").await;
        // The earlier write has the minimum, the later one the maximum.
        a.exec_at(100, "UPDATE items SET low = 3, high = 6");
        b.exec_at(200, "UPDATE items SET low = 4, high = 9");
        race_ordered(&a, &b, a_first).await;
        assert_all(
            &[&a, &b],
            "SELECT low, high FROM items",
            &[json!({"low": 3, "high": 9})],
            &what,
        );
        for d in [&a, &b] {
            let c = d.conflict_of("low");
            assert_eq!(c.reason, "min", "{what}");
            assert_eq!(c.winner().unwrap().value, json!(3), "{what}");
            let c = d.conflict_of("high");
            assert_eq!(c.reason, "max", "{what}");
            assert_eq!(c.winner().unwrap().value, json!(9), "{what}");
        }
    }
}

/// Two devices set `pick` concurrently (b later, so b's value is the provisional winner);
/// returns the devices once both hold the open conflict.
async fn open_manual_conflict(env: &PEnv) -> (Device, Device) {
    let a = env.device("a", "ann", "driver", 0);
    let b = env.device("b", "bob", "driver", 0);
    shared(&a, &b, "INSERT INTO items(id, pick) VALUES ('i1', 'base')").await;
    a.exec_at(100, "UPDATE items SET pick = 'from-a'");
    b.exec_at(200, "UPDATE items SET pick = 'from-b'");
    race(&a, &b).await;
    assert_all(
        &[&a, &b],
        "SELECT pick FROM items",
        &[json!({"pick": "from-b"})],
        "provisional winner: lww",
    );
    for d in [&a, &b] {
        let c = d.conflict_of("pick");
        assert_eq!(c.reason, "manual");
        assert_eq!(c.status, ConflictStatus::Open, "{c:?}");
        assert_eq!(c.versions.len(), 2, "{c:?}");
        let w = c.winner().unwrap();
        assert_eq!(w.value, json!("from-b"));
        assert_eq!(w.client.as_deref(), Some(b.id()));
        assert_eq!(c.losers().next().unwrap().client.as_deref(), Some(a.id()));
        assert_eq!(d.open_conflicts(), 1, "{}", d.id());
    }
    (a, b)
}

/// The index of the version of `c` that holds `value`.
fn version_of(c: &ConflictEntry, value: serde_json::Value) -> usize {
    c.versions.iter().position(|v| v.value == value).unwrap()
}

#[tokio::test]
async fn manual_conflict_is_open_on_both_devices_until_one_picks_a_version() {
    let env = PEnv::start().await;
    let (a, b) = open_manual_conflict(&env).await;
    let c = b.conflict_of("pick");
    let loser = version_of(&c, json!("from-a"));
    b.at(300);
    let chosen = b.client.resolve(&c.id, Resolution::Pick(loser)).unwrap();
    assert_eq!(chosen, json!("from-a"));
    assert_eq!(
        b.rows("SELECT pick FROM items"),
        [json!({"pick": "from-a"})]
    );
    assert_eq!(b.open_conflicts(), 0, "closed locally at once");
    assert!(
        b.client.resolve(&c.id, Resolution::Pick(0)).is_err(),
        "a resolved conflict cannot be resolved again"
    );
    b.sync().await;
    a.sync().await;
    assert_all(
        &[&a, &b],
        "SELECT pick FROM items",
        &[json!({"pick": "from-a"})],
        "picked",
    );
    for d in [&a, &b] {
        let r = d.conflict_of("pick");
        assert_eq!(r.id, c.id);
        assert_eq!(r.status, ConflictStatus::Resolved, "{}: {r:?}", d.id());
        assert_eq!(r.resolution, Some(json!("from-a")), "{}", d.id());
        assert_eq!(r.resolved_by.as_deref(), Some(b.id()), "{}", d.id());
        assert_eq!(d.open_conflicts(), 0, "{}", d.id());
    }
    let logged = env.server_conflicts().await;
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0].status, ConflictStatus::Resolved);
    assert_eq!(a.pending() + b.pending(), 0);
}

#[tokio::test]
async fn a_resolution_the_permissions_refuse_leaves_the_conflict_open_with_the_reason() {
    let env = PEnv::start_with_rules(Some(
        r#"
[streams.items]
table = "items"
[streams.jobs]
table = "jobs"
[streams.visits]
table = "visits"
[[permissions]]
table = "*"
actions = ["insert", "update", "delete"]
when = "auth.role = 'manager'"
[[permissions]]
table = "items"
actions = ["insert", "update"]
when = "auth.role = 'driver' AND (label IS NULL OR label != 'sealed')"
"#,
    ))
    .await;
    let (a, b) = open_manual_conflict(&env).await;
    // A manager seals the item: drivers may no longer write it.
    let m = env.device("m", "meg", "manager", 0);
    m.sync().await;
    m.exec_at(250, "UPDATE items SET label = 'sealed' WHERE id = 'i1'");
    m.sync().await;
    b.sync().await;
    let c = b.conflict_of("pick");
    let loser = version_of(&c, json!("from-a"));
    b.at(300);
    b.client.resolve(&c.id, Resolution::Pick(loser)).unwrap();
    assert_eq!(b.open_conflicts(), 0, "closed locally at once");
    let r = b.sync().await;
    assert!(r.ops_rejected >= 1, "{r:?}");
    assert_eq!(b.open_conflicts(), 1, "the refusal reopens the conflict");
    assert_eq!(b.conflict_of("pick").status, ConflictStatus::Open);
    assert_eq!(
        b.rows("SELECT pick FROM items"),
        [json!({"pick": "from-b"})],
        "the refused choice is not shown"
    );
    let rejected = b.client.rejected_ops().unwrap();
    assert!(
        rejected.iter().any(|o| o.code == "permission_denied"),
        "{rejected:?}"
    );
    assert_eq!(env.server_conflicts().await[0].status, ConflictStatus::Open);
    // The other device still sees it open.
    a.sync().await;
    assert_eq!(a.conflict_of("pick").status, ConflictStatus::Open);
    // Retrying the refused transaction closes it locally again; the server refuses again.
    let close = rejected
        .iter()
        .find(|o| o.table == burrow_core::conflict::CONFLICTS_TABLE)
        .expect("the closing op is in the rejected list");
    b.client.retry_rejected(close.client_seq, None).unwrap();
    assert_eq!(b.open_conflicts(), 0, "closed locally again");
    let r = b.sync().await;
    assert!(r.ops_rejected >= 1, "{r:?}");
    assert_eq!(b.open_conflicts(), 1);
    assert_eq!(b.pending(), 0);
}

#[tokio::test]
async fn manual_conflict_resolved_with_a_merged_value() {
    let env = PEnv::start().await;
    let (a, b) = open_manual_conflict(&env).await;
    let c = a.conflict_of("pick");
    a.at(300);
    a.client
        .resolve(&c.id, Resolution::Value(json!("merged text")))
        .unwrap();
    a.sync().await;
    b.sync().await;
    assert_all(
        &[&a, &b],
        "SELECT pick FROM items",
        &[json!({"pick": "merged text"})],
        "merged",
    );
    for d in [&a, &b] {
        let r = d.conflict_of("pick");
        assert_eq!(r.status, ConflictStatus::Resolved, "{}: {r:?}", d.id());
        assert_eq!(r.resolution, Some(json!("merged text")), "{}", d.id());
        assert_eq!(r.resolved_by.as_deref(), Some(a.id()), "{}", d.id());
        assert_eq!(d.open_conflicts(), 0, "{}", d.id());
    }
    assert_eq!(a.pending() + b.pending(), 0);
}

#[tokio::test]
async fn custom_resolver_keeps_the_longest_report() {
    for a_first in [true, false] {
        let what = format!("a_first={a_first}");
        let env = PEnv::start().await;
        let a = env.device("a", "ann", "driver", 0);
        let b = env.device("b", "bob", "driver", 0);
        a.exec_at(
            0,
            "INSERT INTO items(id, report) VALUES ('i1', 'r'); \
             INSERT INTO items(id, report) VALUES ('i2', 'r')",
        );
        a.sync().await;
        b.sync().await;
        // i1: the later write is shorter. i2: equal lengths, the earlier one is larger.
        b.exec_at(
            100,
            "UPDATE items SET report = 'pump seized, bearing worn' WHERE id = 'i1'; \
             UPDATE items SET report = 'abd' WHERE id = 'i2'",
        );
        a.exec_at(
            200,
            "UPDATE items SET report = 'ok' WHERE id = 'i1'; \
             UPDATE items SET report = 'abc' WHERE id = 'i2'",
        );
        race_ordered(&a, &b, a_first).await;
        assert_all(
            &[&a, &b],
            "SELECT id, report FROM items ORDER BY id",
            &[
                json!({"id": "i1", "report": "pump seized, bearing worn"}),
                json!({"id": "i2", "report": "abd"}),
            ],
            &what,
        );
        for d in [&a, &b] {
            let records: Vec<ConflictEntry> = d
                .conflicts()
                .into_iter()
                .filter(|c| c.column == "report")
                .collect();
            assert_eq!(records.len(), 2, "{what}: {records:?}");
            for c in records {
                assert_eq!(c.reason, "custom:longest", "{what}");
                assert_eq!(c.status, ConflictStatus::Auto, "{what}");
                assert_eq!(c.winner().unwrap().client.as_deref(), Some(b.id()));
            }
        }
    }
}

#[tokio::test]
async fn a_clock_an_hour_ahead_does_not_win_lww() {
    for skew in [3_600_000i64, 0] {
        for b_first in [true, false] {
            let what = format!("skew={skew} b_first={b_first}");
            let env = PEnv::start().await;
            let a = env.device("a", "ann", "driver", skew);
            let b = env.device("b", "bob", "driver", 0);
            b.exec_at(0, "INSERT INTO items(id, label) VALUES ('i1', 'base')");
            b.sync().await;
            a.sync().await;
            // Real time T = base + 1 s for a (its clock says T + skew), T + 10 s for b.
            a.exec_at(1_000, "UPDATE items SET label = 'a'");
            b.exec_at(11_000, "UPDATE items SET label = 'b'");
            if b_first {
                race(&b, &a).await;
            } else {
                race(&a, &b).await;
            }
            assert_all(
                &[&a, &b],
                "SELECT label FROM items",
                &[json!({"label": "b"})],
                &what,
            );
            for d in [&a, &b] {
                let c = d.conflict_of("label");
                assert_eq!(c.reason, "lww", "{what}");
                let w = c.winner().unwrap();
                assert_eq!(w.client.as_deref(), Some(b.id()), "{what}");
                let l = c.losers().next().unwrap();
                assert_eq!(l.client.as_deref(), Some(a.id()), "{what}");
                // The loser's time is in server time: the skew was taken out.
                let expected = env.base_ms + 1_000;
                assert!(
                    l.time_ms.abs_diff(expected) < 5_000,
                    "{what}: loser time {} vs {expected} (raw device time {})",
                    l.time_ms,
                    expected as i64 + skew
                );
                assert!(w.time_ms.abs_diff(env.base_ms + 11_000) < 5_000, "{what}");
            }
        }
    }
}

/// `jobs` is `update_wins`: a (which created the job) deletes it while b changes its tech.
async fn update_wins_case(delete_first: bool) {
    let what = format!("delete_first={delete_first}");
    let (env, a, b) =
        two_drivers("INSERT INTO jobs(id, title, tech) VALUES ('j1', 'Fix pump', 'ann')").await;
    a.exec_at(100, "DELETE FROM jobs WHERE id = 'j1'");
    b.exec_at(200, "UPDATE jobs SET tech = 'bob' WHERE id = 'j1'");
    race_ordered(&a, &b, delete_first).await;
    let row = json!({"id": "j1", "title": "Fix pump", "tech": "bob"});
    assert_all(
        &[&a, &b],
        "SELECT id, title, tech FROM jobs",
        std::slice::from_ref(&row),
        &what,
    );
    for d in [&a, &b] {
        let c = d.conflict_of(WHOLE_ROW);
        assert_eq!(c.reason, "update_wins", "{what}");
        assert_eq!(c.status, ConflictStatus::Auto, "{what}");
        assert_eq!((c.table.as_str(), c.row_id.as_str()), ("jobs", "j1"));
        let l = c.losers().next().unwrap();
        assert!(l.deleted, "{what}: the delete lost: {c:?}");
        assert_eq!(l.client.as_deref(), Some(a.id()), "{what}");
        let w = c.winner().unwrap();
        assert_eq!(w.client.as_deref(), Some(b.id()), "{what}");
        assert_eq!(
            w.value,
            json!({"title": "Fix pump", "tech": "bob"}),
            "{what}: the winning version is the row as it is kept: {c:?}"
        );
    }
    // A device that syncs from scratch gets the whole row too.
    let c = env.device("c", "cat", "driver", 0);
    c.sync().await;
    assert_all(
        &[&a, &b, &c],
        "SELECT id, title, tech FROM jobs",
        &[row],
        &what,
    );
    assert_eq!(a.pending() + b.pending(), 0, "{what}");
}

#[tokio::test]
async fn update_wins_keeps_a_job_whose_delete_arrives_after_the_update() {
    update_wins_case(false).await;
}

#[tokio::test]
async fn update_wins_brings_back_a_job_deleted_before_the_update_arrived() {
    update_wins_case(true).await;
}

#[tokio::test]
async fn manual_delete_conflict_keeps_the_row_for_the_user_to_restore() {
    for delete_first in [true, false] {
        let what = format!("delete_first={delete_first}");
        let (_env, a, b) = two_drivers("INSERT INTO visits(id, note) VALUES ('v1', 'first')").await;
        a.exec_at(100, "DELETE FROM visits WHERE id = 'v1'");
        b.exec_at(200, "UPDATE visits SET note = 'second' WHERE id = 'v1'");
        race_ordered(&a, &b, delete_first).await;
        let sql = "SELECT id, note FROM visits";
        assert_all(
            &[&a, &b],
            sql,
            &[],
            &format!("{what}: deleted provisionally"),
        );
        let mut id = String::new();
        for d in [&a, &b] {
            let c = d.conflict_of(WHOLE_ROW);
            assert_eq!(c.status, ConflictStatus::Open, "{what}: {c:?}");
            assert_eq!(c.table, "visits");
            assert_eq!(c.versions.len(), 2, "{what}: {c:?}");
            let w = c.winner().unwrap();
            assert!(w.deleted, "{what}: the delete holds provisionally: {c:?}");
            let l = c.losers().next().unwrap();
            assert_eq!(l.value, json!({"note": "second"}), "{what}: {c:?}");
            assert_eq!(d.open_conflicts(), 1, "{what}: {}", d.id());
            id = c.id;
        }
        let c = b.conflict_of(WHOLE_ROW);
        let row_version = c.versions.iter().position(|v| !v.deleted).unwrap();
        b.at(300);
        b.client
            .resolve(&id, Resolution::Pick(row_version))
            .unwrap();
        b.sync().await;
        a.sync().await;
        assert_all(
            &[&a, &b],
            sql,
            &[json!({"id": "v1", "note": "second"})],
            &format!("{what}: restored"),
        );
        for d in [&a, &b] {
            let r = d.conflict_of(WHOLE_ROW);
            assert_eq!(r.status, ConflictStatus::Resolved, "{what}: {r:?}");
            assert_eq!(r.resolved_by.as_deref(), Some(b.id()), "{what}");
            assert_eq!(d.open_conflicts(), 0, "{what}: {}", d.id());
        }
        assert_eq!(a.pending() + b.pending(), 0, "{what}");
    }
}

/// A GET over loopback with an optional bearer token: (status, JSON body).
async fn get(url: &str, token: Option<&str>) -> (u16, Json) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Json::String(text)),
    )
}

#[tokio::test]
async fn the_conflict_log_is_served_to_operators_only() {
    let env = PEnv::start().await;
    let a = env.device("a", "ann", "driver", 0);
    let m = env.device("m", "max", "manager", 0);
    shared(&a, &m, "INSERT INTO items(id, pick) VALUES ('i1', 'base')").await;
    m.exec_at(100, "UPDATE items SET approved = 1, pick = 'm'");
    a.exec_at(200, "UPDATE items SET approved = 0, pick = 'a'");
    race(&a, &m).await;
    let mine = a.conflicts();
    assert_eq!(mine.len(), 2, "{mine:?}");
    let prefer = a.conflict_of("approved");
    let manual = a.conflict_of("pick");
    assert_eq!(prefer.status, ConflictStatus::Auto);
    assert_eq!(manual.status, ConflictStatus::Open);

    let url = format!("{}/v1/conflicts", env.server.url());
    let op = env.token("olga", "operator");
    let entries = |body: &Json| -> Vec<ConflictEntry> {
        serde_json::from_value(body["conflicts"].clone()).unwrap()
    };
    let (status, body) = get(&url, Some(&op)).await;
    assert_eq!(status, 200, "{body}");
    let all = entries(&body);
    assert_eq!(all, mine, "the operator sees what the devices involved see");

    let (status, body) = get(&format!("{url}?status=open"), Some(&op)).await;
    assert_eq!(status, 200);
    assert_eq!(entries(&body), std::slice::from_ref(&manual));
    let (_, body) = get(&format!("{url}?status=auto"), Some(&op)).await;
    assert_eq!(entries(&body), [prefer]);
    let (_, body) = get(&format!("{url}?table=jobs"), Some(&op)).await;
    assert!(entries(&body).is_empty());
    let (_, body) = get(&format!("{url}?limit=1"), Some(&op)).await;
    assert_eq!(entries(&body), [all[1].clone()], "the newest one");
    let (status, body) = get(&format!("{url}?status=nope"), Some(&op)).await;
    assert_eq!((status, &body["code"]), (400, &json!("invalid_query")));
    let (status, body) = get(&format!("{url}?limit=lots"), Some(&op)).await;
    assert_eq!(
        (status, &body["code"]),
        (400, &json!("invalid_query")),
        "{body}"
    );

    let (status, body) = get(&url, Some(&env.token("adam", "admin"))).await;
    assert_eq!(status, 200, "admins may read it too");
    assert_eq!(entries(&body).len(), 2);

    for token in [
        env.token("ann", "driver"),
        env.token("max", "manager"),
        env.token("nobody", ""),
    ] {
        let (status, body) = get(&url, Some(&token)).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["code"], "operator_only");
    }
    let (status, body) = get(&url, None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "token_missing");
    let (status, body) = get(&url, Some("not-a-token")).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "token_invalid");

    // Resolving the manual conflict moves it out of the open list.
    a.at(300);
    a.client.resolve(&manual.id, Resolution::Pick(0)).unwrap();
    a.sync().await;
    let (_, body) = get(&format!("{url}?status=open"), Some(&op)).await;
    assert!(entries(&body).is_empty(), "{body}");
    let (_, body) = get(&format!("{url}?status=resolved"), Some(&op)).await;
    let resolved = entries(&body);
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].id, manual.id);
    assert_eq!(resolved[0].resolved_by.as_deref(), Some(a.id()));
}

/// Resolving a field conflict on a row the device deleted since does not bring the row back:
/// only the record is closed (found by the simulator).
#[tokio::test]
async fn resolving_a_field_conflict_never_recreates_a_deleted_row() {
    let env = PEnv::start().await;
    let (a, b) = open_manual_conflict(&env).await;
    let c = b.conflict_of("pick");
    b.exec_at(300, "DELETE FROM items WHERE id = 'i1'");
    b.at(310);
    b.client.resolve(&c.id, Resolution::Pick(0)).unwrap();
    assert!(
        b.rows("SELECT id FROM items").is_empty(),
        "still deleted here"
    );
    b.sync().await;
    a.sync().await;
    b.sync().await;
    assert_all(&[&a, &b], "SELECT id FROM items", &[], "deleted everywhere");
    for d in [&a, &b] {
        assert_eq!(
            d.conflict_of("pick").status,
            ConflictStatus::Resolved,
            "{}",
            d.id()
        );
    }
    assert_eq!(a.pending() + b.pending(), 0);
}

/// A row deleted and created again under the same id starts a fresh text document on every
/// side: the new text is not diffed against the old life's document.
#[tokio::test]
async fn a_text_row_re_created_after_a_delete_starts_a_fresh_document() {
    let (_env, a, b) =
        two_drivers("INSERT INTO items(id, notes) VALUES ('i1', 'first life')").await;
    a.exec_at(100, "DELETE FROM items WHERE id = 'i1'");
    race_ordered(&a, &b, true).await;
    a.exec_at(
        200,
        "INSERT INTO items(id, notes) VALUES ('i1', 'second life')",
    );
    race_ordered(&a, &b, true).await;
    assert_all(
        &[&a, &b],
        "SELECT notes FROM items",
        &[json!({"notes": "second life"})],
        "re-created",
    );
}
