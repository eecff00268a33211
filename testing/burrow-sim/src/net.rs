//! The simulated network and server host: every exchange goes through [`SimTransport`], which
//! consults the nemesis' current faults for the client and rolls per-message faults from the
//! seeded network RNG.

use crate::scope::{Judge, SimClaims};
use burrow_client::{TrafficStats, Transport, TransportError};
use burrow_core::env::{Clock, SeededRng};
use burrow_proto::{decode_frame, encode_frame, v1};
use burrow_server::http::{AppState, authenticate, process_sync};
use burrow_server::store::ServerStore;
use burrow_server::{ServerConfig, SqliteServerStore};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Virtual time shared by the whole simulation, in Unix milliseconds.
#[derive(Debug)]
pub struct SimClock {
    now: AtomicU64,
}

impl SimClock {
    /// A clock starting at `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        SimClock {
            now: AtomicU64::new(start_ms),
        }
    }

    /// Moves virtual time forward.
    pub fn advance(&self, ms: u64) {
        self.now.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
}

/// A device's clock: virtual time plus the device's own (possibly jumping) offset.
#[derive(Debug)]
pub struct DeviceClock {
    base: Arc<SimClock>,
    offset_ms: AtomicI64,
}

impl DeviceClock {
    /// A device clock `offset_ms` away from true time.
    pub fn new(base: Arc<SimClock>, offset_ms: i64) -> Self {
        DeviceClock {
            base,
            offset_ms: AtomicI64::new(offset_ms),
        }
    }

    /// Jumps the device clock by `delta_ms` (forward or backward).
    pub fn jump(&self, delta_ms: i64) {
        self.offset_ms.fetch_add(delta_ms, Ordering::SeqCst);
    }
}

impl Clock for DeviceClock {
    fn now_ms(&self) -> u64 {
        let now = self.base.now_ms() as i64 + self.offset_ms.load(Ordering::SeqCst);
        now.max(0) as u64
    }
}

/// How a client's link is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Partition {
    /// Connected.
    #[default]
    None,
    /// Nothing gets through either way.
    Both,
    /// Requests get through, responses are lost (the server acts, the client never hears).
    ResponsesLost,
    /// Requests are lost.
    RequestsLost,
}

/// A client's current link faults, set by the nemesis.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinkFaults {
    /// Partition state.
    pub partition: Partition,
    /// Per-message probability (percent) that a request or response is lost.
    pub flaky_pct: u64,
    /// Per-message probability (percent) that a request is delivered twice.
    pub dup_pct: u64,
    /// Per-message probability (percent) that a copy of the request is held and replayed later.
    pub hold_pct: u64,
}

