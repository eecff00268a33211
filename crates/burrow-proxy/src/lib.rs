//! A fault-injecting TCP proxy for chaos tests: it sits between a client and a server and
//! makes the link between them slow and unreliable, the way a phone's network is.
//!
//! What it injects is set by a [`Profile`]:
//! - **per connection and direction:** a delay of `latency ± jitter` on every chunk (chunks
//!   keep their order), a bandwidth cap (a [`TokenBucket`]), and stalls, during which nothing
//!   is delivered;
//! - **per connection:** random drops, which close both sides with a TCP reset;
//! - **profile-wide:** outages, during which every open connection is cut and new ones are
//!   reset as soon as they are accepted.
//!
//! Every random choice comes from [`burrow_core::env::SeededRng`] streams derived from one
//! seed: the outage schedule is a function of the seed alone, and the faults of the `n`-th
//! connection are a function of the seed and `n`.
//!
//! ```no_run
//! # async fn run() -> Result<(), burrow_proxy::ProxyError> {
//! use burrow_proxy::{Profile, spawn};
//! let upstream = "127.0.0.1:4000".parse().unwrap();
//! let proxy = spawn("127.0.0.1:0", upstream, Profile::edge(), 42).await?;
//! println!("point the client at {}", proxy.url());
//! proxy.set_online(false); // partition
//! proxy.set_online(true); // heal
//! println!("{}", proxy.stats());
//! # Ok(()) }
//! ```

mod bucket;
pub mod profile;

pub use bucket::TokenBucket;
pub use profile::{Direction, Outages, Profile};

use burrow_core::env::{Rng, SeededRng};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Why the proxy could not start, or a profile could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A profile name or override was not understood.
    #[error("{0}")]
    Profile(String),
}

/// Counters of what a proxy did, from [`ProxyHandle::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections accepted and forwarded (or attempted) to the upstream.
    pub connections: u64,
    /// Connections open right now.
    pub active: u64,
    /// Connections reset at once because the link was down (outage or partition).
    pub refused: u64,
    /// Connections closed because the upstream could not be reached.
    pub upstream_errors: u64,
    /// Bytes delivered from clients to the upstream.
    pub bytes_up: u64,
    /// Bytes delivered from the upstream to clients.
    pub bytes_down: u64,
    /// Connections dropped at random.
    pub drops: u64,
    /// Stalls that held back traffic.
    pub stalls: u64,
    /// Times the link went down (scheduled outages and partitions).
    pub outages: u64,
    /// Open connections cut because the link went down.
    pub cut: u64,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "connections {} (active {}, refused {}, upstream errors {}), up {} B, down {} B, \
             drops {}, stalls {}, outages {} (cut {} connections)",
            self.connections,
            self.active,
            self.refused,
            self.upstream_errors,
            self.bytes_up,
            self.bytes_down,
            self.drops,
            self.stalls,
            self.outages,
            self.cut
        )
    }
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    active: AtomicU64,
    refused: AtomicU64,
    upstream_errors: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    drops: AtomicU64,
    stalls: AtomicU64,
    outages: AtomicU64,
    cut: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Who decides whether the link is up.
#[derive(Debug, Default)]
struct Control {
    /// Set by [`ProxyHandle::set_online`]; overrides the schedule.
    forced: Option<bool>,
    /// A scheduled outage is in progress.
    scheduled_outage: bool,
}

#[derive(Debug)]
struct Shared {
    counters: Counters,
    profile: watch::Sender<Arc<Profile>>,
    online: watch::Sender<bool>,
    control: Mutex<Control>,
}

impl Shared {
    fn update_control(&self, f: impl FnOnce(&mut Control)) {
        let mut control = self.control.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut control);
        let online = control.forced.unwrap_or(!control.scheduled_outage);
        let was = self.online.send_replace(online);
        if was && !online {
            bump(&self.counters.outages);
        }
    }

    fn profile(&self) -> Arc<Profile> {
        self.profile.borrow().clone()
    }
}

