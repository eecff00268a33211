//! The simulated world: devices running the real client, the nemesis, the workload and the
//! run loop.

use crate::check::OpNote;
use crate::check::{self, Dump, Fingerprint};
use crate::net::{
    Counters, DeviceClock, LinkFaults, Net, POISONED_VALUE, Partition, PoisonRule, SimClock,
    SimTransport,
};
use crate::scope::{ITEM_BATCHES, Judge, SCOPED_SCHEMA, SIM_RULES, SimClaims, TEAMS};
use burrow_client::{Client, ClientOptions, Transport};
use burrow_client::{Network, NetworkState};
use burrow_core::Schema;
use burrow_core::conflict::ConflictStatus;
use burrow_core::env::{Clock, Rng, SeededRng};
use burrow_core::hash::Fnv64;
use burrow_core::rules::SyncRules;
use burrow_server::ServerConfig;
use burrow_server::store::ServerStore;
use burrow_server::validate::ROW_ID_BYTES_MAX;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

/// The schema every simulated device uses.
pub const SIM_SCHEMA: &str = r#"
version = 1
[tables.items]
priority = "normal"
[tables.items.columns]
id = "text"
title = "text"
qty = "integer"
status = { type = "text", policy = "lww" }
note = "text"
stock = { type = "integer", policy = "counter" }
notes = { type = "text", policy = "text" }
phase = { type = "text", policy = "order", order = ["created", "loaded", "in_transit", "delivered"] }
best = { type = "integer", policy = "max" }
pick = { type = "text", policy = "manual" }
[tables.batches]
priority = "bulk"
[tables.batches.columns]
id = "text"
tag = "text"
size = "integer"
label = "text"
"#;

/// Shape of a run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Number of devices.
    pub clients: usize,
    /// Workload steps per device.
    pub ops_per_client: usize,
    /// Whether the nemesis injects faults.
    pub faults: bool,
    /// Sync rounds allowed after healing before liveness (I7) fails.
    pub quiesce_rounds: usize,
    /// Shifts every device clock by this much (I9: outcomes must not depend on it).
    pub clock_shift_ms: i64,
    /// Lets poisoned values land on rows the server has not confirmed (an insert, or an update
    /// of a row not yet in the shadow) and later ops touch such rows. Off by default: a refused
    /// edit of a merged column (counter, CRDT) on such a row stays visible (known client bug,
    /// see docs/testing.md), which breaks I3.
    pub poison_unconfirmed_rows: bool,
    /// Scoped mode: the server runs with sync rules and write permissions
    /// ([`crate::scope::SIM_RULES`] over [`struct@crate::scope::SCOPED_SCHEMA`]); devices belong to
    /// users with claims, the workload moves items between teams and attempts forbidden
    /// writes, the nemesis changes claims, and invariant I10 (authorization) is checked. The
    /// last device is a dispatcher; devices 0 and 1 share a user. Use at least 3 clients.
    pub rules: bool,
    /// Scoped mode: also run the patterns that expose known server bugs (docs/testing.md):
    /// items moved into a team that has devices, owners changed to another user, and claims
    /// changed while a device is behind. Off: items move only to `green` (no member is ever
    /// in green), owners are only cleared, and a user's devices sync to the head before and
    /// right after their claims change.
    pub scope_bugs: bool,
}

impl SimConfig {
    /// Scoped mode with 5 devices: two of user `u0` (team red), one of `u1` (red), one of
    /// `u2` (blue) and a dispatcher.
    pub fn scoped() -> SimConfig {
        SimConfig {
            clients: 5,
            ops_per_client: 120,
            rules: true,
            ..SimConfig::default()
        }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            clients: 3,
            ops_per_client: 200,
            faults: true,
            quiesce_rounds: 40,
            clock_shift_ms: 0,
            poison_unconfirmed_rows: false,
            rules: false,
            scope_bugs: false,
        }
    }
}

/// What a run found.
#[derive(Debug, Clone, Default)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Hash of everything that happened, in order; equal for equal seeds.
    pub trace_hash: u64,
    /// Which faults and paths fired.
    pub counters: Counters,
    /// Broken invariants, each prefixed with its id (I1…I9).
    pub violations: Vec<String>,
    /// Local writes that returned OK.
    pub writes: u64,
    /// The server's final live rows (for comparing runs).
    pub final_state: String,
}

/// FNV-1a over the trace of a run.
#[derive(Debug)]
pub(crate) struct Trace(Fnv64);

impl Trace {
    pub(crate) fn feed(&mut self, s: &str) {
        self.0.update(s.as_bytes());
        self.0.update(&[0xff]);
    }
}

pub(crate) struct Device {
    pub index: usize,
    /// The schema text the device opens with.
    pub schema_text: &'static str,
    pub client_id: String,
    pub path: PathBuf,
    pub clock: Arc<DeviceClock>,
    pub client: Option<Client>,
    pub ops_committed: u64,
    pub last_cursor: u64,
    pub last_hlc: u64,
    pub next_id: u64,
    /// What the device's app reports about its network (offline, metered, low battery).
    pub network: NetworkState,
    /// Rows the app leaves alone: they were inserted with a poisoned value (see
    /// [`SimConfig::poison_unconfirmed_rows`]).
    pub untouchable: BTreeSet<String>,
    /// Every op the device committed, by sequence.
    pub ops: BTreeMap<u64, OpNote>,
    /// Rejected ops the app queued again (`retry_rejected`), by their old sequence.
    pub retried: BTreeSet<u64>,
    /// Rejected ops the app dropped (`discard_rejected`).
    pub discarded: BTreeSet<u64>,
    /// The device's token has expired; the app supplies a fresh one at step `refresh_at`.
    pub token_expired: bool,
    /// When the app supplies a fresh token (a workload step).
    pub refresh_at: usize,
}

impl Device {
    /// The app reports a network change.
    fn set_network(&mut self, state: NetworkState) {
        self.network = state;
        if let Some(c) = &self.client {
            c.set_network(state);
        }
    }
}

impl Device {
    fn options(&self) -> ClientOptions {
        ClientOptions {
            clock: Some(self.clock.clone() as Arc<dyn Clock>),
            upload_ops_max: 6,
            upload_bytes_max: 1 << 20,
            page_bytes_max: 1_500,
            client_id: Some(self.client_id.clone()),
            ..ClientOptions::default()
        }
    }

    pub fn open(&mut self, schema: &Schema) -> Result<&Client, String> {
        if self.client.is_none() {
            let c = Client::open_with(&self.path, schema, Some(self.schema_text), self.options())
                .map_err(|e| format!("open {}: {e}", self.client_id))?;
            c.set_network(self.network);
            self.client = Some(c);
        }
        self.client
            .as_ref()
            .ok_or_else(|| "client vanished".to_string())
    }
}