/// "Sometimes" counters: each proves a fault or path was exercised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Exchanges refused by a two-way partition.
    pub partition_drops: u64,
    /// Requests lost by a one-way partition.
    pub requests_lost: u64,
    /// Responses lost after the server acted (one-way partition or flaky link).
    pub responses_lost: u64,
    /// Messages lost by a flaky link.
    pub flaky_drops: u64,
    /// Requests delivered twice.
    pub duplicates: u64,
    /// Delayed copies delivered later (stale replays).
    pub replays: u64,
    /// Server crash-restarts.
    pub server_restarts: u64,
    /// Client crash-restarts.
    pub client_restarts: u64,
    /// Client crash-restarts right after a lost response (server committed, client never acked).
    pub crashes_after_server_commit: u64,
    /// Device clock jumps.
    pub clock_jumps: u64,
    /// Ops that lost fields to a concurrent write.
    pub conflicts: u64,
    /// Exchanges that completed.
    pub exchanges_ok: u64,
    /// Parts of large transactions staged by the server.
    pub staged_parts: u64,
    /// Multi-row transactions written.
    pub multi_row_txs: u64,
    /// Deletes written.
    pub deletes: u64,
    /// Manual conflicts resolved by a device.
    pub resolutions: u64,
    /// Network changes the apps reported (offline, metered, low battery).
    pub network_changes: u64,
    /// Ops the seeded poison rule refused at the server boundary (`poisoned_value`).
    pub poison_refused: u64,
    /// Ops the real server refused for a row id above its limit (`invalid_row_id`).
    pub invalid_row_ids: u64,
    /// Ops refused because another op of their local transaction was (`transaction_rejected`).
    pub rejected_siblings: u64,
    /// Refused ops the app sent again, edited to a valid value (`Client::retry_rejected`).
    pub rejected_retried: u64,
    /// Refused ops the app dropped (`Client::discard_rejected`).
    pub rejected_discarded: u64,
    /// Device tokens that expired.
    pub token_expiries: u64,
    /// Syncs the server refused with 401 `token_expired`.
    pub auth_refusals: u64,
    /// Fresh tokens the apps supplied after an expiry (`Transport::set_token`).
    pub token_refreshes: u64,
    /// Scoped mode: a user's claims changed (a new team), and their devices got new tokens.
    pub scope_changes: u64,
    /// Scoped mode: `evicted` changes the devices received.
    pub evictions: u64,
    /// Scoped mode: local transactions the server refused as forbidden (`permission_denied`),
    /// confirmed by the I10 oracle.
    pub forbidden_refused: u64,
    /// Scoped mode: writes the apps made that the permissions should refuse (other teams'
    /// rows, moving an item out of the team, batches of another team's item).
    pub forbidden_attempts: u64,
    /// Scoped mode: items moved to another team (by a dispatcher or an owner).
    pub team_moves: u64,
    /// Scoped mode: subscriptions to a parameterised stream the apps made.
    pub subscriptions: u64,
    /// Scoped mode: complete syncs after which I10a compared the device with its grants.
    pub scope_checks: u64,
    /// Exchanges a sync sent again at once after the connection broke mid-request.
    pub resumes: u64,
}

impl Counters {
    /// Adds `other` into `self`.
    pub fn add(&mut self, o: &Counters) {
        self.partition_drops += o.partition_drops;
        self.requests_lost += o.requests_lost;
        self.responses_lost += o.responses_lost;
        self.flaky_drops += o.flaky_drops;
        self.duplicates += o.duplicates;
        self.replays += o.replays;
        self.server_restarts += o.server_restarts;
        self.client_restarts += o.client_restarts;
        self.crashes_after_server_commit += o.crashes_after_server_commit;
        self.clock_jumps += o.clock_jumps;
        self.conflicts += o.conflicts;
        self.exchanges_ok += o.exchanges_ok;
        self.staged_parts += o.staged_parts;
        self.multi_row_txs += o.multi_row_txs;
        self.deletes += o.deletes;
        self.resolutions += o.resolutions;
        self.network_changes += o.network_changes;
        self.poison_refused += o.poison_refused;
        self.invalid_row_ids += o.invalid_row_ids;
        self.rejected_siblings += o.rejected_siblings;
        self.rejected_retried += o.rejected_retried;
        self.rejected_discarded += o.rejected_discarded;
        self.token_expiries += o.token_expiries;
        self.auth_refusals += o.auth_refusals;
        self.token_refreshes += o.token_refreshes;
        self.scope_changes += o.scope_changes;
        self.evictions += o.evictions;
        self.forbidden_refused += o.forbidden_refused;
        self.forbidden_attempts += o.forbidden_attempts;
        self.team_moves += o.team_moves;
        self.subscriptions += o.subscriptions;
        self.scope_checks += o.scope_checks;
        self.resumes += o.resumes;
    }

