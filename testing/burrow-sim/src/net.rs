//! The simulated network and server host: every exchange goes through [`SimTransport`], which
//! consults the nemesis' current faults for the client and rolls per-message faults from the
//! seeded network RNG.

use burrow_client::{TrafficStats, Transport, TransportError};
use burrow_core::env::{Clock, SeededRng};
use burrow_proto::{decode_frame, encode_frame, v1};
use burrow_server::http::{AppState, authenticate, process_sync};
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
    }

    /// Names of the counters that stayed at zero.
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
        ];
        all.iter()
            .filter(|(_, n)| *n == 0)
            .map(|(name, _)| *name)
            .collect()
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
    held: Mutex<Vec<(usize, Vec<u8>)>>,
    /// Counters of what happened.
    pub counters: Mutex<Counters>,
    /// The last response of each client was lost (set per exchange, read by the nemesis).
    lost_last: Mutex<Vec<bool>>,
    tokens: Vec<String>,
}

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
            tokens,
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
        let Some((c, body)) = item else { return false };
        lock(&self.counters).replays += 1;
        let _ = self.deliver(c, &body).await;
        true
    }

    async fn deliver(&self, c: usize, body: &[u8]) -> Result<Vec<u8>, TransportError> {
        let Some(server) = self.server() else {
            return Err(TransportError::Network("server down".into()));
        };
        let token = self.tokens.get(c).map(|t| format!("Bearer {t}"));
        let claims =
            authenticate(&server, token.as_deref()).map_err(|e| TransportError::Unauthorized {
                code: e.code().into(),
                message: e.message().into(),
            })?;
        process_sync(&server, &claims, body)
            .await
            .map_err(|e| TransportError::Status {
                status: e.status().as_u16(),
                code: e.code().into(),
                message: e.message().into(),
                retry_after_ms: None,
            })
    }

    /// One exchange of client `c`, through its faults.
    pub async fn exchange(
        &self,
        c: usize,
        req: v1::SyncRequest,
    ) -> Result<(v1::SyncResponse, TrafficStats), TransportError> {
        let body = encode_frame(&req).map_err(|e| TransportError::Decode(e.to_string()))?;
        let link = lock(&self.links).get(c).copied().unwrap_or_default();
        let lost = |why: &str| Err(TransportError::Network(why.to_string()));
        match link.partition {
            Partition::Both => {
                lock(&self.counters).partition_drops += 1;
                return lost("partitioned");
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
        if self.roll(link.hold_pct) {
            lock(&self.held).push((c, body.clone()));
        }
        if self.roll(link.dup_pct) {
            lock(&self.counters).duplicates += 1;
            let _ = self.deliver(c, &body).await;
        }
        let answer = self.deliver(c, &body).await?;
        let response_lost = link.partition == Partition::ResponsesLost || self.roll(link.flaky_pct);
        if response_lost {
            lock(&self.counters).responses_lost += 1;
            if let Some(l) = lock(&self.lost_last).get_mut(c) {
                *l = true;
            }
            return lost("response lost");
        }
        let resp: v1::SyncResponse =
            decode_frame(&answer, 1 << 28).map_err(|e| TransportError::Decode(e.to_string()))?;
        {
            let mut counters = lock(&self.counters);
            counters.exchanges_ok += 1;
            counters.staged_parts += resp
                .outcomes
                .iter()
                .filter(|o| o.kind == v1::OutcomeKind::Staged as i32)
                .count() as u64;
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
}
