//! Chaos end to end: an embedded server and three clients, each behind its own `hostile`
//! proxy (EDGE bandwidth and latency, random drops and stalls, outages shortened to 3–5 s).
//! Every client writes continuously (inserts, updates of shared rows, deletes, multi-statement
//! transactions) and tries to sync every ~200 ms; failed syncs are simply retried. Then the
//! network heals, everyone syncs until their outbox is empty, and the test checks that every
//! captured op is on the server exactly once and that all clients hold the same data.
//!
//! `BURROW_CHAOS_SECS` sets the length of the chaos phase (default 60), `BURROW_CHAOS_SEED`
//! the seed of the fault schedule and the workload (default 0xB0220).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use burrow_client::{
    Client, Error as ClientError, FailureKind, HttpTransport, TrafficStats, Transport,
    TransportError,
};
use burrow_core::Schema;
use burrow_core::env::SeededRng;
use burrow_proto::v1;
use burrow_proxy::{Profile, ProxyHandle, Stats};
use burrow_server::{RunningServer, ServerConfig};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SCHEMA: &str = r#"
version = 1
[tables.routes]
priority = "normal"
[tables.routes.columns]
id = "text"
driver_id = "text"
day = "text"
[tables.shipments]
priority = "critical"
[tables.shipments.columns]
id = "text"
route_id = { type = "text", references = "routes" }
status = { type = "text", policy = "lww" }
address = "text"
weight_kg = "real"
photo = "blob"
meta = "json"
fragile = "bool"
pieces = "integer"
"#;

const CLIENTS: usize = 3;
const SHARED_ROUTES: u64 = 4;
const SHARED_SHIPMENTS: u64 = 8;
const SYNC_EVERY: Duration = Duration::from_millis(200);
/// How long the healed network gets to drain every outbox.
const HEAL_DEADLINE: Duration = Duration::from_secs(180);

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => {
            let v = v.trim();
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
        }
        Err(_) => default,
    }
}

fn hostile_for_tests() -> Profile {
    Profile::hostile().with_outages(
        Duration::from_secs(10),
        Duration::from_secs(3),
        Duration::from_secs(5),
    )
}

fn token(secret: &[u8], user: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    burrow_server::auth::mint(secret, user, BTreeMap::new(), now, 3600).unwrap()
}

/// HTTP to one proxy, counting requests and keeping one example message per error class.
struct Counting {
    inner: HttpTransport,
    proxy: Arc<ProxyHandle>,
    requests: AtomicU64,
    failed: AtomicU64,
    /// Requests that failed although the link was up when they started and ended.
    failed_link_up: AtomicU64,
    examples: Mutex<BTreeMap<String, String>>,
}