/// The tokens the simulation hands out: an expired one per device, fresh ones on refresh.
struct Tokens {
    secret: Vec<u8>,
    /// Per device, a token whose `exp` lies in the past. The server verifies `exp` against the
    /// system clock (jsonwebtoken), not the simulated one, so an expiry is modelled by the
    /// device now holding a token whose lifetime has run out: the real `authenticate` answers
    /// 401 `token_expired` to it, deterministically.
    expired: Vec<String>,
    issued: u64,
    /// Scoped mode: each device's current claims (its user's).
    claims: Option<Vec<SimClaims>>,
}

impl Tokens {
    fn mint(&self, c: usize, now_secs: u64, ttl_secs: u64) -> Result<String, String> {
        let (user, extra) = match self.claims.as_ref().and_then(|v| v.get(c)) {
            Some(cl) => (cl.sub.clone(), cl.extra()),
            None => (format!("user{c}"), Default::default()),
        };
        burrow_server::auth::mint(&self.secret, &user, extra, now_secs, ttl_secs)
            .map_err(|e| e.to_string())
    }

    /// Device `c`'s current claims (scoped mode).
    fn claims_of(&self, c: usize) -> Option<&SimClaims> {
        self.claims.as_ref().and_then(|v| v.get(c))
    }

    /// A fresh token for device `c` (each one different).
    fn fresh(&mut self, c: usize) -> Result<String, String> {
        self.issued += 1;
        self.mint(c, 4_000_000_000 + self.issued, 1_000_000)
    }
}

/// The app's side of quarantine: which poisoned values the workload writes and how the app
/// reacts to refused ops. Draws from its own RNG so the workload's stream is undisturbed.
struct App {
    rng: SeededRng,
    /// The op class the server refuses; `None` in runs without faults.
    rule: Option<PoisonRule>,
    /// See [`SimConfig::poison_unconfirmed_rows`].
    unconfirmed: bool,
}

impl App {
    /// True once in `one_in` draws (never in runs without faults).
    fn roll(&mut self, one_in: u64) -> bool {
        self.rule.is_some() && self.rng.below(one_in) == 0
    }

    /// `w`, or now and then a value starting with "poison" (refused only in the rule's column),
    /// when `allowed`.
    fn maybe_poison(&mut self, w: String, one_in: u64, allowed: bool) -> String {
        if self.roll(one_in) && allowed {
            format!("poison-{w}")
        } else {
            w
        }
    }

    /// `id`, or now and then an id longer than the server accepts (the real validator refuses
    /// every op on such a row with `invalid_row_id`).
    fn maybe_long_id(&mut self, id: String, one_in: u64) -> String {
        if self.roll(one_in) {
            format!("{id}-{}", "p".repeat(ROW_ID_BYTES_MAX))
        } else {
            id
        }
    }
}

fn word(rng: &mut SeededRng) -> String {
    const SYL: [&str; 8] = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi"];
    (0..3).map(|_| SYL[rng.below(8) as usize]).collect()
}

/// Runs one simulation with `seed`.
pub fn run(seed: u64, cfg: &SimConfig) -> SimReport {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return SimReport {
                seed,
                violations: vec![format!("setup: runtime: {e}")],
                ..Default::default()
            };
        }
    };
    match rt.block_on(run_async(seed, cfg)) {
        Ok(r) => r,
        Err(e) => SimReport {
            seed,
            violations: vec![format!("setup: {e}")],
            ..Default::default()
        },
    }
}

fn temp_root() -> Result<tempfile::TempDir, String> {
    // tmpfs makes fsync free: the simulator checks logic, not the disk.
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    };
    dir.map_err(|e| format!("tempdir: {e}"))
}