    /// Names of the scoped-mode counters (and of every default one) that stayed at zero.
    pub fn never_fired_scoped(&self) -> Vec<&'static str> {
        let scoped = [
            ("scope_changes", self.scope_changes),
            ("evictions", self.evictions),
            ("forbidden_refused", self.forbidden_refused),
            ("forbidden_attempts", self.forbidden_attempts),
            ("team_moves", self.team_moves),
            ("subscriptions", self.subscriptions),
            ("scope_checks", self.scope_checks),
        ];
        let mut never = self.never_fired();
        never.extend(
            scoped
                .iter()
                .filter(|(_, n)| *n == 0)
                .map(|(name, _)| *name),
        );
        never
    }

    /// Names of the counters of the default mode that stayed at zero.
    pub fn never_fired(&self) -> Vec<&'static str> {
        let all = [
            ("partition_drops", self.partition_drops),
            ("requests_lost", self.requests_lost),
            ("responses_lost", self.responses_lost),
            ("flaky_drops", self.flaky_drops),
            ("duplicates", self.duplicates),
            ("replays", self.replays),
            ("server_restarts", self.server_restarts),
            ("client_restarts", self.client_restarts),
            (
                "crashes_after_server_commit",
                self.crashes_after_server_commit,
            ),
            ("clock_jumps", self.clock_jumps),
            ("conflicts", self.conflicts),
            ("exchanges_ok", self.exchanges_ok),
            ("staged_parts", self.staged_parts),
            ("multi_row_txs", self.multi_row_txs),
            ("deletes", self.deletes),
            ("resolutions", self.resolutions),
            ("network_changes", self.network_changes),
            ("poison_refused", self.poison_refused),
            ("invalid_row_ids", self.invalid_row_ids),
            ("rejected_siblings", self.rejected_siblings),
            ("resumes", self.resumes),
            ("rejected_retried", self.rejected_retried),
            ("rejected_discarded", self.rejected_discarded),
            ("token_expiries", self.token_expiries),
            ("auth_refusals", self.auth_refusals),
            ("token_refreshes", self.token_refreshes),
        ];
        all.iter()
            .filter(|(_, n)| *n == 0)
            .map(|(name, _)| *name)
            .collect()
    }
}

/// Stable code of an op the poison rule refused.
pub const POISONED_VALUE: &str = "poisoned_value";

/// The op class the simulated server refuses for good, chosen by the seed: every op on
/// `table` that writes a `column` value starting with `prefix` (a rule of the server's
/// deployment the devices' schema does not know). The server boundary answers such an op as
/// the real server answers an op its validator refuses: a `rejected` outcome with a code and a
/// reason, and `transaction_rejected` for the other ops of its local transaction, none of
/// them applied or recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoisonRule {
    /// The table.
    pub table: &'static str,
    /// The column.
    pub column: &'static str,
    /// Refused values start with this.
    pub prefix: &'static str,
}

impl PoisonRule {
    /// The rules a seed picks from (the workload writes poison-prefixed values to all three
    /// columns; only the chosen one is refused).
    pub const CHOICES: [PoisonRule; 3] = [
        PoisonRule {
            table: "items",
            column: "title",
            prefix: "poison",
        },
        PoisonRule {
            table: "items",
            column: "note",
            prefix: "poison",
        },
        PoisonRule {
            table: "batches",
            column: "label",
            prefix: "poison",
        },
    ];

    /// Whether the rule refuses writing `value` to `table.column`.
    pub fn refuses(&self, table: &str, column: &str, value: &str) -> bool {
        table == self.table && column == self.column && value.starts_with(self.prefix)
    }

    /// The reason given with a refusal.
    pub fn reason(&self) -> String {
        format!(
            "column \"{}.{}\": values starting with \"{}\" are refused (simulated poison rule)",
            self.table, self.column, self.prefix
        )
    }

    /// Whether wire op `op` is refused.
    fn refuses_op(&self, op: &v1::Op) -> bool {
        op.fields.iter().any(|f| {
            matches!(
                f.value.as_ref().and_then(|v| v.kind.as_ref()),
                Some(v1::value::Kind::Text(t)) if self.refuses(&op.table, &f.column, t)
            )
        })
    }
}