impl Counting {
    fn new(inner: HttpTransport, proxy: Arc<ProxyHandle>) -> Counting {
        Counting {
            inner,
            proxy,
            requests: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            failed_link_up: AtomicU64::new(0),
            examples: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Transport for Counting {
    async fn sync(
        &self,
        req: v1::SyncRequest,
    ) -> Result<(v1::SyncResponse, TrafficStats), TransportError> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let up_before = self.proxy.is_online();
        let r = self.inner.sync(req).await;
        if let Err(e) = &r {
            self.failed.fetch_add(1, Ordering::SeqCst);
            if up_before && self.proxy.is_online() {
                self.failed_link_up.fetch_add(1, Ordering::SeqCst);
            }
            let class = classify(&ClientError::Transport(e.clone()));
            self.examples
                .lock()
                .unwrap()
                .entry(class)
                .or_insert_with(|| e.to_string());
        }
        r
    }
}

/// Outcome of one sync attempt.
#[derive(Debug, Clone)]
struct Attempt {
    ok: bool,
    /// When it started.
    at: Instant,
    /// The link was down when the attempt started or ended.
    offline: bool,
    took: Duration,
    /// Requests sent (including the one that failed).
    requests: u64,
    /// Error class when it failed.
    error: Option<String>,
    /// The failure's kind when it failed.
    kind: Option<FailureKind>,
}

/// The error's class: its typed kind (`connection_lost`, `timeout`, …) or, when the server
/// answered, `status/{status}/{code}`.
fn classify(e: &ClientError) -> String {
    match e.server_status() {
        Some((status, code)) => format!("status/{status}/{code}"),
        None => e.failure_kind().to_string(),
    }
}

/// An error a retry can cure: the network, or a server that is briefly unable to answer.
fn retryable(e: &ClientError) -> bool {
    matches!(e, ClientError::Transport(t) if t.is_retryable())
}

async fn sync_once(client: &Client, transport: &Counting, proxy: &ProxyHandle) -> Attempt {
    let online_before = proxy.is_online();
    let requests_before = transport.requests.load(Ordering::SeqCst);
    let t0 = Instant::now();
    let r = client.sync(transport).await;
    let offline = !online_before || !proxy.is_online();
    Attempt {
        ok: r.is_ok(),
        at: t0,
        offline,
        took: t0.elapsed(),
        requests: transport.requests.load(Ordering::SeqCst) - requests_before,
        error: r.as_ref().err().map(|e| {
            if !retryable(e) {
                eprintln!(
                    "chaos: client {}: non-retryable sync error: {e}",
                    client.client_id()
                );
            }
            classify(e)
        }),
        kind: r.as_ref().err().map(ClientError::failure_kind),
    }
}

/// What one client's writer did.
#[derive(Debug, Default)]
struct Written {
    writes: u64,
    ops: u64,
    /// Outbox sizes sampled every 25 writes.
    pending_samples: Vec<u64>,
}

/// Writes one local transaction; returns the ops it captured.
fn write_one(c: &Client, me: usize, k: u64, rng: &mut SeededRng, own: &mut Vec<String>) -> u64 {
    let shared_ship = rng.below(SHARED_SHIPMENTS);
    let shared_route = rng.below(SHARED_ROUTES);
    let sql = match rng.below(10) {
        0..=4 => format!(
            "UPDATE shipments SET status = 'c{me}-{k}', pieces = coalesce(pieces, 0) + 1 \
             WHERE id = 's-{shared_ship}'"
        ),
        5 => format!("UPDATE routes SET driver_id = 'd{me}-{k}' WHERE id = 'r-{shared_route}'"),
        6 | 7 => {
            let id = format!("c{me}-{k}");
            own.push(id.clone());
            format!(
                "INSERT INTO shipments(id, route_id, status, address, weight_kg, meta, fragile, pieces) \
                 VALUES ('{id}', 'r-{shared_route}', 'new', 'street {k}', {}.5, '{{\"k\":{k}}}', {}, 1)",
                rng.below(40),
                rng.below(2)
            )
        }
        8 => {
            // A multi-statement transaction: all or nothing on the server.
            let id = format!("c{me}-{k}");
            let mut sql = format!(
                "INSERT INTO shipments(id, route_id, status, pieces) VALUES ('{id}', 'r-{shared_route}', 'tx', 2);\
                 UPDATE shipments SET address = 'moved by c{me}-{k}' WHERE id = 's-{shared_ship}';"
            );
            if let Some(old) = own.get(rng.below(own.len() as u64) as usize) {
                sql.push_str(&format!(
                    "UPDATE shipments SET address = 'edited {k}' WHERE id = '{old}';"
                ));
            }
            own.push(id);
            sql
        }
        _ => {
            if own.is_empty() {
                format!("UPDATE routes SET day = 'day {k}' WHERE id = 'r-{shared_route}'")
            } else {
                let i = rng.below(own.len() as u64) as usize;
                let victim = own.swap_remove(i);
                format!("DELETE FROM shipments WHERE id = '{victim}'")
            }
        }
    };
    c.execute(&sql)
        .unwrap_or_else(|e| panic!("client {me} write {k} failed: {e}\n{sql}"))
        .ops_captured
}

struct Fleet {
    _dir: tempfile::TempDir,
    server: RunningServer,
    clients: Vec<Arc<Client>>,
    transports: Vec<Arc<Counting>>,
    proxies: Vec<Arc<ProxyHandle>>,
    /// Ops captured per client.
    captured: Vec<Arc<AtomicU64>>,
}

async fn setup(seed: u64) -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let schema = Schema::from_toml_str(SCHEMA).unwrap();
    let mut config = ServerConfig::new(dir.path().join("server"), schema.clone());
    // Measures sync, not the per-user rate limit (every device here is one user).
    config.limits.requests_per_second_per_user = 0.0;
    let secret = b"chaos-secret".to_vec();
    config.secret = Some(secret.clone());
    let server = burrow_server::spawn(config, "127.0.0.1:0").await.unwrap();
    let mut clients = Vec::new();
    let mut transports = Vec::new();
    let mut proxies = Vec::new();
    let mut captured = Vec::new();
    for i in 0..CLIENTS {
        let c = Arc::new(Client::open(dir.path().join(format!("c{i}.db")), &schema).unwrap());
        let proxy = burrow_proxy::spawn(
            "127.0.0.1:0",
            server.local_addr(),
            hostile_for_tests(),
            seed.wrapping_add(i as u64),
        )
        .await
        .unwrap();
        let tok = token(&secret, &format!("driver-{i}"));
        let proxy = Arc::new(proxy);
        transports.push(Arc::new(Counting::new(
            HttpTransport::new(&proxy.url(), &tok).unwrap(),
            proxy.clone(),
        )));
        clients.push(c);
        proxies.push(proxy);
        captured.push(Arc::new(AtomicU64::new(0)));
    }
    // The shared rows exist everywhere before the chaos starts (synced past the proxies).
    let mut sql = String::new();
    for r in 0..SHARED_ROUTES {
        sql.push_str(&format!(
            "INSERT INTO routes(id, driver_id, day) VALUES ('r-{r}', 'd', 'mon');"
        ));
    }
    for s in 0..SHARED_SHIPMENTS {
        sql.push_str(&format!(
            "INSERT INTO shipments(id, route_id, status, pieces) VALUES ('s-{s}', 'r-{}', 'new', 0);",
            s % SHARED_ROUTES
        ));
    }
    let n = clients[0].execute(&sql).unwrap().ops_captured;
    captured[0].fetch_add(n, Ordering::SeqCst);
    for (i, c) in clients.iter().enumerate() {
        let direct =
            HttpTransport::new(&server.url(), &token(&secret, &format!("driver-{i}"))).unwrap();
        c.sync(&direct).await.unwrap();
    }
    Fleet {
        _dir: dir,
        server,
        clients,
        transports,
        proxies,
        captured,
    }
}

fn rate(n: u64, d: u64) -> f64 {
    if d == 0 { 1.0 } else { n as f64 / d as f64 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_clients_behind_hostile_proxies_lose_nothing_and_converge() {
    let secs = env_u64("BURROW_CHAOS_SECS", 60);
    let seed = env_u64("BURROW_CHAOS_SEED", 0xB0220);
    let write_ms = env_u64("BURROW_CHAOS_WRITE_MS", 40);
    eprintln!(
        "chaos: {CLIENTS} clients, {secs} s, a write every ~{write_ms} ms, seed {seed:#x}, profile {}",
        hostile_for_tests()
    );
    let fleet = setup(seed).await;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);

    // Chaos phase: writers and syncers run side by side.
    let mut writers = Vec::new();
    let mut syncers = Vec::new();
    for i in 0..CLIENTS {
        let c = fleet.clients[i].clone();
        let captured = fleet.captured[i].clone();
        let mut rng = SeededRng::new(seed ^ (0x5EED_0000 + i as u64));
        writers.push(tokio::task::spawn_blocking(move || {
            let mut own = Vec::new();
            let mut w = Written::default();
            while Instant::now() < deadline {
                let n = write_one(&c, i, w.writes, &mut rng, &mut own);
                w.writes += 1;
                w.ops += n;
                if w.writes % 25 == 0 {
                    w.pending_samples.push(c.status().unwrap().pending_ops);
                }
                captured.fetch_add(n, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(
                    write_ms / 2 + rng.below(write_ms + 1),
                ));
            }
            w
        }));
        let c = fleet.clients[i].clone();
        let t = fleet.transports[i].clone();
        let p = fleet.proxies[i].clone();
        syncers.push(tokio::spawn(async move {
            let mut attempts = Vec::new();
            while Instant::now() < deadline {
                attempts.push(sync_once(&c, &t, &p).await);
                tokio::time::sleep(SYNC_EVERY).await;
            }
            attempts
        }));
    }
    let mut written = Vec::new();
    for w in writers {
        written.push(w.await.unwrap());
    }
    let mut chaos_attempts = Vec::new();
    for s in syncers {
        chaos_attempts.push(s.await.unwrap());
    }
    let chaos_took = started.elapsed();
    if std::env::var_os("BURROW_CHAOS_VERBOSE").is_some() {
        for (i, list) in chaos_attempts.iter().enumerate() {
            for a in list {
                eprintln!(
                    "chaos: client {i} attempt at {:6.1} s: {} after {:.1} s, {} requests, {}",
                    a.at.duration_since(started).as_secs_f64(),
                    if a.ok { "completed" } else { "failed" },
                    a.took.as_secs_f64(),
                    a.requests,
                    if a.offline { "link down" } else { "link up" }
                );
            }
        }
    }
    let stats_at_heal: Vec<Stats> = fleet.proxies.iter().map(|p| p.stats()).collect();
    let pending_at_heal: Vec<u64> = fleet
        .clients
        .iter()
        .map(|c| c.status().unwrap().pending_ops)
        .collect();

    // Heal: the link stays up and the faults are gone.
    for p in &fleet.proxies {
        p.set_online(true);
        p.set_profile(Profile::none());
    }
    let heal_started = Instant::now();
    let mut heal_attempts: Vec<Vec<Attempt>> = vec![Vec::new(); CLIENTS];
    for (i, tried) in heal_attempts.iter_mut().enumerate() {
        let c = &fleet.clients[i];
        loop {
            let a = sync_once(c, &fleet.transports[i], &fleet.proxies[i]).await;
            let ok = a.ok;
            tried.push(a);
            if ok && c.status().unwrap().pending_ops == 0 {
                break;
            }
            assert!(
                heal_started.elapsed() < HEAL_DEADLINE,
                "client {i} still has {} pending ops after healing for {HEAL_DEADLINE:?}: {:?}",
                c.status().unwrap().pending_ops,
                tried.last()
            );
            tokio::time::sleep(SYNC_EVERY).await;
        }
    }
    // Two more rounds so everyone has everyone's last changes.
    for _ in 0..2 {
        for i in 0..CLIENTS {
            fleet.clients[i]
                .sync(&*fleet.transports[i])
                .await
                .unwrap_or_else(|e| panic!("client {i}: sync after healing failed: {e}"));
        }
    }
    let heal_took = heal_started.elapsed();

    // Sync success: an attempt completed, or failed and the next attempt completed.
    let (mut attempts, mut ok, mut resumed, mut failed_online, mut failed_offline) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    // Failures that are neither the network's nor a server briefly unable to answer.
    let mut foreign: BTreeMap<String, u64> = BTreeMap::new();
    let mut slowest = Duration::ZERO;
    let mut durations = Vec::new();
    let (mut ok_requests, mut ok_took) = (0u64, Duration::ZERO);
    for i in 0..CLIENTS {
        let chaos = &chaos_attempts[i];
        for (k, a) in chaos.iter().enumerate() {
            attempts += 1;
            slowest = slowest.max(a.took);
            durations.push(a.took);
            if a.ok {
                ok += 1;
                ok_requests += a.requests;
                ok_took += a.took;
                continue;
            }
            if a.offline {
                failed_offline += 1;
            } else {
                failed_online += 1;
            }
            *errors
                .entry(a.error.clone().unwrap_or_default())
                .or_default() += 1;
            if !a
                .kind
                .is_some_and(|k| k.is_network() || k == FailureKind::ServerError)
            {
                *foreign
                    .entry(a.error.clone().unwrap_or_default())
                    .or_default() += 1;
            }
            let next_ok = chaos
                .get(k + 1)
                .or_else(|| heal_attempts[i].first())
                .is_some_and(|n| n.ok);
            if next_ok {
                resumed += 1;
            }
        }
    }

    // Zero loss, no duplicates, convergence.
    let mut total_ops = 0;
    for (i, c) in fleet.clients.iter().enumerate() {
        let n = fleet.captured[i].load(Ordering::SeqCst);
        total_ops += n;
        let st = c.status().unwrap();
        assert_eq!(st.pending_ops, 0, "client {i}");
        assert_eq!(
            st.rejected_ops, 0,
            "client {i} has rejected ops: {:?}",
            st.rejected
        );
        for seq in 1..=n {
            let count = fleet
                .server
                .store()
                .op_effect_count(c.client_id(), seq)
                .unwrap();
            assert_eq!(
                count, 1,
                "client {i} op {seq} is on the server {count} times"
            );
        }
        assert_eq!(
            fleet
                .server
                .store()
                .op_effect_count(c.client_id(), n + 1)
                .unwrap(),
            0,
            "client {i}: the server holds an op the client never captured"
        );
    }
    let (server_ops, live_rows) = fleet.server.store().counts().unwrap();
    assert_eq!(server_ops, total_ops, "ops on the server vs ops captured");
    let hashes: Vec<String> = fleet
        .clients
        .iter()
        .map(|c| c.state_hash().unwrap())
        .collect();
    let client_rows: Vec<u64> = fleet
        .clients
        .iter()
        .map(|c| {
            let r = c
                .query_json(
                    "SELECT (SELECT count(*) FROM routes) + (SELECT count(*) FROM shipments) AS n",
                )
                .unwrap();
            r[0]["n"].as_u64().unwrap()
        })
        .collect();
    let conflicts: Vec<u64> = fleet
        .clients
        .iter()
        .map(|c| c.status().unwrap().conflicts)
        .collect();

    durations.sort();
    let median = durations
        .get(durations.len() / 2)
        .copied()
        .unwrap_or_default();
    let requests: u64 = fleet
        .transports
        .iter()
        .map(|t| t.requests.load(Ordering::SeqCst))
        .sum();
    let failed_requests: u64 = fleet
        .transports
        .iter()
        .map(|t| t.failed.load(Ordering::SeqCst))
        .sum();
    let mut examples = BTreeMap::new();
    for t in &fleet.transports {
        for (k, v) in t.examples.lock().unwrap().iter() {
            examples.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    let failed_link_up: u64 = fleet
        .transports
        .iter()
        .map(|t| t.failed_link_up.load(Ordering::SeqCst))
        .sum();
    let samples: Vec<u64> = written
        .iter()
        .flat_map(|w| w.pending_samples.clone())
        .collect();
    let pending_max = samples.iter().copied().max().unwrap_or(0);
    let pending_mean = rate(samples.iter().sum(), samples.len() as u64);
    let writes: u64 = written.iter().map(|w| w.writes).sum();
    let chaos_ops: u64 = written.iter().map(|w| w.ops).sum();
    let total_stats = stats_at_heal.iter().fold(Stats::default(), |a, s| Stats {
        connections: a.connections + s.connections,
        active: a.active + s.active,
        refused: a.refused + s.refused,
        upstream_errors: a.upstream_errors + s.upstream_errors,
        bytes_up: a.bytes_up + s.bytes_up,
        bytes_down: a.bytes_down + s.bytes_down,
        drops: a.drops + s.drops,
        stalls: a.stalls + s.stalls,
        outages: a.outages + s.outages,
        cut: a.cut + s.cut,
    });
    eprintln!(
        "chaos report: {:.0} s of chaos, seed {seed:#x}: {writes} writes ({chaos_ops} ops, {total_ops} with setup) \
         from {CLIENTS} clients; sync attempts {attempts}: {ok} completed, {resumed} failed then resumed, \
         {failed_online} failed with the link up, {failed_offline} with it down; \
         success rate {:.1} % (completed or resumed), {:.1} % completed first time, \
         {:.1} % of the attempts not cut by an outage completed; \
         attempt time median {:.1} s, slowest {:.1} s; completed attempts averaged {:.1} requests and {:.1} s; \
         errors {errors:?}",
        chaos_took.as_secs_f64(),
        100.0 * rate(ok + resumed, attempts),
        100.0 * rate(ok, attempts),
        100.0 * rate(ok, ok + failed_online),
        median.as_secs_f64(),
        slowest.as_secs_f64(),
        rate(ok_requests, ok),
        ok_took.as_secs_f64() / ok.max(1) as f64,
    );
    eprintln!(
        "chaos report: requests (chaos + heal) {requests}: {} answered, {failed_requests} failed ({:.1} % answered), \
         of which {failed_link_up} failed with the link up; example errors {examples:?}",
        requests - failed_requests,
        100.0 * rate(requests - failed_requests, requests),
    );
    eprintln!(
        "chaos report: outbox during chaos (sampled every 25 writes): mean {pending_mean:.1} ops, max {pending_max} ops"
    );
    eprintln!(
        "chaos report: pending at heal {pending_at_heal:?}; healed in {:.1} s ({} attempts); \
         server ops {server_ops} = captured {total_ops}, live rows {live_rows} (clients {client_rows:?}), \
         conflicts {conflicts:?}; state hashes {hashes:?}",
        heal_took.as_secs_f64(),
        heal_attempts.iter().map(Vec::len).sum::<usize>(),
    );
    eprintln!("chaos report: proxies at heal: {total_stats}");
    for (i, s) in stats_at_heal.iter().enumerate() {
        eprintln!("chaos report:   proxy {i}: {s}");
    }
    assert!(
        hashes.iter().all(|h| *h == hashes[0]),
        "clients diverged: {hashes:?}"
    );
    assert!(
        client_rows.iter().all(|n| *n == live_rows),
        "rows on clients {client_rows:?} vs live rows on the server {live_rows}"
    );
    assert!(writes > 0 && ok > 0, "the workload did not run");
    assert!(
        foreign.is_empty(),
        "sync failed for reasons other than the network: {foreign:?} (all: {errors:?})"
    );
}
