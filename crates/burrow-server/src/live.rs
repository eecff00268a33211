//! `GET /v1/live`: a WebSocket on which the server pokes a device whenever the committed head
//! grows, so the device pulls at once instead of waiting for its next poll.
//!
//! - **Authentication** is that of `POST /v1/sync`: `Authorization: Bearer <token>`. Browsers
//!   cannot set headers on a WebSocket, so the token may instead come as the subprotocol
//!   `bearer.<token>` in `Sec-WebSocket-Protocol`; the server then selects (echoes) that
//!   protocol. A bad or missing token is answered `401` with the usual JSON error, before any
//!   upgrade.
//! - **Limit**: at most [`Limits::live_connections_per_user_max`](crate::Limits) connections per
//!   user (token `sub`); one more is answered `429 too_many_live_connections`. Opening one
//!   counts against the per-user request rate like any request (`429 rate_limited`).
//! - **Messages** (server to client, text): `{"head_seq": N}` right after the upgrade (the
//!   current head), then whenever the head grows. Pokes are coalesced: a slow client gets the
//!   latest head, never a backlog. The client sends nothing but control frames.
//! - **Keepalive**: a ping every [`PING_INTERVAL`]; a peer silent (no pong, no frame) for
//!   [`PEER_TIMEOUT`] is dropped. When the server shuts down every socket is closed with
//!   `1001 going away`.

use crate::http::{ApiError, AppState, admit, authenticate};
use crate::store::ServerStore;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

/// How often the server pings a live connection.
pub const PING_INTERVAL: Duration = Duration::from_secs(20);

/// A connection from which nothing (not even a pong) arrived for this long is dropped.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one message may take to leave; a peer that does not read is dropped.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the server waits for the peer's half of a closing handshake.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The subprotocol prefix that carries the token: `bearer.<token>`.
pub const BEARER_PROTOCOL_PREFIX: &str = "bearer.";

/// Read buffer per connection: clients only send control frames.
const READ_BUFFER_BYTES: usize = 4 << 10;

/// Largest message or frame accepted from a client.
const CLIENT_MESSAGE_BYTES_MAX: usize = 4 << 10;

/// One commit as live connections see it.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    /// The head after the commit.
    pub head: u64,
    /// The head before it: a connection that last saw another head missed commits (the
    /// channel coalesces) and pokes without judging relevance.
    pub prev: u64,
    /// The buckets the commit wrote to (selective sync); `None`: unknown or possibly
    /// everyone's (no rules, or a write that can change grants).
    pub touched: Option<Arc<BTreeSet<String>>>,
}

/// The buckets each user's devices were last granted (device id → grants), by user.
type GrantsByUser = HashMap<String, HashMap<String, Arc<BTreeSet<String>>>>;

/// Live-push state shared by the handlers: the committed head and the connections per user.
#[derive(Debug)]
pub struct LiveHub {
    head: watch::Sender<Commit>,
    connections: Arc<Mutex<HashMap<String, usize>>>,
    grants: Arc<Mutex<GrantsByUser>>,
}

impl Default for LiveHub {
    fn default() -> Self {
        LiveHub::new()
    }
}

impl LiveHub {
    /// A hub with head 0 and no connections.
    pub fn new() -> LiveHub {
        LiveHub {
            head: watch::Sender::new(Commit::default()),
            connections: Arc::default(),
            grants: Arc::default(),
        }
    }

    /// Records a committed head that may concern anyone; subscribers are woken only when it
    /// grew.
    pub fn publish(&self, head_seq: u64) {
        self.publish_commit(head_seq, None);
    }

    /// Records a committed head and the buckets it wrote to: only connections whose user's
    /// grants meet `touched` are poked (`None`: all).
    pub fn publish_commit(&self, head_seq: u64, touched: Option<BTreeSet<String>>) {
        let touched = touched.map(Arc::new);
        self.head.send_if_modified(|current| {
            if head_seq > current.head {
                *current = Commit {
                    head: head_seq,
                    prev: current.head,
                    touched,
                };
                true
            } else {
                false
            }
        });
    }

    /// Remembers what a device of `sub` was granted at its latest pull, so commits outside
    /// every grant of the user poke none of their connections.
    pub fn record_grants(&self, sub: &str, client_id: &str, grants: BTreeSet<String>) {
        let mut map = self.grants.lock().unwrap_or_else(|e| e.into_inner());
        let devices = map.entry(sub.to_string()).or_default();
        if devices.get(client_id).is_none_or(|g| **g != grants) {
            devices.insert(client_id.to_string(), Arc::new(grants));
        }
    }