async fn run_async(seed: u64, cfg: &SimConfig) -> Result<SimReport, String> {
    let dir = temp_root()?;
    let schema_text = if cfg.rules {
        SCOPED_SCHEMA.as_str()
    } else {
        SIM_SCHEMA
    };
    let schema = Schema::from_toml_str(schema_text).map_err(|e| e.to_string())?;
    let mut seeds = SeededRng::new(seed);
    let mut wrng = SeededRng::new(seeds.next_u64());
    let mut nrng = SeededRng::new(seeds.next_u64());
    let net_seed = seeds.next_u64();
    let mut app = App {
        rng: SeededRng::new(seeds.next_u64()),
        rule: None,
        unconfirmed: cfg.poison_unconfirmed_rows,
    };
    let mut xrng = SeededRng::new(seeds.next_u64());
    if cfg.faults {
        app.rule = PoisonRule::CHOICES
            .get(app.rng.below(PoisonRule::CHOICES.len() as u64) as usize)
            .copied();
    }
    let clock = Arc::new(SimClock::new(1_790_000_000_000 + seed % 1_000_000));
    let secret = b"sim-secret".to_vec();
    let mut config = ServerConfig::new(dir.path().join("server"), schema.clone());
    config.secret = Some(secret.clone());
    if cfg.rules {
        let rules = SyncRules::parse(SIM_RULES, &schema).map_err(|e| e.to_string())?;
        config.rules = Some(Arc::new(rules));
    }
    std::fs::create_dir_all(&config.data_dir).map_err(|e| e.to_string())?;
    let mut minted = Tokens {
        secret: secret.clone(),
        expired: Vec::new(),
        issued: 0,
        claims: cfg.rules.then(|| {
            (0..cfg.clients)
                .map(|c| initial_claims(c, cfg.clients))
                .collect()
        }),
    };
    let tokens = (0..cfg.clients)
        .map(|c| minted.mint(c, 4_000_000_000, 1_000_000))
        .collect::<Result<Vec<_>, _>>()?;
    minted.expired = (0..cfg.clients)
        .map(|c| minted.mint(c, 1_000_000, 3_600))
        .collect::<Result<Vec<_>, _>>()?;
    let net = Arc::new(
        Net::new(
            config.clone(),
            config.data_dir.join("server.db"),
            clock.clone(),
            cfg.clients,
            net_seed,
            tokens,
        )
        .map_err(|e| e.to_string())?,
    );
    net.set_poison_rule(app.rule);
    let mut scope = if cfg.rules {
        let judge = Judge::open(&config.data_dir.join("server.db")).map_err(|e| e.to_string())?;
        net.set_rules(Some(Arc::new(judge)))
            .await
            .map_err(|e| e.to_string())?;
        Some(ScopeState {
            bugs: cfg.scope_bugs,
            rng: SeededRng::new(seeds.next_u64()),
            known: Vec::new(),
            server: None,
            db: config.data_dir.join("server.db"),
        })
    } else {
        None
    };
    let mut devices: Vec<Device> = (0..cfg.clients)
        .map(|c| {
            let skew = if cfg.faults {
                nrng.below(120_000) as i64 - 60_000
            } else {
                0
            };
            let offset = skew + cfg.clock_shift_ms;
            Device {
                index: c,
                schema_text,
                client_id: format!("sim-{seed:x}-{c}"),
                path: dir.path().join(format!("device{c}.db")),
                clock: Arc::new(DeviceClock::new(clock.clone(), offset)),
                client: None,
                ops_committed: 0,
                last_cursor: 0,
                last_hlc: 0,
                next_id: 0,
                network: NetworkState::default(),
                untouchable: BTreeSet::new(),
                ops: BTreeMap::new(),
                retried: BTreeSet::new(),
                discarded: BTreeSet::new(),
                token_expired: false,
                refresh_at: 0,
            }
        })
        .collect();
    let mut report = SimReport {
        seed,
        ..Default::default()
    };
    let mut trace = Trace(Fnv64::new());
    let mut local_counters = Counters::default();
    for d in devices.iter_mut() {
        d.open(&schema)?;
    }
    let steps = cfg.clients * cfg.ops_per_client;
    for step in 0..steps {
        clock.advance(1 + wrng.below(1_500));
        for d in devices.iter_mut() {
            if d.token_expired && step >= d.refresh_at {
                refresh_token(d, &net, &mut minted, &mut local_counters, &mut trace)?;
            }
        }
        if cfg.faults {
            nemesis(
                &mut nrng,
                &mut xrng,
                step,
                &net,
                &mut devices,
                &schema,
                &minted,
                &mut local_counters,
                &mut report,
                &mut trace,
            )
            .await;
        }
        if let Some(sc) = scope.as_mut() {
            scope_change(
                sc,
                &net,
                &mut devices,
                &schema,
                &mut minted,
                &mut local_counters,
                &mut report,
                &mut trace,
            )
            .await?;
        }
        let c = wrng.below(cfg.clients as u64) as usize;
        let action = wrng.below(100);
        let Some(d) = devices.get_mut(c) else {
            continue;
        };
        let scoped = scope.as_mut().map(|st| Scoped {
            st,
            tokens: &minted,
        });
        let outcome = act(
            d,
            action,
            &mut wrng,
            &mut app,
            &net,
            &schema,
            scoped,
            &mut local_counters,
            &mut report,
        )
        .await;
        trace.feed(&format!("{step}:{c}:{action}:{outcome}"));
        if log_enabled() {
            eprintln!("step {step} device {c}: {outcome}");
        }
        if cfg.faults && net.take_lost_last(c) && nrng.below(100) < 30 {
            // The server committed, the client never heard: crash it right now.
            local_counters.crashes_after_server_commit += 1;
            crash_restart(d, &schema, &mut local_counters, &mut report).await;
            trace.feed("crash-after-commit");
        }
    }
    // Heal and quiesce (every device back on an unmetered network, with a valid token).
    net.heal();
    for d in devices.iter_mut() {
        d.set_network(NetworkState::default());
        if d.token_expired {
            refresh_token(d, &net, &mut minted, &mut local_counters, &mut trace)?;
        }
    }
    let server = net.server().ok_or("server down after heal")?;
    let mut quiet = false;
    for round in 0..cfg.quiesce_rounds {
        clock.advance(1_000);
        for d in devices.iter_mut() {
            let t = SimTransport {
                net: net.clone(),
                index: d.index,
            };
            d.open(&schema)?;
            let Some(client) = d.client.take() else {
                continue;
            };
            let r = client.sync(&t).await;
            if log_enabled() {
                eprintln!("quiesce {round} device {}: {r:?}", d.index);
            }
            trace.feed(&format!("q{round}:{}:{}", d.index, r.is_ok()));
            check::failure_is_explained(d.index, &r, &mut report);
            check::cursor_monotone(d, &client, &mut report);
            d.client = Some(client);
        }
        let head = server.store().head_seq().await.map_err(|e| e.to_string())?;
        let mut all = true;
        for d in devices.iter_mut() {
            let st = d.open(&schema)?.status().map_err(|e| e.to_string())?;
            if st.pending_ops > 0 || st.cursor != head {
                all = false;
            }
        }
        if all {
            quiet = true;
            break;
        }
    }
    if !quiet {
        report.violations.push(format!(
            "I7 liveness: outboxes not drained / cursors not at head after {} rounds",
            cfg.quiesce_rounds
        ));
    }
    let server_dump = check::server_dump(&config.data_dir.join("server.db"), &schema)?;
    let conflict_log = check::conflict_log(&server).await?;
    for d in devices.iter_mut() {
        d.open(&schema)?;
        let Some(client) = d.client.take() else {
            continue;
        };
        let dump = check::client_dump(&client, &schema)?;
        let verdicts = match net.judge() {
            Some(judge) => {
                // I10a at the end: the device holds exactly what its grants cover (this
                // replaces I3, which compares with the whole database).
                let claims = minted
                    .claims_of(d.index)
                    .cloned()
                    .ok_or("scoped mode without claims")?;
                let subs = subscribed_items(&client)?;
                let granted = crate::scope::granted(&server_dump, &claims, &subs);
                crate::scope::same_scoped_state(
                    d.index,
                    "at the end",
                    &dump,
                    &granted,
                    &mut report.violations,
                );
                local_counters.scope_checks += 1;
                judge.verdicts(&d.client_id)
            }
            None => {
                check::same_state(d.index, &dump, &server_dump, &mut report);
                BTreeMap::new()
            }
        };
        check::no_partial_batch(&format!("device {}", d.index), &dump, &mut report);
        check::zero_loss_no_dups(d, &client, &server, &verdicts, &mut report).await?;
        check::conflicts_preserved(d.index, &client, &conflict_log, &mut report)?;
        check::conflict_records_agree(d.index, &client, &conflict_log, &mut report)?;
        check::hlc_monotone_in_outbox(d.index, &client, &mut report)?;
        check::rejected_rows_show_server_state(d.index, &client, &schema, &mut report);
        d.client = Some(client);
    }
    check::no_partial_batch("server", &server_dump, &mut report);
    if let Some(judge) = net.judge() {
        report.violations.extend(judge.violations());
    }
    report.final_state = Dump::fingerprint(&server_dump);
    trace.feed(&report.final_state);
    let mut counters = net.counters.lock().map(|c| c.clone()).unwrap_or_default();
    counters.add(&local_counters);
    report.counters = counters;
    report.trace_hash = trace.0.finish();
    Ok(report)
}

