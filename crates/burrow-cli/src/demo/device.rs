//! One device of the fleet: its client (own SQLite file), its fault proxy, its link state,
//! the count of its local writes, and its background runner with the event reader.

use super::attempts::{self, AttemptLog};
use super::fleet::Member;
use super::link::Link;
use anyhow::{Context, Result};
use burrow_client::{Client, ExecReport, HttpTransport, RunOptions};
use burrow_proxy::ProxyHandle;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Longest wait for a runner to stop (a sync in flight finishes first).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Local writes of one device: attempted and succeeded, in all and while offline.
#[derive(Debug, Default)]
pub struct WriteStats {
    /// Writes attempted.
    pub attempted: AtomicU64,
    /// Writes the local database accepted.
    pub succeeded: AtomicU64,
    /// Writes attempted while the device was offline.
    pub offline_attempted: AtomicU64,
    /// Of those, accepted.
    pub offline_succeeded: AtomicU64,
    /// Ops the accepted writes captured.
    pub ops: AtomicU64,
    /// The first few errors, for the report.
    errors: Mutex<Vec<String>>,
}

impl WriteStats {
    fn record(&self, offline: bool, result: Result<&ExecReport, String>) {
        self.attempted.fetch_add(1, Ordering::Relaxed);
        if offline {
            self.offline_attempted.fetch_add(1, Ordering::Relaxed);
        }
        match result {
            Ok(r) => {
                self.succeeded.fetch_add(1, Ordering::Relaxed);
                if offline {
                    self.offline_succeeded.fetch_add(1, Ordering::Relaxed);
                }
                self.ops.fetch_add(r.ops_captured, Ordering::Relaxed);
            }
            Err(e) => {
                let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
                if errors.len() < 5 {
                    errors.push(e);
                }
            }
        }
    }

    /// The first errors of failed writes.
    pub fn errors(&self) -> Vec<String> {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A running runner and the reader of its events.
struct Runner {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<()>>,
    stop_events: oneshot::Sender<()>,
    events: JoinHandle<()>,
}

/// A device of the fleet.
pub struct Device {
    /// Who uses it.
    pub member: Member,
    /// Its client database.
    pub client: Arc<Client>,
    /// The fault proxy between it and the server.
    pub proxy: Arc<ProxyHandle>,
    /// Its link as the scripts drive it.
    pub link: Arc<Link>,
    /// Its local writes.
    pub writes: Arc<WriteStats>,
    /// Its runner's sync attempts.
    pub attempts: Arc<AttemptLog>,
    /// Its user's token.
    pub token: String,
    runner: Mutex<Option<Runner>>,
}

impl Device {
    /// A device whose client talks to the server through `proxy`.
    pub fn new(member: Member, client: Client, proxy: ProxyHandle, token: String) -> Device {
        let client = Arc::new(client);
        let proxy = Arc::new(proxy);
        let link = Arc::new(Link::new(
            proxy.clone(),
            client.clone(),
            member.role.usual_network(),
        ));
        Device {
            member,
            client,
            proxy,
            link,
            writes: Arc::new(WriteStats::default()),
            attempts: Arc::new(AttemptLog::default()),
            token,
            runner: Mutex::new(None),
        }
    }

    /// Runs one local write, counting it (and whether the device was offline) in
    /// [`Device::writes`]; `None` when the local database refused it.
    pub fn write(
        &self,
        f: impl FnOnce(&Client) -> burrow_client::Result<ExecReport>,
    ) -> Option<ExecReport> {
        let offline = !self.link.online();
        let result = f(&self.client);
        self.writes
            .record(offline, result.as_ref().map_err(|e| e.to_string()));
        result.ok()
    }

    /// Executes `sql` as one local transaction (see [`Device::write`]).
    pub fn exec(&self, sql: &str) -> Option<ExecReport> {
        self.write(|c| c.execute(sql))
    }

    /// Ops in the outbox (`None` when the status cannot be read).
    pub fn pending(&self) -> Option<u64> {
        self.client.status().ok().map(|s| s.pending_ops)
    }

    /// Starts the background runner (live push on) through the proxy.
    pub fn start(&self, options: &RunOptions) -> Result<()> {
        let transport = HttpTransport::new(&self.proxy.url(), &self.token)
            .with_context(|| format!("{}: transport", self.member.name))?;
        let (stop_events, events_stopped) = oneshot::channel();
        let events = tokio::spawn(attempts::watch(
            self.client.events(),
            self.link.clone(),
            self.attempts.clone(),
            events_stopped,
        ));
        let (stop, stopped) = oneshot::channel::<()>();
        let client = self.client.clone();
        let options = options.clone();
        let task = tokio::spawn(async move {
            client
                .run(&transport, &options, async {
                    let _ = stopped.await;
                })
                .await?;
            Ok(())
        });
        *self.runner.lock().unwrap_or_else(|p| p.into_inner()) = Some(Runner {
            stop,
            task,
            stop_events,
            events,
        });
        Ok(())
    }

    /// Stops the runner and the event reader (after reading what is queued).
    pub async fn stop(&self) -> Result<()> {
        let runner = self.runner.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(r) = runner else {
            return Ok(());
        };
        let _ = r.stop.send(());
        let mut task = r.task;
        let outcome = tokio::time::timeout(STOP_TIMEOUT, &mut task).await;
        if outcome.is_err() {
            task.abort();
        }
        let _ = r.stop_events.send(());
        let _ = r.events.await;
        match outcome {
            Ok(joined) => joined.with_context(|| format!("{}: runner", self.member.name))?,
            Err(_) => anyhow::bail!(
                "{}: the runner did not stop within {} s",
                self.member.name,
                STOP_TIMEOUT.as_secs()
            ),
        }
    }
}