    /// The latest published head.
    pub fn head(&self) -> u64 {
        self.head.borrow().head
    }

    /// Live connections currently open for `sub`.
    pub fn connections_of(&self, sub: &str) -> usize {
        lock(&self.connections).get(sub).copied().unwrap_or(0)
    }

    /// Takes one of `sub`'s connection slots, or `None` when `max` are taken.
    fn reserve(&self, sub: &str, max: usize) -> Option<Slot> {
        let mut map = lock(&self.connections);
        let n = map.entry(sub.to_string()).or_insert(0);
        if *n >= max {
            if *n == 0 {
                map.remove(sub);
            }
            return None;
        }
        *n += 1;
        Some(Slot {
            connections: self.connections.clone(),
            sub: sub.to_string(),
        })
    }
}

/// Whether a commit writing to `touched` may concern `sub`.
fn concerns(grants: &Mutex<GrantsByUser>, sub: &str, touched: &BTreeSet<String>) -> bool {
    let map = grants.lock().unwrap_or_else(|e| e.into_inner());
    match map.get(sub) {
        // Nothing known yet: poke (the device pulls and its grants are recorded).
        None => true,
        Some(devices) => devices
            .values()
            .any(|g| touched.iter().any(|b| g.contains(b))),
    }
}

fn lock(m: &Mutex<HashMap<String, usize>>) -> MutexGuard<'_, HashMap<String, usize>> {
    // The map holds plain counters: a panic elsewhere cannot leave it inconsistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One taken connection slot; given back on drop (whatever way the connection ends).
struct Slot {
    connections: Arc<Mutex<HashMap<String, usize>>>,
    sub: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = lock(&self.connections);
        if let Some(n) = map.get_mut(&self.sub) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.sub);
            }
        }
    }
}

/// The first `bearer.<token>` subprotocol the client offered.
fn bearer_protocol(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find(|p| p.starts_with(BEARER_PROTOCOL_PREFIX))
}

/// `GET /v1/live`.
pub async fn live<S: ServerStore>(
    State(state): State<Arc<AppState<S>>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let protocol = bearer_protocol(&headers);
    let claims = match headers.get(header::AUTHORIZATION) {
        Some(h) => authenticate(&state, Some(h.to_str().unwrap_or(""))),
        None => match protocol {
            Some(p) => {
                let token = &p[BEARER_PROTOCOL_PREFIX.len()..];
                authenticate(&state, Some(&format!("Bearer {token}")))
            }
            None => authenticate(&state, None),
        },
    }?;
    admit(&state, &claims)?;
    let mut upgrade = upgrade.map_err(|e| {
        ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "websocket_required",
            format!("GET /v1/live is a WebSocket endpoint: {e}"),
        )
    })?;
    let max = state.limits.live_connections_per_user_max;
    let slot = state.live.reserve(&claims.sub, max).ok_or_else(|| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_live_connections",
            format!(
                "this user already has the most live connections the limit \
                 live_connections_per_user_max = {max} allows"
            ),
        )
        .with_limit("live_connections_per_user_max", max)
    })?;
    // The hub starts at 0; the store knows the head committed before this process started.
    state.live.publish(state.store().head_seq().await?);
    let head = state.live.head.subscribe();
    let scope = Scope {
        grants: state.live.grants.clone(),
        sub: claims.sub.clone(),
    };
    if let Some(p) = protocol {
        // The offered value is a valid header value: it came from one.
        if let Ok(v) = HeaderValue::from_str(p) {
            upgrade.set_selected_protocol(v);
        }
    }
    tracing::debug!(sub = %claims.sub, "live connection");
    Ok(upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_message_size(CLIENT_MESSAGE_BYTES_MAX)
        .max_frame_size(CLIENT_MESSAGE_BYTES_MAX)
        .on_upgrade(move |socket| serve(socket, head, slot, scope)))
}

/// Sends `msg`, giving up after [`SEND_TIMEOUT`]; false when the connection is unusable.
async fn send(socket: &mut WebSocket, msg: Message) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, socket.send(msg)).await,
        Ok(Ok(()))
    )
}

fn head_message(head_seq: u64) -> Message {
    Message::text(format!("{{\"head_seq\":{head_seq}}}"))
}

/// Starts the closing handshake and waits briefly for the peer's answer.
async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    if send(socket, Message::Close(Some(frame))).await {
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            while let Some(Ok(_)) = socket.recv().await {}
        })
        .await;
    }
}

/// Whose connection it is, to judge which commits concern it.
struct Scope {
    grants: Arc<Mutex<GrantsByUser>>,
    sub: String,
}