/// Drops the client (as if its process died) and opens the file again; checks I8.
pub(crate) async fn crash_restart(
    d: &mut Device,
    schema: &Schema,
    counters: &mut Counters,
    report: &mut SimReport,
) {
    d.client = None;
    counters.client_restarts += 1;
    let (index, committed) = (d.index, d.ops_committed);
    match d.open(schema) {
        Ok(client) => check::crash_integrity(index, client, committed, report),
        Err(e) => report
            .violations
            .push(format!("I8 device {index} does not reopen: {e}")),
    }
}

/// The app supplies a fresh token through the transport (`Transport::set_token`).
fn refresh_token(
    d: &mut Device,
    net: &Arc<Net>,
    tokens: &mut Tokens,
    counters: &mut Counters,
    trace: &mut Trace,
) -> Result<(), String> {
    let fresh = tokens.fresh(d.index)?;
    SimTransport {
        net: net.clone(),
        index: d.index,
    }
    .set_token(&fresh);
    d.token_expired = false;
    counters.token_refreshes += 1;
    trace.feed(&format!("refresh{}", d.index));
    if log_enabled() {
        eprintln!("device {}: fresh token", d.index);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn nemesis(
    rng: &mut SeededRng,
    xrng: &mut SeededRng,
    step: usize,
    net: &Arc<Net>,
    devices: &mut [Device],
    schema: &Schema,
    tokens: &Tokens,
    counters: &mut Counters,
    report: &mut SimReport,
    trace: &mut Trace,
) {
    let roll = rng.below(1000);
    let c = rng.below(devices.len() as u64) as usize;
    let event = match roll {
        0..=39 => {
            let partition = match rng.below(4) {
                0 => Partition::None,
                1 => Partition::Both,
                2 => Partition::ResponsesLost,
                _ => Partition::RequestsLost,
            };
            let faults = LinkFaults {
                partition,
                flaky_pct: [0, 0, 5, 20][rng.below(4) as usize],
                dup_pct: [0, 5, 20][rng.below(3) as usize],
                hold_pct: [0, 5, 15][rng.below(3) as usize],
            };
            net.set_link(c, faults);
            format!("link{c}:{faults:?}")
        }
        40..=49 => {
            net.set_link(c, LinkFaults::default());
            format!("heal{c}")
        }
        50..=57 => {
            counters.server_restarts += 1;
            let restarted = match net.restart_server() {
                Ok(()) => net.install_rules().await,
                Err(e) => Err(e),
            };
            match restarted {
                Ok(()) => "server-restart".to_string(),
                Err(e) => {
                    report
                        .violations
                        .push(format!("server does not restart: {e}"));
                    "server-restart-failed".to_string()
                }
            }
        }
        58..=69 => {
            if let Some(d) = devices.get_mut(c) {
                crash_restart(d, schema, counters, report).await;
            }
            format!("crash{c}")
        }
        70..=77 => {
            let delta = rng.below(7_200_000) as i64 - 3_600_000;
            if let Some(d) = devices.get(c) {
                d.clock.jump(delta);
            }
            counters.clock_jumps += 1;
            format!("jump{c}:{delta}")
        }
        78..=99 => {
            let replayed = net.replay_one().await;
            format!("replay:{replayed}")
        }
        100..=119 => {
            let state = NetworkState {
                network: [Network::Offline, Network::Metered, Network::Unmetered]
                    [rng.below(3) as usize],
                low_battery: rng.below(4) == 0,
            };
            if let Some(d) = devices.get_mut(c) {
                d.set_network(state);
            }
            counters.network_changes += 1;
            format!("network{c}:{:?}:{}", state.network, state.low_battery)
        }
        120..=123 => {
            // The device's token expires; its app gets a fresh one after a seeded stretch.
            let (Some(d), Some(expired)) = (devices.get_mut(c), tokens.expired.get(c)) else {
                return;
            };
            if d.token_expired {
                return;
            }
            net.set_token(c, expired);
            d.token_expired = true;
            d.refresh_at = step + 20 + xrng.below(150) as usize;
            counters.token_expiries += 1;
            format!("expire{c}:until{}", d.refresh_at)
        }
        _ => return,
    };
    if log_enabled() {
        eprintln!("nemesis: {event}");
    }
    trace.feed(&event);
}

/// `SIM_LOG=1` prints every step of a run (use with `SEED=…` to study one failure).
fn log_enabled() -> bool {
    std::env::var_os("SIM_LOG").is_some()
}

#[allow(clippy::too_many_arguments)]
async fn act(
    d: &mut Device,
    action: u64,
    rng: &mut SeededRng,
    app: &mut App,
    net: &Arc<Net>,
    schema: &Schema,
    scoped: Option<Scoped<'_>>,
    counters: &mut Counters,
    report: &mut SimReport,
) -> String {
    if let Err(e) = d.open(schema) {
        report.violations.push(e.clone());
        return e;
    }
    let Some(client) = d.client.take() else {
        return "no-client".into();
    };
    let out = act_with(
        d, &client, action, rng, app, net, schema, scoped, counters, report,
    )
    .await;
    d.client = Some(client);
    out
}

#[allow(clippy::too_many_arguments)]
async fn act_with(
    d: &mut Device,
    client: &Client,
    action: u64,
    rng: &mut SeededRng,
    app: &mut App,
    net: &Arc<Net>,
    schema: &Schema,
    mut scoped: Option<Scoped<'_>>,
    counters: &mut Counters,
    report: &mut SimReport,
) -> String {
    let index = d.index;
    let transport = SimTransport {
        net: net.clone(),
        index,
    };
    let ids: Vec<String> = client
        .query_json("SELECT id FROM items ORDER BY id")
        .map(|rows| {
            rows.iter()
                .filter_map(|r| r["id"].as_str().map(str::to_string))
                .filter(|id| app.unconfirmed || !d.untouchable.contains(id))
                .collect()
        })
        .unwrap_or_default();
    let pick = |rng: &mut SeededRng| {
        ids.get(rng.below(ids.len().max(1) as u64) as usize)
            .cloned()
    };
    let mut expect: Option<(String, String, String)> = None;
    let sql = match action {
        0..=14 => {
            d.next_id += 1;
            let id = app.maybe_long_id(format!("i{index}-{}", d.next_id), 40);
            let title = app.maybe_poison(word(rng), 20, true);
            if title.starts_with("poison") {
                d.untouchable.insert(id.clone());
            }
            match scoped.as_mut() {
                None => format!(
                    "INSERT INTO items(id, title, qty, status, note) VALUES ('{id}', '{title}', {}, 'new', NULL)",
                    rng.below(100)
                ),
                Some(sc) => {
                    let qty = rng.below(100);
                    match sc.forbidden_insert(index, client, counters) {
                        Some((fid, sql)) => {
                            if !app.unconfirmed {
                                d.untouchable.insert(fid);
                            }
                            sql
                        }
                        None => {
                            let (team, owner) = sc.new_item_columns(index);
                            sc.st.known.push(id.clone());
                            format!(
                                "INSERT INTO items(id, title, qty, status, note, team, owner) VALUES ('{id}', '{title}', {qty}, 'new', NULL, {team}, {owner})"
                            )
                        }
                    }
                }
            }
        }
        15..=49 => match pick(rng) {
            Some(id) => {
                let confirmed = app.unconfirmed || check::confirmed_row(client, "items", &id);
                let (col, val) = match rng.below(9) {
                    0 => (
                        "title",
                        format!("'{}'", app.maybe_poison(word(rng), 12, confirmed)),
                    ),
                    1 => ("qty", rng.below(1000).to_string()),
                    2 => (
                        "status",
                        format!(
                            "'{}'",
                            ["open", "done", "late", "lost"][rng.below(4) as usize]
                        ),
                    ),
                    3 => (
                        "note",
                        format!("'{}-{index}'", app.maybe_poison(word(rng), 12, confirmed)),
                    ),
                    // Merged columns: an increment and a CRDT text edit (expected values
                    // depend on other devices, so no read-your-write expectation).
                    4 => (
                        "stock",
                        format!("coalesce(stock, 0) + {}", 1 + rng.below(9)),
                    ),
                    5 => (
                        "notes",
                        format!("coalesce(notes, '') || ' {}{index}'", word(rng)),
                    ),
                    6 => (
                        "phase",
                        format!(
                            "'{}'",
                            ["created", "loaded", "in_transit", "delivered"][rng.below(4) as usize]
                        ),
                    ),
                    7 => ("best", rng.below(1000).to_string()),
                    _ => ("pick", format!("'{}-{index}'", word(rng))),
                };
                let (col, val) = match scoped.as_mut() {
                    Some(sc) => sc
                        .move_item(index, client, &id, counters)
                        .unwrap_or((col, val)),
                    None => (col, val),
                };
                if !matches!(col, "stock" | "notes") && val != "NULL" {
                    expect = Some((
                        id.clone(),
                        col.to_string(),
                        val.trim_matches('\'').to_string(),
                    ));
                }
                format!("UPDATE items SET {col} = {val} WHERE id = '{id}'")
            }
            None => return "no-rows".into(),
        },
        50 => {
            // Resolve the first open manual conflict, choosing a version at random.
            let open = client
                .conflicts()
                .ok()
                .and_then(|l| l.into_iter().find(|c| c.status == ConflictStatus::Open));
            let Some(c) = open else {
                return "no-open-conflict".into();
            };
            let choice = rng.below(c.versions.len().max(1) as u64) as usize;
            let pending = |c: &Client| c.status().map(|s| s.pending_ops).unwrap_or(0);
            let before = pending(client);
            return match client.resolve(&c.id, burrow_client::Resolution::Pick(choice)) {
                Ok(_) => {
                    counters.resolutions += 1;
                    let prev = d.ops_committed;
                    d.ops_committed += pending(client).saturating_sub(before);
                    check::note_ops(d, client, app.rule.as_ref(), prev, report);
                    format!("resolve:{}:{choice}", c.id)
                }
                Err(e) => format!("resolve-err:{e}"),
            };
        }
        51..=53 => match pick(rng) {
            Some(id) => {
                counters.deletes += 1;
                format!("DELETE FROM items WHERE id = '{id}'")
            }
            None => return "no-rows".into(),
        },
        54..=63 => {
            d.next_id += 1;
            let size = 2 + rng.below(12);
            counters.multi_row_txs += 1;
            // Now and then one row of the batch is poisoned: the whole batch must be refused.
            let label_hit = app.roll(12);
            let id_hit = app.roll(25);
            let at = app.rng.below(size);
            let poison_label = label_hit.then_some(at);
            let long_id = id_hit.then_some(at);
            let item = scoped
                .as_mut()
                .map(|sc| sc.batch_item(index, client, &ids, counters));
            (0..size)
                .map(|k| {
                    let mut id = format!("b{index}-{}-{k}", d.next_id);
                    let mut label = word(rng);
                    if long_id == Some(k) {
                        id = format!("{id}-{}", "p".repeat(ROW_ID_BYTES_MAX));
                    }
                    if poison_label == Some(k) {
                        label = format!("poison-{label}");
                    }
                    match &item {
                        None => format!(
                            "INSERT INTO batches(id, tag, size, label) VALUES ('{id}', 'b{index}-{}', {size}, '{label}')",
                            d.next_id,
                        ),
                        Some(item) => format!(
                            "INSERT INTO batches(id, tag, size, label, item) VALUES ('{id}', 'b{index}-{}', {size}, '{label}', {item})",
                            d.next_id,
                        ),
                    }
                })
                .collect::<Vec<_>>()
                .join(";")
        }
        _ => {
            let before = if d.token_expired {
                match check::queue_snapshot(client) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        report.violations.push(format!("device {index}: {e}"));
                        None
                    }
                }
            } else {
                None
            };
            let subscribed = match scoped.as_mut() {
                Some(sc) => sc.manage_subscriptions(client, &ids, counters, report),
                None => String::new(),
            };
            let r = client.sync(&transport).await;
            if let (Some(sc), Ok(rep)) = (scoped.as_mut(), &r)
                && rep.complete
            {
                sc.check_device(d, client, schema, net, counters, report)
                    .await;
            }
            check::cursor_monotone(d, client, report);
            check::expiry_keeps_queue(index, client, before, &r, report);
            check::failure_is_explained(index, &r, report);
            check::rejected_rows_show_server_state(index, client, schema, report);
            let reaction = react_to_rejections(d, client, app, counters, report);
            return match r {
                Ok(r) => {
                    counters.conflicts += r.conflicts;
                    counters.resumes += r.resumed;
                    format!(
                        "sync-ok:{}:{}:{}:{}{reaction}{subscribed}",
                        r.ops_acked, r.changes_received, r.cursor, r.ops_rejected
                    )
                }
                Err(e) => format!("sync-err:{}{reaction}{subscribed}", e.is_retryable()),
            };
        }
    };
    if log_enabled() {
        eprintln!("  device {index} executes: {sql}");
    }
    // Some transactions jump the queue (a delivery confirmation behind photos).
    let written = if rng.below(10) == 0 {
        client
            .write_with_priority(burrow_core::Priority::Critical, |tx| tx.execute_batch(&sql))
            .map(|(_, r)| r)
    } else {
        client.execute(&sql)
    };
    match written {
        Ok(r) => {
            let prev = d.ops_committed;
            d.ops_committed += r.ops_captured;
            check::note_ops(d, client, app.rule.as_ref(), prev, report);
            report.writes += 1;
            check::read_your_write(index, client, expect.as_ref(), report);
            if r.ops_captured > 0 {
                check::hlc_advanced(d, client, report);
            }
            format!("write:{}", r.ops_captured)
        }
        Err(e) => {
            report
                .violations
                .push(format!("device {index}: local write failed: {e} ({sql})"));
            "write-err".into()
        }
    }
}

