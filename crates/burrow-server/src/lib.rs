//! The Burrow sync server: authenticated `POST /v1/sync` over HTTP, ingest with
//! deduplication and conflict resolution, and paged delta downloads, on a [`ServerStore`]
//! (embedded SQLite by default).
//!
//! ```no_run
//! # async fn run() -> Result<(), burrow_server::ServerError> {
//! use burrow_server::{ServerConfig, spawn};
//! let schema = burrow_core::Schema::from_toml_str(
//!     "version = 1\n[tables.notes.columns]\nbody = \"text\"\n").unwrap();
//! let config = ServerConfig::new("/tmp/burrow-data".into(), schema);
//! let server = spawn(config, "127.0.0.1:0").await?;
//! println!("listening on {}", server.local_addr());
//! server.shutdown().await;
//! # Ok(()) }
//! ```

pub mod auth;
pub mod config;
pub mod config_file;
pub mod error;
pub mod http;
pub mod live;
pub mod rate;
pub mod resolver;
pub mod store;
pub mod validate;

pub use auth::Verifier;
pub use config::{AuthConfig, Limits, ServerConfig};
pub use config_file::ConfigFile;
pub use error::{ServerError, StoreError};
pub use store::{ServerStore, SqliteServerStore};

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// File name of the embedded SQLite store inside the data directory.
pub const DB_FILE: &str = "burrow-server.db";

/// A server running on a tokio task; dropped or [`RunningServer::shutdown`] to stop.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    store: Arc<SqliteServerStore>,
}

impl RunningServer {
    /// The address the server listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL clients use, e.g. `http://127.0.0.1:4000`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The server's store, for inspection in tests and the demo.
    pub fn store(&self) -> &Arc<SqliteServerStore> {
        &self.store
    }

    /// Stops accepting connections, finishes in-flight requests and waits for the task.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Opens the store in `config.data_dir`, binds `listen` and serves until shut down.
pub async fn spawn(config: ServerConfig, listen: &str) -> Result<RunningServer, ServerError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| ServerError::Bind {
            addr: listen.to_string(),
            source: e,
        })?;
    let addr = listener.local_addr().map_err(|e| ServerError::Bind {
        addr: listen.to_string(),
        source: e,
    })?;
    std::fs::create_dir_all(&config.data_dir).map_err(|e| ServerError::DataDir {
        path: config.data_dir.display().to_string(),
        source: e,
    })?;
    let store = Arc::new(SqliteServerStore::open(&config.data_dir.join(DB_FILE))?);
    if let Some(rules) = config.rules.clone().filter(|r| !r.is_empty()) {
        store
            .install_rules(rules, Arc::new(config.schema.clone()))
            .await?;
    }
    let app = http::router(Arc::new(http::AppState::new(config, store.clone())?));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    Ok(RunningServer {
        addr,
        stop: Some(stop),
        task: Some(task),
        store,
    })
}