/// One live connection. Holds only the socket, a head receiver and the slot; returns (and
/// frees all three) as soon as the socket fails, the peer closes or goes silent, or the
/// server shuts down.
async fn serve(
    mut socket: WebSocket,
    mut head: watch::Receiver<Commit>,
    _slot: Slot,
    scope: Scope,
) {
    let mut seen = head.borrow_and_update().head;
    if !send(&mut socket, head_message(seen)).await {
        return;
    }
    let mut ping = tokio::time::interval_at(Instant::now() + PING_INTERVAL, PING_INTERVAL);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_seen = Instant::now();
    loop {
        tokio::select! {
            changed = head.changed() => match changed {
                Ok(()) => {
                    let commit = head.borrow_and_update().clone();
                    // Poke when the commit may concern this user: it wrote to one of their
                    // buckets, or its scope is unknown, or commits were coalesced away.
                    let relevant = commit.prev != seen
                        || commit
                            .touched
                            .as_ref()
                            .is_none_or(|t| concerns(&scope.grants, &scope.sub, t));
                    seen = commit.head;
                    if relevant && !send(&mut socket, head_message(commit.head)).await {
                        return;
                    }
                }
                // The hub is gone: the server is shutting down.
                Err(_) => {
                    close(&mut socket, 1001, "server shutting down").await;
                    return;
                }
            },
            msg = socket.recv() => match msg {
                None | Some(Err(_)) => return,
                Some(Ok(Message::Close(_))) => {
                    // Reading on sends tungstenite's answer to the close frame.
                    let _ = tokio::time::timeout(CLOSE_GRACE, socket.recv()).await;
                    return;
                }
                // Pongs (and anything else the client sends) show the peer is alive.
                Some(Ok(_)) => last_seen = Instant::now(),
            },
            _ = ping.tick() => {
                if last_seen.elapsed() >= PEER_TIMEOUT {
                    close(&mut socket, 1011, "keepalive timeout").await;
                    return;
                }
                if !send(&mut socket, Message::Ping(Default::default())).await {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_only_moves_forward() {
        let hub = LiveHub::new();
        let mut rx = hub.head.subscribe();
        hub.publish(5);
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().head, 5);
        hub.publish(3);
        hub.publish(5);
        assert!(!rx.has_changed().unwrap());
        assert_eq!(hub.head(), 5);
    }

    #[test]
    fn a_commit_concerns_only_users_whose_grants_it_touches() {
        let hub = LiveHub::new();
        let touched: BTreeSet<String> = ["route[\"r1\"]".to_string()].into();
        // Nothing recorded for a user yet: they are poked.
        assert!(concerns(&hub.grants, "ann", &touched));
        hub.record_grants("ann", "phone", ["route[\"r1\"]".to_string()].into());
        hub.record_grants("bob", "phone", ["route[\"r2\"]".to_string()].into());
        assert!(concerns(&hub.grants, "ann", &touched));
        assert!(!concerns(&hub.grants, "bob", &touched));
        // Any of a user's devices counts.
        hub.record_grants("bob", "tablet", ["route[\"r1\"]".to_string()].into());
        assert!(concerns(&hub.grants, "bob", &touched));
        // A commit records where it came from, so coalesced commits are noticed.
        let mut rx = hub.head.subscribe();
        hub.publish_commit(7, Some(touched.clone()));
        hub.publish_commit(9, Some(BTreeSet::new()));
        let c = rx.borrow_and_update().clone();
        assert_eq!((c.head, c.prev), (9, 7));
    }

    #[test]
    fn slots_are_counted_per_user_and_given_back() {
        let hub = LiveHub::new();
        let a = hub.reserve("ann", 2).unwrap();
        let b = hub.reserve("ann", 2).unwrap();
        assert!(hub.reserve("ann", 2).is_none());
        let c = hub.reserve("bob", 2).unwrap();
        assert_eq!(hub.connections_of("ann"), 2);
        drop(a);
        assert_eq!(hub.connections_of("ann"), 1);
        let _d = hub.reserve("ann", 2).unwrap();
        drop((b, c));
        assert_eq!(hub.connections_of("bob"), 0);
        assert!(lock(&hub.connections).get("bob").is_none());
        assert!(hub.reserve("zed", 0).is_none());
        assert!(lock(&hub.connections).get("zed").is_none());
    }

    #[test]
    fn bearer_protocol_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("burrow.v1, bearer.abc.def"),
        );
        assert_eq!(bearer_protocol(&h), Some("bearer.abc.def"));
        assert_eq!(bearer_protocol(&HeaderMap::new()), None);
    }
}