/// The app looks at its refused ops now and then: it fixes a poisoned value and sends the op
/// again (its refused siblings go along), drops an op, or sends one again unchanged (a
/// permanent refusal must come back refused). Returns a note for the trace.
fn react_to_rejections(
    d: &mut Device,
    client: &Client,
    app: &mut App,
    counters: &mut Counters,
    report: &mut SimReport,
) -> String {
    let index = d.index;
    let Ok(list) = client.rejected_ops() else {
        return String::new();
    };
    if list.is_empty() || app.rng.below(100) >= 35 {
        return String::new();
    }
    let Some(op) = list.get(app.rng.below(list.len() as u64) as usize) else {
        return String::new();
    };
    let seq = op.client_seq;
    let roll = app.rng.below(3);
    let fix = match (op.code.as_str(), app.rule, &op.data) {
        (POISONED_VALUE, Some(rule), Some(serde_json::Value::Object(data))) => {
            let mut data = data.clone();
            let fixed = format!("fixed-{index}-{seq}");
            data.insert(
                rule.column.to_string(),
                serde_json::Value::String(fixed.clone()),
            );
            Some((data, rule.column, fixed))
        }
        _ => None,
    };
    // An update or delete of a row that is gone here is not sent again: an update after the
    // row's delete re-creates it on the server with only its own fields, and a device that
    // missed the delete keeps the old life's fields (known bug, seeds in docs/testing.md).
    let row_here = op.kind == "insert"
        || client
            .query_json(&format!(
                "SELECT 1 AS v FROM \"{}\" WHERE id = '{}'",
                op.table,
                op.row_id.replace('\'', "''")
            ))
            .is_ok_and(|r| !r.is_empty());
    let retry = (fix.is_some() || roll == 0) && (row_here || app.unconfirmed);
    if !retry {
        // The app drops the whole refused transaction (dropping part of it and sending the
        // rest would break the transaction's atomicity, I4).
        let group = client.with_connection(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq FROM _burrow_rejected
                 WHERE tx = (SELECT tx FROM _burrow_rejected WHERE seq = ?1) ORDER BY seq",
            )?;
            let v = stmt
                .query_map([seq as i64], |r| r.get::<_, i64>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(v)
        });
        let group = match group {
            Ok(g) => g,
            Err(e) => {
                report
                    .violations
                    .push(format!("device {index}: rejected list unreadable: {e}"));
                return ":discard-err".into();
            }
        };
        for s in &group {
            let s = *s as u64;
            match client.discard_rejected(s) {
                Ok(()) => {
                    d.discarded.insert(s);
                    counters.rejected_discarded += 1;
                }
                Err(e) => report.violations.push(format!(
                    "Q3 device {index}: discard_rejected({s}) failed: {e}"
                )),
            }
        }
        return format!(":discard{seq}x{}", group.len());
    }
    let before: BTreeSet<u64> = list.iter().map(|r| r.client_seq).collect();
    let (data, check_col) = match fix {
        Some((data, col, fixed)) => (Some(data), Some((col, fixed))),
        None => (None, None),
    };
    match client.retry_rejected(seq, data) {
        Ok(new_seq) => {
            let after: BTreeSet<u64> = client
                .rejected_ops()
                .map(|l| l.into_iter().map(|r| r.client_seq).collect())
                .unwrap_or_default();
            let gone: Vec<u64> = before.difference(&after).copied().collect();
            let prev = d.ops_committed;
            d.ops_committed += gone.len() as u64;
            d.retried.extend(gone.iter().copied());
            check::note_ops(d, client, app.rule.as_ref(), prev, report);
            if new_seq <= prev || new_seq > d.ops_committed {
                report.violations.push(format!(
                    "Q3 device {index}: retry of op {seq} queued op {new_seq}, expected {}..={}",
                    prev + 1,
                    d.ops_committed
                ));
            }
            if let Some((col, fixed)) = check_col {
                // The retried value shows at once.
                let shown = client
                    .query_json(&format!(
                        "SELECT \"{col}\" AS v FROM \"{}\" WHERE id = '{}'",
                        op.table,
                        op.row_id.replace('\'', "''")
                    ))
                    .ok()
                    .and_then(|r| r.into_iter().next())
                    .and_then(|r| r.get("v").and_then(|v| v.as_str().map(str::to_string)));
                if op.kind != "delete" && shown.as_deref() != Some(fixed.as_str()) {
                    report.violations.push(format!(
                        "Q3 device {index}: retried op {seq} sets {col}={fixed}, the row shows {shown:?}"
                    ));
                }
                counters.rejected_retried += 1;
            }
            format!(":retry{seq}->{new_seq}")
        }
        Err(e) => {
            report.violations.push(format!(
                "Q3 device {index}: retry_rejected({seq}) failed: {e}"
            ));
            ":retry-err".into()
        }
    }
}

