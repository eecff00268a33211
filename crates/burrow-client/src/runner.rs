//! The background runner: keeps a client in sync until told to stop. It syncs when the app
//! writes, when the server pokes (live push, see [`crate::live`]), and every poll interval;
//! it backs off with full jitter after failures (honouring `Retry-After`) and never gives up;
//! it attempts nothing while offline and tries at once when the network comes back; on a
//! refused token it waits in `auth_required`, queue intact, until the app supplies a new one.
//! Every change is published as a [`SyncEvent`] ([`Client::events`]) and summarised in
//! [`crate::Status`] (`state`, `next_retry_at`).

use crate::client::{Client, SyncReport};
use crate::error::{Error, FailureKind, Result};
use crate::network::Network;
use crate::transport::{Transport, TransportError};
use burrow_core::backoff::{Backoff, BackoffConfig};
use burrow_core::env::SeededRng;
use serde::Serialize;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// What background sync is doing, for a status screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    /// Up to date, waiting for something to do.
    #[default]
    Idle,
    /// A sync is running.
    Syncing,
    /// The app reported no network: nothing is attempted.
    Offline,
    /// The last attempt failed; the next one is scheduled (`next_retry_at`).
    BackingOff,
    /// The server refused the token: waiting for a new one; the queue is kept.
    AuthRequired,
}

/// Something the runner did, as an event stream for the app (or `burrow client watch`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SyncEvent {
    /// The state changed.
    State {
        /// The new state.
        state: SyncState,
        /// When the next attempt is due (backing off), ms since the epoch.
        next_retry_at_ms: Option<u64>,
    },
    /// A sync completed.
    Synced {
        /// What it did.
        report: SyncReport,
    },
    /// A sync failed.
    Failed {
        /// Why, in words.
        error: String,
        /// What kind of failure, for code that reacts to it (never parse `error`).
        kind: FailureKind,
        /// The HTTP status, when the server answered with an error.
        status: Option<u16>,
        /// The server's stable error code, when it answered with an error.
        code: Option<String>,
        /// Whether retrying may help (network, server busy) rather than needing action.
        retryable: bool,
    },
    /// The app committed a write (ops queued).
    Written {
        /// Ops captured.
        ops: u64,
    },
    /// The server announced new changes (live push).
    Poked {
        /// The server's head sequence.
        head_seq: u64,
    },
}

impl SyncEvent {
    /// The event announcing that a sync failed with `e`.
    pub fn failed(e: &Error) -> SyncEvent {
        let server = e.server_status();
        SyncEvent::Failed {
            error: e.to_string(),
            kind: e.failure_kind(),
            status: server.map(|(status, _)| status),
            code: server.map(|(_, code)| code.to_string()),
            retryable: e.is_retryable(),
        }
    }
}

/// Supplies a fresh token when the server refuses the current one (e.g. from a refresh token
/// the app holds); `None` when the user must sign in again.
pub type TokenProvider = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// Settings of [`Client::run`].
#[derive(Clone)]
pub struct RunOptions {
    /// Sync at least this often even without writes or pokes (the fallback when live push is
    /// unavailable).
    pub poll_interval_ms: u64,
    /// Retry timing after failures.
    pub backoff: BackoffConfig,
    /// Asked for a new token after a 401, before waiting in `auth_required`.
    pub token_provider: Option<TokenProvider>,
    /// Subscribe to live push (`GET /v1/live`) when the transport offers it; polling stays
    /// the fallback.
    pub live: bool,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("poll_interval_ms", &self.poll_interval_ms)
            .field("backoff", &self.backoff)
            .field("token_provider", &self.token_provider.is_some())
            .field("live", &self.live)
            .finish()
    }
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            poll_interval_ms: 30_000,
            backoff: BackoffConfig::default(),
            token_provider: None,
            live: true,
        }
    }
}

/// The runner's state as [`crate::Status`] shows it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RunStatus {
    pub state: SyncState,
    pub next_retry_at_ms: Option<u64>,
}

/// What ended a wait.
enum Woken {
    Stop,
    Retry,
    Work,
    Timer,
}

/// The live-push connection of a runner, reconnected with its own backoff.
struct Live {
    sub: Option<crate::live::LiveSubscriber>,
    backoff: Backoff,
    /// The endpoint refused for good (no TLS yet, or a refused token): poll only.
    disabled: bool,
}

impl Live {
    /// Connects when due; failures only delay the next try (polling covers the gap).
    async fn ensure<T: Transport>(
        &mut self,
        client: &Client,
        transport: &T,
        options: &RunOptions,
        rng: &mut SeededRng,
    ) {
        if !options.live || self.disabled || self.sub.is_some() {
            return;
        }
        let now = client.now_ms();
        if !self.backoff.ready(now) {
            return;
        }
        let Some(endpoint) = transport.live_endpoint() else {
            self.disabled = true;
            return;
        };
        match crate::live::LiveSubscriber::connect_to(&endpoint).await {
            Ok(sub) => {
                self.sub = Some(sub);
                self.backoff.succeeded();
            }
            Err(e) if e.is_retryable() => {
                self.backoff.failed(now, None, &options.backoff, rng);
            }
            Err(crate::live::LiveError::Unauthorized { .. }) => {
                // The sync path notices the token too; try again after the next sync.
                self.backoff.failed(now, None, &options.backoff, rng);
            }
            Err(_) => self.disabled = true,
        }
    }
}

impl Client {
    /// The runner's events from now on (each subscriber gets every event; a slow one may miss
    /// old events, never block the runner).
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<SyncEvent> {
        self.events_tx().subscribe()
    }