/// Everything the simulated network shares between clients: the server host, the faults and
/// the network's own RNG.
#[derive(Debug)]
pub struct Net {
    server: Mutex<Option<Arc<AppState<SqliteServerStore>>>>,
    server_config: ServerConfig,
    server_db: PathBuf,
    clock: Arc<SimClock>,
    links: Mutex<Vec<LinkFaults>>,
    rng: Mutex<SeededRng>,
    /// Delayed copies: client, body, and the token the request carried.
    held: Mutex<Vec<Held>>,
    /// Counters of what happened.
    pub counters: Mutex<Counters>,
    /// The last response of each client was lost (set per exchange, read by the nemesis).
    lost_last: Mutex<Vec<bool>>,
    /// Each client's current bearer token (replaced by `Transport::set_token`).
    tokens: Mutex<Vec<String>>,
    /// The op class the server refuses for good, if any.
    poison: Mutex<Option<PoisonRule>>,
    /// Scoped mode: the I10 oracle judging every upload the server sees.
    judge: Mutex<Option<Arc<Judge>>>,
}

/// A delayed request: client, body, and the token it carried.
type Held = (usize, Vec<u8>, Option<String>);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why the simulated server could not be (re)started.
#[derive(Debug, thiserror::Error)]
#[error("simulated server: {0}")]
pub struct HostError(String);

impl Net {
    /// A network with a server over `server_config` (its store in `server_db`).
    pub fn new(
        server_config: ServerConfig,
        server_db: PathBuf,
        clock: Arc<SimClock>,
        clients: usize,
        net_seed: u64,
        tokens: Vec<String>,
    ) -> Result<Net, HostError> {
        let net = Net {
            server: Mutex::new(None),
            server_config,
            server_db,
            clock,
            links: Mutex::new(vec![LinkFaults::default(); clients]),
            rng: Mutex::new(SeededRng::new(net_seed)),
            held: Mutex::new(Vec::new()),
            counters: Mutex::new(Counters::default()),
            lost_last: Mutex::new(vec![false; clients]),
            tokens: Mutex::new(tokens),
            poison: Mutex::new(None),
            judge: Mutex::new(None),
        };
        net.restart_server()?;
        Ok(net)
    }

    /// Crashes the server (drops every connection and in-memory state) and starts it again on
    /// the same database file.
    pub fn restart_server(&self) -> Result<(), HostError> {
        let mut slot = lock(&self.server);
        *slot = None;
        let store =
            SqliteServerStore::open(&self.server_db).map_err(|e| HostError(e.to_string()))?;
        let state = AppState::with_clock(
            self.server_config.clone(),
            Arc::new(store),
            self.clock.clone() as Arc<dyn Clock>,
        )
        .map_err(|e| HostError(e.to_string()))?;
        *slot = Some(Arc::new(state));
        Ok(())
    }

    /// The running server's state.
    pub fn server(&self) -> Option<Arc<AppState<SqliteServerStore>>> {
        lock(&self.server).clone()
    }

    /// Scoped mode: installs the server's sync rules in the store (a no-op when they are
    /// already installed) and lets `judge` check every upload against the permissions. A
    /// replayed request then carries the token it was sent with (as a real HTTP request would).
    pub async fn set_rules(&self, judge: Option<Arc<Judge>>) -> Result<(), HostError> {
        *lock(&self.judge) = judge;
        self.install_rules().await
    }

    /// Installs the configured sync rules in the running server's store, if any.
    pub async fn install_rules(&self) -> Result<(), HostError> {
        let (Some(server), Some(rules)) = (self.server(), self.server_config.rules.clone()) else {
            return Ok(());
        };
        server
            .store()
            .install_rules(rules, Arc::new(self.server_config.schema.clone()))
            .await
            .map_err(|e| HostError(e.to_string()))
    }

    /// The I10 oracle, in scoped mode.
    pub fn judge(&self) -> Option<Arc<Judge>> {
        lock(&self.judge).clone()
    }

    /// Sets (or clears) the op class the server refuses for good.
    pub fn set_poison_rule(&self, rule: Option<PoisonRule>) {
        *lock(&self.poison) = rule;
    }