/// The first claims of device `c` in scoped mode: the last device is a dispatcher; devices 0
/// and 1 belong to user `u0`, device `c >= 2` to user `u{c-1}`; users 0, 1 are in team red,
/// user 2 in blue, and so on.
fn initial_claims(c: usize, clients: usize) -> SimClaims {
    if c + 1 == clients {
        return SimClaims {
            sub: "dispatcher".into(),
            dispatcher: true,
            team: None,
        };
    }
    let user = c.saturating_sub(1);
    SimClaims {
        sub: format!("u{user}"),
        dispatcher: false,
        team: Some(if user % 3 == 2 { "blue" } else { "red" }.into()),
    }
}

/// The items a device subscribed to through the parameterised stream [`ITEM_BATCHES`].
fn subscribed_items(client: &Client) -> Result<BTreeSet<String>, String> {
    Ok(client
        .subscriptions()
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|s| s.stream == ITEM_BATCHES)
        .filter_map(|s| {
            s.params
                .get("item")
                .and_then(|v| v.as_str())
                .map(str::to_string)
        })
        .collect())
}

/// Scoped mode's own state: its RNG (the default mode's streams stay as they were), the item
/// ids any device created (for writes to rows a device cannot see), and the server's state
/// as last read.
struct ScopeState {
    /// See [`SimConfig::scope_bugs`].
    bugs: bool,
    rng: SeededRng,
    known: Vec<String>,
    /// The server's live rows at a head sequence.
    server: Option<(u64, Dump)>,
    db: PathBuf,
}