/// A running proxy. Dropping it stops the proxy and closes every connection.
#[derive(Debug)]
pub struct ProxyHandle {
    addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl ProxyHandle {
    /// The address the proxy listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://` and the listening address: the base URL for an HTTP client.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address connections are forwarded to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            connections: get(&c.connections),
            active: get(&c.active),
            refused: get(&c.refused),
            upstream_errors: get(&c.upstream_errors),
            bytes_up: get(&c.bytes_up),
            bytes_down: get(&c.bytes_down),
            drops: get(&c.drops),
            stalls: get(&c.stalls),
            outages: get(&c.outages),
            cut: get(&c.cut),
        }
    }

    /// Partitions (`false`: every open connection is cut, new ones are reset) or heals
    /// (`true`) the link. Either call overrides the profile's outage schedule from then on:
    /// after `set_online(true)` no scheduled outage takes the link down any more (a scheduled
    /// outage in progress ends at once). Drops and stalls are not affected; switch them off
    /// with [`ProxyHandle::set_profile`].
    pub fn set_online(&self, online: bool) {
        self.shared.update_control(|c| c.forced = Some(online));
    }

    /// Whether the link is up right now.
    pub fn is_online(&self) -> bool {
        *self.shared.online.borrow()
    }

    /// Replaces the profile. Open connections use the new latency, bandwidth, stall and drop
    /// settings from their next chunk on; the outage schedule restarts.
    pub fn set_profile(&self, profile: Profile) {
        self.shared.profile.send_replace(Arc::new(profile));
    }

    /// The profile in force.
    pub fn profile(&self) -> Profile {
        (*self.shared.profile()).clone()
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every connection task.
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Binds `listen` and forwards every accepted connection to `upstream`, injecting the faults
/// of `profile`; `seed` determines every random choice. Must run inside a tokio runtime.
pub async fn spawn(
    listen: &str,
    upstream: SocketAddr,
    profile: Profile,
    seed: u64,
) -> Result<ProxyHandle, ProxyError> {
    let bind_err = |source| ProxyError::Bind {
        addr: listen.to_string(),
        source,
    };
    let listener = TcpListener::bind(listen).await.map_err(bind_err)?;
    let addr = listener.local_addr().map_err(bind_err)?;
    let shared = Arc::new(Shared {
        counters: Counters::default(),
        profile: watch::Sender::new(Arc::new(profile)),
        online: watch::Sender::new(true),
        control: Mutex::new(Control::default()),
    });
    let tasks = vec![
        tokio::spawn(accept_loop(listener, upstream, shared.clone(), seed)),
        tokio::spawn(schedule_outages(shared.clone(), seed)),
    ];
    Ok(ProxyHandle {
        addr,
        upstream,
        shared,
        tasks,
    })
}

/// Largest chunk read (and delayed) at once.
const CHUNK_BYTES_MAX: usize = 16 * 1024;
/// Chunks in flight per direction (read but not yet delivered).
const QUEUE_CHUNKS: usize = 256;
/// Random stream of the outage schedule (connections use streams 1, 2, 3, …).
const STREAM_OUTAGES: u64 = u64::MAX;

/// An independent seed for random stream `stream` of `seed`.
fn derive_seed(seed: u64, stream: u64) -> u64 {
    SeededRng::new(seed ^ stream.wrapping_mul(0xD6E8_FEB8_6659_FD93)).next_u64()
}

/// A uniform draw from `[0, 1)`.
fn unit(rng: &mut SeededRng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// A uniform draw from `min..=max`.
fn uniform(rng: &mut SeededRng, min: Duration, max: Duration) -> Duration {
    if max <= min {
        min
    } else {
        min + (max - min).mul_f64(unit(rng))
    }
}

/// When an event that happens with probability `per_sec` in any one second (a Poisson
/// process) next happens after `from`; `None` = never.
fn next_event(rng: &mut SeededRng, per_sec: f64, from: Instant) -> Option<Instant> {
    if per_sec.is_nan() || per_sec <= 0.0 {
        return None;
    }
    let rate = -(1.0 - per_sec).max(1e-9).ln();
    let u = 1.0 - unit(rng); // in (0, 1]
    let secs = -u.ln() / rate;
    Duration::try_from_secs_f64(secs)
        .ok()
        .and_then(|d| from.checked_add(d))
}

/// `latency` plus a uniform draw from `-jitter..=jitter`, at least zero.
fn sample_delay(p: &Profile, rng: &mut SeededRng) -> Duration {
    if p.jitter.is_zero() {
        return p.latency;
    }
    let secs = p.latency.as_secs_f64() + p.jitter.as_secs_f64() * (2.0 * unit(rng) - 1.0);
    Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(p.latency)
}

/// Chunk size for a bandwidth cap: about 20 ms of traffic, so the cap is smooth.
fn chunk_len(bytes_per_sec: Option<u64>) -> usize {
    match bytes_per_sec {
        None => CHUNK_BYTES_MAX,
        Some(r) => usize::try_from(r / 50)
            .unwrap_or(CHUNK_BYTES_MAX)
            .clamp(256, CHUNK_BYTES_MAX),
    }
}

/// Burst allowance of a bandwidth cap: about 100 ms of traffic.
fn burst_for(bytes_per_sec: u64) -> u64 {
    (bytes_per_sec / 10).max(chunk_len(Some(bytes_per_sec)) as u64)
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>, seed: u64) {
    let mut conns = JoinSet::new();
    let online = shared.online.subscribe();
    let mut next_id: u64 = 0;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let up = *online.borrow();
                    if !up {
                        bump(&shared.counters.refused);
                        let _ = stream.set_zero_linger();
                        drop(stream);
                        continue;
                    }
                    next_id += 1;
                    bump(&shared.counters.connections);
                    conns.spawn(serve(stream, upstream, shared.clone(), derive_seed(seed, next_id)));
                }
                // Out of file descriptors and the like: back off a little.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Decrements the active-connection count when a connection task ends or is aborted.
struct Active(Arc<Shared>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.counters.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Forwards one connection until both directions end, or a drop, an outage or a partition
/// cuts it.
async fn serve(mut client: TcpStream, upstream: SocketAddr, shared: Arc<Shared>, seed: u64) {
    shared.counters.active.fetch_add(1, Ordering::Relaxed);
    let _active = Active(shared.clone());
    let mut server = match TcpStream::connect(upstream).await {
        Ok(s) => s,
        Err(_) => {
            bump(&shared.counters.upstream_errors);
            let _ = client.set_zero_linger();
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut ctl = SeededRng::new(derive_seed(seed, 0));
    let mut online = shared.online.subscribe();
    let mut profile_rx = shared.profile.subscribe();
    let aborted = {
        let (client_r, client_w) = client.split();
        let (server_r, server_w) = server.split();
        let up_rng = SeededRng::new(derive_seed(seed, 1));
        let down_rng = SeededRng::new(derive_seed(seed, 2));
        let pumps = async {
            tokio::join!(
                pump(client_r, server_w, Direction::Up, up_rng, &shared),
                pump(server_r, client_w, Direction::Down, down_rng, &shared),
            )
        };
        tokio::pin!(pumps);
        let drop_rate = profile_rx.borrow_and_update().drop_per_sec;
        let mut drop_at = next_event(&mut ctl, drop_rate, Instant::now());
        loop {
            tokio::select! {
                _ = &mut pumps => break false,
                _ = sleep_until_opt(drop_at) => {
                    bump(&shared.counters.drops);
                    break true;
                }
                changed = profile_rx.changed() => {
                    if changed.is_err() {
                        break true;
                    }
                    let drop_rate = profile_rx.borrow_and_update().drop_per_sec;
                    drop_at = next_event(&mut ctl, drop_rate, Instant::now());
                }
                _ = async { online.wait_for(|up| !*up).await.is_ok() } => {
                    bump(&shared.counters.cut);
                    break true;
                }
            }
        }
    };
    if aborted {
        // A reset, as when a middlebox gives up on the connection.
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
}

/// Moves bytes one way: a reader stamps each chunk with its delivery time (after the
/// bandwidth cap), a writer delivers it then (after any stall).
async fn pump(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    dir: Direction,
    mut rng: SeededRng,
    shared: &Shared,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE_CHUNKS);
    let mut stall_rng = SeededRng::new(rng.next_u64());
    let reader = async move {
        let mut buf = vec![0u8; CHUNK_BYTES_MAX];
        let mut bucket: Option<TokenBucket> = None;
        let mut last_at = Instant::now();
        loop {
            let len = chunk_len(shared.profile.borrow().bytes_per_sec(dir));
            let n = match from.read(&mut buf[..len]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let profile = shared.profile();
            if let Some(rate) = profile.bytes_per_sec(dir) {
                let now = std::time::Instant::now();
                let b = bucket.get_or_insert_with(|| TokenBucket::new(rate, burst_for(rate), now));
                if b.rate() != rate {
                    b.set_rate(rate, burst_for(rate), now);
                }
                let wait = b.take(n, now);
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
            }
            // Never reorder: a chunk is delivered no earlier than the one before it.
            let at = (Instant::now() + sample_delay(&profile, &mut rng)).max(last_at);
            last_at = at;
            if tx.send((at, buf[..n].to_vec())).await.is_err() {
                break;
            }
        }
    };
    let writer = async move {
        let mut next_stall: Option<Instant> = None;
        let mut stall_rate = 0.0;
        while let Some((at, data)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            let (per_sec, min, max) = {
                let p = shared.profile.borrow();
                (p.stall_per_sec, p.stall_min, p.stall_max)
            };
            let now = Instant::now();
            if per_sec != stall_rate {
                stall_rate = per_sec;
                next_stall = next_event(&mut stall_rng, per_sec, now);
            }
            if let Some(start) = next_stall.filter(|s| *s <= now) {
                // A stall that ended while the link was idle delayed nothing.
                let end = start
                    .checked_add(uniform(&mut stall_rng, min, max))
                    .unwrap_or(start);
                if now < end {
                    bump(&shared.counters.stalls);
                    tokio::time::sleep_until(end).await;
                }
                next_stall = next_event(&mut stall_rng, per_sec, end.max(now));
            }
            if to.write_all(&data).await.is_err() {
                break;
            }
            let counter = match dir {
                Direction::Up => &shared.counters.bytes_up,
                Direction::Down => &shared.counters.bytes_down,
            };
            counter.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// Runs the outage schedule of the profile in force, restarting it when the profile changes.
async fn schedule_outages(shared: Arc<Shared>, seed: u64) {
    let mut rng = SeededRng::new(derive_seed(seed, STREAM_OUTAGES));
    let mut profile_rx = shared.profile.subscribe();
    loop {
        let outages = profile_rx.borrow_and_update().outages;
        let Some(o) = outages else {
            if profile_rx.changed().await.is_err() {
                return;
            }
            continue;
        };
        let gap = uniform(&mut rng, o.every / 2, o.every + o.every / 2);
        tokio::select! {
            _ = tokio::time::sleep(gap) => {}
            changed = profile_rx.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        }
        let len = uniform(&mut rng, o.length_min, o.length_max);
        shared.update_control(|c| c.scheduled_outage = true);
        let gone = tokio::select! {
            _ = tokio::time::sleep(len) => false,
            changed = profile_rx.changed() => changed.is_err(),
        };
        shared.update_control(|c| c.scheduled_outage = false);
        if gone {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_streams_differ_and_repeat() {
        assert_eq!(derive_seed(1, 2), derive_seed(1, 2));
        assert_ne!(derive_seed(1, 2), derive_seed(1, 3));
        assert_ne!(derive_seed(1, 2), derive_seed(2, 2));
    }

    #[test]
    fn next_event_follows_the_rate() {
        let mut rng = SeededRng::new(7);
        let t0 = Instant::now();
        assert_eq!(next_event(&mut rng, 0.0, t0), None);
        // With 5 % per second the mean wait is 1 / -ln(0.95) ≈ 19.5 s.
        let n = 20_000;
        let total: f64 = (0..n)
            .map(|_| {
                next_event(&mut rng, 0.05, t0)
                    .unwrap()
                    .duration_since(t0)
                    .as_secs_f64()
            })
            .sum();
        let mean = total / n as f64;
        assert!((mean - 19.5).abs() < 1.0, "mean {mean}");
        // A certain event still comes at a finite time.
        assert!(next_event(&mut rng, 1.0, t0).is_some());
    }

    #[test]
    fn delays_stay_within_jitter() {
        let mut rng = SeededRng::new(3);
        let p = Profile::edge();
        for _ in 0..1000 {
            let d = sample_delay(&p, &mut rng);
            assert!(d >= Duration::from_millis(360) && d <= Duration::from_millis(480));
        }
        let p =
            Profile::custom().with_latency(Duration::from_millis(10), Duration::from_millis(50));
        for _ in 0..1000 {
            assert!(sample_delay(&p, &mut rng) <= Duration::from_millis(60));
        }
    }

    #[test]
    fn chunks_are_about_20_ms_of_traffic() {
        assert_eq!(chunk_len(None), CHUNK_BYTES_MAX);
        assert_eq!(chunk_len(Some(30_000)), 600);
        assert_eq!(chunk_len(Some(1000)), 256);
        assert_eq!(chunk_len(Some(100_000_000)), CHUNK_BYTES_MAX);
        assert_eq!(burst_for(30_000), 3000);
    }
}