    /// Attempt at once: the network came back, or the app supplied a new token
    /// (`HttpTransport::set_token`). Cancels a pending backoff wait and `auth_required`.
    pub fn retry_now(&self) {
        self.retry_notify().notify_one();
    }

    fn set_run_status(&self, state: SyncState, next_retry_at_ms: Option<u64>) {
        let changed = self.replace_run_status(RunStatus {
            state,
            next_retry_at_ms,
        });
        if changed {
            self.emit(SyncEvent::State {
                state,
                next_retry_at_ms,
            });
        }
    }

    /// Keeps this client in sync through `transport` until `stop` completes: the background
    /// sync an app runs while it is in the foreground (see the module docs). Returns when
    /// stopped; errors of individual syncs become events and retries, never the result.
    pub async fn run<T: Transport>(
        &self,
        transport: &T,
        options: &RunOptions,
        stop: impl Future<Output = ()>,
    ) -> Result<()> {
        let mut backoff = Backoff::new();
        let mut live = Live {
            sub: None,
            backoff: Backoff::new(),
            disabled: false,
        };
        let seed = burrow_core::hash::fnv1a64(self.client_id().as_bytes()) ^ self.now_ms();
        let mut rng = SeededRng::new(seed);
        tokio::pin!(stop);
        let poll = Duration::from_millis(options.poll_interval_ms.max(1));
        loop {
            if self.network().network == Network::Offline {
                self.set_run_status(SyncState::Offline, None);
                match self.wait(&mut stop, poll, true).await {
                    Woken::Stop => break,
                    _ => continue,
                }
            }
            let now = self.now_ms();
            if let Some(at) = backoff.next_at_ms().filter(|at| *at > now) {
                self.set_run_status(SyncState::BackingOff, Some(at));
                // Only a stop, the network coming back or a new token cut the wait short.
                match self
                    .wait(&mut stop, Duration::from_millis(at - now), false)
                    .await
                {
                    Woken::Stop => break,
                    Woken::Retry => backoff.wake(),
                    _ => {}
                }
                continue;
            }
            self.set_run_status(SyncState::Syncing, None);
            match self.sync(transport).await {
                Ok(report) => {
                    backoff.succeeded();
                    let cursor = report.cursor;
                    self.emit(SyncEvent::Synced { report });
                    self.set_run_status(SyncState::Idle, None);
                    live.ensure(self, transport, options, &mut rng).await;
                    let woken = self
                        .wait_idle(
                            &mut stop,
                            poll,
                            &mut live,
                            cursor,
                            (&options.backoff, &mut rng),
                        )
                        .await;
                    if let Woken::Stop = woken {
                        break;
                    }
                }
                Err(Error::Offline) => {} // the loop shows `offline` next
                Err(e @ Error::Transport(TransportError::Unauthorized { .. })) => {
                    self.emit(SyncEvent::failed(&e));
                    if let Some(token) = options.token_provider.as_ref().and_then(|p| p()) {
                        transport.set_token(&token);
                        continue;
                    }
                    self.set_run_status(SyncState::AuthRequired, None);
                    // Nothing is dropped, however long it takes: wait for a new token.
                    loop {
                        match self.wait(&mut stop, poll, false).await {
                            Woken::Stop => return Ok(()),
                            Woken::Retry => break,
                            _ => {
                                if let Some(token) =
                                    options.token_provider.as_ref().and_then(|p| p())
                                {
                                    transport.set_token(&token);
                                    break;
                                }
                            }
                        }
                    }
                }
                Err(e) => {
                    let retry_after = match &e {
                        Error::Transport(t) => t.retry_after_ms(),
                        _ => None,
                    };
                    self.emit(SyncEvent::failed(&e));
                    // Retries never stop, whatever the error: the queue is kept.
                    backoff.failed(self.now_ms(), retry_after, &options.backoff, &mut rng);
                }
            }
        }
        Ok(())
    }

    /// Waits, up to date at `cursor`, for a reason to sync: `stop`, a retry request, a local
    /// write, a live poke announcing changes past `cursor`, or the poll `timeout`. A broken
    /// live connection is dropped (reconnected after the next sync, with backoff).
    async fn wait_idle<S: Future<Output = ()>>(
        &self,
        stop: &mut std::pin::Pin<&mut S>,
        timeout: Duration,
        live: &mut Live,
        cursor: u64,
        (backoff, rng): (&BackoffConfig, &mut SeededRng),
    ) -> Woken {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let poke = async {
                match live.sub.as_mut() {
                    Some(sub) => sub.next_head().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.as_mut() => return Woken::Stop,
                _ = self.retry_notify().notified() => return Woken::Retry,
                _ = self.write_notify().notified() => return Woken::Work,
                _ = tokio::time::sleep_until(deadline) => return Woken::Timer,
                head = poke => match head {
                    Ok(Some(h)) => {
                        self.emit(SyncEvent::Poked { head_seq: h });
                        if h > cursor {
                            return Woken::Work;
                        }
                    }
                    Ok(None) | Err(_) => {
                        live.sub = None;
                        live.backoff.failed(self.now_ms(), None, backoff, rng);
                        return Woken::Timer; // sync (catch up) and reconnect
                    }
                },
            }
        }
    }

    /// Waits for `stop`, a retry request, (with `work`) a local write, or `timeout`.
    async fn wait<S: Future<Output = ()>>(
        &self,
        stop: &mut std::pin::Pin<&mut S>,
        timeout: Duration,
        work: bool,
    ) -> Woken {
        let written = self.write_notify();
        tokio::select! {
            _ = stop.as_mut() => Woken::Stop,
            _ = self.retry_notify().notified() => Woken::Retry,
            _ = written.notified(), if work => Woken::Work,
            _ = tokio::time::sleep(timeout) => Woken::Timer,
        }
    }
}