/// Scoped mode's state plus the claims, for one workload step.
struct Scoped<'a> {
    st: &'a mut ScopeState,
    tokens: &'a Tokens,
}

fn sql_text(v: Option<&str>) -> String {
    match v {
        Some(t) => format!("'{t}'"),
        None => "NULL".into(),
    }
}

impl Scoped<'_> {
    fn claims(&self, index: usize) -> Option<&SimClaims> {
        self.tokens.claims_of(index)
    }

    fn members(&self) -> Vec<String> {
        let mut m: Vec<String> = self
            .tokens
            .claims
            .iter()
            .flatten()
            .filter(|c| !c.dispatcher)
            .map(|c| c.sub.clone())
            .collect();
        m.dedup();
        m
    }

    fn other_team(&mut self, mine: Option<&str>) -> &'static str {
        let choices: Vec<&'static str> =
            TEAMS.iter().copied().filter(|t| Some(*t) != mine).collect();
        choices
            .get(self.st.rng.below(choices.len().max(1) as u64) as usize)
            .copied()
            .unwrap_or("red")
    }

    /// A known item id the device does not hold, if any.
    fn foreign_id(&mut self, client: &Client) -> Option<String> {
        let held: BTreeSet<String> = client
            .query_json("SELECT id FROM items")
            .ok()?
            .into_iter()
            .filter_map(|r| r.get("id").and_then(|v| v.as_str()).map(str::to_string))
            .collect();
        let candidates: Vec<&String> = self
            .st
            .known
            .iter()
            .filter(|id| !held.contains(*id) && id.len() <= ROW_ID_BYTES_MAX)
            .collect();
        candidates
            .get(self.st.rng.below(candidates.len().max(1) as u64) as usize)
            .map(|s| s.to_string())
    }

    /// Now and then a member writes a row of another team it knows the id of (an insert of
    /// an existing row: the server judges it as an update of the stored row).
    fn forbidden_insert(
        &mut self,
        index: usize,
        client: &Client,
        counters: &mut Counters,
    ) -> Option<(String, String)> {
        let mine = self.claims(index)?.clone();
        if mine.dispatcher || self.st.rng.below(6) != 0 {
            return None;
        }
        let id = self.foreign_id(client)?;
        let team = self.other_team(mine.team.as_deref());
        counters.forbidden_attempts += 1;
        Some((
            id.clone(),
            format!(
                "INSERT INTO items(id, title, qty, status, note, team, owner) VALUES ('{id}', 'intruder-{index}', 1, 'new', NULL, '{team}', NULL)"
            ),
        ))
    }

    /// `team` and `owner` of a new item (SQL literals): a member's own team, owned by them
    /// two times in three; a dispatcher's items go to any team and owner.
    fn new_item_columns(&mut self, index: usize) -> (String, String) {
        let Some(mine) = self.claims(index).cloned() else {
            return ("NULL".into(), "NULL".into());
        };
        if mine.dispatcher {
            let team = TEAMS[self.st.rng.below(2) as usize];
            let members = self.members();
            let owner = members
                .get(self.st.rng.below(members.len() as u64 + 1) as usize)
                .cloned();
            return (format!("'{team}'"), sql_text(owner.as_deref()));
        }
        let owner = (self.st.rng.below(3) != 0).then_some(mine.sub.as_str());
        (sql_text(mine.team.as_deref()), sql_text(owner))
    }

    /// Now and then an update moves the item to another team (a dispatcher or the owner may;
    /// anyone else is refused) or, for a dispatcher, gives it another owner.
    fn move_item(
        &mut self,
        index: usize,
        client: &Client,
        id: &str,
        counters: &mut Counters,
    ) -> Option<(&'static str, String)> {
        if self.st.rng.below(7) != 0 {
            return None;
        }
        let mine = self.claims(index)?.clone();
        let owner = client
            .query_json(&format!("SELECT owner FROM items WHERE id = '{id}'"))
            .ok()
            .and_then(|r| r.into_iter().next())
            .and_then(|r| r.get("owner").and_then(|v| v.as_str()).map(str::to_string));
        if mine.dispatcher && self.st.rng.below(3) == 0 {
            let members = self.members();
            let owner = members
                .get(self.st.rng.below(members.len() as u64 + 1) as usize)
                .filter(|_| self.st.bugs)
                .cloned();
            return Some(("owner", sql_text(owner.as_deref())));
        }
        let team = if self.st.bugs {
            self.other_team(mine.team.as_deref())
        } else {
            "green"
        };
        if mine.dispatcher || owner.as_deref() == Some(mine.sub.as_str()) {
            counters.team_moves += 1;
        } else {
            counters.forbidden_attempts += 1;
        }
        Some(("team", format!("'{team}'")))
    }

    /// The `item` of a new batch (SQL literal): mostly an item the device holds; now and then
    /// (members) an item of another team, which the permissions refuse.
    fn batch_item(
        &mut self,
        index: usize,
        client: &Client,
        held: &[String],
        counters: &mut Counters,
    ) -> String {
        let dispatcher = self.claims(index).is_some_and(|c| c.dispatcher);
        if !dispatcher
            && self.st.rng.below(6) == 0
            && let Some(id) = self.foreign_id(client)
        {
            counters.forbidden_attempts += 1;
            return format!("'{id}'");
        }
        let pool: Vec<&String> = if dispatcher {
            self.st.known.iter().collect()
        } else {
            held.iter().collect()
        };
        let pool: Vec<&String> = pool
            .into_iter()
            .filter(|i| i.len() <= ROW_ID_BYTES_MAX)
            .collect();
        sql_text(
            pool.get(self.st.rng.below(pool.len().max(1) as u64) as usize)
                .map(|s| s.as_str()),
        )
    }

    /// Now and then the app subscribes to the batches of an item it holds (refused unless it
    /// owns the item) or drops a subscription. Returns a note for the trace.
    fn manage_subscriptions(
        &mut self,
        client: &Client,
        held: &[String],
        counters: &mut Counters,
        report: &mut SimReport,
    ) -> String {
        if self.st.rng.below(8) != 0 {
            return String::new();
        }
        let current: Vec<String> = subscribed_items(client)
            .map(|s| s.into_iter().collect())
            .unwrap_or_default();
        let params = |item: &str| {
            let mut m = serde_json::Map::new();
            m.insert("item".into(), serde_json::Value::String(item.to_string()));
            m
        };
        if !current.is_empty() && self.st.rng.below(3) == 0 {
            let Some(item) = current.get(self.st.rng.below(current.len() as u64) as usize) else {
                return String::new();
            };
            return match client.unsubscribe(ITEM_BATCHES, params(item)) {
                Ok(_) => format!(":unsub:{item}"),
                Err(e) => {
                    report.violations.push(format!("unsubscribe failed: {e}"));
                    String::new()
                }
            };
        }
        let Some(item) = held.get(self.st.rng.below(held.len().max(1) as u64) as usize) else {
            return String::new();
        };
        match client.subscribe(ITEM_BATCHES, params(item)) {
            Ok(()) => {
                counters.subscriptions += 1;
                format!(":sub:{item}")
            }
            Err(e) => {
                report.violations.push(format!("subscribe failed: {e}"));
                String::new()
            }
        }
    }

    /// I10a after a complete sync that left the outbox empty: the device holds exactly the
    /// rows its user's grants cover on the server, with the server's values.
    async fn check_device(
        &mut self,
        d: &Device,
        client: &Client,
        schema: &Schema,
        net: &Arc<Net>,
        counters: &mut Counters,
        report: &mut SimReport,
    ) {
        let Some(claims) = self.claims(d.index).cloned() else {
            return;
        };
        if client.status().map(|s| s.pending_ops).unwrap_or(1) > 0 {
            return;
        }
        let Some(server) = net.server() else { return };
        let head = match server.store().head_seq().await {
            Ok(h) => h,
            Err(e) => {
                report.violations.push(format!("head_seq: {e}"));
                return;
            }
        };
        if self.st.server.as_ref().is_none_or(|(h, _)| *h != head) {
            match check::server_dump(&self.st.db, schema) {
                Ok(dump) => self.st.server = Some((head, dump)),
                Err(e) => {
                    report.violations.push(format!("server dump: {e}"));
                    return;
                }
            }
        }
        let Some((_, server_dump)) = self.st.server.as_ref() else {
            return;
        };
        let (dump, subs) = match (check::client_dump(client, schema), subscribed_items(client)) {
            (Ok(d), Ok(s)) => (d, s),
            (Err(e), _) | (_, Err(e)) => {
                report.violations.push(format!("device {}: {e}", d.index));
                return;
            }
        };
        let granted = crate::scope::granted(server_dump, &claims, &subs);
        crate::scope::same_scoped_state(
            d.index,
            "after a complete sync",
            &dump,
            &granted,
            &mut report.violations,
        );
        counters.scope_checks += 1;
    }
}