    /// Replaces the token client `c` presents from its next request on.
    pub fn set_token(&self, c: usize, token: &str) {
        if let Some(t) = lock(&self.tokens).get_mut(c) {
            *t = token.to_string();
        }
    }

    /// Takes out of `req` every local transaction with an op the poison rule refuses and
    /// returns the outcomes the server gives them: the first refused op gets
    /// [`POISONED_VALUE`], every other op of its transaction `transaction_rejected`, worded
    /// as the real server words them.
    fn refuse_poisoned(&self, req: &mut v1::SyncRequest) -> Vec<v1::OpOutcome> {
        let Some(rule) = *lock(&self.poison) else {
            return Vec::new();
        };
        let mut outcomes = Vec::new();
        req.upload.retain(|ltx| {
            let Some(bad) = ltx.ops.iter().find(|op| rule.refuses_op(op)) else {
                return true;
            };
            let (bad_seq, why) = (bad.client_seq, rule.reason());
            for op in &ltx.ops {
                let (code, message) = if op.client_seq == bad_seq {
                    (POISONED_VALUE.to_string(), why.clone())
                } else {
                    (
                        "transaction_rejected".to_string(),
                        format!("op {bad_seq} of the same transaction was rejected: {why}"),
                    )
                };
                outcomes.push(v1::OpOutcome {
                    client_seq: op.client_seq,
                    kind: v1::OutcomeKind::Rejected as i32,
                    code,
                    message,
                    ..Default::default()
                });
            }
            false
        });
        outcomes
    }

    /// Replaces the faults of client `c`'s link.
    pub fn set_link(&self, c: usize, faults: LinkFaults) {
        if let Some(l) = lock(&self.links).get_mut(c) {
            *l = faults;
        }
    }

    /// Removes every fault and forgets held messages.
    pub fn heal(&self) {
        for l in lock(&self.links).iter_mut() {
            *l = LinkFaults::default();
        }
        lock(&self.held).clear();
    }

    /// Whether client `c`'s last exchange lost its response after the server acted.
    pub fn take_lost_last(&self, c: usize) -> bool {
        lock(&self.lost_last)
            .get_mut(c)
            .map(std::mem::take)
            .unwrap_or(false)
    }

    fn roll(&self, pct: u64) -> bool {
        pct > 0 && lock(&self.rng).below(100) < pct
    }

    /// Delivers one held (delayed) request now, as a stale replay; its answer goes nowhere.
    pub async fn replay_one(&self) -> bool {
        let item = {
            let mut held = lock(&self.held);
            if held.is_empty() {
                None
            } else {
                let i = lock(&self.rng).below(held.len() as u64) as usize;
                Some(held.remove(i))
            }
        };
        let Some((c, body, token)) = item else {
            return false;
        };
        lock(&self.counters).replays += 1;
        // Default mode replays with the client's current token (as it always did); scoped
        // mode with the token the request was sent with.
        let token = if self.judge().is_some() {
            token
        } else {
            self.token(c)
        };
        let _ = self.deliver(c, &body, token).await;
        true
    }

    /// Client `c`'s current token.
    fn token(&self, c: usize) -> Option<String> {
        lock(&self.tokens).get(c).cloned()
    }

    async fn deliver(
        &self,
        _c: usize,
        body: &[u8],
        token: Option<String>,
    ) -> Result<Vec<u8>, TransportError> {
        let Some(server) = self.server() else {
            return Err(TransportError::Network("server down".into()));
        };
        let token = token.map(|t| format!("Bearer {t}"));
        let claims =
            authenticate(&server, token.as_deref()).map_err(|e| TransportError::Unauthorized {
                code: e.code().into(),
                message: e.message().into(),
            })?;
        let judge = self.judge();
        let judged = judge
            .as_ref()
            .map(|j| j.before(&SimClaims::from_token(&claims), body, &server));
        let answer =
            process_sync(&server, &claims, body)
                .await
                .map_err(|e| TransportError::Status {
                    status: e.status().as_u16(),
                    code: e.code().into(),
                    message: e.message().into(),
                    retry_after_ms: None,
                })?;
        if let (Some(judge), Some(judged)) = (judge, judged) {
            let refused = judge.after(judged, &answer, &server);
            lock(&self.counters).forbidden_refused += refused;
        }
        Ok(answer)
    }

