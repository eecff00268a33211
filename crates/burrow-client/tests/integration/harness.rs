use burrow_client::{Client, HttpTransport, TrafficStats, Transport, TransportError};
use burrow_core::Schema;
use burrow_proto::v1;
use burrow_server::{RunningServer, ServerConfig};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

pub const SCHEMA: &str = r#"
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

pub fn schema() -> Schema {
    Schema::from_toml_str(SCHEMA).unwrap()
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub server: RunningServer,
    pub secret: Vec<u8>,
}

impl Env {
    pub async fn start() -> Env {
        Env::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut ServerConfig)) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig::new(dir.path().join("server"), schema());
        config.secret = Some(b"test-secret".to_vec());
        tweak(&mut config);
        let secret = config.secret.clone().unwrap();
        let server = burrow_server::spawn(config, "127.0.0.1:0").await.unwrap();
        Env {
            dir,
            server,
            secret,
        }
    }

    pub fn token(&self, user: &str) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        burrow_server::auth::mint(&self.secret, user, BTreeMap::new(), now, 3600).unwrap()
    }

    pub fn db(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.db"))
    }

    pub fn client(&self, name: &str) -> Client {
        Client::open(self.db(name), &schema()).unwrap()
    }

    /// Asserts that each of `seqs` (client sequences of `c`'s ops) took effect on the server
    /// exactly once.
    pub fn assert_applied_once(&self, c: &Client, seqs: &[u64]) {
        for &seq in seqs {
            let n = self
                .server
                .store()
                .op_effect_count(c.client_id(), seq)
                .unwrap();
            assert_eq!(n, 1, "op {seq} took effect {n} times");
        }
    }

    pub fn transport(&self, user: &str) -> HttpTransport {
        HttpTransport::new(&self.server.url(), &self.token(user)).unwrap()
    }

    pub async fn sync(&self, c: &Client) -> burrow_client::SyncReport {
        c.sync(&self.transport("ann")).await.unwrap()
    }
}

/// Inserts routes `r0000`… in one local transaction.
pub fn insert_routes(c: &Client, n: usize) {
    c.write(|tx| {
        for i in 0..n {
            tx.execute(
                "INSERT INTO routes(id, day) VALUES (?1, 'mon')",
                [format!("r{i:04}")],
            )?;
        }
        Ok(())
    })
    .unwrap();
}

pub fn rows(c: &Client, sql: &str) -> Vec<serde_json::Value> {
    c.query_json(sql)
        .unwrap()
        .into_iter()
        .map(serde_json::Value::Object)
        .collect()
}

/// Runs `client` in the background until the returned sender is dropped or fired.
pub fn spawn_runner(
    client: std::sync::Arc<Client>,
    transport: HttpTransport,
    options: burrow_client::RunOptions,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        client
            .run(&transport, &options, async {
                let _ = stop_rx.await;
            })
            .await
            .unwrap();
    });
    (stop_tx, handle)
}

/// Waits (at most 10 s) for a runner event matching `pred`, and returns it.
pub async fn until(
    events: &mut tokio::sync::broadcast::Receiver<burrow_client::SyncEvent>,
    pred: impl Fn(&burrow_client::SyncEvent) -> bool,
) -> burrow_client::SyncEvent {
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match events.recv().await {
                Ok(e) if pred(&e) => return e,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("event stream ended: {e}"),
            }
        }
    })
    .await
    .expect("event within 10 s")
}

/// What a [`Faulty`] transport does to the exchanges passing through it.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// The server processes the request but the response to the `n`-th request (1-based) is
    /// lost on the way back.
    LoseResponse(usize),
    /// The connection breaks after the server processed the request, on each of requests
    /// `from..=to` (1-based): the client sees `ConnectionLost`.
    DropConnection { from: usize, to: usize },
    /// The first `n` requests go through; then the network is gone.
    OfflineAfter(usize),
    /// Uploads are held back (removed from requests): only downloads go through.
    HoldUploads,
    /// Every request carrying uploads is refused with 503 and `Retry-After: 30`, as an
    /// overloaded server's ingest would; download-only requests go through.
    RefuseUploads,
}

/// Forwards to HTTP with one injected fault.
pub struct Faulty {
    pub inner: HttpTransport,
    pub fault: Fault,
    pub requests: AtomicUsize,
}

impl Faulty {
    pub fn new(env: &Env, fault: Fault) -> Faulty {
        Faulty {
            inner: env.transport("ann"),
            fault,
            requests: AtomicUsize::new(0),
        }
    }
}

impl Transport for Faulty {
    async fn sync(
        &self,
        mut req: v1::SyncRequest,
    ) -> Result<(v1::SyncResponse, TrafficStats), TransportError> {
        let n = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
        match self.fault {
            Fault::OfflineAfter(k) if n > k => {
                return Err(TransportError::Network("offline".into()));
            }
            Fault::HoldUploads => req.upload.clear(),
            Fault::RefuseUploads if !req.upload.is_empty() => {
                return Err(TransportError::Status {
                    status: 503,
                    code: "unavailable".into(),
                    message: "ingest is overloaded".into(),
                    retry_after_ms: Some(30_000),
                });
            }
            _ => {}
        }
        let out = self.inner.sync(req).await?;
        match self.fault {
            Fault::LoseResponse(k) if n == k => {
                Err(TransportError::Network("response lost".into()))
            }
            Fault::DropConnection { from, to } if (from..=to).contains(&n) => Err(
                TransportError::ConnectionLost("connection reset by peer".into()),
            ),
            _ => Ok(out),
        }
    }
}