/// Now and then a member user's claims change (another team): each of their devices gets a
/// token with the new claims (a device whose token expired gets it at its refresh). Unless
/// [`SimConfig::scope_bugs`], the user's devices sync to the head under the old claims first
/// and again right after (on a healed link; the change waits while a device is offline or its
/// token expired).
#[allow(clippy::too_many_arguments)]
async fn scope_change(
    sc: &mut ScopeState,
    net: &Arc<Net>,
    devices: &mut [Device],
    schema: &Schema,
    tokens: &mut Tokens,
    counters: &mut Counters,
    report: &mut SimReport,
    trace: &mut Trace,
) -> Result<(), String> {
    if sc.rng.below(1000) >= 6 {
        return Ok(());
    }
    let Some(claims) = tokens.claims.as_mut() else {
        return Ok(());
    };
    let members: Vec<String> = {
        let mut m: Vec<String> = claims
            .iter()
            .filter(|c| !c.dispatcher)
            .map(|c| c.sub.clone())
            .collect();
        m.dedup();
        m
    };
    let Some(user) = members.get(sc.rng.below(members.len().max(1) as u64) as usize) else {
        return Ok(());
    };
    let user = user.clone();
    let user = &user;
    let current = claims
        .iter()
        .find(|c| &c.sub == user)
        .and_then(|c| c.team.clone());
    let teams: &[&str] = if sc.bugs { &TEAMS } else { &TEAMS[..2] };
    let choices: Vec<&str> = teams
        .iter()
        .copied()
        .filter(|t| Some(*t) != current.as_deref())
        .collect();
    let mine: Vec<usize> = (0..claims.len())
        .filter(|c| claims.get(*c).is_some_and(|cl| &cl.sub == user))
        .collect();
    if !sc.bugs {
        let ready = mine.iter().all(|c| {
            devices
                .get(*c)
                .is_some_and(|d| !d.token_expired && d.network == NetworkState::default())
        });
        if !ready {
            return Ok(());
        }
        for c in &mine {
            net.set_link(*c, LinkFaults::default());
            if let Some(d) = devices.get_mut(*c) {
                sync_to_head(d, net, schema, counters, report, trace).await?;
            }
        }
    }
    let Some(claims) = tokens.claims.as_mut() else {
        return Ok(());
    };
    let team = choices
        .get(sc.rng.below(choices.len().max(1) as u64) as usize)
        .copied()
        .unwrap_or("red");
    for c in claims.iter_mut().filter(|c| &c.sub == user) {
        c.team = Some(team.to_string());
    }
    for d in devices.iter_mut() {
        if tokens.claims_of(d.index).is_some_and(|c| &c.sub == user) && !d.token_expired {
            let fresh = tokens.fresh(d.index)?;
            net.set_token(d.index, &fresh);
        }
    }
    if !sc.bugs {
        for c in &mine {
            if let Some(d) = devices.get_mut(*c) {
                sync_to_head(d, net, schema, counters, report, trace).await?;
                let Some(client) = d.client.take() else {
                    continue;
                };
                Scoped { st: sc, tokens }
                    .check_device(d, &client, schema, net, counters, report)
                    .await;
                d.client = Some(client);
            }
        }
    }
    counters.scope_changes += 1;
    let event = format!("scope:{user}->{team}");
    if log_enabled() {
        eprintln!("nemesis: {event}");
    }
    trace.feed(&event);
    Ok(())
}

/// Syncs device `d` until a sync completes (at most 3 tries); checks I6.
async fn sync_to_head(
    d: &mut Device,
    net: &Arc<Net>,
    schema: &Schema,
    counters: &mut Counters,
    report: &mut SimReport,
    trace: &mut Trace,
) -> Result<(), String> {
    d.open(schema)?;
    let Some(client) = d.client.take() else {
        return Ok(());
    };
    let t = SimTransport {
        net: net.clone(),
        index: d.index,
    };
    for _ in 0..3 {
        let r = client.sync(&t).await;
        check::cursor_monotone(d, &client, report);
        check::expiry_keeps_queue(d.index, &client, None, &r, report);
        check::failure_is_explained(d.index, &r, report);
        trace.feed(&format!("scope-sync{}:{}", d.index, r.is_ok()));
        if let Ok(r) = &r {
            counters.conflicts += r.conflicts;
            if r.complete {
                break;
            }
        }
    }
    d.client = Some(client);
    Ok(())
}