    /// One exchange of client `c`, through its faults.
    pub async fn exchange(
        &self,
        c: usize,
        mut req: v1::SyncRequest,
    ) -> Result<(v1::SyncResponse, TrafficStats), TransportError> {
        let link = lock(&self.links).get(c).copied().unwrap_or_default();
        // Once the request is on its way, a loss is a broken connection (the client resumes at
        // once); a partition refuses the connection itself.
        let lost = |why: &str| Err(TransportError::ConnectionLost(why.to_string()));
        match link.partition {
            Partition::Both => {
                lock(&self.counters).partition_drops += 1;
                return Err(TransportError::Network("partitioned".into()));
            }
            Partition::RequestsLost => {
                lock(&self.counters).requests_lost += 1;
                return lost("request lost");
            }
            _ => {}
        }
        if self.roll(link.flaky_pct) {
            lock(&self.counters).flaky_drops += 1;
            return lost("flaky link dropped the request");
        }
        // The server refuses the poisoned transactions and handles the rest of the request.
        let refused = self.refuse_poisoned(&mut req);
        let body = encode_frame(&req).map_err(|e| TransportError::Decode(e.to_string()))?;
        let token = self.token(c);
        if self.roll(link.hold_pct) {
            lock(&self.held).push((c, body.clone(), token.clone()));
        }
        if self.roll(link.dup_pct) {
            lock(&self.counters).duplicates += 1;
            let _ = self.deliver(c, &body, token.clone()).await;
        }
        let answer = match self.deliver(c, &body, token).await {
            Ok(a) => a,
            Err(e) => {
                if matches!(&e, TransportError::Unauthorized { code, .. } if code == "token_expired")
                {
                    lock(&self.counters).auth_refusals += 1;
                }
                return Err(e);
            }
        };
        let response_lost = link.partition == Partition::ResponsesLost || self.roll(link.flaky_pct);
        if response_lost {
            lock(&self.counters).responses_lost += 1;
            if let Some(l) = lock(&self.lost_last).get_mut(c) {
                *l = true;
            }
            return lost("response lost");
        }
        let mut resp: v1::SyncResponse =
            decode_frame(&answer, 1 << 28).map_err(|e| TransportError::Decode(e.to_string()))?;
        resp.outcomes.extend(refused);
        {
            let mut counters = lock(&self.counters);
            counters.exchanges_ok += 1;
            counters.evictions += resp.changes.iter().filter(|ch| ch.evicted).count() as u64;
            for o in &resp.outcomes {
                if o.kind == v1::OutcomeKind::Staged as i32 {
                    counters.staged_parts += 1;
                } else if o.kind == v1::OutcomeKind::Rejected as i32 {
                    match o.code.as_str() {
                        POISONED_VALUE => counters.poison_refused += 1,
                        "invalid_row_id" => counters.invalid_row_ids += 1,
                        "transaction_rejected" => counters.rejected_siblings += 1,
                        _ => {}
                    }
                }
            }
        }
        Ok((
            resp,
            TrafficStats {
                bytes_up: body.len() as u64,
                bytes_down: answer.len() as u64,
            },
        ))
    }
}

/// Client `index`'s transport over the shared [`Net`].
#[derive(Debug, Clone)]
pub struct SimTransport {
    /// The network.
    pub net: Arc<Net>,
    /// Which client this is.
    pub index: usize,
}

impl Transport for SimTransport {
    async fn sync(
        &self,
        req: v1::SyncRequest,
    ) -> Result<(v1::SyncResponse, TrafficStats), TransportError> {
        self.net.exchange(self.index, req).await
    }

    fn set_token(&self, token: &str) {
        self.net.set_token(self.index, token);
    }
}
